"""Time to cut 1,000 new actas onto logs of 10k, 100k and 500k leaves.

A cut is what the publication service does each interval once the records are in hand
(:meth:`veritally.publication.cutter.Cutter.make_cut`): check and index the records,
append them and the cut leaf with their perfect-subtree hashes, sign the checkpoint,
self-check the signature and the cut leaf's proof, and commit (WAL, synchronous=FULL).
Writing the static bundle afterwards is measured separately (``bundle_ms_*``).
Goal: at most 100 ms at 500k leaves, flat in the size of the log.

Run: ``.venv/bin/python -m bench.cut`` (prints the numbers, writes bench/out/cut.json).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

from veritally.publication.bundle import BundleWriter
from veritally.publication.cutter import Cutter
from veritally.publication.store import PublicationStore
from veritally_client.protocol import Signer
from veritally_client.protocol.pb import acta_pb2

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "cut.json"
ORIGIN = "veritally.example/bench"
SIZES = {"10k": 10_000, "100k": 100_000, "500k": 500_000}
NEW_ACTAS = 1_000
REPEATS = 7  # cuts measured per size; the median is reported


def acta_leaf(sequence: int) -> bytes:
    """A realistic acta record leaf (~300 bytes: 9 options, provenance, digest)."""
    casilla = f"{sequence // 3:07d}B"
    contest = ("PRES", "SEN", "DIP")[sequence % 3]
    acta = acta_pb2.Acta(
        casilla_id=casilla,
        contest_id=contest,
        option_votes=[
            acta_pb2.OptionVotes(option_id=f"OPT{i}", votes=(sequence * 7 + i) % 250)
            for i in range(9)
        ],
        null_votes=sequence % 11,
        image_sha256=bytes(32),
        provenance=acta_pb2.Provenance(capture_centre_id="CATD-042", operator_id="op-17"),
    )
    record = acta_pb2.ActaRecord(
        acta_id=f"{casilla}/{contest}", revision=1, acta=acta, counted=True, sequence=sequence
    )
    record.received_time.FromDatetime(dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC))
    return acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)


def _measure(directory: Path, size: int) -> tuple[float, float]:
    store = PublicationStore(directory / f"log-{size}.db")
    cutter = Cutter(store=store, signers=[Signer.from_seed(ORIGIN, bytes(32))], origin=ORIGIN)
    bundle = BundleWriter(directory / f"bundle-{size}")
    # Build the log fast: one cut holding size - 1 acta records (plus its cut leaf).
    have = size - 1
    cutter.make_cut(acta_leaves=[acta_leaf(i) for i in range(have)], acta_records=have, results=b"")
    cut_ms: list[float] = []
    bundle_ms: list[float] = []
    for _ in range(REPEATS):
        leaves = [acta_leaf(have + i) for i in range(NEW_ACTAS)]
        t0 = time.perf_counter()
        row = cutter.make_cut(acta_leaves=leaves, acta_records=have + NEW_ACTAS, results=b"r")
        t1 = time.perf_counter()
        bundle.write_cut(store, row, results=b"r", trust_root_versions=1)
        t2 = time.perf_counter()
        cut_ms.append((t1 - t0) * 1000)
        bundle_ms.append((t2 - t1) * 1000)
        have += NEW_ACTAS
    store.close()
    return statistics.median(cut_ms), statistics.median(bundle_ms)


def run() -> dict[str, float]:
    """Measure every size; returns ``cut_ms_1k_on_<size>`` and ``bundle_ms_1k_on_<size>``."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="veritally-bench-cut-") as tmp:
        for label, size in SIZES.items():
            cut, bundle = _measure(Path(tmp), size)
            results[f"cut_ms_1k_on_{label}"] = round(cut, 1)
            results[f"bundle_ms_1k_on_{label}"] = round(bundle, 1)
            print(
                f"log of {label:>4} leaves: cut 1,000 actas {cut:7.1f} ms, bundle {bundle:6.1f} ms"
            )
    return results


def main() -> None:
    """Run, print and write bench/out/cut.json."""
    results = run()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
