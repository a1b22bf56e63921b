"""Making a cut: append acta records and a cut record, sign the checkpoint, persist.

A cut (:meth:`Cutter.make_cut`), all inside ONE store transaction:

1. check the new acta records extend the log exactly: each is a ``LogLeaf`` of at most
   ``bounds.MAX_LEAF_BYTES`` (what ingest logs; a bundle's entry bundle holds entries of
   up to 64 KiB) holding an ``ActaRecord`` whose ``sequence`` is the next one, and their
   count matches the position the results were taken at;
2. build the cut record leaf (number, RFC 3339 UTC time, acta records covered, SHA-256
   of the results blob and, given the definition's party order, of its summary
   (docs/adr/0092-results-summary.md), ingest's accepted records as aggregation last
   heard them) — the time never goes back from the previous cut's, and the ingest
   figure is never below the records covered nor below the previous cut's (ingest's log
   only grows, so the largest figure seen is still a true lower bound);
3. append the acta leaves and the cut leaf, with their perfect-subtree hashes;
4. sign the checkpoint (origin, size, root) as a C2SP signed note;
5. check our own work: the note opens with our keys, and the cut leaf's inclusion proof
   leads to the signed root;
6. store the signed cut and commit.

Before (3), with the store's write lock held, the :class:`ForkGuard` checks that the
store extends every checkpoint published outside it (docs/adr/0026); if not, nothing is
appended or signed.

Nothing is served or written to the bundle before the commit, so a crash anywhere in
1-6 leaves no trace outside the process: the transaction rolls back, and the next cut
(with a new time, hence a new root) is the first checkpoint anyone sees for its size.
A committed size is never signed again: the store refuses a second cut for a tree size
and each cut adds at least its own leaf (docs/adr/0024).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence

from veritally import bounds
from veritally.publication.errors import StoreIntegrityError, UpstreamDataError
from veritally.publication.published import ForkGuard, Published, note_checkpoint
from veritally.publication.store import CutRow, PublicationStore
from veritally_client import MalformedDataError
from veritally_client.protocol import (
    Checkpoint,
    Signer,
    cut_leaf_bytes,
    format_cut_time,
    ingest_records_of,
    leaf_hash,
    open_note,
    parse_cut_leaf,
    parse_leaf,
    results_summary_bytes,
    sign_note,
    verify_inclusion,
)
from veritally_client.protocol.pb import log_pb2

__all__ = ["Cutter", "signed_cut_pb"]

SignedCutPb = log_pb2.SignedCut


def signed_cut_pb(row: CutRow, results: bytes) -> log_pb2.SignedCut:
    """The wire form of a stored cut."""
    return SignedCutPb(
        checkpoint=row.checkpoint,
        cut_leaf=row.cut_leaf,
        inclusion_proof=list(row.proof),
        results=results,
    )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ingest_records_in(cut_leaf: bytes) -> int | None:
    """The ingest figure of a stored cut leaf (None if it has none).

    Raises:
        StoreIntegrityError: if the stored leaf is not a cut record.
    """
    try:
        record = parse_cut_leaf(cut_leaf)
    except MalformedDataError as e:
        raise StoreIntegrityError(f"the newest stored cut leaf is not a cut record: {e}") from e
    return ingest_records_of(record)


class Cutter:
    """Appends cuts to a :class:`PublicationStore` and signs them."""

    def __init__(
        self,
        *,
        store: PublicationStore,
        signers: Sequence[Signer],
        origin: str,
        clock: Callable[[], dt.datetime] = _utc_now,
        before_commit: Callable[[bytes], None] | None = None,
        guard: ForkGuard | None = None,
    ) -> None:
        """Create the cutter.

        Args:
            store: the log.
            signers: the publisher keys that sign every checkpoint.
            origin: the checkpoint origin line.
            clock: the source of cut times (timezone-aware).
            before_commit: called with the signed note after signing and before the
                commit (a crash-injection point for tests; never sees uncommitted data
                escape in production because it is None there).
            guard: checks the store against what was published before each signature
                (None: no record outside the store is checked).

        Raises:
            ValueError: if there is no signer or the origin is invalid.
        """
        if not signers:
            raise ValueError("the publisher needs at least one signing key")
        Checkpoint(origin=origin, size=0, root_hash=bytes(32))  # validates the origin
        self.store = store
        self.signers = tuple(signers)
        self.verifiers = tuple(s.verifier() for s in signers)
        self.origin = origin
        self._clock = clock
        self._before_commit = before_commit
        self.guard = guard

    def check_latest(self) -> None:
        """Check the newest stored cut against the tree: same size and root.

        Raises:
            StoreIntegrityError: if the stored checkpoint does not describe the tree.
        """
        latest = self.store.latest_cut()
        if latest is None:
            return
        try:
            checkpoint = note_checkpoint(latest.checkpoint)
        except ValueError as e:
            raise StoreIntegrityError("the newest stored checkpoint does not parse") from e
        if checkpoint.size != self.store.tree_size or checkpoint.root_hash != self.store.root():
            raise StoreIntegrityError("the newest checkpoint does not describe the stored tree")
        if checkpoint.origin != self.origin:
            raise StoreIntegrityError(
                f"the store's log has origin {checkpoint.origin!r}, configured {self.origin!r}"
            )

    def make_cut(
        self,
        *,
        acta_leaves: Sequence[bytes],
        acta_records: int,
        results: bytes,
        ingest_records: int | None = None,
        party_ids: Sequence[str] | None = None,
    ) -> CutRow:
        """Append ``acta_leaves`` and a cut record; sign; persist. See the module doc.

        Args:
            acta_leaves: serialized LogLeaf/ActaRecord messages, exactly as streamed, that
                extend the log from its current acta count.
            acta_records: the position the results were taken at.
            results: the serialized Results blob at that position.
            ingest_records: how many records ingest had accepted, as aggregation reported
                with the results; None leaves the figure out of the cut record.
            party_ids: the election definition's parties in order; with them the cut
                record signs the results summary, stored beside the results. None
                (no definition yet) signs none.

        Returns:
            The stored cut.

        Raises:
            UpstreamDataError: if the records do not extend the log exactly.
            ForkRefusedError: if the store does not extend a published checkpoint.
            StoreIntegrityError: if the store refuses the cut.
        """
        store = self.store
        latest = store.latest_cut()
        have = latest.acta_records if latest else 0
        # (1) the records extend the log exactly
        if acta_records != have + len(acta_leaves):
            raise UpstreamDataError(
                f"results cover {acta_records} acta records; the log has {have} and "
                f"{len(acta_leaves)} new ones"
            )
        first_index = store.tree_size
        keys: list[tuple[str, int, int]] = []
        for i, leaf in enumerate(acta_leaves):
            if len(leaf) > bounds.MAX_LEAF_BYTES:
                # Never logged, so never a leaf the bundle's entry bundles cannot hold.
                raise UpstreamDataError(
                    f"acta record {have + i} is {len(leaf)} bytes, at most {bounds.MAX_LEAF_BYTES}"
                )
            try:
                parsed = parse_leaf(leaf)
            except MalformedDataError as e:
                raise UpstreamDataError(f"acta record {have + i} does not parse") from e
            if parsed.WhichOneof("kind") != "acta_record":
                raise UpstreamDataError(f"leaf for acta record {have + i} is not an acta record")
            record = parsed.acta_record
            if record.sequence != have + i:
                raise UpstreamDataError(
                    f"expected acta record sequence {have + i}, got {record.sequence}"
                )
            if not record.acta_id or record.revision < 1:
                raise UpstreamDataError(f"acta record {have + i} has no acta id or revision")
            keys.append((record.acta_id, record.revision, first_index + i))
        # (2) the cut record
        when = self._clock()
        cut_time = format_cut_time(when)
        if latest and cut_time < latest.cut_time:
            cut_time = latest.cut_time  # a clock step back must not reorder cuts in time
        digest = hashlib.sha256(results).digest()
        cut_number = (latest.cut_number if latest else 0) + 1
        if ingest_records is not None:
            previous = _ingest_records_in(latest.cut_leaf) if latest else None
            ingest_records = max(ingest_records, acta_records, previous or 0)
        summary = b""
        if party_ids is not None:
            try:
                summary = results_summary_bytes(results, party_ids=party_ids)
            except ValueError as e:
                raise UpstreamDataError(f"the results cannot be summarised: {e}") from e
        summary_digest = hashlib.sha256(summary).digest() if summary else b""
        cut_leaf = cut_leaf_bytes(
            cut_number=cut_number,
            cut_time=cut_time,
            acta_records=acta_records,
            results_sha256=digest,
            ingest_records=ingest_records,
            summary_sha256=summary_digest,
        )
        leaves = [*acta_leaves, cut_leaf]
        hashes = [leaf_hash(x) for x in leaves]
        with store.transaction():
            if self.guard is not None:
                self.guard.check_before_signing(
                    tree_size=store.tree_size,
                    cut_number=latest.cut_number if latest else 0,
                    root_at=store.root,
                )
            # (3) append
            store.append_leaves(leaves, hashes)
            store.index_actas(keys)
            store.put_results(digest, results)
            if summary:
                # Content-addressed beside the results: heartbeats share it too.
                store.put_results(summary_digest, summary)
            size = store.tree_size
            root = store.root()
            # (4) sign
            text = Checkpoint(origin=self.origin, size=size, root_hash=root).to_text()
            note = sign_note(text, self.signers)
            # (5) check our own work before anything can depend on it
            open_note(note, self.verifiers, threshold=len(self.verifiers))
            proof = store.inclusion_proof(size - 1, size)
            verify_inclusion(
                leaf_hash=hashes[-1], index=size - 1, size=size, proof=proof, root=root
            )
            if self._before_commit is not None:
                self._before_commit(note)
            # (6) persist in the same transaction
            row = CutRow(
                cut_number=cut_number,
                tree_size=size,
                acta_records=acta_records,
                cut_time=cut_time,
                checkpoint=note,
                cut_leaf=cut_leaf,
                proof=tuple(proof),
                results_sha256=digest,
            )
            store.put_cut(row)
        if self.guard is not None:
            self.guard.signed(
                Published(
                    tree_size=size, root_hash=root, cut_number=cut_number, where="this process"
                )
            )
        return row
