"""Recount: rebuild a verified log from its leaves and recompute every cut (pure).

Feed every leaf of a verified tree, in order, to a :class:`Recounter`; it

1. hashes each leaf into a compact range (RFC 9162), so the root can be recomputed
   without holding the tree;
2. applies each acta record to a :class:`Tally` (which checks log order and each
   record's validity and revision chain);
3. at each cut record, checks that cuts are numbered 1, 2, 3 ... and that the cut covers
   exactly the acta records before it, that its ingest figure (if any) is not below that,
   never goes back and is never dropped once a cut reported one, then recomputes the
   results from those records and compares their SHA-256 with the digest that was signed,
   and, when the cut record signs a results summary, the summary of those results with
   the summary digest (docs/adr/0092);
4. at the end, checks that the recomputed root equals the signed root, and only then
   reports the first content failure met on the way (a malformed record, a misnumbered
   cut, results that differ from the signed digest) and that the log ends with a cut.

The root is checked first so that a leaf altered in transit is reported as what it is
(:class:`BadProofError`: not the signed leaves) rather than as the publisher's fault;
after a content failure the remaining leaves are still hashed, not tallied.

The ``final`` flag is part of the results but not of the cut record, so a cut's results
are recomputed as not final first and, if that digest differs, as final.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from veritally_client._cut import check_ingest_records, ingest_records_of
from veritally_client._election import ElectionIndex
from veritally_client._errors import (
    AfterFinalCutError,
    BadProofError,
    MalformedDataError,
    RecountMismatchError,
    VerificationError,
)
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._leaf import parse_leaf_view
from veritally_client._merkle import CompactRange, leaf_hash
from veritally_client._navigate import level_value, unknown_id
from veritally_client._summary import results_summary_bytes
from veritally_client._tally import Tally

__all__ = ["CutCheck", "RecountReport", "Recounter"]

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class CutCheck:
    """One cut whose results were recomputed and matched.

    Attributes:
        cut_number: the cut.
        leaf_index: position of its cut record in the log.
        acta_records: acta records it covers.
        results_sha256: the signed (and recomputed) digest.
        final: whether its results were final.
    """

    cut_number: int
    leaf_index: int
    acta_records: int
    results_sha256: bytes
    final: bool


@dataclass(frozen=True, kw_only=True, eq=False)
class RecountReport:
    """The outcome of a successful recount of a verified tree.

    Attributes:
        tree_size: the verified tree size that was recounted.
        root_hash: its signed root, recomputed from every leaf.
        acta_records: acta records in the log.
        cuts: every cut of the log, each recomputed and matched.
    """

    tree_size: int
    root_hash: bytes
    acta_records: int
    cuts: tuple[CutCheck, ...]
    _tally: Tally = field(repr=False)

    def unit(self, level: str, unit_id: str = "") -> results_pb2.UnitResults:
        """Results of any unit, computed from the recounted acta records.

        Args:
            level: ``"national"``, ``"state"``, ``"district"``, ``"section"`` or
                ``"casilla"``.
            unit_id: the unit's id (``""`` for the nation).

        Raises:
            ValueError: if the level is unknown.
            UnknownIdError: (a LookupError) if there is no such unit; it lists the ids of
                the level's units.
        """
        final = bool(self.cuts) and self.cuts[-1].final
        value = level_value(level)
        try:
            return self._tally.unit_results(value, unit_id, final=final)
        except LookupError:
            raise unknown_id(level, unit_id, self._ids(level)) from None

    def _ids(self, level: str) -> tuple[str, ...]:
        election = self._tally.election
        if level == "national":
            return ("",)
        if level == "state":
            return election.state_ids
        if level == "district":
            return election.district_ids
        if level == "section":
            return election.section_ids
        return tuple(c.id for c in election.casillas)

    def units(self, level: str) -> list[results_pb2.UnitResults]:
        """Results of every unit at ``level``, in definition order.

        Raises:
            ValueError: if the level is unknown.
        """
        level_value(level)  # raises for an unknown level
        return [self.unit(level, i) for i in self._ids(level)]


class Recounter:
    """Incremental recount of one verified tree (pure: the caller fetches leaves)."""

    def __init__(
        self,
        *,
        election: ElectionIndex,
        tree_size: int,
        root_hash: bytes,
        signed_roots: dict[int, bytes] | None = None,
    ) -> None:
        """Args:
        election: the election definition, already checked against the signed digest.
        tree_size: the verified tree size.
        root_hash: the verified root hash.
        signed_roots: other verified (tree size -> root) pairs of the same log, each
            checked when the recount reaches that size (a bundle's older cuts: this
            proves them consistent with the newest without consistency proofs).
        """
        self._signed_roots = dict(signed_roots or {})
        self._tally = Tally(election)
        self._range = CompactRange()
        self._size = tree_size
        self._root = root_hash
        self._cuts: list[CutCheck] = []
        self._last_was_cut = False
        self._ingest_records: int | None = None  # the figure of the last cut, if any
        self._failure: VerificationError | None = None
        self._party_ids = election.party_ids
        # (results digest, summary digest) of the last summary checked
        self._summarised: tuple[bytes, bytes] | None = None

    def feed(self, leaves: list[bytes]) -> None:
        """Feed the next consecutive leaves.

        Raises:
            MalformedDataError: more leaves than the tree holds are fed (content
                failures are reported by :meth:`finish`, after the root is checked).
            BadProofError: the leaves so far do not hash to a signed root given for
                their size.
        """
        if self._range.size + len(leaves) > self._size:
            raise MalformedDataError(f"more leaves than the tree of size {self._size} holds")
        append = self._range.append
        tally = self._tally
        for leaf in leaves:
            # (1) the root, leaf by leaf
            index = self._range.size
            append(leaf_hash(leaf))
            expected = self._signed_roots.get(index + 1)
            if expected is not None and self._range.root() != expected:
                raise BadProofError(
                    f"the first {index + 1} leaves do not hash to the root signed for that size"
                )
            if self._failure is not None:
                continue
            try:
                self._judge(index, leaf, tally)
            except VerificationError as e:
                self._failure = e

    def _judge(self, index: int, leaf: bytes, tally: Tally) -> None:
        # The tally's view of a leaf: acta records are applied without building a
        # message per option (see veritally_client._leaf); cut records are the real type.
        try:
            pb = parse_leaf_view(leaf)
        except MalformedDataError as e:
            raise MalformedDataError(f"leaf {index}: {e}") from e
        kind = pb.WhichOneof("kind")
        if kind == "acta_record":
            # (2) the acta records, in log order
            try:
                tally.apply_view(pb.acta_record, leaf)
            except ValueError as e:
                raise MalformedDataError(f"leaf {index}: {e}") from e
            self._last_was_cut = False
        elif kind == "cut_record":
            self._check_cut(index, pb.cut_record)
            self._last_was_cut = True
        else:
            raise MalformedDataError(f"leaf {index} holds neither an acta nor a cut record")

    def _check_cut(self, index: int, record: acta_pb2.CutRecord) -> None:
        # (3) numbering, coverage, and the signed digest
        expected = len(self._cuts) + 1
        if self._cuts and self._cuts[-1].final:
            raise AfterFinalCutError(
                f"leaf {index} is cut {record.cut_number}, signed after the final cut "
                f"{self._cuts[-1].cut_number}"
            )
        if record.cut_number != expected:
            raise MalformedDataError(
                f"leaf {index} is cut {record.cut_number}, expected cut {expected}"
            )
        if record.acta_records != self._tally.acta_records:
            raise RecountMismatchError(
                f"cut {record.cut_number} claims {record.acta_records} acta records, the log "
                f"holds {self._tally.acta_records} before it"
            )
        check_ingest_records(record, previous=self._ingest_records, previous_cut=len(self._cuts))
        self._ingest_records = ingest_records_of(record)
        final = False
        results = self._tally.results_bytes(final=False)
        digest = _sha256(results).digest()
        if not hmac.compare_digest(digest, record.results_sha256):
            final = True
            results = self._tally.results_bytes(final=True)
            digest = _sha256(results).digest()
        if not hmac.compare_digest(digest, record.results_sha256):
            raise RecountMismatchError(
                f"cut {record.cut_number}: results recomputed from the first "
                f"{record.acta_records} acta records hash to {digest.hex()}, the publisher "
                f"signed {record.results_sha256.hex()}"
            )
        self._check_summary(record, results, digest)
        self._cuts.append(CutCheck(record.cut_number, index, record.acta_records, digest, final))

    def _check_summary(self, record: acta_pb2.CutRecord, results: bytes, digest: bytes) -> None:
        # (3) the summary the cut signs is the one of the recomputed results
        # (docs/adr/0092); a heartbeat's (same results, same summary) is not summarised
        # again
        signed = record.summary_sha256
        if not signed or (digest, signed) == self._summarised:
            return
        summary = results_summary_bytes(results, party_ids=self._party_ids)
        got = _sha256(summary).digest()
        if not hmac.compare_digest(got, signed):
            raise RecountMismatchError(
                f"cut {record.cut_number}: the summary of the recomputed results hashes to "
                f"{got.hex()}, the publisher signed {signed.hex()}"
            )
        self._summarised = (digest, signed)

    def finish(self) -> RecountReport:
        """Check the recomputed root and return the report.

        Raises:
            BadProofError: the leaves do not hash to the signed root.
            RecountMismatchError: a cut's signed results differ from the recomputed ones,
                or a cut covers another number of acta records than precede it.
            MalformedDataError: fewer leaves than the tree holds, a leaf or record is
                malformed, cuts are misnumbered, or the log does not end in a cut.
        """
        # (4) complete, hashes to the signed root, then the content failures
        if self._range.size != self._size:
            raise MalformedDataError(f"{self._range.size} leaves fed of {self._size}")
        root = self._range.root()
        if not hmac.compare_digest(root, self._root):
            raise BadProofError(
                f"the {self._size} leaves hash to {root.hex()}, the signed root is "
                f"{self._root.hex()}"
            )
        if self._failure is not None:
            raise self._failure
        if not self._last_was_cut:
            raise MalformedDataError("the log does not end with a cut record")
        return RecountReport(
            tree_size=self._size,
            root_hash=root,
            acta_records=self._tally.acta_records,
            cuts=tuple(self._cuts),
            _tally=self._tally,
        )
