"""Benchmark the media SDK: verifying a new cut, and recounting a 500,000-leaf log.

Run: ``.venv/bin/python -m bench.sdk [--leaves 500000] [--cut-every 2000] [--runs 3]``

Setup (not timed): the national synthetic election (160,000 casillas, cached under
bench/out/election-<seed>-<n>-<generator digest>/, see bench.tally.election_dir), its acta
records with corrections up to the wanted number of leaves, a cut record every
``--cut-every`` acta records with the real results digest, and a real in-memory Merkle
tree and Ed25519 key. The built log is cached beside the election, in
sdk-log-<leaves>-<cut_every>.bin.

Measured:

* ``sdk_verify_ms``: median time of ``CutVerifier.verify_update`` for a new national cut
  (signature, checkpoint, last-leaf inclusion, results digest and parse, rollback, the
  consistency proof from the previous cut, freshness, binding), over many repetitions;
* ``recount_500k_s``: a full recount of the log by the client's ``Recounter``
  (hash every leaf into a compact range, parse it, apply every acta record to the tally,
  recompute and hash the results of every cut, compare the root), pages of 10,000;
  the median of ``--runs`` recounts, wall time, and ``recount_500k_cpu_s`` its CPU time;
* where the recount time goes (CPU seconds): hashing, parsing, tally apply, results of
  the cuts;
* ``bytes_per_summary_read``: what a read of the newest cut's summary moves, at the
  message level, on the same log: the signed head (the serialized ``SignedCut`` without
  results: signed note, cut leaf, inclusion proof at the log's size) plus the results
  summary the cut record signs (docs/adr/0092), beside ``results_blob_bytes``.
  ``--summary-only`` measures this alone.

Prints the numbers and writes bench/out/sdk.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import statistics
import struct
import time
from pathlib import Path

from bench.tally import build_records, election_dir
from veritally.election.generate import DEFAULT_CASILLAS, generate
from veritally.election.loader import load_actas, load_election
from veritally_client import ClientConfig
from veritally_client._recount import Recounter
from veritally_client._state import TrustedState
from veritally_client._verify import CutVerifier, SignedCutBytes
from veritally_client.protocol import (
    Checkpoint,
    CompactRange,
    ElectionIndex,
    MemoryTree,
    Signer,
    Tally,
    TrustedRoot,
    leaf_hash,
    parse_leaf_view,
    results_summary_bytes,
    sign_note,
    sign_trust_root,
)
from veritally_client.protocol.pb import acta_pb2, log_pb2

OUT = Path(__file__).resolve().parent / "out"
ORIGIN = "bench.veritally.example/e2026"
START = dt.datetime(2026, 6, 2, 18, 0, tzinfo=dt.UTC)
PAGE = 10_000  # leaves per GetLeaves page, as the client's default max_leaves_per_page
VERIFY_REPEATS = 200  # verify_update timings to take the median of


def _load_election(
    seed: int, casillas: int, *, with_actas: bool
) -> tuple[ElectionIndex, list[acta_pb2.Acta]]:
    directory = election_dir(seed, casillas)
    if not (directory / "actas.csv").exists():
        generate(seed=seed, casillas=casillas, out_dir=directory)
    files = load_election(directory / "election.yaml")
    return files.index, list(load_actas(files)) if with_actas else []


def _records(
    index: ElectionIndex, actas: list[acta_pb2.Acta], seed: int, wanted: int
) -> list[acta_pb2.ActaRecord]:
    """At least ``wanted`` records: first captures, 1% corrections, more corrections."""
    records = build_records(index, actas, seed)
    rng = random.Random(seed + 1)
    revisions: dict[str, int] = {}
    for r in records:
        revisions[r.acta_id] = r.revision
    by_id = {r.acta_id: r for r in records}
    ids = list(by_id)
    while len(records) < wanted:
        key = rng.choice(ids)
        revisions[key] += 1
        rec = acta_pb2.ActaRecord()
        rec.CopyFrom(by_id[key])
        rec.revision = revisions[key]
        rec.sequence = len(records)
        records.append(rec)
    return records[:wanted]


def _cut_leaf(number: int, acta_records: int, results: bytes) -> bytes:
    when = START + dt.timedelta(seconds=30 * number)
    record = acta_pb2.CutRecord(
        cut_number=number,
        cut_time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        acta_records=acta_records,
        results_sha256=hashlib.sha256(results).digest(),
    )
    return acta_pb2.LogLeaf(cut_record=record).SerializeToString(deterministic=True)


def _log_cache(leaves: int, cut_every: int, seed: int, casillas: int) -> Path:
    return election_dir(seed, casillas) / f"sdk-log-{leaves}-{cut_every}.bin"


def build_log(
    index: ElectionIndex,
    actas: list[acta_pb2.Acta],
    *,
    seed: int,
    casillas: int,
    leaves: int,
    cut_every: int,
) -> list[bytes]:
    """The leaves of a log of exactly ``leaves`` leaves ending in a cut record."""
    cache = _log_cache(leaves, cut_every, seed, casillas)
    if cache.exists():
        data = cache.read_bytes()
        out, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack_from(">I", data, pos)
            out.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return out
    n_cuts = -(-leaves // (cut_every + 1))
    records = _records(index, actas, seed, leaves - n_cuts)
    tally = Tally(index)
    out = []
    cut_number = 0
    for i, record in enumerate(records, start=1):
        tally.apply(record)
        out.append(acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True))
        if i % cut_every == 0 or i == len(records):
            cut_number += 1
            out.append(_cut_leaf(cut_number, i, tally.results_bytes()))
    with cache.open("wb") as f:
        for leaf in out:
            f.write(struct.pack(">I", len(leaf)))
            f.write(leaf)
    return out


def bench_recount(index: ElectionIndex, leaves: list[bytes], runs: int) -> dict[str, float]:
    """Time full recounts (median of ``runs``, wall and CPU), and its parts separately."""
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf_hash(leaf))
    root = cr.root()
    numbers: dict[str, float] = {}
    walls, cpus = [], []
    cuts = 0
    for _ in range(runs):
        t = time.perf_counter()
        cpu = time.process_time()
        recounter = Recounter(election=index, tree_size=len(leaves), root_hash=root)
        for start in range(0, len(leaves), PAGE):
            recounter.feed(leaves[start : start + PAGE])
        report = recounter.finish()
        # CPU time too: on a shared machine wall time also measures the neighbours.
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - t)
        cuts = len(report.cuts)
        # A client holds one recount: drop this one before the next is timed.
        del recounter, report
    numbers["recount_s"] = statistics.median(walls)
    numbers["recount_cpu_s"] = statistics.median(cpus)
    numbers["recount_runs"] = runs
    numbers["recount_cuts"] = cuts
    # Where the time goes, each part alone (CPU seconds), on the recount's own path:
    # the tally's view of each leaf, and apply_view for acta records.
    cpu = time.process_time()
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf_hash(leaf))
    numbers["part_hash_s"] = time.process_time() - cpu
    cpu = time.process_time()
    parsed = [parse_leaf_view(leaf) for leaf in leaves]
    numbers["part_parse_s"] = time.process_time() - cpu
    tally = Tally(index)
    apply_s = results_s = 0.0
    for pb, leaf in zip(parsed, leaves, strict=True):
        if pb.WhichOneof("kind") == "acta_record":
            cpu = time.process_time()
            tally.apply_view(pb.acta_record, leaf)
            apply_s += time.process_time() - cpu
        else:
            cpu = time.process_time()
            hashlib.sha256(tally.results_bytes()).digest()
            results_s += time.process_time() - cpu
    numbers["part_tally_apply_s"] = apply_s
    numbers["part_cut_results_s"] = results_s
    return numbers


def bench_verify(index: ElectionIndex, leaves: list[bytes], cut_every: int) -> dict[str, float]:
    """Median verify_update time of a new cut on top of the given log."""
    signer = Signer.from_seed("bench.veritally.example", b"\x05" * 32)
    body = log_pb2.TrustRootBody(
        version=1, origin=ORIGIN, publisher_keys=[signer.verifier().key_string()], threshold=1
    )
    body.expires_time.FromDatetime(START + dt.timedelta(days=365))
    root = TrustedRoot.from_bytes(sign_trust_root(body, [signer]), now=START)
    verifier = CutVerifier(trust_root=root, config=ClientConfig())
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    old_size = tree.size
    old_cut = acta_pb2.LogLeaf.FromString(leaves[-1]).cut_record
    old_note = sign_note(Checkpoint(ORIGIN, old_size, tree.root()).to_text(), [signer])
    trusted = TrustedState(
        origin=ORIGIN,
        checkpoint=old_note,
        tree_size=old_size,
        root_hash=tree.root(),
        cut_number=old_cut.cut_number,
        definition_sha256=index.definition_sha256,
    )
    # A new cut: the national results over the whole log, one more cut leaf.
    tally = Tally(index)
    for leaf in leaves:
        pb = acta_pb2.LogLeaf.FromString(leaf)
        if pb.WhichOneof("kind") == "acta_record":
            tally.apply(pb.acta_record)
    results = tally.results_bytes()
    cut_leaf = _cut_leaf(old_cut.cut_number + 1, tally.acta_records, results)
    tree.append(cut_leaf)
    size = tree.size
    note = sign_note(Checkpoint(ORIGIN, size, tree.root()).to_text(), [signer])
    cut = SignedCutBytes(
        checkpoint=note,
        cut_leaf=cut_leaf,
        inclusion_proof=tuple(tree.inclusion_proof(size - 1, size)),
        results=results,
    )
    proof = tree.consistency_proof(old_size, size)
    now = START + dt.timedelta(seconds=30 * (old_cut.cut_number + 1) + 5)
    samples = []
    for _ in range(VERIFY_REPEATS):
        t = time.perf_counter()
        verifier.verify_update(cut, trusted=trusted, consistency_proof=proof, now=now)
        samples.append(time.perf_counter() - t)
    return {
        "sdk_verify_ms": statistics.median(samples) * 1000,
        "sdk_verify_p99_ms": sorted(samples)[int(len(samples) * 0.99) - 1] * 1000,
        "results_blob_bytes": len(results),
    }


def bench_summary(index: ElectionIndex, leaves: list[bytes]) -> dict[str, float]:
    """Bytes of a summary read of a new national cut on top of the given log."""
    tally = Tally(index)
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
        pb = acta_pb2.LogLeaf.FromString(leaf)
        if pb.WhichOneof("kind") == "acta_record":
            tally.apply(pb.acta_record)
    results = tally.results_bytes()
    summary = results_summary_bytes(results, party_ids=index.party_ids)
    number = acta_pb2.LogLeaf.FromString(leaves[-1]).cut_record.cut_number + 1
    record = acta_pb2.CutRecord(
        cut_number=number,
        cut_time=(START + dt.timedelta(seconds=30 * number)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        acta_records=tally.acta_records,
        results_sha256=hashlib.sha256(results).digest(),
        summary_sha256=hashlib.sha256(summary).digest(),
    )
    cut_leaf = acta_pb2.LogLeaf(cut_record=record).SerializeToString(deterministic=True)
    tree.append(cut_leaf)
    size = tree.size
    signer = Signer.from_seed("bench.veritally.example", b"\x05" * 32)
    head = log_pb2.SignedCut(
        checkpoint=sign_note(Checkpoint(ORIGIN, size, tree.root()).to_text(), [signer]),
        cut_leaf=cut_leaf,
        inclusion_proof=tree.inclusion_proof(size - 1, size),
    )
    return {
        "bytes_per_summary_read": head.ByteSize() + len(summary),
        "summary_bytes": len(summary),
        "results_blob_bytes": len(results),
    }


def main() -> None:
    """Run the benchmark and print/write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--casillas", type=int, default=DEFAULT_CASILLAS)
    parser.add_argument("--leaves", type=int, default=500_000)
    parser.add_argument("--cut-every", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3, help="recounts to take the median of")
    parser.add_argument(
        "--summary-only", action="store_true", help="measure bytes_per_summary_read alone"
    )
    args = parser.parse_args()
    t = time.perf_counter()
    cached = _log_cache(args.leaves, args.cut_every, args.seed, args.casillas).exists()
    index, actas = _load_election(args.seed, args.casillas, with_actas=not cached)
    leaves = build_log(
        index,
        actas,
        seed=args.seed,
        casillas=args.casillas,
        leaves=args.leaves,
        cut_every=args.cut_every,
    )
    print(f"setup {time.perf_counter() - t:.1f} s: {len(leaves)} leaves")
    numbers: dict[str, float] = {"leaves": len(leaves)}
    numbers.update(bench_summary(index, leaves))
    if args.summary_only:
        for key, value in numbers.items():
            print(f"{key:24} {value:,.3f}")
        return
    numbers.update(bench_verify(index, leaves, args.cut_every))
    numbers.update(bench_recount(index, leaves, args.runs))
    if len(leaves) == 500_000:
        numbers["recount_500k_s"] = numbers["recount_s"]
        numbers["recount_500k_cpu_s"] = numbers["recount_cpu_s"]
    for key, value in numbers.items():
        print(f"{key:24} {value:,.3f}")
    OUT.mkdir(exist_ok=True)
    rounded = {k: round(v, 3) for k, v in numbers.items()}
    (OUT / "sdk.json").write_text(json.dumps(rounded, indent=2) + "\n")


if __name__ == "__main__":
    main()
