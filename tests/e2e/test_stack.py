"""The whole stack as ``veritally up`` runs it: the three real services as processes, each
with its own SQLite store, behind a real Envoy, on a small synthetic election.

The mesh's own tests (test_mesh.py) check Envoy's rules against in-test fakes; these check
that the real services, wired by ``veritally.stack``, keep them: an acta submitted by a
capture centre at the edge ends up in a cut a media client verifies, strangers and the
wrong roles are refused, one outlet's flood does not starve another, and killed services
come back without a client ever seeing an unverifiable cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import grpc
import pytest

from tests.grpc_support import bad_request_field
from tests.port_support import quiet_base_port
from veritally.demo.media import MediaWatcher
from veritally.demo.replay import CaptureStats, replay
from veritally.election import load_actas, load_election
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.pki import issue_foreign_identity
from veritally.rpc import TlsFiles
from veritally.stack import SERVICES, Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import (
    Client,
    ClientConfig,
    TransportError,
    TrustedRoot,
    VerifiedCut,
)
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    publication_pb2,
    publication_pb2_grpc,
)

pytestmark = [pytest.mark.e2e]

CASILLAS = 300  # ~900 actas: every contest, several states, seconds to replay
CALL_TIMEOUT_S = 10.0
# Small media budget so a flood is quick to provoke: 20 calls at once, 5 a second after.
MEDIA_BUCKET = TokenBucket(burst=20, per_second=5)
# Bounded waits (seconds) for the stack to reach a state; generous for a loaded machine.
WAIT_S = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("stack"))
    Bootstrap(casillas=CASILLAS, seed=7).ensure(state)
    with Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        limits=Limits(media=MEDIA_BUCKET),
    ) as running:
        yield running


def _channel(stack: Stack, tls: TlsFiles | None) -> grpc.Channel:
    if tls is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=stack.pki.ca_cert.read_bytes())
        return grpc.secure_channel(stack.endpoints.edge, credentials)
    return grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials())


def _code(call: object) -> grpc.StatusCode:
    try:
        if callable(call):
            call()
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        return code
    return grpc.StatusCode.OK


def _latest(channel: grpc.Channel) -> object:
    stub = publication_pb2_grpc.PublicationServiceStub(channel)
    return lambda: stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S)


def _submit(channel: grpc.Channel, actas: list[acta_pb2.Acta]) -> ingest_pb2.SubmitActasResponse:
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    response: ingest_pb2.SubmitActasResponse = stub.SubmitActas(
        iter([ingest_pb2.SubmitActasRequest(actas=actas)]), timeout=CALL_TIMEOUT_S
    )
    return response


def _client(stack: Stack, outlet: str, state_dir: Path) -> Client:
    return stack.media_client(
        outlet, state_dir=state_dir, config=ClientConfig(max_checkpoint_age=120.0)
    )


def _ssl_stats(stack: Stack, listener: str) -> dict[str, int]:
    assert stack.envoy is not None
    prefix = f"listener.{listener}.ssl."
    return {k[len(prefix) :]: v for k, v in stack.envoy.stats(prefix).items()}


def _actas(stack: Stack) -> list[acta_pb2.Acta]:
    return list(load_actas(load_election(stack.state.election_yaml), stack.state.actas_csv))


# --------------------------------------------------------------------------------------
# the happy path


def _assigned(stack: Stack, centre: str) -> Iterator[acta_pb2.Acta]:
    """The actas of the casillas assigned to ``centre`` (the actas file names it)."""
    return (a for a in _actas(stack) if a.provenance.capture_centre_id == centre)


def test_capture_centre_submission_reaches_a_verified_cut(stack: Stack, tmp_path: Path) -> None:
    actas = list(islice(_assigned(stack, "cc-01"), 6))
    with _channel(stack, stack.tls("cc-01/op-1")) as channel:
        first = _submit(channel, actas)
    # Double capture: a second operator of the centre, with her own certificate,
    # confirms each acta.
    with _channel(stack, stack.tls("cc-01/op-2")) as channel:
        confirmed = _submit(channel, actas)
    assert {o.status for o in first.outcomes} == {ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE}
    assert {o.status for o in confirmed.outcomes} == {ingest_pb2.OUTCOME_STATUS_ACCEPTED}

    with _client(stack, "outlet-01", tmp_path / "media") as client:
        deadline = time.monotonic() + WAIT_S
        records = 0
        while records < len(actas) and time.monotonic() < deadline:
            # TransportError: no cut made yet (publication cuts every interval).
            with contextlib.suppress(TransportError):
                records = client.latest().acta_records
            time.sleep(0.2)
        assert records >= len(actas)
        acta_id = confirmed.outcomes[0].acta_id
        proven = client.prove_acta(acta_id)
    assert proven.record.acta_id == acta_id
    assert list(proven.record.acta.option_votes) == list(actas[0].option_votes)


# Serialized size of the poison acta, in bytes: what one centre got logged (~65 KiB on
# the wire with gzip) when nothing bounded an acta.
POISON_BYTES = 64 * 1024 * 1024


def test_poison_acta_through_the_edge_is_refused_and_the_night_goes_on(
    stack: Stack, tmp_path: Path
) -> None:
    actas = list(islice(_assigned(stack, "cc-03"), 40, 43))
    poison = acta_pb2.Acta()
    poison.CopyFrom(actas[0])
    poison.provenance.operator_id = "o" * POISON_BYTES  # valid figures, one huge field
    oversized = acta_pb2.Acta()
    oversized.CopyFrom(actas[0])
    oversized.provenance.operator_id = "o" * (1024 * 1024)
    tls = stack.tls("cc-03/op-1")
    # The client sends whatever it is given: the refusals below are the stack's.
    options = [("grpc.max_send_message_length", -1)]
    with grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials(), options) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        for _ in range(2):  # sent twice, as by the attacking centre
            refusals = []
            for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip):
                with pytest.raises(grpc.RpcError) as info:
                    stub.SubmitActa(
                        ingest_pb2.SubmitActaRequest(acta=poison),
                        timeout=WAIT_S,
                        compression=compression,
                    )
                refusals.append(info.value.code())
                assert "Sent message larger" not in (info.value.details() or "")
                # A stream is not buffered by Envoy: ingest's limit per message decides.
                with pytest.raises(grpc.RpcError) as info:
                    stub.SubmitActas(
                        iter([ingest_pb2.SubmitActasRequest(actas=[poison])]),
                        timeout=WAIT_S,
                        compression=compression,
                    )
                refusals.append(info.value.code())
            assert refusals == [
                grpc.StatusCode.RESOURCE_EXHAUSTED,  # Envoy's unary size limit
                grpc.StatusCode.RESOURCE_EXHAUSTED,  # ingest's receive limit
                grpc.StatusCode.UNIMPLEMENTED,  # compression, refused by Envoy
                grpc.StatusCode.UNIMPLEMENTED,
            ]
        # Above the acta bound but within a message: refused by ingest, naming the field.
        [outcome] = _submit(ch, [oversized]).outcomes
        assert (outcome.code, outcome.field) == ("INVALID_ARGUMENT", "acta")
    # The night goes on: the next actas are captured twice (two operators of the
    # casillas' centre), published and verified.
    with _channel(stack, tls) as channel:
        first = _submit(channel, actas)
    with _channel(stack, stack.tls("cc-03/op-2")) as channel:
        confirmed = _submit(channel, actas)
    assert {o.status for o in first.outcomes} == {ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE}
    assert {o.status for o in confirmed.outcomes} == {ingest_pb2.OUTCOME_STATUS_ACCEPTED}
    wanted = max(o.sequence for o in confirmed.outcomes) + 1
    with _client(stack, "outlet-03", tmp_path / "media") as client:
        deadline = time.monotonic() + WAIT_S
        records = 0
        while records < wanted and time.monotonic() < deadline:
            # TransportError: no cut made yet (publication cuts every interval).
            with contextlib.suppress(TransportError):
                records = client.latest().acta_records
            time.sleep(0.2)
        assert records >= wanted
        proven = client.prove_acta(confirmed.outcomes[0].acta_id)
    assert list(proven.record.acta.option_votes) == list(actas[0].option_votes)


# --------------------------------------------------------------------------------------
# operators from their certificates


def _claiming(acta: acta_pb2.Acta, operator: str) -> acta_pb2.Acta:
    copy = acta_pb2.Acta()
    copy.CopyFrom(acta)
    copy.provenance.operator_id = operator
    return copy


def _error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_one_certificate_sending_as_two_operators_cannot_pass_double_capture(
    stack: Stack,
) -> None:
    acta = next(_assigned(stack, "cc-02"))
    claims = [_claiming(acta, name) for name in ("A", "B", "op-1", "\u043ep-1")]
    with _channel(stack, stack.tls("cc-02/op-1")) as channel:
        alone = [_submit(channel, [claim]).outcomes[0].status for claim in claims]
    assert alone[0] == ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE
    assert set(alone[1:3]) == {ingest_pb2.OUTCOME_STATUS_DUPLICATE}
    # The Cyrillic claim is not even an identifier: refused before any stamping.
    assert alone[3] == ingest_pb2.OUTCOME_STATUS_REJECTED
    # Two distinct operators (two certificates) can.
    with _channel(stack, stack.tls("cc-02/op-2")) as channel:
        [second] = _submit(channel, [acta]).outcomes
    assert second.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED


def test_centre_cannot_capture_a_casilla_assigned_to_another_centre(stack: Stack) -> None:
    acta = list(_assigned(stack, "cc-01"))[7]
    with _channel(stack, stack.tls("cc-03/op-1")) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        error = _error(
            lambda: stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), timeout=CALL_TIMEOUT_S)
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert bad_request_field(error) == "casilla_id"  # type: ignore[arg-type]  # an aio-compatible call error
    # Its own centre still captures it (nothing was stored for the other one).
    with _channel(stack, stack.tls("cc-01/op-1")) as channel:
        [outcome] = _submit(channel, [acta]).outcomes
    assert outcome.status == ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE
    with _channel(stack, stack.tls("cc-01/op-2")) as channel:
        [outcome] = _submit(channel, [acta]).outcomes
    assert outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED


def test_one_operators_correction_waits_for_a_second_operator(stack: Stack) -> None:
    acta = list(_assigned(stack, "cc-01"))[8]
    for operator in ("op-1", "op-2"):
        with _channel(stack, stack.tls(f"cc-01/{operator}")) as channel:
            [logged] = _submit(channel, [acta]).outcomes
    assert logged.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
    fixed = acta_pb2.Acta()
    fixed.CopyFrom(acta)
    fixed.null_votes += 1
    request = ingest_pb2.CorrectActaRequest(
        acta=fixed, supersedes_revision=logged.revision, reason="null votes misread"
    )

    def correct(operator: str, req: ingest_pb2.CorrectActaRequest) -> ingest_pb2.ActaOutcome:
        with _channel(stack, stack.tls(operator)) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            response = stub.CorrectActa(req, timeout=CALL_TIMEOUT_S)
        return response.outcome

    empty = ingest_pb2.CorrectActaRequest()
    empty.CopyFrom(request)
    empty.reason = ""
    error = _error(lambda: correct("ops-01", empty))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(error) == "reason"  # type: ignore[arg-type]  # an aio-compatible call error
    for _ in range(2):
        waiting = correct("ops-01", request)
        assert waiting.status == ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_APPROVAL
    applied = correct("ops-02", request)
    assert (applied.status, applied.revision) == (ingest_pb2.OUTCOME_STATUS_ACCEPTED, 2)


# --------------------------------------------------------------------------------------
# who gets in


def test_refuses_client_without_certificate(stack: Stack) -> None:
    before = _ssl_stats(stack, "edge").get("fail_verify_no_cert", 0)
    with _channel(stack, None) as channel:
        assert _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    assert _ssl_stats(stack, "edge")["fail_verify_no_cert"] > before


def test_refuses_certificate_from_another_ca(stack: Stack, tmp_path: Path) -> None:
    foreign = issue_foreign_identity(
        tmp_path, trust_domain=stack.pki.trust_domain, role="capture", name="cc-01"
    )
    before = _ssl_stats(stack, "edge").get("fail_verify_error", 0)
    tls = TlsFiles(cert=foreign.cert, key=foreign.key, ca=stack.pki.ca_cert)
    with _channel(stack, tls) as channel:
        assert _code(lambda: _submit(channel, _actas(stack)[:1])) == grpc.StatusCode.UNAVAILABLE
    assert _ssl_stats(stack, "edge")["fail_verify_error"] > before


def test_refuses_revoked_certificate_without_restarting_envoy(stack: Stack) -> None:
    assert stack.envoy is not None
    pid = stack.envoy.pid
    with _channel(stack, stack.tls("outlet-03")) as channel:
        assert _code(_latest(channel)) == grpc.StatusCode.OK
    stack.pki.revoke("outlet-03")
    code = grpc.StatusCode.OK
    deadline = time.monotonic() + 10.0  # Envoy reloads the CRL on the rename
    while code == grpc.StatusCode.OK and time.monotonic() < deadline:
        with _channel(stack, stack.tls("outlet-03")) as channel:  # a new connection
            code = _code(_latest(channel))
        time.sleep(0.1)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert stack.envoy.pid == pid


def test_media_certificate_calling_ingest_is_permission_denied(stack: Stack) -> None:
    with _channel(stack, stack.tls("outlet-01")) as channel:
        code = _code(lambda: _submit(channel, _actas(stack)[:1]))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_capture_centre_reading_publication_is_permission_denied(stack: Stack) -> None:
    with _channel(stack, stack.tls("cc-01")) as channel:
        assert _code(_latest(channel)) == grpc.StatusCode.PERMISSION_DENIED


def test_flooding_outlet_is_throttled_while_another_outlet_is_served(stack: Stack) -> None:
    flood = 6 * MEDIA_BUCKET.burst

    async def go() -> tuple[list[grpc.StatusCode], list[grpc.StatusCode]]:
        from veritally.rpc import aio_channel

        async def code(stub: publication_pb2_grpc.PublicationServiceStub) -> grpc.StatusCode:
            try:
                await stub.GetLatestCut(  # type: ignore[misc]  # aio call is awaitable
                    publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        edge = stack.endpoints.edge
        async with (
            aio_channel(edge, tls=stack.tls("outlet-02")) as flooder,
            aio_channel(edge, tls=stack.tls("outlet-01")) as polite,
        ):
            flood_stub = publication_pb2_grpc.PublicationServiceStub(flooder)
            polite_stub = publication_pb2_grpc.PublicationServiceStub(polite)
            flooding = asyncio.gather(*(code(flood_stub) for _ in range(flood)))
            polite_codes = []
            for _ in range(MEDIA_BUCKET.burst // 2):
                polite_codes.append(await code(polite_stub))
            return list(await flooding), polite_codes

    codes, polite_codes = asyncio.run(go())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert polite_codes == [grpc.StatusCode.OK] * len(polite_codes)


# --------------------------------------------------------------------------------------
# operations


def _veritally(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "veritally.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_key_rotation_keeps_clients_pinned_to_the_first_trust_root_verifying(
    stack: Stack, tmp_path: Path
) -> None:
    state = stack.state
    old_key = state.publisher_key
    new_key = state.keys / "publisher-2.key"
    origin = Bootstrap.origin(state)
    with _client(stack, "outlet-01", tmp_path / "pinned-v1") as client:
        before = _first_cut(client)
        # The documented procedure (docs/operations.md): a new key, trust root v2 listing
        # old and new keys signed by both, then restart publication.
        _veritally("keys", "generate", "--name", origin, "--out", str(new_key))
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
        _veritally(
            "trust-root", "rotate", "--dir", str(state.trust_root), "--old-key", str(old_key),
            "--key", str(old_key), "--key", str(new_key), "--expires", expires,
        )  # fmt: skip
        assert set(stack.publisher_keys()) == {old_key, new_key}
        stack.restart("publication")
        # The restarted publication signs with both keys; until its first cut, the
        # newest cut is the old process's (one signature). Every cut in between verifies.
        signatures = 0
        cut = before
        deadline = time.monotonic() + WAIT_S
        while signatures != 2 and time.monotonic() < deadline:
            cut = _first_cut(client, newer_than=cut.cut_number)
            signatures = cut.note.split(b"\n\n", 1)[1].count("\u2014 ".encode())
    assert signatures == 2  # signed-note signature lines start with "— "
    chain = sorted(state.trust_root.glob("trust-root-v*.binpb"))
    v2 = TrustedRoot.from_chain([p.read_bytes() for p in chain], now=dt.datetime.now(dt.UTC))
    assert v2.version == 2
    assert len(v2.verifiers) == 2


def _first_cut(client: Client, *, newer_than: int = 0) -> VerifiedCut:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            cut = client.latest()
        except TransportError:  # publication restarting, or no cut yet
            time.sleep(0.2)
            continue
        if cut.cut_number > newer_than:
            return cut
        time.sleep(0.2)
    raise AssertionError(f"no cut after {newer_than} within {WAIT_S} s")


# --------------------------------------------------------------------------------------
# crashes


def _wait_restarted(stack: Stack, name: str, old_pid: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pid = stack.pids().get(name)
        restarted = pid is not None and pid != old_pid
        if restarted and (name == "envoy" or stack.processes[name].healthy()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} was not restarted within {WAIT_S} s")


def test_services_and_envoy_killed_during_the_night_come_back_and_clients_verify_all(
    stack: Stack, tmp_path: Path
) -> None:
    actas = _actas(stack)
    span = actas[-1].provenance.captured_time.seconds - actas[0].provenance.captured_time.seconds
    replay_s = 20.0  # long enough for three kills and restarts while actas flow
    stats = CaptureStats()
    watcher = MediaWatcher(stack, outlet="outlet-01", state_dir=tmp_path / "media")
    watcher.start()
    failure: list[BaseException] = []

    def capture() -> None:
        try:
            asyncio.run(replay(stack, iter(actas), stats, speed=max(span, 1) / replay_s))
        except BaseException as e:  # reported by the test below
            failure.append(e)

    sender = threading.Thread(target=capture)
    sender.start()
    # kill -9, one after the other: the services, then Envoy itself.
    for name in ("publication", "aggregation", "ingest", "envoy"):
        time.sleep(1.0)  # most actas arrive early in the night: kill while they flow
        pid = stack.pids()[name]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _wait_restarted(stack, name, pid)
    sender.join(timeout=WAIT_S * 3)
    assert not sender.is_alive()
    assert failure == []
    assert stats.actas == len(actas)
    watcher.finish(len(stats.logged))
    assert watcher.done.wait(WAIT_S)
    assert watcher.error is None
    assert watcher.latest is not None
    assert watcher.latest.acta_records >= len(stats.logged)
    assert stats.retries > 0  # the kills were felt (and recovered from) by the capture
    assert all(stack.restarts.get(name) for name in (*SERVICES, "envoy"))
    # A full recount from another outlet agrees with every cut that was signed.
    with _client(stack, "outlet-02", tmp_path / "recount") as client:
        client.latest()
        report = client.recount()
    assert report.acta_records >= len(stats.logged)


def test_watchdog_gives_up_on_a_service_that_cannot_start(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    Bootstrap(casillas=20, seed=3).ensure(state)
    with Stack(
        state, base_port=None, drain_seconds=0.2, max_restarts=2, restart_backoff_s=0.1
    ) as small:
        # Publication refuses to start without a trust root that vouches for its key.
        state.trust_root.rename(tmp_path / "trust-root-elsewhere")
        pid = small.pids()["publication"]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while "publication" not in small.failed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "publication" in small.failed
        assert len(small.restarts["publication"]) == 2  # tried twice, then gave up
        assert small.pids()["publication"] is None
        assert small.processes["ingest"].healthy()  # the others keep running


# --------------------------------------------------------------------------------------
# the command


def test_up_command_serves_then_drains_and_stops_every_child_on_sigterm(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    Bootstrap(casillas=50, seed=3).ensure(state)
    # The fixed layout uses base+1..base+23 (see default_topology and METRICS_OFFSETS),
    # placed below the ephemeral range so no client connection can take one of them.
    base = quiet_base_port()
    log = tmp_path / "up.log"
    outlet = TlsFiles(
        cert=state.pki / "media" / "outlet-01.pem",
        key=state.pki / "media" / "outlet-01.key",
        ca=state.pki / "ca" / "ca.pem",
    )
    edge = f"127.0.0.1:{base + 3}"
    argv = [sys.executable, "-m", "veritally.cli", "up", "--state", str(state.root)]
    with (
        log.open("wb") as out,
        subprocess.Popen(
            [*argv, "--base-port", str(base)], stdout=out, stderr=subprocess.STDOUT
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + WAIT_S
            code = grpc.StatusCode.UNAVAILABLE
            while time.monotonic() < deadline and proc.poll() is None:
                with grpc.secure_channel(edge, outlet.channel_credentials()) as channel:
                    code = _code(_latest(channel))
                if code == grpc.StatusCode.OK:
                    break
                time.sleep(0.2)
            assert code == grpc.StatusCode.OK, log.read_text()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    # Nothing it started is left listening: Envoy's listeners and the services' ports.
    for port in (base + 3, base + 4, base + 10, base + 11, base + 12):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
