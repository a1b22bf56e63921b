"""The close of the night through the real stack: an operator runs ``veritally close``
through Envoy, ingest accepts nothing more, and publication signs one final cut, over
exactly the records logged at the close, whose turnout counts the special casillas' votes
as PREP's rule says; then it signs nothing more.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.night_support import close_night
from veritally.election import load_actas, load_election
from veritally.rpc import TlsFiles
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import ClientConfig, TransportError, VerifiedCut
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc
from veritally_client._tally import percent_e4

pytestmark = [pytest.mark.e2e]

CASILLAS = 600  # with seed 1: 6 special casillas
CALL_TIMEOUT_S = 10.0
WAIT_S = 60.0
INTERVAL_S = 0.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("final"))
    Bootstrap(casillas=CASILLAS, seed=1).ensure(state)
    with Stack(state, base_port=None, drain_seconds=0.5, interval_s=INTERVAL_S) as running:
        yield running


def _channel(stack: Stack, tls: TlsFiles) -> grpc.Channel:
    return grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials())


def _submit(stack: Stack, who: str, actas: list[acta_pb2.Acta]) -> list[ingest_pb2.ActaOutcome]:
    with _channel(stack, stack.tls(who)) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        response = stub.SubmitActas(
            iter([ingest_pb2.SubmitActasRequest(actas=actas)]), timeout=CALL_TIMEOUT_S
        )
    return list(response.outcomes)


def _close(stack: Stack, who: str) -> subprocess.CompletedProcess[str]:
    return close_night(stack, who, timeout_s=WAIT_S)


def _wait_for(stack: Stack, state_dir: Path, done: object) -> VerifiedCut:
    config = ClientConfig(max_checkpoint_age=120.0)
    deadline = time.monotonic() + WAIT_S
    with stack.media_client("outlet-01", state_dir=state_dir, config=config) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(TransportError):
                cut = client.latest()
                if callable(done) and done(cut):
                    return cut
            time.sleep(0.2)
    raise AssertionError("the expected cut did not come")


def test_operator_closes_the_night_and_the_final_cut_counts_special_casillas_in_turnout(
    stack: Stack, tmp_path: Path
) -> None:
    election = load_election(stack.state.election_yaml)
    index = election.index
    actas = [a for a in load_actas(election, stack.state.actas_csv) if a.contest_id == "PRES"]
    special = [a for a in actas if index.casilla(a.casilla_id).is_special]
    assert special, "the election has special casillas"
    outcomes = []
    for centre in sorted({a.provenance.capture_centre_id for a in actas}):
        mine = [a for a in actas if a.provenance.capture_centre_id == centre]
        _submit(stack, f"{centre}/op-1", mine)
        outcomes += _submit(stack, f"{centre}/op-2", mine)
    counted = {o.acta_id for o in outcomes if o.counted}
    logged = sum(o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED for o in outcomes)
    assert logged == len(actas)

    # An independent recount of the national presidential figures from what was sent.
    nominal = with_special = without_special = 0
    for acta in actas:
        if f"{acta.casilla_id}/{acta.contest_id}" not in counted:
            continue
        votes = sum(o.votes for o in acta.option_votes) + acta.unregistered_votes
        votes += acta.null_votes
        casilla = index.casilla(acta.casilla_id)
        with_special += votes
        if not casilla.is_special:
            nominal += casilla.nominal_list
            without_special += votes
    assert with_special > without_special

    before = _wait_for(stack, tmp_path / "a", lambda c: c.acta_records == logged)
    assert not before.final
    pres = before.national().contests[0].completeness
    assert pres.turnout_percent_e4 == percent_e4(without_special, nominal)

    # Only an operator may close: a capture centre is refused at the edge.
    refused = _close(stack, "cc-01")
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr

    closed = _close(stack, "ops-01")
    assert closed.returncode == 0, closed.stderr
    close = json.loads(closed.stdout)
    assert close["closed_at_records"] == logged
    assert close["closed_by"].endswith("/operator/ops-01")
    again = _close(stack, "ops-02")
    assert json.loads(again.stdout) == close  # idempotent: the first close is kept

    final = _wait_for(stack, tmp_path / "b", lambda c: c.final)
    assert final.acta_records == logged
    completeness = final.national().contests[0].completeness
    assert completeness.turnout_percent_e4 == percent_e4(with_special, nominal)
    assert completeness.total_votes_with_special == with_special
    assert completeness.total_votes_without_special == without_special

    # After the close nothing new is logged, and nothing is signed after the final cut.
    other = next(
        a
        for a in load_actas(election, stack.state.actas_csv)
        if a.provenance.capture_centre_id == "cc-01" and a.contest_id != "PRES"
    )
    [late] = _submit(stack, "cc-01/op-1", [other])
    assert late.status == ingest_pb2.OUTCOME_STATUS_REJECTED
    assert late.code == "FAILED_PRECONDITION"
    assert "closed" in late.message
    time.sleep(6 * INTERVAL_S)
    last = _wait_for(stack, tmp_path / "c", lambda c: True)
    assert last.cut_number == final.cut_number
