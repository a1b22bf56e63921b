"""A federal election night through the real stack: the generated definition holds one
presidential race, 32 senate races and 300 district deputy races, each with its own
candidates and coalitions; every acta goes in through Envoy (double capture), with an
acta outside the catalogue and expected actas recorded missing; a media client verifies
the cut and reads each race through the SDK's named results, and every figure of every
race, candidate, party and unit equals an independent recount written in the tests
(tests/recount.py). An operator then closes the night: the final cut's participation
counts the special casillas' votes, as PREP's rule says. A rehearsal's cut is refused
unless the client allows test data.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from tests.night_support import close_night
from tests.recount import brute_force, share
from veritally.election import load_actas, load_election
from veritally.rpc import TlsFiles
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import ClientConfig, RehearsalCutError, TransportError, VerifiedCut
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import acta_pb2, ingest_pb2, ingest_pb2_grpc, results_pb2

pytestmark = [pytest.mark.e2e]

CASILLAS = 1_000  # every district has a few casillas; ~3,000 actas
SEED = 4
CALL_TIMEOUT_S = 30.0
WAIT_S = 90.0
INTERVAL_S = 0.5
BATCH = 250
CONFIG = ClientConfig(max_checkpoint_age=300.0)
NATIONAL = results_pb2.LEVEL_NATIONAL
STATE = results_pb2.LEVEL_STATE
DISTRICT = results_pb2.LEVEL_DISTRICT
MISSING = acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("federal"))
    Bootstrap(casillas=CASILLAS, seed=SEED).ensure(state)
    with Stack(state, base_port=None, drain_seconds=0.5, interval_s=INTERVAL_S) as running:
        yield running


def _stub(stack: Stack, who: str) -> tuple[grpc.Channel, ingest_pb2_grpc.IngestServiceStub]:
    tls: TlsFiles = stack.tls(who)
    channel = grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials())
    return channel, ingest_pb2_grpc.IngestServiceStub(channel)


def _submit(stack: Stack, who: str, actas: list[acta_pb2.Acta]) -> list[ingest_pb2.ActaOutcome]:
    channel, stub = _stub(stack, who)
    with channel:
        outcomes: list[ingest_pb2.ActaOutcome] = []
        for start in range(0, len(actas), BATCH):
            request = ingest_pb2.SubmitActasRequest(actas=actas[start : start + BATCH])
            response = stub.SubmitActas(iter([request]), timeout=CALL_TIMEOUT_S)
            outcomes += response.outcomes
    return outcomes


def _wait_for(
    stack: Stack, state_dir: Path, done: Callable[[VerifiedCut], bool], **kw: object
) -> VerifiedCut:
    deadline = time.monotonic() + WAIT_S
    config = ClientConfig(max_checkpoint_age=300.0, **kw)  # type: ignore[arg-type]
    with stack.media_client("outlet-01", state_dir=state_dir, config=config) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(TransportError):
                cut = client.latest()
                if done(cut):
                    assert cut.election.election_id  # names fetched (and checked) now
                    return cut
            time.sleep(0.2)
    raise AssertionError("the expected cut did not come")


def _records(
    sent: dict[str, acta_pb2.Acta], outcomes: list[ingest_pb2.ActaOutcome]
) -> list[acta_pb2.ActaRecord]:
    """The log as the test saw it accepted: each logged acta with ingest's verdict."""
    records = []
    for o in sorted(outcomes, key=lambda o: o.sequence):
        if o.status != ingest_pb2.OUTCOME_STATUS_ACCEPTED:
            continue
        record = acta_pb2.ActaRecord(
            acta_id=o.acta_id,
            revision=o.revision,
            counted=o.counted,
            not_counted_reason=o.not_counted_reason,
            sequence=o.sequence,
        )
        record.acta.CopyFrom(sent[o.acta_id])
        records.append(record)
    return records


def _check_race_views(cut: VerifiedCut, index: ElectionIndex, expected: results_pb2.Results) -> int:
    """Every race through the SDK's named views, against the recount. Returns how many."""
    by_unit = {(u.level, u.unit_id): u for u in expected.units}
    checked = 0
    for race in index.races:
        contest = index.contest(race.contest_id)
        if race.level == NATIONAL:
            view = cut.race(contest.id)
            unit = by_unit[(NATIONAL, "")]
        elif race.level == STATE:
            view = cut.race(contest.id, state=race.unit_id)
            unit = by_unit[(STATE, race.unit_id)]
        else:
            view = cut.race(contest.id, district=race.unit_id)
            unit = by_unit[(DISTRICT, race.unit_id)]
        [totals] = [c for c in unit.contests if c.contest_id == contest.id]
        assert view.race_id == race.id == totals.race_id
        total = totals.total_votes
        assert view.total_votes == total
        names = {c.id: c.name for c in race.candidates}
        got = {c.name: (c.votes, c.share) for c in view.candidates}
        want = {
            names[c.candidate_id]: (c.votes, _decimal(share(c.votes, total)))
            for c in totals.candidates
        }
        assert got == want, race.id
        assert len(got) == len(race.candidates) > 0
        assert [(p.id, p.votes) for p in view.parties] == [
            (p.party_id, p.votes) for p in totals.parties
        ]
        c = totals.completeness
        assert view.completeness.expected == c.actas_expected > 0
        assert view.completeness.counted == c.actas_counted
        checked += 1
    return checked


def _decimal(e4: int) -> Decimal:
    return Decimal(e4).scaleb(-4)


def test_federal_night_of_333_races_equals_an_independent_recount_and_closes_final(
    stack: Stack, tmp_path: Path
) -> None:
    election = load_election(stack.state.election_yaml)
    index = election.index
    levels = Counter((r.contest_id, r.level) for r in index.races)
    assert sorted(levels.values()) == [1, 32, 300], levels
    assert len(index.races) == 333
    actas = list(load_actas(election, stack.state.actas_csv))
    assert {a.contest_id for a in actas} == {c.id for c in index.contests}

    # Two expected actas are recorded missing instead of captured; they then never come.
    missing = actas[:2]
    actas = actas[2:]
    outcomes: list[ingest_pb2.ActaOutcome] = []
    sent = {f"{a.casilla_id}/{a.contest_id}": a for a in actas}
    for acta in missing:
        centre = acta.provenance.capture_centre_id
        channel, stub = _stub(stack, f"{centre}/op-1")
        with channel:
            answer = stub.RecordMissingActa(
                ingest_pb2.RecordMissingActaRequest(
                    casilla_id=acta.casilla_id, contest_id=acta.contest_id, reason=MISSING
                ),
                timeout=CALL_TIMEOUT_S,
            )
        assert answer.outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
        outcomes.append(answer.outcome)
        sent[answer.outcome.acta_id] = acta_pb2.Acta(
            casilla_id=acta.casilla_id, contest_id=acta.contest_id
        )
    # An acta of a casilla the catalogue does not hold: logged, published, not counted.
    centres = sorted({a.provenance.capture_centre_id for a in actas})
    stray = acta_pb2.Acta()
    stray.CopyFrom(next(a for a in actas if a.provenance.capture_centre_id == centres[0]))
    stray.casilla_id = "99-9999-B1"
    sent[f"{stray.casilla_id}/{stray.contest_id}"] = stray
    for centre in centres:
        mine = [a for a in actas if a.provenance.capture_centre_id == centre]
        if centre == centres[0]:
            mine.append(stray)
        first = _submit(stack, f"{centre}/op-1", mine)
        waiting = Counter(ingest_pb2.OutcomeStatus.Name(o.status) for o in first)
        assert waiting == {"OUTCOME_STATUS_AWAITING_SECOND_CAPTURE": len(mine)}, waiting
        outcomes += _submit(stack, f"{centre}/op-2", mine)
    statuses = Counter(ingest_pb2.OutcomeStatus.Name(o.status) for o in outcomes)
    assert statuses == {"OUTCOME_STATUS_ACCEPTED": len(actas) + 3}, statuses
    records = _records(sent, outcomes)
    [outside] = [r for r in records if r.acta.casilla_id == stray.casilla_id]
    assert outside.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE

    cut = _wait_for(stack, tmp_path / "a", lambda c: c.acta_records == len(records))
    assert not cut.final
    assert not cut.test
    expected = brute_force(index, records, final=False)
    # The signed results, unit by unit, are the independent recount's.
    assert [(u.level, u.unit_id) for u in cut.results.units] == [
        (u.level, u.unit_id) for u in expected.units
    ]
    for got, want in zip(cut.results.units, expected.units, strict=True):
        assert got == want, (got.level, got.unit_id)
    assert cut.results == expected
    # What a newsroom reads: every race with names, candidates, parties and shares.
    assert _check_race_views(cut, index, expected) == 333
    nation = {c.contest_id: c.completeness for c in expected.units[0].contests}
    assert sum(c.actas_out_of_catalogue for c in nation.values()) == 1
    assert sum(c.actas_registered - c.actas_captured for c in nation.values()) == 2
    assert cut.race("PRES").completeness.out_of_catalogue == nation["PRES"].actas_out_of_catalogue

    # The close: an operator ends the night, and the final cut counts special casillas'
    # votes in participation (numerator only), as PREP does.
    closed = close_night(stack, "ops-01", timeout_s=WAIT_S)
    assert closed.returncode == 0, closed.stderr
    final = _wait_for(stack, tmp_path / "b", lambda c: c.final)
    assert final.acta_records == len(records)
    assert final.results == brute_force(index, records, final=True)
    before = cut.race("PRES").completeness
    after = final.race("PRES").completeness
    assert after.total_votes_with_special > after.total_votes_without_special
    assert before.participation < after.participation
    pres = expected.units[0].contests[0].completeness
    assert after.participation == _decimal(
        share(pres.total_votes_with_special, pres.nominal_list_counted)
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("rehearsal"))
    Bootstrap(casillas=40, seed=SEED, test=True).ensure(state)
    with Stack(state, base_port=None, drain_seconds=0.5, interval_s=INTERVAL_S) as running:
        yield running


def test_rehearsal_cut_is_refused_unless_the_client_allows_test_data(
    rehearsal: Stack, tmp_path: Path
) -> None:
    election = load_election(rehearsal.state.election_yaml)
    assert election.index.is_test
    actas = list(load_actas(election, rehearsal.state.actas_csv))
    for centre in sorted({a.provenance.capture_centre_id for a in actas}):
        mine = [a for a in actas if a.provenance.capture_centre_id == centre]
        _submit(rehearsal, f"{centre}/op-1", mine)
        _submit(rehearsal, f"{centre}/op-2", mine)
    refused: RehearsalCutError | None = None
    deadline = time.monotonic() + WAIT_S
    with rehearsal.media_client("outlet-01", state_dir=tmp_path / "a", config=CONFIG) as client:
        while refused is None and time.monotonic() < deadline:
            try:
                cut = client.latest()
            except TransportError:
                time.sleep(0.2)
            except RehearsalCutError as e:
                refused = e
            else:
                raise AssertionError(f"a rehearsal's cut {cut.cut_number} was taken as real")
    assert refused is not None, "no cut came"
    assert "rehearsal" in str(refused)
    cut = _wait_for(
        rehearsal, tmp_path / "b", lambda c: c.acta_records == len(actas), allow_test=True
    )
    assert cut.test
