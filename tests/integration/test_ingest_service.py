"""Ingest over real gRPC on 127.0.0.1: outcomes and status codes of every flow
(submit, batch, duplicate, conflict, correction, double capture, cross-check), the log
stream, and persistence across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.grpc_support import bad_request_field
from tests.write_path_support import (
    as_caller,
    authority_operator,
    capture_operator,
    make_acta,
    padded,
    small_election,
    wide_election,
    with_centres,
)
from veritally import bounds
from veritally.bounds import MAX_ACTAS_PER_MESSAGE
from veritally.ingest.app import MAX_RECEIVE_BYTES, IngestService, start_ingest
from veritally.ingest.engine import (
    MAX_CONFLICTS_PER_ACTA,
    MAX_OUT_OF_CATALOGUE_PER_CENTRE,
    MAX_PENDING_CAPTURES,
)
from veritally.ingest.operators import MAX_REASON_CHARS
from veritally.rpc import aio_channel
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
CASILLA = "01-01-0001-B1"
OTHER = "02-02-0002-C2"
Status = ingest_pb2.OutcomeStatus
OPS_1 = as_caller(authority_operator("ops-01"))
OPS_2 = as_caller(authority_operator("ops-02"))


async def _start(tmp_path: Path, *, double: bool) -> IngestService:
    return await start_ingest(
        election=ELECTION,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=double,
    )


@pytest.fixture
async def single(
    tmp_path: Path,
) -> AsyncIterator[tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub]]:
    service = await _start(tmp_path, double=False)
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        yield service, ingest_pb2_grpc.IngestServiceStub(channel)
    await service.stop()


@pytest.fixture
async def double(
    tmp_path: Path,
) -> AsyncIterator[tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub]]:
    service = await _start(tmp_path, double=True)
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        yield service, ingest_pb2_grpc.IngestServiceStub(channel)
    await service.stop()


def _by(acta: acta_pb2.Acta) -> tuple[tuple[str, str], ...]:
    """The call metadata of the capture operator the acta names: each operator of these
    tests holds a certificate of its own (ingest reads the operator from it)."""
    return as_caller(capture_operator(acta.provenance.operator_id or "centre-only"))


async def _submit(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, acta: acta_pb2.Acta
) -> ingest_pb2.ActaOutcome:
    response = await stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), metadata=_by(acta))
    return response.outcome


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]  # a grpc.aio call object is awaitable
    return info.value


async def test_accepts_valid_acta_then_reports_the_identical_one_as_duplicate(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    acta = make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5])
    first = await _submit(stub, acta)
    assert first.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    assert (first.revision, first.sequence, first.counted) == (1, 0, True)
    # Another operator, another time: same figures, still the same acta.
    again = make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5], operator="op-9")
    second = await _submit(stub, again)
    assert second.status == Status.Value("OUTCOME_STATUS_DUPLICATE")
    assert (second.revision, second.sequence) == (1, 0)
    assert service.engine.log_size == 1


async def test_rejects_different_figures_for_a_logged_acta_and_keeps_them_for_audit(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    error = await _error(
        stub.SubmitActa(
            ingest_pb2.SubmitActaRequest(acta=make_acta(ELECTION, CASILLA, "PRES", [10, 20, 6]))
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert bad_request_field(error) == "option_votes[2].votes"
    assert service.engine.log_size == 1
    assert service.engine.store.count("conflicts") == 1


async def test_acta_out_of_catalogue_is_logged_and_not_counted(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    # PREP publishes "actas fuera de catálogo": logged, never counted.
    service, stub = single
    acta = make_acta(ELECTION, CASILLA, "PRES", [1, 1, 1])
    acta.casilla_id = "99-99-9999-B1"
    outcome = await _submit(stub, acta)
    assert outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    assert not outcome.counted
    assert service.engine.log_size == 1


async def test_one_centre_cannot_grow_the_log_with_invented_casillas(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    invented = []
    for i in range(MAX_OUT_OF_CATALOGUE_PER_CENTRE + 5):
        acta = make_acta(ELECTION, CASILLA, "PRES", [1, 1, 1])
        acta.casilla_id = f"99-99-{i:04d}-B1"
        invented.append(acta)
    response = await stub.SubmitActas(
        iter([ingest_pb2.SubmitActasRequest(actas=invented)]), metadata=_by(invented[0])
    )
    codes = [o.code for o in response.outcomes]
    assert codes.count("FAILED_PRECONDITION") == 5
    assert service.engine.log_size == MAX_OUT_OF_CATALOGUE_PER_CENTRE
    # Real casillas of the same centre are still logged, and the bound holds after a
    # restart of the index (it is rebuilt from the store).
    assert (await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [1, 1, 1]))).counted
    service.engine._load()
    error = await _error(
        stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=invented[-1]), metadata=_by(invented[-1]))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bad_request_field(error) == "casilla_id"


async def test_rejects_unknown_option_with_invalid_argument_naming_the_field(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    acta = make_acta(ELECTION, CASILLA, "PRES", [1, 1, 1])
    acta.option_votes[2].option_id = "NOPE"
    error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "option_votes[2].option_id"
    assert service.engine.log_size == 0


async def test_batch_answers_one_outcome_per_acta_in_order(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    good = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
    over = make_acta(ELECTION, OTHER, "SEN", [60, 60])  # above 100 + 2: logged, not counted
    bad = make_acta(ELECTION, CASILLA, "SEN", [1, 2])
    bad.image_sha256 = b"x"
    requests = [
        ingest_pb2.SubmitActasRequest(actas=[good, over]),
        ingest_pb2.SubmitActasRequest(actas=[bad, good]),
    ]
    response = await stub.SubmitActas(iter(requests))
    statuses = [Status.Name(o.status) for o in response.outcomes]
    assert statuses == [
        "OUTCOME_STATUS_ACCEPTED",
        "OUTCOME_STATUS_ACCEPTED",
        "OUTCOME_STATUS_REJECTED",
        "OUTCOME_STATUS_DUPLICATE",
    ]
    assert not response.outcomes[1].counted
    assert (
        response.outcomes[1].not_counted_reason == acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST
    )
    assert (response.outcomes[2].code, response.outcomes[2].field) == (
        "INVALID_ARGUMENT",
        "image_sha256",
    )
    assert [
        o.sequence for o in response.outcomes if o.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    ] == [0, 1]
    assert service.engine.log_size == 2


async def test_correction_appends_a_revision_and_requires_the_latest_one(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    fixed = make_acta(ELECTION, CASILLA, "PRES", [10, 21, 5])
    # Dual control: the first operator's correction waits for a second operator's.
    proposed = await stub.CorrectActa(
        ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason="typo"),
        metadata=OPS_1,
    )
    assert proposed.outcome.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_APPROVAL")
    response = await stub.CorrectActa(
        ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason="typo"),
        metadata=OPS_2,
    )
    assert response.outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    assert (response.outcome.revision, response.outcome.sequence) == (2, 1)
    # A retry of the same correction changes nothing.
    retry = await stub.CorrectActa(
        ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason="typo"),
        metadata=OPS_2,
    )
    assert retry.outcome.status == Status.Value("OUTCOME_STATUS_DUPLICATE")
    # A different change against a stale revision is refused.
    stale = make_acta(ELECTION, CASILLA, "PRES", [10, 22, 5])
    error = await _error(
        stub.CorrectActa(
            ingest_pb2.CorrectActaRequest(acta=stale, supersedes_revision=1, reason="late"),
            metadata=OPS_1,
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bad_request_field(error) == "supersedes_revision"
    # The old figures are now a duplicate of revision 1, not a conflict.
    old = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    assert (Status.Name(old.status), old.revision) == ("OUTCOME_STATUS_DUPLICATE", 1)
    assert service.engine.log_size == 2
    # The proposal and the approved correction.
    assert service.engine.store.count("operator_actions") == 2


async def test_correction_of_an_acta_never_logged_is_not_found(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    _, stub = single
    error = await _error(
        stub.CorrectActa(
            ingest_pb2.CorrectActaRequest(
                acta=make_acta(ELECTION, CASILLA, "PRES", [1, 1, 1]),
                supersedes_revision=1,
                reason="typo",
            ),
            metadata=OPS_1,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_double_capture_accepts_only_when_two_operators_agree(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    first = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="ana"))
    assert first.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_CAPTURE")
    # The same operator again cannot confirm her own capture.
    same = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="ana"))
    assert same.status == Status.Value("OUTCOME_STATUS_DUPLICATE")
    assert service.engine.log_size == 0
    # Nor replace it with other figures.
    error = await _error(
        stub.SubmitActa(
            ingest_pb2.SubmitActaRequest(
                acta=make_acta(ELECTION, CASILLA, "PRES", [3, 4, 6], operator="ana")
            ),
            metadata=as_caller(capture_operator("ana")),
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert bad_request_field(error) == "provenance.operator_id"
    second = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="ben"))
    assert second.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    assert service.engine.log_size == 1
    [(_, _, leaf)] = service.engine.store.leaves_of(f"{CASILLA}/PRES")
    # The confirmed (first) capture is the one logged.
    assert acta_pb2.LogLeaf.FromString(leaf).acta_record.acta.provenance.operator_id == "ana"


async def test_double_capture_requires_an_operator_id(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    _, stub = double
    acta = make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="")
    # A centre's certificate naming no operator (the id is now that of the certificate).
    centre = as_caller("spiffe://veritally.test/capture/centre-1")
    error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), metadata=centre))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bad_request_field(error) == "provenance.operator_id"


async def test_disagreement_goes_to_cross_check_and_a_third_matching_capture_settles_it(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="ana"))
    cross = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 50], operator="ben"))
    assert cross.status == Status.Value("OUTCOME_STATUS_CROSS_CHECK")
    listed = await stub.ListCrossChecks(ingest_pb2.ListCrossChecksRequest())
    assert [c.acta_id for c in listed.cross_checks] == [f"{CASILLA}/PRES"]
    assert [c.provenance.operator_id for c in listed.cross_checks[0].captures] == ["ana", "ben"]
    third = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 50], operator="eva"))
    assert third.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    record = acta_pb2.LogLeaf.FromString(service.engine.store.leaves_of(f"{CASILLA}/PRES")[0][2])
    assert record.acta_record.acta.null_votes == 0
    assert record.acta_record.acta.option_votes[2].votes == 50
    listed = await stub.ListCrossChecks(ingest_pb2.ListCrossChecksRequest())
    assert not listed.cross_checks


async def test_operator_resolves_a_cross_check_by_choosing_a_capture(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 8], operator="ana"))
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 9], operator="ben"))
    error = await _error(
        stub.ResolveCrossCheck(
            ingest_pb2.ResolveCrossCheckRequest(
                acta_id=f"{CASILLA}/SEN", capture_index=2, reason="image checked"
            ),
            metadata=OPS_1,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await _error(
        stub.ResolveCrossCheck(
            ingest_pb2.ResolveCrossCheckRequest(
                acta_id=f"{OTHER}/SEN", capture_index=0, reason="image checked"
            ),
            metadata=OPS_1,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    response = await stub.ResolveCrossCheck(
        ingest_pb2.ResolveCrossCheckRequest(
            acta_id=f"{CASILLA}/SEN", capture_index=1, reason="image checked"
        ),
        metadata=OPS_1,
    )
    assert response.outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    record = acta_pb2.LogLeaf.FromString(service.engine.store.leaves_of(f"{CASILLA}/SEN")[0][2])
    assert record.acta_record.acta.option_votes[1].votes == 9
    # Ana's figures are now a conflict with the logged acta, not a new capture.
    late = await _error(
        stub.SubmitActa(
            ingest_pb2.SubmitActaRequest(
                acta=make_acta(ELECTION, CASILLA, "SEN", [7, 8], operator="ana")
            ),
            metadata=as_caller(capture_operator("ana")),
        )
    )
    assert late.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_pending_captures_and_log_survive_a_restart(tmp_path: Path) -> None:
    service = await _start(tmp_path, double=True)
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3], operator="ana"))
        await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [1, 2], operator="ana"))
        await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [1, 2], operator="ben"))
    await service.stop()
    service = await _start(tmp_path, double=True)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            dup = await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [1, 2], operator="eva"))
            assert dup.status == Status.Value("OUTCOME_STATUS_DUPLICATE")
            ok = await _submit(
                stub, make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3], operator="ben")
            )
            assert (Status.Name(ok.status), ok.sequence) == ("OUTCOME_STATUS_ACCEPTED", 1)
    finally:
        await service.stop()


async def test_records_the_identity_from_the_mesh_header(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    identity = "spiffe://veritally.test/capture/centre-7"
    await stub.SubmitActa(
        ingest_pb2.SubmitActaRequest(acta=make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])),
        metadata=(
            (
                "x-forwarded-client-cert",
                f"By=spiffe://veritally.test/svc/ingest;Hash=ab;URI={identity}",
            ),
        ),
    )
    leaf = service.engine.store.leaves_of(f"{CASILLA}/PRES")[0][2]
    # The centre named by the certificate (its SPIFFE ID's centre segment).
    assert (
        acta_pb2.LogLeaf.FromString(leaf).acta_record.acta.provenance.capture_centre_id
        == "centre-7"
    )


async def test_stream_records_resumes_from_a_position_and_follows_new_commits(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    casillas = [c.id for c in ELECTION.casillas]
    first = [make_acta(ELECTION, cid, "PRES", [1, 1, 1]) for cid in casillas[:5]]
    await stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=first)]))
    stored = [
        leaf
        for _, _, leaf in (service.engine.store.leaves_of(f"{c}/PRES")[0] for c in casillas[:5])
    ]

    received: list[tuple[int, bytes]] = []
    call = stub.StreamRecords(ingest_pb2.StreamRecordsRequest(from_sequence=2, follow=True))

    async def consume() -> None:
        async for page in call:
            received.extend((page.first_sequence + i, leaf) for i, leaf in enumerate(page.leaves))
            if len(received) >= 6:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert [seq for seq, _ in received] == [2, 3, 4]
    more = [make_acta(ELECTION, cid, "SEN", [1, 1]) for cid in casillas[:3]]
    await stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=more)]))
    await asyncio.wait_for(consumer, timeout=10)
    call.cancel()
    assert [seq for seq, _ in received] == [2, 3, 4, 5, 6, 7]
    assert [leaf for _, leaf in received[:3]] == stored[2:5]
    for seq, leaf in received:
        assert acta_pb2.LogLeaf.FromString(leaf).acta_record.sequence == seq
    # Without follow the stream ends at the current end of the log.
    pages = [p async for p in stub.StreamRecords(ingest_pb2.StreamRecordsRequest(from_sequence=7))]
    assert [(p.first_sequence, len(p.leaves)) for p in pages] == [(7, 1)]


async def test_rejects_a_message_with_too_many_actas_without_logging_it(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    acta = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
    request = ingest_pb2.SubmitActasRequest(actas=[acta] * (MAX_ACTAS_PER_MESSAGE + 1))
    error = await _error(stub.SubmitActas(iter([request])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.engine.log_size == 0


async def test_cross_check_queue_pages_by_acta_id(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    _, stub = double
    casillas = sorted(c.id for c in ELECTION.casillas)[:5]
    for cid in casillas:
        await _submit(stub, make_acta(ELECTION, cid, "SEN", [1, 2], operator="ana"))
        await _submit(stub, make_acta(ELECTION, cid, "SEN", [2, 1], operator="ben"))
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListCrossChecks(
            ingest_pb2.ListCrossChecksRequest(page_size=2, page_token=token)
        )
        assert len(page.cross_checks) <= 2
        seen += [c.acta_id for c in page.cross_checks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{cid}/SEN" for cid in casillas]


async def test_follow_stream_tells_the_log_size_before_any_page_and_while_idle(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A follower stuck before a record it cannot receive must still learn how far the log
    # goes: the stream opens with the size, and repeats it while nothing is committed.
    monkeypatch.setattr("veritally.ingest.servicer.STREAM_KEEPALIVE_S", 0.1)
    service, stub = single
    casillas = [c.id for c in ELECTION.casillas]
    first = [make_acta(ELECTION, cid, "PRES", [1, 1, 1]) for cid in casillas[:2]]
    await stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=first)]))
    call = stub.StreamRecords(ingest_pb2.StreamRecordsRequest(from_sequence=0, follow=True))
    messages: list[tuple[int, int, int]] = []

    async def consume() -> None:
        async for m in call:
            messages.append((m.first_sequence, len(m.leaves), m.log_size))
            if m.log_size == 3 and m.leaves:
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    more = [make_acta(ELECTION, casillas[2], "PRES", [2, 2, 2])]
    await stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=more)]))
    await asyncio.wait_for(consumer, timeout=10)
    call.cancel()
    assert messages[:2] == [(0, 0, 2), (0, 2, 2)]
    idle = messages[2:-1]
    # A keep-alive sent between the commit and the page may already tell the new size.
    while idle and idle[-1] == (2, 0, 3):
        idle.pop()
    assert len(idle) >= 2  # about one every 0.1 s during the 0.5 s wait
    assert set(idle) == {(2, 0, 2)}
    assert messages[-1] == (2, 1, 3)
    # Without follow: pages only, each with the size.
    pages = [p async for p in stub.StreamRecords(ingest_pb2.StreamRecordsRequest())]
    assert [(p.first_sequence, len(p.leaves), p.log_size) for p in pages] == [(0, 3, 3)]
    assert service.engine.log_size == 3


# -- identities from authentication (attack: double capture trusted the client) ---------


async def test_one_certificate_sending_as_two_operators_cannot_pass_double_capture(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    mallory = as_caller(capture_operator("op-1"))
    # "op-1", then a Cyrillic "оp-1", then "B": one certificate, three claimed operators.
    for claimed in ("op-1", "\u043ep-1", "B"):
        acta = make_acta(ELECTION, CASILLA, "PRES", [900, 0, 0], operator=claimed)
        call = stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), metadata=mallory)
        if claimed.isascii():
            response = await call
            assert Status.Name(response.outcome.status) in (
                "OUTCOME_STATUS_AWAITING_SECOND_CAPTURE",
                "OUTCOME_STATUS_DUPLICATE",
            )
        else:  # not even an identifier: refused before the certificate's is stamped
            error = await _error(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert bad_request_field(error) == "provenance.operator_id"
    assert service.engine.log_size == 0
    # The honest second operator's figures differ: a cross-check, not ALREADY_EXISTS.
    honest = make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5], operator="op-2")
    outcome = await _submit(stub, honest)
    assert outcome.status == Status.Value("OUTCOME_STATUS_CROSS_CHECK")
    [check] = (await stub.ListCrossChecks(ingest_pb2.ListCrossChecksRequest())).cross_checks
    # The provenance names the certificates' operators, not what the client wrote.
    assert [c.provenance.operator_id for c in check.captures] == ["op-1", "op-2"]
    assert {c.provenance.capture_centre_id for c in check.captures} == {"centre-1"}


async def test_two_distinct_operators_pass_double_capture(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    acta = make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="someone-else")
    for operator in ("op-1", "op-2"):
        response = await stub.SubmitActa(
            ingest_pb2.SubmitActaRequest(acta=acta), metadata=as_caller(capture_operator(operator))
        )
    assert response.outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    [(_, _, leaf)] = service.engine.store.leaves_of(f"{CASILLA}/PRES")
    assert acta_pb2.LogLeaf.FromString(leaf).acta_record.acta.provenance.operator_id == "op-1"


async def test_centre_cannot_capture_a_casilla_assigned_to_another_centre(
    tmp_path: Path,
) -> None:
    assigned = with_centres(ELECTION, lambda cid: "centre-1" if cid == CASILLA else "centre-2")
    service = await start_ingest(
        election=assigned, db_path=tmp_path / "ingest.db", address="127.0.0.1:0"
    )
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            acta = make_acta(assigned, CASILLA, "PRES", [3, 4, 5])
            for operator in ("op-1", "op-2"):
                error = await _error(
                    stub.SubmitActa(
                        ingest_pb2.SubmitActaRequest(acta=acta),
                        metadata=as_caller(capture_operator(operator, centre="centre-2")),
                    )
                )
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                assert bad_request_field(error) == "casilla_id"
            assert service.engine.store.count("captures") == 0
            assert service.engine.log_size == 0
            # Its own centre captures it.
            for operator in ("op-1", "op-2"):
                response = await stub.SubmitActa(
                    ingest_pb2.SubmitActaRequest(acta=acta),
                    metadata=as_caller(capture_operator(operator, centre="centre-1")),
                )
            assert response.outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    finally:
        await service.stop()


async def test_one_operator_alone_cannot_correct_an_acta(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    forged = make_acta(ELECTION, CASILLA, "PRES", [900, 20, 5])
    request = ingest_pb2.CorrectActaRequest(acta=forged, supersedes_revision=1, reason="recount")
    for _ in range(3):
        response = await stub.CorrectActa(request, metadata=OPS_1)
        assert response.outcome.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_APPROVAL")
    assert service.engine.log_size == 1
    # Her retries are one proposal: nothing grows.
    assert service.engine.store.count("pending_corrections") == 1
    assert service.engine.store.count("operator_actions") == 1
    # A second operator approving OTHER figures does not apply the first one's.
    other = ingest_pb2.CorrectActaRequest(
        acta=make_acta(ELECTION, CASILLA, "PRES", [10, 21, 5]), supersedes_revision=1, reason="r"
    )
    response = await stub.CorrectActa(other, metadata=OPS_2)
    assert response.outcome.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_APPROVAL")
    assert service.engine.log_size == 1
    # The same correction from a second operator applies it, reason and both in the log.
    response = await stub.CorrectActa(request, metadata=OPS_2)
    assert (Status.Name(response.outcome.status), response.outcome.revision) == (
        "OUTCOME_STATUS_ACCEPTED",
        2,
    )
    record = acta_pb2.LogLeaf.FromString(service.engine.store.leaves_of(f"{CASILLA}/PRES")[1][2])
    assert record.acta_record.reason == "recount"
    assert list(record.acta_record.approved_by) == [
        authority_operator("ops-01"),
        authority_operator("ops-02"),
    ]
    assert service.engine.store.count("pending_corrections") == 0


async def test_pending_correction_survives_a_restart(tmp_path: Path) -> None:
    service = await _start(tmp_path, double=False)
    fixed = make_acta(ELECTION, CASILLA, "PRES", [10, 21, 5])
    request = ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason="typo")
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
        await stub.CorrectActa(request, metadata=OPS_1)
    await service.stop()
    service = await _start(tmp_path, double=False)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            again = await stub.CorrectActa(request, metadata=OPS_1)
            assert again.outcome.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_APPROVAL")
            approved = await stub.CorrectActa(request, metadata=OPS_2)
            assert approved.outcome.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    finally:
        await service.stop()


@pytest.mark.parametrize("reason", ["", "   ", "x" * (MAX_REASON_CHARS + 1)])
async def test_correction_without_a_reason_is_refused(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub], reason: str
) -> None:
    service, stub = single
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    fixed = make_acta(ELECTION, CASILLA, "PRES", [10, 21, 5])
    request = ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason=reason)
    error = await _error(stub.CorrectActa(request, metadata=OPS_1))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "reason"
    assert service.engine.store.count("pending_corrections") == 0


async def test_resolution_without_a_reason_is_refused(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 8], operator="ana"))
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 9], operator="ben"))
    request = ingest_pb2.ResolveCrossCheckRequest(acta_id=f"{CASILLA}/SEN", capture_index=0)
    error = await _error(stub.ResolveCrossCheck(request, metadata=OPS_1))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "reason"
    assert service.engine.log_size == 0
    request.reason = "image checked"
    await stub.ResolveCrossCheck(request, metadata=OPS_1)
    record = acta_pb2.LogLeaf.FromString(service.engine.store.leaves_of(f"{CASILLA}/SEN")[0][2])
    assert record.acta_record.reason == "image checked"
    assert list(record.acta_record.approved_by) == [authority_operator("ops-01")]


async def test_correction_needs_an_operator_certificate(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    _, stub = single
    await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5]))
    request = ingest_pb2.CorrectActaRequest(
        acta=make_acta(ELECTION, CASILLA, "PRES", [10, 21, 5]), supersedes_revision=1, reason="r"
    )
    for metadata in ((), as_caller(capture_operator("op-1"))):
        error = await _error(stub.CorrectActa(request, metadata=metadata))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


ECHO_LIMIT = 1_000


def _echo_size(error: grpc.aio.AioRpcError) -> int:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    return len(error.details() or "") + len(details)


async def test_rejects_a_50_kb_casilla_id_without_echoing_it_in_the_error(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    for length, field in ((50_000, "acta"), (8_000, "casilla_id")):
        acta = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
        acta.casilla_id = "9" * length
        error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_field(error) == field
        assert _echo_size(error) < ECHO_LIMIT
    assert service.engine.log_size == 0


async def test_rejects_an_acta_above_16_kib_naming_the_limit(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    acta = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
    acta.image_sha256 = b"\x00" * (1024 * 1024)
    error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "acta"
    assert str(bounds.MAX_ACTA_BYTES) in (error.details() or "")
    assert service.engine.log_size == 0


async def test_confusable_operator_id_cannot_stand_for_a_second_operator(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    first = await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="op-1"))
    assert first.status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_CAPTURE")
    twin = make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5], operator="\u043ep-1")  # Cyrillic o
    error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=twin)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "provenance.operator_id"
    assert service.engine.log_size == 0


async def test_rejects_unknown_fields_in_the_request_and_deep_in_the_acta(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    unknown = bytes([15 << 3, 1])  # field 15, a varint: defined nowhere
    raw = ingest_pb2.SubmitActaRequest(
        acta=make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
    ).SerializeToString()
    # Parsed messages keep unknown fields and send them on.
    request = ingest_pb2.SubmitActaRequest.FromString(raw + unknown)
    error = await _error(stub.SubmitActa(request))
    assert (error.code(), bad_request_field(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "request")
    acta = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])
    acta.provenance.MergeFrom(acta_pb2.Provenance.FromString(unknown))
    error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta)))
    assert (error.code(), bad_request_field(error)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "provenance",
    )
    assert service.engine.log_size == 0


async def test_batch_outcomes_reject_out_of_range_timestamps_and_undefined_enums(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    casillas = [c.id for c in ELECTION.casillas]
    actas = [make_acta(ELECTION, cid, "PRES", [1, 2, 3]) for cid in casillas[:4]]
    actas[0].provenance.captured_time.seconds = 2**62
    actas[1].provenance.digitised_time.nanos = -1
    actas[2].provenance.origin = 99  # type: ignore[assignment]  # an open enum accepts it
    response = await stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=actas)]))
    assert [(Status.Name(o.status), o.code, o.field) for o in response.outcomes] == [
        ("OUTCOME_STATUS_REJECTED", "INVALID_ARGUMENT", "provenance.captured_time"),
        ("OUTCOME_STATUS_REJECTED", "INVALID_ARGUMENT", "provenance.digitised_time"),
        ("OUTCOME_STATUS_REJECTED", "INVALID_ARGUMENT", "provenance.origin"),
        ("OUTCOME_STATUS_ACCEPTED", "", ""),
    ]
    assert service.engine.log_size == 1


async def test_operator_calls_reject_unbounded_reasons_and_ids_without_echoing_them(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 8], operator="ana"))
    await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [7, 9], operator="ben"))
    huge = "r" * 100_000
    undefined = make_acta(ELECTION, CASILLA, "SEN", [7, 9])
    undefined.provenance.digitisation = 99  # type: ignore[assignment]  # an open enum accepts it
    calls: list[tuple[object, str]] = [
        (
            stub.CorrectActa(
                ingest_pb2.CorrectActaRequest(acta=undefined, supersedes_revision=1, reason="r"),
                metadata=OPS_1,
            ),
            "provenance.digitisation",
        ),
        (
            stub.CorrectActa(
                ingest_pb2.CorrectActaRequest(
                    acta=make_acta(ELECTION, CASILLA, "SEN", [7, 9]),
                    supersedes_revision=1,
                    reason=huge,
                ),
                metadata=OPS_1,
            ),
            "reason",
        ),
        (
            stub.ResolveCrossCheck(
                ingest_pb2.ResolveCrossCheckRequest(acta_id=f"{CASILLA}/SEN", reason=huge),
                metadata=OPS_1,
            ),
            "reason",
        ),
        (
            stub.ResolveCrossCheck(
                ingest_pb2.ResolveCrossCheckRequest(acta_id=huge), metadata=OPS_1
            ),
            "acta_id",
        ),
        (
            stub.ListCrossChecks(
                ingest_pb2.ListCrossChecksRequest(page_token=huge), metadata=OPS_1
            ),
            "page_token",
        ),
    ]
    for call, field in calls:
        error = await _error(call)
        assert (error.code(), bad_request_field(error)) == (grpc.StatusCode.INVALID_ARGUMENT, field)
        assert _echo_size(error) < ECHO_LIMIT
    assert service.engine.log_size == 0
    assert service.engine.store.count("operator_actions") == 0


async def test_a_fourth_disagreeing_capture_is_refused_and_not_stored(
    double: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = double
    for i, operator in enumerate(["ana", "ben", "eva"][:MAX_PENDING_CAPTURES]):
        outcome = await _submit(
            stub, make_acta(ELECTION, CASILLA, "SEN", [1, 10 + i], operator=operator)
        )
        assert outcome.status in (
            Status.Value("OUTCOME_STATUS_AWAITING_SECOND_CAPTURE"),
            Status.Value("OUTCOME_STATUS_CROSS_CHECK"),
        )
    fourth = make_acta(ELECTION, CASILLA, "SEN", [1, 99], operator="ivo")
    error = await _error(
        stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=fourth), metadata=_by(fourth))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{CASILLA}/SEN" in (error.details() or "")
    assert service.engine.store.count("captures") == MAX_PENDING_CAPTURES
    # A capture agreeing with a pending one still settles the acta.
    agree = await _submit(stub, make_acta(ELECTION, CASILLA, "SEN", [1, 11], operator="ivo"))
    assert agree.status == Status.Value("OUTCOME_STATUS_ACCEPTED")
    assert service.engine.store.count("captures") == 0


async def test_conflicts_beyond_the_cap_are_refused_and_counted_not_stored(
    tmp_path: Path,
) -> None:
    flood = MAX_CONFLICTS_PER_ACTA + 10
    service = await _start(tmp_path, double=False)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await _submit(stub, make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3]))
            for i in range(flood):
                variant = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 4 + i])
                error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=variant)))
                assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert service.engine.store.count("conflicts") == MAX_CONFLICTS_PER_ACTA
    finally:
        await service.stop()
    # The cap holds across a restart (the count is rebuilt from the store).
    service = await _start(tmp_path, double=False)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            variant = make_acta(ELECTION, CASILLA, "PRES", [9, 9, 9])
            error = await _error(stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=variant)))
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        store = service.engine.store
        assert store.count("conflicts") == MAX_CONFLICTS_PER_ACTA
        assert store.dropped_conflicts() == {f"{CASILLA}/PRES": flood - MAX_CONFLICTS_PER_ACTA + 1}
    finally:
        await service.stop()


async def test_a_submit_actas_message_above_the_receive_limit_is_refused_unparsed(
    single: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = single
    ok = ingest_pb2.SubmitActasRequest(actas=[make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3])])
    # One message just over the limit, after an accepted one in the same stream.
    padding = acta_pb2.Acta(image_sha256=b"\x00" * MAX_RECEIVE_BYTES)
    error = await _error(
        stub.SubmitActas(iter([ok, ingest_pb2.SubmitActasRequest(actas=[padding])]))
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.engine.log_size == 1
    # The service goes on.
    more = make_acta(ELECTION, OTHER, "PRES", [1, 2, 3])
    assert (await _submit(stub, more)).status == Status.Value("OUTCOME_STATUS_ACCEPTED")


def test_a_full_message_of_the_largest_actas_fits_the_receive_limit() -> None:
    acta = padded(make_acta(ELECTION, CASILLA, "PRES", [1, 2, 3]), bounds.MAX_ACTA_BYTES)
    request = ingest_pb2.SubmitActasRequest(actas=[acta] * MAX_ACTAS_PER_MESSAGE)
    assert request.ByteSize() <= MAX_RECEIVE_BYTES


async def test_an_acta_pushed_over_the_bound_by_the_stamped_identity_is_refused(
    tmp_path: Path,
) -> None:
    # 233 options of 64-character ids: 16,373 bytes with an empty capture-centre id, and
    # 16,383 with the identity of operator "o" of centre-1 stamped on it, just under the
    # bound; the identity of a centre with a name of the longest allowed length (a valid
    # certificate name) takes it over.
    election = wide_election(options=233, casillas=2)
    service = await start_ingest(
        election=election, db_path=tmp_path / "i.db", address="127.0.0.1:0", double_capture=False
    )
    long_centre = as_caller(capture_operator("o", centre="centre-7".ljust(64, "x")))
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            acta = make_acta(election, election.casillas[0].id, "WIDE", [1] * 233, operator="o")
            acta.provenance.capture_centre_id = ""
            assert bounds.MAX_ACTA_BYTES - 64 < acta.ByteSize() <= bounds.MAX_ACTA_BYTES
            request = ingest_pb2.SubmitActaRequest(acta=acta)
            error = await _error(stub.SubmitActa(request, metadata=long_centre))
            assert (error.code(), bad_request_field(error)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "acta",
            )
            # With a short identity's stamp it fits, and its leaf fits the leaf bound.
            assert (await _submit(stub, acta)).status == Status.Value("OUTCOME_STATUS_ACCEPTED")
        [(_, _, leaf)] = service.engine.store.leaves_of(f"{election.casillas[0].id}/WIDE")
        assert len(leaf) <= bounds.MAX_LEAF_BYTES
    finally:
        await service.stop()


async def test_cross_check_pages_of_near_limit_captures_fit_a_default_client(
    tmp_path: Path,
) -> None:
    # 150 cross-checks of two ~16 KiB captures: ~4.8 MB, more than one 4 MiB message
    # (gRPC's default receive limit, which the client below keeps).
    election = wide_election(options=225, casillas=150)
    service = await start_ingest(
        election=election, db_path=tmp_path / "i.db", address="127.0.0.1:0", double_capture=True
    )
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            for operator, votes in (("ana", 1), ("ben", 2)):
                actas = [
                    make_acta(election, c.id, "WIDE", [votes] * 225, operator=operator)
                    for c in election.casillas
                ]
                response = await stub.SubmitActas(
                    iter([ingest_pb2.SubmitActasRequest(actas=actas)]),
                    metadata=as_caller(capture_operator(operator)),
                )
                assert all(
                    o.status != Status.Value("OUTCOME_STATUS_REJECTED") for o in response.outcomes
                )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as default:
            stub = ingest_pb2_grpc.IngestServiceStub(default)
            seen: list[str] = []
            token = ""
            pages = 0
            while True:
                page = await stub.ListCrossChecks(
                    ingest_pb2.ListCrossChecksRequest(page_size=1_000, page_token=token)
                )
                pages += 1
                seen += [c.acta_id for c in page.cross_checks]
                token = page.next_page_token
                if not token:
                    break
        assert pages > 1
        assert seen == sorted(f"{c.id}/WIDE" for c in election.casillas)
    finally:
        await service.stop()
