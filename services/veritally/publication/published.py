"""What publication has already published, remembered outside its store (docs/adr/0026).

The store says what the log is, but a store can be replaced by an older copy (a backup
restore), and a publisher that trusts it would sign the same tree sizes again with other
roots: a fork, with both checkpoints valid. So before it signs, publication asks every
*published record* (a place outside the store that holds checkpoints it published) for
the newest checkpoint there, and :class:`ForkGuard` refuses to sign unless the store
extends it:

1. at start (:meth:`ForkGuard.check_at_start`), each record's newest checkpoint found
   thoroughly (for the bundle: ``latest``, the largest ``checkpoints/<size>`` and the
   highest ``cuts/<n>.cut``);
2. before each signature (:meth:`ForkGuard.check_before_signing`), each record's cheap
   newest (for the bundle: ``latest`` and the checkpoint it names, two small reads),
   compared first with the high-water mark kept in memory, the newest checkpoint this
   process signed or found at start;
3. the store *extends* a published checkpoint of size s and cut number c when it has at
   least s leaves and c cuts and its root at size s is the published root;
4. otherwise: an ERROR log line starting with ``ALARM``, a :class:`ForkRefusedError`,
   and no signature again from this process (the refusal is latched until an operator
   restarts it; the service reports NOT_SERVING).

The bundle is today's only record (:class:`veritally.publication.bundle.BundleRecord`).
Witnesses will be another: a record whose newest checkpoint is the newest one any
witness cosigned, implementing the same two reads of :class:`PublishedRecord`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from veritally.publication.errors import ForkRefusedError
from veritally_client import MalformedDataError
from veritally_client.protocol import Checkpoint, parse_checkpoint

__all__ = ["ForkGuard", "Published", "PublishedRecord", "note_checkpoint"]

log = logging.getLogger(__name__)


def note_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint signed by a C2SP signed note (signatures not checked).

    Raises:
        ValueError: if the note or its checkpoint does not parse.
    """
    try:
        text = note.decode("utf-8")
        return parse_checkpoint(text[: text.rindex("\n\n") + 1])
    except (UnicodeDecodeError, MalformedDataError) as e:
        raise ValueError(f"not a signed checkpoint: {e}") from e


@dataclass(frozen=True, kw_only=True)
class Published:
    """A checkpoint that has left the process.

    Attributes:
        tree_size: its size.
        root_hash: its root.
        cut_number: the cut it belongs to (0 when the record does not say).
        where: where it was found, for messages (``bundle checkpoints/1501``).
    """

    tree_size: int
    root_hash: bytes
    cut_number: int
    where: str


class PublishedRecord(Protocol):
    """A place outside the store that holds checkpoints publication published."""

    def newest(self) -> Published | None:
        """The newest checkpoint held, searched thoroughly (once, at start).

        Raises:
            ForkRefusedError: if the record holds something that cannot be read as a
                checkpoint of this log (it cannot be ruled out as published).
            OSError: if the record cannot be read.
        """
        ...  # pragma: no cover - protocol

    def latest(self) -> Published | None:
        """The newest checkpoint by a cheap read (before each signature).

        Raises:
            ForkRefusedError: as :meth:`newest`.
            OSError: if the record cannot be read.
        """
        ...  # pragma: no cover - protocol


class ForkGuard:
    """Refuses to sign over a store that does not extend what was published."""

    def __init__(self, records: Sequence[PublishedRecord]) -> None:
        """Guard with ``records`` (none: only the store's own checks apply)."""
        self.records = tuple(records)
        self._high: Published | None = None
        self._refused: ForkRefusedError | None = None

    @property
    def refused(self) -> ForkRefusedError | None:
        """The latched refusal, if any."""
        return self._refused

    def check_at_start(
        self, *, tree_size: int, cut_number: int, root_at: Callable[[int], bytes]
    ) -> None:
        """Check the store (``tree_size`` leaves, ``cut_number`` cuts, its root at any
        size from ``root_at``) against every record's newest checkpoint.

        Raises:
            ForkRefusedError: if the store does not extend one of them.
            OSError: if a record cannot be read.
        """
        # (1) each record's newest checkpoint, searched thoroughly
        for record in self.records:
            found = self._read(record.newest)
            if found is not None:
                self._check(found, tree_size=tree_size, cut_number=cut_number, root_at=root_at)
        if tree_size:
            self._high = Published(
                tree_size=tree_size,
                root_hash=root_at(tree_size),
                cut_number=cut_number,
                where="the store's newest cut",
            )

    def check_before_signing(
        self, *, tree_size: int, cut_number: int, root_at: Callable[[int], bytes]
    ) -> None:
        """The same check against each record's cheap newest checkpoint (see module
        doc, step 2), for a store about to append to ``tree_size`` leaves.

        Raises:
            ForkRefusedError: if a refusal was latched or the store does not extend a
                published checkpoint.
            OSError: if a record cannot be read (nothing is signed then, not latched).
        """
        if self._refused is not None:
            # (4) latched: the alarm again, every interval, until an operator restarts it
            log.error("ALARM %s", self._refused)
            raise ForkRefusedError(str(self._refused))
        # (2) the high-water mark, then each record's cheap newest checkpoint
        high = self._high
        if high is not None and (high.tree_size > tree_size or high.cut_number > cut_number):
            self._refuse(high, tree_size=tree_size, cut_number=cut_number, why="is behind")
        for record in self.records:
            found = self._read(record.latest)
            if found is None or _same(found, high):
                continue
            self._check(found, tree_size=tree_size, cut_number=cut_number, root_at=root_at)

    def signed(self, published: Published) -> None:
        """Raise the high-water mark to a checkpoint this process just committed."""
        if self._high is None or published.tree_size > self._high.tree_size:
            self._high = published

    def _read(self, read: Callable[[], Published | None]) -> Published | None:
        try:
            return read()
        except ForkRefusedError as e:
            self._latch(e)
            raise

    def _check(
        self,
        found: Published,
        *,
        tree_size: int,
        cut_number: int,
        root_at: Callable[[int], bytes],
    ) -> None:
        # (3) the store extends it: as large, as many cuts, the same root at its size
        if found.tree_size > tree_size or found.cut_number > cut_number:
            self._refuse(found, tree_size=tree_size, cut_number=cut_number, why="is behind")
        if found.tree_size and root_at(found.tree_size) != found.root_hash:
            self._refuse(found, tree_size=tree_size, cut_number=cut_number, why="diverges from")

    def _refuse(self, found: Published, *, tree_size: int, cut_number: int, why: str) -> None:
        error = ForkRefusedError(
            f"refusing to sign: the store ({tree_size} leaves, {cut_number} cuts) {why} "
            f"the checkpoint of tree size {found.tree_size}"
            f"{f' (cut {found.cut_number})' if found.cut_number else ''} published in "
            f"{found.where}, root {found.root_hash.hex()[:16]}…; signing would give a "
            "published tree size a second root (a store restored from a backup? see "
            "docs/publication.md, 'After a restore')"
        )
        self._latch(error)
        raise error

    def _latch(self, error: ForkRefusedError) -> None:
        # (4) loud, and for good: an operator must look before anything is signed again
        if self._refused is None:
            self._refused = error
        log.error("ALARM %s", error)


def _same(a: Published, b: Published | None) -> bool:
    return b is not None and (a.tree_size, a.root_hash) == (b.tree_size, b.root_hash)
