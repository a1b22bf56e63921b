"""Conditional reads through the whole stack (docs/adr/0089): an outlet's SDK client
polling the newest cut through Envoy with mTLS gets heartbeat cuts in answers of under
1 KiB without the results, verifies them, and gets the whole cut when the results
change."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bench.loadgen import MeteredTransport, metered_client
from veritally.election import load_actas, load_election
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import Client, ClientConfig, VerifiedCut
from veritally_client._gen.veritally.v1 import ingest_pb2, ingest_pb2_grpc

pytestmark = [pytest.mark.e2e]

CASILLAS = 300
INTERVAL_S = 0.3
WAIT_S = 60.0
CONFIG = ClientConfig(max_checkpoint_age=120.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("conditional"))
    Bootstrap(casillas=CASILLAS, seed=1).ensure(state)
    with Stack(
        state, base_port=None, single_capture=True, drain_seconds=0.5, interval_s=INTERVAL_S
    ) as running:
        yield running


def _poll_until(client: Client, done: Callable[[VerifiedCut], bool]) -> VerifiedCut:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        cut = client.latest()
        if done(cut):
            return cut
        time.sleep(0.05)
    raise AssertionError("the expected cut did not come")


def _submit_some(stack: Stack, count: int) -> None:
    election = load_election(stack.state.election_yaml)
    actas = list(load_actas(election, stack.state.actas_csv))
    centre = actas[0].provenance.capture_centre_id
    mine = [a for a in actas if a.provenance.capture_centre_id == centre][:count]
    tls = stack.tls(f"{centre}/op-1")
    with grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials()) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        answer = stub.SubmitActas(iter([ingest_pb2.SubmitActasRequest(actas=mine)]), timeout=30)
    assert all(o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED for o in answer.outcomes)


def _metered(stack: Stack, state_dir: Path) -> tuple[Client, MeteredTransport]:
    return metered_client(
        stack.endpoints.edge,
        stack.tls("outlet-01"),
        trust_root=stack.state.trust_root_v1,
        state_dir=state_dir,
        config=CONFIG,
    )


def test_polls_of_heartbeat_cuts_move_under_a_kib_and_verify(stack: Stack, tmp_path: Path) -> None:
    client, transport = _metered(stack, tmp_path / "outlet")
    with client:
        first = client.latest()  # the whole cut: nothing held yet
        heartbeat = _poll_until(client, lambda c: c.cut_number >= first.cut_number + 3)
        assert not heartbeat.results_changed
        assert heartbeat.results_bytes == first.results_bytes
        assert heartbeat.acta_records == first.acta_records
        assert transport.unchanged.answers >= 3
        assert transport.changed.answers == 0
        assert transport.unchanged.bytes / transport.unchanged.answers < 1024
        state = client.trusted_state
        assert state is not None
        assert (state.cut_number, state.tree_size) == (heartbeat.cut_number, heartbeat.tree_size)

        _submit_some(stack, 20)
        changed = _poll_until(client, lambda c: c.acta_records > first.acta_records)
        assert changed.results_changed
        assert changed.acta_records == first.acta_records + 20
        assert transport.changed.answers == 1
        assert transport.changed.bytes > len(changed.results_bytes)

        after = _poll_until(client, lambda c: c.cut_number > changed.cut_number)
        assert not after.results_changed
        assert after.results_bytes == changed.results_bytes
