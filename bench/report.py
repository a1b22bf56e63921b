"""Collect benchmark results and write docs/BENCHMARKS.md and docs/benchmarks.json.

Each benchmark module under ``bench/`` exposes ``run() -> dict[str, float]`` returning
named measurements (medians of several runs). This module knows the goal for each key,
describes the machine, and writes the two documents from one run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Goal:
    """The goal for one measurement.

    Attributes:
        text: how the goal reads in the table.
        met: whether a measured value meets it.
        unit: unit of the value.
    """

    text: str
    unit: str
    at_least: float | None = None
    at_most: float | None = None

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        if self.at_least is not None and value < self.at_least:
            return False
        return not (self.at_most is not None and value > self.at_most)


GOALS: dict[str, Goal] = {
    "ingest_actas_per_s": Goal("≥ 10,000", "actas/s", at_least=10_000),
    "ingest_vs_sqlite_ratio": Goal("(context)", "×"),
    "freshness_p50_s": Goal("(context)", "s"),
    "freshness_p99_s": Goal("≤ 2", "s", at_most=2),
    "cut_ms_1k_on_10k": Goal("≤ 100", "ms", at_most=100),
    "cut_ms_1k_on_100k": Goal("≤ 100", "ms", at_most=100),
    "cut_ms_1k_on_500k": Goal("≤ 100", "ms", at_most=100),
    "verified_reads_per_s": Goal("≥ 5,000", "reads/s", at_least=5_000),
    "reads_vs_envoy_direct_ratio": Goal("(context)", "×"),
    "bundle_gets_vs_nginx_ratio": Goal("≥ 0.8", "×", at_least=0.8),
    "sdk_verify_ms": Goal("≤ 5", "ms", at_most=5),
    "recount_500k_s": Goal("≤ 10", "s", at_most=10),
    "max_service_rss_mb": Goal("≤ 500", "MiB", at_most=500),
}


# Why a goal is missed, what we measured about the cause and what would close it. Used
# only when the run misses the goal (write() adds it to the notes then).
WHY_MISSED: dict[str, str] = {
    "ingest_actas_per_s": (
        "at national scale the store bounds it: `sqlite_actas_per_s` (the very rows ingest "
        "stored, inserted straight into a fresh SQLite store, 500 per transaction, WAL, "
        "synchronous=FULL) falls from ~22,000/s on a 118,000-acta log "
        "(`direct_sqlite_actas_per_s`) to about the ingest rate on a 500,000-acta one, and "
        "`ingest_vs_sqlite_ratio` is close to 1: Envoy, TLS and Python are not the limit "
        "there (`direct_ingest_actas_per_s`, without Envoy on the smaller log, is above the "
        "goal). To close it: keep the index B-trees in cache (SQLite `cache_size`/`mmap_size` "
        "sized to the national log), larger commit groups, or ingest sharded by state into "
        "several stores; then measure again on this machine, which is shared (see the load "
        "average)."
    ),
    "verified_reads_per_s": (
        "each read is a full SDK `Client.latest()`: the whole signed cut (~290 KB, because "
        "the results blob holds every state, district and section) crosses Envoy's mTLS and "
        "publication's Python gRPC server, and the client hashes and parses it; on 2 cores "
        "shared by the load generators, Envoy and publication that is ~80 MB/s of payload. "
        "`envoy_direct_reads_per_s` is Envoy alone answering the same bytes to h2load. To "
        "close it: a conditional read (the client sends its verified tree size and gets "
        "only the signed checkpoint when nothing changed), national and state results in "
        "the cut with sections fetched on demand, and the latest cut's bytes served from "
        "Envoy's cache or the static bundle on a CDN instead of the Python process."
    ),
    "recount_500k_s": (
        "the SDK's recount is pure Python per leaf: applying each acta record to the tally "
        "at every level and recomputing and hashing the results of every cut dominate "
        "(`recount_part_*`: tally apply and cut results are most of the time; hashing "
        "the 500,000 leaves is under a second). To close it: the vectorised accumulators "
        "the service side already uses (bench/tally.py) in the SDK's tally, and results "
        "of a cut computed incrementally from the previous cut's per-unit cache."
    ),
    "bundle_gets_vs_nginx_ratio": (
        "Envoy's HTTP cache filter copies each body through its filter chain where nginx "
        "uses sendfile; to close it, let nginx or a CDN serve the bundle directory (its "
        "format is plain immutable files for that reason)."
    ),
    "freshness_p99_s": (
        "a cut waits for the interval (1 s) and for aggregation's results over the new "
        "records; under load a cut can slip. To close it: cut on arrival with a minimum "
        "spacing instead of a fixed timer."
    ),
    "max_service_rss_mb": (
        "a service keeps per-casilla state for the national catalogue in memory; the "
        "`rss_mb_<service>` rows say which one."
    ),
}

# One line on each context figure (the ones without a goal), for the second table.
CONTEXT: dict[str, str] = {
    "ingest_overall_actas_per_s": "actas/s over the whole import through Envoy",
    "ingest_actas": "actas imported through Envoy (the RSS figures are at this count)",
    "ingest_retries": "batches retried during the import (retryable statuses)",
    "sqlite_actas_per_s": "the same rows straight into SQLite, same settings (floor)",
    "catch_up_s": "after the import, until a verified cut covered every acta (s)",
    "rss_mb_ingest": "peak RSS of ingest (VmHWM, MiB)",
    "rss_mb_aggregation": "peak RSS of aggregation (VmHWM, MiB)",
    "rss_mb_publication": "peak RSS of publication (VmHWM, MiB)",
    "rss_mb_envoy": "peak RSS of Envoy (VmHWM, MiB)",
    "freshness_max_s": "slowest freshness probe (s)",
    "freshness_probes": "single actas timed from ACCEPTED to a verified cut",
    "verified_reads_p99_ms": "p99 latency of one verified read (ms)",
    "verified_reads_errors": "reads that raised (any SDK error)",
    "envoy_direct_reads_per_s": "Envoy answering the same bytes by direct_response (h2load)",
    "bundle_gets_per_s": "bundle GETs/s through Envoy's cache (h2load, h2c)",
    "bundle_gets_nginx_per_s": "bundle GETs/s from nginx, same files (h2load, h2c)",
    "bundle_mean_file_bytes": "mean size of the files fetched (bytes)",
    "sdk_verify_p99_ms": "p99 of verifying a new national cut (ms)",
    "recount_s": "recount of the log measured (s)",
    "direct_ingest_actas_per_s": "ingest without Envoy, 118k-acta log (bench/ingest.py)",
    "direct_sqlite_actas_per_s": "SQLite floor for that smaller log",
}


def machine() -> dict[str, str]:
    """A description of the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "commit": commit,
        # Other work shares this machine; the load average at the start says how much.
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write(
    results: Mapping[str, float],
    notes: Mapping[str, str],
    *,
    command: str = "python -m bench",
    quick: bool = False,
) -> None:
    """Write docs/benchmarks.json and docs/BENCHMARKS.md from one run's results.

    A missed goal gets the note from :data:`WHY_MISSED` unless the run gave its own.

    Args:
        results: key -> value, all from this run.
        notes: key -> note (why not measured, why missed, context).
        command: the command that produced the run (written into both documents).
        quick: whether it was a ``--quick`` smoke run (said at the top).
    """
    desc = machine()
    notes = dict(notes)
    for key, goal in GOALS.items():
        if key in results and not goal.met(results[key]) and key not in notes:
            notes[key] = WHY_MISSED.get(key, "missed; no analysis recorded yet")
    payload = {
        "machine": desc,
        "command": command,
        "quick": quick,
        "results": dict(results),
        "notes": notes,
    }
    (DOCS / "benchmarks.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (`python -m bench`) in one run; each figure is the median",
        "of several runs, and each is compared with its goal in the same run. How each one",
        "is measured: bench/README.md. Never edited by hand: rerun the command.",
        "",
        f"Command: `{command}`" + (" (**quick smoke run: small sizes**)" if quick else ""),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in desc.items() if v),
        "",
        "| Measurement | Value | Goal | Met |",
        "|---|---|---|---|",
    ]
    for key, goal in GOALS.items():
        if key not in results:
            lines.append(f"| `{key}` | not measured | {goal.text} {goal.unit} | — |")
            continue
        value = results[key]
        met = (
            "—"
            if goal.at_least is None and goal.at_most is None
            else ("yes" if goal.met(value) else "**no**")
        )
        lines.append(f"| `{key}` | {value:,.3f} {goal.unit} | {goal.text} {goal.unit} | {met} |")
    extra = sorted(set(results) - set(GOALS))
    lines += ["", "Context (no goal):", "", "| Measurement | Value | What |", "|---|---|---|"]
    for key in extra:
        lines.append(f"| `{key}` | {results[key]:,.3f} | {CONTEXT.get(key, '')} |")
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"* **{key}**: {text}" for key, text in sorted(notes.items())]
    (DOCS / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
