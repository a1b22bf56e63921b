"""Abuse through Envoy, and what the well-behaved clients see meanwhile.

Against a running :class:`veritally.stack.Stack`, for ``seconds``:

* **flood**: ``flooders`` processes (``python -m bench.abuse flood``) with one outlet's
  certificate call GetLatestCut as fast as they can (each its own connection);
* **oversized**: another identity keeps sending requests above Envoy's size limits: a
  SubmitActa request above the 64 KiB write limit, and a read request above the 64 KiB
  read limit (padding in an unknown field); a SubmitActas stream's messages are bounded
  by ingest itself (tests/e2e/test_stack.py sends one above it);
* **idle**: ``idle_connections`` mTLS connections to the edge are opened (handshake
  completed, with a media certificate) and left idle for the whole run;
* **well-behaved**: meanwhile another outlet reads the latest cut at a modest pace
  (``polite_rate`` calls/s) and a capture centre submits valid actas one by one; every
  answer and its latency are recorded.

:func:`run_abuse` returns an :class:`AbuseReport`: the well-behaved clients' success
rates and p99 latencies, and what the abusers got (status counts). The e2e test
(tests/e2e/test_abuse.py) runs a short version; ``make soak`` a long one.

One identity starving the others (``make soak`` part ``isolation``, at full size; the
fast versions with small limits are tests/e2e/test_isolation.py), each a bounded,
self-stopping loop against the stack's loopback edge:

* :func:`watch_stream_flood`: one outlet opens thousands of WatchCuts streams within
  its rate budget and holds every one it gets;
* :func:`silent_submit_flood`: two capture centres open SubmitActas streams and never
  send a message;
* :func:`connection_flood`: ``python -m bench.abuse tcp-flood`` processes open tens of
  thousands of TCP connections to the edge that never start TLS, reopening what Envoy
  closes.

Meanwhile other identities call as usual; each returns their success rates and p99.

One capture centre inflating or stuffing (``run_abuse``'s phases after the run above,
``make soak`` part ``abuse``), each alone for a bounded time with the same well-behaved
clients, ingest's store size and RSS before, after and at peak:

* :func:`gzip_flood`: requests that would inflate to 60 MB each, ``grpc-encoding: gzip``,
  at 2 % of the centre's rate budget;
* :func:`stuffing_flood`: for the same few actas of its own casillas, one disagreeing
  capture after another, within its budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from veritally.mesh.envoy import INGEST_MAX_REQUEST_BYTES, READ_MAX_REQUEST_BYTES
from veritally.rpc import TlsFiles
from veritally.stack import Stack
from veritally_client.protocol.pb import (
    acta_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    publication_pb2,
    publication_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent
_Attacked = TypeVar("_Attacked")  # what an attack run by _run_polite returns
CALL_TIMEOUT_S = 10.0  # deadline of one well-behaved call (seconds)
IDLE_OPEN_TIMEOUT_S = 5.0  # per idle connection's TCP connect and TLS handshake (seconds)


@dataclass
class ClientStats:
    """What one kind of client saw: status counts and latencies (ms) of successes."""

    codes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """Calls answered (any status)."""
        return sum(self.codes.values())

    @property
    def success_rate(self) -> float:
        """OK answers over all answers (1.0 when nothing was sent)."""
        return self.codes["OK"] / self.calls if self.calls else 1.0

    @property
    def p99_ms(self) -> float:
        """99th percentile latency of the calls that succeeded (ms)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)]

    def summary(self) -> dict[str, object]:
        """A JSON-able summary."""
        return {
            "calls": self.calls,
            "success_rate": round(self.success_rate, 4),
            "p50_ms": round(statistics.median(self.latencies_ms), 2) if self.latencies_ms else 0,
            "p99_ms": round(self.p99_ms, 2),
            "codes": dict(self.codes),
        }


@dataclass
class AbuseReport:
    """Everything one abuse run measured.

    Attributes:
        seconds: length of the run.
        polite_reads: the well-behaved outlet's GetLatestCut calls.
        polite_submits: the well-behaved capture centre's SubmitActa calls.
        flood: the flooding outlet's calls (all flooder processes).
        oversized: the oversized requests.
        idle_opened: idle mTLS connections opened.
        idle_failed: idle connections that could not be opened.
        idle_still_open: idle connections Envoy had not closed at the end.
        envoy_counters: Envoy counters that explain refusals (health-check failures,
            outlier ejections, overflows, no healthy upstream), as increments over the
            run; zero ones left out.
        phases: the floods of one capture centre that follow, one after the other
            (gzip, stuffing), each with the polite clients' figures during it.
    """

    seconds: float
    polite_reads: ClientStats
    polite_submits: ClientStats
    flood: ClientStats
    oversized: ClientStats
    idle_opened: int = 0
    idle_failed: int = 0
    idle_still_open: int = 0
    envoy_counters: dict[str, int] = field(default_factory=dict)
    phases: list[FloodPhase] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """A JSON-able summary."""
        return {
            "seconds": round(self.seconds, 1),
            "polite_reads": self.polite_reads.summary(),
            "polite_submits": self.polite_submits.summary(),
            "flood": self.flood.summary(),
            "oversized": self.oversized.summary(),
            "idle_opened": self.idle_opened,
            "idle_failed": self.idle_failed,
            "idle_still_open": self.idle_still_open,
            "envoy_counters": self.envoy_counters,
            "phases": {p.name: p.summary() for p in self.phases},
        }


def _code(e: grpc.RpcError) -> str:
    return e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"


def _channel(edge: str, tls: TlsFiles) -> grpc.Channel:
    return grpc.secure_channel(edge, tls.channel_credentials())


def _polite_reads(edge: str, tls: TlsFiles, rate: float, stop: threading.Event) -> ClientStats:
    stats = ClientStats()
    with _channel(edge, tls) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        next_call = time.monotonic()
        while not stop.is_set():
            t = time.monotonic()
            try:
                stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S)
                stats.codes["OK"] += 1
                stats.latencies_ms.append((time.monotonic() - t) * 1000)
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            next_call += 1 / rate
            stop.wait(max(0.0, next_call - time.monotonic()))
    return stats


def _polite_submits(
    edge: str, tls: TlsFiles, actas: Sequence[acta_pb2.Acta], rate: float, stop: threading.Event
) -> ClientStats:
    # A probe, not a capture client (veritally.capture): each call's status is what is
    # measured, so a refusal is counted, never retried.
    stats = ClientStats()
    with _channel(edge, tls) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for acta in actas:
            if stop.is_set():
                break
            t = time.monotonic()
            try:
                stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), timeout=CALL_TIMEOUT_S)
                stats.codes["OK"] += 1
                stats.latencies_ms.append((time.monotonic() - t) * 1000)
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            stop.wait(1 / rate)
    return stats


def _oversized(edge: str, capture: TlsFiles, media: TlsFiles, stop: threading.Event) -> ClientStats:
    """Requests above Envoy's limits, one every 0.2 s, alternating write (as a capture
    centre) and read (as an outlet), each identity allowed that method otherwise."""
    stats = ClientStats()
    big_acta = acta_pb2.Acta(casilla_id="X" * (INGEST_MAX_REQUEST_BYTES + 1024))
    padded_read = _padded(READ_MAX_REQUEST_BYTES + 1024)
    with _channel(edge, capture) as channel, _channel(edge, media) as reader:
        submit = ingest_pb2_grpc.IngestServiceStub(channel)
        raw_read: grpc.UnaryUnaryMultiCallable[bytes, bytes] = reader.unary_unary(
            "/veritally.v1.PublicationService/GetLatestCut",
            request_serializer=None,
            response_deserializer=None,
        )
        i = 0
        while not stop.is_set():
            try:
                if i % 2 == 0:
                    submit.SubmitActa(
                        ingest_pb2.SubmitActaRequest(acta=big_acta), timeout=CALL_TIMEOUT_S
                    )
                else:
                    raw_read(padded_read, timeout=CALL_TIMEOUT_S)
                stats.codes["OK"] += 1
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            i += 1
            stop.wait(0.2)
    return stats


def _padded(size: int) -> bytes:
    """A GetLatestCutRequest of ``size`` bytes: one unknown length-delimited field 15."""
    body_len = size - 5  # tag (1 byte) + 4-byte varint length
    varint = bytearray()
    n = body_len
    while True:
        byte = n & 0x7F
        n >>= 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([15 << 3 | 2]) + bytes(varint) + b"\x00" * body_len


@contextlib.contextmanager
def idle_connections(
    edge: str, tls: TlsFiles, count: int
) -> Iterator[tuple[list[ssl.SSLSocket], int]]:
    """Open ``count`` mTLS connections to the edge (HTTP/2 ALPN, handshake done) and keep
    them idle; yields (the open sockets, how many failed)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.check_hostname = False  # SPIFFE URI SANs, no DNS names; the CA is checked
    context.set_alpn_protocols(["h2"])
    host, port = edge.rsplit(":", 1)
    sockets: list[ssl.SSLSocket] = []
    failed = 0
    try:
        for _ in range(count):
            try:
                raw = socket.create_connection((host, int(port)), timeout=IDLE_OPEN_TIMEOUT_S)
                sockets.append(context.wrap_socket(raw))
            except OSError:
                failed += 1
        yield sockets, failed
    finally:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


def _still_open(sockets: Sequence[ssl.SSLSocket]) -> int:
    """How many of ``sockets`` the peer has not closed (non-blocking peek)."""
    alive = 0
    for s in sockets:
        try:
            s.setblocking(False)
            data = s.recv(1)
            alive += 1 if data else 0  # b"" is an orderly close
        except (ssl.SSLWantReadError, BlockingIOError):
            alive += 1  # nothing to read: still open
        except OSError:
            pass
    return alive


# Envoy counters (name fragments) that say why a call was refused or failed.
_COUNTERS = (
    "health_check.failure",
    "outlier_detection.ejections_enforced_total",
    "upstream_rq_pending_overflow",
    "upstream_rq_active_overflow",
    "upstream_cx_overflow",
    "upstream_rq_timeout",
    "no_healthy_upstream",
    "upstream_rq_503",
    "upstream_rq_retry",
    "overload",
)


# Envoy counters (name fragments) that say why a connection was closed.
_CONNECTION_COUNTERS = (
    "limited_connections",
    "downstream_cx_overflow",
    "transport_socket_connect_timeout",
)


def _counters(stack: Stack, prefixes: Sequence[str] = ("cluster.",)) -> dict[str, int]:
    if stack.envoy is None:
        return {}
    return {
        k: v
        for k, v in stack.envoy.stats().items()
        if k.startswith(tuple(prefixes)) and any(c in k for c in _COUNTERS + _CONNECTION_COUNTERS)
    }


def run_abuse(
    stack: Stack,
    *,
    seconds: float,
    actas: Sequence[acta_pb2.Acta],
    flooders: int = 1,
    idle: int = 100,
    polite_rate: float = 10.0,
    flood_outlet: str = "outlet-01",
    polite_outlet: str = "outlet-02",
    oversize_identity: str = "cc-03",
    oversize_outlet: str = "outlet-03",
    polite_centre: str = "cc-02",
    gzip_seconds: float = 0.0,
    stuffing_seconds: float = 0.0,
) -> AbuseReport:
    """Run every abuse at once for ``seconds`` and measure the well-behaved clients;
    then the gzip flood for ``gzip_seconds`` and the stuffing flood for
    ``stuffing_seconds`` (0: not run), each alone with the same well-behaved clients.

    Args:
        stack: a running stack.
        seconds: length of the run.
        actas: valid actas; the polite capture centre submits those of the casillas
            assigned to it (ingest refuses the others), at most one per
            ``1/polite_rate`` s (submit fewer than seconds × rate to end early).
        flooders: flooding processes.
        idle: idle mTLS connections held open during the run.
        polite_rate: calls/s of each well-behaved client.
        flood_outlet: the flooding identity.
        polite_outlet: the well-behaved outlet.
        oversize_identity: the capture centre sending oversized SubmitActas.
        oversize_outlet: the outlet sending oversized reads (it also holds the idle
            connections).
        polite_centre: the well-behaved capture centre.
        gzip_seconds: length of :func:`gzip_flood` (by cc-01).
        stuffing_seconds: length of :func:`stuffing_flood` (by cc-04, on its own actas
            of ``actas``).

    Raises:
        RuntimeError: a flooder process failed.
        ValueError: a stuffing flood, and ``actas`` has none of cc-04's casillas.
    """
    edge = stack.endpoints.edge
    polite_actas = iter([a for a in actas if a.provenance.capture_centre_id in ("", polite_centre)])
    own = [a for _, a in zip(range(int(seconds * polite_rate) + 1), polite_actas, strict=False)]
    before = _counters(stack)
    with idle_connections(edge, stack.tls("outlet-03"), idle) as (sockets, idle_failed):
        flood_tls = stack.tls(flood_outlet)
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.abuse",
                    "flood",
                    "--edge",
                    edge,
                    "--tls",
                    f"{flood_tls.cert},{flood_tls.key},{flood_tls.ca}",
                    "--seconds",
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT.parent,
            )
            for _ in range(flooders)
        ]
        stop = threading.Event()
        results: dict[str, ClientStats] = {}

        def keep(name: str, stats_of: Callable[[], ClientStats]) -> None:
            results[name] = stats_of()

        threads = [
            threading.Thread(
                target=keep,
                args=(
                    "reads",
                    lambda: _polite_reads(edge, stack.tls(polite_outlet), polite_rate, stop),
                ),
            ),
            threading.Thread(
                target=keep,
                args=(
                    "submits",
                    lambda: _polite_submits(edge, stack.tls(polite_centre), own, polite_rate, stop),
                ),
            ),
            threading.Thread(
                target=keep,
                args=(
                    "oversized",
                    lambda: _oversized(
                        edge, stack.tls(oversize_identity), stack.tls(oversize_outlet), stop
                    ),
                ),
            ),
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT_S * 3)
        elapsed = time.monotonic() - started
        flood = ClientStats()
        for child in children:
            out, err = child.communicate(timeout=seconds + 60)
            if child.returncode != 0:
                raise RuntimeError(f"flooder failed: {err.decode()[-1500:]}")
            counts = json.loads(out.decode().strip().splitlines()[-1])
            flood.codes.update(counts)
        still_open = _still_open(sockets)
    after = _counters(stack)
    deltas = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    phases: list[FloodPhase] = []
    if gzip_seconds > 0:
        phases.append(
            gzip_flood(
                stack,
                seconds=gzip_seconds,
                polite_actas=polite_actas,
                polite_rate=polite_rate,
                polite_outlet=polite_outlet,
                polite_centre=polite_centre,
            )
        )
    if stuffing_seconds > 0:
        phases.append(
            stuffing_flood(
                stack,
                seconds=stuffing_seconds,
                actas=actas,
                polite_actas=polite_actas,
                polite_rate=polite_rate,
                polite_outlet=polite_outlet,
                polite_centre=polite_centre,
            )
        )
    return AbuseReport(
        seconds=elapsed,
        polite_reads=results.get("reads", ClientStats()),
        polite_submits=results.get("submits", ClientStats()),
        flood=flood,
        oversized=results.get("oversized", ClientStats()),
        idle_opened=len(sockets),
        idle_failed=idle_failed,
        idle_still_open=still_open,
        envoy_counters=deltas,
        phases=phases,
    )


# ------------------------------------------------------------------------------------
# one identity starving the others: streams and connections

# Streams the flooding outlet opens per second: under its default budget (200 calls/s
# per outlet) so that Envoy's rate limit lets every attempt through and only the stream
# bounds are tested, as in the reported attack (4,300 streams in 21 s).
STREAM_FLOOD_RATE = 190.0
# SubmitActas streams each silent centre opens per second: under its budget (50/s).
SILENT_SUBMIT_RATE = 45.0
# Connections one tcp-flood process keeps open at most: below this machine's 20,000
# descriptors per process, so several processes make a flood above Envoy's own limit.
TCP_FLOOD_PER_PROCESS = 7_000


def _error_kind(e: grpc.RpcError) -> str:
    """A refusal's code, split by who refused (the service's cap, Envoy's rate limit or
    breaker), from the status details."""
    if isinstance(e, grpc.aio.AioRpcError):
        code, details = e.code().name, e.details() or ""
    else:
        code = _code(e)
        details = (e.details() or "") if isinstance(e, grpc.Call) else ""
    if "at most" in details:
        return f"{code} (service cap)"
    if "no message for" in details:
        return f"{code} (idle bound)"
    if "overflow" in details:
        return f"{code} (breaker)"
    if "rate" in details.lower():
        return f"{code} (rate limit)"
    return code


def _new_channel(edge: str, tls: TlsFiles) -> grpc.Channel:
    """A channel with its own connection (its own subchannel pool)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    return grpc.secure_channel(edge, tls.channel_credentials(), options)


def _polite_watches(edge: str, tls: TlsFiles, stop: threading.Event) -> ClientStats:
    """Once a second: open WatchCuts, time its first cut, close it."""
    stats = ClientStats()
    with _channel(edge, tls) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        while not stop.is_set():
            t = time.monotonic()
            stream = stub.WatchCuts(
                publication_pb2.WatchCutsRequest(after_cut_number=0), timeout=CALL_TIMEOUT_S
            )
            try:
                next(stream)
                stats.codes["OK"] += 1
                stats.latencies_ms.append((time.monotonic() - t) * 1000)
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            finally:
                stream.cancel()
            stop.wait(1.0)
    return stats


def _polite_fresh_reads(edge: str, tls: TlsFiles, stop: threading.Event) -> ClientStats:
    """Once a second: GetLatestCut over a NEW connection (a client arriving now)."""
    stats = ClientStats()
    while not stop.is_set():
        t = time.monotonic()
        try:
            with _new_channel(edge, tls) as channel:
                publication_pb2_grpc.PublicationServiceStub(channel).GetLatestCut(
                    publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S
                )
            stats.codes["OK"] += 1
            stats.latencies_ms.append((time.monotonic() - t) * 1000)
        except grpc.RpcError as e:
            stats.codes[_code(e)] += 1
        stop.wait(1.0)
    return stats


def _run_polite(
    jobs: dict[str, Callable[[threading.Event], ClientStats]],
    attack: Callable[[threading.Event], _Attacked],
    seconds: float,
) -> tuple[dict[str, ClientStats], _Attacked, float]:
    """Run the polite ``jobs`` in threads while ``attack`` runs in this one (it must
    return within ``seconds`` plus its own clean-up); stop everything after."""
    stop = threading.Event()
    results: dict[str, ClientStats] = {}

    def keep(name: str, job: Callable[[threading.Event], ClientStats]) -> None:
        results[name] = job(stop)

    threads = [threading.Thread(target=keep, args=item, daemon=True) for item in jobs.items()]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        attacked = attack(stop)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT_S * 3)
    return results, attacked, time.monotonic() - started


def _open_watch_streams(
    edge: str, tls: TlsFiles, *, streams: int, rate: float, seconds: float
) -> dict[str, object]:
    """Open up to ``streams`` WatchCuts streams at ``rate`` per second, hold every one
    that gets its first cut until ``seconds`` have passed, then cancel them all."""
    outcomes: Counter[str] = Counter()

    async def flood() -> None:
        held: list[grpc.aio.UnaryStreamCall[Any, Any]] = []
        options = [("grpc.use_local_subchannel_pool", 1)]
        end = time.monotonic() + seconds
        async with grpc.aio.secure_channel(edge, tls.channel_credentials(), options) as ch:
            stub = publication_pb2_grpc.PublicationServiceStub(ch)

            async def one() -> None:
                call = stub.WatchCuts(publication_pb2.WatchCutsRequest(after_cut_number=0))
                try:
                    await call.read()
                    held.append(call)
                    outcomes["held"] += 1
                except grpc.RpcError as e:
                    outcomes[_error_kind(e)] += 1

            tasks = []
            for _ in range(streams):
                if time.monotonic() >= end:
                    break
                tasks.append(asyncio.create_task(one()))
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)
            outcomes["attempted"] = len(tasks)
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            for call in held:
                call.cancel()

    asyncio.run(flood())
    return dict(outcomes)


def watch_stream_flood(
    stack: Stack,
    *,
    seconds: float,
    streams: int = 4_300,
    flood_outlet: str = "outlet-01",
    polite_outlet: str = "outlet-02",
    watch_outlet: str = "outlet-03",
) -> dict[str, object]:
    """One outlet opens ``streams`` WatchCuts streams (at most :data:`STREAM_FLOOD_RATE`
    a second, within its budget) and holds them; another outlet reads the latest cut at
    10/s and a third opens a WatchCuts a second. Returns their figures."""
    edge = stack.endpoints.edge
    before = _counters(stack)
    polite, flood, elapsed = _run_polite(
        {
            "reads": lambda stop: _polite_reads(edge, stack.tls(polite_outlet), 10.0, stop),
            "watches": lambda stop: _polite_watches(edge, stack.tls(watch_outlet), stop),
        },
        lambda stop: _open_watch_streams(
            edge, stack.tls(flood_outlet), streams=streams, rate=STREAM_FLOOD_RATE, seconds=seconds
        ),
        seconds,
    )
    return {
        "seconds": round(elapsed, 1),
        "streams_wanted": streams,
        "flood": flood,
        "polite_reads": polite.get("reads", ClientStats()).summary(),
        "polite_watches": polite.get("watches", ClientStats()).summary(),
        "envoy_counters": _deltas(before, _counters(stack)),
    }


def _open_silent_submits(
    edge: str, identities: Sequence[TlsFiles], *, rate: float, seconds: float
) -> dict[str, object]:
    """Each identity opens SubmitActas streams at ``rate`` a second for ``seconds`` and
    never sends a message; what ended them, by kind."""
    outcomes: Counter[str] = Counter()

    async def silent_centre(tls: TlsFiles) -> None:
        never = asyncio.Event()

        async def nothing() -> AsyncIterator[ingest_pb2.SubmitActasRequest]:
            await never.wait()
            yield ingest_pb2.SubmitActasRequest()  # never reached

        options = [("grpc.use_local_subchannel_pool", 1)]
        end = time.monotonic() + seconds
        async with grpc.aio.secure_channel(edge, tls.channel_credentials(), options) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            calls = []
            while time.monotonic() < end:
                calls.append(stub.SubmitActas(nothing()))
                await asyncio.sleep(1 / rate)
            outcomes["attempted"] += len(calls)
            for call in calls:
                if not call.done():
                    outcomes["still open at the end"] += 1
                    call.cancel()
                    continue
                try:
                    await call
                    outcomes["OK"] += 1
                except grpc.RpcError as e:
                    outcomes[_error_kind(e)] += 1

    async def flood() -> None:
        await asyncio.gather(*(silent_centre(t) for t in identities))

    asyncio.run(flood())
    return dict(outcomes)


def silent_submit_flood(
    stack: Stack,
    *,
    seconds: float,
    actas: Sequence[acta_pb2.Acta],
    silent_centres: Sequence[str] = ("cc-01", "cc-02"),
    polite_centre: str = "cc-03",
) -> dict[str, object]:
    """Two centres hold silent SubmitActas streams (opening :data:`SILENT_SUBMIT_RATE` a
    second each) while a third submits those of ``actas`` whose casillas are assigned to
    it (ingest refuses the others), one by one at 10/s; returns its figures and whether a
    verified cut covers its actas afterwards (aggregation's and publication's mesh
    streams kept working)."""
    edge = stack.endpoints.edge
    before = _counters(stack)
    own = [a for a in actas if a.provenance.capture_centre_id in ("", polite_centre)]
    polite, flood, elapsed = _run_polite(
        {"submits": lambda stop: _polite_submits(edge, stack.tls(polite_centre), own, 10.0, stop)},
        lambda stop: _open_silent_submits(
            edge,
            [stack.tls(c) for c in silent_centres],
            rate=SILENT_SUBMIT_RATE,
            seconds=seconds,
        ),
        seconds,
    )
    submits = polite.get("submits", ClientStats())
    published = _published_after(stack, at_least=submits.codes["OK"])
    return {
        "seconds": round(elapsed, 1),
        "flood": flood,
        "polite_submits": submits.summary(),
        "polite_actas_published_s": published,
        "envoy_counters": _deltas(before, _counters(stack)),
    }


def _published_after(stack: Stack, *, at_least: int, timeout_s: float = 60.0) -> float | None:
    """Seconds until the latest cut covers ``at_least`` acta records (None: not within
    ``timeout_s``), read at publication's port as Envoy would."""
    target = stack.endpoints.services["publication"]
    started = time.monotonic()
    with grpc.secure_channel(target, stack.tls("envoy").channel_credentials()) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        while time.monotonic() - started < timeout_s:
            try:
                cut = stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=5).cut
                leaf = acta_pb2.LogLeaf.FromString(cut.cut_leaf)
                if leaf.cut_record.acta_records >= at_least:
                    return round(time.monotonic() - started, 2)
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    return None


def connection_flood(
    stack: Stack,
    *,
    seconds: float,
    connections: int = 20_700,
    polite_outlet: str = "outlet-02",
    fresh_outlet: str = "outlet-03",
) -> dict[str, object]:
    """``connections`` TCP connections to the edge that never start TLS, from enough
    ``tcp-flood`` processes, reopened as Envoy closes them, for ``seconds``; meanwhile
    one outlet reads at 10/s over its open connection and another over a new connection
    every second."""
    edge = stack.endpoints.edge
    before = _counters(stack)
    processes = max(1, -(-connections // TCP_FLOOD_PER_PROCESS))
    per_process = -(-connections // processes)

    def attack(stop: threading.Event) -> dict[str, object]:
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.abuse",
                    "tcp-flood",
                    "--edge",
                    edge,
                    "--connections",
                    str(per_process),
                    "--seconds",
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT.parent,
            )
            for _ in range(processes)
        ]
        totals: Counter[str] = Counter()
        for child in children:
            out, err = child.communicate(timeout=seconds + 120)
            if child.returncode != 0:
                raise RuntimeError(f"tcp-flood failed: {err.decode()[-1500:]}")
            totals.update(json.loads(out.decode().strip().splitlines()[-1]))
        return {"processes": processes, **dict(totals)}

    polite, flood, elapsed = _run_polite(
        {
            "reads": lambda stop: _polite_reads(edge, stack.tls(polite_outlet), 10.0, stop),
            "fresh": lambda stop: _polite_fresh_reads(edge, stack.tls(fresh_outlet), stop),
        },
        attack,
        seconds,
    )
    return {
        "seconds": round(elapsed, 1),
        "connections_wanted": connections,
        "flood": flood,
        "polite_reads": polite.get("reads", ClientStats()).summary(),
        "polite_new_connections": polite.get("fresh", ClientStats()).summary(),
        "envoy_counters": _deltas(
            before, _counters(stack, prefixes=("cluster.", "listener.", "connection_limit."))
        ),
    }


def _tcp_flood(edge: str, connections: int, seconds: float) -> Counter[str]:
    """Keep up to ``connections`` TCP connections to ``edge`` open without ever starting
    TLS, reopening those the peer closes, for ``seconds``."""
    host, port = edge.rsplit(":", 1)
    counts: Counter[str] = Counter()
    sockets: list[socket.socket] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            while len(sockets) < connections and time.monotonic() < end:
                try:
                    s = socket.create_connection((host, int(port)), timeout=2)
                except OSError:
                    counts["connect failed"] += 1
                    time.sleep(0.01)
                    continue
                s.setblocking(False)
                sockets.append(s)
                counts["opened"] += 1
            still: list[socket.socket] = []
            for s in sockets:
                try:
                    data = s.recv(1)
                    closed = data == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    counts["closed by envoy"] += 1
                    s.close()
                else:
                    still.append(s)
            sockets = still
            counts["max open"] = max(counts["max open"], len(sockets))
            time.sleep(0.2)
    finally:
        counts["open at the end"] = len(sockets)
        for s in sockets:
            s.close()
    return counts


def _deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# ------------------------------------------------------------------------------------
# one capture centre inflating or stuffing: gzip and stuffing floods

# Bytes a gzip-flood request would inflate to: the size of the compressed requests of
# issue 10 (65 KiB of gzip on the wire each).
GZIP_INFLATED_BYTES = 60 * 1024 * 1024
# Gzip-flood requests per second: 2 % of one centre's default budget (50 calls/s), the
# rate at which these requests used to take polite media p50 from 4 ms to 1.5 s.
GZIP_FLOOD_RATE = 1.0
# Stuffing-flood requests per second: half of one centre's default budget (50 calls/s),
# so that Envoy's rate limit lets them through and only ingest's caps hold them.
STUFFING_RATE = 25.0
# Actas the stuffing centre submits disagreeing figures for, over and over.
STUFFING_ACTAS = 5
# How often ingest's RSS is sampled during a flood (seconds).
RSS_SAMPLE_S = 0.25


@dataclass
class FloodPhase:
    """One flood of one capture centre and what the polite clients saw meanwhile.

    Attributes:
        name: ``gzip`` or ``stuffing``.
        seconds: length of the phase.
        attacker: the flooding centre's calls (status counts).
        polite_reads: the well-behaved outlet's GetLatestCut calls during the phase.
        polite_submits: the well-behaved capture centre's SubmitActa calls.
        store_bytes_before: ingest's SQLite file and its -wal, at the start (bytes).
        store_bytes_after: the same at the end.
        rss_kib_before: ingest's resident set at the start (KiB, /proc VmRSS).
        rss_kib_after: the same at the end.
        rss_kib_peak: the highest VmRSS sampled every :data:`RSS_SAMPLE_S` s.
        outcomes: ingest's outcome statuses for the attacker's actas (stuffing).
        stored: what ingest's store holds of the attacker's actas at the end (stuffing;
            :func:`stored_of`).
        envoy_counters: Envoy counters that explain refusals, increments over the phase.
    """

    name: str
    seconds: float
    attacker: ClientStats
    polite_reads: ClientStats
    polite_submits: ClientStats
    store_bytes_before: int
    store_bytes_after: int
    rss_kib_before: int
    rss_kib_after: int
    rss_kib_peak: int
    outcomes: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    envoy_counters: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """A JSON-able summary."""
        return {
            "seconds": round(self.seconds, 1),
            "attacker": self.attacker.summary(),
            "polite_reads": self.polite_reads.summary(),
            "polite_submits": self.polite_submits.summary(),
            "store_bytes_before": self.store_bytes_before,
            "store_bytes_after": self.store_bytes_after,
            "rss_kib_before": self.rss_kib_before,
            "rss_kib_after": self.rss_kib_after,
            "rss_kib_peak": self.rss_kib_peak,
            "outcomes": self.outcomes,
            "stored": self.stored,
            "envoy_counters": self.envoy_counters,
        }


def stored_of(stack: Stack, acta_ids: Sequence[str]) -> dict[str, int]:
    """What ingest's store holds for ``acta_ids``: log records, pending captures and
    kept conflicts (rows, and bytes of their actas), conflicts only counted; read from
    its SQLite file, read-only, while ingest runs."""
    marks = ",".join("?" * len(acta_ids))
    uri = f"file:{stack.state.store('ingest')}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:

        def one(sql: str) -> int:
            return int(db.execute(sql.format(marks), list(acta_ids)).fetchone()[0] or 0)

        return {
            "log_records": one("SELECT count(*) FROM log WHERE acta_id IN ({})"),
            "captures": one("SELECT count(*) FROM captures WHERE acta_id IN ({})"),
            "capture_bytes": one("SELECT sum(length(acta)) FROM captures WHERE acta_id IN ({})"),
            "conflicts_kept": one("SELECT count(*) FROM conflicts WHERE acta_id IN ({})"),
            "conflict_bytes": one("SELECT sum(length(acta)) FROM conflicts WHERE acta_id IN ({})"),
            "conflicts_counted_only": one(
                "SELECT sum(count) FROM conflicts_dropped WHERE acta_id IN ({})"
            ),
        }


def store_bytes(stack: Stack, service: str = "ingest") -> int:
    """Bytes of ``service``'s SQLite file and its write-ahead log."""
    db = stack.state.store(service)
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def rss_kib(pid: int | None) -> int:
    """VmRSS of ``pid`` (KiB; 0 when it is not running)."""
    if pid is None:
        return 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _gzip_flood(
    edge: str, tls: TlsFiles, stop: threading.Event, *, rate: float = GZIP_FLOOD_RATE
) -> ClientStats:
    """Requests that would inflate to :data:`GZIP_INFLATED_BYTES` (an acta whose casilla
    id is that many zeros), sent with ``grpc-encoding: gzip`` at ``rate`` a second,
    alternating SubmitActa and a SubmitActas stream, until ``stop``."""
    stats = ClientStats()
    acta = acta_pb2.Acta(casilla_id="0" * GZIP_INFLATED_BYTES)
    unary = ingest_pb2.SubmitActaRequest(acta=acta).SerializeToString()
    batch = ingest_pb2.SubmitActasRequest(actas=[acta]).SerializeToString()
    del acta
    options = [("grpc.max_send_message_length", -1)]
    with grpc.secure_channel(edge, tls.channel_credentials(), options) as channel:
        submit: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/veritally.v1.IngestService/SubmitActa",
            request_serializer=None,
            response_deserializer=None,
        )
        stream: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
            "/veritally.v1.IngestService/SubmitActas",
            request_serializer=None,
            response_deserializer=None,
        )
        next_call = time.monotonic()
        i = 0
        while not stop.is_set():
            try:
                if i % 2 == 0:
                    submit(unary, timeout=CALL_TIMEOUT_S, compression=grpc.Compression.Gzip)
                else:
                    stream(iter([batch]), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.Gzip)
                stats.codes["OK"] += 1
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            i += 1
            next_call += 1 / rate
            stop.wait(max(0.0, next_call - time.monotonic()))
    return stats


def _disagreeing(acta: acta_pb2.Acta, n: int) -> acta_pb2.Acta:
    """``acta`` with other figures: null votes ``n`` more (a valid acta still)."""
    other = acta_pb2.Acta()
    other.CopyFrom(acta)
    other.null_votes = acta.null_votes + n
    return other


def _stuffing(
    edge: str,
    tls: TlsFiles,
    actas: Sequence[acta_pb2.Acta],
    stop: threading.Event,
    outcomes: Counter[str],
    *,
    rate: float = STUFFING_RATE,
) -> ClientStats:
    """For the same few ``actas``, submit one disagreeing capture after another (each
    with other figures than every earlier one) at ``rate`` a second, until ``stop``;
    ``outcomes`` counts ingest's answers (status and code)."""
    stats = ClientStats()
    with _channel(edge, tls) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        next_call = time.monotonic()
        i = 0
        while not stop.is_set():
            acta = _disagreeing(actas[i % len(actas)], i // len(actas))
            try:
                outcome = stub.SubmitActa(
                    ingest_pb2.SubmitActaRequest(acta=acta), timeout=CALL_TIMEOUT_S
                ).outcome
                stats.codes["OK"] += 1
                status = ingest_pb2.OutcomeStatus.Name(outcome.status)
                outcomes[f"{status} {outcome.code}".strip()] += 1
            except grpc.RpcError as e:
                stats.codes[_code(e)] += 1
            i += 1
            next_call += 1 / rate
            stop.wait(max(0.0, next_call - time.monotonic()))
    return stats


def _flood_phase(
    stack: Stack,
    name: str,
    *,
    seconds: float,
    attack: Callable[[threading.Event], ClientStats],
    polite_actas: Iterator[acta_pb2.Acta],
    polite_rate: float,
    polite_outlet: str,
    polite_centre: str,
    outcomes: Counter[str] | None = None,
    stored: Callable[[], dict[str, int]] | None = None,
) -> FloodPhase:
    """Run ``attack`` for ``seconds`` while the polite outlet reads and the polite centre
    submits the next of ``polite_actas``; ingest's store and RSS before, after, peak."""
    edge = stack.endpoints.edge
    pid = stack.pids().get("ingest")
    before = _counters(stack)
    store_before, rss_before = store_bytes(stack), rss_kib(pid)
    peak = [rss_before]
    actas = [a for _, a in zip(range(int(seconds * polite_rate) + 1), polite_actas, strict=False)]

    def timed_attack(stop: threading.Event) -> ClientStats:
        stats: list[ClientStats] = []
        worker = threading.Thread(target=lambda: stats.append(attack(stop)), daemon=True)
        worker.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(RSS_SAMPLE_S)
        stop.set()
        worker.join(timeout=CALL_TIMEOUT_S * 3)
        return stats[0] if stats else ClientStats()

    polite, attacker, elapsed = _run_polite(
        {
            "reads": lambda stop: _polite_reads(edge, stack.tls(polite_outlet), polite_rate, stop),
            "submits": lambda stop: _polite_submits(
                edge, stack.tls(polite_centre), actas, polite_rate, stop
            ),
        },
        timed_attack,
        seconds,
    )
    rss_after = rss_kib(pid)
    return FloodPhase(
        name=name,
        seconds=elapsed,
        attacker=attacker,
        polite_reads=polite.get("reads", ClientStats()),
        polite_submits=polite.get("submits", ClientStats()),
        store_bytes_before=store_before,
        store_bytes_after=store_bytes(stack),
        rss_kib_before=rss_before,
        rss_kib_after=rss_after,
        rss_kib_peak=max(peak[0], rss_after),
        outcomes=dict(outcomes or {}),
        stored=stored() if stored is not None else {},
        envoy_counters=_deltas(before, _counters(stack)),
    )


def gzip_flood(
    stack: Stack,
    *,
    seconds: float,
    polite_actas: Iterator[acta_pb2.Acta],
    gzip_centre: str = "cc-01",
    polite_rate: float = 10.0,
    polite_outlet: str = "outlet-02",
    polite_centre: str = "cc-02",
) -> FloodPhase:
    """``gzip_centre`` sends requests that would inflate to 60 MB each (gzip) at
    :data:`GZIP_FLOOD_RATE` a second for ``seconds``; the polite clients meanwhile."""
    return _flood_phase(
        stack,
        "gzip",
        seconds=seconds,
        attack=lambda stop: _gzip_flood(stack.endpoints.edge, stack.tls(gzip_centre), stop),
        polite_actas=polite_actas,
        polite_rate=polite_rate,
        polite_outlet=polite_outlet,
        polite_centre=polite_centre,
    )


def stuffing_flood(
    stack: Stack,
    *,
    seconds: float,
    actas: Sequence[acta_pb2.Acta],
    polite_actas: Iterator[acta_pb2.Acta],
    stuffing_centre: str = "cc-04",
    polite_rate: float = 10.0,
    polite_outlet: str = "outlet-02",
    polite_centre: str = "cc-02",
) -> FloodPhase:
    """``stuffing_centre`` submits disagreeing captures of :data:`STUFFING_ACTAS` of its
    own actas (taken from ``actas``) at :data:`STUFFING_RATE` a second for ``seconds``;
    the polite clients meanwhile, ingest's store and RSS before and after.

    Raises:
        ValueError: ``actas`` holds none of the stuffing centre's casillas.
    """
    targets = [a for a in actas if a.provenance.capture_centre_id == stuffing_centre]
    if not targets:
        raise ValueError(f"no acta of a casilla assigned to {stuffing_centre}")
    outcomes: Counter[str] = Counter()
    return _flood_phase(
        stack,
        "stuffing",
        seconds=seconds,
        attack=lambda stop: _stuffing(
            stack.endpoints.edge,
            stack.tls(stuffing_centre),
            targets[:STUFFING_ACTAS],
            stop,
            outcomes,
        ),
        polite_actas=polite_actas,
        polite_rate=polite_rate,
        polite_outlet=polite_outlet,
        polite_centre=polite_centre,
        outcomes=outcomes,
        stored=lambda: stored_of(stack, [_acta_id(a) for a in targets[:STUFFING_ACTAS]]),
    )


def _acta_id(acta: acta_pb2.Acta) -> str:
    return f"{acta.casilla_id}/{acta.contest_id}"


def _flood(edge: str, tls: TlsFiles, seconds: float) -> Counter[str]:
    """GetLatestCut as fast as one connection answers, for ``seconds``."""
    codes: Counter[str] = Counter()
    with _channel(edge, tls) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S)
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[_code(e)] += 1
    return codes


def main(argv: Sequence[str] | None = None) -> int:
    """``flood`` / ``tcp-flood`` modes: flood and print the counts as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    flood = sub.add_parser("flood")
    flood.add_argument("--edge", required=True)
    flood.add_argument("--tls", required=True, help="CERT,KEY,CA")
    flood.add_argument("--seconds", type=float, required=True)
    tcp = sub.add_parser("tcp-flood", help="TCP connections that never start TLS")
    tcp.add_argument("--edge", required=True)
    tcp.add_argument("--connections", type=int, required=True)
    tcp.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.mode == "tcp-flood":
        print(json.dumps(dict(_tcp_flood(args.edge, args.connections, args.seconds))))
        return 0
    cert, key, ca = args.tls.split(",")
    codes = _flood(args.edge, TlsFiles(cert=Path(cert), key=Path(key), ca=Path(ca)), args.seconds)
    print(json.dumps(dict(codes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
