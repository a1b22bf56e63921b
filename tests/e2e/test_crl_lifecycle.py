"""The CRL's nextUpdate under a running stack, through a real Envoy.

Envoy enforces nextUpdate: once it has passed, every new TLS handshake is refused
(``ssl.fail_verify_error``), for every party. ``veritally up`` therefore reissues the CRL
on a schedule (:class:`veritally.supervisor.CrlKeeper`); here the schedule is seconds
instead of days (validity 6 s, reissued every 1.5 s) so that a week of election rehearsals
passes in a few seconds.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import grpc
import pytest

from veritally.pki import Pki, crl_next_update
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally.supervisor import CrlSchedule
from veritally_client._gen.veritally.v1 import publication_pb2, publication_pb2_grpc

pytestmark = [pytest.mark.e2e]

CASILLAS = 30
SCHEDULE = CrlSchedule(validity=dt.timedelta(seconds=6), reissue_every=dt.timedelta(seconds=1.5))
CALL_TIMEOUT_S = 5.0
# How long the test keeps connecting while the keeper runs: three CRL lifetimes (s).
OBSERVE_S = 3 * SCHEDULE.validity.total_seconds()
WAIT_S = 15.0  # bounded wait for the keeper or Envoy to react (seconds)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("crl"))
    Bootstrap(casillas=CASILLAS, seed=5).ensure(state)
    # The CRL on disk has already expired when the stack starts.
    Pki.load(state.pki).reissue_crl(validity=dt.timedelta(seconds=1))
    time.sleep(1.2)
    assert crl_next_update(Pki.load(state.pki).crl) < dt.datetime.now(dt.UTC)
    with Stack(
        state, base_port=None, drain_seconds=0.5, interval_s=0.5, crl_schedule=SCHEDULE
    ) as running:
        yield running


def _new_connection_code(stack: Stack, identity: str = "outlet-01") -> grpc.StatusCode:
    """GetLatestCut over a NEW connection (its own subchannel pool), so that the CRL
    Envoy holds now is checked in a fresh handshake."""
    tls = stack.tls(identity)
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials(), options) as ch:
        stub = publication_pb2_grpc.PublicationServiceStub(ch)
        try:
            stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            code: grpc.StatusCode = e.code()
            return code
    return grpc.StatusCode.OK


def _fail_verify_error(stack: Stack) -> int:
    assert stack.envoy is not None
    return stack.envoy.stats("listener.edge.ssl.").get("listener.edge.ssl.fail_verify_error", 0)


def _sds_updates(stack: Stack) -> int:
    assert stack.envoy is not None
    name = "sds.veritally_ca.update_success"
    return stack.envoy.stats(name).get(name, 0)


def test_stack_starts_on_an_expired_crl_by_reissuing_it(stack: Stack) -> None:
    assert stack.crl_keeper is not None
    assert stack.crl_keeper.reissued >= 1
    assert crl_next_update(stack.pki.crl) > dt.datetime.now(dt.UTC)
    assert _new_connection_code(stack) == grpc.StatusCode.OK


def test_crl_is_replaced_before_it_bites_and_new_connections_keep_working(
    stack: Stack,
) -> None:
    assert stack.envoy is not None
    pid, updates = stack.envoy.pid, _sds_updates(stack)
    codes: list[grpc.StatusCode] = []
    end = time.monotonic() + OBSERVE_S
    while time.monotonic() < end:
        codes.append(_new_connection_code(stack))
        time.sleep(0.25)
    assert len(codes) > 10
    assert set(codes) == {grpc.StatusCode.OK}
    # Three lifetimes passed: the CRL Envoy started with would have expired twice over;
    # it was replaced under the running Envoy (same process, reloaded through SDS).
    assert _sds_updates(stack) - updates >= 3
    assert stack.envoy.pid == pid


def test_expired_crl_refuses_every_new_connection_without_reissue(stack: Stack) -> None:
    keeper = stack.crl_keeper
    assert keeper is not None
    keeper.stop()  # what a stack without the keeper does: nothing reissues the CRL
    try:
        next_update = stack.pki.reissue_crl(validity=dt.timedelta(seconds=2))
        while dt.datetime.now(dt.UTC) < next_update + dt.timedelta(seconds=1.5):
            time.sleep(0.1)
        before = _fail_verify_error(stack)
        assert _new_connection_code(stack, "outlet-02") == grpc.StatusCode.UNAVAILABLE
        assert _new_connection_code(stack, "cc-01") == grpc.StatusCode.UNAVAILABLE
        assert _fail_verify_error(stack) > before
    finally:
        keeper.start()
    # The keeper reissues at its next look; new connections work again, no restart.
    deadline = time.monotonic() + WAIT_S
    code = grpc.StatusCode.UNAVAILABLE
    while code != grpc.StatusCode.OK and time.monotonic() < deadline:
        time.sleep(0.25)
        code = _new_connection_code(stack, "outlet-02")
    assert code == grpc.StatusCode.OK
