"""``python -m bench`` (``make bench``): run every benchmark and write the documents.

Runs, in one process tree and one run, the benchmarks below, and writes
docs/BENCHMARKS.md and docs/benchmarks.json through :mod:`bench.report` (each figure next
to its goal, measured in this run). A benchmark that fails is reported as "not measured"
with the reason; the others still run.

* ``cut``: :mod:`bench.cut` (in process: the cutter on 10k/100k/500k-leaf logs);
* ``sdk``: :mod:`bench.sdk` (its own process: verify a national cut, recount 500k leaves);
* ``stack``: :mod:`bench.stack_bench` (the whole stack behind Envoy with mTLS: ingest,
  RSS at ~500,000 actas, freshness, verified reads, Envoy direct_response, bundle vs nginx);
* ``ingest_direct``: :mod:`bench.ingest` (ingest without Envoy, for context; its keys get
  the prefix ``direct_``).

Options: ``--quick`` (small sizes, a few minutes: a smoke run, not the committed figures),
``--only KEY...`` (the benchmarks that produce those keys or benchmark names), ``--no-write``
(print only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
QUICK_SDK_LEAVES = 50_000
FULL_SDK_LEAVES = 500_000
QUICK_INGEST_CASILLAS = 3_000
FULL_INGEST_CASILLAS = 40_000  # bench.ingest's own default (~118,000 actas)
SDK_TIMEOUT_S = 1800.0  # building the 500k-leaf log the first time takes minutes

Results = tuple[dict[str, float], dict[str, str]]


@dataclass(frozen=True)
class Bench:
    """One benchmark: its name, the keys it produces and how to run it."""

    name: str
    keys: tuple[str, ...]
    run: Callable[[bool, set[str] | None], Results]


def _cut(quick: bool, only: set[str] | None) -> Results:
    from bench import cut

    return cut.run(), {}


def _sdk(quick: bool, only: set[str] | None) -> Results:
    leaves = QUICK_SDK_LEAVES if quick else FULL_SDK_LEAVES
    done = subprocess.run(
        [sys.executable, "-m", "bench.sdk", "--leaves", str(leaves)],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
        timeout=SDK_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.sdk failed: {done.stderr[-1500:]}")
    numbers = json.loads((OUT / "sdk.json").read_text())
    results = {k: float(v) for k, v in numbers.items() if k.startswith(("sdk_", "recount"))}
    # Where the recount's time goes, from the same run.
    results.update({f"recount_{k}": float(v) for k, v in numbers.items() if k.startswith("part_")})
    notes = {}
    if leaves != 500_000:
        results.pop("recount_500k_s", None)
        notes["recount_500k_s"] = f"quick run: recount of {leaves:,} leaves only (recount_s)"
    return results, notes


def _stack(quick: bool, only: set[str] | None) -> Results:
    from bench import stack_bench

    return stack_bench.run(quick=quick, only=only)


def _ingest_direct(quick: bool, only: set[str] | None) -> Results:
    from bench import ingest

    numbers = ingest.run(QUICK_INGEST_CASILLAS if quick else FULL_INGEST_CASILLAS)
    return {f"direct_{k}": v for k, v in numbers.items()}, {}


BENCHES = (
    Bench("cut", ("cut_ms_1k_on_10k", "cut_ms_1k_on_100k", "cut_ms_1k_on_500k"), _cut),
    Bench("sdk", ("sdk_verify_ms", "recount_500k_s", "bytes_per_summary_read"), _sdk),
    Bench(
        "stack",
        (
            "ingest_actas_per_s",
            "ingest_vs_sqlite_ratio",
            "freshness_p50_s",
            "freshness_p99_s",
            "freshness_p99_s_3_witnesses",
            "freshness_p99_s_1_witness_down",
            "verified_reads_per_s",
            "bytes_per_unchanged_poll",
            "bytes_per_changed_poll",
            "reads_vs_envoy_direct_ratio",
            "bundle_gets_vs_nginx_ratio",
            "max_service_rss_mb",
        ),
        _stack,
    ),
    Bench("ingest_direct", ("direct_ingest_actas_per_s",), _ingest_direct),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and write the documents; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", nargs="+", metavar="KEY", help="keys or benchmark names")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/")
    args = parser.parse_args(argv)
    only = set(args.only) if args.only else None
    selected = [
        b for b in BENCHES if only is None or b.name in only or any(k in only for k in b.keys)
    ]
    if only is not None and not selected:
        parser.error(f"no benchmark produces {sorted(only)}")
    key_filter = None if only is None else {k for b in selected for k in b.keys} & only or None
    results: dict[str, float] = {}
    notes: dict[str, str] = {}
    failed = False
    wall = time.monotonic()
    for bench in selected:
        print(f"== {bench.name}", flush=True)
        t = time.monotonic()
        try:
            numbers, more = bench.run(args.quick, key_filter)
        except Exception as e:  # one failed benchmark must not void the others' figures
            traceback.print_exc()
            failed = True
            for key in bench.keys:
                notes[key] = f"not measured: {bench.name} failed ({type(e).__name__}: {e})"[:400]
            continue
        results.update(numbers)
        notes.update(more)
        results[f"bench_{bench.name}_s"] = round(time.monotonic() - t, 1)
        for key, value in numbers.items():
            print(f"  {key:40} {value:>14,.3f}", flush=True)
    results["bench_total_s"] = round(time.monotonic() - wall, 1)
    command = "python -m bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    if not args.no_write:
        report.write(results, notes, command=command.strip(), quick=args.quick)
        print(f"wrote {report.DOCS / 'BENCHMARKS.md'} and {report.DOCS / 'benchmarks.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
