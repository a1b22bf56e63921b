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
from collections.abc import Callable, Mapping
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
    "freshness_p99_s_3_witnesses": Goal("≤ 1.3", "s", at_most=1.3),
    "freshness_p99_s_1_witness_down": Goal("≤ 1.3", "s", at_most=1.3),
    "cut_ms_1k_on_10k": Goal("≤ 100", "ms", at_most=100),
    "cut_ms_1k_on_100k": Goal("≤ 100", "ms", at_most=100),
    "cut_ms_1k_on_500k": Goal("≤ 100", "ms", at_most=100),
    "verified_reads_per_s": Goal("≥ 5,000", "reads/s", at_least=5_000),
    "bytes_per_unchanged_poll": Goal("≤ 1,024", "bytes", at_most=1024),
    "bytes_per_changed_poll": Goal("(context)", "bytes"),
    "bytes_per_summary_read": Goal("≤ 16,384", "bytes", at_most=16_384),
    "reads_vs_envoy_direct_ratio": Goal("(context)", "×"),
    "http_reads_vs_nginx_ratio": Goal("≥ 0.8", "×", at_least=0.8),
    "sdk_http_verify_ms": Goal("(context)", "ms"),
    "sdk_verify_ms": Goal("≤ 5", "ms", at_most=5),
    "recount_500k_s": Goal("≤ 5", "s", at_most=5),
    "max_service_rss_mb": Goal("≤ 500", "MiB", at_most=500),
}


# Why a goal is missed, from the figures of the same run, and what would close it. Used
# only when the run misses the goal (write() adds it to the notes then).
Results = Mapping[str, float]


def _why_ingest(r: Results) -> str:
    parts = [
        f"through Envoy ingest reached {r.get('ingest_vs_sqlite_ratio', 0):.0%} of the "
        f"rate of inserting the very rows it stored straight into a fresh SQLite store "
        f"(`sqlite_actas_per_s` {r.get('sqlite_actas_per_s', 0):,.0f}/s at "
        f"{r.get('ingest_actas', 0):,.0f} actas; 500 per transaction, WAL, synchronous=FULL)"
    ]
    if "direct_ingest_actas_per_s" in r:
        parts.append(
            f"without Envoy, on a {r.get('direct_ingest_actas', 0):,.0f}-acta log, it reached "
            f"{r['direct_ingest_actas_per_s']:,.0f}/s against a floor of "
            f"{r.get('direct_sqlite_actas_per_s', 0):,.0f}/s"
        )
    return (
        "; ".join(parts)
        + ". One Python process with one SQLite writer decides and commits every acta, and "
        "on this 2-core machine it shares the CPUs with aggregation and publication "
        "following the log, Envoy and the load generator (the floor itself falls as the "
        "log's B-trees grow). To close it: ingest sharded by state into several processes "
        "and stores (the log order is decided per commit group), larger commit groups, "
        "SQLite's page cache sized to the national log; or more cores."
    )


def _why_reads(r: Results) -> str:
    cpu = {k: r.get(f"reads_cpu_us_{k}", 0.0) for k in ("clients", "publication", "envoy")}
    spent = sum(cpu.values())
    return (
        "each read is a full SDK `Client.latest()` through Envoy's mTLS to publication's "
        "Python gRPC server, conditional (docs/adr/0089): "
        f"{r.get('reads_changed_share', 0):.2%} of the polls got new results "
        f"({r.get('bytes_per_changed_poll', 0):,.0f} bytes each), the others an answer of "
        f"{r.get('bytes_per_unchanged_poll', 0):,.0f} bytes verified with the results held. "
        f"Bytes no longer bound it; CPU does: per read, {cpu['clients']:,.0f} µs in the "
        f"SDK clients (gRPC's sync stack, the state file read, an Ed25519 verification and "
        f"the inclusion path), {cpu['publication']:,.0f} µs in publication (grpc.aio's "
        f"per-call cost: the answer is a message built once per cut) and "
        f"{cpu['envoy']:,.0f} µs in Envoy (mTLS, RBAC, rate-limit filters, HTTP/2 both "
        f"ways): {spent:,.0f} µs of CPU per read, so the 2 cores shared by all three "
        f"allow at most {2e6 / spent if spent else 0:,.0f} reads/s. Envoy alone answering "
        f"the whole cut reaches {r.get('envoy_direct_reads_per_s', 0):,.0f}/s "
        "(`envoy_direct_reads_per_s`, h2load, no verification). To close it: more cores "
        "(the load generators alone use about half of these), publication's unary read "
        "path in a compiled server, or the small answers served by Envoy or a CDN from "
        "the static bundle (`checkpoint` file) instead of the Python process."
    )


def _why_recount(r: Results) -> str:
    parts = {
        k.removeprefix("recount_part_").removesuffix("_s"): v
        for k, v in r.items()
        if k.startswith("recount_part_")
    }
    measured = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in parts.items())
    return (
        "the recount runs in the client's Python process over every leaf: hash, parse, "
        "apply each acta record to the tally at every level, recompute and hash every "
        "cut's results. Each part alone, in this run: "
        + (measured or "not measured")
        + ". In pure Python each leaf costs about 7 µs of protobuf access before the tally "
        "adds it (a packed int per unit), and each cut rebuilds the ~1,000 contest entries "
        "its records changed, ~90 fields each, at 60-250 ns a field. To close it: check the "
        "cuts' results in a second process while the first applies the next records "
        "(2 cores: about the larger of the two halves), or a compiled tally."
    )


WHY_MISSED: dict[str, Callable[[Results], str]] = {
    "ingest_actas_per_s": _why_ingest,
    "verified_reads_per_s": _why_reads,
    "recount_500k_s": _why_recount,
    "http_reads_vs_nginx_ratio": lambda r: (
        "Envoy's HTTP cache filter copies each body through its filter chain where nginx "
        f"uses sendfile (server CPU {r.get('http_reads_cpu_ms_per_1k', 0):.0f} ms against "
        f"{r.get('http_reads_nginx_cpu_ms_per_1k', 0):.0f} ms per 1,000 GETs); to close it, "
        "let nginx or a CDN serve the bundle directory (docs/operations.md: its format is "
        "plain immutable files for that reason)."
    ),
    "freshness_p99_s": lambda r: (
        "a cut waits for the interval (1 s) and for aggregation's results over the new "
        "records; under load a cut can slip. To close it: cut on arrival with a minimum "
        "spacing instead of a fixed timer."
    ),
    "max_service_rss_mb": lambda r: (
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
    "freshness_p50_s_3_witnesses": "freshness p50 with 3 local witnesses, 2 of 3 required (s)",
    "freshness_max_s_3_witnesses": "slowest probe with 3 witnesses (s)",
    "freshness_p50_s_1_witness_down": "freshness p50 with one of the 3 witnesses down (s)",
    "freshness_max_s_1_witness_down": "slowest probe with one witness down (s)",
    "verified_reads_p99_ms": "p99 latency of one verified read (ms)",
    "verified_reads_errors": "reads that raised (any SDK error)",
    "envoy_direct_reads_per_s": "Envoy answering the same bytes by direct_response (h2load)",
    "http_reads_per_s": "bundle GETs/s from the public listener, Envoy's cache (h2load, TLS)",
    "http_reads_nginx_per_s": "bundle GETs/s from nginx, same files (h2load, TLS)",
    "http_reads_cpu_ms_per_1k": "CPU of Envoy and the origin per 1,000 bundle GETs (ms)",
    "http_reads_nginx_cpu_ms_per_1k": "CPU of nginx per 1,000 bundle GETs (ms)",
    "sdk_http_verify_cpu_ms": "client CPU of that fresh verification over HTTPS (ms)",
    "bundle_mean_file_bytes": "mean size of the files fetched (bytes)",
    "sdk_verify_p99_ms": "p99 of verifying a new national cut (ms)",
    "summary_bytes": "the signed results summary of the national cut alone (bytes)",
    "results_blob_bytes": "the whole results blob of the national cut (bytes)",
    "recount_s": "recount of the log measured (s)",
    "recount_cuts": "cuts in that log, each one's results recomputed",
    "recount_part_hash_s": "recount part alone: hashing every leaf (s)",
    "recount_part_parse_s": "recount part alone: parsing every leaf (s)",
    "recount_part_tally_apply_s": "recount part alone: applying the acta records (s)",
    "recount_part_cut_results_s": "recount part alone: every cut's results and digest (s)",
    "latest_cut_bytes": "size of the whole signed cut answer (bytes)",
    "reads_changed_share": "share of the polls that got new results (the mix)",
    "reads_new_cut_share": "share of the polls that got a new cut (new results or not)",
    "reads_cpu_us_clients": "CPU per read in the SDK load generators (µs)",
    "reads_cpu_us_publication": "CPU per read in publication (µs)",
    "reads_cpu_us_envoy": "CPU per read in Envoy (µs)",
    "verified_whole_reads_per_s": "the same reads fetching the whole cut each time (A/B)",
    "stack_setup_s": "state directory and election loaded (s)",
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
    desc_override: Mapping[str, str] | None = None,
) -> None:
    """Write docs/benchmarks.json and docs/BENCHMARKS.md from one run's results.

    A missed goal gets the note from :data:`WHY_MISSED` unless the run gave its own.

    Args:
        results: key -> value, all from this run.
        notes: key -> note (why not measured, why missed, context).
        command: the command that produced the run (written into both documents).
        quick: whether it was a ``--quick`` smoke run (said at the top).
        desc_override: the machine description of the run (when re-rendering a past
            run; default: this machine now).
    """
    desc = dict(desc_override) if desc_override is not None else machine()
    run_notes = dict(notes)
    notes = dict(notes)
    for key, goal in GOALS.items():
        if key in results and not goal.met(results[key]) and key not in notes:
            why = WHY_MISSED.get(key)
            notes[key] = why(results) if why is not None else "missed; no analysis recorded yet"
    payload = {
        "machine": desc,
        "command": command,
        "quick": quick,
        "results": dict(results),
        "run_notes": run_notes,
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


def rerender() -> None:
    """Write the documents again from docs/benchmarks.json: same figures, same machine
    line, notes recomputed (for when the analysis text changed, not the numbers)."""
    payload = json.loads((DOCS / "benchmarks.json").read_text())
    write(
        payload["results"],
        payload.get("run_notes", {}),
        command=payload.get("command", "python -m bench"),
        quick=bool(payload.get("quick", False)),
        desc_override=payload["machine"],
    )


if __name__ == "__main__":
    rerender()
