"""The JSON view of a cut: its signed results decoded and named (``GetCutView``).

Media without the SDK read the REST view (docs/mesh.md, "The JSON view"); the signed
Results blob is protobuf, so this module decodes it once per cut into a
``veritally.v1.CutView`` that the gRPC-JSON transcoder prints with names next to the
figures. The signed bytes travel with it, so a reader that verifies still can.

How a view is built, by :func:`build_view`:

1. the results must have been computed with the stored definition: the SHA-256 the
   blob carries is the one of the definition's exact bytes, else :class:`ViewError`
   (nothing is named with another election's names);
2. units, contests, options, candidates and parties are taken from the blob in the
   blob's order; every figure is copied as signed, never recomputed;
3. names come from the definition (:class:`ViewNames`, indexed once per definition):
   units (the nation is ``"National"``), contests, races, options, candidates with who
   nominates them (a party, a coalition and its parties, or an independent), parties;
4. shares and percentages are the signed ``percent x 10^4`` integers written as decimals
   with four digits after the point (:func:`decimal_e4`: 123456 is ``"12.3456"``), so
   the view shows PREP's four truncated decimals exactly; no float is involved;
5. the cut number and time come from the stored cut record, the final and test flags
   from the blob.

What it costs, measured on the generated national federal night (160,000 casillas, 333
races, all 471,427 actas in, the final cut): a results blob of 473,241 bytes gives a view
of 1,380,520 bytes serialized, built in ~0.1 s from names indexed once in ~0.2 s; the
GetCutView answer with the signed cut is 1,854,848 bytes, ~4.4 MB of JSON as the
transcoder prints it. The size follows the definition (units x contests x options) and
the figures' digits, hardly the number of casillas: the tests' 1,000-casilla night of the
same shape answers 1.74 MB, 4.07 MB of JSON. The engine builds a cut's view once, on its
first read, and keeps the last few (:data:`veritally.publication.engine.VIEW_CACHE_CUTS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from veritally.publication.errors import ViewError
from veritally_client import MalformedDataError
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import election_pb2, publication_pb2, results_pb2

__all__ = [
    "NATION_NAME",
    "ViewNames",
    "build_view",
    "decimal_e4",
]

CutViewPb = publication_pb2.CutView
ContestViewPb = publication_pb2.ContestView
ResultsPb = results_pb2.Results

#: The name of the nation as a unit (the SDK's named views call it the same).
NATION_NAME: Final = "National"

_E4: Final = 10_000
_LEVEL_NAMES: Final = {
    results_pb2.LEVEL_STATE: "state",
    results_pb2.LEVEL_DISTRICT: "district",
}
_NOMINATIONS: Final = {
    "party": publication_pb2.NOMINATION_PARTY,
    "coalition": publication_pb2.NOMINATION_COALITION,
    "independent": publication_pb2.NOMINATION_INDEPENDENT,
}


def decimal_e4(value: int) -> str:
    """A signed percent x 10^4 integer as a decimal with four digits after the point:
    ``123456`` -> ``"12.3456"``, ``0`` -> ``"0.0000"``.

    Raises:
        ValueError: if ``value`` is negative (the blob's figures are unsigned).
    """
    if value < 0:
        raise ValueError(f"a share is never negative, got {value}")
    return f"{value // _E4}.{value % _E4:04d}"


@dataclass(frozen=True, slots=True)
class _Candidate:
    """What a candidate's view holds besides its figures."""

    name: str
    nominated_by: publication_pb2.Nomination.ValueType
    nominator_id: str
    nominator_name: str
    party_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Party:
    name: str
    abbreviation: str


class ViewNames:
    """The names a view needs, indexed once per election definition.

    Built from the definition's exact bytes (their SHA-256 is what the results carry).
    The casilla catalogue is dropped before indexing: a view names no casilla, and with
    the national catalogue the index takes ~72 MB and ~5 s instead of ~0.8 MB and ~0.2 s
    (the generated national night, tracemalloc).
    """

    __slots__ = (
        "_candidates",
        "_contest_names",
        "_option_names",
        "_option_parties",
        "_parties",
        "_race_names",
        "_unit_names",
        "definition_sha256",
        "election_id",
        "election_name",
    )

    def __init__(self, definition: bytes) -> None:
        """Index the names of the serialized ``ElectionDefinition`` ``definition``.

        Raises:
            ViewError: if the bytes are not a valid election definition.
        """
        pb = election_pb2.ElectionDefinition()
        try:
            pb.ParseFromString(definition)
        except DecodeError as e:
            raise ViewError(f"the stored election definition does not parse: {e}") from e
        self.definition_sha256 = hashlib.sha256(definition).digest()
        del pb.casillas[:]
        del pb.sections[:]
        try:
            index = ElectionIndex.from_pb(pb)
        except MalformedDataError as e:
            raise ViewError(f"the stored election definition is not valid: {e}") from e
        self.election_id = pb.id
        self.election_name = pb.name
        self._unit_names: Mapping[tuple[int, str], str] = {
            (results_pb2.LEVEL_NATIONAL, ""): NATION_NAME,
            **{(results_pb2.LEVEL_STATE, s.id): s.name for s in pb.states},
            **{(results_pb2.LEVEL_DISTRICT, d.id): d.name for d in pb.districts},
        }
        self._parties: Mapping[str, _Party] = {
            p.id: _Party(p.name, p.abbreviation or p.id) for p in pb.parties
        }
        self._contest_names: Mapping[str, str] = {c.id: c.name for c in pb.contests}
        self._option_names: Mapping[str, Mapping[str, str]] = {
            c.id: {o.id: o.name for o in c.options} for c in pb.contests
        }
        self._option_parties: Mapping[str, Mapping[str, tuple[str, ...]]] = {
            c.id: index.contest(c.id).option_parties for c in pb.contests
        }
        self._race_names: Mapping[str, str] = {r.id: r.name for r in index.races}
        coalitions = {c.id: c for c in index.coalitions}
        party_order = index.party_ids
        candidates: dict[tuple[str, str], _Candidate] = {}
        for race in index.races:
            for c in race.candidates:
                if c.nominated_by == "party":
                    party_ids: tuple[str, ...] = (c.nominator_id,)
                    nominator_name = self._parties[c.nominator_id].name
                elif c.nominated_by == "coalition":
                    coalition = coalitions[c.nominator_id]
                    party_ids = tuple(p for p in party_order if p in coalition.party_ids)
                    nominator_name = coalition.name
                else:
                    party_ids, nominator_name = (), ""
                candidates[(race.id, c.id)] = _Candidate(
                    c.name, _NOMINATIONS[c.nominated_by], c.nominator_id, nominator_name, party_ids
                )
        self._candidates: Mapping[tuple[str, str], _Candidate] = candidates

    def fill_contest(self, view: ContestViewPb, ct: results_pb2.ContestTotals) -> None:
        """Fill ``view`` (empty, in place: no copy) with one ContestTotals of the blob,
        named (steps 2, 3 and 4 of the module docstring).

        Raises:
            ViewError: if the blob names a candidate the definition lacks.
        """
        contest_id = ct.contest_id
        option_names = self._option_names.get(contest_id, {})
        option_parties = self._option_parties.get(contest_id, {})
        race_id = ct.race_id
        view.contest_id = contest_id
        view.contest_name = self._contest_names.get(contest_id, "")
        view.race_id = race_id
        view.race_name = self._race_names.get(race_id, "") if race_id else ""
        view.unregistered_votes = ct.unregistered_votes
        view.unregistered_share = decimal_e4(ct.unregistered_share_percent_e4)
        view.null_votes = ct.null_votes
        view.null_share = decimal_e4(ct.null_share_percent_e4)
        view.total_votes = ct.total_votes
        for o in ct.options:
            view.options.add(
                option_id=o.option_id,
                name=option_names.get(o.option_id, ""),
                party_ids=option_parties.get(o.option_id, ()),
                votes=o.votes,
                share=decimal_e4(o.share_percent_e4),
            )
        for c in ct.candidates:
            info = self._candidates.get((race_id, c.candidate_id))
            if info is None:
                raise ViewError(
                    f"contest {contest_id!r}: race {race_id!r} of the results has a candidate "
                    f"{c.candidate_id!r} the definition does not"
                )
            view.candidates.add(
                candidate_id=c.candidate_id,
                name=info.name,
                nominated_by=info.nominated_by,
                nominator_id=info.nominator_id,
                nominator_name=info.nominator_name,
                party_ids=info.party_ids,
                votes=c.votes,
                share=decimal_e4(c.share_percent_e4),
            )
        for p in ct.parties:
            party = self._parties.get(p.party_id, _Party("", p.party_id))
            view.parties.add(
                party_id=p.party_id,
                name=party.name,
                abbreviation=party.abbreviation,
                votes=p.votes,
                share=decimal_e4(p.share_percent_e4),
            )
        signed = ct.completeness
        done = view.completeness
        done.actas_expected = signed.actas_expected
        done.actas_registered = signed.actas_registered
        done.actas_out_of_catalogue = signed.actas_out_of_catalogue
        done.actas_captured = signed.actas_captured
        done.captured_percent = decimal_e4(signed.captured_percent_e4)
        done.actas_counted = signed.actas_counted
        done.counted_percent = decimal_e4(signed.counted_percent_e4)
        done.actas_not_counted = signed.actas_not_counted
        done.not_counted.extend(signed.not_counted)
        done.actas_inconsistent = signed.actas_inconsistent
        done.inconsistent_percent = decimal_e4(signed.inconsistent_percent_e4)
        done.nominal_list_counted = signed.nominal_list_counted
        done.total_votes_with_special = signed.total_votes_with_special
        done.total_votes_without_special = signed.total_votes_without_special
        done.participation_percent = decimal_e4(signed.turnout_percent_e4)

    def unit_name(self, level: results_pb2.Level.ValueType, unit_id: str) -> str:
        """The display name of a unit of the blob.

        Raises:
            ViewError: if the definition has no such unit.
        """
        name = self._unit_names.get((level, unit_id))
        if name is None:
            what = _LEVEL_NAMES.get(level, f"level {level}")
            raise ViewError(f"the results hold {what} {unit_id!r}, the definition does not")
        return name


def build_view(
    *, names: ViewNames, results: bytes, cut_number: int, cut_time: str
) -> publication_pb2.CutView:
    """The view of one cut (the numbered steps of the module docstring).

    Args:
        names: the stored definition's names.
        results: the cut's serialized Results blob, exactly as signed.
        cut_number: the cut's number, from its cut record.
        cut_time: the cut's time (RFC 3339 UTC), from its cut record.

    Raises:
        ViewError: if the blob does not parse, was computed with another definition, or
            names a unit or candidate the definition lacks.
    """
    blob = ResultsPb()
    try:
        blob.ParseFromString(results)
    except DecodeError as e:
        raise ViewError(f"cut {cut_number}: the results blob does not parse: {e}") from e
    # (1) the same election
    if blob.definition_sha256 != names.definition_sha256:
        raise ViewError(
            f"cut {cut_number}: the results were computed with definition "
            f"{blob.definition_sha256.hex()[:16]}…, the stored one is "
            f"{names.definition_sha256.hex()[:16]}…"
        )
    # (5) the cut and its flags
    view = CutViewPb(
        election_id=names.election_id,
        election_name=names.election_name,
        cut_number=cut_number,
        cut_time=cut_time,
        acta_records=blob.acta_records,
        final=blob.final,
        test=blob.test,
        definition_sha256=blob.definition_sha256.hex(),
    )
    # (2) (3) (4) every unit and contest, in the blob's order
    for unit in blob.units:
        unit_view = view.units.add(
            level=unit.level, unit_id=unit.unit_id, name=names.unit_name(unit.level, unit.unit_id)
        )
        for ct in unit.contests:
            names.fill_contest(unit_view.contests.add(), ct)
    return view
