"""Ingest's decisions: duplicates, conflicts, double capture, corrections and
cross-checks, over an in-memory index of the store, committed one batch at a time.

Every batch is decided first (synchronously, against the index plus what earlier actas of
the same batch changed), then written in one SQLite transaction, and only then are the
outcomes returned and the index updated. So an outcome that says ACCEPTED is durable, and
a failed commit leaves neither the store nor the index changed.

Decisions for an acta that passed PREP's validation (``rules.validate``):

1. already logged with the same content (figures, not provenance): DUPLICATE, nothing
   changes; same content as an older revision: DUPLICATE of that revision;
2. already logged with different content: REJECTED ALREADY_EXISTS, and the submission is
   kept in the ``conflicts`` table for audit (a change needs ``CorrectActa``);
3. single capture: logged as revision 1;
4. double capture: a capture agreeing with a pending capture of a *different* operator is
   logged (the confirmed, earlier capture is the one written); the same operator sending
   the same figures again is a DUPLICATE (nothing changes; a capture cannot confirm
   itself); the same operator sending *different* figures is REJECTED
   FAILED_PRECONDITION on ``provenance.operator_id`` (the disagreement must come from a
   second operator, or be settled by ``ResolveCrossCheck``); otherwise the capture is
   stored: the first one AWAITING_SECOND_CAPTURE, later ones CROSS_CHECK, up to
   ``MAX_PENDING_CAPTURES`` (then REJECTED FAILED_PRECONDITION until it is resolved).

Conflicts (2) are kept for audit up to ``MAX_CONFLICTS_PER_ACTA`` per acta; later ones
are refused the same way and counted.

Who the operator is, and which centre may capture a casilla, come from the caller's
verified identity (``operators``): before (1), a casilla assigned to another centre is
REJECTED PERMISSION_DENIED on ``casilla_id``, and the provenance's centre and operator
are overwritten with the caller's; in (4) operators are compared by SPIFFE ID and a
certificate naming no operator is REJECTED PERMISSION_DENIED. A correction is logged
only when a second, distinct operator submits the same one (dual control); until then
it is AWAITING_SECOND_APPROVAL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter

from google.protobuf.timestamp_pb2 import Timestamp

from veritally import bounds
from veritally.errors import ServiceError
from veritally.ingest import operators, rules
from veritally.ingest.operators import Caller, Proposal
from veritally.ingest.store import Capture, IngestStore, Logged, NightClosed, Writes
from veritally.reject import RejectCode, Rejection
from veritally.storage import STREAM_PAGE_BYTES, STREAM_PAGE_LEAVES, DbLocation
from veritally_client import protocol
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import acta_pb2, ingest_pb2

log = logging.getLogger(__name__)

ActaPb = acta_pb2.Acta
LogLeafPb = acta_pb2.LogLeaf
ActaOutcomePb = ingest_pb2.ActaOutcome
CrossCheckPb = ingest_pb2.CrossCheck

_ACCEPTED = ingest_pb2.OUTCOME_STATUS_ACCEPTED
_DUPLICATE = ingest_pb2.OUTCOME_STATUS_DUPLICATE
_REJECTED = ingest_pb2.OUTCOME_STATUS_REJECTED
_AWAITING = ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE
_CROSS_CHECK = ingest_pb2.OUTCOME_STATUS_CROSS_CHECK
_AWAITING_APPROVAL = ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_APPROVAL

# Pending captures per acta: double capture needs two, a disagreement a third operator's
# to settle it; past that the acta waits for ResolveCrossCheck (FAILED_PRECONDITION), so
# that one identity cannot grow the captures table without bound (~16 KiB per capture).
MAX_PENDING_CAPTURES = 3
# Conflicting submissions kept per acta for audit (each up to an acta of
# bounds.MAX_ACTA_BYTES). More are still refused ALREADY_EXISTS but only counted, in the
# conflicts_dropped table: the first ones already show who sent what.
MAX_CONFLICTS_PER_ACTA = 10
# Actas of casillas not in the catalogue (PREP's "fuera de catálogo") one capture centre
# may have logged or waiting for a second capture. PREP sees a handful per night; the
# bound keeps one centre from growing the log (or the pending table) with invented
# casilla ids, which no catalogue limits.
MAX_OUT_OF_CATALOGUE_PER_CENTRE = 100
_OUT_OF_CATALOGUE = acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE


def _ignore(seconds: float) -> None:
    """No metrics: nothing to observe."""


# Cross-checks per ListCrossChecks page when the caller asks for none, and at most.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
# Bytes of captures per ListCrossChecks page past the first cross-check: with at most
# MAX_PENDING_CAPTURES actas of bounds.MAX_ACTA_BYTES each, a page stays under
# 2 MiB + 48 KiB, below gRPC's default 4 MiB receive limit of an operator's client.
CROSS_CHECK_PAGE_BYTES = 2 * 1024 * 1024


class CommitError(ServiceError):
    """A batch could not be committed; none of it was accepted (the caller may retry)."""


def _rejected(acta_id: str, rejection: Rejection) -> ActaOutcomePb:
    return ActaOutcomePb(
        acta_id=acta_id,
        status=_REJECTED,
        code=rejection.code.name,
        field=rejection.field,
        message=rejection.message,
    )


def _too_big_stamped(size: int) -> Rejection:
    return Rejection(
        RejectCode.INVALID_ARGUMENT,
        "acta",
        f"with the capture centre's identity the acta is {size} bytes, "
        f"at most {bounds.MAX_ACTA_BYTES}",
    )


def _captures_full(acta_id: str, pending: int) -> Rejection:
    return Rejection(
        RejectCode.FAILED_PRECONDITION,
        "",
        f"acta {acta_id} already has {pending} captures that disagree (at most "
        f"{MAX_PENDING_CAPTURES}); it waits for an operator's ResolveCrossCheck",
    )


def _logged_outcome(acta_id: str, status: int, logged: Logged) -> ActaOutcomePb:
    return ActaOutcomePb(
        acta_id=acta_id,
        status=status,  # type: ignore[arg-type]  # an OutcomeStatus value
        revision=logged.revision,
        sequence=logged.sequence,
        counted=logged.counted,
        not_counted_reason=logged.reason,  # type: ignore[arg-type]  # a NotCountedReason
    )


@dataclass(slots=True)
class _Batch:
    """Changes decided for one batch, visible to the later actas of the same batch."""

    next_sequence: int
    received_field: bytes  # ActaRecord.received_time, encoded once per batch
    received_text: str
    logged: dict[str, Logged] = field(default_factory=dict)
    pending: dict[str, tuple[Capture, ...]] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    writes: Writes = field(default_factory=Writes)


class IngestEngine:
    """Decides, commits and streams; one instance per ingest process."""

    def __init__(
        self,
        *,
        election: ElectionIndex,
        db_path: DbLocation,
        double_capture: bool = True,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """Open the store and index it.

        Args:
            election: the validated election definition.
            db_path: the SQLite file (created if missing) or PostgreSQL database.
            double_capture: require two agreeing captures by different operators.
            clock: current UTC time (tests may fix it).
        """
        self.election = election
        self.catalogue = rules.Catalogue.from_index(election)
        self.double_capture = double_capture
        self._clock = clock
        self._store = IngestStore(db_path)
        # Decided batches waiting for the group commit, in decision order.
        self._queue: list[tuple[_Batch, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._closed = False
        # The close of the night (None while open), and whether a close is under way:
        # from the moment it starts, nothing new is decided.
        self._night: NightClosed | None = None
        self._closing = False
        self._logged: dict[str, Logged] = {}
        self._pending: dict[str, tuple[Capture, ...]] = {}
        self._conflicts: dict[str, int] = {}
        # acta_id -> proposing operator's SPIFFE ID -> correction awaiting a second one.
        self._proposals: dict[str, dict[str, Proposal]] = {}
        # casilla_id -> the capture centre that alone may capture it.
        self._assigned = operators.assignments(election)
        #: Called with the seconds of each group commit (the service's metrics).
        self.observe_commit: Callable[[float], None] = _ignore
        if not self._assigned:
            log.warning("the election assigns no casilla to a capture centre: any may capture")
        try:
            self._load()
        except BaseException:
            self._store.close()  # a refused store is not left open
            raise

    def _load(self) -> None:
        self._night = self._store.night_closed()
        self._size = self._store.log_size()
        # Sequences are handed out when a batch is decided; ``_size`` moves on commit.
        self._next_sequence = self._size
        self._logged = dict(self._store.logged())
        pending: dict[str, list[Capture]] = {}
        for acta_id, capture in self._store.captures():
            pending.setdefault(acta_id, []).append(capture)
        self._pending = {k: tuple(v) for k, v in pending.items()}
        self._conflicts = dict(self._store.conflict_counts())
        # capture centre -> its out-of-catalogue acta ids, logged or pending
        self._outside: dict[str, set[str]] = {}
        for acta_id, logged in self._logged.items():
            if logged.reason == _OUT_OF_CATALOGUE:
                first = self._store.leaves_of(acta_id)[0][2]
                record = protocol.parse_leaf(first).acta_record
                centre = record.acta.provenance.capture_centre_id
                self._outside.setdefault(centre, set()).add(acta_id)
        for acta_id, captures in self._pending.items():
            if not self.election.has_casilla(acta_id.rpartition("/")[0]):
                for capture in captures:
                    centre = operators.caller_from_spiffe_id(capture.submitter).centre
                    self._outside.setdefault(centre, set()).add(acta_id)
        self._proposals = {}
        for acta_id, operator, supersedes, digest, acta, reason, time in self._store.proposals():
            self._proposals.setdefault(acta_id, {})[operator] = Proposal(
                operator, supersedes, digest, acta, reason, time
            )

    @property
    def log_size(self) -> int:
        """Records in the acta log (committed)."""
        return self._size

    def pending_captures(self) -> tuple[int, int]:
        """Actas with captures not yet logged: ``(awaiting a second capture, in the
        cross-check queue)``."""
        counts = [len(c) for c in list(self._pending.values())]
        awaiting = counts.count(1)
        return awaiting, len(counts) - awaiting

    @property
    def night_closed(self) -> NightClosed | None:
        """The close of the night, or None while it is open."""
        return self._night

    @property
    def store(self) -> IngestStore:
        """The underlying store (audit queries)."""
        return self._store

    # -- batches ------------------------------------------------------------------------

    def _new_batch(self) -> _Batch:
        now = self._clock()
        ts = Timestamp()
        ts.FromDatetime(now)
        return _Batch(
            next_sequence=self._next_sequence,
            received_field=protocol.encode_timestamp(ts),
            received_text=now.isoformat(timespec="microseconds"),
        )

    def _get_logged(self, batch: _Batch, acta_id: str) -> Logged | None:
        found = batch.logged.get(acta_id)
        return found if found is not None else self._logged.get(acta_id)

    def _get_pending(self, batch: _Batch, acta_id: str) -> tuple[Capture, ...]:
        found = batch.pending.get(acta_id)
        return found if found is not None else self._pending.get(acta_id, ())

    def _append(
        self,
        batch: _Batch,
        acta: bytes,
        verdict: rules.Verdict,
        digest: bytes,
        revision: int,
        *,
        reason: str = "",
        approved_by: Sequence[str] = (),
    ) -> Logged:
        """Append one record (``acta`` serialized deterministically) to the batch's part
        of the log."""
        sequence = batch.next_sequence
        batch.next_sequence += 1
        leaf_bytes = protocol.leaf_bytes(
            acta_id=verdict.acta_id,
            revision=revision,
            acta=acta,
            received_time=batch.received_field,
            counted=verdict.counted,
            not_counted_reason=verdict.not_counted_reason,
            sequence=sequence,
            reason=reason,
            approved_by=approved_by,
        )
        logged = Logged(revision, sequence, digest, verdict.counted, verdict.not_counted_reason)
        batch.logged[verdict.acta_id] = logged
        writes = batch.writes
        writes.log.append((sequence, verdict.acta_id, revision, leaf_bytes))
        writes.actas.append(
            (
                verdict.acta_id,
                revision,
                sequence,
                digest,
                int(verdict.counted),
                verdict.not_counted_reason,
            )
        )
        if self._get_pending(batch, verdict.acta_id):
            batch.pending[verdict.acta_id] = ()
            writes.clear_captures.append(verdict.acta_id)
        return logged

    def _revisions(self, batch: _Batch, acta_id: str) -> list[tuple[int, int, bytes]]:
        """``(revision, sequence, leaf)`` of every revision of ``acta_id``: committed, in
        a group still being committed, or earlier in this batch (a rare path: only for
        submissions that differ from the latest revision)."""
        found = {rev: (rev, seq, leaf) for rev, seq, leaf in self._store.leaves_of(acta_id)}
        for writes in [b.writes for b, _ in self._queue] + [batch.writes]:
            for seq, aid, rev, leaf_bytes in writes.log:
                if aid == acta_id:
                    found[rev] = (rev, seq, leaf_bytes)
        return [found[rev] for rev in sorted(found)]

    def _conflict(
        self, batch: _Batch, acta_id: str, acta: ActaPb, digest: bytes, latest: Logged
    ) -> Logged | Rejection:
        """A submission that differs from the latest revision: a DUPLICATE of an older
        revision with the same content, or the rejection naming the first field that
        differs from the latest revision."""
        field_path = ""
        for revision, sequence, leaf_bytes in self._revisions(batch, acta_id):
            record = LogLeafPb.FromString(leaf_bytes).acta_record
            if rules.content_digest(record.acta) == digest:
                return Logged(revision, sequence, digest, record.counted, record.not_counted_reason)
            if revision == latest.revision:
                field_path = rules.first_difference(record.acta, acta)
        return Rejection(
            RejectCode.ALREADY_EXISTS,
            field_path,
            f"acta {acta_id} is logged at revision {latest.revision} with other content "
            f"({field_path or 'figures'} differs); a change needs a correction",
        )

    def _admit(
        self, acta: ActaPb, caller: Caller, *, capture: bool = True
    ) -> tuple[rules.Verdict, bytes, bytes] | ActaOutcomePb:
        """Validate ``acta``, check that ``caller`` may capture its casilla (a capture),
        stamp the caller's centre and operator on it and serialize it.

        Returns:
            The verdict, the acta's leaf bytes and their digest; or the REJECTED outcome
            when the acta is invalid or not the caller's to capture.
        """
        verdict = rules.validate(acta, self.catalogue)
        if isinstance(verdict, Rejection):
            return _rejected(rules.acta_id_of(acta), verdict)
        if capture:
            refused = operators.check_assignment(self._assigned, acta.casilla_id, caller)
            if refused is not None:
                return _rejected(verdict.acta_id, refused)
        # From the verified identity only; whatever the client wrote is replaced.
        acta.provenance.capture_centre_id = caller.centre
        acta.provenance.operator_id = caller.operator
        acta_bytes, digest = protocol.serialize_acta(acta)
        if len(acta_bytes) > bounds.MAX_ACTA_BYTES:
            # Only the stamped identity can take it there: readers size their pages on
            # leaves of at most bounds.MAX_LEAF_BYTES, so the bound holds as logged too.
            return _rejected(verdict.acta_id, _too_big_stamped(len(acta_bytes)))
        return verdict, acta_bytes, digest

    def _decide(self, batch: _Batch, acta: ActaPb, caller: Caller) -> ActaOutcomePb:
        submitter = caller.spiffe_id
        admitted = self._admit(acta, caller)
        if isinstance(admitted, ActaOutcomePb):
            return admitted
        verdict, acta_bytes, digest = admitted
        acta_id = verdict.acta_id
        if verdict.not_counted_reason == _OUT_OF_CATALOGUE:
            refused = self._outside_bound(acta_id, caller)
            if refused is not None:
                return _rejected(acta_id, refused)
        # (1)(2) already logged
        logged = self._get_logged(batch, acta_id)
        if logged is not None:
            if logged.digest == digest:
                return _logged_outcome(acta_id, _DUPLICATE, logged)
            conflict = self._conflict(batch, acta_id, acta, digest, logged)
            if isinstance(conflict, Logged):
                return _logged_outcome(acta_id, _DUPLICATE, conflict)
            self._keep_conflict(batch, acta_id, acta_bytes, submitter, conflict.message)
            return _rejected(acta_id, conflict)
        # (3) single capture
        if not self.double_capture:
            logged = self._append(batch, acta_bytes, verdict, digest, 1)
            return _logged_outcome(acta_id, _ACCEPTED, logged)
        # (4) double capture, operators told apart by their certificates' SPIFFE IDs
        refused = operators.check_capture_operator(caller)
        if refused is not None:
            return _rejected(acta_id, refused)
        operator = caller.spiffe_id
        pending = self._get_pending(batch, acta_id)
        same_operator = False
        for capture in pending:
            if capture.digest == digest:
                if capture.operator_id == operator:
                    return ActaOutcomePb(acta_id=acta_id, status=_DUPLICATE)
                # The confirmed (earlier) capture is logged, as it was received.
                logged = self._append(batch, capture.acta, verdict, digest, 1)
                return _logged_outcome(acta_id, _ACCEPTED, logged)
            same_operator = same_operator or capture.operator_id == operator
        if same_operator:
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.FAILED_PRECONDITION,
                    "provenance.operator_id",
                    f"operator {caller.operator!r} of {caller.centre!r} already captured acta "
                    f"{acta_id} with other "
                    "figures; a second capture must come from another operator",
                ),
            )
        if len(pending) >= MAX_PENDING_CAPTURES:
            return _rejected(acta_id, _captures_full(acta_id, len(pending)))
        capture = Capture(
            operator,
            digest,
            acta_bytes,
            submitter,
            batch.received_text,
        )
        batch.pending[acta_id] = (*pending, capture)
        batch.writes.captures.append(
            (
                acta_id,
                len(pending),
                operator,
                digest,
                capture.acta,
                submitter,
                batch.received_text,
            )
        )
        status = _AWAITING if not pending else _CROSS_CHECK
        return ActaOutcomePb(acta_id=acta_id, status=status)

    def _outside_bound(self, acta_id: str, caller: Caller) -> Rejection | None:
        """Count an out-of-catalogue acta against its centre's bound, or refuse it."""
        mine = self._outside.setdefault(caller.centre, set())
        if acta_id in mine:
            return None
        if len(mine) >= MAX_OUT_OF_CATALOGUE_PER_CENTRE:
            return Rejection(
                RejectCode.FAILED_PRECONDITION,
                "casilla_id",
                f"capture centre {caller.centre!r} already has "
                f"{MAX_OUT_OF_CATALOGUE_PER_CENTRE} actas of casillas not in the catalogue",
            )
        mine.add(acta_id)
        return None

    def _keep_conflict(
        self, batch: _Batch, acta_id: str, acta_bytes: bytes, submitter: str, message: str
    ) -> None:
        """Keep a refused conflicting submission for audit, or only count it once
        MAX_CONFLICTS_PER_ACTA are kept."""
        kept = batch.conflicts.get(acta_id, self._conflicts.get(acta_id, 0))
        if kept >= MAX_CONFLICTS_PER_ACTA:
            batch.writes.dropped_conflicts.append((acta_id, batch.received_text))
            return
        batch.conflicts[acta_id] = kept + 1
        batch.writes.conflicts.append(
            (acta_id, acta_bytes, submitter, batch.received_text, message)
        )

    async def _commit(self, batch: _Batch) -> None:
        """Make the batch's decisions visible to later decisions at once, then wait until
        the group commit that carries it has made it durable.

        Raises:
            CommitError: if that commit failed; nothing of the batch was written.
        """
        self._logged.update(batch.logged)
        self._conflicts.update(batch.conflicts)
        for acta_id, captures in batch.pending.items():
            if captures:
                self._pending[acta_id] = captures
            else:
                self._pending.pop(acta_id, None)
        self._next_sequence = batch.next_sequence
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="ingest-writer")
        self._wake.set()
        await done

    async def _write_loop(self) -> None:
        """Group commit: every batch decided while the previous transaction was being
        written goes into the next one, in decision order; one fsync for all of them."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closed:
                    return
                continue
            group, self._queue = self._queue, []
            merged = Writes()
            for batch, _ in group:
                merged.extend(batch.writes)
            started = perf_counter()
            try:
                await asyncio.to_thread(self._store.commit, merged)
            except Exception as e:
                # Nothing of the group was written. Batches decided after it built on its
                # decisions, so they fail too; the index is rebuilt from the store.
                failed = group + self._queue
                self._queue = []
                log.exception("commit failed; %d batches not accepted", len(failed))
                for _, done in failed:
                    if not done.done():
                        done.set_exception(CommitError(str(e)))
                self._load()
                continue
            self.observe_commit(perf_counter() - started)
            for _, done in group:
                if not done.done():
                    done.set_result(None)
            size = max(batch.next_sequence for batch, _ in group)
            if size != self._size:
                self._size = size
                async with self._changed:
                    self._changed.notify_all()

    async def submit(self, actas: Sequence[ActaPb], *, submitter: str = "") -> list[ActaOutcomePb]:
        """Decide and commit a batch of captures; one outcome per acta, in order.

        Args:
            actas: the captures, processed in order (the messages may be modified: the
                capture centre and operator ids are set from ``submitter``).
            submitter: the caller's verified SPIFFE ID from the mesh (``""`` if none).

        Raises:
            CommitError: if the batch could not be committed; none of it is accepted.
        """
        closed = await self._refuse_when_closed()
        if closed is not None:
            return [_rejected(rules.acta_id_of(acta), closed) for acta in actas]
        # Deciding is synchronous: no other call interleaves with it.
        batch = self._new_batch()
        caller = operators.caller_from_spiffe_id(submitter)
        outcomes = [self._decide(batch, acta, caller) for acta in actas]
        await self._commit(batch)
        return outcomes

    # -- operator calls -----------------------------------------------------------------

    async def correct(
        self, acta: ActaPb, *, supersedes_revision: int, reason: str, submitter: str = ""
    ) -> ActaOutcomePb:
        """Propose or approve a corrected revision of a logged acta (dual control).

        The first operator's correction is recorded, AWAITING_SECOND_APPROVAL; when a
        second, distinct operator submits the same figures over the same revision, the
        correction is appended with the first operator's reason and both operators. One
        operator has at most one proposal per acta: a new one replaces it. A retry of a
        correction already applied (same figures, superseding the revision just before
        the latest) is answered DUPLICATE with the latest revision.

        Args:
            acta: the corrected acta.
            supersedes_revision: the revision it corrects (the latest).
            reason: why (required, at most ``operators.MAX_REASON_CHARS`` characters).
            submitter: the caller's verified SPIFFE ID (an operator's).

        Raises:
            CommitError: if the correction could not be committed.
        """
        caller = operators.caller_from_spiffe_id(submitter)
        refused = operators.check_operator(caller, "a correction") or operators.check_reason(reason)
        if refused is None:
            refused = await self._refuse_when_closed()
        if refused is not None:
            return _rejected(rules.acta_id_of(acta), refused)
        admitted = self._admit(acta, caller, capture=False)
        if isinstance(admitted, ActaOutcomePb):
            return admitted
        verdict, acta_bytes, digest = admitted
        acta_id = verdict.acta_id
        logged = self._logged.get(acta_id)
        if logged is None:
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.NOT_FOUND,
                    "acta",
                    f"acta {acta_id} is not logged; there is nothing to correct",
                ),
            )
        if logged.digest == digest and supersedes_revision in (
            logged.revision,
            logged.revision - 1,
        ):
            return _logged_outcome(acta_id, _DUPLICATE, logged)
        if supersedes_revision != logged.revision:
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.FAILED_PRECONDITION,
                    "supersedes_revision",
                    f"the latest revision of {acta_id} is {logged.revision}, "
                    f"not {supersedes_revision}",
                ),
            )
        batch = self._new_batch()
        proposals = self._proposals.get(acta_id, {})
        first = operators.matching_proposal(
            proposals, caller=caller, supersedes_revision=supersedes_revision, digest=digest
        )
        if first is None:
            own = proposals.get(caller.spiffe_id)
            if (
                own is not None
                and own.digest == digest
                and own.supersedes_revision == supersedes_revision
            ):
                # Her own proposal again (a retry): nothing changes, nothing is written.
                return ActaOutcomePb(acta_id=acta_id, status=_AWAITING_APPROVAL)
            # (dual control) recorded, not logged: a second operator must agree.
            proposal = Proposal(
                caller.spiffe_id,
                supersedes_revision,
                digest,
                acta_bytes,
                reason,
                batch.received_text,
            )
            batch.writes.proposals.append(
                (
                    acta_id,
                    caller.spiffe_id,
                    supersedes_revision,
                    digest,
                    acta_bytes,
                    reason,
                    batch.received_text,
                )
            )
            batch.writes.actions.append(
                (
                    acta_id,
                    "correction_proposed",
                    logged.revision + 1,
                    reason,
                    submitter,
                    batch.received_text,
                )
            )
            # Visible to the next decision at once, like the batch's other changes; a
            # failed commit rebuilds the index from the store.
            self._proposals.setdefault(acta_id, {})[caller.spiffe_id] = proposal
            await self._commit(batch)
            return ActaOutcomePb(acta_id=acta_id, status=_AWAITING_APPROVAL)
        # The first operator's correction is the one logged, as proposed.
        new = self._append(
            batch,
            first.acta,
            verdict,
            digest,
            logged.revision + 1,
            reason=first.reason,
            approved_by=(first.operator, caller.spiffe_id),
        )
        batch.writes.clear_proposals.append(acta_id)
        batch.writes.actions.append(
            (acta_id, "correction", new.revision, reason, submitter, batch.received_text)
        )
        self._proposals.pop(acta_id, None)
        await self._commit(batch)
        return _logged_outcome(acta_id, _ACCEPTED, new)

    def cross_checks(self, *, page_size: int, page_token: str) -> tuple[list[CrossCheckPb], str]:
        """A page of the cross-check queue, ordered by acta id, and the next page token."""
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        ids = sorted(k for k, v in self._pending.items() if len(v) >= 2 and k > page_token)
        page: list[str] = []
        page_bytes = 0
        for acta_id in ids[:size]:
            check_bytes = sum(len(c.acta) for c in self._pending[acta_id])
            # The first cross-check is always taken, so that paging moves on.
            if page and page_bytes + check_bytes > CROSS_CHECK_PAGE_BYTES:
                break
            page.append(acta_id)
            page_bytes += check_bytes
        checks = [
            CrossCheckPb(
                acta_id=acta_id,
                captures=[ActaPb.FromString(c.acta) for c in self._pending[acta_id]],
            )
            for acta_id in page
        ]
        next_token = page[-1] if len(ids) > len(page) else ""
        return checks, next_token

    async def resolve(
        self, acta_id: str, *, capture_index: int, reason: str, submitter: str = ""
    ) -> ActaOutcomePb:
        """Settle a cross-check by accepting one of its captures.

        One operator suffices: the captures were made by distinct authenticated
        operators, and the resolution can only choose one of them, not bring new
        figures; the reason and the operator are written into the log record.

        Raises:
            CommitError: if the decision could not be committed.
        """
        caller = operators.caller_from_spiffe_id(submitter)
        refused = operators.check_operator(caller, "a resolution") or operators.check_reason(reason)
        if refused is None:
            refused = await self._refuse_when_closed()
        if refused is not None:
            return _rejected(acta_id[:80], refused)
        captures = self._pending.get(acta_id, ())
        if len(captures) < 2:
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.NOT_FOUND,
                    "acta_id",
                    f"acta {acta_id!r} is not in the cross-check queue",
                ),
            )
        if capture_index >= len(captures):
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.INVALID_ARGUMENT,
                    "capture_index",
                    f"acta {acta_id} has {len(captures)} captures, "
                    f"index {capture_index} is out of range",
                ),
            )
        chosen = captures[capture_index]
        acta = ActaPb.FromString(chosen.acta)
        verdict = rules.validate(acta, self.catalogue)
        if isinstance(verdict, Rejection):  # pragma: no cover - validated on capture
            return _rejected(acta_id, verdict)
        batch = self._new_batch()
        logged = self._append(
            batch,
            chosen.acta,
            verdict,
            chosen.digest,
            1,
            reason=reason,
            approved_by=(caller.spiffe_id,),
        )
        batch.writes.actions.append(
            (acta_id, "resolve_cross_check", 1, reason, submitter, batch.received_text)
        )
        await self._commit(batch)
        return _logged_outcome(acta_id, _ACCEPTED, logged)

    async def record_missing(
        self, casilla_id: str, contest_id: str, reason: int, *, submitter: str = ""
    ) -> ActaOutcomePb:
        """Log that an expected acta will not arrive (a capture centre, for its casillas).

        One capture suffices: there are no figures for a second operator to agree with.
        The same record again is DUPLICATE; a record when the acta is logged or has
        captures waiting is refused (FAILED_PRECONDITION or ALREADY_EXISTS): the acta is
        not missing.

        Raises:
            CommitError: if the record could not be committed.
        """
        caller = operators.caller_from_spiffe_id(submitter)
        acta = ActaPb(casilla_id=casilla_id, contest_id=contest_id)
        acta_id = rules.acta_id_of(acta)
        refused: Rejection | None = await self._refuse_when_closed()
        if refused is None:
            verdict = rules.validate_missing(acta, reason, self.catalogue)
            if isinstance(verdict, Rejection):
                refused = verdict
            elif caller.role != operators.ROLE_CAPTURE:
                refused = Rejection(
                    RejectCode.PERMISSION_DENIED,
                    "",
                    "recording a missing acta needs a capture centre's certificate",
                )
            else:
                refused = operators.check_assignment(self._assigned, casilla_id, caller)
        if refused is not None:
            return _rejected(acta_id, refused)
        acta.provenance.capture_centre_id = caller.centre
        acta.provenance.operator_id = caller.operator
        acta_bytes, digest = protocol.serialize_acta(acta)
        batch = self._new_batch()
        logged = self._get_logged(batch, acta_id)
        if logged is not None:
            if logged.revision == 1 and logged.reason == reason and not logged.counted:
                return _logged_outcome(acta_id, _DUPLICATE, logged)
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.ALREADY_EXISTS,
                    "",
                    f"acta {acta_id} is logged at revision {logged.revision}; a change needs "
                    "a correction",
                ),
            )
        if self._get_pending(batch, acta_id):
            return _rejected(
                acta_id,
                Rejection(
                    RejectCode.FAILED_PRECONDITION,
                    "",
                    f"acta {acta_id} has captures waiting: it is not missing",
                ),
            )
        assert isinstance(verdict, rules.Verdict)
        logged = self._append(batch, acta_bytes, verdict, digest, 1)
        await self._commit(batch)
        return _logged_outcome(acta_id, _ACCEPTED, logged)

    # -- the close of the night --------------------------------------------------------

    async def close_night(self, *, submitter: str = "") -> NightClosed | Rejection:
        """Close the night (an operator only): from now on nothing new is logged, and the
        records logged at the close are the final cut's. Idempotent: a second close
        answers the first.

        Raises:
            CommitError: if captures decided before the close could not be committed
                (the night then stays open).
        """
        caller = operators.caller_from_spiffe_id(submitter)
        refused = operators.check_operator(caller, "closing the night")
        if refused is not None:
            return refused
        return await self._close(caller.spiffe_id)

    async def _close(self, closed_by: str) -> NightClosed:
        if self._night is not None:
            return self._night
        self._closing = True
        try:
            # Batches decided before the close are committed first: an empty batch is
            # acknowledged after every batch queued before it.
            await self._commit(self._new_batch())
            now = self._clock().astimezone(dt.UTC).isoformat(timespec="microseconds")
            closed = NightClosed(self._size, now, closed_by)
            self._night = await asyncio.to_thread(self._store.close_night, closed)
        finally:
            self._closing = False
        log.warning(
            "the night is closed at %d records by %s",
            self._night.closed_at_records,
            closed_by or "the definition's close time",
        )
        async with self._changed:
            self._changed.notify_all()
        return self._night

    async def _refuse_when_closed(self) -> Rejection | None:
        """FAILED_PRECONDITION once the night is closed (closing it first when the
        definition's close time has come), else None."""
        close_time = self.election.close_time
        if self._night is None and close_time is not None and self._clock() >= close_time:
            await self._close("")
        if self._night is None and not self._closing:
            return None
        at = "" if self._night is None else f" at {self._night.closed_at_records} records"
        return Rejection(
            RejectCode.FAILED_PRECONDITION,
            "",
            f"the night is closed{at}: no new capture, correction or resolution is "
            "accepted (the final cut covers what was logged at the close)",
        )

    # -- the log ------------------------------------------------------------------------

    async def records(
        self, from_sequence: int, *, follow: bool, keepalive: float | None = None
    ) -> AsyncGenerator[tuple[int, list[bytes]], None]:
        """Pages ``(first_sequence, leaves)`` of the log from ``from_sequence``; with
        ``follow``, waits for new commits (woken by the commit, no polling) until
        :meth:`close`. With ``follow`` and ``keepalive`` (seconds), an empty page
        ``(position, [])`` is yielded whenever that long passes with nothing new, so that
        the stream carries the log size while the log is idle."""
        reader = self._store.reader()
        try:
            position = from_sequence
            while True:
                if position < self._size:
                    leaves = reader.page(
                        position, max_leaves=STREAM_PAGE_LEAVES, max_bytes=STREAM_PAGE_BYTES
                    )
                    if leaves:
                        yield position, leaves
                        position += len(leaves)
                        continue
                if not follow or self._closed:
                    return
                idle = False
                async with self._changed:
                    more = self._changed.wait_for(
                        lambda p=position: self._size > p or self._closed  # type: ignore[misc]  # default binds the loop value
                    )
                    try:
                        await asyncio.wait_for(more, keepalive)
                    except TimeoutError:
                        idle = True
                if idle:
                    yield position, []
        finally:
            reader.close()

    async def end_streams(self) -> None:
        """End every follow stream (before the server stops, so that it need not wait
        for them until its grace period runs out)."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        """End the followers' streams, finish pending commits and close the store."""
        await self.end_streams()
        if self._writer is not None:
            self._wake.set()
            await self._writer
        self._store.close()
