"""Bad input against the ingest API of a real ``veritally serve ingest`` process.

Random and malformed ``Acta`` messages (unknown casillas and contests, duplicated or
missing options, huge or negative-looking counts, wrong digest lengths, odd marks) and
raw bytes that are not a request at all go to SubmitActa, SubmitActas and CorrectActa
over a real socket. Every bad input must be answered with a documented status
(INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED)
or a REJECTED outcome; the server must never answer UNKNOWN or INTERNAL, never exit, and
never change what it had already accepted: the log read back afterwards starts with the
exact records accepted before, and grew by exactly the ACCEPTED answers.

The long version (many more examples) runs in ``make soak``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.write_path_support import as_caller, authority_operator, capture_operator
from veritally.election import load_actas, load_election
from veritally.election.generate import generate
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

CASILLAS = 40  # ~120 actas: a few states, every contest
# Examples per property: 120 in `make test`; bench.soak sets VERITALLY_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("VERITALLY_FUZZ_EXAMPLES", "120"))
DEADLINE_MS = 5_000  # per example, generous for a loaded 2-core machine
CALL_TIMEOUT_S = 10.0
SERVER_START_S = 60.0
# Statuses a bad input may get. UNAVAILABLE is not among them: it means "retry", and
# a malformed acta is not worth retrying.
BAD_INPUT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
CAPTURE = as_caller(capture_operator("op-1", centre="cc-01"))
OPERATOR = as_caller(authority_operator("ops-01"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


class Server:
    """A ``veritally serve ingest`` child process and a channel to it."""

    def __init__(self, work: Path) -> None:
        # One capture centre, cc-01, is assigned every casilla; the server runs without
        # Envoy in front, so the calls carry the identity Envoy would forward.
        generate(seed=3, casillas=CASILLAS, out_dir=work / "election", capture_centres=1)
        self.election = work / "election" / "election.yaml"
        files = load_election(self.election)
        self.actas = list(load_actas(files, work / "election" / "actas.csv"))
        self.casillas = sorted({a.casilla_id for a in self.actas})
        self.contests = sorted({a.contest_id for a in self.actas})
        self.options = sorted({o.option_id for a in self.actas for o in a.option_votes})
        port_file = work / "port"
        self.log = (work / "ingest.log").open("wb")  # the server's log, for diagnosis
        self.child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "veritally.cli",
                "serve",
                "ingest",
                "--election",
                str(self.election),
                "--db",
                str(work / "ingest.db"),
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
                "--single-capture",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + SERVER_START_S
        while not port_file.exists():
            if self.child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ingest did not start")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}")
        self.stub = ingest_pb2_grpc.IngestServiceStub(self.channel)
        self.accepted = 0  # ACCEPTED answers seen by the tests
        self.before: list[bytes] = []  # the log before any bad input

    def records(self) -> list[bytes]:
        """Every logged leaf, read back through StreamRecords."""
        leaves: list[bytes] = []
        for message in self.stub.StreamRecords(
            ingest_pb2.StreamRecordsRequest(from_sequence=0, follow=False), timeout=30
        ):
            leaves.extend(message.leaves)
        return leaves

    def close(self) -> None:
        self.channel.close()
        self.child.terminate()
        self.child.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("fuzz-ingest"))
    # Accepted data the fuzzing must never touch: the first half of the election.
    half = s.actas[: len(s.actas) // 2]
    response = s.stub.SubmitActas(
        iter([ingest_pb2.SubmitActasRequest(actas=half)]), timeout=CALL_TIMEOUT_S, metadata=CAPTURE
    )
    assert all(o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED for o in response.outcomes)
    s.accepted = len(half)
    s.before = s.records()
    assert len(s.before) == len(half)
    yield s
    s.close()


def _actas(server: Server) -> st.SearchStrategy[acta_pb2.Acta]:
    casilla = st.sampled_from(server.casillas) | st.text(max_size=20)
    contest = st.sampled_from(server.contests) | st.text(max_size=8)
    option = st.sampled_from(server.options) | st.text(max_size=8)
    votes = st.integers(0, 2**32 - 1) | st.integers(0, 400)
    option_votes = st.lists(
        st.builds(
            acta_pb2.OptionVotes,
            option_id=option,
            votes=votes,
            mark=st.sampled_from([*acta_pb2.FieldMark.values(), 99]),
        ),
        max_size=12,
    )
    provenance = st.builds(
        acta_pb2.Provenance,
        capture_centre_id=st.text(max_size=10),
        operator_id=st.text(max_size=10),
    )
    return st.builds(
        acta_pb2.Acta,
        casilla_id=casilla,
        contest_id=contest,
        option_votes=option_votes,
        unregistered_votes=votes,
        null_votes=votes,
        image_sha256=st.binary(max_size=40),
        provenance=provenance,
    )


def _counted(server: Server, outcomes: list[ingest_pb2.ActaOutcome]) -> None:
    for outcome in outcomes:
        assert outcome.status != ingest_pb2.OUTCOME_STATUS_UNSPECIFIED
        if outcome.status == ingest_pb2.OUTCOME_STATUS_REJECTED:
            # A rejection names a documented status code.
            assert grpc.StatusCode[outcome.code] in BAD_INPUT_CODES
        if outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED:
            server.accepted += 1


def _expect_documented_error(error: grpc.RpcError) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() in BAD_INPUT_CODES, (error.code(), error.details())


@SETTINGS
@given(data=st.data())
def test_submit_acta_answers_random_actas_with_documented_statuses(
    server: Server, data: st.DataObject
) -> None:
    acta = data.draw(_actas(server))
    try:
        response = server.stub.SubmitActa(
            ingest_pb2.SubmitActaRequest(acta=acta), timeout=CALL_TIMEOUT_S, metadata=CAPTURE
        )
    except grpc.RpcError as e:
        _expect_documented_error(e)
        return
    _counted(server, [response.outcome])


@SETTINGS
@given(data=st.data())
def test_submit_actas_answers_every_acta_of_a_random_batch(
    server: Server, data: st.DataObject
) -> None:
    batches = data.draw(st.lists(st.lists(_actas(server), max_size=6), min_size=1, max_size=3))
    sent = sum(len(b) for b in batches)
    try:
        response = server.stub.SubmitActas(
            iter([ingest_pb2.SubmitActasRequest(actas=b) for b in batches]),
            timeout=CALL_TIMEOUT_S,
            metadata=CAPTURE,
        )
    except grpc.RpcError as e:
        _expect_documented_error(e)
        return
    assert len(response.outcomes) == sent  # one outcome per acta, in order
    _counted(server, list(response.outcomes))


@SETTINGS
@given(data=st.data())
def test_correct_acta_answers_random_corrections_with_documented_statuses(
    server: Server, data: st.DataObject
) -> None:
    acta = data.draw(_actas(server))
    request = ingest_pb2.CorrectActaRequest(
        acta=acta,
        supersedes_revision=data.draw(st.integers(0, 2**32 - 1)),
        reason=data.draw(st.text(max_size=30)),
    )
    try:
        response = server.stub.CorrectActa(request, timeout=CALL_TIMEOUT_S, metadata=OPERATOR)
    except grpc.RpcError as e:
        _expect_documented_error(e)
        return
    _counted(server, [response.outcome])


def _send_raw(server: Server, raw: bytes) -> grpc.StatusCode:
    """Send ``raw`` as the request of SubmitActa; the status it got (OK included)."""
    method: grpc.UnaryUnaryMultiCallable[bytes, ingest_pb2.SubmitActaResponse] = (
        server.channel.unary_unary(
            "/veritally.v1.IngestService/SubmitActa",
            request_serializer=None,  # the bytes go on the wire as they are
            response_deserializer=ingest_pb2.SubmitActaResponse.FromString,
        )
    )
    try:
        response = method(raw, timeout=CALL_TIMEOUT_S, metadata=CAPTURE)
    except grpc.RpcError as e:
        return e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
    _counted(server, [response.outcome])
    return grpc.StatusCode.OK


def _parses(raw: bytes) -> bool:
    try:
        ingest_pb2.SubmitActaRequest.FromString(raw)
    except DecodeError:
        return False
    return True


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_raw_bytes_get_invalid_argument_or_the_checks_of_a_request(
    server: Server, raw: bytes
) -> None:
    code = _send_raw(server, raw)
    if _parses(raw):
        # Bytes that happen to be a request go through the same checks as above.
        assert code in BAD_INPUT_CODES | {grpc.StatusCode.OK}, code
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, code
    assert server.child.poll() is None


# Uncompressed size of the gzip bombs below, in bytes: the 60 MB an attacker inflated per
# request when ingest accepted 64 MiB messages (~60 KiB on the wire).
BOMB_BYTES = 60 * 1024 * 1024
# Most the server's peak resident memory may grow while refusing one, in bytes: its
# receive limit (~16 MiB, where gRPC stops inflating) plus slack, far below the bomb.
BOMB_RSS_GROWTH = 32 * 1024 * 1024


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def _bomb_channel(server: Server) -> grpc.Channel:
    # The client may send the bomb; the server decides what it takes.
    target = server.channel._channel.target().decode()  # type: ignore[attr-defined]  # grpc keeps its target there
    return grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])


def _bomb() -> acta_pb2.Acta:
    acta = acta_pb2.Acta(casilla_id="bomb", contest_id="bomb")
    acta.image_sha256 = b"\x00" * BOMB_BYTES  # zeros: gzip makes them ~60 KiB
    return acta


def test_gzip_request_inflating_past_the_limit_is_refused_without_allocating_it(
    server: Server,
) -> None:
    before = _memory(server.child.pid)["VmRSS"]
    request = ingest_pb2.SubmitActaRequest(acta=_bomb())
    with _bomb_channel(server) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for _ in range(2):  # sent twice, as by the attacking centre
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitActa(
                    request, timeout=30, compression=grpc.Compression.Gzip, metadata=CAPTURE
                )
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    grown = _memory(server.child.pid)["VmHWM"] - before
    assert grown < BOMB_RSS_GROWTH, f"peak RSS grew {grown} bytes"
    assert server.child.poll() is None


def test_each_message_of_a_submit_actas_stream_is_bounded_after_decompression(
    server: Server,
) -> None:
    before = _memory(server.child.pid)["VmRSS"]
    logged = len(server.records())
    small = ingest_pb2.SubmitActasRequest(actas=[server.actas[-1]])
    bomb = ingest_pb2.SubmitActasRequest(actas=[_bomb()])
    with _bomb_channel(server) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitActas(
                iter([small, bomb]),
                timeout=30,
                compression=grpc.Compression.Gzip,
                metadata=CAPTURE,
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The same stream without compression is refused by the length prefix alone.
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitActas(iter([bomb]), timeout=30, metadata=CAPTURE)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    grown = _memory(server.child.pid)["VmHWM"] - before
    assert grown < BOMB_RSS_GROWTH, f"peak RSS grew {grown} bytes"
    # The night goes on: a normal acta is still answered (ACCEPTED, or DUPLICATE if the
    # random input above happened to be it).
    response = server.stub.SubmitActa(
        ingest_pb2.SubmitActaRequest(acta=server.actas[-2]),
        timeout=CALL_TIMEOUT_S,
        metadata=CAPTURE,
    )
    assert response.outcome.status in (
        ingest_pb2.OUTCOME_STATUS_ACCEPTED,
        ingest_pb2.OUTCOME_STATUS_DUPLICATE,
    )
    # What the stream committed before the bomb, and this acta, count as accepted.
    server.accepted += len(server.records()) - logged


def test_accepted_data_is_unchanged_after_all_the_bad_input(server: Server) -> None:
    # Runs last in this module (pytest keeps file order).
    after = server.records()
    # (no corruption) what was accepted before the fuzzing is still there, byte for
    # byte, and the log grew by exactly the answers that said ACCEPTED.
    assert after[: len(server.before)] == server.before
    assert len(after) == server.accepted
    assert server.child.poll() is None, "the ingest process exited"
