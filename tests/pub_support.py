"""Test support for publication: key and trust root files, and a REAL grpc.aio
aggregation server (on an ephemeral loopback port) that serves records made here.

The fake builds acta records and results blobs itself: publication treats results as
opaque bytes and only needs (M, results at M) atomically plus the records' exact bytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from veritally.publication.app import PublicationConfig, PublicationService
from veritally.publication.keys import write_key_files
from veritally.publication.trustroot import build_body, write_trust_root
from veritally.rpc import ServiceServer
from veritally_client._election import ElectionIndex, acta_id
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    aggregation_pb2,
    aggregation_pb2_grpc,
    election_pb2,
    results_pb2,
)
from veritally_client._signing import Signer
from veritally_client._tally import Tally
from veritally_client._trustroot import sign_trust_root

ORIGIN = "veritally.example/test-election"
DEFINITION = election_pb2.ElectionDefinition().SerializeToString()


def acta_leaf(sequence: int, acta_id: str, revision: int = 1) -> bytes:
    """A serialized LogLeaf holding an ActaRecord."""
    casilla, contest = acta_id.split("/")
    record = acta_pb2.ActaRecord(
        acta_id=acta_id,
        revision=revision,
        acta=acta_pb2.Acta(casilla_id=casilla, contest_id=contest),
        counted=True,
        sequence=sequence,
    )
    record.received_time.FromDatetime(dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC))
    return acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)


def results_blob(leaves: list[bytes]) -> bytes:
    """A results blob that depends on exactly the given records."""
    digest = hashlib.sha256(b"".join(leaves)).digest()
    return results_pb2.Results(
        election_id="test", definition_sha256=digest, acta_records=len(leaves)
    ).SerializeToString(deterministic=True)


class FakeAggregation(aggregation_pb2_grpc.AggregationServiceServicer):
    """Serves an in-memory acta log and results computed from it.

    Without an election, records are minimal and results are a digest of the records
    (publication treats results as opaque). With one, records are valid actas and the
    results are the SDK's :class:`Tally` at each position, as the real aggregation's.
    """

    def __init__(self, election: ElectionIndex | None = None) -> None:
        """Empty log."""
        self.leaves: list[bytes] = []
        self.unavailable = False
        self.batch = 100  # records per stream message, as aggregation batches them
        # Records ingest accepted beyond those served: an aggregation stuck behind ingest.
        self.ingest_ahead = 0
        # A definition served instead of the election's: one the results were not
        # computed with.
        self.other_definition: bytes | None = None
        self.election = election
        self.tally = Tally(election) if election else None
        self._rng = random.Random(2026)
        self._pending = (
            [acta_id(c.id, k.id) for c in election.casillas for k in election.contests]
            if election
            else []
        )

    def _results_now(self) -> bytes:
        if self.tally is None:
            return results_blob(self.leaves)
        return self.tally.results_bytes()

    def _acta_records_now(self) -> int:
        return len(self.leaves)

    def _definition_now(self) -> bytes:
        if self.other_definition is not None:
            return self.other_definition
        return self.election.definition_bytes if self.election else DEFINITION

    @property
    def valid_left(self) -> int:
        """Valid actas of the election not served yet (what :meth:`add_valid` can add)."""
        return len(self._pending)

    def add_valid(self, count: int) -> None:
        """Append ``count`` valid actas of the election (needs an election)."""
        assert self.election is not None
        assert self.tally is not None
        for _ in range(count):
            aid = self._pending.pop(0)
            casilla_id, contest_id = aid.rsplit("/", 1)
            acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
            for oid in self.election.option_ids(contest_id):
                acta.option_votes.add(option_id=oid, votes=self._rng.randrange(0, 20))
            acta.image_sha256 = hashlib.sha256(aid.encode()).digest()
            record = acta_pb2.ActaRecord(
                acta_id=aid, revision=1, acta=acta, counted=True, sequence=len(self.leaves)
            )
            record.received_time.FromDatetime(dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC))
            self.tally.apply(record)
            self.leaves.append(
                acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)
            )

    def add(self, count: int, *, prefix: str = "C") -> list[str]:
        """Append ``count`` new actas (revision 1); returns their ids."""
        ids = []
        for _ in range(count):
            acta_id = f"{prefix}{len(self.leaves):06d}/P"
            self.leaves.append(acta_leaf(len(self.leaves), acta_id))
            ids.append(acta_id)
        return ids

    def correct(self, acta_id: str, revision: int) -> None:
        """Append a correction of ``acta_id``."""
        self.leaves.append(acta_leaf(len(self.leaves), acta_id, revision))

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")

    async def GetResults(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "publication never calls it")
        raise AssertionError("abort raises")  # pragma: no cover

    async def GetResultsBlob(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsBlobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsBlobResponse:
        await self._check(context)
        return aggregation_pb2.GetResultsBlobResponse(
            acta_records=self._acta_records_now(),
            results=self._results_now(),
            ingest_records=self._acta_records_now() + self.ingest_ahead,
        )

    async def GetDefinition(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetDefinitionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetDefinitionResponse:
        await self._check(context)
        return aggregation_pb2.GetDefinitionResponse(definition=self._definition_now())

    async def StreamAggregatedRecords(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.StreamAggregatedRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[aggregation_pb2.StreamAggregatedRecordsResponse]:
        await self._check(context)
        pos = request.from_sequence
        while pos < len(self.leaves):
            chunk = self.leaves[pos : pos + self.batch]
            yield aggregation_pb2.StreamAggregatedRecordsResponse(first_sequence=pos, leaves=chunk)
            pos += len(chunk)


@dataclass
class RunningFake:
    """A fake aggregation on a real port."""

    fake: FakeAggregation
    server: ServiceServer
    port: int

    @property
    def target(self) -> str:
        """``host:port`` to dial."""
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop the server."""
        await self.server.stop(grace=0.1)


async def start_fake_aggregation(election: ElectionIndex | None = None) -> RunningFake:
    """Start a fake aggregation on an ephemeral loopback port."""
    fake = FakeAggregation(election)
    server = ServiceServer(name="veritally.v1.AggregationService")
    aggregation_pb2_grpc.add_AggregationServiceServicer_to_server(fake, server.grpc)
    port = await server.start("127.0.0.1:0")
    return RunningFake(fake=fake, server=server, port=port)


@dataclass(frozen=True)
class PublisherFiles:
    """Key file, signer and trust root directory of a test publisher."""

    key_file: Path
    signer: Signer
    trust_root_dir: Path


def make_publisher(tmp: Path, *, name: str = ORIGIN, origin: str = ORIGIN) -> PublisherFiles:
    """Write a key file (0600) and a version-1 trust root listing it."""
    signer = Signer.generate(name)
    key_file = tmp / "publisher.key"
    write_key_files(signer, key_file)
    trust_dir = tmp / "trust-root"
    body = build_body(
        version=1,
        origin=origin,
        publishers=[signer],
        threshold=1,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
    )
    write_trust_root(trust_dir, 1, sign_trust_root(body, [signer]))
    return PublisherFiles(key_file=key_file, signer=signer, trust_root_dir=trust_dir)


def publication_config(
    tmp: Path,
    publisher: PublisherFiles,
    aggregation_target: str,
    *,
    interval: float = 3600.0,
    bundle: bool = True,
) -> PublicationConfig:
    """A config on loopback; the long default interval leaves cuts to the test."""
    return PublicationConfig(
        db_path=tmp / "publication.db",
        key_files=(publisher.key_file,),
        trust_root_dir=publisher.trust_root_dir,
        aggregation_target=aggregation_target,
        interval_seconds=interval,
        bundle_dir=tmp / "bundle" if bundle else None,
    )


class ActaLog:
    """The acta records an aggregation would serve, built here in log order."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []

    def add(self, n: int) -> list[bytes]:
        """Log ``n`` more acta records; returns them."""
        new = [acta_leaf(len(self.leaves) + i, f"C{len(self.leaves) + i:05d}/P") for i in range(n)]
        self.leaves += new
        return new


def publication_db(config: PublicationConfig) -> Path:
    """The SQLite file of a test configuration (:func:`publication_config` makes one)."""
    assert isinstance(config.db_path, Path)
    return config.db_path


async def wait_for_first_cut(service: PublicationService, bundle: Path | None = None) -> None:
    """Wait for the cut made at start (and, given its bundle, for its files)."""
    for _ in range(500):  # bounded: 5 s
        if service.engine.latest_number and (bundle is None or (bundle / "latest").exists()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no first cut")
