"""The JSON view's builder (veritally.publication.view): a cut's signed results decoded
and named, every figure as the SDK's own named views read the same blob, and nothing
named with another election's names."""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.races_support import federal_pb
from tests.view_support import json_race, sdk_race, view_json
from veritally.publication.errors import ViewError
from veritally.publication.view import NATION_NAME, ViewNames, build_view, decimal_e4
from veritally_client._navigate import level_name
from veritally_client._view import ElectionSource, RaceResult, read_race
from veritally_client.protocol import ElectionIndex, Tally
from veritally_client.protocol.pb import acta_pb2, publication_pb2, results_pb2

CUT_TIME = "2026-06-03T04:05:06.789Z"


def _night(*, test: bool = False) -> tuple[ElectionIndex, Tally]:
    """The mini federal night with every acta in: most counted, one not counted."""
    pb = federal_pb()
    pb.test = test
    election = ElectionIndex.from_pb(pb)
    tally = Tally(election)
    rng = random.Random(7)
    for sequence, aid in enumerate(election.acta_ids()):
        casilla_id, contest_id = aid.rsplit("/", 1)
        race = election.race_of(casilla_id, contest_id)
        assert race is not None
        acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
        for option_id in race.option_ids:
            acta.option_votes.add(option_id=option_id, votes=rng.randrange(0, 60))
        acta.null_votes = rng.randrange(0, 5)
        acta.unregistered_votes = rng.randrange(0, 3)
        counted = sequence != 3
        record = acta_pb2.ActaRecord(
            acta_id=aid,
            revision=1,
            acta=acta,
            counted=counted,
            not_counted_reason=(
                acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED
                if counted
                else acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST
            ),
            sequence=sequence,
        )
        tally.apply(record)
    return election, tally


@pytest.fixture(scope="module")
def night() -> tuple[ElectionIndex, Tally]:
    return _night()


def _view(election: ElectionIndex, results: bytes) -> publication_pb2.CutView:
    names = ViewNames(election.definition_bytes)
    return build_view(names=names, results=results, cut_number=12, cut_time=CUT_TIME)


def _sdk_race(
    election: ElectionIndex, results: results_pb2.Results, unit: publication_pb2.UnitView, cid: str
) -> RaceResult:
    names = ElectionSource(index=election).names(results.definition_sha256)
    level = level_name(unit.level)
    where: dict[str, str] = {} if level == "national" else {level: unit.unit_id}
    return read_race(results, names, 12, cid, **where)


def test_every_figure_and_name_is_the_one_the_sdk_reads_from_the_signed_blob(
    night: tuple[ElectionIndex, Tally],
) -> None:
    election, tally = night
    blob = tally.results_bytes()
    results = results_pb2.Results.FromString(blob)
    view = _view(election, blob)
    assert [(u.level, u.unit_id) for u in view.units] == [
        (u.level, u.unit_id) for u in results.units
    ]
    # Compared as the JSON a reader gets: the view printed as the transcoder prints it.
    printed = view_json(view)
    compared = 0
    for unit, unit_json in zip(view.units, printed["units"], strict=True):
        for contest in unit_json["contests"]:
            sdk = _sdk_race(election, results, unit, contest["contest_id"])
            assert unit_json["name"] == sdk.unit.name
            assert json_race(contest) == sdk_race(sdk), (unit.unit_id, contest["contest_id"])
            compared += 1
    # The nation, 2 states and 3 districts, each with the contests held there; the
    # coalition, party and independent candidacies and a not-counted acta all appear.
    assert compared == sum(len(u.contests) for u in results.units) >= 12
    kinds = {c.nominated_by for u in view.units for ct in u.contests for c in ct.candidates}
    assert kinds == {
        publication_pb2.NOMINATION_PARTY,
        publication_pb2.NOMINATION_COALITION,
        publication_pb2.NOMINATION_INDEPENDENT,
    }
    assert any(ct.completeness.not_counted for u in view.units for ct in u.contests)


def test_the_view_carries_the_cut_record_and_the_blobs_flags() -> None:
    election, tally = _night(test=True)
    blob = tally.results_bytes(final=True)
    view = _view(election, blob)
    assert (view.cut_number, view.cut_time) == (12, CUT_TIME)
    assert (view.election_id, view.election_name) == ("mx-mini", "Mini federal")
    assert (view.final, view.test) == (True, True)
    assert view.acta_records == tally.acta_records
    assert view.definition_sha256 == hashlib.sha256(election.definition_bytes).hexdigest()
    assert view.units[0].name == NATION_NAME


def test_shares_are_the_signed_integers_with_four_truncated_decimals() -> None:
    # PREP shows four decimals, truncated; the blob already holds them truncated as
    # percent x 10^4, so the view only places the point.
    assert decimal_e4(931234) == "93.1234"
    assert decimal_e4(1_000_000) == "100.0000"
    assert decimal_e4(5) == "0.0005"
    assert decimal_e4(0) == "0.0000"
    with pytest.raises(ValueError, match="never negative"):
        decimal_e4(-1)


def test_refuses_to_name_results_computed_with_another_definition(
    night: tuple[ElectionIndex, Tally],
) -> None:
    # Names of another election on these figures would be a wrong result that looks
    # right; the digest the blob carries must be the stored definition's.
    _, tally = night
    other = federal_pb()
    other.name = "Another election"
    with pytest.raises(ViewError, match="computed with definition"):
        build_view(
            names=ViewNames(other.SerializeToString()),
            results=tally.results_bytes(),
            cut_number=1,
            cut_time=CUT_TIME,
        )


def test_refuses_a_unit_the_definition_does_not_hold(night: tuple[ElectionIndex, Tally]) -> None:
    election, tally = night
    results = tally.results()
    results.units.add(level=results_pb2.LEVEL_STATE, unit_id="99")
    with pytest.raises(ViewError, match="state '99'"):
        _view(election, results.SerializeToString())


def test_refuses_a_results_blob_that_does_not_parse(night: tuple[ElectionIndex, Tally]) -> None:
    election, _ = night
    with pytest.raises(ViewError, match="does not parse"):
        _view(election, b"\xff\xff\xff")


def test_refuses_a_definition_that_does_not_parse() -> None:
    with pytest.raises(ViewError, match="does not parse"):
        ViewNames(b"\xff\xff\xff")
