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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from veritally._grpc import TlsFiles
from veritally.mesh.envoy import INGEST_MAX_REQUEST_BYTES, READ_MAX_REQUEST_BYTES
from veritally.stack import Stack
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    publication_pb2,
    publication_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent
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
    "upstream_cx_overflow",
    "upstream_rq_timeout",
    "no_healthy_upstream",
    "upstream_rq_503",
    "upstream_rq_retry",
    "overload",
)


def _counters(stack: Stack) -> dict[str, int]:
    if stack.envoy is None:
        return {}
    return {
        k: v
        for k, v in stack.envoy.stats().items()
        if k.startswith("cluster.") and any(c in k for c in _COUNTERS)
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
) -> AbuseReport:
    """Run every abuse at once for ``seconds`` and measure the well-behaved clients.

    Args:
        stack: a running stack.
        seconds: length of the run.
        actas: valid actas the polite capture centre submits (at most one per
            ``1/polite_rate`` s; submit fewer than seconds × rate to end early).
        flooders: flooding processes.
        idle: idle mTLS connections held open during the run.
        polite_rate: calls/s of each well-behaved client.
        flood_outlet: the flooding identity.
        polite_outlet: the well-behaved outlet.
        oversize_identity: the capture centre sending oversized SubmitActas.
        oversize_outlet: the outlet sending oversized reads (it also holds the idle
            connections).
        polite_centre: the well-behaved capture centre.

    Raises:
        RuntimeError: a flooder process failed.
    """
    edge = stack.endpoints.edge
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
                    lambda: _polite_submits(
                        edge, stack.tls(polite_centre), actas, polite_rate, stop
                    ),
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
    )


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
    """``flood`` mode: flood and print the status counts as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    flood = sub.add_parser("flood")
    flood.add_argument("--edge", required=True)
    flood.add_argument("--tls", required=True, help="CERT,KEY,CA")
    flood.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    cert, key, ca = args.tls.split(",")
    codes = _flood(args.edge, TlsFiles(cert=Path(cert), key=Path(key), ca=Path(ca)), args.seconds)
    print(json.dumps(dict(codes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
