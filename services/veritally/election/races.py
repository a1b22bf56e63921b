"""The races part of ``election.yaml``: coalitions, contest scopes, races and candidates,
which contests each casilla type receives, the rehearsal flag and the close time.

A contest scoped to states or districts is held in one race per unit. Writing 300 deputy
races out one by one would be unreadable, so a contest may give a ``race_template``: one
race for every unit at the contest's scope, built from the template, with ``races:``
entries that override the template's keys for one unit (``unit:``), e.g. other
candidates, another coalition, or only the candidates' names (``names:``). Without a
template, ``races:`` lists the races themselves.

The model's own rules (a coalition's parties, a candidate's options, one race per unit,
every option of a race belonging to one candidate) are checked once, by the SDK's
:class:`ElectionIndex`; :func:`locate` maps its errors back to the YAML key at fault.
The checks here are those the YAML itself needs (types, unknown keys, references this
module must resolve to build the races).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from veritally.bounds import identifier_problem
from veritally_client.protocol.pb import election_pb2, results_pb2

if TYPE_CHECKING:  # the loader imports this module; only its types are needed here
    from veritally.election.loader import _Yaml

__all__ = [
    "SCOPES",
    "Locations",
    "locate",
    "read_ballots",
    "read_close_time",
    "read_coalitions",
    "read_races",
    "read_scope",
    "read_test",
]

SCOPES: Final[Mapping[str, results_pb2.Level.ValueType]] = {
    "national": results_pb2.LEVEL_NATIONAL,
    "state": results_pb2.LEVEL_STATE,
    "district": results_pb2.LEVEL_DISTRICT,
}
NOMINATIONS: Final = ("party", "coalition", "independent")
CONTEST_KEYS: Final = frozenset({"id", "name", "scope", "options", "race_template", "races"})
RACE_KEYS: Final = frozenset({"id", "unit", "name", "options", "candidates", "names"})
TEMPLATE_KEYS: Final = frozenset({"id", "name", "options", "candidates"})
CANDIDATE_KEYS: Final = frozenset({"id", "name", *NOMINATIONS})
# Fields a race's id and name may use, e.g. "DIP-{unit}" or "Distrito {unit_name}".
PLACEHOLDERS: Final = frozenset(
    {"contest", "contest_name", "unit", "unit_name", "state", "state_name"}
)


@dataclass
class Locations:
    """Where each part of the definition message came from in the YAML: a message path
    as the SDK's validation names it (``races[17]``, ``races[17].candidates[3]``,
    ``coalitions[0]``, ``ballots[1]``) -> (YAML node, YAML key path)."""

    paths: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def add(self, pb_path: str, node: Any, yaml_path: str) -> None:
        """Record that ``pb_path`` was read from ``node`` at ``yaml_path``."""
        self.paths[pb_path] = (node, yaml_path)


# The SDK names message fields; the YAML names them as the loader reads them.
_FIELD_NAMES: Final = {
    "party_id": "party",
    "coalition_id": "coalition",
    "independent_option_id": "independent",
    "party_ids": "parties",
    "unit_id": "unit",
    "option_ids": "options",
    "contest_ids": "contests",
    "contest_id": "contest",
}
# "races[3].candidates[1]: field 'party_id': ..." or "races[3].option_ids[2]: ..."
_MESSAGE: Final = re.compile(
    r"^(?P<path>[a-z_]+\[\d+\](?:\.[a-z_]+\[\d+\])*)(?: [^:]*)?: "
    r"(?:field '(?P<field>\w+)'[ :]*)?(?P<rest>.*)$",
    re.DOTALL,
)


def locate(locations: Locations, message: str) -> tuple[Any, str | None, str]:
    """Where in the YAML an error of the SDK's validation of the message built from it
    lies: (node, key path or None, message)."""
    match = _MESSAGE.match(message)
    if match is None:
        return None, None, message
    path = match["path"]
    tail = ""
    # Find the longest recorded prefix: races[3].candidates[1] before races[3], and
    # races[3].option_ids (a list recorded whole) for races[3].option_ids[2].
    while path not in locations.paths:
        head, sep, last = path.rpartition(".")
        name, _, index = last.partition("[")
        whole = f"{head}.{name}" if sep else name
        if whole in locations.paths:
            path, tail = whole, f"[{index}{tail}"
            break
        if not sep:
            return None, None, message
        tail = f".{_FIELD_NAMES.get(name, name)}[{index}{tail}"
        path = head
    node, yaml_path = locations.paths[path]
    fieldname = match["field"]
    where = yaml_path + tail
    if fieldname:
        where = f"{where}.{_FIELD_NAMES.get(fieldname, fieldname)}"
    return node, where, match["rest"]


# -- small readers ---------------------------------------------------------------------


def _check_keys(doc: _Yaml, node: Any, where: str, allowed: frozenset[str]) -> None:
    if not isinstance(node, dict):
        raise doc.error(node, where, "must be a mapping")
    for key in node:
        if key not in allowed:
            raise doc.error(
                node,
                f"{where}.{key}",
                f"unknown key (expected one of {', '.join(sorted(allowed))})",
            )


def _ident(doc: _Yaml, node: Any, key: str, where: str, *, required: bool = True) -> str:
    if node.get(key) is None and not required:
        return ""
    return doc.ident(node, key, where)


def read_scope(doc: _Yaml, node: Any, where: str) -> results_pb2.Level.ValueType:
    """A contest's ``scope`` (``national`` when absent)."""
    text = doc.text(node, "scope", where, required=False, default="national")
    scope = SCOPES.get(text)
    if scope is None:
        raise doc.error(node, f"{where}.scope", f"{text!r} is not one of {', '.join(SCOPES)}")
    # National is stored unset (its meaning when unset), so that a definition written
    # before scopes existed keeps its bytes and its SHA-256.
    return results_pb2.LEVEL_UNSPECIFIED if scope == results_pb2.LEVEL_NATIONAL else scope


def read_test(doc: _Yaml, root: Any) -> bool:
    """The ``test`` flag (a rehearsal); false when absent."""
    value = root.get("test", False)
    if not isinstance(value, bool):
        raise doc.error(root, "test", f"must be true or false, found {value!r}")
    return value


def read_close_time(doc: _Yaml, root: Any, pb: election_pb2.ElectionDefinition) -> None:
    """``close_time``: an RFC 3339 instant with its UTC offset, e.g.
    ``"2024-06-03T20:00:00-06:00"``; absent means no close time."""
    value = root.get("close_time")
    if value is None:
        return
    when: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
    if when is None:
        raise doc.error(
            root, "close_time", f"not an RFC 3339 time like 2024-06-03T20:00:00-06:00: {value!r}"
        )
    if when.tzinfo is None or when.utcoffset() is None:
        raise doc.error(root, "close_time", f"needs a UTC offset (Z or -06:00): {value!r}")
    pb.close_time.FromDatetime(when)


def read_coalitions(
    doc: _Yaml, root: Any, pb: election_pb2.ElectionDefinition, locations: Locations
) -> dict[str, frozenset[str]]:
    """``coalitions:``: ``{id, name, parties}``; returns id -> member parties."""
    coalitions: dict[str, frozenset[str]] = {}
    for i, node in enumerate(doc.seq(root, "coalitions", "", required=False)):
        where = f"coalitions[{i}]"
        _check_keys(doc, node, where, frozenset({"id", "name", "parties"}))
        cid = doc.ident(node, "id", where)
        if cid in coalitions:
            raise doc.error(node, f"{where}.id", f"duplicate coalition id {cid!r}")
        members = doc.str_list(node, "parties", where, default=())
        coalitions[cid] = frozenset(members)
        locations.add(where, node, where)
        pb.coalitions.add(
            id=cid,
            name=doc.text(node, "name", where, required=False, default=cid),
            party_ids=members,
        )
    return coalitions


def read_ballots(
    doc: _Yaml,
    root: Any,
    pb: election_pb2.ElectionDefinition,
    contest_ids: Sequence[str],
    types: Mapping[str, election_pb2.CasillaType.ValueType],
) -> None:
    """``ballots:``: casilla type (a name of ``types``) -> the contests it receives, e.g.
    ``{ESPECIAL: [PRES]}``. A type not listed receives every contest."""
    node = doc.mapping(root, "ballots", "", required=False)
    for key in node:
        where = f"ballots.{key}"
        ctype = types.get(key) if isinstance(key, str) else None
        if ctype is None:
            raise doc.error(node, where, f"not a casilla type (one of {', '.join(types)})")
        ids = doc.str_list(node, key, "ballots", default=())
        for cid in ids:
            if cid not in contest_ids:
                raise doc.error(node, where, f"unknown contest {cid!r}")
        if len(set(ids)) != len(ids):
            raise doc.error(node, where, "names a contest twice")
        # In the contests' order, so that the message does not depend on how it is written.
        pb.ballots.add(type=ctype, contest_ids=[c for c in contest_ids if c in ids])


# -- races -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    id: str
    name: str
    state_id: str
    state_name: str


@dataclass
class _Spec:
    """The keys of one race entry or template, each with where it was written."""

    node: Any
    where: str
    values: dict[str, Any] = field(default_factory=dict)
    # key -> (node, path) of the entry that gave it (the template or an override)
    origin: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def give(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.origin[key] = (self.node, self.where)


@dataclass(frozen=True)
class _ContestView:
    id: str
    name: str
    scope: results_pb2.Level.ValueType
    option_ids: tuple[str, ...]
    option_parties: Mapping[str, tuple[str, ...]]


def _read_spec(doc: _Yaml, node: Any, where: str, *, template: bool) -> _Spec:
    _check_keys(doc, node, where, TEMPLATE_KEYS if template else RACE_KEYS)
    spec = _Spec(node, where)
    for key in ("id", "name"):
        if node.get(key) is not None:
            spec.give(key, doc.text(node, key, where))
    if node.get("unit") is not None:
        spec.give("unit", doc.text(node, "unit", where))
    if node.get("options") is not None:
        spec.give("options", doc.str_list(node, "options", where, default=()))
    if node.get("candidates") is not None:
        spec.give("candidates", doc.seq(node, "candidates", where))
    if node.get("names") is not None:
        spec.give("names", doc.str_map(node, "names", where))
    return spec


def _units(
    pb: election_pb2.ElectionDefinition, scope: results_pb2.Level.ValueType
) -> dict[str, _Unit]:
    states = {s.id: s.name for s in pb.states}
    if scope == results_pb2.LEVEL_STATE:
        return {s.id: _Unit(s.id, s.name, s.id, s.name) for s in pb.states}
    if scope == results_pb2.LEVEL_DISTRICT:
        return {
            d.id: _Unit(d.id, d.name, d.state_id, states.get(d.state_id, "")) for d in pb.districts
        }
    return {"": _Unit("", "", "", "")}


def _fill(doc: _Yaml, spec: _Spec, key: str, values: Mapping[str, str]) -> str:
    """A race's id or name from its text with ``{unit}``-style placeholders filled."""
    node, where = spec.origin[key]
    text: str = spec.values[key]
    path = f"{where}.{key}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise doc.error(node, path, f"bad placeholder in {text!r}: {e}") from e
    out: list[str] = []
    for literal, name, spec_text, conversion in parsed:
        out.append(literal)
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec_text or conversion:
            raise doc.error(
                node,
                path,
                f"placeholder {{{name}}} in {text!r} is not one of "
                f"{', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}",
            )
        out.append(values[name])
    return "".join(out)


def read_races(
    doc: _Yaml,
    root: Any,
    pb: election_pb2.ElectionDefinition,
    coalitions: Mapping[str, frozenset[str]],
    locations: Locations,
) -> None:
    """The races of every contest (``race_template`` and ``races:``), appended to
    ``pb.races`` contest by contest. ``pb`` already holds the contests, states and
    districts."""
    race_ids: dict[str, str] = {}
    for ci, (node, contest) in enumerate(
        zip(doc.seq(root, "contests", ""), pb.contests, strict=True)
    ):
        where = f"contests[{ci}]"
        _check_keys(doc, node, where, CONTEST_KEYS)
        locations.add(where, node, where)
        view = _ContestView(
            id=contest.id,
            name=contest.name,
            scope=contest.scope or results_pb2.LEVEL_NATIONAL,
            option_ids=tuple(o.id for o in contest.options),
            option_parties={o.id: tuple(o.party_ids) for o in contest.options},
        )
        template = None
        if node.get("race_template") is not None:
            template = _read_spec(
                doc,
                doc.mapping(node, "race_template", where),
                f"{where}.race_template",
                template=True,
            )
        entries = [
            _read_spec(doc, entry, f"{where}.races[{j}]", template=False)
            for j, entry in enumerate(doc.seq(node, "races", where, required=False))
        ]
        units = _units(pb, view.scope)
        for spec in _contest_races(doc, view, template, entries, units):
            unit = units[spec.values.get("unit", "")]
            race = _build_race(doc, spec, view, unit, coalitions, locations, len(pb.races))
            if race.id in race_ids:
                raise doc.error(
                    spec.origin["id"][0] if "id" in spec.origin else spec.node,
                    f"{spec.where}.id",
                    f"race id {race.id!r} is already the id of {race_ids[race.id]}",
                )
            race_ids[race.id] = spec.where
            pb.races.append(race)


def _contest_races(
    doc: _Yaml,
    contest: _ContestView,
    template: _Spec | None,
    entries: Sequence[_Spec],
    units: Mapping[str, _Unit],
) -> list[_Spec]:
    """The race specs of one contest in display order: with a template, one per unit at
    the scope (its overrides applied), else the entries as listed."""
    national = contest.scope == results_pb2.LEVEL_NATIONAL
    by_unit: dict[str, _Spec] = {}
    for spec in entries:
        unit = spec.values.get("unit", "")
        if national and unit:
            raise doc.error(
                spec.node, f"{spec.where}.unit", f"contest {contest.id!r} is national: no unit"
            )
        if not national and not unit:
            raise doc.error(spec.node, f"{spec.where}.unit", "is missing")
        if unit not in units:
            level = "state" if contest.scope == results_pb2.LEVEL_STATE else "district"
            raise doc.error(spec.node, f"{spec.where}.unit", f"unknown {level} {unit!r}")
        if unit in by_unit:
            raise doc.error(
                spec.node,
                f"{spec.where}.unit",
                f"unit {unit!r} already has a race of {contest.id!r} at {by_unit[unit].where}",
            )
        by_unit[unit] = spec
    if template is None:
        return list(entries)
    out: list[_Spec] = []
    for unit in units:
        merged = _Spec(template.node, template.where, dict(template.values), dict(template.origin))
        merged.values["unit"] = unit
        override = by_unit.get(unit)
        if override is not None:
            merged.node, merged.where = override.node, override.where
            merged.values.update(override.values)
            merged.origin.update(override.origin)
        out.append(merged)
    return out


def _build_race(
    doc: _Yaml,
    spec: _Spec,
    contest: _ContestView,
    unit: _Unit,
    coalitions: Mapping[str, frozenset[str]],
    locations: Locations,
    position: int,
) -> election_pb2.Race:
    national = contest.scope == results_pb2.LEVEL_NATIONAL
    values = {
        "contest": contest.id,
        "contest_name": contest.name,
        "unit": unit.id,
        "unit_name": unit.name,
        "state": unit.state_id,
        "state_name": unit.state_name,
    }
    if "id" not in spec.values:
        spec.values["id"] = "{contest}" if national else "{contest}-{unit}"
        spec.origin["id"] = (spec.node, spec.where)
    race_id = _fill(doc, spec, "id", values)
    problem = identifier_problem(race_id)
    if problem is not None:
        node, where = spec.origin["id"]
        raise doc.error(node, f"{where}.id", f"race id {race_id!r}: {problem}")
    name = _fill(doc, spec, "name", values) if "name" in spec.values else ""
    pb_path = f"races[{position}]"
    locations.add(pb_path, spec.node, spec.where)
    race = election_pb2.Race(id=race_id, contest_id=contest.id, unit_id=unit.id, name=name)
    owned: set[str] = set()
    if "candidates" in spec.values:
        _, cwhere = spec.origin["candidates"]
        for k, entry in enumerate(spec.values["candidates"]):
            where = f"{cwhere}.candidates[{k}]"
            candidate, options = _candidate(doc, entry, where, contest, coalitions)
            locations.add(f"{pb_path}.candidates[{k}]", entry, where)
            race.candidates.append(candidate)
            owned |= options
    if "names" in spec.values:
        nnode, nwhere = spec.origin["names"]
        by_id = {c.id: c for c in race.candidates}
        for cid, cname in spec.values["names"].items():
            if cid not in by_id:
                raise doc.error(
                    nnode,
                    f"{nwhere}.names.{cid}",
                    f"race {race_id!r} has no candidate {cid!r} (ids: "
                    f"{', '.join(by_id) or 'none'})",
                )
            by_id[cid].name = cname
    if "options" in spec.values:
        race.option_ids.extend(spec.values["options"])
        onode, owhere = spec.origin["options"]
        locations.add(f"{pb_path}.option_ids", onode, f"{owhere}.options")
    elif owned and not owned.issuperset(contest.option_ids):
        # The ballot of a race with candidates: the contest's options its candidates
        # stand for, in the contest's order (left empty when that is every option: the
        # message's way of saying so).
        race.option_ids.extend(o for o in contest.option_ids if o in owned)
    return race


def _candidate(
    doc: _Yaml,
    node: Any,
    where: str,
    contest: _ContestView,
    coalitions: Mapping[str, frozenset[str]],
) -> tuple[election_pb2.Candidate, set[str]]:
    """A candidate and the contest's options that are its votes."""
    _check_keys(doc, node, where, CANDIDATE_KEYS)
    kinds = [k for k in NOMINATIONS if node.get(k) is not None]
    if len(kinds) != 1:
        raise doc.error(
            node,
            where,
            "give exactly one of party, coalition or independent, found "
            f"{', '.join(kinds) or 'none'}",
        )
    kind = kinds[0]
    nominator = doc.ident(node, kind, where)
    cid = _ident(doc, node, "id", where, required=False) or nominator
    name = doc.text(node, "name", where, required=False, default=cid)
    parties = contest.option_parties
    if kind == "party":
        return election_pb2.Candidate(id=cid, name=name, party_id=nominator), {
            o for o, p in parties.items() if p == (nominator,)
        }
    if kind == "coalition":
        members = coalitions.get(nominator)
        if members is None:
            raise doc.error(
                node,
                f"{where}.coalition",
                f"unknown coalition {nominator!r} (ids: {', '.join(coalitions) or 'none'})",
            )
        return election_pb2.Candidate(id=cid, name=name, coalition_id=nominator), {
            o for o, p in parties.items() if p and set(p) <= members
        }
    if nominator not in parties:
        raise doc.error(
            node,
            f"{where}.independent",
            f"{nominator!r} is not an option of contest {contest.id!r}",
        )
    return election_pb2.Candidate(id=cid, name=name, independent_option_id=nominator), {nominator}
