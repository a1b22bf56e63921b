"""Verified results with names: ``cut.race``, ``cut.state``, ``cut.district``, ``cut.nation``.

A small federal-shaped night (tests/races_support.py, with Mexican state and district
names) is served by a fake publisher that signs real cuts; the client verifies them and
the tests read what a newsroom would print: names, votes, shares as exact decimals of
the signed figures, PREP's completeness header, the final and rehearsal flags.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from tests.races_support import federal_pb
from tests.unit.sdk_fake import FakePublisher, write_bundle
from veritally_client import (
    CandidateResult,
    Client,
    ClientConfig,
    DigestMismatchError,
    RaceResult,
    UnitResult,
    UnknownIdError,
    VeritallyError,
    verify_bundle,
)
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2
from veritally_client._verify import VerifiedCut

CONFIG = ClientConfig(max_checkpoint_age=300.0)
EXCEEDS_NOMINAL_LIST = acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST

# What the night's actas carry, per acta id: the race's options in ballot order, then
# unregistered and null votes; or a not-counted reason.
DIP_01_01 = {  # race DIP-01-01: PAN PRI MORENA PT MC PAN_PRI MORENA_PT CI_01
    "PAN": 100,
    "PRI": 50,
    "MORENA": 120,
    "PT": 30,
    "MC": 40,
    "PAN_PRI": 10,
    "MORENA_PT": 20,
    "CI_01": 17,
}
PRES_B = {"PAN": 80, "PRI": 40, "MORENA": 150, "PT": 20, "MC": 60, "PAN_PRI": 5, "MORENA_PT": 9}
PRES_S1 = {"PAN": 10, "PRI": 0, "MORENA": 30, "PT": 0, "MC": 20, "PAN_PRI": 0, "MORENA_PT": 0}
SEN_02 = {"PAN": 90, "PRI": 70, "MORENA": 200, "PT": 25, "MC": 33, "MORENA_PT": 12}


def named_federal_pb() -> election_pb2.ElectionDefinition:
    """tests/races_support.py's election with real names: two states, districts named
    as in Mexico (two of them "Centro", in different states), parties with full names."""
    pb = federal_pb()
    pb.states[0].name = "Ciudad de México"
    pb.states[1].name = "Jalisco"
    pb.districts[0].name = "Benito Juárez"
    pb.districts[1].name = "Centro"
    pb.districts[2].name = "Centro"
    full = {
        "PAN": "Partido Acción Nacional",
        "PRI": "Partido Revolucionario Institucional",
        "MORENA": "Morena",
        "PT": "Partido del Trabajo",
        "MC": "Movimiento Ciudadano",
    }
    for party in pb.parties:
        party.name = full[party.id]
    pb.races[3].name = "Diputación federal, distrito 01-01"
    for contest in pb.contests:
        for option in contest.options:
            option.name = option.id.replace("_", " + ")
    pb.contests[2].options[7].name = "Candidatura independiente"
    return pb


ELECTION = ElectionIndex.from_pb(named_federal_pb())


def _acta(
    aid: str,
    sequence: int,
    votes: dict[str, int] | None,
    unregistered: int = 0,
    null: int = 0,
    reason: acta_pb2.NotCountedReason.ValueType = acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
) -> acta_pb2.ActaRecord:
    casilla_id, _, contest_id = aid.rpartition("/")
    acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id, image_sha256=b"\1" * 32)
    race = ELECTION.race_of(casilla_id, contest_id)
    assert race is not None
    given = votes or {}
    for oid in race.option_ids:
        acta.option_votes.add(option_id=oid, votes=given.get(oid, 0))
    acta.unregistered_votes = unregistered
    acta.null_votes = null
    return acta_pb2.ActaRecord(
        acta_id=aid,
        revision=1,
        acta=acta,
        counted=reason == acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
        not_counted_reason=reason,
        sequence=sequence,
    )


def night(
    election: ElectionIndex = ELECTION, *, final: bool = False, cuts: int = 1
) -> FakePublisher:
    """A publisher over ``election`` with five actas and ``cuts`` cuts of them."""
    pub = FakePublisher(election=election)
    records = [
        ("01-0001-B/DIP", DIP_01_01, 1, 32, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED),
        ("01-0001-C1/DIP", DIP_01_01, 0, 0, EXCEEDS_NOMINAL_LIST),
        ("01-0001-B/PRES", PRES_B, 2, 14, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED),
        ("01-0001-S1/PRES", PRES_S1, 0, 0, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED),
        ("02-0001-B/SEN", SEN_02, 4, 16, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED),
    ]
    for seq, (aid, votes, unregistered, null, reason) in enumerate(records):
        pub._append_record(_acta(aid, seq, votes, unregistered, null, reason))
    for i in range(cuts):
        pub.make_cut(final=final and i == cuts - 1)
    return pub


class CountingPublisher(FakePublisher):
    """A fake publisher that counts how often the election definition is fetched."""

    definition_fetches = 0

    def get_election_definition(self) -> bytes:
        self.definition_fetches += 1
        return super().get_election_definition()


def client_of(pub: FakePublisher, state_dir: Path, config: ClientConfig = CONFIG) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=config, clock=lambda: pub.now
    )


def latest(pub: FakePublisher, state_dir: Path, config: ClientConfig = CONFIG) -> VerifiedCut:
    with client_of(pub, state_dir, config) as client:
        cut = client.latest()
        cut.election  # noqa: B018  (fetched while the client is open)
        return cut


# -- a district race: candidates, parties, options, shares ------------------------------


def test_district_race_shows_candidates_with_names_parties_and_exact_shares(
    tmp_path: Path,
) -> None:
    race = latest(night(), tmp_path).race("DIP", district="01-01")
    assert isinstance(race, RaceResult)
    assert (race.contest_id, race.contest_name, race.race_id) == (
        "DIP",
        "Diputaciones",
        "DIP-01-01",
    )
    assert race.race_name == "Diputación federal, distrito 01-01"
    assert (race.unit.level, race.unit.id, race.unit.name) == ("district", "01-01", "Benito Juárez")
    assert race.total_votes == 420
    rows = [(c.name, c.affiliation, c.nominated_by, c.votes, c.share) for c in race.candidates]
    # 160/420 = 38.095238...%, 170/420 = 40.476190...% (truncated, never rounded up)
    assert rows == [
        ("D1", "PAN-PRI", "coalition", 160, Decimal("38.0952")),
        ("D2", "MORENA-PT", "coalition", 170, Decimal("40.4761")),
        ("D3", "MC", "party", 40, Decimal("9.5238")),
        ("Indie", "independent", "independent", 17, Decimal("4.0476")),
    ]
    d1 = race.candidate("d1")
    assert d1.nominator_id == "FCM"
    assert d1.nominator_name == "Fuerza y Corazón"
    assert d1.party_ids == ("PAN", "PRI")
    assert d1.option_ids == ("PAN", "PRI", "PAN_PRI")
    assert race.candidate("indie") is race.candidates[3]  # by name, any case
    parties = [(p.abbreviation, p.name, p.votes, p.share) for p in race.parties]
    assert parties[0] == ("PAN", "Partido Acción Nacional", 100, Decimal("23.8095"))
    assert [p.id for p in race.parties] == ["PAN", "PRI", "MORENA", "PT", "MC"]
    assert race.party("MC").votes == 40
    options = [(o.id, o.name, o.party_ids, o.votes) for o in race.options]
    assert options[5] == ("PAN_PRI", "PAN + PRI", ("PAN", "PRI"), 10)
    assert options[7] == ("CI_01", "Candidatura independiente", (), 17)
    assert race.option("MORENA_PT").share == Decimal("4.7619")
    assert (race.unregistered_votes, race.unregistered_share) == (1, Decimal("0.2380"))
    assert (race.null_votes, race.null_share) == (32, Decimal("7.6190"))
    assert all(isinstance(c.share, Decimal) for c in race.candidates)


def test_district_race_completeness_is_prep_header(tmp_path: Path) -> None:
    c = latest(night(), tmp_path).race("DIP", district="01-01").completeness
    assert c.expected == 2  # the special casilla receives no deputies' acta
    assert (c.registered, c.captured, c.counted, c.not_counted) == (2, 2, 1, 1)
    assert (c.captured_percent, c.counted_percent) == (Decimal("100.0000"), Decimal("50.0000"))
    assert c.not_counted_by_reason == (("exceeds_nominal_list", 1),)
    assert (c.inconsistent, c.inconsistent_percent) == (1, Decimal("50.0000"))
    assert c.out_of_catalogue == 0
    assert c.nominal_list_counted == 500
    assert (c.total_votes_with_special, c.total_votes_without_special) == (420, 420)
    assert c.participation == Decimal("84.0000")  # 420 / 500


def test_shares_are_the_signed_figures_not_recomputed_from_votes(tmp_path: Path) -> None:
    pub = FakePublisher(election=ELECTION)
    pub._append_record(_acta("01-0001-B/DIP", 0, DIP_01_01, 1, 32))

    def sign_other_share(results: results_pb2.Results) -> None:
        for unit in results.units:
            for contest in unit.contests:
                if contest.race_id == "DIP-01-01":
                    contest.candidates[0].share_percent_e4 = 123456

    pub.make_cut(results_mutator=sign_other_share)
    race = latest(pub, tmp_path).race("DIP", district="01-01")
    assert race.candidate("d1").votes == 160
    assert race.candidate("d1").share == Decimal("12.3456")


# -- races at other levels -------------------------------------------------------------


def test_presidency_nationally_and_in_a_state_special_votes_apart(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    pres = cut.race("PRES")
    assert (pres.unit.level, pres.unit.id, pres.unit.name) == ("national", "", "National")
    assert pres.race_id == "PRES"
    assert [(c.name, c.affiliation, c.votes) for c in pres.candidates] == [
        ("Xóchitl", "PAN-PRI", 135),
        ("Claudia", "MORENA-PT", 209),
        ("Jorge", "MC", 80),
    ]
    assert pres.total_votes == 440
    assert pres.candidate("Xochitl").share == Decimal("30.6818")  # 135/440
    c = pres.completeness
    assert (c.total_votes_with_special, c.total_votes_without_special) == (440, 380)
    assert c.participation == Decimal("76.0000")  # 380 / 500: specials wait for the final
    in_state = cut.race("PRES", state="Ciudad de México")
    assert in_state.race_id == "PRES"
    assert in_state.race_unit is not None
    assert in_state.race_unit.level == "national"
    assert (in_state.unit.id, in_state.unit.name) == ("01", "Ciudad de México")


def test_final_cut_counts_special_casillas_in_participation(tmp_path: Path) -> None:
    cut = latest(night(final=True), tmp_path)
    assert cut.final
    pres = cut.race("PRES")
    assert pres.final
    assert pres.completeness.participation == Decimal("88.0000")  # 440 / 500


def test_senate_race_of_a_state_by_id_and_by_name(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    sen = cut.race("SEN", state="02")
    assert sen == cut.race("SEN", state="jalisco") == cut.race("SEN-02")
    assert (sen.race_id, sen.unit.name) == ("SEN-02", "Jalisco")
    assert [(c.name, c.affiliation, c.votes) for c in sen.candidates] == [
        ("P", "PAN", 90),
        ("R", "PRI", 70),
        ("B2", "MORENA-PT", 237),
        ("M2", "MC", 33),
    ]
    assert sen.total_votes == 450
    assert sen.candidate("B2").share == Decimal("52.6666")  # 237/450, truncated
    assert [o.id for o in sen.options] == ["PAN", "PRI", "MORENA", "PT", "MC", "MORENA_PT"]


def test_contest_held_in_several_races_shows_their_sum_with_parties_no_candidates(
    tmp_path: Path,
) -> None:
    cut = latest(night(), tmp_path)
    senate = cut.race("SEN")
    assert senate.race_id == ""
    assert senate.race_unit is None
    assert senate.race_ids == ("SEN-01", "SEN-02")
    assert senate.candidates == ()
    assert [(p.abbreviation, p.votes) for p in senate.parties][:3] == [
        ("PAN", 90),
        ("PRI", 70),
        ("MORENA", 200),
    ]
    deputies = cut.race("DIP", state="01")
    assert deputies.race_ids == ("DIP-01-01", "DIP-01-02")
    assert deputies.completeness.expected == 3


def test_state_and_district_views_list_every_contest_held(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    state = cut.state("Ciudad de Mexico")
    assert isinstance(state, UnitResult)
    assert (state.unit.level, state.unit.id, state.unit.name) == ("state", "01", "Ciudad de México")
    assert [r.contest_id for r in state.races] == ["PRES", "SEN", "DIP"]
    assert state.race("SEN").race_id == "SEN-01"
    district = cut.district("02-01")
    assert district.unit.name == "Centro"
    assert [r.contest_id for r in district.races] == ["PRES", "SEN"]  # no deputies' race
    nation = cut.nation()
    assert nation.unit.level == "national"
    assert nation.race("DIP").race_ids == ("DIP-01-01", "DIP-01-02")
    assert cut.district("Centro", state="Jalisco").unit.id == "02-01"
    assert cut.district("benito juarez").unit.id == "01-01"


def test_result_objects_are_immutable(tmp_path: Path) -> None:
    race = latest(night(), tmp_path).race("PRES")
    with pytest.raises(dataclasses.FrozenInstanceError):
        race.total_votes = 1  # type: ignore[misc]
    candidate: CandidateResult = race.candidates[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        candidate.votes = 1  # type: ignore[misc]


# -- lookups that fail -------------------------------------------------------------------


def test_unknown_state_lists_the_valid_ids(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    with pytest.raises(UnknownIdError, match=r"no state 'Jalisko'.*'01', '02'") as info:
        cut.state("Jalisko")
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, VeritallyError)
    assert (info.value.kind, info.value.key, info.value.valid) == ("state", "Jalisko", ("01", "02"))


def test_ambiguous_district_name_is_refused_and_lists_both(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    with pytest.raises(UnknownIdError, match="ambiguous") as info:
        cut.district("Centro")
    assert info.value.valid == ("01-02", "02-01")


def test_district_outside_the_given_state_is_refused(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    with pytest.raises(UnknownIdError, match="not in state '02'") as info:
        cut.race("DIP", state="02", district="01-01")
    assert info.value.valid == ("02-01",)


def test_contest_without_a_race_in_the_unit_names_the_contests_held(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    with pytest.raises(UnknownIdError, match="no race in district '02-01'") as info:
        cut.race("DIP", district="02-01")
    assert info.value.valid == ("PRES", "SEN")
    with pytest.raises(UnknownIdError, match="no contest or race 'GOV'") as info:
        cut.race("GOV")
    assert info.value.valid == ("PRES", "SEN", "DIP")
    with pytest.raises(UnknownIdError) as info:
        cut.race("DIP", district="09-05")
    assert info.value.valid == ("01-01", "01-02", "02-01")
    with pytest.raises(UnknownIdError, match="candidate"):
        cut.race("PRES").candidate("nobody")


def test_old_unit_lookup_raises_the_typed_error_and_stays_a_lookup_error(
    tmp_path: Path,
) -> None:
    cut = latest(night(), tmp_path)
    assert cut.unit("state", "01").unit_id == "01"
    with pytest.raises(LookupError):
        cut.unit("state", "9")
    with pytest.raises(UnknownIdError, match=r"no state unit '9'.*'01', '02'") as info:
        cut.unit("state", "9")
    assert info.value.valid == ("01", "02")


# -- where the names come from ------------------------------------------------------------


def test_client_fetches_the_definition_once_and_only_when_names_are_asked(
    tmp_path: Path,
) -> None:
    pub = night(election=ELECTION, cuts=2)
    counting = CountingPublisher(election=ELECTION)
    counting.tree, counting.leaves, counting.cuts = pub.tree, pub.leaves, pub.cuts
    counting.now = pub.now
    with client_of(counting, tmp_path) as client:
        cut = client.latest()
        assert counting.definition_fetches == 0
        assert cut.race("PRES").candidates[0].name == "Xóchitl"
        assert client.cut(1).race("SEN", state="01").race_id == "SEN-01"
        assert client.latest().state("Jalisco").unit.id == "02"
        assert counting.definition_fetches == 1


def test_a_definition_other_than_the_signed_one_is_refused(tmp_path: Path) -> None:
    cut = latest(night(), tmp_path)
    other = named_federal_pb()
    other.states[1].name = "Nayarit"
    with pytest.raises(DigestMismatchError):
        cut.with_election(ElectionIndex.from_pb(other))
    assert cut.with_election(ELECTION).state("02").unit.name == "Jalisco"


def test_cut_made_without_a_definition_says_how_to_attach_one(tmp_path: Path) -> None:
    pub = night()
    with client_of(pub, tmp_path) as client:
        cut = client.latest()
    bare = dataclasses.replace(cut, _election=None)
    with pytest.raises(ValueError, match="with_election"):
        bare.race("PRES")
    assert bare.with_election(ELECTION).race("PRES").total_votes == 440


def test_offline_bundle_cut_reads_names_from_the_bundle(tmp_path: Path) -> None:
    pub = night()
    write_bundle(pub, tmp_path / "bundle")
    report = verify_bundle(
        tmp_path / "bundle",
        trust_root=pub.trust_root(),
        config=dataclasses.replace(CONFIG, max_checkpoint_age=10**9),
    )
    assert report.latest.race("DIP", district="Benito Juárez").candidates[0].name == "D1"


def test_rehearsal_results_are_marked_test(tmp_path: Path) -> None:
    pb = named_federal_pb()
    pb.test = True
    rehearsal = ElectionIndex.from_pb(pb)
    cut = latest(night(rehearsal), tmp_path, dataclasses.replace(CONFIG, allow_test=True))
    race = cut.race("PRES")
    assert race.test
    assert cut.nation().test
    assert not latest(night(), tmp_path / "real").race("PRES").test
