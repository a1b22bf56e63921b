"""A real publication service fed by a Tally-backed aggregation server, for SDK tests.

The aggregation side is a test server (tests.pub_support.FakeAggregation, on a real
port) whose acta records come from tests.unit.sdk_fake.FakePublisher's generator and whose
results blob is the real ``Tally.results_bytes()`` over exactly those records, with the
real election definition. Publication is the real service: it appends, signs, serves and
writes the static bundle. Optionally it listens with mutual TLS from a real PKI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.pub_support import (
    FakeAggregation,
    PublisherFiles,
    make_publisher,
    publication_config,
)
from tests.unit.sdk_fake import FakePublisher
from veritally.pki import init_pki
from veritally.publication.service import PublicationService, start_publication
from veritally.publication.trustroot import trust_root_path
from veritally.rpc import ServiceServer, TlsFiles
from veritally_client import Client, ClientConfig, TlsCredentials, load_trust_root
from veritally_client._gen.veritally.v1 import aggregation_pb2_grpc

ORIGIN = "veritally.example/sdk-election"


class TallyAggregation(FakeAggregation):
    """Aggregation whose results are the SDK tally of its records (real election)."""

    def __init__(self) -> None:
        """An empty log over the small test election."""
        super().__init__()
        self.source = FakePublisher(now=dt.datetime.now(dt.UTC))

    def add(self, count: int, *, prefix: str = "") -> list[str]:
        """Append ``count`` first captures; returns their acta ids."""
        ids = self.source.add_actas(count)
        self.leaves = list(self.source.leaves)
        return ids

    def correct_acta(self, acta_id: str) -> None:
        """Append the next revision of ``acta_id``."""
        self.source.correct(acta_id)
        self.leaves = list(self.source.leaves)

    def _results_now(self) -> bytes:
        return self.source.tally.results_bytes()

    def _acta_records_now(self) -> int:
        return self.source.tally.acta_records

    def _definition_now(self) -> bytes:
        return self.source.election.definition_bytes


@dataclass
class SdkStack:
    """A running publication service and what a client needs to reach it."""

    aggregation: TallyAggregation
    service: PublicationService
    publisher: PublisherFiles
    endpoint: str
    trust_root_file: Path
    bundle_dir: Path
    state_dir: Path
    credentials: TlsCredentials | None
    tls_files: tuple[Path, Path, Path] | None  # the outlet's (ca, cert, key) PEM files

    def client(self, config: ClientConfig | None = None) -> Client:
        """A verifying client of this stack (mTLS when the stack has TLS)."""
        root = load_trust_root(self.trust_root_file)
        if self.credentials is None:
            return Client(
                endpoint=self.endpoint,
                trust_root=root,
                state_dir=self.state_dir,
                unsafe_plaintext=True,
                config=config or ClientConfig(),
            )
        return Client(
            endpoint=self.endpoint,
            trust_root=root,
            state_dir=self.state_dir,
            credentials=self.credentials,
            config=config or ClientConfig(),
        )

    async def cut(self, actas: int = 0) -> None:
        """Add ``actas`` records upstream and make a cut now."""
        if actas:
            self.aggregation.add(actas)
        await self.service.follower.cut_once()


@asynccontextmanager
async def sdk_stack(tmp: Path, *, tls: bool = False, actas: int = 6) -> AsyncIterator[SdkStack]:
    """Start aggregation + publication on loopback; the first cut covers ``actas``."""
    agg = TallyAggregation()
    agg.add(actas)
    server = ServiceServer(name="veritally.v1.AggregationService")
    aggregation_pb2_grpc.add_AggregationServiceServicer_to_server(agg, server.grpc)
    agg_port = await server.start("127.0.0.1:0")
    publisher = make_publisher(tmp, name=ORIGIN, origin=ORIGIN)
    config = publication_config(tmp, publisher, f"127.0.0.1:{agg_port}")
    credentials = None
    tls_files = None
    if tls:
        pki = init_pki(tmp / "pki", trust_domain="veritally.example", media=1, capture_centres=0)
        svc = pki.identity("publication")
        outlet = pki.identity("outlet-01")
        config = dataclasses.replace(
            config, listen_tls=TlsFiles(cert=svc.cert, key=svc.key, ca=pki.ca_cert)
        )
        credentials = TlsCredentials.from_files(
            ca=pki.ca_cert, cert=outlet.cert, key=outlet.key, server_name="localhost"
        )
        tls_files = (pki.ca_cert, outlet.cert, outlet.key)
    service = await start_publication(config)
    try:
        # The service makes its first cut on start, then one per (long) interval: wait
        # for it so that every later cut is the test's own.
        for _ in range(500):  # bounded: 5 s at 10 ms
            if service.engine.latest_number >= 1:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the publication service made no first cut")
        yield SdkStack(
            aggregation=agg,
            service=service,
            publisher=publisher,
            endpoint=f"127.0.0.1:{service.port}",
            trust_root_file=trust_root_path(publisher.trust_root_dir, 1),
            bundle_dir=tmp / "bundle",
            state_dir=tmp / "client-state",
            credentials=credentials,
            tls_files=tls_files,
        )
    finally:
        await service.stop(grace=0.1)
        await server.stop(grace=0.1)
