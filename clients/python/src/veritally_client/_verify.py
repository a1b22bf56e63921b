"""Verification of signed cuts: the pure core of the client (no IO, no clock).

A :class:`CutVerifier` holds the trust root and the limits; its methods take the bytes a
publisher served, the last verified state and the time, and return a
:class:`VerifiedCut` or raise a typed error. It never persists anything: the client
persists the new trusted state only after a method returned (python-tuf's
``TrustedMetadataSet`` under its ``Updater``).

Verifying a new cut (:meth:`CutVerifier.verify_update`):

0. size limits: the results blob, the cut leaf and the proofs are bounded before any
   hashing or parsing;
1. open the signed note with the trust root's publisher keys at its threshold
   (unknown signatures are ignored; a bad one by a trusted key is rejected), and count
   the valid cosignatures of the trust root's witnesses (:mod:`._witnesses`);
2. parse the checkpoint; its origin must be the trust root's origin and its tree
   non-empty;
3. parse the cut leaf: it must be a ``LogLeaf`` holding a ``CutRecord`` and be included
   as the LAST leaf (index size - 1) of the signed tree; the tree holds exactly the cut's
   acta records and one cut record per cut (size = acta_records + cut_number); its
   ingest figure, when reported, is not below its acta records;
4. hash the results bytes against the cut record's ``results_sha256`` BEFORE parsing
   them, then parse them;
5. reject rollback: a smaller tree or a lower cut number than the last verified one; the
   same size with another root, or the same cut number in another tree, is a fork
   (both signed notes are kept as evidence); a later cut's ingest figure must not be
   below the verified cut's, nor missing when the verified cut had one;
6. check the consistency proof from the last verified tree: the new tree must extend it.
   A proof that leads to the new signed root but to another old root is proof of a fork;
   any other failing proof is a bad proof;
6b. the witness quorum: at least ``k`` distinct listed witnesses cosigned the checkpoint
   (``InsufficientCosignaturesError``, carrying the refused note). It is checked after
   5 and 6 so that a note conflicting with the verified one is kept as fork evidence
   even when the witnesses were not shown it;
7. freshness: the cut time must not be older than the maximum age (unless the cut is the
   final one, after which the publisher signs nothing: its age is the close's), nor
   further in the future than the allowed clock skew; with witnesses, the ``k``-th
   newest cosignature time (cosignatures beyond the clock skew in the future not
   counted) is bounded by the same maximum age;
8. bind the results to the election: the definition digest must be the one pinned by the
   first verified cut (or given by the caller), and the results must cover exactly the
   cut record's acta records; results of a rehearsal (``test``) are refused unless the
   configuration allows test data (``RehearsalCutError``);
9. liveness: a cut behind ingest (``lag_records`` above zero) that covers no more acta
   records than the verified cut continues the verified cut's stall (or starts one); when
   its cut time is more than the maximum stall after the stall's first cut, the pipeline
   is stuck (``StalledError``). A cut that covers new records, or is not behind, ends it.

Verifying an answer that says the results did not change
(:meth:`CutVerifier.verify_unchanged`, docs/adr/0089) runs the same steps on the served
checkpoint, cut leaf and inclusion proof (the held ones when the tree is the verified
one), with step 4 replaced by:

4'. the cut record must sign the results digest of the held verified cut, whose results
   bytes were hashed against it when that cut was verified; those verified results are
   the new cut's. A cut signing other results is refused (``DigestMismatchError``);

and, in step 6, a tree one leaf larger than the verified one with no consistency proof
served gets the proof rebuilt from the inclusion proof of its last leaf (those hashes
are the verified tree's subtrees), checked as a served one would be.

Verifying a past cut (:meth:`CutVerifier.verify_historical`) runs 0-4, 6b and 8, then checks
consistency between the past tree and the last verified tree in whichever direction
applies; freshness and liveness do not apply and nothing about it is ever persisted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from veritally_client._checkpoint import Checkpoint, parse_checkpoint
from veritally_client._config import ClientConfig
from veritally_client._cut import (
    check_ingest_records,
    ingest_records_of,
    lag_records_of,
    parse_cut_leaf,
    parse_cut_time,
)
from veritally_client._election import ElectionIndex
from veritally_client._errors import (
    AfterFinalCutError,
    BadProofError,
    DigestMismatchError,
    ForkError,
    MalformedDataError,
    RehearsalCutError,
    RollbackError,
    StaleCheckpointError,
    StalledError,
    TrustRootError,
)
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._leaf import parse_leaf
from veritally_client._merkle import (
    HASH_SIZE,
    consistency_from_last_leaf,
    consistency_roots,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from veritally_client._navigate import find_unit
from veritally_client._note import open_note
from veritally_client._state import ForkEvidence, TrustedState
from veritally_client._trustroot import TrustedRoot
from veritally_client._view import (
    ElectionSource,
    RaceResult,
    UnitResult,
    check_definition,
    read_race,
    read_unit,
)
from veritally_client._witnesses import (
    Witnessed,
    count_cosignatures,
    require_quorum,
    witnessed_time,
)

__all__ = [
    "CutVerifier",
    "ProvenActa",
    "RecordedForkError",
    "SignedCutBytes",
    "VerifiedCut",
    "claimed_tree_size",
    "to_trusted_state",
    "verify_acta_inclusion",
]

CutRecordPb = acta_pb2.CutRecord
ResultsPb = results_pb2.Results
UnitResultsPb = results_pb2.UnitResults

# A serialized cut record is under 100 bytes; anything near this bound is not one.
_MAX_CUT_LEAF_BYTES = 4096
# A tree of at most 2**64 leaves has height 64: no valid proof has more hashes.
_MAX_PROOF_HASHES = 64

# Only this module may construct a VerifiedCut.
_CONSTRUCT = object()


class RecordedForkError(ForkError):
    """A ForkError that also carries the evidence record for the client's store.

    Callers catch :class:`ForkError`; the client reads :attr:`record` to persist it.
    """

    def __init__(self, message: str, *, record: ForkEvidence) -> None:
        super().__init__(message, evidence=(record.first, record.second))
        self.record = record


def _fork(
    message: str,
    *,
    kind: str,
    origin: str,
    first: bytes,
    second: bytes,
    proof: Sequence[bytes] = (),
) -> RecordedForkError:
    record = ForkEvidence(
        kind=kind,
        origin=origin,
        first=bytes(first),
        second=bytes(second),
        consistency_proof=tuple(bytes(p) for p in proof),
    )
    return RecordedForkError(message, record=record)


@dataclass(frozen=True, kw_only=True)
class SignedCutBytes:
    """The byte fields of a served ``SignedCut``, untrusted.

    Attributes:
        checkpoint: the signed note bytes.
        cut_leaf: the serialized cut record leaf.
        inclusion_proof: its audit path to the signed root.
        results: the serialized results blob.
    """

    checkpoint: bytes
    cut_leaf: bytes
    inclusion_proof: tuple[bytes, ...]
    results: bytes


@dataclass(frozen=True, kw_only=True, eq=False)
class VerifiedCut:
    """A cut that passed every check. Only :class:`CutVerifier` makes one.

    The protobuf messages it holds are the parsed verified bytes; treat them as read-only
    (the bytes fields are the source of truth).

    Attributes:
        checkpoint: the verified tree head (origin, size, root hash).
        note: the exact signed note bytes.
        cut_leaf: the exact cut leaf bytes (the last leaf of the tree).
        inclusion_proof: the cut leaf's audit path.
        cut_record: the parsed cut record.
        cut_time: the cut time (UTC).
        results: the parsed results.
        results_bytes: the exact results bytes, whose SHA-256 is in the cut record.
        stall_since: for the newest verified cut (``latest``, ``watch``), the cut time of
            the first cut this client saw behind ingest at the same acta records, or None
            if the cut is not behind; always None for past and offline cuts.
        stall_since_cut: that first cut's number (0 when ``stall_since`` is None).
        results_changed: for the newest verified cut, whether its cut record signs other
            results than the previous verified cut of this client did (True for the first
            cut, after a state written before results digests were kept, and for past and
            offline cuts). A heartbeat cut, made when no new acta record came in, has
            ``results_changed`` False.

    Results with names (:meth:`race`, :meth:`state`, :meth:`district`, :meth:`nation`)
    read the election definition the signed results are bound to: a client's cut fetches
    it from the publisher on first use (once per client, checked against the signed
    digest), any other cut needs :meth:`with_election`.
    """

    checkpoint: Checkpoint
    note: bytes
    cut_leaf: bytes
    inclusion_proof: tuple[bytes, ...]
    cut_record: acta_pb2.CutRecord
    cut_time: dt.datetime
    results: results_pb2.Results
    results_bytes: bytes
    stall_since: dt.datetime | None = None
    stall_since_cut: int = 0
    results_changed: bool = True
    _token: object = field(repr=False, compare=False)
    _election: ElectionSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _CONSTRUCT:
            raise TypeError("a VerifiedCut is only made by the verifier")

    @property
    def cut_number(self) -> int:
        """The cut number (1 for the first cut)."""
        return self.cut_record.cut_number

    @property
    def tree_size(self) -> int:
        """Size of the signed tree."""
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        """Root hash of the signed tree."""
        return self.checkpoint.root_hash

    @property
    def acta_records(self) -> int:
        """Number of acta records the results cover."""
        return self.cut_record.acta_records

    @property
    def ingest_records(self) -> int | None:
        """Acta records ingest had accepted when the cut was made, as far as the pipeline
        knew (a lower bound; see docs/adr/0054); None if the publisher does not say."""
        return ingest_records_of(self.cut_record)

    @property
    def lag_records(self) -> int | None:
        """``ingest_records - acta_records``: accepted records the cut does not cover yet;
        None if the publisher does not report ``ingest_records``."""
        return lag_records_of(self.cut_record)

    @property
    def final(self) -> bool:
        """Whether the publisher marked these results final (the night's last cut)."""
        return self.results.final

    @property
    def test(self) -> bool:
        """Whether these are results of a rehearsal (test data, never the election's)."""
        return self.results.test

    @property
    def definition_sha256(self) -> bytes:
        """SHA-256 of the election definition the results were computed with."""
        return self.results.definition_sha256

    def unit(self, level: str, unit_id: str = "") -> results_pb2.UnitResults:
        """Results of one unit at the national, state or district level.

        Section and casilla results are not in the signed blob; they come from a recount
        (see ``Client.recount`` and ``RecountReport.unit``).

        Args:
            level: ``"national"``, ``"state"`` or ``"district"``.
            unit_id: the state or district id (``""`` for the nation).

        Raises:
            UnknownIdError: (a LookupError) if there is no such unit in the results; it
                lists the level's unit ids.
            ValueError: if the level is unknown or not in the signed blob.
        """
        return find_unit(self.results, level, unit_id)

    def national(self) -> results_pb2.UnitResults:
        """The national results (always the first unit of the blob).

        Raises:
            UnknownIdError: (a LookupError) if the blob holds no national unit.
        """
        return self.unit("national")

    # -- results with names -------------------------------------------------------------

    def with_election(self, election: ElectionIndex) -> VerifiedCut:
        """This cut, reading its names from ``election``.

        Raises:
            DigestMismatchError: if ``election`` is not the definition the signed results
                are bound to.
        """
        check_definition(election, self.definition_sha256)
        return dataclasses.replace(self, _election=ElectionSource(index=election))

    def _named(self, loader: Callable[[], ElectionIndex]) -> VerifiedCut:
        """This cut, fetching its election with ``loader`` when names are first asked."""
        return dataclasses.replace(self, _election=ElectionSource(loader=loader))

    @property
    def election(self) -> ElectionIndex:
        """The election definition the names are read from, checked against the signed
        digest.

        Raises:
            ValueError: if the cut was made without one (see :meth:`with_election`).
            DigestMismatchError: if the definition fetched is not the one signed for.
            TransportError: if it had to be fetched and the publisher cannot be reached.
        """
        return self._source().index(self.definition_sha256)

    def _source(self) -> ElectionSource:
        if self._election is None:
            raise ValueError(
                f"cut {self.cut_number} has no election definition to read names from; "
                "attach one with cut.with_election(index)"
            )
        return self._election

    def race(
        self, contest: str, *, state: str | None = None, district: str | None = None
    ) -> RaceResult:
        """One contest in one unit, with names: ``race("DIP", district="09-05")``,
        ``race("SEN", state="Jalisco")``, ``race("PRES")`` (the nation), or a race by
        its id alone (``race("SEN-14")``).

        Args:
            contest: a contest id, or a race id (then without ``state`` or ``district``).
            state: a state id or name; with ``district``, the district must be in it.
            district: a district id or name.

        Raises:
            UnknownIdError: (a LookupError) if the contest, race, state or district is
                unknown, a name is ambiguous, or the contest is not held in the unit; it
                lists the valid ids.
            ValueError: if a race id is given with a unit, or the cut has no election
                definition (see :meth:`election`).
        """
        names = self._source().names(self.definition_sha256)
        return read_race(
            self.results, names, self.cut_number, contest, state=state, district=district
        )

    def state(self, state: str) -> UnitResult:
        """Every contest held in a state (by id or by name), with names.

        Raises:
            UnknownIdError: if there is no such state, or the name is ambiguous.
            ValueError: if the cut has no election definition (see :meth:`election`).
        """
        names = self._source().names(self.definition_sha256)
        return read_unit(self.results, names, self.cut_number, state=state)

    def district(self, district: str, *, state: str | None = None) -> UnitResult:
        """Every contest held in a district (by id, or by name within ``state``).

        Raises:
            UnknownIdError: if there is no such district (in the state), or the name is
                ambiguous.
            ValueError: if the cut has no election definition (see :meth:`election`).
        """
        names = self._source().names(self.definition_sha256)
        return read_unit(self.results, names, self.cut_number, state=state, district=district)

    def nation(self) -> UnitResult:
        """Every contest at the national level, with names.

        Raises:
            ValueError: if the cut has no election definition (see :meth:`election`).
        """
        names = self._source().names(self.definition_sha256)
        return read_unit(self.results, names, self.cut_number)

    def __repr__(self) -> str:
        return (
            f"VerifiedCut(cut_number={self.cut_number}, tree_size={self.tree_size}, "
            f"cut_time={self.cut_time.isoformat()}, acta_records={self.acta_records}, "
            f"ingest_records={self.ingest_records})"
        )


def claimed_tree_size(note: bytes) -> int:
    """The tree size a note CLAIMS, read without verifying anything.

    Used only to ask the publisher for the right consistency proof before the note is
    verified; the verifier re-reads the size from the verified note.

    Raises:
        MalformedDataError: if no size can be read.
    """
    lines = note.split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit() or len(lines[1]) > 20:
        raise MalformedDataError("the note does not hold a checkpoint tree size")
    return int(lines[1])


def _check_proof_shape(proof: Sequence[bytes], what: str) -> None:
    if len(proof) > _MAX_PROOF_HASHES:
        raise BadProofError(f"{what} has {len(proof)} hashes, at most {_MAX_PROOF_HASHES}")


def _consistency_roots(
    *, size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes] | None:
    """Both roots a consistency proof commits to, to tell a fork from a bad proof.

    Runs only after :func:`verify_consistency` rejected the proof, to classify the
    failure (:func:`consistency_roots`); None if the proof does not even have the right
    shape. ``verify_consistency`` stays the only acceptance check.
    """
    try:
        return consistency_roots(size1=size1, size2=size2, proof=proof, root1=root1)
    except BadProofError:
        return None


def _check_extends(
    *,
    older: tuple[bytes, Checkpoint],
    newer: tuple[bytes, Checkpoint],
    proof: Sequence[bytes],
    older_is_first: bool,
) -> None:
    """Verify that ``newer`` extends ``older``; a provable fork raises ForkError."""
    (old_note, old_cp), (new_note, new_cp) = older, newer
    _check_proof_shape(proof, "consistency proof")
    try:
        verify_consistency(
            size1=old_cp.size,
            size2=new_cp.size,
            proof=proof,
            root1=old_cp.root_hash,
            root2=new_cp.root_hash,
        )
    except BadProofError:
        roots = _consistency_roots(
            size1=old_cp.size, size2=new_cp.size, proof=proof, root1=old_cp.root_hash
        )
        if roots is not None and roots[1] == new_cp.root_hash and roots[0] != old_cp.root_hash:
            # The proof is bound to the signed new root, and shows that the new tree's
            # first old_size leaves have another root: two incompatible signed trees.
            first, second = (old_note, new_note) if older_is_first else (new_note, old_note)
            raise _fork(
                f"the signed tree of size {new_cp.size} does not extend the signed tree "
                f"of size {old_cp.size}: its prefix has another root",
                kind="non-extending",
                origin=old_cp.origin,
                first=first,
                second=second,
                proof=proof,
            ) from None
        raise


def _check_same_tree(*, first: tuple[bytes, Checkpoint], second: tuple[bytes, Checkpoint]) -> None:
    """Two signed checkpoints of one tree size must have one root: else a fork."""
    (first_note, first_cp), (second_note, second_cp) = first, second
    if first_cp.root_hash != second_cp.root_hash:
        raise _fork(
            f"two signed roots for tree size {second_cp.size}",
            kind="same-size",
            origin=second_cp.origin,
            first=first_note,
            second=second_note,
        )


@dataclass(frozen=True)
class _Parsed:
    checkpoint: Checkpoint
    cut_record: acta_pb2.CutRecord
    cut_time: dt.datetime
    results: results_pb2.Results
    witnessed: Witnessed = field(default_factory=Witnessed)


class CutVerifier:
    """Verifies signed cuts against a trust root. Pure: no IO and no clock of its own."""

    def __init__(self, *, trust_root: TrustedRoot, config: ClientConfig) -> None:
        """Args:
        trust_root: the verified trust root (publisher keys, threshold, origin).
        config: the safety limits.
        """
        self._root = trust_root
        self._config = config

    @property
    def trust_root(self) -> TrustedRoot:
        """The trust root in use."""
        return self._root

    def open_checkpoint(self, note: bytes) -> Checkpoint:
        """Steps 1-2 and 6b: a signed note by the trust root's publisher keys, at its
        threshold, cosigned by its witness quorum, holding a checkpoint of this log (e.g.
        a tiled log's ``checkpoint`` file).

        Raises:
            BadSignatureError, UnknownKeyError: if the signatures do not verify.
            InsufficientCosignaturesError: if fewer than the witness threshold cosigned.
            MalformedDataError: if it is not a checkpoint of this log's origin.
        """
        checkpoint, witnessed = self._open(note)
        self._require_quorum(witnessed, note, checkpoint)
        return checkpoint

    def _open(self, note: bytes) -> tuple[Checkpoint, Witnessed]:
        """Steps 1-2, the witness quorum aside."""
        # (1) signature by the trust root's publisher keys, at its threshold
        verified = open_note(note, self._root.verifiers, threshold=self._root.threshold)
        # (2) checkpoint of this log
        checkpoint = parse_checkpoint(verified.text)
        if checkpoint.origin != self._root.origin:
            raise MalformedDataError(
                f"checkpoint origin is {checkpoint.origin!r}, expected {self._root.origin!r}"
            )
        # (1) the witnesses' cosignatures, counted (the quorum is step 6b)
        return checkpoint, count_cosignatures(verified, self._root.witnesses)

    def _require_quorum(self, witnessed: Witnessed, note: bytes, checkpoint: Checkpoint) -> None:
        # (6b) k of the n listed witnesses
        require_quorum(
            witnessed, threshold=self._root.witness_threshold, note=note, size=checkpoint.size
        )

    def _verify_alone(self, cut: SignedCutBytes) -> _Parsed:
        """Steps 0-4: everything that depends on the cut alone."""
        # (0) bound sizes before hashing or parsing
        if len(cut.results) > self._config.max_results_bytes:
            raise MalformedDataError(
                f"results blob is {len(cut.results)} bytes, at most "
                f"{self._config.max_results_bytes}"
            )
        checkpoint, record, cut_time, witnessed = self._verify_head(cut)  # (0)-(3)
        # (4) the results bytes are what was signed, checked before parsing
        digest = hashlib.sha256(cut.results).digest()
        if not hmac.compare_digest(digest, record.results_sha256):
            raise DigestMismatchError(
                f"results blob hashes to {digest.hex()}, cut {record.cut_number} signed "
                f"{record.results_sha256.hex()}"
            )
        results = ResultsPb()
        try:
            results.ParseFromString(cut.results)
        except DecodeError as e:
            raise MalformedDataError(f"results blob does not parse: {e}") from e
        return _Parsed(checkpoint, record, cut_time, results, witnessed)

    def _verify_head(
        self, cut: SignedCutBytes
    ) -> tuple[Checkpoint, acta_pb2.CutRecord, dt.datetime, Witnessed]:
        """Steps 0-3 (the results aside): the signed tree and its last leaf."""
        # (0) bound sizes before hashing or parsing
        if len(cut.cut_leaf) > _MAX_CUT_LEAF_BYTES:
            raise MalformedDataError(f"cut leaf is {len(cut.cut_leaf)} bytes")
        _check_proof_shape(cut.inclusion_proof, "inclusion proof")
        checkpoint, witnessed = self._open(cut.checkpoint)  # (1) (2)
        if checkpoint.size < 1:
            raise MalformedDataError("a cut's tree holds at least its cut record")
        # (3) the cut record is the last leaf of the signed tree
        record = parse_cut_leaf(cut.cut_leaf)
        verify_inclusion(
            leaf_hash=leaf_hash(cut.cut_leaf),
            index=checkpoint.size - 1,
            size=checkpoint.size,
            proof=cut.inclusion_proof,
            root=checkpoint.root_hash,
        )
        if record.cut_number < 1 or record.acta_records + record.cut_number != checkpoint.size:
            raise MalformedDataError(
                f"cut {record.cut_number} covering {record.acta_records} acta records cannot "
                f"end a tree of size {checkpoint.size}"
            )
        check_ingest_records(record, previous=None, previous_cut=0)
        cut_time = parse_cut_time(record.cut_time)
        if len(record.results_sha256) != HASH_SIZE:
            raise MalformedDataError("results_sha256 is not a SHA-256 digest")
        return checkpoint, record, cut_time, witnessed

    def _check_binding(self, parsed: _Parsed, definition_sha256: bytes | None) -> None:
        # (8) results of this election, over exactly the cut's acta records, real unless
        # test data is allowed
        got = parsed.results.definition_sha256
        if definition_sha256 is not None and not hmac.compare_digest(got, definition_sha256):
            raise DigestMismatchError(
                f"results are for election definition {got.hex()}, expected "
                f"{definition_sha256.hex()}"
            )
        if len(got) != HASH_SIZE:
            raise MalformedDataError("results.definition_sha256 is not a SHA-256 digest")
        if parsed.results.acta_records != parsed.cut_record.acta_records:
            raise MalformedDataError(
                f"results cover {parsed.results.acta_records} acta records, the cut record "
                f"{parsed.cut_record.acta_records}"
            )
        if parsed.results.test and not self._config.allow_test:
            raise RehearsalCutError(
                f"cut {parsed.cut_record.cut_number} is of a rehearsal (test data); refused "
                "unless test data is allowed (ClientConfig.allow_test, --allow-test)"
            )

    def _made(
        self,
        cut: SignedCutBytes,
        parsed: _Parsed,
        stall: tuple[dt.datetime, int] | None = None,
        *,
        results_changed: bool = True,
    ) -> VerifiedCut:
        return VerifiedCut(
            checkpoint=parsed.checkpoint,
            note=bytes(cut.checkpoint),
            cut_leaf=bytes(cut.cut_leaf),
            inclusion_proof=tuple(bytes(p) for p in cut.inclusion_proof),
            cut_record=parsed.cut_record,
            cut_time=parsed.cut_time,
            results=parsed.results,
            results_bytes=bytes(cut.results),
            stall_since=stall[0] if stall else None,
            stall_since_cut=stall[1] if stall else 0,
            results_changed=results_changed,
            _token=_CONSTRUCT,
        )

    def verify_update(
        self,
        cut: SignedCutBytes,
        *,
        trusted: TrustedState | None,
        consistency_proof: Sequence[bytes],
        now: dt.datetime,
        definition_sha256: bytes | None = None,
    ) -> VerifiedCut:
        """Verify a cut that is to become the newest trusted one (steps 0-8).

        Args:
            cut: the served bytes.
            trusted: the last verified state, or None on first use (trust on the pinned
                trust root alone).
            consistency_proof: proof from ``trusted.tree_size`` to the cut's tree size
                (empty when there is no trusted state or the sizes are equal).
            now: the current time (timezone-aware).
            definition_sha256: the election definition digest the caller verified; when
                None the one pinned by ``trusted`` is used (or, on first use, any).

        Returns:
            The verified cut. The caller persists it as the new trusted state.

        Raises:
            BadSignatureError: a trusted key's signature does not verify.
            UnknownKeyError: not enough trusted keys signed the checkpoint.
            MalformedDataError: something does not parse or is inconsistent.
            BadProofError: an inclusion or consistency proof does not verify.
            DigestMismatchError: the results do not hash to the signed digest, or are for
                another election definition.
            RollbackError: the cut is older than the last verified one.
            ForkError: the cut's tree conflicts with the last verified one.
            InsufficientCosignaturesError: fewer than the trust root's witness threshold
                of its listed witnesses validly cosigned the checkpoint.
            StaleCheckpointError: the cut is too old or too far in the future, or its
                k-th newest cosignature is too old (or too few are not in the future).
            StalledError: the cuts have been behind ingest without covering a new record
                for longer than the maximum stall.
            TrustRootError: the trust root expired.
            ValueError: if ``now`` is naive (a caller bug).
        """
        self._check_now(now)
        parsed = self._verify_alone(cut)  # (0)-(4)
        return self._verify_newer(
            cut,
            parsed,
            trusted=trusted,
            consistency_proof=consistency_proof,
            now=now,
            definition_sha256=definition_sha256,
        )

    def verify_unchanged(
        self,
        answer: SignedCutBytes,
        *,
        previous: VerifiedCut,
        trusted: TrustedState,
        consistency_proof: Sequence[bytes],
        now: dt.datetime,
    ) -> VerifiedCut:
        """Verify an answer that claims the newest cut's results are ``previous``'s: the
        served checkpoint, cut leaf and inclusion proof without results (steps 0-3, 4',
        5-9; see the module docstring).

        Args:
            answer: the served fields; ``results`` empty, and ``cut_leaf`` and
                ``inclusion_proof`` empty when the tree is the verified one (the held
                ones are used then).
            previous: the verified cut ``trusted`` records, whose results are reused.
            trusted: the last verified state.
            consistency_proof: from ``trusted.tree_size`` to the new size; may be empty
                when the new tree is one leaf larger (it is rebuilt from the inclusion
                proof) or the same tree.
            now: the current time (timezone-aware).

        Returns:
            The verified cut, with ``previous``'s results and ``results_changed`` False.

        Raises:
            DigestMismatchError: the cut record signs other results than ``previous``'s
                (the publisher claimed they did not change).
            MalformedDataError: the answer carries results, or lacks the cut leaf of a
                tree that is not the verified one.
            BadSignatureError, UnknownKeyError, BadProofError, RollbackError, ForkError,
            StaleCheckpointError, StalledError, TrustRootError: as :meth:`verify_update`.
            ValueError: if ``previous`` is not the cut ``trusted`` records, or ``now`` is
                naive (caller bugs).
        """
        self._check_now(now)
        if (previous.tree_size, previous.root_hash) != (trusted.tree_size, trusted.root_hash):
            raise ValueError("previous is not the verified cut the trusted state records")
        if answer.results:
            raise MalformedDataError("an answer of unchanged results carries a results blob")
        served = answer
        held_leaf = not answer.cut_leaf and not answer.inclusion_proof
        if held_leaf:
            # The tree must be the verified one: its leaf and proof are held (steps 0-3
            # check them against the served checkpoint all the same).
            if claimed_tree_size(answer.checkpoint) != previous.tree_size:
                raise MalformedDataError(
                    "an answer of unchanged results for a new tree lacks its cut leaf"
                )
            served = dataclasses.replace(
                answer, cut_leaf=previous.cut_leaf, inclusion_proof=previous.inclusion_proof
            )
        try:
            checkpoint, record, cut_time, witnessed = self._verify_head(served)  # (0)-(3)
        except BadProofError:
            if held_leaf:
                # (5) the held leaf is not under this root of the verified size: the
                # publisher signed a second root for it
                _check_same_tree(
                    first=(trusted.checkpoint, _trusted_checkpoint(trusted)),
                    second=(bytes(answer.checkpoint), self._open(answer.checkpoint)[0]),
                )
            raise
        # (4') the cut signs the results digest of the verified cut, whose bytes were
        # hashed against it when that cut was verified
        held = previous.cut_record.results_sha256
        if not hmac.compare_digest(record.results_sha256, held):
            raise DigestMismatchError(
                f"the publisher answered that the results did not change, but cut "
                f"{record.cut_number} signs results {record.results_sha256.hex()} and the "
                f"verified cut {previous.cut_number} signed {held.hex()}"
            )
        proof = consistency_proof
        if not proof and checkpoint.size == trusted.tree_size + 1:
            # (6) rebuilt from the last leaf's path; checked below as a served proof
            proof = consistency_from_last_leaf(
                checkpoint.size, leaf_hash(served.cut_leaf), served.inclusion_proof
            )
        parsed = _Parsed(checkpoint, record, cut_time, previous.results, witnessed)
        return self._verify_newer(
            dataclasses.replace(served, results=previous.results_bytes),
            parsed,
            trusted=trusted,
            consistency_proof=proof,
            now=now,
            definition_sha256=None,
        )

    def _check_now(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if now >= self._root.expires:
            raise TrustRootError(
                f"trust root v{self._root.version} expired at {self._root.expires.isoformat()}"
            )

    def _verify_newer(
        self,
        cut: SignedCutBytes,
        parsed: _Parsed,
        *,
        trusted: TrustedState | None,
        consistency_proof: Sequence[bytes],
        now: dt.datetime,
        definition_sha256: bytes | None,
    ) -> VerifiedCut:
        """Steps 5-9 of a parsed cut that is to become the newest trusted one."""
        cp, record = parsed.checkpoint, parsed.cut_record
        if trusted is not None:
            if trusted.origin != self._root.origin:
                raise ValueError("the trusted state is of another origin")
            # (5) rollback and equivocation
            if cp.size < trusted.tree_size:
                raise RollbackError(
                    f"tree size {cp.size} is below the verified size {trusted.tree_size}"
                )
            if record.cut_number < trusted.cut_number:
                raise RollbackError(
                    f"cut {record.cut_number} is older than the verified cut {trusted.cut_number}"
                )
            if cp.size == trusted.tree_size:
                _check_same_tree(
                    first=(trusted.checkpoint, _trusted_checkpoint(trusted)),
                    second=(bytes(cut.checkpoint), cp),
                )
            if record.cut_number == trusted.cut_number and cp.size != trusted.tree_size:
                raise _fork(
                    f"cut {record.cut_number} is signed in trees of size "
                    f"{trusted.tree_size} and {cp.size}",
                    kind="same-cut",
                    origin=cp.origin,
                    first=trusted.checkpoint,
                    second=cut.checkpoint,
                )
            if trusted.final and record.cut_number > trusted.cut_number:
                raise AfterFinalCutError(
                    f"cut {record.cut_number} is signed after the final cut "
                    f"{trusted.cut_number}: the night was closed"
                )
            check_ingest_records(
                record, previous=trusted.ingest_records, previous_cut=trusted.cut_number
            )
            # (6) the new tree extends the verified one
            if cp.size > trusted.tree_size:
                _check_extends(
                    older=(trusted.checkpoint, _trusted_checkpoint(trusted)),
                    newer=(bytes(cut.checkpoint), cp),
                    proof=consistency_proof,
                    older_is_first=True,
                )
            elif consistency_proof:
                raise BadProofError("a consistency proof between equal trees must be empty")
        # (6b) the witness quorum
        self._require_quorum(parsed.witnessed, cut.checkpoint, cp)
        # (7) freshness
        self._check_witnessed_age(parsed, now)
        age = (now - parsed.cut_time).total_seconds()
        if age > self._config.max_checkpoint_age and not parsed.results.final:
            raise StaleCheckpointError(
                f"cut {record.cut_number} is {age:.0f} s old, at most "
                f"{self._config.max_checkpoint_age:.0f} s allowed"
            )
        if -age > self._config.max_clock_skew:
            raise StaleCheckpointError(
                f"cut {record.cut_number} is {-age:.0f} s in the future, at most "
                f"{self._config.max_clock_skew:.0f} s of clock skew allowed"
            )
        # (8) bound to the election
        pinned = definition_sha256
        if pinned is None and trusted is not None:
            pinned = trusted.definition_sha256
        self._check_binding(parsed, pinned)
        # (9) liveness: behind ingest without covering a new record for too long
        stall = _stall(parsed, trusted)
        changed = (
            trusted is None
            or trusted.results_sha256 is None
            or not hmac.compare_digest(trusted.results_sha256, record.results_sha256)
        )
        made = self._made(cut, parsed, stall, results_changed=changed)
        if stall is not None:
            since, since_cut = stall
            stalled = (parsed.cut_time - since).total_seconds()
            if stalled > self._config.max_stall_seconds:
                raise StalledError(
                    f"cut {record.cut_number} covers {record.acta_records} acta records and "
                    f"says ingest had accepted {made.ingest_records}; no cut has covered a "
                    f"new record since cut {since_cut}, {stalled:.0f} s earlier (at most "
                    f"{self._config.max_stall_seconds:.0f} s allowed)",
                    cut=made,
                    since_cut=since_cut,
                    stalled_seconds=stalled,
                )
        return made

    def _check_witnessed_age(self, parsed: _Parsed, now: dt.datetime) -> None:
        """Step 7 for the cosignatures: the k-th newest usable timestamp is fresh."""
        k = self._root.witness_threshold
        if k < 1:
            return
        config = self._config
        number = parsed.cut_record.cut_number
        when, future = witnessed_time(
            parsed.witnessed, threshold=k, now=now, max_skew=config.max_clock_skew
        )
        if when is None:
            raise StaleCheckpointError(
                f"cut {number} has {future} cosignature(s) more than "
                f"{config.max_clock_skew:.0f} s in the future; {k} witnesses must vouch for "
                "it at a time that has come"
            )
        age = (now - when).total_seconds()
        if age > config.max_checkpoint_age and not parsed.results.final:
            raise StaleCheckpointError(
                f"cut {number} was last cosigned by {k} witnesses {age:.0f} s ago, at most "
                f"{config.max_checkpoint_age:.0f} s allowed"
            )

    def verify_historical(
        self,
        cut: SignedCutBytes,
        *,
        trusted: TrustedState,
        consistency_proof: Sequence[bytes],
    ) -> VerifiedCut:
        """Verify a past (or any) cut against the last verified state, without freshness.

        Args:
            cut: the served bytes.
            trusted: the last verified state.
            consistency_proof: proof between the smaller and the larger of the cut's tree
                and the trusted tree (empty when the sizes are equal).

        Returns:
            The verified cut. It is never persisted as trusted state.

        Raises:
            BadSignatureError, UnknownKeyError, MalformedDataError, BadProofError,
            DigestMismatchError: as :meth:`verify_update`.
            ForkError: the cut's tree and the verified one cannot both be true.
        """
        parsed = self._verify_alone(cut)  # (0)-(4)
        cp = parsed.checkpoint
        self._require_quorum(parsed.witnessed, cut.checkpoint, cp)  # (6b)
        mine = (trusted.checkpoint, _trusted_checkpoint(trusted))
        theirs = (bytes(cut.checkpoint), cp)
        if cp.size == trusted.tree_size:
            _check_same_tree(first=mine, second=theirs)
        elif cp.size < trusted.tree_size:
            _check_extends(older=theirs, newer=mine, proof=consistency_proof, older_is_first=False)
        else:
            _check_extends(older=mine, newer=theirs, proof=consistency_proof, older_is_first=True)
        self._check_binding(parsed, trusted.definition_sha256)
        return self._made(cut, parsed)

    def verify_offline(self, cut: SignedCutBytes, *, definition_sha256: bytes) -> VerifiedCut:
        """Verify a cut on its own (steps 0-4 and 8), for offline bundles and archives.

        No trusted state and no clock are involved: the caller establishes consistency
        (a bundle holds every leaf, so a recount does) and judges the cut's age.

        Raises:
            BadSignatureError, UnknownKeyError, MalformedDataError, BadProofError,
            DigestMismatchError: as :meth:`verify_update`.
        """
        parsed = self._verify_alone(cut)  # (0)-(4)
        self._require_quorum(parsed.witnessed, cut.checkpoint, parsed.checkpoint)  # (6b)
        self._check_binding(parsed, definition_sha256)  # (8)
        return self._made(cut, parsed)

    def verify_evidence(self, evidence: ForkEvidence) -> None:
        """Check exported fork evidence: two notes signed under this trust root that
        cannot both be true (``"same-size"`` and ``"non-extending"`` evidence is checkable
        from the notes and proof alone; ``"same-cut"`` evidence only shows two signed
        trees, whose cut leaves must be fetched to see the conflict).

        Raises:
            VerificationError: (a subclass) if a note does not verify or the two do not
                conflict.
        """
        notes = []
        for note in (evidence.first, evidence.second):
            verified = open_note(note, self._root.verifiers, threshold=self._root.threshold)
            cp = parse_checkpoint(verified.text)
            if cp.origin != self._root.origin or cp.origin != evidence.origin:
                raise MalformedDataError("evidence note is for another origin")
            notes.append(cp)
        a, b = notes
        if evidence.kind == "same-cut":
            # Two trusted signatures over trees both claiming one cut number; the cut
            # leaves are fetched from the log (or a bundle) to see the conflict itself.
            return
        if a.size == b.size:
            if a.root_hash == b.root_hash:
                raise MalformedDataError("evidence notes agree: no fork")
            return
        small, large = (a, b) if a.size < b.size else (b, a)
        try:
            verify_consistency(
                size1=small.size,
                size2=large.size,
                proof=evidence.consistency_proof,
                root1=small.root_hash,
                root2=large.root_hash,
            )
        except BadProofError:
            roots = _consistency_roots(
                size1=small.size,
                size2=large.size,
                proof=evidence.consistency_proof,
                root1=small.root_hash,
            )
            if roots is not None and roots[1] == large.root_hash and roots[0] != small.root_hash:
                return
            raise BadProofError("the evidence's proof does not show a fork") from None
        raise MalformedDataError("the larger tree extends the smaller one: no fork")


@dataclass(frozen=True, kw_only=True, eq=False)
class ProvenActa:
    """An acta record proven to be in the log at a verified tree size.

    Only :func:`verify_acta_inclusion` makes one.

    Attributes:
        record: the acta record (parsed from ``leaf``).
        leaf: the exact leaf bytes.
        leaf_index: its position in the log.
        tree_size: the verified tree size it was proven against.
        proof: the inclusion proof hashes.
        checkpoint: the signed note of that tree.
    """

    record: acta_pb2.ActaRecord
    leaf: bytes
    leaf_index: int
    tree_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    _token: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _CONSTRUCT:
            raise TypeError("a ProvenActa is only made by verify_acta_inclusion")

    def __repr__(self) -> str:
        return (
            f"ProvenActa(acta_id={self.record.acta_id!r}, revision={self.record.revision}, "
            f"leaf_index={self.leaf_index}, tree_size={self.tree_size})"
        )


def verify_acta_inclusion(
    *,
    trusted: TrustedState,
    acta_id: str,
    revision: int | None,
    leaf: bytes,
    leaf_index: int,
    proof_tree_size: int,
    proof: Sequence[bytes],
) -> ProvenActa:
    """Verify that ``leaf`` is the acta record asked for and is in the verified tree.

    Steps: (1) the proof is for the verified tree size; (2) the leaf is included at
    ``leaf_index`` under the verified root; (3) the leaf holds an acta record with the
    acta id (and revision, when one was asked for) that was asked for.

    Raises:
        BadProofError: the proof is for another size or does not lead to the root.
        MalformedDataError: the leaf is not the acta record asked for.
    """
    # (1) the tree we hold a signed checkpoint for
    if proof_tree_size != trusted.tree_size:
        raise BadProofError(
            f"inclusion proof is for tree size {proof_tree_size}, expected {trusted.tree_size}"
        )
    _check_proof_shape(proof, "inclusion proof")
    # (2) included under the signed root
    verify_inclusion(
        leaf_hash=leaf_hash(leaf),
        index=leaf_index,
        size=trusted.tree_size,
        proof=proof,
        root=trusted.root_hash,
    )
    # (3) the record asked for
    pb = parse_leaf(leaf)
    if pb.WhichOneof("kind") != "acta_record":
        raise MalformedDataError(f"leaf {leaf_index} is not an acta record")
    record = pb.acta_record
    if record.acta_id != acta_id:
        raise MalformedDataError(f"leaf {leaf_index} is acta {record.acta_id!r}, not {acta_id!r}")
    if revision is not None and record.revision != revision:
        raise MalformedDataError(
            f"leaf {leaf_index} is revision {record.revision} of {acta_id!r}, not {revision}"
        )
    return ProvenActa(
        record=record,
        leaf=bytes(leaf),
        leaf_index=leaf_index,
        tree_size=trusted.tree_size,
        proof=tuple(bytes(p) for p in proof),
        checkpoint=trusted.checkpoint,
        _token=_CONSTRUCT,
    )


def _stall(parsed: _Parsed, trusted: TrustedState | None) -> tuple[dt.datetime, int] | None:
    """Step 9: ``(time, number)`` of the cut the current stall started at, or None.

    A stall is a run of cuts behind ingest at the same acta records. It starts at the
    first such cut this client verified: a stall already under way when the client last
    looked (a cut behind but not yet seen) is counted from the first cut it saw, so the
    limit errs towards reporting later, never earlier.
    """
    record = parsed.cut_record
    lag = lag_records_of(record)
    if lag is None or lag <= 0:
        return None
    here = (parsed.cut_time, record.cut_number)
    if trusted is None or record.acta_records > trusted.acta_records:
        return here  # the first look, or the pipeline moved on: a new run
    if trusted.stall_since is not None:
        return trusted.stall_since, trusted.stall_since_cut
    return here


def _trusted_checkpoint(trusted: TrustedState) -> Checkpoint:
    return Checkpoint(trusted.origin, trusted.tree_size, trusted.root_hash)


def to_trusted_state(cut: VerifiedCut, *, trust_root: TrustedRoot | None = None) -> TrustedState:
    """The trusted state that records ``cut`` (for the client to persist), bound to the
    trust root it was verified under when one is given."""
    return TrustedState(
        origin=cut.checkpoint.origin,
        checkpoint=cut.note,
        tree_size=cut.tree_size,
        root_hash=cut.root_hash,
        cut_number=cut.cut_number,
        definition_sha256=cut.definition_sha256,
        ingest_records=cut.ingest_records,
        stall_since=cut.stall_since,
        stall_since_cut=cut.stall_since_cut,
        final=cut.final,
        results_sha256=cut.cut_record.results_sha256,
        trust_root_version=trust_root.version if trust_root is not None else 0,
        trust_root_sha256=(
            hashlib.sha256(trust_root.document).digest() if trust_root is not None else None
        ),
    )
