"""Benchmarks of the whole stack: ingest, aggregation, publication behind Envoy with mTLS.

One :class:`veritally.stack.Stack` (the same code as ``veritally up``) runs on a state
directory cached under ``bench/out/stack-<casillas>/`` (PKI, keys, trust root and the
synthetic election are kept between runs; the stores are wiped at every run). Load comes
from other processes (``bench.loadgen``, h2load). Measured, in this order, in one run:

* ``ingest_actas_per_s``: every acta of the election but ``PROBES`` submitted through the
  edge with the four capture-centre certificates (batches of ``BATCH`` on SubmitActas, two
  calls in flight per centre) by a load-generator process, single capture, while
  aggregation and publication follow and cut every second. The import is split into
  ``SEGMENTS`` consecutive slices; the median slice rate is reported (the overall rate too).
* ``ingest_vs_sqlite_ratio``: that rate over the rate of inserting the very rows ingest
  stored (log and acta index, read back from its store) straight into a fresh SQLite store
  with the same settings (``bench.ingest``'s floor).
* ``max_service_rss_mb``: once publication has cut over every acta, the peak resident set
  (``VmHWM`` in /proc/<pid>/status) of each service process; the largest one.
* ``freshness_p50_s`` / ``freshness_p99_s``: the held-back actas are submitted one at a
  time (``PROBE_SPACING_S`` apart) through the edge; each is timed from its ACCEPTED answer
  to the moment an SDK client (``Client.watch`` through the edge, outlet certificate) has
  verified a cut covering its log sequence. Cut interval 1 s.
* ``freshness_p99_s_3_witnesses`` / ``freshness_p99_s_1_witness_down``: after the other
  figures, the stack is started again on the loaded state with ``witnesses=3`` (three
  local ``veritally witness serve`` processes, trust root requiring 2 of 3, the SDK
  client pinned to it, so every cut it counts was verified with its quorum), the same
  probes timed; then ``witness-3`` is killed (SIGKILL, not restarted) and more probes
  timed: publication waits at most its 0.5 s witness deadline per cut for the dead one.
  The bench state goes back to trust root v1 afterwards.
* ``verified_reads_per_s``: ``READ_WORKERS`` load-generator processes, each one SDK
  client calling ``Client.latest()`` (fetch the latest cut through Envoy and verify it:
  signature, inclusion of the cut record, results digest and parse, rollback, freshness)
  in a loop for ``READ_SECONDS``; ``READ_RUNS`` runs, median. The reads are conditional
  (docs/adr/0089): each client sends the tree size it verified and gets the results only
  when they changed. The mix, as on election night: a cut every second, a batch of
  ``CHANGE_BATCH`` actas every ``CHANGE_EVERY_S`` (about every other cut has new results,
  the others are heartbeats), and clients polling as fast as they can, so most polls
  find the cut they verified; ``reads_changed_share`` and ``reads_new_cut_share`` say
  which share of the polls got new results and a new cut. ``verified_whole_reads_per_s``:
  one more run, the same but each read asking for the whole cut (the reads before
  conditional reads), back to back in the same stack.
* ``bytes_per_unchanged_poll`` / ``bytes_per_changed_poll``: serialized size of the
  GetLatestCut answers (the gRPC message, before HTTP/2 and TLS framing) without and
  with the results, measured in the load generators' transport.
* ``reads_cpu_us_*``: CPU time per read of the load generators, publication and Envoy
  (``/proc/<pid>/stat`` before and after each run; for publication and Envoy less their
  CPU without reads, measured over ``IDLE_S`` before the runs, cuts included; the cuts
  with new results during the runs still count): where the time of a read goes.
* ``reads_vs_envoy_direct_ratio``: against a second Envoy (same TLS server certificate,
  one worker as in the stack) answering the same bytes (the framed GetLatestCut response)
  itself with a ``direct_response`` route, driven by h2load with the same number of
  requests in flight. h2load cannot present client certificates, so that listener asks
  for none.
* ``http_reads_vs_nginx_ratio``: the immutable files of the bundle publication wrote
  (cut, checkpoint, entry bundles, trust root) fetched with h2load (TLS, HTTP/2, same
  connections and streams) from the stack's public listener (Envoy's HTTP cache in front
  of the stack's origin, ``veritally.publication.origin``), against nginx (one worker, as
  Envoy has one) serving the same directory with the same certificate; runs alternate,
  and the servers' CPU per 1,000 GETs is reported beside (``/proc`` of Envoy and the
  origin, of nginx's master and worker). Debian's nginx and nghttp2-client are installed
  with apt-get when missing; without them those keys are "not measured".
* ``sdk_http_verify_ms``: a fresh SDK client (new state directory, new connection)
  verifying the latest cut read from that nginx mirror over HTTPS; median of
  ``SDK_HTTP_RUNS``, with its CPU time beside.

Run alone: ``.venv/bin/python -m bench.stack_bench [--quick]`` (writes bench/out/stack.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.ingest import _measure_sqlite
from bench.loadgen import write_batches
from veritally.capture import CaptureClient, CaptureConfig, Operator
from veritally.election import load_actas, load_election
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.mesh.process import EnvoyProcess, free_port
from veritally.rpc import TlsFiles
from veritally.stack import SERVICES, Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import Client, ClientConfig, InsufficientCosignaturesError
from veritally_client.protocol.pb import (
    acta_pb2,
    ingest_pb2,
    publication_pb2,
    publication_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
SEED = 1
FULL_CASILLAS = 170_000  # 500,786 actas: the "at 500,000 actas" of the RSS goal
QUICK_CASILLAS = 3_000  # ~9,000 actas: a smoke run in a few minutes
BATCH = 500  # actas per SubmitActas message, as `veritally import` and the demo send
STREAMS_PER_CENTRE = 2  # calls in flight per capture centre
SEGMENTS = 5  # slices of the import whose rates give the median
PROBES = 300  # actas held back from the import for the freshness probes
WITNESS_PROBES = 150  # per witness run (3 witnesses, then one of them down)
WITNESS_KEYS = ("freshness_p99_s_3_witnesses", "freshness_p99_s_1_witness_down")
PROBE_SPACING_S = 0.15  # between freshness probes (seconds): several per 1 s cut
# One acta per probe, 30 s deadline (a single acta commits in milliseconds).
PROBE_CONFIG = CaptureConfig(batch=1, streams=1, call_timeout_s=30.0)
INTERVAL_S = 1.0  # publication's cut interval, as the freshness goal states
READ_WORKERS = 4  # load-generator processes for verified reads (one SDK client each)
READ_SECONDS = 10.0  # length of one reads run (seconds)
READ_RUNS = 3  # runs of each read measurement; the median is reported
# During reads, a batch of CHANGE_BATCH held-back actas every CHANGE_EVERY_S: with a cut
# every second, about every other cut has new results and the others are heartbeats.
CHANGE_BATCH = 10
CHANGE_EVERY_S = 2.0
IDLE_S = 3.0  # publication's and Envoy's CPU without reads, measured before the runs
READ_CHANGE_ACTAS = CHANGE_BATCH * (READ_RUNS + 1) * (int(READ_SECONDS / CHANGE_EVERY_S) + 1)
H2LOAD_STREAMS = 10  # concurrent streams per h2load connection for bundle GETs
H2LOAD_CONNECTIONS = 4  # h2load connections for bundle GETs
SDK_HTTP_RUNS = 7  # fresh clients verifying the latest cut from a mirror; the median
CATCH_UP_S = 600.0  # longest wait for publication to cut over every acta (seconds)
INGEST_TIMEOUT_S = 1800.0  # the whole import through the load generator (seconds)
# Envoy's budgets raised far above the load so that the stack, not the rate limiter, is
# measured (the default budgets cap an outlet at 200 calls/s by design; docs/mesh.md).
_WIDE = TokenBucket(burst=1_000_000, per_second=1_000_000)
BENCH_LIMITS = Limits(
    media=_WIDE,
    capture=_WIDE,
    operator=_WIDE,
    total=_WIDE,
    # h2load's load comes from one address: the per-address budget of the public
    # listener would answer it 429 (that budget is tested in tests/e2e).
    public_per_ip=_WIDE,
    public_total=_WIDE,
)


def _tls_arg(tls: TlsFiles) -> str:
    return f"{tls.cert},{tls.key},{tls.ca}"


def prepare(casillas: int) -> StateDir:
    """The cached state directory for ``casillas``, with its run data wiped (and only
    trust root v1, without witnesses: see :func:`forget_witnesses`)."""
    state = StateDir(OUT / f"stack-{casillas}")
    state.wipe_data()
    forget_witnesses(state)
    Bootstrap(casillas=casillas, seed=SEED).ensure(state)
    return state


def forget_witnesses(state: StateDir) -> None:
    """Put the bench's state back to trust root v1 and no local witnesses: the witness
    runs rotate the trust root, and every other figure is measured without witnesses."""
    for path in state.trust_root.glob("trust-root-v*.binpb"):
        if path.name != state.trust_root_v1.name:
            path.unlink()
    shutil.rmtree(state.witnesses, ignore_errors=True)


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` (peak resident set) of a process, in MiB.

    Raises:
        OSError: no such process.
        ValueError: no VmHWM line.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for pid {pid}")


# ------------------------------------------------------------------------------------
# ingest


def _segment_rates(started: float, answered: list[tuple[float, int]]) -> list[float]:
    answered = sorted(answered)
    n = len(answered)
    rates = []
    previous_t = started
    for i in range(SEGMENTS):
        part = answered[i * n // SEGMENTS : (i + 1) * n // SEGMENTS]
        if not part:
            continue
        end = part[-1][0]
        rates.append(sum(a for _, a in part) / max(end - previous_t, 1e-9))
        previous_t = end
    return rates


def measure_ingest(
    stack: Stack, actas: Sequence[acta_pb2.Acta], work: Path
) -> tuple[dict[str, float], int]:
    """Import ``actas`` through the edge from a load-generator process."""
    # Each centre captures the casillas assigned to it (the actas file names the centre),
    # with the certificate of its first operator (single capture).
    by_centre: dict[str, list[acta_pb2.Acta]] = {}
    for acta in actas:
        by_centre.setdefault(acta.provenance.capture_centre_id, []).append(acta)
    batches = [
        ingest_pb2.SubmitActasRequest(actas=group[i : i + BATCH])
        for group in by_centre.values()
        for i in range(0, len(group), BATCH)
    ]
    batch_file = work / "batches.bin"
    write_batches(batch_file, batches)
    argv = [sys.executable, "-m", "bench.loadgen", "ingest", "--edge", stack.endpoints.edge]
    for centre in by_centre:
        argv += ["--tls", f"{centre}={_tls_arg(stack.tls(f'{centre}/op-1'))}"]
    argv += ["--batches", str(batch_file), "--streams", str(STREAMS_PER_CENTRE)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=INGEST_TIMEOUT_S, cwd=ROOT.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"ingest load generator failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answered = [(float(t), int(a)) for t, a in result["answered"]]
    accepted = sum(a for _, a in answered)
    if accepted != len(actas):
        raise RuntimeError(f"ingest accepted {accepted} of {len(actas)} actas")
    rates = _segment_rates(float(result["started"]), answered)
    total_s = max(t for t, _ in answered) - float(result["started"])
    return {
        "ingest_actas_per_s": round(statistics.median(rates), 1),
        "ingest_overall_actas_per_s": round(accepted / total_s, 1),
        "ingest_actas": float(accepted),
        "ingest_retries": float(result["retries"]),
    }, accepted


def measure_sqlite_floor(stack: Stack, work: Path) -> float:
    """Actas/s of inserting the rows ingest stored straight into a fresh SQLite store."""
    rows, seconds = _measure_sqlite(work, stack.state.store("ingest"))
    return rows / seconds


# ------------------------------------------------------------------------------------
# the SDK side


def _client(stack: Stack, outlet: str, state_dir: Path, max_age: float = 600.0) -> Client:
    config = ClientConfig(max_checkpoint_age=max_age, watch_backoff_max=1.0)
    return stack.media_client(outlet, state_dir=state_dir, config=config)


def wait_caught_up(stack: Stack, acta_records: int, work: Path) -> float:
    """Wait until a verified cut covers ``acta_records``; returns the seconds waited.

    Raises:
        TimeoutError: not within CATCH_UP_S.
    """
    started = time.monotonic()
    with _client(stack, "outlet-02", work / "catch-up") as client:
        while True:
            cut = client.latest()
            if cut.acta_records >= acta_records:
                return time.monotonic() - started
            if time.monotonic() - started > CATCH_UP_S:
                raise TimeoutError(f"cut covers {cut.acta_records} of {acta_records}")
            time.sleep(0.5)


class _Watcher(threading.Thread):
    """An SDK client watching through the edge; records when each cut was verified."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="freshness-watcher", daemon=True)
        self.client = client
        self.seen: list[tuple[float, int]] = []  # (monotonic time, acta_records)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for cut in self.client.watch():
                self.seen.append((time.monotonic(), cut.acta_records))
                if self.stop.is_set():
                    return
        except Exception as e:  # reported by the caller: any failure voids the figure
            self.error = e


async def _probe(stack: Stack, probes: Sequence[acta_pb2.Acta]) -> list[tuple[float, int]]:
    """Submit ``probes`` one at a time, ``PROBE_SPACING_S`` apart, each from the centre its
    casilla is assigned to (its first operator); returns (ack time, log sequence) each."""
    centres = {p.provenance.capture_centre_id for p in probes}
    client = CaptureClient(
        target=stack.endpoints.edge,
        operators={c: [Operator(tls=stack.tls(f"{c}/op-1"))] for c in centres},
        config=PROBE_CONFIG,
    )
    acked = []
    async with client:
        for acta in probes:
            message = ingest_pb2.SubmitActasRequest(actas=[acta])
            [[outcome]] = await client.submit(acta.provenance.capture_centre_id, [message])
            t = time.monotonic()
            if outcome.status != ingest_pb2.OUTCOME_STATUS_ACCEPTED:
                raise RuntimeError(f"probe not accepted: {outcome}")
            acked.append((t, outcome.sequence))
            await asyncio.sleep(PROBE_SPACING_S)
    return acked


def measure_freshness(
    stack: Stack, probes: Sequence[acta_pb2.Acta], work: Path
) -> dict[str, float]:
    """Acknowledged → verified-in-a-cut latency of single actas."""
    with _client(stack, "outlet-03", work / "freshness") as client:
        watcher = _Watcher(client)
        watcher.start()
        while not watcher.seen and watcher.error is None:
            time.sleep(0.05)
        acked = asyncio.run(_probe(stack, probes))
        last = max(s for _, s in acked)
        deadline = time.monotonic() + 60
        while watcher.error is None and time.monotonic() < deadline:
            if watcher.seen and watcher.seen[-1][1] > last:
                break
            time.sleep(0.1)
        watcher.stop.set()
        watcher.join(timeout=10)
    if watcher.error is not None:
        raise RuntimeError(f"the watching SDK client failed: {watcher.error!r}")
    latencies = []
    for t_ack, sequence in acked:
        seen = next((t for t, covered in watcher.seen if covered > sequence and t >= t_ack), None)
        if seen is None:
            raise RuntimeError(f"acta at sequence {sequence} never seen in a verified cut")
        latencies.append(seen - t_ack)
    latencies.sort()
    return {
        "freshness_p50_s": round(statistics.median(latencies), 3),
        "freshness_p99_s": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 3),
        "freshness_max_s": round(latencies[-1], 3),
        "freshness_probes": float(len(latencies)),
    }


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when it is not running)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ResultsChanger(threading.Thread):
    """Submits one batch of held-back actas every ``CHANGE_EVERY_S`` through the edge
    (single capture, each from its casilla's centre), so that the cuts polled during a
    reads run mix new results with heartbeats, as on election night."""

    def __init__(self, stack: Stack, actas: Sequence[acta_pb2.Acta]) -> None:
        super().__init__(name="results-changer", daemon=True)
        self.stack = stack
        self.actas = list(actas)
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:  # reported by the measuring thread, which raises it
            self.error = e

    async def _run(self) -> None:
        centres = {a.provenance.capture_centre_id for a in self.actas}
        client = CaptureClient(
            target=self.stack.endpoints.edge,
            operators={c: [Operator(tls=self.stack.tls(f"{c}/op-1"))] for c in centres},
            config=PROBE_CONFIG,
        )
        async with client:
            while self.actas and not self.stop.is_set():
                batch, self.actas = self.actas[:CHANGE_BATCH], self.actas[CHANGE_BATCH:]
                for centre in sorted({a.provenance.capture_centre_id for a in batch}):
                    mine = [a for a in batch if a.provenance.capture_centre_id == centre]
                    message = ingest_pb2.SubmitActasRequest(actas=mine)
                    await client.submit(centre, [message])
                self.batches += 1
                await asyncio.sleep(CHANGE_EVERY_S)


@dataclass(frozen=True)
class _ReadsRun:
    rate: float
    p99_ms: float
    errors: int
    reads: int
    changed: int
    new_cuts: int
    unchanged_answers: int
    unchanged_bytes: int
    changed_answers: int
    changed_bytes: int
    cpu_clients: float
    cpu_publication: float
    cpu_envoy: float


_READ_SERVERS = ("publication", "envoy")


def _idle_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds per second of publication and Envoy without reads (cutting every
    interval, health checks), over IDLE_S: subtracted from a reads run's figures."""
    pids = stack.pids()
    before = {n: _cpu_seconds(pids.get(n)) for n in _READ_SERVERS}
    time.sleep(IDLE_S)
    return {n: (_cpu_seconds(pids.get(n)) - before[n]) / IDLE_S for n in _READ_SERVERS}


def _reads_run(
    stack: Stack, changes: Sequence[acta_pb2.Acta], idle: Mapping[str, float], *, whole: bool
) -> _ReadsRun:
    """One run of READ_WORKERS processes while ``changes`` are submitted in batches."""
    outlets = [i.name for i in stack.pki.identities("media")]
    pids = stack.pids()
    started = time.monotonic()
    cpu_before = {n: _cpu_seconds(pids.get(n)) for n in _READ_SERVERS}
    changer = _ResultsChanger(stack, changes)
    changer.start()
    children = []
    for w in range(READ_WORKERS):
        argv = [sys.executable, "-m", "bench.loadgen", "reads", "--edge", stack.endpoints.edge]
        argv += ["--tls", _tls_arg(stack.tls(outlets[w % len(outlets)]))]
        argv += ["--trust-root", str(stack.state.trust_root_v1)]
        argv += ["--seconds", str(READ_SECONDS)] + (["--whole"] if whole else [])
        children.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT.parent)
        )
    results = []
    try:
        for child in children:
            out, err = child.communicate(timeout=READ_SECONDS + 120)
            if child.returncode != 0:
                raise RuntimeError(f"reads load generator failed: {err.decode()[-2000:]}")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        changer.stop.set()
        changer.join(timeout=60)
    if changer.error is not None:
        raise RuntimeError(f"submitting the results changes failed: {changer.error!r}")
    cpu_after = {n: _cpu_seconds(pids.get(n)) for n in _READ_SERVERS}
    elapsed = time.monotonic() - started
    cpu = {n: cpu_after[n] - cpu_before[n] - idle[n] * elapsed for n in _READ_SERVERS}
    latencies = sorted(x for r in results for x in r["latencies_ms"])

    def total(key: str) -> int:
        return int(sum(r[key] for r in results))

    return _ReadsRun(
        rate=sum(r["ok"] / r["seconds"] for r in results),
        p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else 0.0,
        errors=sum(sum(r["errors"].values()) for r in results),
        reads=total("ok"),
        changed=total("results_changed"),
        new_cuts=total("new_cuts"),
        unchanged_answers=total("unchanged_answers"),
        unchanged_bytes=total("unchanged_bytes"),
        changed_answers=total("changed_answers"),
        changed_bytes=total("changed_bytes"),
        cpu_clients=sum(r["cpu_seconds"] for r in results),
        cpu_publication=cpu["publication"],
        cpu_envoy=cpu["envoy"],
    )


def measure_reads(stack: Stack, changes: Sequence[acta_pb2.Acta]) -> dict[str, float]:
    """Verified conditional reads of the latest cut through the edge while ``changes``
    come in (median of READ_RUNS; bytes and CPU summed over the runs)."""
    per_run = -(-len(changes) // (READ_RUNS + 1))
    idle = _idle_cpu(stack)
    runs = [
        _reads_run(stack, changes[i * per_run : (i + 1) * per_run], idle, whole=False)
        for i in range(READ_RUNS)
    ]
    # A/B in the same run: one run of reads that fetch the whole cut every time.
    whole = _reads_run(stack, changes[READ_RUNS * per_run :], idle, whole=True)

    def total(key: str) -> float:
        return float(sum(getattr(r, key) for r in runs))

    reads = total("reads") or 1.0
    return {
        "verified_reads_per_s": round(statistics.median(r.rate for r in runs), 1),
        "verified_reads_p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
        "verified_reads_errors": total("errors"),
        "bytes_per_unchanged_poll": round(
            total("unchanged_bytes") / (total("unchanged_answers") or 1.0), 1
        ),
        "bytes_per_changed_poll": round(
            total("changed_bytes") / (total("changed_answers") or 1.0), 1
        ),
        "reads_changed_share": round(total("changed") / reads, 5),
        "reads_new_cut_share": round(total("new_cuts") / reads, 5),
        "reads_cpu_us_clients": round(total("cpu_clients") / reads * 1e6, 1),
        "reads_cpu_us_publication": round(total("cpu_publication") / reads * 1e6, 1),
        "reads_cpu_us_envoy": round(total("cpu_envoy") / reads * 1e6, 1),
        "verified_whole_reads_per_s": round(whole.rate, 1),
    }


# ------------------------------------------------------------------------------------
# h2load, Envoy variants, nginx


def debian_tools() -> str | None:
    """Make sure h2load and nginx are installed; returns why not when they cannot be."""
    if shutil.which("h2load") and shutil.which("nginx"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "h2load/nginx missing and apt-get not usable (not root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "nghttp2-client", "nginx"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}"
    if shutil.which("h2load") and shutil.which("nginx"):
        return None
    return "apt-get ran but h2load/nginx are still missing"


_H2LOAD_RATE = re.compile(r"finished in [\d.]+s, ([\d.]+) req/s")
_H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


def h2load(urls: Sequence[str], *, seconds: float, connections: int, streams: int) -> float:
    """Requests per second that h2load got answered with 2xx (all must succeed).

    Raises:
        RuntimeError: h2load failed or some requests did not succeed.
    """
    argv = ["h2load", "-t", "1", "-c", str(connections), "-m", str(streams)]
    argv += ["-D", str(int(seconds)), *urls]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    rate = _H2LOAD_RATE.search(done.stdout)
    counts = _H2LOAD_DONE.search(done.stdout)
    status = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if done.returncode != 0 or rate is None or counts is None or status is None:
        raise RuntimeError(f"h2load failed: {done.stdout[-1500:]} {done.stderr[-500:]}")
    if int(status.group(1)) < int(counts.group(3)):
        raise RuntimeError(f"h2load: not every request got a 2xx: {done.stdout[-1500:]}")
    return float(rate.group(1))


def _hcm(stat_prefix: str, route_config: Mapping[str, object], filters: list[object]) -> object:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": route_config,
            "http_filters": [
                *filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http."
                        "router.v3.Router"
                    },
                },
            ],
        },
    }


def _run_envoy(config: dict[str, object], directory: Path, admin_port: int) -> EnvoyProcess:
    import yaml

    from veritally.mesh.envoy import Endpoint
    from veritally.mesh.envoy import validate as validate_config

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    validate_config(path)
    envoy = EnvoyProcess(
        config=path,
        admin=Endpoint(host="127.0.0.1", port=admin_port),
        log_path=directory / "envoy.log",
        concurrency=1,  # as the stack's Envoy
    )
    envoy.start()
    envoy.wait_ready()
    return envoy


def measure_envoy_direct(stack: Stack, work: Path) -> tuple[float, int]:
    """Requests/s of Envoy answering the latest cut's framed bytes by direct_response,
    and the size of those bytes."""
    tls = stack.tls("outlet-01")
    channel = grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials())
    response = publication_pb2_grpc.PublicationServiceStub(channel).GetLatestCut(
        publication_pb2.GetLatestCutRequest(), timeout=30
    )
    channel.close()
    body = response.SerializeToString()
    framed = b"\x00" + len(body).to_bytes(4, "big") + body
    directory = work / "envoy-direct"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "body.bin").write_bytes(framed)
    server = stack.tls("envoy")
    port, admin = free_port(), free_port()
    route_config = {
        "max_direct_response_body_size_bytes": len(framed) + 1024,
        "virtual_hosts": [
            {
                "name": "direct",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {
                            "status": 200,
                            "body": {"filename": str(directory / "body.bin")},
                        },
                        "response_headers_to_add": [
                            {"header": {"key": "content-type", "value": "application/grpc"}}
                        ],
                    }
                ],
            }
        ],
    }
    config: dict[str, object] = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "direct",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions."
                                    "transport_sockets.tls.v3.DownstreamTlsContext",
                                    "common_tls_context": {
                                        "alpn_protocols": ["h2"],
                                        "tls_certificates": [
                                            {
                                                "certificate_chain": {"filename": str(server.cert)},
                                                "private_key": {"filename": str(server.key)},
                                            }
                                        ],
                                    },
                                },
                            },
                            "filters": [_hcm("direct", route_config, [])],
                        }
                    ],
                }
            ]
        },
    }
    envoy = _run_envoy(config, directory, admin)
    try:
        url = f"https://127.0.0.1:{port}/veritally.v1.PublicationService/GetLatestCut"
        runs = [
            h2load([url], seconds=READ_SECONDS, connections=READ_WORKERS, streams=1)
            for _ in range(READ_RUNS)
        ]
    finally:
        envoy.stop()
    return statistics.median(runs), len(body)


def _bundle_paths(bundle: Path) -> list[str]:
    """The immutable files a reader of the latest cut fetches (relative paths)."""
    latest = json.loads((bundle / "latest").read_text())
    paths = [latest["cut"], latest["checkpoint"], latest["trust_root"]]
    # The first full entry bundles of the log (tlog-tiles: tile/entries/000, 001, ...).
    full = sorted(p for p in (bundle / "tile" / "entries").iterdir() if p.is_file())[:4]
    paths += [f"tile/entries/{p.name}" for p in full]
    return paths


def _nginx(bundle: Path, directory: Path, port: int, tls: TlsFiles) -> subprocess.Popen[bytes]:
    """nginx (one worker, as Envoy has one) serving ``bundle`` over TLS and HTTP/2 with
    the same server certificate as the stack's public listener and the bundle's caching
    rules (docs/operations.md)."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the bundle
    conf.write_text(
        f"""daemon off;
{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;  # h2load reuses its connections for the whole run
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  open_file_cache max=1000;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
    root {bundle};
    etag on;
    location / {{ add_header Cache-Control "public, max-age=31536000, immutable" always; }}
    location = /latest {{ add_header Cache-Control "no-cache" always; }}
    location = /checkpoint {{ add_header Cache-Control "no-cache" always; }}
  }}
}}
"""
    )
    child = subprocess.Popen(
        ["nginx", "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port, child)
    return child


def _wait_port(port: int, child: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {child.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children (nginx's worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _h2load_cpu(urls: Sequence[str], pids: Sequence[int]) -> tuple[float, float]:
    """(requests/s, server CPU ms per 1,000 requests) of one h2load run."""
    before = sum(_tree_cpu_s(p) for p in pids)
    rate = h2load(
        urls, seconds=READ_SECONDS, connections=H2LOAD_CONNECTIONS, streams=H2LOAD_STREAMS
    )
    cpu = sum(_tree_cpu_s(p) for p in pids) - before
    return rate, cpu * 1000 / (rate * READ_SECONDS / 1000)


def measure_bundle(stack: Stack, work: Path) -> dict[str, float]:
    """Bundle GETs/s from the stack's public listener (Envoy's cache in front of the
    stack's origin, TLS, HTTP/2) vs nginx serving the same directory with the same
    certificate; and a fresh SDK client verifying the latest cut from that nginx mirror."""
    bundle = stack.state.bundle
    paths = _bundle_paths(bundle)
    tls = stack.tls("envoy")  # the public listener's server certificate
    nginx_port = free_port()
    nginx = _nginx(bundle, work / "nginx", nginx_port, tls)
    pids = stack.pids()
    ours_pids = [p for p in (pids.get("envoy"), pids.get("origin")) if p is not None]
    try:
        ours_urls = [f"https://{stack.endpoints.public}/{p}" for p in paths]
        nginx_urls = [f"https://127.0.0.1:{nginx_port}/{p}" for p in paths]
        kwargs = {"connections": H2LOAD_CONNECTIONS, "streams": H2LOAD_STREAMS}
        h2load(ours_urls, seconds=2, **kwargs)  # fill Envoy's cache
        h2load(nginx_urls, seconds=2, **kwargs)  # and nginx's open-file cache
        ours, theirs = [], []
        for _ in range(READ_RUNS):  # back to back, alternating
            ours.append(_h2load_cpu(ours_urls, ours_pids))
            theirs.append(_h2load_cpu(nginx_urls, [nginx.pid]))
        verify_ms, verify_cpu_ms = _sdk_http_verify(stack, f"https://127.0.0.1:{nginx_port}/", work)
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)
    ours_m = statistics.median(r for r, _ in ours)
    theirs_m = statistics.median(r for r, _ in theirs)
    return {
        "http_reads_per_s": round(ours_m, 1),
        "http_reads_nginx_per_s": round(theirs_m, 1),
        "http_reads_vs_nginx_ratio": round(ours_m / theirs_m, 3),
        "http_reads_cpu_ms_per_1k": round(statistics.median(c for _, c in ours), 1),
        "http_reads_nginx_cpu_ms_per_1k": round(statistics.median(c for _, c in theirs), 1),
        "bundle_files": float(len(paths)),
        "bundle_mean_file_bytes": round(
            statistics.mean((bundle / p).stat().st_size for p in paths), 0
        ),
        "sdk_http_verify_ms": round(verify_ms, 1),
        "sdk_http_verify_cpu_ms": round(verify_cpu_ms, 1),
    }


def _sdk_http_verify(stack: Stack, url: str, work: Path) -> tuple[float, float]:
    """Median wall and CPU ms of a fresh client (new state directory, new connection)
    verifying the latest cut read from the mirror at ``url``."""
    from veritally_client import load_trust_root

    root = load_trust_root(stack.state.trust_root_v1)
    ca = stack.pki.ca_cert.read_bytes()
    walls, cpus = [], []
    for i in range(SDK_HTTP_RUNS):
        t, c = time.perf_counter(), time.process_time()
        with Client(
            endpoint=url,
            trust_root=root,
            state_dir=work / f"sdk-http-{i}",
            http_ca=ca,
            config=ClientConfig(max_checkpoint_age=3600),
        ) as client:
            client.latest()
        walls.append((time.perf_counter() - t) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def measure_witness_freshness(
    state: StateDir, probes: Sequence[acta_pb2.Acta], work: Path
) -> dict[str, float]:
    """Freshness on the loaded state with 3 local witnesses (2 of 3 required, the media
    client pinned to that trust root), then with one of them killed and left down."""
    warm, probes = probes[0], probes[1:]
    half = len(probes) // 2
    out: dict[str, float] = {}
    stack = Stack(
        state,
        base_port=None,
        single_capture=True,
        interval_s=INTERVAL_S,
        drain_seconds=0.5,
        limits=BENCH_LIMITS,
        auto_restart=False,  # the killed witness stays down
        witnesses=3,
    )
    try:
        with stack:
            # The newest stored cut predates the witnesses: media refuse it until the next
            # cut, which one more acta brings.
            asyncio.run(_probe(stack, [warm]))
            with _client(stack, "outlet-03", work / "witness-warm") as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.latest()
                        break
                    except InsufficientCosignaturesError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
            for suffix, batch in (
                ("3_witnesses", probes[:half]),
                ("1_witness_down", probes[half:]),
            ):
                if suffix == "1_witness_down":
                    stack.kill("witness-3")
                figures = measure_freshness(stack, batch, work / suffix)
                for key in ("freshness_p50_s", "freshness_p99_s", "freshness_max_s"):
                    out[f"{key}_{suffix}"] = figures[key]
                print(f"  freshness, {suffix}: {figures}", flush=True)
    finally:
        forget_witnesses(state)
    return out


# ------------------------------------------------------------------------------------


def run(
    *, quick: bool = False, only: set[str] | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """Run the stack benchmarks; returns (results, notes).

    Args:
        quick: a small election (QUICK_CASILLAS) instead of ~500,000 actas.
        only: keys wanted (None: all); ingest and RSS always run since everything
            else needs the loaded stack.
    """
    results: dict[str, float] = {}
    notes: dict[str, str] = {}

    def wanted(*keys: str) -> bool:
        return only is None or any(k in only for k in keys)

    casillas = QUICK_CASILLAS if quick else FULL_CASILLAS
    t = time.monotonic()
    state = prepare(casillas)
    files = load_election(state.election_yaml)
    actas = list(load_actas(files, state.actas_csv))
    held = READ_CHANGE_ACTAS + PROBES + 2 * WITNESS_PROBES
    bulk, tail = actas[:-held], actas[-held:]
    changes = tail[:READ_CHANGE_ACTAS]
    probes = tail[READ_CHANGE_ACTAS : READ_CHANGE_ACTAS + PROBES]
    witness_probes = tail[READ_CHANGE_ACTAS + PROBES :]
    results["stack_setup_s"] = round(time.monotonic() - t, 1)
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        work = Path(tmp)
        stack = Stack(
            state,
            base_port=None,
            single_capture=True,
            interval_s=INTERVAL_S,
            drain_seconds=0.5,
            limits=BENCH_LIMITS,
        )
        with stack:
            numbers, accepted = measure_ingest(stack, bulk, work)
            results.update(numbers)
            print(f"  ingest through Envoy: {numbers}", flush=True)
            results["catch_up_s"] = round(wait_caught_up(stack, accepted, work), 1)
            pids = stack.pids()
            for name in SERVICES:
                pid = pids[name]
                if pid is not None:
                    results[f"rss_mb_{name}"] = round(peak_rss_mb(pid), 1)
            if pids.get("envoy"):
                results["rss_mb_envoy"] = round(peak_rss_mb(int(pids["envoy"] or 0)), 1)
            results["max_service_rss_mb"] = max(results[f"rss_mb_{n}"] for n in SERVICES)
            results["rss_at_actas"] = float(accepted)
            sqlite_rate = measure_sqlite_floor(stack, work)
            results["sqlite_actas_per_s"] = round(sqlite_rate, 1)
            results["ingest_vs_sqlite_ratio"] = round(
                results["ingest_actas_per_s"] / sqlite_rate, 3
            )
            if wanted("freshness_p50_s", "freshness_p99_s"):
                results.update(measure_freshness(stack, probes, work))
                print(f"  freshness: p50 {results['freshness_p50_s']} s", flush=True)
            if wanted(
                "verified_reads_per_s",
                "bytes_per_unchanged_poll",
                "bytes_per_changed_poll",
                "reads_vs_envoy_direct_ratio",
            ):
                results.update(measure_reads(stack, changes))
                print(f"  verified reads: {results['verified_reads_per_s']}/s", flush=True)
            missing = debian_tools()
            if missing is not None:
                notes["reads_vs_envoy_direct_ratio"] = f"not measured: {missing}"
                notes["http_reads_vs_nginx_ratio"] = f"not measured: {missing}"
            else:
                if wanted("reads_vs_envoy_direct_ratio") and "verified_reads_per_s" in results:
                    direct, size = measure_envoy_direct(stack, work)
                    results["envoy_direct_reads_per_s"] = round(direct, 1)
                    results["latest_cut_bytes"] = float(size)
                    results["reads_vs_envoy_direct_ratio"] = round(
                        results["verified_reads_per_s"] / direct, 3
                    )
                if wanted("http_reads_vs_nginx_ratio", "sdk_http_verify_ms"):
                    results.update(measure_bundle(stack, work))
        if wanted(*WITNESS_KEYS):
            results.update(measure_witness_freshness(state, witness_probes, work))
    return results, notes


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print and write bench/out/stack.json."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results, notes = run(quick=args.quick)
    for key, value in results.items():
        print(f"{key:36} {value:>14,.3f}")
    for key, text in notes.items():
        print(f"{key}: {text}")
    OUT.mkdir(exist_ok=True)
    (OUT / "stack.json").write_text(json.dumps({"results": results, "notes": notes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
