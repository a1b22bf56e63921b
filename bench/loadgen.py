"""Load generator: runs as its own process so the load does not share the measuring
process's interpreter (the GIL) with anything else.

``python -m bench.loadgen ingest --edge HOST:PORT --tls [CENTRE=]CERT,KEY,CA ... --batches FILE``
    submits pre-built ``SubmitActasRequest`` messages (length-prefixed in FILE) through
    the edge with the capture client (``veritally.capture``: one message per
    ``SubmitActas`` stream, ``--streams`` in flight per identity, retries and backoff
    within its budget), and prints one JSON object: for every answered message, the monotonic time
    it was answered and how many of its actas were ACCEPTED. Ingest lets a capture
    centre capture only the casillas assigned to it, so an identity given as
    ``CENTRE=...`` sends the messages whose first acta names that centre in its
    provenance (build one centre's actas per message); the others send the rest.

``python -m bench.loadgen reads --edge HOST:PORT --tls CERT,KEY,CA --trust-root FILE``
    runs one SDK :class:`veritally_client.Client` fetching and verifying the latest cut
    in a loop for ``--seconds`` (conditional reads: the client sends the tree size it
    verified, docs/adr/0089) and prints ``{"ok": n, "errors": {...}, "seconds": s,
    "cpu_seconds": s, "latencies_ms": [...], ...}`` (a sample of latencies; how many
    reads saw new results; answers and serialized bytes without and with results).

Both print their JSON on stdout as the last line; nothing else is printed there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from veritally.capture import Answer, CaptureClient, CaptureConfig, Operator
from veritally.rpc import TlsFiles
from veritally_client import (
    Client,
    ClientConfig,
    GrpcTransport,
    TlsCredentials,
    VeritallyError,
    load_trust_root,
)
from veritally_client.protocol.pb import ingest_pb2, publication_pb2

# Latencies kept per reads worker (a uniform sample is enough for a p99 of the run).
LATENCY_SAMPLE = 20_000


class MeteredTransport(GrpcTransport):
    """The SDK's gRPC transport, counting the serialized size of each conditional
    GetLatestCut answer (bytes of the gRPC message, before HTTP/2 and TLS framing), by
    whether it left the results out (docs/adr/0089). With ``whole`` set it asks for the
    whole cut every time (what every read did before conditional reads), for an A/B in
    the same run."""

    def __init__(self, channel: grpc.Channel, *, timeout: float) -> None:
        super().__init__(channel, timeout=timeout)
        self.unchanged = Meter()
        self.changed = Meter()
        self.whole = False

    def get_latest_cut_since(self, verified_tree_size: int) -> publication_pb2.GetLatestCutResponse:
        if self.whole:
            answer = publication_pb2.GetLatestCutResponse(cut=self.get_latest_cut())
        else:
            answer = super().get_latest_cut_since(verified_tree_size)
        meter = self.unchanged if answer.results_unchanged else self.changed
        meter.add(answer.ByteSize())
        return answer


@dataclass
class Meter:
    """A count of answers and of their bytes."""

    answers: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        """Count one answer of ``size`` bytes."""
        self.answers += 1
        self.bytes += size

    def mean(self) -> float:
        """Bytes per answer (0 without answers)."""
        return self.bytes / self.answers if self.answers else 0.0


def metered_client(
    edge: str, tls: TlsFiles, *, trust_root: Path, state_dir: Path, config: ClientConfig
) -> tuple[Client, MeteredTransport]:
    """An SDK client of ``edge`` over mTLS whose transport meters its answers."""
    transport = MeteredTransport.open(
        edge,
        credentials=TlsCredentials.from_files(ca=tls.ca, cert=tls.cert, key=tls.key),
        timeout=config.rpc_timeout,
        max_message_bytes=config.max_message_bytes,
    )
    client = Client.from_transport(
        transport, trust_root=load_trust_root(trust_root), state_dir=state_dir, config=config
    )
    return client, transport


def write_batches(path: Path, batches: Sequence[ingest_pb2.SubmitActasRequest]) -> None:
    """Write messages length-prefixed (4-byte big-endian) for :func:`read_batches`."""
    with path.open("wb") as f:
        for message in batches:
            data = message.SerializeToString()
            f.write(struct.pack(">I", len(data)))
            f.write(data)


def read_batches(path: Path) -> list[ingest_pb2.SubmitActasRequest]:
    """Read what :func:`write_batches` wrote."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(ingest_pb2.SubmitActasRequest.FromString(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def _tls(spec: str) -> TlsFiles:
    cert, key, ca = spec.split(",")
    return TlsFiles(cert=Path(cert), key=Path(key), ca=Path(ca))


def _identity(spec: str) -> tuple[str, TlsFiles]:
    """``[CENTRE=]CERT,KEY,CA`` -> (centre or "", files)."""
    centre, sep, files = spec.rpartition("=")
    return (centre if sep else ""), _tls(files)


async def _ingest(
    edge: str,
    identities: list[tuple[str, TlsFiles]],
    batches: list[ingest_pb2.SubmitActasRequest],
    streams: int,
) -> dict[str, object]:
    centres = {centre for centre, _ in identities if centre}
    answered: list[tuple[float, int]] = []
    client = CaptureClient(
        target=edge,
        operators={centre: [Operator(tls=tls)] for centre, tls in identities},
        config=CaptureConfig(streams=streams),
    )

    async def messages() -> AsyncIterator[tuple[str, ingest_pb2.SubmitActasRequest]]:
        for b in batches:
            centre = b.actas[0].provenance.capture_centre_id if b.actas else ""
            # A message of a centre no identity was given for fails the run (ValueError).
            yield (centre if centre in centres else ""), b

    def answer(a: Answer) -> None:
        accepted = sum(1 for o in a.outcomes if o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED)
        answered.append((time.monotonic(), accepted))

    started = time.monotonic()
    async with client:
        await client.run(messages(), answer)
    return {"started": started, "answered": answered, "retries": client.counters.total_retries}


def _reads(
    edge: str, tls: TlsFiles, trust_root: Path, seconds: float, max_age: float, whole: bool
) -> dict[str, object]:
    ok = changed = new_cuts = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="loadgen-") as state:
        client, transport = metered_client(
            edge,
            tls,
            trust_root=trust_root,
            state_dir=Path(state),
            config=ClientConfig(max_checkpoint_age=max_age),
        )
        transport.whole = whole
        with client:
            last = client.latest().cut_number  # establish the trusted state (not timed)
            cpu = time.process_time()
            started = time.monotonic()
            end = started + seconds
            while (now := time.monotonic()) < end:
                try:
                    cut = client.latest()
                    ok += 1
                    changed += cut.results_changed
                    new_cuts += cut.cut_number > last
                    last = cut.cut_number
                    if len(latencies) < LATENCY_SAMPLE:
                        latencies.append((time.monotonic() - now) * 1000)
                except VeritallyError as e:
                    errors[type(e).__name__] += 1
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu
    return {
        "ok": ok,
        "errors": dict(errors),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "latencies_ms": latencies,
        "results_changed": changed,
        "new_cuts": new_cuts,
        "unchanged_answers": transport.unchanged.answers,
        "unchanged_bytes": transport.unchanged.bytes,
        "changed_answers": transport.changed.answers,
        "changed_bytes": transport.changed.bytes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load and print its JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    ing = sub.add_parser("ingest")
    ing.add_argument("--edge", required=True)
    ing.add_argument("--tls", action="append", required=True, help="[CENTRE=]CERT,KEY,CA")
    ing.add_argument("--batches", type=Path, required=True)
    ing.add_argument("--streams", type=int, default=2)
    rd = sub.add_parser("reads")
    rd.add_argument("--edge", required=True)
    rd.add_argument("--tls", required=True, help="CERT,KEY,CA")
    rd.add_argument("--trust-root", type=Path, required=True)
    rd.add_argument("--seconds", type=float, default=10.0)
    rd.add_argument("--max-age", type=float, default=600.0)
    rd.add_argument("--whole", action="store_true", help="ask for the whole cut every time")
    args = parser.parse_args(argv)
    if args.mode == "ingest":
        result = asyncio.run(
            _ingest(
                args.edge,
                [_identity(t) for t in args.tls],
                read_batches(args.batches),
                args.streams,
            )
        )
    else:
        result = _reads(
            args.edge, _tls(args.tls), args.trust_root, args.seconds, args.max_age, args.whole
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
