"""Benchmark the tally on a national synthetic election.

Run: ``.venv/bin/python -m bench.tally [--seed 1] [--casillas 160000]``

Measures, on the generated election (cached under bench/out/election-<seed>-<n>/):
generation time, definition load time, acta load time, ``Tally.apply`` rate (records/s)
and CPU microseconds per record, ``Tally.apply_leaf`` rate (leaves/s, parsing included;
the path of the recount and of aggregation) and CPU microseconds per leaf, the time of
``results_bytes()`` with every unit changed (the worst case of a busy second, and of a
cut in a recount) and right after a single apply (three units changed), and the restart
of the aggregation service over a store holding every record (``AggregationEngine``
rebuilding its tally; the store is written once and cached under bench/out/).
Writes bench/out/tally.json.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import statistics
import time
from pathlib import Path

import veritally.election.generate
from veritally.aggregation.engine import AggregationEngine
from veritally.aggregation.store import AggregationStore
from veritally.election.generate import DEFAULT_CASILLAS, generate
from veritally.election.loader import load_actas, load_election
from veritally_client.protocol import ElectionIndex, Tally, acta_id
from veritally_client.protocol.pb import acta_pb2

OUT = Path(__file__).resolve().parent / "out"
CORRECTION_SHARE = 0.01  # corrections appended after the first captures (1% of actas)
RESULTS_SAMPLES = 20  # results_bytes() timings to take (each after one more apply)
RESTART_RUNS = 3  # aggregation restarts to take the median of
RESTART_WRITE_CHUNK = 10_000  # leaves per transaction when writing the restart store


def prep_decision(
    index: ElectionIndex, acta: acta_pb2.Acta
) -> tuple[bool, acta_pb2.NotCountedReason.ValueType]:
    """PREP's counting rule, as ingest applies it (for building realistic records)."""
    marks = [o.mark for o in acta.option_votes] + [acta.unregistered_mark, acta.null_mark]
    if all(m == acta_pb2.FIELD_MARK_ILLEGIBLE for m in marks):
        return False, acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE
    if all(m == acta_pb2.FIELD_MARK_BLANK for m in marks):
        return False, acta_pb2.NOT_COUNTED_REASON_ALL_BLANK
    total = sum(o.votes for o in acta.option_votes) + acta.unregistered_votes + acta.null_votes
    if total > index.casilla(acta.casilla_id).vote_limit:
        return False, acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST
    return True, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED


def build_records(
    index: ElectionIndex, actas: list[acta_pb2.Acta], seed: int
) -> list[acta_pb2.ActaRecord]:
    """First captures in arrival order, then 1% corrections, with dense sequences."""
    rng = random.Random(seed)
    records: list[acta_pb2.ActaRecord] = []
    revisions: dict[str, int] = {}

    def add(acta: acta_pb2.Acta) -> None:
        key = acta_id(acta.casilla_id, acta.contest_id)
        revisions[key] = revisions.get(key, 0) + 1
        counted, reason = prep_decision(index, acta)
        records.append(
            acta_pb2.ActaRecord(
                acta_id=key,
                revision=revisions[key],
                acta=acta,
                counted=counted,
                not_counted_reason=reason,
                sequence=len(records),
            )
        )

    for acta in actas:
        add(acta)
    for acta in rng.sample(actas, int(len(actas) * CORRECTION_SHARE)):
        fixed = acta_pb2.Acta()
        fixed.CopyFrom(acta)
        fixed.option_votes[0].votes = max(0, fixed.option_votes[0].votes - 1)
        add(fixed)
    return records


def _restart_store(name: str) -> Path:
    return OUT / f"aggregation-restart-{name}.sqlite"


def bench_restart(
    index: ElectionIndex, leaves: list[bytes], name: str, expected: bytes
) -> dict[str, float]:
    """Time AggregationEngine's startup rebuild over a store holding ``leaves``."""
    path = _restart_store(name)
    if not path.exists():
        store = AggregationStore(path)
        for start in range(0, len(leaves), RESTART_WRITE_CHUNK):
            store.append(start, leaves[start : start + RESTART_WRITE_CHUNK])
        store.close()
    walls, cpus = [], []
    for _ in range(RESTART_RUNS):
        t = time.perf_counter()
        cpu = time.process_time()
        engine = AggregationEngine(election=index, db_path=path)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - t)
        assert engine.tally.results_bytes() == expected, "the rebuilt tally differs"
        engine.close()
        del engine
    return {
        "restart_leaves": len(leaves),
        "restart_rebuild_s": round(statistics.median(walls), 2),
        "restart_rebuild_cpu_s": round(statistics.median(cpus), 2),
    }


def election_dir(seed: int, casillas: int) -> Path:
    """Where the generated election of ``seed`` and ``casillas`` is cached: the name
    carries a digest of the generator's source, so a changed generator writes anew."""
    source = Path(veritally.election.generate.__file__).read_bytes()
    return OUT / f"election-{seed}-{casillas}-{hashlib.sha256(source).hexdigest()[:12]}"


def main() -> None:
    """Run the benchmark and print/write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--casillas", type=int, default=DEFAULT_CASILLAS)
    args = parser.parse_args()
    numbers: dict[str, float | int] = {}
    directory = election_dir(args.seed, args.casillas)
    if not (directory / "actas.csv").exists():
        t = time.perf_counter()
        generate(seed=args.seed, casillas=args.casillas, out_dir=directory)
        numbers["generate_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    files = load_election(directory / "election.yaml")
    numbers["load_definition_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    actas = list(load_actas(files))
    numbers["load_actas_s"] = round(time.perf_counter() - t, 2)
    index = files.index
    records = build_records(index, actas, args.seed)
    leaves = [
        acta_pb2.LogLeaf(acta_record=r).SerializeToString(deterministic=True) for r in records
    ]
    numbers["casillas"] = len(index.casillas)
    numbers["records"] = len(records)

    t = time.perf_counter()
    tally = Tally(index)
    numbers["tally_init_s"] = round(time.perf_counter() - t, 3)
    held_back = RESULTS_SAMPLES
    t = time.perf_counter()
    cpu = time.process_time()
    for record in records[:-held_back]:
        tally.apply(record)
    elapsed = time.perf_counter() - t
    numbers["apply_per_s"] = round((len(records) - held_back) / elapsed)
    # CPU time too: on a shared machine wall time also measures the neighbours.
    apply_cpu = time.process_time() - cpu
    numbers["apply_per_cpu_s"] = round((len(records) - held_back) / apply_cpu)
    numbers["apply_cpu_us_per_record"] = round(apply_cpu / (len(records) - held_back) * 1e6, 2)

    # Every unit touched since the last call: the whole blob is computed, once per final
    # flag. The garbage collection the applies left pending is run first: it belongs to
    # them (and would land in whichever call comes next), not to results_bytes.
    for final in (False, True):
        gc.collect()
        t = time.perf_counter()
        cpu = time.process_time()
        blob = tally.results_bytes(final=final)
        suffix = "_final" if final else ""
        numbers[f"results_bytes_full{suffix}_ms"] = round((time.perf_counter() - t) * 1000, 1)
        numbers[f"results_bytes_full{suffix}_cpu_ms"] = round((time.process_time() - cpu) * 1000, 1)
    # One record since the last call: three units (nation, state, district) re-serialized.
    samples = []
    for record in records[-held_back:]:
        tally.apply(record)
        t = time.perf_counter()
        blob = tally.results_bytes()
        samples.append(time.perf_counter() - t)
    numbers["results_bytes_after_one_apply_ms_median"] = round(statistics.median(samples) * 1000, 2)
    numbers["results_bytes_size"] = len(blob)
    t = time.perf_counter()
    tally.results_bytes()
    numbers["results_bytes_cached_us"] = round((time.perf_counter() - t) * 1e6, 1)

    leaf_tally = Tally(index)
    t = time.perf_counter()
    cpu = time.process_time()
    for leaf in leaves:
        leaf_tally.apply_leaf(leaf)
    numbers["apply_leaf_per_s"] = round(len(leaves) / (time.perf_counter() - t))
    leaf_cpu = time.process_time() - cpu
    numbers["apply_leaf_per_cpu_s"] = round(len(leaves) / leaf_cpu)
    numbers["apply_leaf_cpu_us_per_leaf"] = round(leaf_cpu / len(leaves) * 1e6, 2)
    assert leaf_tally.results_bytes() == tally.results_bytes(), "leaf and record tallies differ"
    del leaf_tally

    numbers.update(bench_restart(index, leaves, directory.name, tally.results_bytes()))

    for key, value in numbers.items():
        print(f"{key:28} {value}")
    OUT.mkdir(exist_ok=True)
    (OUT / "tally.json").write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
