"""PREP's validation rules (veritally.ingest.rules), one case per rule."""

from __future__ import annotations

import pytest

from tests.races_support import federal_pb
from tests.write_path_support import make_acta, small_election
from veritally.ingest import rules
from veritally.reject import RejectCode, Rejection
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2

ELECTION = small_election()
CATALOGUE = rules.Catalogue.from_index(ELECTION)
ORDINARY = "01-01-0001-B1"  # nominal list 100 + 2 representatives
SPECIAL = "01-01-0001-S1"  # ballot limit 50


def _rejection(acta: acta_pb2.Acta) -> Rejection:
    result = rules.validate(acta, CATALOGUE)
    assert isinstance(result, Rejection), result
    return result


def _verdict(acta: acta_pb2.Acta) -> rules.Verdict:
    result = rules.validate(acta, CATALOGUE)
    assert isinstance(result, rules.Verdict), result
    return result


def test_accepts_and_counts_a_valid_acta() -> None:
    verdict = _verdict(make_acta(ELECTION, ORDINARY, "PRES", [10, 20, 5], null=2))
    assert verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED
    assert verdict.acta_id == f"{ORDINARY}/PRES"
    assert verdict.total_votes == 37
    assert not verdict.flagged


def test_acta_out_of_catalogue_is_accepted_not_counted() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.casilla_id = "99-99-9999-B1"
    verdict = _verdict(acta)
    assert not verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE


def test_acta_out_of_catalogue_with_an_option_of_no_contest_is_refused() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.casilla_id = "99-99-9999-B1"
    acta.option_votes[0].option_id = "NOPE"
    rejection = _rejection(acta)
    assert (rejection.code, rejection.field) == (
        RejectCode.INVALID_ARGUMENT,
        "option_votes[0].option_id",
    )


def test_rejects_empty_casilla_id_as_invalid_argument() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.casilla_id = ""
    assert _rejection(acta).code == RejectCode.INVALID_ARGUMENT


def test_rejects_unknown_contest() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.contest_id = "GOV"
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.NOT_FOUND
    assert rejection.field == "contest_id"


def test_rejects_unknown_option_naming_its_index() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.option_votes[2].option_id = "PZ"
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "option_votes[2].option_id"


def test_rejects_option_of_another_contest() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.option_votes[1].option_id = "PC"  # a SEN option, not a PRES one
    assert _rejection(acta).field == "option_votes[1].option_id"


def test_rejects_duplicate_option() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.option_votes.add(option_id="PA", votes=3)
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "option_votes[3].option_id"


def test_rejects_missing_option() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    del acta.option_votes[1]
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "option_votes"


@pytest.mark.parametrize("length", [0, 31, 33])
def test_rejects_image_digest_that_is_not_sha256(length: int) -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1])
    acta.image_sha256 = b"\x01" * length
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "image_sha256"


def test_rejects_marked_option_with_votes() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 7, 1])
    acta.option_votes[1].mark = acta_pb2.FIELD_MARK_ILLEGIBLE
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "option_votes[1].votes"


def test_rejects_marked_null_figure_with_votes() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 1, 1], null=4)
    acta.null_mark = acta_pb2.FIELD_MARK_BLANK
    assert _rejection(acta).field == "null_votes"


def test_rejects_unknown_mark_value() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [1, 0, 1])
    acta.option_votes[1].mark = 9  # type: ignore[assignment]  # an open enum accepts unknown values
    rejection = _rejection(acta)
    assert rejection.code == RejectCode.INVALID_ARGUMENT
    assert rejection.field == "option_votes[1].mark"


def test_counted_when_total_equals_nominal_list_plus_representatives() -> None:
    assert _verdict(make_acta(ELECTION, ORDINARY, "PRES", [50, 50, 2])).counted


def test_not_counted_when_total_exceeds_nominal_list_plus_representatives() -> None:
    verdict = _verdict(make_acta(ELECTION, ORDINARY, "PRES", [50, 50, 2], null=1))
    assert not verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST


def test_special_casilla_over_its_ballot_limit_is_not_counted_as_exceeding_ballots() -> None:
    # PREP names the two apart: a special casilla has no nominal list to exceed.
    assert _verdict(make_acta(ELECTION, SPECIAL, "SEN", [30, 20])).counted
    verdict = _verdict(make_acta(ELECTION, SPECIAL, "SEN", [30, 20], unregistered=1))
    assert not verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_EXCEEDS_BALLOTS


def test_illegible_field_counts_as_zero_and_is_flagged() -> None:
    acta = make_acta(ELECTION, ORDINARY, "PRES", [10, 0, 5])
    acta.option_votes[1].mark = acta_pb2.FIELD_MARK_ILLEGIBLE
    verdict = _verdict(acta)
    assert verdict.counted
    assert verdict.flagged
    assert verdict.total_votes == 15


def test_blank_field_counts_as_zero_and_is_flagged() -> None:
    acta = make_acta(ELECTION, ORDINARY, "SEN", [10, 5])
    acta.unregistered_mark = acta_pb2.FIELD_MARK_BLANK
    verdict = _verdict(acta)
    assert verdict.counted
    assert verdict.flagged


def _mark_all(acta: acta_pb2.Acta, mark: acta_pb2.FieldMark.ValueType) -> acta_pb2.Acta:
    for ov in acta.option_votes:
        ov.mark = mark
    acta.unregistered_mark = mark
    acta.null_mark = mark
    return acta


def test_not_counted_when_all_fields_illegible() -> None:
    acta = _mark_all(
        make_acta(ELECTION, ORDINARY, "PRES", [0, 0, 0]), acta_pb2.FIELD_MARK_ILLEGIBLE
    )
    verdict = _verdict(acta)
    assert not verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE


def test_not_counted_when_all_fields_blank() -> None:
    acta = _mark_all(make_acta(ELECTION, ORDINARY, "SEN", [0, 0]), acta_pb2.FIELD_MARK_BLANK)
    verdict = _verdict(acta)
    assert not verdict.counted
    assert verdict.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_ALL_BLANK


def test_all_marked_mixing_illegible_and_blank_counts_as_zero() -> None:
    acta = _mark_all(make_acta(ELECTION, ORDINARY, "SEN", [0, 0]), acta_pb2.FIELD_MARK_BLANK)
    acta.null_mark = acta_pb2.FIELD_MARK_ILLEGIBLE
    verdict = _verdict(acta)
    assert verdict.counted
    assert verdict.flagged
    assert verdict.total_votes == 0


def test_content_digest_ignores_provenance_only() -> None:
    a = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3], operator="op-1")
    b = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3], operator="op-2")
    b.provenance.captured_time.seconds = 1_700_000_000
    c = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 4], operator="op-1")
    assert rules.content_digest(a) == rules.content_digest(b)
    assert rules.content_digest(a) != rules.content_digest(c)


def test_first_difference_names_the_field_that_changed() -> None:
    a = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3])
    assert rules.first_difference(a, make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3])) == ""
    assert (
        rules.first_difference(a, make_acta(ELECTION, ORDINARY, "PRES", [1, 9, 3]))
        == "option_votes[1].votes"
    )
    other = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3], null=1)
    assert rules.first_difference(a, other) == "null_votes"
    other = make_acta(ELECTION, ORDINARY, "PRES", [1, 2, 3])
    other.image_sha256 = bytes(32)
    assert rules.first_difference(a, other) == "image_sha256"


# -- races -------------------------------------------------------------------------------

FEDERAL = ElectionIndex.from_pb(federal_pb())
FEDERAL_CATALOGUE = rules.Catalogue.from_index(FEDERAL)


def _federal_acta(casilla_id: str, contest_id: str, option_ids: list[str]) -> acta_pb2.Acta:
    acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id, image_sha256=b"\1" * 32)
    for oid in option_ids:
        acta.option_votes.add(option_id=oid, votes=1)
    return acta


def test_acta_carrying_another_districts_independent_is_refused_naming_the_race() -> None:
    # CI_01 is an option of the contest, but only on DIP-01-01's ballot.
    race = FEDERAL.race("DIP-01-02")
    acta = _federal_acta("01-0002-B", "DIP", [*race.option_ids, "CI_01"])
    result = rules.validate(acta, FEDERAL_CATALOGUE)
    assert isinstance(result, Rejection)
    assert result.code == RejectCode.INVALID_ARGUMENT
    assert result.field == "option_votes[7].option_id"
    assert "DIP-01-02" in result.message


def test_acta_missing_an_option_of_its_race_is_refused() -> None:
    acta = _federal_acta("01-0001-B", "DIP", list(FEDERAL.race("DIP-01-01").option_ids[:-1]))
    result = rules.validate(acta, FEDERAL_CATALOGUE)
    assert isinstance(result, Rejection)
    assert result.field == "option_votes"
    assert "CI_01" in result.message


def test_acta_of_a_contest_the_casilla_type_does_not_receive_is_refused() -> None:
    # Special casillas receive no deputies' acta in this definition.
    acta = _federal_acta("01-0001-S1", "DIP", list(FEDERAL.race("DIP-01-01").option_ids))
    result = rules.validate(acta, FEDERAL_CATALOGUE)
    assert isinstance(result, Rejection)
    assert (result.code, result.field) == (RejectCode.INVALID_ARGUMENT, "contest_id")


def test_acta_of_a_casilla_outside_every_race_of_the_contest_is_refused() -> None:
    acta = _federal_acta("02-0001-B", "DIP", list(FEDERAL.race("DIP-01-02").option_ids))
    result = rules.validate(acta, FEDERAL_CATALOGUE)
    assert isinstance(result, Rejection)
    assert (result.code, result.field) == (RejectCode.INVALID_ARGUMENT, "contest_id")


def test_senate_acta_carries_its_states_ballot() -> None:
    state02 = list(FEDERAL.race("SEN-02").option_ids)
    assert "PAN_PRI" not in state02  # PAN and PRI run apart in state 02
    verdict = rules.validate(_federal_acta("02-0001-B", "SEN", state02), FEDERAL_CATALOGUE)
    assert isinstance(verdict, rules.Verdict)
    assert verdict.counted
    refused = rules.validate(
        _federal_acta("02-0001-B", "SEN", list(FEDERAL.race("SEN-01").option_ids)),
        FEDERAL_CATALOGUE,
    )
    assert isinstance(refused, Rejection)
    assert "SEN-02" in refused.message
