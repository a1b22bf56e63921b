"""``make soak`` (``python -m bench.soak``): the long reliability and security runs.

Writes docs/RELIABILITY.md (and bench/out/soak.json) with the figures of one run:

1. **crash**: the whole stack (``veritally.stack.Stack``: three services behind Envoy
   with mTLS) imports ``--actas`` actas through the edge (single capture, batches of 500,
   retrying retryable statuses as ``veritally import``/the demo do) while ``--rounds``
   times a random one of ingest, aggregation and publication is SIGKILLed at a random
   moment and started again; an SDK client watches every cut through Envoy all along.
   Afterwards, with a verified cut covering every acknowledged acta:

   * acknowledged actas lost: acta ids ingest answered ACCEPTED (or DUPLICATE of a
     logged revision) that are not in the final log (read back with GetLeaves and
     checked by a full SDK recount);
   * actas double counted: acta ids with more than one record in the log (the import
     submits no corrections, so one record per acta is the only right answer);
   * tree sizes signed twice with different roots: over every cut (GetCut 1..latest),
     every cut the watcher verified, and every checkpoint file of the bundle;
   * SDK errors other than transient transport ones: what the watcher raised (``watch``
     retries transport errors itself) and the recount's verdict.

2. **bad input**: the hypothesis properties of tests/unit/test_fuzz_sdk_parsers.py and
   tests/integration/test_fuzz_ingest_api.py with ``--fuzz-examples`` examples each (the
   tests read ``VERITALLY_FUZZ_EXAMPLES``).

3. **abuse**: :func:`bench.abuse.run_abuse` for ``--abuse-seconds`` with
   ``--idle`` idle mTLS connections and ``--flooders`` flooding processes; then, one
   after the other, a capture centre's gzip flood (``--gzip-seconds``: requests that
   would inflate to 60 MB each) and stuffing flood (``--stuffing-seconds``: disagreeing
   captures of the same few actas), with ingest's store size and RSS before and after.

4. **isolation**: one identity trying to starve the others, against a stack with its
   default limits: :func:`bench.abuse.watch_stream_flood` (``--streams`` WatchCuts
   streams of one outlet), :func:`bench.abuse.silent_submit_flood` (two centres holding
   silent SubmitActas streams) and :func:`bench.abuse.connection_flood`
   (``--connections`` TCP connections that never start TLS), each for
   ``--isolation-seconds``, one after the other; the other identities' success rates
   and p99.

The document ends with the "Attacks and defences" table (:mod:`bench.attacks`): each
attack of issue 10, its defence, the tests that hold it and the figure, from the parts'
figures where a flood measures it.

``--only crash|fuzz|abuse|isolation`` runs a part (the document then keeps the other
parts' figures from their own runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import attacks, report
from bench.abuse import (
    CALL_TIMEOUT_S,
    GZIP_FLOOD_RATE,
    GZIP_INFLATED_BYTES,
    RSS_SAMPLE_S,
    STUFFING_ACTAS,
    STUFFING_RATE,
    connection_flood,
    run_abuse,
    silent_submit_flood,
    watch_stream_flood,
)
from veritally.demo.replay import CaptureStats, replay
from veritally.election import load_actas, load_election
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.rpc.streams import DEFAULT_STREAM_LIMITS
from veritally.stack import SERVICES, Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import (
    Client,
    ClientConfig,
    TransportError,
    VeritallyError,
    load_trust_root,
)
from veritally_client.protocol import open_note, parse_checkpoint
from veritally_client.protocol.pb import (
    acta_pb2,
    log_pb2,
    publication_pb2,
    publication_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DOC = report.DOCS / "RELIABILITY.md"
ACTAS_PER_CASILLA = 2.95  # the generator's average (3 contests, some casillas fewer)
INTERVAL_S = 1.0  # publication's cut interval during the crash run (seconds)
SECONDS_PER_ROUND = 6.0  # import pacing: the import spans about rounds × this (seconds)
MIN_KILL_GAP_S = 0.3  # a kill comes at least this long after the previous restart (seconds)
CATCH_UP_S = 300.0  # longest wait for a cut covering every acknowledged acta (seconds)
LEAVES_PAGE = 10_000  # GetLeaves page size asked for
FUZZ_TIMEOUT_S = 3600.0
# Casillas of the abuse stack: the polite centre (one of 4) submits 10 actas/s through
# the abuse run and both floods (3 minutes at the defaults), ~1,800 of its own actas.
ABUSE_CASILLAS = 3_000


# ------------------------------------------------------------------------------------
# crash


@dataclass
class Kill:
    """One SIGKILL and the restart after it."""

    service: str
    at_s: float  # since the start of the import
    acknowledged_before: int  # actas acknowledged when it was killed
    restart_s: float  # until SERVING again


@dataclass
class WatchLog:
    """What the watching SDK client saw."""

    cuts: list[tuple[int, int, bytes, int]] = field(
        default_factory=list
    )  # number, size, root, actas
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0


class Watcher(threading.Thread):
    """An SDK client following every cut through the edge, verifying each, all along."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="soak-watcher", daemon=True)
        self.client = client
        self.log = WatchLog()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for cut in self.client.watch():
                    self.log.cuts.append(
                        (cut.cut_number, cut.tree_size, cut.root_hash, cut.acta_records)
                    )
                    if self.stop.is_set():
                        return
            except TransportError:
                self.log.reconnects += 1  # transient: watch() gave up a reconnect loop
                time.sleep(0.5)
            except VeritallyError as e:  # a verification failure: what the goal counts
                self.log.errors[type(e).__name__] += 1
                time.sleep(0.5)


def _client(stack: Stack, outlet: str, state_dir: Path) -> Client:
    # Kills make cuts late by a restart (seconds); far below this.
    config = ClientConfig(max_checkpoint_age=300.0, watch_backoff_max=1.0)
    return stack.media_client(outlet, state_dir=state_dir, config=config)


def _import(
    stack: Stack, actas: list[acta_pb2.Acta], stats: CaptureStats, seconds: float
) -> BaseException | None:
    """Submit ``actas`` through the edge, paced to last about ``seconds``."""
    chunk = max(500, int(len(actas) / max(seconds, 1.0)))  # about one chunk per second
    try:
        for start in range(0, len(actas), chunk):
            t = time.monotonic()
            asyncio.run(
                replay(stack, iter(actas[start : start + chunk]), stats, double_capture=False)
            )
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
    except BaseException as e:  # reported: an import that gave up is a finding
        return e
    return None


def _fetch_cuts(stack: Stack) -> list[log_pb2.SignedCut]:
    """Every cut the publisher serves, 1..latest."""
    tls = stack.tls("outlet-02")
    cuts: list[log_pb2.SignedCut] = []
    with grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials()) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        latest = stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=30).cut
        last = acta_pb2.LogLeaf.FromString(latest.cut_leaf).cut_record.cut_number
        for number in range(1, last + 1):
            cuts.append(
                stub.GetCut(publication_pb2.GetCutRequest(cut_number=number), timeout=30).cut
            )
    return cuts


def _read_log(stack: Stack, size: int) -> list[bytes]:
    tls = stack.tls("outlet-02")
    out: list[bytes] = []
    with grpc.secure_channel(
        stack.endpoints.edge,
        tls.channel_credentials(),
        options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
    ) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        while len(out) < size:
            response = stub.GetLeaves(
                publication_pb2.GetLeavesRequest(
                    start=len(out), count=min(LEAVES_PAGE, size - len(out))
                ),
                timeout=60,
            )
            if not response.leaves:
                raise RuntimeError(f"GetLeaves returned nothing at {len(out)} of {size}")
            out.extend(response.leaves)
    return out


def _checkpoint_size_root(stack: Stack, note: bytes) -> tuple[int, bytes]:
    root = load_trust_root(stack.state.trust_root_v1)
    checkpoint = parse_checkpoint(open_note(note, root.verifiers).text)
    return checkpoint.size, checkpoint.root_hash


def crash_run(*, rounds: int, actas_wanted: int, seed: int) -> dict[str, Any]:
    """The crash run; returns its figures (see the module docstring)."""
    rng = random.Random(seed)
    casillas = max(50, int(actas_wanted / ACTAS_PER_CASILLA))
    state = StateDir(OUT / f"soak-{casillas}")
    state.wipe_data()
    Bootstrap(casillas=casillas, seed=seed).ensure(state)
    actas = list(load_actas(load_election(state.election_yaml), state.actas_csv))
    stats = CaptureStats()
    kills: list[Kill] = []
    wide = TokenBucket(burst=100_000, per_second=100_000)  # the import is not rate limited
    stack = Stack(
        state,
        base_port=None,
        single_capture=True,
        interval_s=INTERVAL_S,
        drain_seconds=0.5,
        auto_restart=False,  # the run restarts what it kills, and times it
        limits=Limits(capture=wide, media=wide, total=wide),
    )
    figures: dict[str, Any] = {"actas_in_file": len(actas), "rounds_wanted": rounds}
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, stack:
        watcher = Watcher(_client(stack, "outlet-01", Path(tmp) / "watcher"))
        watcher.start()
        import_error: list[BaseException | None] = [None]
        importer = threading.Thread(
            target=lambda: import_error.__setitem__(
                0, _import(stack, actas, stats, rounds * SECONDS_PER_ROUND)
            ),
            name="soak-import",
        )
        started = time.monotonic()
        importer.start()
        # Kill moments: uniform over the planned length of the import, in order.
        planned = rounds * SECONDS_PER_ROUND
        moments = sorted(rng.uniform(1.0, planned * 0.95) for _ in range(rounds))
        # Each service killed rounds/3 times (±1), in a random order.
        victims = [SERVICES[i % len(SERVICES)] for i in range(rounds)]
        rng.shuffle(victims)
        for moment, name in zip(moments, victims, strict=True):
            time.sleep(max(MIN_KILL_GAP_S, moment - (time.monotonic() - started)))
            at = time.monotonic() - started
            acknowledged = len(stats.logged)
            stack.kill(name)
            t = time.monotonic()
            stack.restart(name)  # start again and wait until SERVING
            kills.append(Kill(name, round(at, 2), acknowledged, round(time.monotonic() - t, 2)))
            print(f"  kill {len(kills)}/{rounds}: {name} at {at:.1f} s", flush=True)
        kills_done_s = time.monotonic() - started
        importer.join()
        import_s = time.monotonic() - started
        acknowledged_ids = set(stats.logged)
        # Wait for a verified cut covering every acknowledged acta.
        deadline = time.monotonic() + CATCH_UP_S
        with _client(stack, "outlet-02", Path(tmp) / "checker") as checker:
            while True:
                cut = checker.latest()
                if cut.acta_records >= len(acknowledged_ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            final = cut
            recount_error = ""
            try:
                recount = checker.recount()
                recounted = recount.acta_records
            except VeritallyError as e:
                recount_error = type(e).__name__
                recounted = -1
        watcher.stop.set()
        watcher.join(timeout=30)
        leaves = _read_log(stack, final.tree_size)
        cuts = _fetch_cuts(stack)
        bundle_checkpoints = sorted((state.bundle / "checkpoints").iterdir())
        bundle_pairs = [_checkpoint_size_root(stack, p.read_bytes()) for p in bundle_checkpoints]
    # -- the checks ------------------------------------------------------------------
    records: Counter[str] = Counter()
    revisions: Counter[tuple[str, int]] = Counter()
    for leaf in leaves:
        pb = acta_pb2.LogLeaf.FromString(leaf)
        if pb.WhichOneof("kind") == "acta_record":
            records[pb.acta_record.acta_id] += 1
            revisions[(pb.acta_record.acta_id, pb.acta_record.revision)] += 1
    lost = sorted(acknowledged_ids - set(records))
    doubled = sorted(a for a, n in records.items() if n > 1)
    roots: dict[int, set[bytes]] = {}
    for cut_pb in cuts:
        size, root = _checkpoint_size_root(stack, cut_pb.checkpoint)
        roots.setdefault(size, set()).add(root)
    for _, size, root, _ in watcher.log.cuts:
        roots.setdefault(size, set()).add(root)
    for size, root in bundle_pairs:
        roots.setdefault(size, set()).add(root)
    forked_sizes = sorted(s for s, r in roots.items() if len(r) > 1)
    sdk_errors = Counter(watcher.log.errors)
    if recount_error:
        sdk_errors[f"recount: {recount_error}"] += 1
    figures.update(
        {
            "actas_submitted": stats.actas,
            "actas_acknowledged": len(acknowledged_ids),
            "import_error": repr(import_error[0]) if import_error[0] is not None else "",
            "import_retries": stats.retries,
            "outcomes": dict(stats.status),
            "rounds": len(kills),
            "kills_by_service": dict(Counter(k.service for k in kills)),
            "kills": [k.__dict__ for k in kills],
            "kills_done_s": round(kills_done_s, 1),
            "import_s": round(import_s, 1),
            "final_cut": final.cut_number,
            "final_tree_size": final.tree_size,
            "final_acta_records": final.acta_records,
            "recounted_acta_records": recounted,
            "cuts_verified_by_watcher": len(watcher.log.cuts),
            "watcher_transport_reconnects": watcher.log.reconnects,
            "signed_sizes_checked": len(roots),
            "acknowledged_lost": len(lost),
            "lost_examples": lost[:10],
            "double_counted": len(doubled),
            "double_counted_examples": doubled[:10],
            "sizes_signed_twice_with_different_roots": len(forked_sizes),
            "sdk_errors_other_than_transport": sum(sdk_errors.values()),
            "sdk_error_types": dict(sdk_errors),
            "mean_restart_s": round(sum(k.restart_s for k in kills) / max(1, len(kills)), 2),
        }
    )
    return figures


# ------------------------------------------------------------------------------------
# fuzz and abuse


def fuzz_run(examples: int) -> dict[str, Any]:
    """The hypothesis properties with ``examples`` examples each, in a pytest process."""
    tests = ["tests/unit/test_fuzz_sdk_parsers.py", "tests/integration/test_fuzz_ingest_api.py"]
    env = dict(os.environ, VERITALLY_FUZZ_EXAMPLES=str(examples))
    t = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_S,
    )
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return {
        "examples_per_property": examples,
        "passed": done.returncode == 0,
        "pytest_summary": summary,
        "seconds": round(time.monotonic() - t, 1),
        "failures": done.stdout[-3000:] if done.returncode != 0 else "",
    }


def abuse_run(
    *,
    seconds: float,
    idle: int,
    flooders: int,
    gzip_seconds: float = 0.0,
    stuffing_seconds: float = 0.0,
) -> dict[str, Any]:
    """The abuse scenario against a small stack with the default limits, then the gzip
    and stuffing floods of one capture centre (``*_seconds`` each; 0: not run)."""
    state = StateDir(OUT / "soak-abuse")
    state.wipe_data()
    Bootstrap(casillas=ABUSE_CASILLAS, seed=5).ensure(state)
    actas = list(load_actas(load_election(state.election_yaml), state.actas_csv))
    polite_rate = 10.0
    with Stack(
        state, base_port=None, single_capture=True, drain_seconds=0.5, interval_s=1.0
    ) as stack:
        result = run_abuse(
            stack,
            seconds=seconds,
            actas=actas,  # the polite centre takes its own, as many as each part needs
            flooders=flooders,
            idle=idle,
            polite_rate=polite_rate,
            gzip_seconds=gzip_seconds,
            stuffing_seconds=stuffing_seconds,
        )
    return result.summary()


def isolation_run(*, seconds: float, streams: int, connections: int) -> dict[str, Any]:
    """The three floods of one identity against a small stack with the default limits."""
    state = StateDir(OUT / "soak-isolation")
    state.wipe_data()
    Bootstrap(casillas=2_000, seed=6).ensure(state)
    actas = list(load_actas(load_election(state.election_yaml), state.actas_csv))
    with Stack(
        state, base_port=None, single_capture=True, drain_seconds=0.5, interval_s=1.0
    ) as stack:
        print("  WatchCuts stream flood", flush=True)
        streams_part = watch_stream_flood(stack, seconds=seconds, streams=streams)
        print("  silent SubmitActas streams", flush=True)
        # The polite centre submits its own actas, 10/s, for as long as the flood lasts.
        silent_part = silent_submit_flood(stack, seconds=seconds, actas=actas)
        print("  TCP connections without TLS", flush=True)
        tcp_part = connection_flood(stack, seconds=seconds, connections=connections)
        limits = stack.topology.limits
        fd_limit = stack.envoy.open_files_limit() if stack.envoy is not None else None
    return {
        "seconds": seconds,
        "streams": streams_part,
        "silent_submits": silent_part,
        "connections": tcp_part,
        "limits": {
            "max_streams_per_identity": (
                stack.stream_limits or DEFAULT_STREAM_LIMITS
            ).max_per_identity,
            "edge_stream_max_requests": limits.edge_stream.max_requests,
            "edge_max_connections": limits.edge_max_connections,
            "max_connections": limits.max_connections,
            "tls_handshake_timeout_s": limits.tls_handshake_timeout_s,
            "envoy_open_files": fd_limit,
        },
    }


# ------------------------------------------------------------------------------------
# the document


def _goal(value: float, goal: float = 0) -> str:
    return "yes" if value <= goal else "**no**"


def _run_line(part: dict[str, Any]) -> list[str]:
    machine = part.get("machine") or {}
    where = ", ".join(f"{k} {v}" for k, v in machine.items() if v and k != "date")
    return [f"Run: `{part.get('command', '?')}`, {part.get('date', '?')}; {where}.", ""]


# The heading each part's section starts with in docs/RELIABILITY.md.
_HEADINGS = {
    "crash": "## Crash:",
    "fuzz": "## Bad input",
    "abuse": "## Abuse through Envoy",
    "isolation": "## One identity starving",
    "attacks": "## Attacks and defences",
}


def document_sections(text: str) -> dict[str, str]:
    """The sections of a RELIABILITY.md by part (heading to the next heading), so that a
    partial run without bench/out/soak.json keeps the other parts' text as it was."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = next((k for k, h in _HEADINGS.items() if line.startswith(h)), None)
            if current is not None:
                sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def write_doc(figures: dict[str, Any], *, kept: dict[str, str] | None = None) -> None:
    """Write docs/RELIABILITY.md from the soak's figures (each part from its own run);
    parts without figures keep their section from ``kept`` (see
    :func:`document_sections`)."""
    lines = [
        "# Reliability and security",
        "",
        "Figures of `make soak` (`python -m bench.soak`; `--only PART` reruns one part and",
        "keeps the others' figures, each section names its run); never edited by hand.",
        "",
    ]
    crash = figures.get("crash")
    if crash:
        lines += [
            "## Crash: SIGKILL during an import",
            "",
            *_run_line(crash),
            f"{crash['rounds']} SIGKILLs (by service: {crash['kills_by_service']}) at random "
            f"moments of an import of {crash['actas_submitted']:,} actas through Envoy "
            f"(single capture, batches of 500, retryable statuses retried), each service "
            f"started again at once (mean {crash['mean_restart_s']} s until SERVING); an SDK "
            f"client watched every cut through Envoy all along and verified "
            f"{crash['cuts_verified_by_watcher']} of them. Import: {crash['import_s']} s, "
            f"{crash['import_retries']} batches retried.",
            "",
            "| Check | Count | Goal | Met |",
            "|---|---|---|---|",
            f"| acknowledged actas lost | {crash['acknowledged_lost']} | 0 | "
            f"{_goal(crash['acknowledged_lost'])} |",
            f"| actas double counted | {crash['double_counted']} | 0 | "
            f"{_goal(crash['double_counted'])} |",
            f"| tree sizes signed twice with different roots "
            f"({crash['signed_sizes_checked']} sizes checked) | "
            f"{crash['sizes_signed_twice_with_different_roots']} | 0 | "
            f"{_goal(crash['sizes_signed_twice_with_different_roots'])} |",
            f"| SDK errors other than transient transport | "
            f"{crash['sdk_errors_other_than_transport']} {crash['sdk_error_types'] or ''} | 0 | "
            f"{_goal(crash['sdk_errors_other_than_transport'])} |",
            "",
            f"Acknowledged: {crash['actas_acknowledged']:,} actas; final cut "
            f"{crash['final_cut']} covers {crash['final_acta_records']:,} acta records "
            f"(tree size {crash['final_tree_size']:,}); the SDK's full recount of every leaf "
            f"covered {crash['recounted_acta_records']:,}. Transport reconnects of the "
            f"watcher (transient, not counted): {crash['watcher_transport_reconnects']}.",
        ]
        if crash["import_error"]:
            lines += ["", f"The import gave up: `{crash['import_error']}`."]
        if crash.get("reduced"):
            lines += ["", f"**Reduced run**: {crash['reduced']}"]
        lines += [
            "",
            "| # | service | at (s) | acknowledged before | until SERVING (s) |",
            "|---|---|---|---|---|",
        ]
        for i, k in enumerate(crash["kills"], start=1):
            lines.append(
                f"| {i} | {k['service']} | {k['at_s']} | {k['acknowledged_before']:,} | "
                f"{k['restart_s']} |"
            )
        lines.append("")
    fuzz = figures.get("fuzz")
    if fuzz:
        lines += [
            "## Bad input",
            "",
            *_run_line(fuzz),
            f"hypothesis, {fuzz['examples_per_property']} examples per property "
            "(tests/unit/test_fuzz_sdk_parsers.py: checkpoint text, signed notes, tree "
            "sizes, inclusion and consistency proofs, whole served cuts, results blobs "
            "signed with a matching digest, leaves in a recount, election definitions, "
            "trust roots, fork evidence, every file of a bundle; "
            "tests/integration/test_fuzz_ingest_api.py: random actas, batches, corrections "
            "and raw bytes against a real `veritally serve ingest` process, then the log "
            "read back). Result: "
            + ("**all properties held**" if fuzz["passed"] else "**a property failed**")
            + f" (`{fuzz['pytest_summary']}`, {fuzz['seconds']} s).",
            "",
            "atheris (coverage-guided) is not used: the parsers are pure Python over "
            "protobuf's C++ parser, and hypothesis's mutations of real signed material "
            "already reach every check; atheris would add a native dependency for the "
            "protobuf C++ layer, which is not ours to fuzz.",
            "",
        ]
        if fuzz["failures"]:
            lines += ["```", fuzz["failures"], "```", ""]
    abuse = figures.get("abuse")
    if abuse:
        pr, ps = abuse["polite_reads"], abuse["polite_submits"]
        fl, ov = abuse["flood"], abuse["oversized"]
        lines += [
            "## Abuse through Envoy",
            "",
            *_run_line(abuse),
            f"For {abuse['seconds']} s at once, against the stack with its default limits "
            "(docs/mesh.md): one outlet flooding GetLatestCut from "
            f"{abuse.get('flooders', 1)} process(es); another identity sending "
            "oversized requests (a SubmitActa request above 64 KiB, a read above 64 KiB); "
            f"{abuse['idle_opened']} idle mTLS connections held open "
            f"({abuse['idle_failed']} could not be opened, {abuse['idle_still_open']} still "
            "open at the end).",
            "",
            "| Client | Calls | Success rate | p50 (ms) | p99 (ms) | Statuses |",
            "|---|---|---|---|---|---|",
            f"| well-behaved outlet (GetLatestCut, 10/s) | {pr['calls']} | "
            f"{pr['success_rate']:.2%} | {pr['p50_ms']} | {pr['p99_ms']} | {pr['codes']} |",
            f"| well-behaved capture centre (SubmitActa, 10/s) | {ps['calls']} | "
            f"{ps['success_rate']:.2%} | {ps['p50_ms']} | {ps['p99_ms']} | {ps['codes']} |",
            f"| flooding outlet | {fl['calls']} | {fl['success_rate']:.2%} | — | — | "
            f"{fl['codes']} |",
            f"| oversized requests | {ov['calls']} | {ov['success_rate']:.2%} | — | — | "
            f"{ov['codes']} |",
            "",
            "Envoy counters that explain refusals, increments over the run: "
            f"`{abuse.get('envoy_counters') or 'none'}`.",
            "",
        ]
        slow = [
            f"{who} {stats['p99_ms']} ms"
            for who, stats in (("outlet", pr), ("capture centre", ps))
            if stats["p99_ms"] >= POLITE_P99_GOAL_MS
        ]
        if slow:
            lines += [
                f"p99 at or above {POLITE_P99_GOAL_MS:.0f} ms during this run: "
                f"{', '.join(slow)}. The flooding processes run on the same 2 cores as "
                "Envoy and the services.",
                "",
            ]
        if pr["success_rate"] < 1 or ps["success_rate"] < 1:
            lines += [
                "**Goal missed: a well-behaved client saw failures.** Every upstream cluster "
                "has `healthy_panic_threshold` 0 and health checks time out after 1 s, so a "
                "service starved of CPU by the flood (2 cores shared with the flooders and "
                "Envoy) can be taken out of rotation and every caller then gets UNAVAILABLE; "
                "the counters above say whether that happened. What would close it: a "
                "stricter total budget for media calls, so that a flood is refused by Envoy "
                "before it reaches the service, and health checks that tolerate a slow "
                "second (timeout above the p99 under load).",
                "",
            ]
        lines += _phase_lines(abuse.get("phases") or {})
    isolation = figures.get("isolation")
    if isolation:
        lines += _isolation_lines(isolation)
    lines += attacks.table_lines(figures, previous=(kept or {}).get("attacks", ""))
    lines += [
        "## Known gaps",
        "",
        "* Request bytes that do not deserialize are answered INVALID_ARGUMENT by "
        "`veritally.rpc` before any service code runs (tests/integration/"
        "test_fuzz_ingest_api.py holds it to that); the fuzzing covers the ingest API, "
        "not the aggregation and publication APIs, which only Envoy and the mesh reach.",
        "* Limits are per Envoy instance (ADR 0042): the flood figures hold for one edge.",
        "",
    ]
    if kept:
        text = "\n".join(lines)
        fresh = document_sections(text)
        head = text.split("\n## ", 1)[0] + "\n"
        gaps = text[text.index("## Known gaps") :]
        body = "".join(fresh.get(k) or kept.get(k, "") for k in _HEADINGS)
        DOC.write_text(head + body + gaps)
        return
    DOC.write_text("\n".join(lines))


# The goal issue 10 sets for well-behaved clients during a flood of one capture centre.
POLITE_SUCCESS_GOAL = 0.99
POLITE_P99_GOAL_MS = 100.0
_MIB = 1024 * 1024


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / _MIB:.1f} MiB"


def _phase_lines(phases: dict[str, Any]) -> list[str]:
    """The gzip and stuffing floods of one capture centre (run_abuse's phases)."""
    if not phases:
        return []
    lines = [
        "### Floods of one capture centre",
        "",
        "After the run above, on the same stack, one flood at a time with the same "
        "well-behaved outlet and capture centre (cc-02) calling at 10/s each; ingest's "
        "store is its SQLite file plus the -wal, its RSS the VmRSS of the ingest process "
        f"(peak: sampled every {RSS_SAMPLE_S} s).",
        "",
    ]
    gz, st = phases.get("gzip"), phases.get("stuffing")
    if gz:
        lines.append(
            f"* **gzip**: cc-01 sent {gz['attacker']['calls']} requests in {gz['seconds']} s "
            f"({GZIP_FLOOD_RATE:g}/s, {GZIP_FLOOD_RATE / 50:.0%} of a centre's 50 calls/s), "
            "SubmitActa and SubmitActas alternately, each an acta that inflates to "
            f"{_mib(GZIP_INFLATED_BYTES)} (`grpc-encoding: gzip`): {gz['attacker']['codes']}."
        )
    if st:
        stored = st.get("stored") or {}
        lines.append(
            f"* **stuffing**: cc-04 sent {st['attacker']['calls']} captures of the same "
            f"{STUFFING_ACTAS} actas of its own casillas in {st['seconds']} s "
            f"({STUFFING_RATE:g}/s), each with figures unlike every earlier one: "
            f"{st['attacker']['codes']}. Its actas in the store at the end: "
            f"{stored.get('log_records', '?')} log records, {stored.get('captures', '?')} "
            f"pending captures, {stored.get('conflicts_kept', '?')} conflicts kept "
            f"({stored.get('conflict_bytes', 0):,} bytes of actas), "
            f"{stored.get('conflicts_counted_only', '?')} only counted."
        )
    lines += [
        "",
        "| Flood | Client | Calls | Success rate | p50 (ms) | p99 (ms) | Statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, part in (("gzip", gz), ("stuffing", st)):
        if part:
            for who, key in (
                ("well-behaved outlet (GetLatestCut, 10/s)", "polite_reads"),
                ("well-behaved capture centre (SubmitActa, 10/s)", "polite_submits"),
            ):
                lines.append(_stats_row(f"{name} | {who}", part[key]))
    lines += [
        "",
        "| Flood | ingest store before | after | growth | ingest RSS before | after | peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, part in (("gzip", gz), ("stuffing", st)):
        if part:
            growth = part["store_bytes_after"] - part["store_bytes_before"]
            lines.append(
                f"| {name} | {_mib(part['store_bytes_before'])} | "
                f"{_mib(part['store_bytes_after'])} | {growth / 1024:+,.0f} KiB | "
                f"{_mib(part['rss_kib_before'] * 1024)} | {_mib(part['rss_kib_after'] * 1024)} | "
                f"{_mib(part['rss_kib_peak'] * 1024)} |"
            )
    lines += [
        "",
        "Store growth includes the well-behaved centre's own actas logged meanwhile and "
        "the write-ahead log, which SQLite grows until its next checkpoint; the "
        "stuffing centre's share is what its actas hold above. The stack runs single "
        "capture, so every capture after an acta's first is a conflicting resubmission "
        "(kept up to MAX_CONFLICTS_PER_ACTA, then only counted); under double capture "
        "one operator's disagreeing captures are refused without being stored, and "
        "pending captures stop at MAX_PENDING_CAPTURES (the tests of the table below).",
        "",
    ]
    misses = []
    for name, part in (("gzip", gz), ("stuffing", st)):
        if not part:
            continue
        for key in ("polite_reads", "polite_submits"):
            stats = part[key]
            if stats["success_rate"] < POLITE_SUCCESS_GOAL:
                misses.append(
                    f"{name}, {key}: success {stats['success_rate']:.2%} "
                    f"(goal {POLITE_SUCCESS_GOAL:.0%})"
                )
            if stats["p99_ms"] >= POLITE_P99_GOAL_MS:
                misses.append(
                    f"{name}, {key}: p99 {stats['p99_ms']} ms, "
                    f"{stats['p99_ms'] - POLITE_P99_GOAL_MS:.0f} ms over the "
                    f"{POLITE_P99_GOAL_MS:.0f} ms goal"
                )
    if misses:
        lines += [
            "**Goal missed** (well-behaved clients at ≥ 99 % success with p99 under "
            f"100 ms): {'; '.join(misses)}. Every process of the run (the flooding and "
            "well-behaved clients, Envoy and the three services) shares the same 2 cores, "
            "so a flood's own client CPU (building and compressing its requests) slows "
            "the others too.",
            "",
        ]
    else:
        lines += [
            "Goal met: the well-behaved clients stayed at ≥ 99 % success with p99 under "
            "100 ms during both floods.",
            "",
        ]
    return lines


def _stats_row(who: str, stats: dict[str, Any]) -> str:
    return (
        f"| {who} | {stats['calls']} | {stats['success_rate']:.2%} | {stats['p50_ms']} | "
        f"{stats['p99_ms']} | {stats['codes']} |"
    )


def _isolation_lines(part: dict[str, Any]) -> list[str]:
    st, si, cx = part["streams"], part["silent_submits"], part["connections"]
    return [
        "## One identity starving the others",
        "",
        *_run_line(part),
        f"Default limits ({part['limits']}); each flood for {part['seconds']} s, one after "
        "the other, against a 2,000-casilla stack on loopback.",
        "",
        f"* **WatchCuts flood**: outlet-01 tried {st['streams_wanted']:,} streams "
        f"(at most 190/s, within its rate budget): {st['flood']}.",
        f"* **Silent SubmitActas**: cc-01 and cc-02 opened streams and never sent a "
        f"message: {si['flood']}. A cut covered every acta cc-03 had submitted "
        f"{si['polite_actas_published_s']} s after the flood ended (asked at publication's "
        "port; None: not within 60 s), so aggregation's and publication's mesh streams "
        "kept following.",
        f"* **TCP without TLS**: {cx['connections_wanted']:,} connections wanted from "
        f"{cx['flood'].get('processes')} processes, reopened as Envoy closed them: "
        f"{ {k: v for k, v in cx['flood'].items() if k != 'processes'} }.",
        "",
        "| Other identity during the flood | Calls | Success rate | p50 (ms) | p99 (ms) | "
        "Statuses |",
        "|---|---|---|---|---|---|",
        _stats_row("outlet-02 GetLatestCut, 10/s (WatchCuts flood)", st["polite_reads"]),
        _stats_row("outlet-03 new WatchCuts, 1/s (WatchCuts flood)", st["polite_watches"]),
        _stats_row("cc-03 SubmitActa, 10/s (silent streams)", si["polite_submits"]),
        _stats_row("outlet-02 GetLatestCut, 10/s, open connection (TCP flood)", cx["polite_reads"]),
        _stats_row(
            "outlet-03 GetLatestCut, 1/s, new connection each (TCP flood)",
            cx["polite_new_connections"],
        ),
        "",
        "Envoy counters, increments over each flood: streams "
        f"`{st['envoy_counters'] or 'none'}`; silent submits `{si['envoy_counters'] or 'none'}`; "
        f"connections `{cx['envoy_counters'] or 'none'}`.",
        "",
        *_isolation_misses(part),
    ]


# The other identities' figures of the isolation part, as its table names them.
_POLITE_NAMES = {
    "polite_reads": "outlet-02's reads",
    "polite_watches": "outlet-03's new WatchCuts",
    "polite_submits": "cc-03's submissions",
}


def _isolation_misses(part: dict[str, Any]) -> list[str]:
    out: list[str] = []
    short = [
        f"{flood} flood, {_POLITE_NAMES.get(name, name)}: {v['success_rate']:.2%} ({v['codes']})"
        for flood, key in (
            ("WatchCuts", "streams"),
            ("silent-streams", "silent_submits"),
            ("TCP", "connections"),
        )
        for name, v in part[key].items()
        if name.startswith("polite")
        and name != "polite_new_connections"
        and isinstance(v, dict)
        and v.get("success_rate", 1) < 1
    ]
    if short:
        out += [
            "**Goal missed (other identities at 100 %)**: "
            + "; ".join(short)
            + f". DEADLINE_EXCEEDED is a call not answered within the client's "
            f"{CALL_TIMEOUT_S:g} s deadline (for a new WatchCuts: its first cut); the run "
            "records the status only, not why it was late.",
            "",
        ]
    fresh = part["connections"]["polite_new_connections"]
    if fresh["success_rate"] < 1:
        out += [
            "**Goal missed for new connections during the TCP flood**: the edge's "
            "connection cap is shared by every source, and the flood reopens what Envoy "
            "closes as fast as it can, so a client connecting now gets a slot only as one "
            "frees up; established connections (the other rows, the mesh) are untouched "
            "and Envoy never reached its file-descriptor limit. Keeping sources apart "
            "needs the network (docs/mesh.md, what these bounds do not do).",
            "",
        ]
    slow = [
        k
        for k in ("streams", "silent_submits", "connections")
        for name, v in part[k].items()
        if name.startswith("polite") and isinstance(v, dict) and v.get("p99_ms", 0) > 100
    ]
    if slow:
        out += [
            f"p99 above 100 ms during: {', '.join(dict.fromkeys(slow))}. The flooding "
            "processes run on the same 2 cores as Envoy and the services.",
            "",
        ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected parts and write docs/RELIABILITY.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="SIGKILLs during the import")
    parser.add_argument("--actas", type=int, default=100_000, help="actas in the import")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fuzz-examples", type=int, default=2_000)
    parser.add_argument("--abuse-seconds", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=500, help="idle mTLS connections")
    parser.add_argument("--flooders", type=int, default=2, help="flooding processes")
    parser.add_argument(
        "--gzip-seconds", type=float, default=60.0, help="length of the gzip flood (abuse)"
    )
    parser.add_argument(
        "--stuffing-seconds",
        type=float,
        default=60.0,
        help="length of the stuffing flood (abuse)",
    )
    parser.add_argument(
        "--isolation-seconds", type=float, default=45.0, help="length of each isolation flood"
    )
    parser.add_argument(
        "--streams", type=int, default=4_300, help="WatchCuts streams of one outlet"
    )
    parser.add_argument(
        "--connections", type=int, default=20_700, help="TCP connections that never start TLS"
    )
    parser.add_argument("--only", nargs="+", choices=["crash", "fuzz", "abuse", "isolation"])
    parser.add_argument("--reduced", default="", help="say in the document why the run is reduced")
    parser.add_argument(
        "--doc-only",
        action="store_true",
        help="only rewrite docs/RELIABILITY.md from bench/out/soak.json (no run)",
    )
    args = parser.parse_args(argv)
    if args.doc_only:
        stored: dict[str, Any] = json.loads((OUT / "soak.json").read_text())
        old = document_sections(DOC.read_text()) if DOC.exists() else {}
        write_doc(stored, kept={k: v for k, v in old.items() if k not in stored})
        print(f"wrote {DOC}")
        return 0
    parts = set(args.only or ["crash", "fuzz", "abuse", "isolation"])
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    command = command.strip()
    figures: dict[str, Any] = {}
    kept: dict[str, str] = {}
    if args.only and not (OUT / "soak.json").exists() and DOC.exists():
        # No figures of the other parts here: keep their sections of the document.
        kept = {k: v for k, v in document_sections(DOC.read_text()).items() if k not in parts}
    if args.only and (OUT / "soak.json").exists():
        # A partial run keeps the other parts' figures from their own runs; each part
        # says which command made it and when.
        previous = json.loads((OUT / "soak.json").read_text())
        figures = {
            k: v for k, v in previous.items() if k in ("crash", "fuzz", "abuse", "isolation")
        }

    machine = report.machine()  # at the start of this run (commit, load average)

    def stamp(part: dict[str, Any]) -> dict[str, Any]:
        part["command"] = command
        part["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        part["machine"] = machine
        return part

    if "crash" in parts:
        print("== crash", flush=True)
        figures["crash"] = stamp(
            crash_run(rounds=args.rounds, actas_wanted=args.actas, seed=args.seed)
        )
        if args.reduced:
            figures["crash"]["reduced"] = args.reduced
    if "fuzz" in parts:
        print("== fuzz", flush=True)
        figures["fuzz"] = stamp(fuzz_run(args.fuzz_examples))
    if "abuse" in parts:
        print("== abuse", flush=True)
        figures["abuse"] = stamp(
            abuse_run(
                seconds=args.abuse_seconds,
                idle=args.idle,
                flooders=args.flooders,
                gzip_seconds=args.gzip_seconds,
                stuffing_seconds=args.stuffing_seconds,
            )
        )
        figures["abuse"]["flooders"] = args.flooders
    if "isolation" in parts:
        print("== isolation", flush=True)
        figures["isolation"] = stamp(
            isolation_run(
                seconds=args.isolation_seconds, streams=args.streams, connections=args.connections
            )
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    write_doc(figures, kept=kept)
    print(json.dumps(figures, indent=2, default=str)[:6000])
    print(f"wrote {DOC}")
    crash = figures.get("crash", {})
    bad = any(
        crash.get(k, 0)
        for k in (
            "acknowledged_lost",
            "double_counted",
            "sizes_signed_twice_with_different_roots",
            "sdk_errors_other_than_transport",
        )
    )
    return 1 if bad or not figures.get("fuzz", {"passed": True})["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
