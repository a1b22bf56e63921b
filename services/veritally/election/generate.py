"""Synthetic federal election nights, written in the documented formats.

``generate(seed=S, casillas=N, out_dir=DIR)`` writes ``election.yaml``, ``casillas.csv``
and ``actas.csv`` (every acta that arrives, in arrival order) and returns a summary of
what it wrote, so tests can check that loading the files back gives the same thing.

The model, in the order the generator draws it (one ``random.Random(seed)``, so a seed
always gives the same bytes; the candidates come from a second generator seeded from the
same seed, so that they do not move the catalogue):

1. geography: Mexico's 32 states with their 300 federal districts (2023 distribution);
   for fewer than 300 casillas, the first states in proportion, fewer districts;
2. casillas per district (equal population, +-12%), then per district about 0.6%
   special (S) and 0.2% extraordinary (E) casillas, the rest basic (B) and contiguous (C)
   grouped into sections of 1-8 casillas of at most 750 voters each; a special casilla
   receives the actas of all three contests, as in Mexico;
3. the races of the federal night: the presidency (one national race), the senate (one
   race per state) and the deputies (one race per district); the seven national parties,
   and coalitions that differ between races: PAN_PRI_PRD (FCM) and PVEM_PT_MORENA (SHH)
   in most, PAN with PRD while PRI runs alone (or all three apart) in some, PT with
   MORENA while PVEM runs alone (or all three apart) in some; MC always alone; an
   independent candidate in about 1% of the districts; every candidate a name;
4. party strength per state and district (log-normal effects on national shares),
   coalition combinations taking a small share of their parties' votes (only where the
   coalition runs), independents 3-12% of the valid votes;
5. turnout around 60.5% with state, district and casilla effects;
6. arrival: polls close at 18:00 local time (states have different UTC offsets); each
   casilla's actas arrive after 1.5 h of counting, a district transport lag (0-2 h) and
   a gamma-distributed delay (mean 4.5 h), 3% of casillas the next day, within PREP's 24
   hours from 20:00 (UTC-6); about 1.5% never arrive (lost, or after PREP closes);
7. about 1.2% of actas exceed the nominal list (a capture error), 1.5% have one or two
   figures marked illegible or blank, 0.3% are all illegible and 0.3% all blank.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import yaml

from veritally_client.protocol.pb import election_pb2, results_pb2

__all__ = ["DEFAULT_CASILLAS", "GeneratedElection", "generate"]

# About the number of casillas of Mexico's 2024 federal election (~170,000 installed).
DEFAULT_CASILLAS: Final = 160_000
ELECTION_ID: Final = "mx-synthetic-federal"

# (id, name, federal districts, UTC offset in hours on election day)
STATES: Final = (
    ("01", "Aguascalientes", 3, -6),
    ("02", "Baja California", 9, -7),
    ("03", "Baja California Sur", 2, -7),
    ("04", "Campeche", 2, -6),
    ("05", "Coahuila", 8, -6),
    ("06", "Colima", 2, -6),
    ("07", "Chiapas", 13, -6),
    ("08", "Chihuahua", 9, -6),
    ("09", "Ciudad de México", 22, -6),
    ("10", "Durango", 4, -6),
    ("11", "Guanajuato", 15, -6),
    ("12", "Guerrero", 8, -6),
    ("13", "Hidalgo", 7, -6),
    ("14", "Jalisco", 20, -6),
    ("15", "México", 40, -6),
    ("16", "Michoacán", 11, -6),
    ("17", "Morelos", 5, -6),
    ("18", "Nayarit", 3, -7),
    ("19", "Nuevo León", 14, -6),
    ("20", "Oaxaca", 10, -6),
    ("21", "Puebla", 16, -6),
    ("22", "Querétaro", 6, -6),
    ("23", "Quintana Roo", 4, -5),
    ("24", "San Luis Potosí", 7, -6),
    ("25", "Sinaloa", 7, -7),
    ("26", "Sonora", 7, -7),
    ("27", "Tabasco", 6, -6),
    ("28", "Tamaulipas", 8, -6),
    ("29", "Tlaxcala", 3, -6),
    ("30", "Veracruz", 19, -6),
    ("31", "Yucatán", 6, -6),
    ("32", "Zacatecas", 4, -6),
)
NATIONAL_DISTRICTS: Final = 300

# The national parties of 2024: (id, name, abbreviation, national weight).
PARTIES: Final = (
    ("PAN", "Partido Acción Nacional", "PAN", 17.0),
    ("PRI", "Partido Revolucionario Institucional", "PRI", 10.0),
    ("PRD", "Partido de la Revolución Democrática", "PRD", 2.5),
    ("PVEM", "Partido Verde Ecologista de México", "PVEM", 8.5),
    ("PT", "Partido del Trabajo", "PT", 5.8),
    ("MC", "Movimiento Ciudadano", "MC", 10.5),
    ("MORENA", "Morena", "MORENA", 42.0),
)
# Coalition combinations: a vote marking several boxes of the same coalition. Weight is
# the fraction of the member parties' votes that go to the combination where the
# coalition that has it runs.
COMBINATIONS: Final = (
    (("PAN", "PRI", "PRD"), 0.030),
    (("PAN", "PRI"), 0.008),
    (("PAN", "PRD"), 0.004),
    (("PRI", "PRD"), 0.003),
    (("PVEM", "PT", "MORENA"), 0.025),
    (("PVEM", "PT"), 0.004),
    (("PVEM", "MORENA"), 0.007),
    (("PT", "MORENA"), 0.007),
)
# (id, name, member parties). The two big ones, and the smaller ones that run where one
# member goes alone.
COALITIONS: Final = (
    ("FCM", "Fuerza y Corazón por México", ("PAN", "PRI", "PRD")),
    ("SHH", "Sigamos Haciendo Historia", ("PVEM", "PT", "MORENA")),
    ("PAN_PRD", "Coalición PAN-PRD", ("PAN", "PRD")),
    ("PT_MORENA", "Coalición PT-MORENA", ("PT", "MORENA")),
)
# How each side runs in a senate or deputies' race: (probability, nominators). A
# nominator is a coalition id or a party id (a party alone).
FCM_SIDE: Final = ((0.85, ("FCM",)), (0.10, ("PAN_PRD", "PRI")), (0.05, ("PAN", "PRI", "PRD")))
SHH_SIDE: Final = (
    (0.85, ("SHH",)),
    (0.10, ("PT_MORENA", "PVEM")),
    (0.05, ("PVEM", "PT", "MORENA")),
)
# The presidency: both big coalitions and MC.
PRES_NOMINATORS: Final = ("FCM", "SHH", "MC")
INDEPENDENT_SHARE: Final = 0.01  # of the districts, at least one district
INDEPENDENT_VOTES: Final = (0.03, 0.12)  # share of the valid votes, uniform
CONTESTS: Final = (
    ("PRES", "Presidencia de la República", "national"),
    ("SEN", "Senadurías", "state"),
    ("DIP", "Diputaciones federales", "district"),
)
# Which contests a special casilla receives: all three, as in Mexico (a voter in transit
# votes for the deputies and senators only inside their district and state, but the
# casilla fills in an acta of each).
SPECIAL_BALLOT: Final = ("PRES", "SEN", "DIP")

# Candidates' names: common Mexican given names and surnames.
GIVEN_NAMES: Final = (
    "Alejandra", "Alejandro", "Ana", "Andrés", "Ángel", "Antonio", "Beatriz", "Carlos",
    "Carmen", "Claudia", "Daniel", "Diana", "Eduardo", "Elena", "Enrique", "Fernanda",
    "Fernando", "Francisco", "Gabriela", "Guadalupe", "Héctor", "Ignacio", "Isabel",
    "Javier", "Jorge", "José", "Juan", "Laura", "Leticia", "Lucía", "Luis", "Manuel",
    "Margarita", "María", "Mariana", "Martha", "Miguel", "Mónica", "Natalia", "Óscar",
    "Patricia", "Pedro", "Rafael", "Raúl", "Ricardo", "Roberto", "Rocío", "Rosa", "Sergio",
    "Silvia", "Sofía", "Teresa", "Verónica", "Víctor", "Ximena", "Yolanda",
)  # fmt: skip
SURNAMES: Final = (
    "Aguilar", "Álvarez", "Castillo", "Castro", "Chávez", "Cruz", "Delgado", "Díaz",
    "Domínguez", "Esquivel", "Estrada", "Flores", "García", "Gómez", "González",
    "Gutiérrez", "Guzmán", "Hernández", "Herrera", "Jiménez", "Juárez", "López", "Luna",
    "Martínez", "Medina", "Méndez", "Mendoza", "Morales", "Moreno", "Muñoz", "Núñez",
    "Ortega", "Ortiz", "Pérez", "Ramírez", "Ramos", "Reyes", "Ríos", "Rivera", "Rodríguez",
    "Romero", "Rosales", "Ruiz", "Salazar", "Sánchez", "Santiago", "Soto", "Torres",
    "Vargas", "Vázquez", "Vega", "Velázquez",
)  # fmt: skip
UNREGISTERED_SHARE: Final = 0.0008  # of the voters; PREP 2024 order of magnitude
NULL_SHARE: Final = 0.025

BASE_TURNOUT: Final = 0.605
MAX_VOTERS_PER_CASILLA: Final = 750  # INE's cap for B/C casillas
SPECIAL_SHARE: Final = 0.00625  # ~1,000 special casillas per 160,000
EXTRAORDINARY_SHARE: Final = 0.0019  # ~300 extraordinary casillas per 160,000
# Casillas (B + C) per section: 40% one, 25% two, ... (mean about 2.38).
SECTION_SIZES: Final = (1,) * 40 + (2,) * 25 + (3,) * 15 + (4,) * 9 + (5,) * 5 + (6,) * 3 + (8,) * 3

# Rule-breaking actas, cumulative probabilities per acta.
P_EXCEEDS: Final = 0.012
P_SOME_MARKED: Final = P_EXCEEDS + 0.015
P_ALL_ILLEGIBLE: Final = P_SOME_MARKED + 0.003
P_ALL_BLANK: Final = P_ALL_ILLEGIBLE + 0.003
P_MISSING: Final = 0.012  # actas that never arrive (plus those later than PREP's close)
LATE_SHARE: Final = 0.03  # casillas whose actas arrive the next day

ILLEGIBLE: Final = "Ilegible"
BLANK: Final = "Sin dato"

# Election night: polls close at 18:00 local on 2 June 2024; PREP runs 24 hours from
# 20:00 central time (UTC-6), i.e. 02:00 UTC on 3 June.
ELECTION_DAY: Final = datetime(2024, 6, 2, tzinfo=UTC)
PREP_START: Final = int((ELECTION_DAY + timedelta(hours=26)).timestamp())
PREP_END: Final = PREP_START + 24 * 3600
CENTRAL_OFFSET_S: Final = -6 * 3600
OPERATORS_PER_CENTRE: Final = 8
# Capture centres the districts are assigned to, round robin (``cc-01``...); the same
# default as the demo's PKI, whose capture-centre certificates carry these names.
DEFAULT_CAPTURE_CENTRES: Final = 4

CASILLA_COLUMNS: Final = (
    "CLAVE_CASILLA",
    "ID_ENTIDAD",
    "ID_DISTRITO",
    "SECCION",
    "TIPO_CASILLA",
    "LISTA_NOMINAL",
    "REPRESENTANTES",
    "BOLETAS",
    "CENTRO_CAPTURA",
)
ACTA_TAIL_COLUMNS: Final = (
    "NO_REGISTRADOS",
    "NULOS",
    "SHA",
    "CENTRO_CAPTURA",
    "OPERADOR",
    "ORIGEN",
    "DIGITALIZACION",
    "FECHA_HORA_ACOPIO",
    "FECHA_HORA_DIGITALIZACION",
    "FECHA_HORA_CAPTURA",
)


@dataclass
class ContestSummary:
    """What was written for one contest, as the loader should read it back."""

    actas: int = 0
    votes: dict[str, int] = field(default_factory=dict)  # option id (and "_unreg", "_null")
    marked_fields: int = 0
    exceeding: int = 0
    all_illegible: int = 0
    all_blank: int = 0
    missing: int = 0


@dataclass
class GeneratedElection:
    """Summary of a generated election."""

    definition: election_pb2.ElectionDefinition
    yaml_path: Path
    casillas_path: Path
    actas_path: Path
    contests: dict[str, ContestSummary]
    voters: int = 0  # voters of the actas written, over every contest
    nominal_list: int = 0  # nominal list of non-special casillas

    @property
    def actas_written(self) -> int:
        """Actas in actas.csv."""
        return sum(c.actas for c in self.contests.values())

    @property
    def actas_missing(self) -> int:
        """Actas that never arrive."""
        return sum(c.missing for c in self.contests.values())


@dataclass(slots=True)
class _Casilla:
    id: str
    state: int  # index into the chosen states
    district: int  # index into the districts
    section_number: int
    type_code: str
    nominal: int
    reps: int
    ballot_limit: int
    voters: int = 0
    arrival: int = 0  # seconds since the epoch
    origin_casilla: bool = False


def _allocate(total: int, weights: Sequence[float], minimum: int) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, each >= ``minimum``.

    Largest remainder, ties broken by position, so the split is deterministic.
    """
    n = len(weights)
    if total < minimum * n:
        raise ValueError(f"cannot give {n} parts at least {minimum} out of {total}")
    spare = total - minimum * n
    wsum = sum(weights)
    quotas = [spare * w / wsum for w in weights]
    parts = [minimum + math.floor(q) for q in quotas]
    left = total - sum(parts)
    order = sorted(range(n), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def _geography(n_casillas: int) -> list[tuple[str, str, int, int]]:
    """States with their district counts for an election of ``n_casillas``."""
    if n_casillas >= NATIONAL_DISTRICTS:
        return list(STATES)
    # Tiny elections for tests: fewer states and districts, about 5 casillas each.
    n_states = max(1, min(len(STATES), n_casillas // 20))
    n_districts = max(n_states, min(NATIONAL_DISTRICTS, n_casillas // 5))
    chosen = STATES[:n_states]
    counts = _allocate(n_districts, [float(s[2]) for s in chosen], 1)
    return [(s[0], s[1], c, s[3]) for s, c in zip(chosen, counts, strict=True)]


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: str
    name: str
    kind: str  # "party", "coalition" or "independent"
    nominator: str  # the party, coalition or independent option id


@dataclass(frozen=True, slots=True)
class _Race:
    id: str
    contest: int  # index into CONTESTS
    unit_id: str  # "" for the nation
    name: str
    candidates: tuple[_Candidate, ...]
    ballot: tuple[str, ...]  # the options of the contest its candidates stand for
    standard: bool  # the contest's template candidates (FCM, SHH, MC): names suffice


@dataclass(frozen=True)
class _Night:
    """The races of the night and the ballots they need."""

    # Per contest: its options (id, name, parties), in ballot order.
    options: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...]
    races: tuple[_Race, ...]
    # Per contest index: unit id ("" for the nation) -> its race.
    by_unit: tuple[dict[str, _Race], ...]
    # Independent option id -> its share of the valid votes of its race.
    independent_share: dict[str, float]

    def race_of(self, contest: int, state_id: str, district_id: str) -> _Race:
        """The race of a contest that a casilla of the district votes in."""
        scope = CONTESTS[contest][2]
        unit = "" if scope == "national" else state_id if scope == "state" else district_id
        return self.by_unit[contest][unit]


_COALITION_MEMBERS: Final = {cid: frozenset(members) for cid, _, members in COALITIONS}
_PARTY_IDS: Final = frozenset(p[0] for p in PARTIES)
# The options every contest has: each party, then every coalition combination.
_BASE_OPTIONS: Final = tuple((p[0], p[0], (p[0],)) for p in PARTIES) + tuple(
    ("_".join(m), "_".join(m), tuple(m)) for m, _ in COMBINATIONS
)


def _owned(nominator: str, options: Sequence[tuple[str, str, tuple[str, ...]]]) -> set[str]:
    """The options whose votes are a nominator's (a party, a coalition, an independent)."""
    if nominator in _PARTY_IDS:
        return {nominator}
    members = _COALITION_MEMBERS.get(nominator)
    if members is None:  # an independent's own option
        return {nominator}
    return {oid for oid, _, parties in options if parties and set(parties) <= members}


def _person(rng: random.Random) -> str:
    first, second = rng.sample(SURNAMES, 2)
    return f"{rng.choice(GIVEN_NAMES)} {first} {second}"


def _side(rng: random.Random, choices: Sequence[tuple[float, tuple[str, ...]]]) -> tuple[str, ...]:
    r = rng.random()
    for probability, nominators in choices:
        if r < probability:
            return nominators
        r -= probability
    return choices[-1][1]


def _night(
    rng: random.Random,
    states: Sequence[tuple[str, str, int, int]],
    districts: Sequence[tuple[str, int]],
) -> _Night:
    """Draw the races: alignments per state and district, independents, names."""
    n_independent = max(1, round(len(districts) * INDEPENDENT_SHARE))
    independents = sorted(rng.sample(range(len(districts)), n_independent))
    independent_options = tuple(
        (f"CI_{districts[d][0]}", "Candidatura independiente", ()) for d in independents
    )
    options = (_BASE_OPTIONS, _BASE_OPTIONS, _BASE_OPTIONS + independent_options)
    independent_share = {oid: rng.uniform(*INDEPENDENT_VOTES) for oid, _, _ in independent_options}
    races: list[_Race] = []

    def race(contest: int, unit_id: str, name: str, nominators: Sequence[str]) -> _Race:
        candidates = tuple(
            _Candidate(
                nominator,
                _person(rng),
                "party"
                if nominator in _PARTY_IDS
                else "coalition"
                if nominator in _COALITION_MEMBERS
                else "independent",
                nominator,
            )
            for nominator in nominators
        )
        owned: set[str] = set()
        for n in nominators:
            owned |= _owned(n, options[contest])
        ballot = tuple(oid for oid, _, _ in options[contest] if oid in owned)
        contest_id = CONTESTS[contest][0]
        return _Race(
            contest_id if not unit_id else f"{contest_id}-{unit_id}",
            contest,
            unit_id,
            name,
            candidates,
            ballot,
            tuple(nominators) == PRES_NOMINATORS,
        )

    races.append(race(0, "", CONTESTS[0][1], PRES_NOMINATORS))
    for sid, state_name, _, _ in states:
        nominators = (*_side(rng, FCM_SIDE), *_side(rng, SHH_SIDE), "MC")
        races.append(race(1, sid, _senate_name(state_name), nominators))
    for di, (did, si) in enumerate(districts):
        nominators = (*_side(rng, FCM_SIDE), *_side(rng, SHH_SIDE), "MC")
        if di in independents:
            nominators = (*nominators, f"CI_{did}")
        races.append(race(2, did, _deputies_name(states[si][1], did), nominators))
    by_unit: tuple[dict[str, _Race], ...] = ({}, {}, {})
    for r in races:
        by_unit[r.contest][r.unit_id] = r
    return _Night(options, tuple(races), by_unit, independent_share)


def _senate_name(state_name: str) -> str:
    return f"Senaduría, {state_name}"


def _deputies_name(state_name: str, district_id: str) -> str:
    return f"Diputación federal, {state_name}, {_district_name(district_id)}"


def capture_centre_of(district_index: int, capture_centres: int) -> str:
    """The capture centre that captures the casillas of the ``district_index``-th
    district: ``cc-01``... round robin, the names of the PKI's capture centres; ``""``
    (unassigned) when there are none."""
    if capture_centres == 0:
        return ""
    return f"cc-{district_index % capture_centres + 1:02d}"


def generate(
    *,
    seed: int,
    out_dir: Path,
    casillas: int = DEFAULT_CASILLAS,
    capture_centres: int = DEFAULT_CAPTURE_CENTRES,
    test: bool = False,
) -> GeneratedElection:
    """Write a synthetic election to ``out_dir`` (created if needed).

    Args:
        seed: the random seed; the same seed and size always give the same bytes.
        out_dir: directory for election.yaml, casillas.csv and actas.csv.
        casillas: number of casillas; everything else scales with it.
        capture_centres: capture centres (``cc-01``...) the districts are assigned to;
            the catalogue says which one captures each casilla. 0 assigns none (the
            catalogue's column is then not mapped): any client may capture any casilla,
            for a bulk import from one client without a capture operator's certificate.
        test: write a rehearsal (``test: true``): its cuts are test data, which clients
            refuse unless told to accept them.

    Returns:
        A summary of what was written.

    Raises:
        ValueError: if ``casillas`` is below 1 or ``capture_centres`` negative.
        OSError: if the files cannot be written.
    """
    if casillas < 1:
        raise ValueError(f"an election needs at least one casilla, not {casillas}")
    if capture_centres < 0:
        raise ValueError(f"capture_centres must be >= 0, not {capture_centres}")
    rng = random.Random(seed)  # noqa: S311  # synthetic data, not secrets
    out_dir.mkdir(parents=True, exist_ok=True)
    states = _geography(casillas)
    # (1) geography
    districts: list[tuple[str, int]] = []  # (district id, state index)
    for si, (sid, _name, count, _offset) in enumerate(states):
        districts.extend((f"{sid}-{d:02d}", si) for d in range(1, count + 1))
    # (2) casillas per district
    district_weights = [math.exp(rng.gauss(0.0, 0.12)) for _ in districts]
    per_district = _allocate(casillas, district_weights, 1)
    catalogue = _casillas(rng, states, districts, per_district)

    # (3) the races (their own generator: the same seed, and the catalogue unmoved)
    night = _night(random.Random(f"candidates-{seed}"), states, districts)  # noqa: S311
    option_ids = [oid for oid, _, _ in night.options[-1]]  # every option of any contest
    position = {oid: i for i, oid in enumerate(option_ids)}
    n_opts = len(option_ids)
    independent_share = night.independent_share
    # (4) party strength and (5) turnout effects
    state_turnout = [rng.gauss(0.0, 0.04) for _ in states]
    district_turnout = [rng.gauss(0.0, 0.03) for _ in districts]
    state_pref = [[p[3] * math.exp(rng.gauss(0.0, 0.35)) for p in PARTIES] for _ in states]
    party_index = {p[0]: i for i, p in enumerate(PARTIES)}
    # Per (district, contest): the probability of each option (0 off the race's ballot),
    # then unregistered, then null; and the positions of the race's ballot, then of
    # unregistered and null.
    shares: list[list[list[float]]] = []
    ballots: list[list[list[int]]] = []
    for did, si in districts:
        base = [w * math.exp(rng.gauss(0.0, 0.15)) for w in state_pref[si]]
        per_contest = []
        per_ballot = []
        for ci in range(len(CONTESTS)):
            race = night.race_of(ci, states[si][0], did)
            on_ballot = set(race.ballot)
            party = [w * math.exp(rng.gauss(0.0, 0.05)) for w in base]
            weights = [0.0] * n_opts
            for pid, i in party_index.items():
                weights[position[pid]] = party[i]
            for members, frac in COMBINATIONS:
                oid = "_".join(members)
                if oid in on_ballot:
                    weights[position[oid]] = frac * sum(party[party_index[m]] for m in members)
            parties_total = sum(weights)
            for oid, share in independent_share.items():
                if oid in on_ballot:
                    weights[position[oid]] = parties_total * share / (1.0 - share)
            total = sum(weights)
            valid = 1.0 - UNREGISTERED_SHARE - NULL_SHARE
            per_contest.append(
                [w / total * valid for w in weights] + [UNREGISTERED_SHARE, NULL_SHARE]
            )
            per_ballot.append([position[o] for o in race.ballot] + [n_opts, n_opts + 1])
        shares.append(per_contest)
        ballots.append(per_ballot)

    nominal_total = 0
    for c in catalogue:
        if c.type_code == "S":
            c.voters = rng.randint(c.ballot_limit // 5, c.ballot_limit * 9 // 10)
        else:
            nominal_total += c.nominal
            t = BASE_TURNOUT + state_turnout[c.state] + district_turnout[c.district]
            t = min(0.92, max(0.25, t + rng.gauss(0.0, 0.04)))
            c.voters = round(c.nominal * t)

    # (6) arrival
    # Counting takes 1.5 h at least; remote districts add up to 2 h of transport.
    district_lag = [rng.uniform(0.0, 2.0) * 3600 for _ in districts]
    for c in catalogue:
        close = int((ELECTION_DAY + timedelta(hours=18 - states[c.state][3])).timestamp())
        delay = 5400 + district_lag[c.district] + rng.gammavariate(1.5, 3.0) * 3600
        if rng.random() < LATE_SHARE:  # packages that travel to the district office first
            delay += rng.uniform(6.0, 20.0) * 3600
        c.arrival = max(PREP_START + rng.randint(0, 600), close + int(delay))
        c.origin_casilla = rng.random() < 0.45
    events: list[
        tuple[int, int, int, int, int]
    ] = []  # (captured, acopio, digitised, casilla, contest)
    missing = [0] * len(CONTESTS)
    for k, c in enumerate(catalogue):
        for ci in range(len(CONTESTS)):
            acopio = c.arrival + rng.randint(0, 1800)
            digitised = acopio + rng.randint(20, 900)
            captured = digitised + rng.randint(30, 1200)
            if rng.random() < P_MISSING or captured >= PREP_END:
                missing[ci] += 1
                continue
            events.append((captured, acopio, digitised, k, ci))
    events.sort()

    centres = [capture_centre_of(di, capture_centres) for di in range(len(districts))]
    definition = _definition(states, districts, catalogue, night, centres)
    definition.test = test
    yaml_path = out_dir / "election.yaml"
    casillas_path = out_dir / "casillas.csv"
    actas_path = out_dir / "actas.csv"
    _write_yaml(yaml_path, states, districts, night, assigned=capture_centres > 0, test=test)
    _write_casillas(casillas_path, states, districts, catalogue, centres)
    summary = {c[0]: ContestSummary(missing=missing[i]) for i, c in enumerate(CONTESTS)}
    voters_written = _write_actas(
        actas_path, rng, events, catalogue, districts, shares, ballots, night, summary, centres
    )
    return GeneratedElection(
        definition=definition,
        yaml_path=yaml_path,
        casillas_path=casillas_path,
        actas_path=actas_path,
        contests=summary,
        voters=voters_written,
        nominal_list=nominal_total,
    )


def _casillas(
    rng: random.Random,
    states: Sequence[tuple[str, str, int, int]],
    districts: Sequence[tuple[str, int]],
    per_district: Sequence[int],
) -> list[_Casilla]:
    out: list[_Casilla] = []
    next_section = [1] * len(states)
    for di, ((_did, si), n) in enumerate(zip(districts, per_district, strict=True)):
        state_id = states[si][0]
        n_special = int(n * SPECIAL_SHARE + rng.random())
        n_extra = int(n * EXTRAORDINARY_SHARE + rng.random())
        if n - n_special - n_extra < 1:
            n_special = n_extra = 0
        remaining = n - n_special - n_extra
        sections: list[list[_Casilla]] = []
        while remaining > 0:
            k = min(remaining, SECTION_SIZES[rng.randrange(len(SECTION_SIZES))])
            remaining -= k
            number = next_section[si]
            next_section[si] += 1
            total = rng.randint(MAX_VOTERS_PER_CASILLA * (k - 1) + 100, MAX_VOTERS_PER_CASILLA * k)
            section: list[_Casilla] = []
            for j in range(k):
                nominal = total // k + (1 if j < total % k else 0)
                suffix = "B" if j == 0 else f"C{j}"
                section.append(
                    _Casilla(
                        f"{state_id}-{number:04d}-{suffix}",
                        si,
                        di,
                        number,
                        "B" if j == 0 else "C",
                        nominal,
                        rng.randint(0, 20),
                        0,
                    )
                )
            sections.append(section)
        for e in range(n_extra):
            section = sections[rng.randrange(len(sections))]
            section.append(
                _Casilla(
                    f"{state_id}-{section[0].section_number:04d}-E{e + 1}",
                    si,
                    di,
                    section[0].section_number,
                    "E",
                    rng.randint(100, 600),
                    rng.randint(0, 20),
                    0,
                )
            )
        for s in range(n_special):
            section = sections[rng.randrange(len(sections))]
            section.append(
                _Casilla(
                    f"{state_id}-{section[0].section_number:04d}-S{s + 1}",
                    si,
                    di,
                    section[0].section_number,
                    "S",
                    0,
                    rng.randint(0, 20),
                    rng.choice((750, 1000, 1250, 1500)),
                )
            )
        for section in sections:
            out.extend(section)
    return out


_TYPES: Final = {
    "B": election_pb2.CASILLA_TYPE_BASICA,
    "C": election_pb2.CASILLA_TYPE_CONTIGUA,
    "E": election_pb2.CASILLA_TYPE_EXTRAORDINARIA,
    "S": election_pb2.CASILLA_TYPE_ESPECIAL,
}


def _definition(
    states: Sequence[tuple[str, str, int, int]],
    districts: Sequence[tuple[str, int]],
    catalogue: Sequence[_Casilla],
    night: _Night,
    centres: Sequence[str],
) -> election_pb2.ElectionDefinition:
    """The definition the written files describe (what loading them must give)."""
    pb = election_pb2.ElectionDefinition(id=ELECTION_ID, name=_election_name())
    for pid, name, abbreviation, _ in PARTIES:
        pb.parties.add(id=pid, name=name, abbreviation=abbreviation)
    for cid, name, scope in CONTESTS:
        contest = pb.contests.add(id=cid, name=name, scope=_SCOPES[scope])
        for oid, oname, parties in night.options[len(pb.contests) - 1]:
            contest.options.add(id=oid, name=oname, party_ids=parties)
    for cid, name, members in COALITIONS:
        pb.coalitions.add(id=cid, name=name, party_ids=members)
    for race in night.races:
        every = len(race.ballot) == len(night.options[race.contest])
        r = pb.races.add(
            id=race.id,
            contest_id=CONTESTS[race.contest][0],
            unit_id=race.unit_id,
            name=race.name,
            option_ids=() if every else race.ballot,
        )
        for candidate in race.candidates:
            r.candidates.append(
                election_pb2.Candidate(
                    id=candidate.id, name=candidate.name, **_nomination(candidate)
                )
            )
    pb.ballots.add(type=election_pb2.CASILLA_TYPE_ESPECIAL, contest_ids=SPECIAL_BALLOT)
    for sid, name, _, _ in states:
        pb.states.add(id=sid, name=name)
    for did, si in districts:
        pb.districts.add(id=did, state_id=states[si][0], name=_district_name(did))
    seen: set[str] = set()
    for c in catalogue:
        section_id = f"{states[c.state][0]}-{c.section_number:04d}"
        if section_id not in seen:
            seen.add(section_id)
            pb.sections.add(id=section_id, district_id=districts[c.district][0])
        pb.casillas.add(
            id=c.id,
            section_id=section_id,
            type=_TYPES[c.type_code],
            nominal_list=c.nominal,
            party_representatives=c.reps,
            ballot_limit=c.ballot_limit,
            capture_centre_id=centres[c.district],
        )
    return pb


# National is the unset scope (as the loader stores it).
_SCOPES: Final = {
    "national": results_pb2.LEVEL_UNSPECIFIED,
    "state": results_pb2.LEVEL_STATE,
    "district": results_pb2.LEVEL_DISTRICT,
}
_NOMINATION_FIELDS: Final = {
    "party": "party_id",
    "coalition": "coalition_id",
    "independent": "independent_option_id",
}


def _nomination(candidate: _Candidate) -> dict[str, str]:
    return {_NOMINATION_FIELDS[candidate.kind]: candidate.nominator}


def _election_name() -> str:
    return "Synthetic federal election (PREP reference case)"


def _district_name(district_id: str) -> str:
    return f"Distrito {district_id}"


def _yaml_options(options: Sequence[tuple[str, str, tuple[str, ...]]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for oid, name, parties in options:
        entry: dict[str, object] = {"id": oid}
        if name != oid:
            entry["name"] = name
        if parties != (oid,):
            entry["parties"] = list(parties)
        out.append(entry)
    return out


def _yaml_candidates(race: _Race, *, names: bool = True) -> list[dict[str, str]]:
    return [{c.kind: c.nominator, **({"name": c.name} if names else {})} for c in race.candidates]


def _yaml_contest(night: _Night, ci: int) -> dict[str, object]:
    """A contest with its races: the presidency's one race in full; the senate and the
    deputies as a template (FCM, SHH, MC) with each unit's names, or its own candidates
    where the coalitions differ or an independent stands."""
    cid, name, scope = CONTESTS[ci]
    doc: dict[str, object] = {"id": cid, "name": name}
    if scope != "national":
        doc["scope"] = scope
    doc["options"] = _yaml_options(night.options[ci])
    races = [r for r in night.races if r.contest == ci]
    if scope == "national":
        doc["races"] = [{"name": r.name, "candidates": _yaml_candidates(r)} for r in races]
        return doc
    template_name = (
        _senate_name("{unit_name}")
        if scope == "state"
        else _deputies_name("{state_name}", "{unit}")
    )
    doc["race_template"] = {
        "name": template_name,
        "candidates": [
            {"coalition" if n in _COALITION_MEMBERS else "party": n} for n in PRES_NOMINATORS
        ],
    }
    entries: list[dict[str, object]] = []
    for r in races:
        if r.standard:
            entries.append({"unit": r.unit_id, "names": {c.id: c.name for c in r.candidates}})
        else:
            entries.append({"unit": r.unit_id, "candidates": _yaml_candidates(r)})
    doc["races"] = entries
    return doc


def _write_yaml(
    path: Path,
    states: Sequence[tuple[str, str, int, int]],
    districts: Sequence[tuple[str, int]],
    night: _Night,
    *,
    assigned: bool,
    test: bool,
) -> None:
    doc = {
        "format": "veritally-election/1",
        "id": ELECTION_ID,
        "name": _election_name(),
        **({"test": True} if test else {}),
        "parties": [
            {"id": pid, "name": name, "abbreviation": abbreviation}
            for pid, name, abbreviation, _ in PARTIES
        ],
        "coalitions": [
            {"id": cid, "name": name, "parties": list(members)} for cid, name, members in COALITIONS
        ],
        "contests": [_yaml_contest(night, ci) for ci in range(len(CONTESTS))],
        "ballots": {"ESPECIAL": list(SPECIAL_BALLOT)},
        "states": [{"id": sid, "name": name} for sid, name, _, _ in states],
        "districts": [
            {"id": did, "state": states[si][0], "name": _district_name(did)}
            for did, si in districts
        ],
        "casillas": {
            "file": "casillas.csv",
            "columns": {
                "casilla_id": "CLAVE_CASILLA",
                "section_id": "{ID_ENTIDAD}-{SECCION:0>4}",
                "district_id": "{ID_ENTIDAD}-{ID_DISTRITO:0>2}",
                "state_id": "ID_ENTIDAD",
                "type": "TIPO_CASILLA",
                "nominal_list": "LISTA_NOMINAL",
                "party_representatives": "REPRESENTANTES",
                "ballot_limit": "BOLETAS",
                **({"capture_centre": "CENTRO_CAPTURA"} if assigned else {}),
            },
            "types": {"B": "BASICA", "C": "CONTIGUA", "E": "EXTRAORDINARIA", "S": "ESPECIAL"},
            "zero_values": ["-"],
        },
        "actas": {
            "file": "actas.csv",
            "columns": {
                "casilla_id": "CLAVE_CASILLA",
                "contest_id": "CONTIENDA",
                "unregistered_votes": "NO_REGISTRADOS",
                "null_votes": "NULOS",
                "image_sha256": "SHA",
                "capture_centre": "CENTRO_CAPTURA",
                "operator": "OPERADOR",
                "origin": "ORIGEN",
                "digitisation": "DIGITALIZACION",
                "received_at_centre_time": "FECHA_HORA_ACOPIO",
                "digitised_time": "FECHA_HORA_DIGITALIZACION",
                "captured_time": "FECHA_HORA_CAPTURA",
            },
            "marks": {"illegible": [ILLEGIBLE], "blank": [BLANK]},
            "origins": {"CASILLA": "CASILLA", "CATD": "CATD"},
            "digitisations": {"MOVIL": "MOBILE", "ESCANER": "SCANNER"},
        },
    }
    # Option columns are named after the option ids: no mapping needed. Leaf lists and
    # mappings in flow style: one line per party, option, candidate and race override.
    text = yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )
    path.write_text(text, encoding="utf-8")


def _write_casillas(
    path: Path,
    states: Sequence[tuple[str, str, int, int]],
    districts: Sequence[tuple[str, int]],
    catalogue: Sequence[_Casilla],
    centres: Sequence[str],
) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CASILLA_COLUMNS)
        for c in catalogue:
            district_number = int(districts[c.district][0].rpartition("-")[2])
            writer.writerow(
                (
                    c.id,
                    states[c.state][0],
                    district_number,  # unpadded, as INE writes it; the template pads it
                    c.section_number,
                    c.type_code,
                    "-" if c.type_code == "S" else c.nominal,
                    c.reps,
                    c.ballot_limit,
                    centres[c.district],
                )
            )


class _TimeFormatter:
    """Seconds since the epoch -> ISO 8601 in central time (UTC-6), fast."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def __call__(self, seconds: int) -> str:
        local = seconds + CENTRAL_OFFSET_S
        day, rest = divmod(local, 86_400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
            self._days[day] = prefix
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}-06:00"


def _write_actas(
    path: Path,
    rng: random.Random,
    events: Sequence[tuple[int, int, int, int, int]],
    catalogue: Sequence[_Casilla],
    districts: Sequence[tuple[str, int]],
    shares: Sequence[Sequence[Sequence[float]]],
    ballots: Sequence[Sequence[Sequence[int]]],
    night: _Night,
    summary: dict[str, ContestSummary],
    centres: Sequence[str],
) -> int:
    """Write the actas; an option that is not on the ballot of the row's race is ``-``."""
    fmt_time = _TimeFormatter()
    option_ids = [oid for oid, _, _ in night.options[-1]]
    n_opts = len(option_ids)
    width = n_opts + 2
    contest_ids = [c[0] for c in CONTESTS]
    sums = {cid: [0] * width for cid in contest_ids}
    voters_written = 0
    rand = rng.random
    randint = rng.randint
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("CLAVE_CASILLA", "CONTIENDA", *option_ids, *ACTA_TAIL_COLUMNS))
        for captured, acopio, digitised, k, ci in events:
            c = catalogue[k]
            contest_id = contest_ids[ci]
            stats = summary[contest_id]
            p = shares[c.district][ci]
            figures = ballots[c.district][ci]  # the race's options, unregistered, null
            options = figures[:-2]
            voters = c.voters if ci == 0 else max(0, c.voters - randint(0, 3))
            votes = [0] * width
            for i in figures:
                votes[i] = int(voters * p[i] * (0.75 + 0.5 * rand()))
            limit = c.ballot_limit if c.type_code == "S" else c.nominal + c.reps
            total = sum(votes)
            if total > limit:  # keep honest actas within PREP's limit
                top = max(options, key=votes.__getitem__)
                votes[top] -= min(votes[top], total - limit)
            cells: list[str] = ["-"] * width
            for i in figures:
                cells[i] = str(votes[i])
            r = rand()
            if r < P_EXCEEDS:
                top = max(options, key=votes.__getitem__)
                votes[top] += limit - sum(votes) + randint(1, 400)
                cells[top] = str(votes[top])
                stats.exceeding += 1
            elif r < P_SOME_MARKED:
                for i in rng.sample(figures, randint(1, 2)):
                    cells[i] = ILLEGIBLE if rand() < 0.5 else BLANK
                    votes[i] = 0
                    stats.marked_fields += 1
            elif r < P_ALL_BLANK:
                mark = ILLEGIBLE if r < P_ALL_ILLEGIBLE else BLANK
                for i in figures:
                    cells[i] = mark
                votes = [0] * width
                stats.marked_fields += len(figures)
                if mark == ILLEGIBLE:
                    stats.all_illegible += 1
                else:
                    stats.all_blank += 1
            stats.actas += 1
            acc = sums[contest_id]
            for i in figures:
                acc[i] += votes[i]
            voters_written += voters
            district_id = districts[c.district][0]
            writer.writerow(
                (
                    c.id,
                    contest_id,
                    *cells,
                    f"{rng.getrandbits(256):064x}",  # SHA-256 of the (synthetic) image
                    centres[c.district],  # the centre the casilla is assigned to
                    f"op-{district_id}-{randint(1, OPERATORS_PER_CENTRE)}",
                    "CASILLA" if c.origin_casilla else "CATD",
                    "MOVIL" if c.origin_casilla else "ESCANER",
                    fmt_time(acopio),
                    fmt_time(digitised),
                    fmt_time(captured),
                )
            )
    for ci, cid in enumerate(contest_ids):
        keys = [oid for oid, _, _ in night.options[ci]]
        acc = sums[cid]
        summary[cid].votes = {oid: acc[i] for i, oid in enumerate(keys)} | {
            "_unreg": acc[n_opts],
            "_null": acc[n_opts + 1],
        }
    return voters_written
