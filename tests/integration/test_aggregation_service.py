"""Aggregation over real gRPC on 127.0.0.1, following a real ingest: totals at every
level, the blob at an exact position, the definition bytes, the records it counted, a
restart that counts nothing twice, and reconnection when ingest comes back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc_support import bad_request_field
from tests.pub_support import make_publisher, publication_config
from tests.write_path_support import (
    all_actas,
    as_caller,
    authority_operator,
    make_acta,
    poison_ingest_log,
    small_election,
    wide_election,
)
from veritally import bounds
from veritally.aggregation.app import AggregationService, start_aggregation
from veritally.aggregation.follower import FOLLOWER_HEALTH_NAME, STUCK_AFTER_FAILURES
from veritally.aggregation.servicer import SERVICE_NAME
from veritally.ingest.app import IngestService, start_ingest
from veritally.publication.app import PublicationService, start_publication
from veritally.rpc import MAX_MESSAGE_BYTES, aio_channel
from veritally.storage import STREAM_PAGE_BYTES as AGG_PAGE_BYTES
from veritally.storage import STREAM_PAGE_BYTES as PAGE_BYTES
from veritally_client import Client, ClientConfig
from veritally_client._election import ElectionIndex
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import (
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    results_pb2,
)
from veritally_client._tally import Tally
from veritally_client._trustroot import TrustedRoot

ELECTION = small_election()
# Upper bound on waiting for the follower to catch up, in seconds (normally milliseconds).
CATCH_UP_S = 20.0


async def _wait_position(service: AggregationService, n: int) -> None:
    pages = service.engine.aggregated(0, follow=True)

    async def reached() -> None:
        async for first, leaves in pages:
            if first + len(leaves) >= n:
                return

    try:
        await asyncio.wait_for(reached(), timeout=CATCH_UP_S)
    finally:
        await pages.aclose()


async def _ingest(tmp_path: Path, address: str = "127.0.0.1:0") -> IngestService:
    return await start_ingest(
        election=ELECTION, db_path=tmp_path / "ingest.db", address=address, double_capture=False
    )


async def _aggregation(tmp_path: Path, ingest_port: int) -> AggregationService:
    return await start_aggregation(
        election=ELECTION,
        db_path=tmp_path / "agg.db",
        address="127.0.0.1:0",
        ingest_target=f"127.0.0.1:{ingest_port}",
    )


async def _submit_all(port: int, actas: list[ingest_pb2.SubmitActasRequest]) -> None:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        # wait_for_ready: subchannels are shared in a process, and the follower's attempts
        # while ingest was down may have left the one to this port in backoff.
        await ingest_pb2_grpc.IngestServiceStub(channel).SubmitActas(
            iter(actas), wait_for_ready=True
        )


async def _log(ingest: IngestService) -> list[bytes]:
    """Ingest's whole log, in order."""
    return [leaf async for _, page in ingest.engine.records(0, follow=False) for leaf in page]


async def test_follows_ingest_and_serves_totals_at_every_level(tmp_path: Path) -> None:
    ingest = await _ingest(tmp_path)
    agg = await _aggregation(tmp_path, ingest.port)
    try:
        actas = all_actas(ELECTION)
        await _submit_all(
            ingest.port,
            [
                ingest_pb2.SubmitActasRequest(actas=actas[:15]),
                ingest_pb2.SubmitActasRequest(actas=actas[15:]),
            ],
        )
        await _wait_position(agg, len(actas))
        async with aio_channel(f"127.0.0.1:{agg.port}") as channel:
            stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
            # The blob equals a tally over exactly the records ingest logged.
            blob = await stub.GetResultsBlob(aggregation_pb2.GetResultsBlobRequest())
            ordered = await _log(ingest)
            expected = Tally(ELECTION)
            for leaf in ordered:
                expected.apply_leaf(leaf)
            assert blob.acta_records == len(actas)
            assert blob.results == expected.results_bytes()
            final = await stub.GetResultsBlob(aggregation_pb2.GetResultsBlobRequest(final=True))
            assert final.results == expected.results_bytes(final=True)

            definition = await stub.GetDefinition(aggregation_pb2.GetDefinitionRequest())
            assert definition.definition == ELECTION.definition_bytes

            nation = await stub.GetResults(
                aggregation_pb2.GetResultsRequest(level=results_pb2.LEVEL_NATIONAL)
            )
            assert nation.acta_records == len(actas)
            assert nation.results == expected.unit_results(results_pb2.LEVEL_NATIONAL, "")
            casilla_id = ELECTION.casillas[0].id
            for level, unit in (
                (results_pb2.LEVEL_STATE, "02"),
                (results_pb2.LEVEL_DISTRICT, "01-02"),
                (results_pb2.LEVEL_SECTION, ELECTION.casillas[0].section_id),
                (results_pb2.LEVEL_CASILLA, casilla_id),
            ):
                got = await stub.GetResults(
                    aggregation_pb2.GetResultsRequest(level=level, unit_id=unit)
                )
                assert got.results == expected.unit_results(level, unit)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetResults(
                    aggregation_pb2.GetResultsRequest(level=results_pb2.LEVEL_STATE, unit_id="77")
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetResults(aggregation_pb2.GetResultsRequest())
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # The records it counted, byte for byte as ingest logged them.
            pages = [
                p
                async for p in stub.StreamAggregatedRecords(
                    aggregation_pb2.StreamAggregatedRecordsRequest(from_sequence=3)
                )
            ]
            streamed = [leaf for p in pages for leaf in p.leaves]
            assert pages[0].first_sequence == 3
            assert streamed == ordered[3:]
    finally:
        await agg.stop()
        await ingest.stop()


async def test_restart_resumes_from_the_cursor_without_counting_twice(tmp_path: Path) -> None:
    ingest = await _ingest(tmp_path)
    actas = all_actas(ELECTION)
    agg = await _aggregation(tmp_path, ingest.port)
    try:
        await _submit_all(ingest.port, [ingest_pb2.SubmitActasRequest(actas=actas[:20])])
        await _wait_position(agg, 20)
        before = agg.engine.tally.results_bytes()
        await agg.stop()
        # Records committed while aggregation is down, and a correction of a counted one.
        await _submit_all(ingest.port, [ingest_pb2.SubmitActasRequest(actas=actas[20:])])
        async with aio_channel(f"127.0.0.1:{ingest.port}") as channel:
            fixed = make_acta(
                ELECTION, actas[0].casilla_id, actas[0].contest_id, [0] * len(actas[0].option_votes)
            )
            # Two operators (dual control), with a reason: then it is logged.
            for operator in ("ops-01", "ops-02"):
                await ingest_pb2_grpc.IngestServiceStub(channel).CorrectActa(
                    ingest_pb2.CorrectActaRequest(
                        acta=fixed, supersedes_revision=1, reason="figures re-read"
                    ),
                    metadata=as_caller(authority_operator(operator)),
                )
        agg = await _aggregation(tmp_path, ingest.port)
        assert agg.engine.tally.results_bytes() == before  # rebuilt from its own store
        await _wait_position(agg, len(actas) + 1)
        reference = Tally(ELECTION)
        for leaf in await _log(ingest):
            reference.apply_leaf(leaf)
        assert agg.engine.tally.results_bytes() == reference.results_bytes()
    finally:
        await agg.stop()
        await ingest.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reconnects_when_ingest_comes_back(tmp_path: Path) -> None:
    port = _free_port()
    agg = await _aggregation(tmp_path, port)  # ingest is not running yet
    try:
        await asyncio.sleep(0.3)
        assert agg.engine.position == 0
        ingest = await _ingest(tmp_path, f"127.0.0.1:{port}")
        try:
            await _submit_all(port, [ingest_pb2.SubmitActasRequest(actas=all_actas(ELECTION)[:4])])
            await _wait_position(agg, 4)
        finally:
            await ingest.stop()
        ingest = await _ingest(tmp_path, f"127.0.0.1:{port}")
        try:
            await _submit_all(port, [ingest_pb2.SubmitActasRequest(actas=all_actas(ELECTION)[4:9])])
            await _wait_position(agg, 9)
        finally:
            await ingest.stop()
    finally:
        await agg.stop()


async def test_stops_following_and_reports_not_serving_on_a_record_it_cannot_count(
    tmp_path: Path,
) -> None:
    # Ingest knows casillas that this aggregation's (misconfigured) definition lacks.
    ingest = await start_ingest(
        election=small_election(casillas_per_section=2),
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=False,
    )
    narrow = small_election(casillas_per_section=1)
    agg = await start_aggregation(
        election=narrow,
        db_path=tmp_path / "agg.db",
        address="127.0.0.1:0",
        ingest_target=f"127.0.0.1:{ingest.port}",
    )
    try:
        unknown = next(c.id for c in ELECTION.casillas if not narrow.has_casilla(c.id))
        await _submit_all(
            ingest.port,
            [ingest_pb2.SubmitActasRequest(actas=[make_acta(ELECTION, unknown, "SEN", [1, 1])])],
        )
        with pytest.raises(MalformedDataError):
            await asyncio.wait_for(asyncio.shield(agg.follower), timeout=CATCH_UP_S)
        async with aio_channel(f"127.0.0.1:{agg.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(100):  # the status is reported by a task right after
                status = await health.Check(health_pb2.HealthCheckRequest(service=""))
                if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.01)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert agg.engine.position == 0
    finally:
        await agg.stop()
        await ingest.stop()


async def _health(port: int, service: str) -> int:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
    return int(status.status)


async def test_a_record_too_large_to_stream_alarms_with_its_position_instead_of_idling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="veritally.aggregation.follower")
    actas = all_actas(ELECTION)
    ingest = await _ingest(tmp_path)
    await _submit_all(ingest.port, [ingest_pb2.SubmitActasRequest(actas=actas[:3])])
    await ingest.stop()
    # A record accepted before acta sizes were bounded: no page can carry it.
    poison_ingest_log(
        tmp_path / "ingest.db", ELECTION, actas[3], sequence=3, size=MAX_MESSAGE_BYTES + 1024
    )
    ingest = await _ingest(tmp_path)
    agg = await _aggregation(tmp_path, ingest.port)
    try:
        # Ingest goes on accepting behind the record aggregation cannot read.
        await _submit_all(ingest.port, [ingest_pb2.SubmitActasRequest(actas=actas[4:10])])
        assert ingest.engine.log_size == 10

        def alarms() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.levelno == logging.ERROR and "stuck at record 3" in r.getMessage()
            ]

        def told_all() -> bool:
            return any("ingest has 10 records (7 behind)" in r.getMessage() for r in alarms())

        for _ in range(int(CATCH_UP_S / 0.1)):
            if len(alarms()) >= 2 and told_all():
                break
            await asyncio.sleep(0.1)
        # Every attempt past the threshold is an ERROR naming the position and the lag.
        assert len(alarms()) >= 2
        assert told_all()
        assert agg.engine.position == 3
        assert agg.engine.stuck_at == 3
        serving = health_pb2.HealthCheckResponse.SERVING
        assert await _health(agg.port, FOLLOWER_HEALTH_NAME) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # The totals stay served, with the figure that shows how far behind they are.
        assert await _health(agg.port, SERVICE_NAME) == serving
        async with aio_channel(f"127.0.0.1:{agg.port}") as channel:
            blob = await aggregation_pb2_grpc.AggregationServiceStub(channel).GetResultsBlob(
                aggregation_pb2.GetResultsBlobRequest()
            )
        assert (blob.acta_records, blob.ingest_records) == (3, 10)
        # Before the threshold the failures were warnings (a blip is not an alarm).
        assert f"{STUCK_AFTER_FAILURES} streams in a row" in alarms()[0].getMessage()
        assert "RESOURCE_EXHAUSTED" in alarms()[0].getMessage()
    finally:
        await agg.stop()
        await ingest.stop()


async def test_follower_reports_ingest_log_size_with_the_results(tmp_path: Path) -> None:
    ingest = await _ingest(tmp_path)
    agg = await _aggregation(tmp_path, ingest.port)
    try:
        await _submit_all(ingest.port, [ingest_pb2.SubmitActasRequest(actas=all_actas(ELECTION))])
        await _wait_position(agg, len(all_actas(ELECTION)))
        async with aio_channel(f"127.0.0.1:{agg.port}") as channel:
            blob = await aggregation_pb2_grpc.AggregationServiceStub(channel).GetResultsBlob(
                aggregation_pb2.GetResultsBlobRequest()
            )
        assert blob.ingest_records == blob.acta_records == ingest.engine.log_size
        assert await _health(agg.port, FOLLOWER_HEALTH_NAME) == (
            health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        await agg.stop()
        await ingest.stop()


GRPC_DEFAULT_RECEIVE_BYTES = 4 * 1024 * 1024


@dataclass
class _Pipeline:
    """Real ingest, aggregation following it, publication cutting from aggregation."""

    ingest: IngestService
    agg: AggregationService
    publication: PublicationService
    trust_root: TrustedRoot


@contextlib.asynccontextmanager
async def _pipeline(tmp_path: Path, election: ElectionIndex) -> AsyncIterator[_Pipeline]:
    ingest = await start_ingest(
        election=election,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=False,
    )
    agg = await start_aggregation(
        election=election,
        db_path=tmp_path / "agg.db",
        address="127.0.0.1:0",
        ingest_target=f"127.0.0.1:{ingest.port}",
    )
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, f"127.0.0.1:{agg.port}", bundle=False)
    publication = await start_publication(config)
    pinned = TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
        now=dt.datetime.now(dt.UTC),
    )
    try:
        yield _Pipeline(ingest=ingest, agg=agg, publication=publication, trust_root=pinned)
    finally:
        await publication.stop(grace=0.1)
        await agg.stop()
        await ingest.stop()


async def test_leaves_near_the_max_leaf_size_still_stream_publish_and_recount(
    tmp_path: Path,
) -> None:
    # ~300 leaves of ~15 KiB: ~4.7 MB of log, more than one 4 MiB message (gRPC's default
    # receive limit, which the client below keeps). Every page must fit it.
    election = wide_election(options=225, casillas=300)
    actas = all_actas(election)
    assert all(a.ByteSize() > bounds.MAX_ACTA_BYTES * 0.9 for a in actas)
    async with _pipeline(tmp_path, election) as p:
        await _submit_all(
            p.ingest.port,
            [ingest_pb2.SubmitActasRequest(actas=actas[i : i + 100]) for i in range(0, 300, 100)],
        )
        await _wait_position(p.agg, len(actas))
        # (ingest, aggregation) pages of the log stay within their byte cap plus one leaf
        for pages, cap in (
            ([page async for _, page in p.ingest.engine.records(0, follow=False)], PAGE_BYTES),
            (
                [page async for _, page in p.agg.engine.aggregated(0, follow=False)],
                AGG_PAGE_BYTES,
            ),
        ):
            assert len(pages) > 1
            assert all(len(leaf) <= bounds.MAX_LEAF_BYTES for page in pages for leaf in page)
            assert all(sum(map(len, page)) <= cap + bounds.MAX_LEAF_BYTES for page in pages)
        await p.publication.follower.cut_once()
        client = Client(
            endpoint=f"127.0.0.1:{p.publication.port}",
            trust_root=p.trust_root,
            state_dir=tmp_path / "client-state",
            unsafe_plaintext=True,
            config=ClientConfig(max_message_bytes=GRPC_DEFAULT_RECEIVE_BYTES),
        )
        try:
            # The SDK client is synchronous: run it off the loop that serves it.
            report = await asyncio.to_thread(client.recount)
        finally:
            client.close()
        # (publication) every acta leaf and the cut records, recounted page by page
        assert report.tree_size > len(actas)
        assert len(report.cuts) >= 1


POISON_BYTES = 64 * 1024 * 1024


async def test_poison_acta_sent_twice_is_refused_and_the_night_goes_on(tmp_path: Path) -> None:
    casilla = ELECTION.casillas[0].id
    async with _pipeline(tmp_path, ELECTION) as p:
        async with aio_channel(f"127.0.0.1:{p.ingest.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            # Valid figures, and a provenance field nothing bounded (accepted before).
            poison = make_acta(ELECTION, casilla, "PRES", [1, 2, 3], operator="o" * POISON_BYTES)
            for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip) * 2:
                # Above a message's limit: refused by gRPC before it is parsed (or
                # inflated past the limit), naming the limit.
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.SubmitActa(
                        ingest_pb2.SubmitActaRequest(acta=poison), compression=compression
                    )
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Above the acta bound but within a message: INVALID_ARGUMENT naming the limit.
            oversized = make_acta(ELECTION, casilla, "PRES", [1, 2, 3], operator="o" * 2**20)
            for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.SubmitActa(
                        ingest_pb2.SubmitActaRequest(acta=oversized), compression=compression
                    )
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert bad_request_field(info.value) == "acta"
                assert str(bounds.MAX_ACTA_BYTES) in (info.value.details() or "")
            # The night goes on: the next acta is logged, aggregated and published.
            normal = make_acta(ELECTION, casilla, "PRES", [1, 2, 3])
            response = await stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=normal))
            assert response.outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
        await _wait_position(p.agg, 1)
        cut = await p.publication.follower.cut_once()
        assert cut.acta_records == 1
        assert p.publication.engine.acta_records == 1
