"""An independent recount for tests: PREP's figures from the definition and the records,
written the plain way (no incremental state, no layouts), to hold the tally to.

It reads the definition message itself (not the index's race tables) wherever it can:
which races a unit holds, which casilla votes in which race, whose votes an option is.
"""

from __future__ import annotations

from collections.abc import Sequence

from veritally_client._election import ElectionIndex, acta_id
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2

__all__ = ["brute_force", "brute_force_unit", "share"]

NATIONAL = results_pb2.LEVEL_NATIONAL
STATE = results_pb2.LEVEL_STATE
DISTRICT = results_pb2.LEVEL_DISTRICT
SECTION = results_pb2.LEVEL_SECTION
CASILLA = results_pb2.LEVEL_CASILLA
DEPTH: dict[int, int] = {NATIONAL: 0, STATE: 1, DISTRICT: 2, SECTION: 3, CASILLA: 4}
MISSING = {
    acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
    acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
    acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE,
    acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
}
OUTSIDE = acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE
# (race id, level, unit id, option ids)
Race = tuple[str, int, str, list[str]]


def share(votes: int, total: int) -> int:
    """Percent x 10^4, truncated."""
    return votes * 1_000_000 // total if total else 0


def _races(pb: election_pb2.ElectionDefinition, contest: election_pb2.Contest) -> list[Race]:
    """(race id, level, unit id, option ids) of a contest, as the definition says."""
    all_options = [o.id for o in contest.options]
    listed = [r for r in pb.races if r.contest_id == contest.id]
    if not listed:
        return [(contest.id, NATIONAL, "", all_options)]
    level = contest.scope or NATIONAL
    return [(r.id, level, r.unit_id, list(r.option_ids) or all_options) for r in listed]


def _unit_chain(election: ElectionIndex, level: int, unit_id: str) -> dict[int, str]:
    """The units containing a unit, by level (its own included)."""
    if level == NATIONAL:
        return {NATIONAL: ""}
    if level == STATE:
        return {NATIONAL: "", STATE: unit_id}
    if level == DISTRICT:
        district = unit_id
    elif level == SECTION:
        district = election.section_district(unit_id)
    else:
        district = election.casilla(unit_id).district_id
    chain: dict[int, str] = {
        NATIONAL: "",
        STATE: election.district_state(district),
        DISTRICT: district,
    }
    if level in (SECTION, CASILLA):
        chain[level] = unit_id
    return chain


def _receives(pb: election_pb2.ElectionDefinition, ctype: int, contest_id: str) -> bool:
    for entry in pb.ballots:
        if entry.type == ctype:
            return contest_id in entry.contest_ids
    return True


def _race_of(election: ElectionIndex, races: list[Race], cid: str, contest_id: str) -> Race | None:
    """The race a casilla votes in, if its type receives the contest."""
    casilla = election.casilla(cid)
    if not _receives(election.pb, casilla.type, contest_id):
        return None
    units: dict[int, str] = {NATIONAL: "", STATE: casilla.state_id, DISTRICT: casilla.district_id}
    for race in races:
        if units[race[1]] == race[2]:
            return race
    return None


def brute_force_unit(
    election: ElectionIndex,
    records: Sequence[acta_pb2.ActaRecord],
    casilla_ids: Sequence[str],
    level: results_pb2.Level.ValueType,
    unit_id: str,
    *,
    final: bool,
) -> results_pb2.UnitResults:
    """Recount one unit from scratch: the last revision of each acta, summed."""
    pb = election.pb
    latest: dict[str, acta_pb2.ActaRecord] = {}
    for r in records:
        latest[r.acta_id] = r
    chain = _unit_chain(election, level, unit_id)
    unit = results_pb2.UnitResults(level=level, unit_id=unit_id)
    for contest in pb.contests:
        races = _races(pb, contest)
        mine = []
        for race in races:
            _, race_level, race_unit, _ = race
            if DEPTH[level] >= DEPTH[race_level]:
                inside = chain.get(race_level) == race_unit
            elif race_level == STATE:
                inside = level == NATIONAL
            else:  # a district race, within a state or the nation
                inside = level == NATIONAL or election.district_state(race_unit) == unit_id
            if inside:
                mine.append(race)
        if not mine:
            continue
        single = mine[0] if len(mine) == 1 and DEPTH[level] >= DEPTH[mine[0][1]] else None
        listed = {o for race in mine for o in race[3]}
        options = [o.id for o in contest.options if o.id in listed]

        votes = dict.fromkeys(options, 0)
        unregistered = null = 0
        expected = registered = captured = counted = inconsistent = 0
        nominal = with_special = without_special = 0
        reasons: dict[int, int] = {}
        for cid in casilla_ids:
            if _race_of(election, races, cid, contest.id) is None:
                continue
            expected += 1
            found = latest.get(acta_id(cid, contest.id))
            if found is None:
                continue
            r = found
            registered += 1
            if r.not_counted_reason in MISSING:
                reasons[r.not_counted_reason] = reasons.get(r.not_counted_reason, 0) + 1
                continue
            captured += 1
            if not r.counted:
                inconsistent += 1
                reasons[r.not_counted_reason] = reasons.get(r.not_counted_reason, 0) + 1
                continue
            counted += 1
            a = r.acta
            figures = [ov.votes for ov in a.option_votes] + [a.unregistered_votes, a.null_votes]
            marks = [ov.mark for ov in a.option_votes] + [a.unregistered_mark, a.null_mark]
            written = (
                a.counts.total_votes_written if a.counts.HasField("total_votes_written") else None
            )
            if any(marks) or (written is not None and written != sum(figures)):
                inconsistent += 1
            for ov in a.option_votes:
                votes[ov.option_id] += ov.votes
            unregistered += a.unregistered_votes
            null += a.null_votes
            if election.casilla(cid).is_special:
                with_special += sum(figures)
            else:
                nominal += election.casilla(cid).nominal_list
                with_special += sum(figures)
                without_special += sum(figures)
        outside = 0
        if level == NATIONAL:
            outside = sum(
                1
                for r in latest.values()
                if r.not_counted_reason == OUTSIDE and r.acta.contest_id == contest.id
            )
        total = sum(votes.values()) + unregistered + null
        ct = unit.contests.add(
            contest_id=contest.id,
            unregistered_votes=unregistered,
            null_votes=null,
            total_votes=total,
            race_id=single[0] if single else "",
            unregistered_share_percent_e4=share(unregistered, total),
            null_share_percent_e4=share(null, total),
        )
        for oid in options:
            ct.options.add(
                option_id=oid, votes=votes[oid], share_percent_e4=share(votes[oid], total)
            )
        if single is not None:
            race_pb = next((r for r in pb.races if r.id == single[0]), None)
            parties_of = {o.id: set(o.party_ids) for o in contest.options}
            coalitions = {c.id: set(c.party_ids) for c in pb.coalitions}
            for candidate in race_pb.candidates if race_pb is not None else ():
                kind = candidate.WhichOneof("nominated_by")
                if kind == "party_id":
                    theirs = [o for o in options if parties_of[o] == {candidate.party_id}]
                elif kind == "coalition_id":
                    members = coalitions[candidate.coalition_id]
                    theirs = [o for o in options if parties_of[o] and parties_of[o] <= members]
                else:
                    theirs = [candidate.independent_option_id]
                n = sum(votes[o] for o in theirs)
                ct.candidates.add(
                    candidate_id=candidate.id, votes=n, share_percent_e4=share(n, total)
                )
        for party in pb.parties:
            own = [
                o.id for o in contest.options if list(o.party_ids) == [party.id] and o.id in votes
            ]
            if own:
                n = votes[own[0]]
                ct.parties.add(party_id=party.id, votes=n, share_percent_e4=share(n, total))
        c = ct.completeness
        c.actas_expected = expected
        c.actas_registered = registered
        c.actas_captured = captured
        c.actas_counted = counted
        c.actas_not_counted = registered - counted
        c.actas_out_of_catalogue = outside
        for reason in sorted(reasons):
            c.not_counted.add(reason=reason, actas=reasons[reason])
        c.captured_percent_e4 = share(captured, expected)
        c.counted_percent_e4 = share(counted, expected)
        c.actas_inconsistent = inconsistent
        c.inconsistent_percent_e4 = share(inconsistent, expected)
        c.nominal_list_counted = nominal
        c.turnout_percent_e4 = share(with_special if final else without_special, nominal)
        c.total_votes_with_special = with_special
        c.total_votes_without_special = without_special
    return unit


def brute_force(
    election: ElectionIndex, records: Sequence[acta_pb2.ActaRecord], *, final: bool
) -> results_pb2.Results:
    """The whole results blob, recounted unit by unit."""
    res = results_pb2.Results(
        election_id=election.election_id,
        definition_sha256=election.definition_sha256,
        acta_records=len(records),
        final=final,
        test=election.pb.test,
    )
    every = [c.id for c in election.casillas]
    res.units.append(brute_force_unit(election, records, every, NATIONAL, "", final=final))
    for s in election.state_ids:
        ids = election.casillas_in_state(s)
        res.units.append(brute_force_unit(election, records, ids, STATE, s, final=final))
    for d in election.district_ids:
        ids = election.casillas_in_district(d)
        res.units.append(brute_force_unit(election, records, ids, DISTRICT, d, final=final))
    return res
