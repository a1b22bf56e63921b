"""PREP's validation of one acta, as a pure function of the acta and the catalogue.

An acta is checked in this order; the first failure is the answer:

0. it is within the bounds of ``bounds.acta_problem`` (size, unknown fields, identifiers,
   enums, timestamps; INVALID_ARGUMENT naming the field), so that nothing below handles
   or quotes unbounded input;
1. the contest is one of the election's (NOT_FOUND ``contest_id``);
2. the casilla is in the catalogue and votes in one of the contest's races: its type
   receives the contest and a race of the contest contains it (INVALID_ARGUMENT
   ``contest_id``). A casilla not in the catalogue is PREP's "acta fuera de catálogo":
   the acta is checked against the contest's options (each at most once, no other) and
   accepted, never counted, as ``OUT_OF_CATALOGUE`` (how many one centre may log is the
   engine's bound);
3. every option of the casilla's race appears exactly once and no other does
   (INVALID_ARGUMENT ``option_votes[i].option_id`` or ``option_votes``);
4. a figure marked illegible or blank carries 0 votes and every mark is a known value
   (INVALID_ARGUMENT naming the figure);
5. the image digest is a SHA-256 (32 bytes, INVALID_ARGUMENT ``image_sha256``).

Votes are ``uint64`` on the wire, so they cannot be negative. An acta that passes is
accepted and logged; whether it *counts* towards the totals is decided here too:

6. every figure illegible: not counted, ``ALL_ILLEGIBLE``; every figure blank: not
   counted, ``ALL_BLANK`` (a mix of illegible and blank figures, all marked, counts as
   zero votes and is flagged: PREP names no reason for it);
7. the total (options + unregistered + null) above the nominal list plus the party
   representatives: not counted, ``EXCEEDS_NOMINAL_LIST``; a special casilla's above its
   ballot limit: not counted, ``EXCEEDS_BALLOTS``;
8. otherwise counted; a marked figure counts as 0 and the acta is flagged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from veritally import bounds
from veritally.reject import RejectCode, Rejection
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import acta_pb2

ActaPb = acta_pb2.Acta

_UNMARKED = acta_pb2.FIELD_MARK_UNSPECIFIED
_ILLEGIBLE = acta_pb2.FIELD_MARK_ILLEGIBLE
_BLANK = acta_pb2.FIELD_MARK_BLANK
_KNOWN_MARKS = frozenset((_UNMARKED, _ILLEGIBLE, _BLANK))

# Length of a SHA-256 digest, in bytes.
SHA256_BYTES = 32


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What validation needs from the election definition, indexed once.

    Attributes:
        casillas: casilla id -> (the most votes its acta may hold and still count:
            nominal list + party representatives, or a special casilla's ballot limit;
            whether it is special; its races' ballots by contest index, each option id ->
            position on the race's ballot, None where it has no acta of the contest).
        contests: contest id -> contest index.
    """

    casillas: Mapping[str, tuple[int, bool, tuple[tuple[str, Mapping[str, int]] | None, ...]]]
    contests: Mapping[str, int]
    contest_options: tuple[Mapping[str, int], ...] = ()  # by contest index

    @classmethod
    def from_index(cls, election: ElectionIndex) -> Catalogue:
        """Flatten a validated election into the lookups validation needs, so that
        checking an acta costs three lookups and one pass over its figures."""
        ballots: dict[int, tuple[tuple[str, Mapping[str, int]] | None, ...]] = {}
        casillas = {}
        for c in election.casillas:
            races = ballots.get(id(c.races))
            if races is None:
                races = tuple(None if r is None else (r.id, r.option_index) for r in c.races)
                ballots[id(c.races)] = races
            casillas[c.id] = (c.vote_limit, c.is_special, races)
        contests = {c.id: c.index for c in election.contests}
        options = tuple(c.option_index for c in election.contests)
        return cls(casillas=casillas, contests=contests, contest_options=options)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An acta that passed validation, with PREP's decision on counting it.

    Attributes:
        acta_id: ``"<casilla_id>/<contest_id>"``.
        counted: whether it counts towards the totals.
        not_counted_reason: a ``NotCountedReason`` value; UNSPECIFIED when counted.
        flagged: some figure was marked illegible or blank (and counted as 0).
        total_votes: options + unregistered + null.
    """

    acta_id: str
    counted: bool
    not_counted_reason: int
    flagged: bool
    total_votes: int


def acta_id_of(acta: ActaPb) -> str:
    """The acta id, ``"<casilla_id>/<contest_id>"`` (``""`` when either is missing or is
    not an identifier: an outcome never carries unbounded input)."""
    if not bounds.is_identifier(acta.casilla_id) or not bounds.is_identifier(acta.contest_id):
        return ""
    return f"{acta.casilla_id}/{acta.contest_id}"


def content_digest(acta: ActaPb) -> bytes:
    """SHA-256 of what an acta *says*: every field but the provenance.

    Two captures agree, and a resubmission is a duplicate, when their digests are equal:
    who captured it and when does not change the figures.
    """
    content = ActaPb()
    content.CopyFrom(acta)
    content.ClearField("provenance")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).digest()


def first_difference(logged: ActaPb, submitted: ActaPb) -> str:
    """Path of the first field whose content differs between two actas of the same
    casilla and contest (``""`` if only the provenance differs)."""
    a, b = logged.option_votes, submitted.option_votes
    for i in range(max(len(a), len(b))):
        if i >= len(a) or i >= len(b):
            return "option_votes"
        for name in ("option_id", "votes", "mark"):
            if getattr(a[i], name) != getattr(b[i], name):
                return f"option_votes[{i}].{name}"
    for name in (
        "unregistered_votes",
        "unregistered_mark",
        "null_votes",
        "null_mark",
        "image_sha256",
    ):
        if getattr(logged, name) != getattr(submitted, name):
            return name
    if logged.counts.SerializeToString(deterministic=True) != submitted.counts.SerializeToString(
        deterministic=True
    ):
        return "counts"
    return ""


def _mark_problem(prefix: str, votes: int, mark: int) -> Rejection | None:
    """A marked figure must carry a known mark and 0 votes; ``prefix`` names the figure
    (``option_votes[2].`` or ``null_``)."""
    if mark not in _KNOWN_MARKS:
        return Rejection(RejectCode.INVALID_ARGUMENT, f"{prefix}mark", f"unknown mark {mark}")
    if mark != _UNMARKED and votes != 0:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            f"{prefix}votes",
            f"a figure marked illegible or blank must carry 0 votes, found {votes}",
        )
    return None


def _out_of_catalogue(acta: ActaPb, options: Mapping[str, int]) -> Verdict | Rejection:
    """An acta of a casilla not in the catalogue: its figures checked against the
    contest's options (each at most once) and its marks and digest as any acta's;
    accepted as OUT_OF_CATALOGUE, never counted."""
    seen: set[str] = set()
    total = 0
    flagged = False
    for i, ov in enumerate(acta.option_votes):
        if ov.option_id not in options or ov.option_id in seen:
            return Rejection(
                RejectCode.INVALID_ARGUMENT,
                f"option_votes[{i}].option_id",
                bounds.identifier_problem(ov.option_id)
                or f"option {ov.option_id!r} is not an option of contest {acta.contest_id!r} "
                "or appears more than once",
            )
        seen.add(ov.option_id)
        if ov.mark:
            problem = _mark_problem(f"option_votes[{i}].", ov.votes, ov.mark)
            if problem is not None:
                return problem
            flagged = True
        total += ov.votes
    for prefix, votes, mark in (
        ("unregistered_", acta.unregistered_votes, acta.unregistered_mark),
        ("null_", acta.null_votes, acta.null_mark),
    ):
        if mark:
            problem = _mark_problem(prefix, votes, mark)
            if problem is not None:
                return problem
            flagged = True
        total += votes
    if len(acta.image_sha256) != SHA256_BYTES:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "image_sha256",
            f"expected a {SHA256_BYTES}-byte SHA-256, found {len(acta.image_sha256)} bytes",
        )
    acta_id = f"{acta.casilla_id}/{acta.contest_id}"
    return Verdict(acta_id, False, acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE, flagged, total)


# Why an expected acta has not arrived (PREP's "sin acta" reasons).
MISSING_REASONS = frozenset(
    {
        acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
        acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
        acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE,
        acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
    }
)


def validate_missing(acta: ActaPb, reason: int, catalogue: Catalogue) -> Verdict | Rejection:
    """Check a record of a missing acta: ``acta`` names the casilla and contest and holds
    no figures; the casilla is in the catalogue with a race of the contest; ``reason`` is
    one of :data:`MISSING_REASONS`."""
    out_of_bounds = bounds.acta_problem(acta)
    if out_of_bounds is not None:
        return Rejection(RejectCode.INVALID_ARGUMENT, *out_of_bounds)
    if reason not in MISSING_REASONS:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "reason",
            f"reason {reason} is not one of PREP's reasons for a missing acta",
        )
    index = catalogue.contests.get(acta.contest_id)
    if index is None:
        return Rejection(
            RejectCode.NOT_FOUND,
            "contest_id",
            f"contest {acta.contest_id!r} is not in the election",
        )
    casilla = catalogue.casillas.get(acta.casilla_id)
    if casilla is None:
        return Rejection(
            RejectCode.NOT_FOUND,
            "casilla_id",
            f"casilla {acta.casilla_id!r} is not in the catalogue: no acta of it is expected",
        )
    if casilla[2][index] is None:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "contest_id",
            f"casilla {acta.casilla_id!r} has no acta of contest {acta.contest_id!r}",
        )
    return Verdict(f"{acta.casilla_id}/{acta.contest_id}", False, reason, False, 0)


def validate(acta: ActaPb, catalogue: Catalogue) -> Verdict | Rejection:
    """Check an acta against PREP's rules.

    Args:
        acta: the acta as submitted.
        catalogue: the election's casillas and contests.

    Returns:
        A ``Verdict`` (accepted, counted or not) or a ``Rejection`` (nothing is logged).
    """
    # (0) bounds
    out_of_bounds = bounds.acta_problem(acta)
    if out_of_bounds is not None:
        return Rejection(RejectCode.INVALID_ARGUMENT, *out_of_bounds)
    # (1) known contest (step 0 refused an empty one)
    index = catalogue.contests.get(acta.contest_id)
    if index is None:
        return Rejection(
            RejectCode.NOT_FOUND,
            "contest_id",
            f"contest {acta.contest_id!r} is not in the election",
        )
    # (2) a catalogue casilla (step 0 refused an empty id) with a race of the contest
    casilla = catalogue.casillas.get(acta.casilla_id)
    if casilla is None:
        return _out_of_catalogue(acta, catalogue.contest_options[index])
    limit, special, races = casilla
    race = races[index]
    if race is None:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "contest_id",
            f"casilla {acta.casilla_id!r} has no acta of contest {acta.contest_id!r} (its "
            "type does not receive it, or no race of the contest contains the casilla)",
        )
    race_id, options = race
    # (3) every option exactly once, (4) marks
    seen: set[str] = set()
    total = 0
    illegible = 0
    blank = 0
    for i, ov in enumerate(acta.option_votes):
        oid = ov.option_id
        if oid not in options:
            return Rejection(
                RejectCode.INVALID_ARGUMENT,
                f"option_votes[{i}].option_id",
                bounds.identifier_problem(oid)
                or f"option {oid!r} is not on the ballot of race {race_id!r}",
            )
        if oid in seen:
            return Rejection(
                RejectCode.INVALID_ARGUMENT,
                f"option_votes[{i}].option_id",
                f"option {oid!r} appears more than once",
            )
        seen.add(oid)
        mark = ov.mark
        if mark:
            problem = _mark_problem(f"option_votes[{i}].", ov.votes, mark)
            if problem is not None:
                return problem
            if mark == _ILLEGIBLE:
                illegible += 1
            else:
                blank += 1
        total += ov.votes
    if len(seen) != len(options):
        missing = sorted(set(options) - seen, key=options.__getitem__)
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "option_votes",
            f"missing votes for option(s) {', '.join(missing)} of race {race_id!r}",
        )
    for prefix, votes, mark in (
        ("unregistered_", acta.unregistered_votes, acta.unregistered_mark),
        ("null_", acta.null_votes, acta.null_mark),
    ):
        if mark:
            problem = _mark_problem(prefix, votes, mark)
            if problem is not None:
                return problem
            if mark == _ILLEGIBLE:
                illegible += 1
            else:
                blank += 1
        total += votes
    # (5) image digest
    if len(acta.image_sha256) != SHA256_BYTES:
        return Rejection(
            RejectCode.INVALID_ARGUMENT,
            "image_sha256",
            f"expected a {SHA256_BYTES}-byte SHA-256, found {len(acta.image_sha256)} bytes",
        )
    acta_id = f"{acta.casilla_id}/{acta.contest_id}"
    fields = len(options) + 2
    # (6) all illegible / all blank
    if illegible == fields:
        return Verdict(acta_id, False, acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE, True, 0)
    if blank == fields:
        return Verdict(acta_id, False, acta_pb2.NOT_COUNTED_REASON_ALL_BLANK, True, 0)
    flagged = illegible + blank > 0
    # (7) total above the casilla's limit
    if total > limit:
        reason = (
            acta_pb2.NOT_COUNTED_REASON_EXCEEDS_BALLOTS
            if special
            else acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST
        )
        return Verdict(acta_id, False, reason, flagged, total)
    # (8) counted
    return Verdict(acta_id, True, acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED, flagged, total)
