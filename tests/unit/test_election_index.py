"""ElectionIndex: a definition that indexes is valid, and lookups answer from it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from veritally_client._election import ElectionIndex, acta_id, parse_acta_id
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import election_pb2

B = election_pb2.CASILLA_TYPE_BASICA
C = election_pb2.CASILLA_TYPE_CONTIGUA
S = election_pb2.CASILLA_TYPE_ESPECIAL


def definition() -> election_pb2.ElectionDefinition:
    pb = election_pb2.ElectionDefinition(id="t-1", name="Test")
    for p in ("A", "B"):
        pb.parties.add(id=p, name=p)
    contest = pb.contests.add(id="PRES", name="President")
    contest.options.add(id="A", party_ids=["A"])
    contest.options.add(id="B", party_ids=["B"])
    contest.options.add(id="A_B", party_ids=["A", "B"])
    pb.contests.add(id="SEN", name="Senate").options.add(id="A", party_ids=["A"])
    pb.states.add(id="01", name="One")
    pb.states.add(id="02", name="Two")
    pb.districts.add(id="01-01", state_id="01")
    pb.districts.add(id="02-01", state_id="02")
    pb.sections.add(id="01-0001", district_id="01-01")
    pb.sections.add(id="02-0001", district_id="02-01")
    pb.casillas.add(id="01-0001-B", section_id="01-0001", type=B, nominal_list=500)
    pb.casillas.add(id="01-0001-C1", section_id="01-0001", type=C, nominal_list=499)
    pb.casillas.add(
        id="02-0001-S1", section_id="02-0001", type=S, ballot_limit=750, party_representatives=4
    )
    return pb


def test_lookups_follow_the_definition() -> None:
    index = ElectionIndex.from_pb(definition())
    assert index.state_ids == ("01", "02")
    assert index.district_ids == ("01-01", "02-01")
    assert index.section_ids == ("01-0001", "02-0001")
    assert index.contest_ids == ("PRES", "SEN")
    assert index.option_ids("PRES") == ("A", "B", "A_B")
    casilla = index.casilla("02-0001-S1")
    assert (casilla.section_id, casilla.district_id, casilla.state_id) == (
        "02-0001",
        "02-01",
        "02",
    )
    assert casilla.is_special
    assert casilla.vote_limit == 750
    assert index.casilla("01-0001-B").vote_limit == 500
    assert index.casillas_in_state("01") == ("01-0001-B", "01-0001-C1")
    assert index.casillas_in_district("02-01") == ("02-0001-S1",)
    assert index.casillas_in_section("01-0001") == ("01-0001-B", "01-0001-C1")
    assert index.district_state("02-01") == "02"
    assert index.section_district("01-0001") == "01-01"
    assert index.actas_expected("SEN") == 3
    assert index.actas_expected() == 6
    assert len(list(index.acta_ids())) == 6


def test_hash_is_over_exactly_the_bytes_given() -> None:
    data = definition().SerializeToString(deterministic=True)
    index = ElectionIndex.from_bytes(data)
    assert index.definition_bytes == data
    assert index.definition_sha256 == hashlib.sha256(data).digest()
    assert ElectionIndex.from_pb(definition()).definition_sha256 == index.definition_sha256


def test_from_pb_is_not_affected_by_later_changes_to_the_message() -> None:
    pb = definition()
    index = ElectionIndex.from_pb(pb)
    pb.casillas[0].nominal_list = 1
    assert index.casilla("01-0001-B").nominal_list == 500


def test_rejects_bytes_that_do_not_parse() -> None:
    with pytest.raises(MalformedDataError):
        ElectionIndex.from_bytes(b"\x0a\xff")


@pytest.mark.parametrize(
    ("unit", "call"),
    [
        ("casilla", lambda i: i.casilla("x")),
        ("contest", lambda i: i.contest("x")),
        ("state", lambda i: i.casillas_in_state("x")),
        ("district", lambda i: i.casillas_in_district("x")),
        ("section", lambda i: i.casillas_in_section("x")),
        ("district state", lambda i: i.district_state("x")),
        ("section district", lambda i: i.section_district("x")),
    ],
)
def test_unknown_lookups_raise_lookup_error(
    unit: str, call: Callable[[ElectionIndex], object]
) -> None:
    with pytest.raises(LookupError):
        call(ElectionIndex.from_pb(definition()))


def test_acta_id_round_trips() -> None:
    assert acta_id("01-0001-B", "PRES") == "01-0001-B/PRES"
    assert parse_acta_id("01-0001-B/PRES") == ("01-0001-B", "PRES")
    assert parse_acta_id("a/b/PRES") == ("a/b", "PRES")


@pytest.mark.parametrize("value", ["", "PRES", "/PRES", "01-0001-B/"])
def test_parse_acta_id_rejects_malformed_ids(value: str) -> None:
    with pytest.raises(MalformedDataError):
        parse_acta_id(value)


def test_resolve_acta_id_rejects_unknown_casilla_and_contest() -> None:
    index = ElectionIndex.from_pb(definition())
    assert index.resolve_acta_id("01-0001-B/SEN")[1].id == "SEN"
    with pytest.raises(MalformedDataError):
        index.resolve_acta_id("nope/SEN")
    with pytest.raises(MalformedDataError):
        index.resolve_acta_id("01-0001-B/GOV")


Mutation = Callable[[election_pb2.ElectionDefinition], object]


def _set(obj: object, field: str, value: object) -> None:
    setattr(obj, field, value)


INVALID: dict[str, Mutation] = {
    "empty_election_id": lambda pb: _set(pb, "id", ""),
    "duplicate_party": lambda pb: pb.parties.add(id="A"),
    "empty_party_id": lambda pb: pb.parties.add(id=""),
    "duplicate_contest": lambda pb: pb.contests.add(id="PRES").options.add(id="A", party_ids=["A"]),
    "contest_id_with_separator": lambda pb: _set(pb.contests[1], "id", "SEN/1"),
    "empty_contest": lambda pb: pb.contests.add(id="GOV"),
    "duplicate_option": lambda pb: pb.contests[0].options.add(id="A", party_ids=["A"]),
    "option_without_parties": lambda pb: pb.contests[0].options.add(id="Z"),
    "option_unknown_party": lambda pb: pb.contests[0].options.add(id="Z", party_ids=["Z"]),
    "duplicate_state": lambda pb: pb.states.add(id="01"),
    "duplicate_district": lambda pb: pb.districts.add(id="01-01", state_id="01"),
    "district_unknown_state": lambda pb: pb.districts.add(id="03-01", state_id="03"),
    "duplicate_section": lambda pb: pb.sections.add(id="01-0001", district_id="01-01"),
    "section_unknown_district": lambda pb: pb.sections.add(id="x", district_id="09-09"),
    "duplicate_casilla": lambda pb: pb.casillas.add(
        id="01-0001-B", section_id="01-0001", type=B, nominal_list=1
    ),
    "empty_casilla_id": lambda pb: pb.casillas.add(
        id="", section_id="01-0001", type=B, nominal_list=1
    ),
    "casilla_unknown_section": lambda pb: pb.casillas.add(
        id="z", section_id="09-0001", type=B, nominal_list=1
    ),
    "casilla_type_unspecified": lambda pb: pb.casillas.add(
        id="z", section_id="01-0001", nominal_list=1
    ),
    "special_with_nominal_list": lambda pb: pb.casillas.add(
        id="z", section_id="01-0001", type=S, nominal_list=10, ballot_limit=750
    ),
    "special_without_ballot_limit": lambda pb: pb.casillas.add(
        id="z", section_id="01-0001", type=S
    ),
    "basic_without_nominal_list": lambda pb: pb.casillas.add(id="z", section_id="01-0001", type=B),
}


@pytest.mark.parametrize("mutation", INVALID.values(), ids=list(INVALID))
def test_rejects_invalid_definition(mutation: Mutation) -> None:
    pb = definition()
    mutation(pb)
    with pytest.raises(MalformedDataError):
        ElectionIndex.from_pb(pb)
    with pytest.raises(MalformedDataError):
        ElectionIndex.from_bytes(pb.SerializeToString())
