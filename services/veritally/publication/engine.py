"""The publication domain: cuts, reads, watchers and the bundle around one store.

This room owns what publication decides and serves: making a cut (through the
:class:`~veritally.publication.cutter.Cutter`), the newest cut and its answer, cuts,
proofs and pages of leaves read from the store, the views of cuts with names
(:mod:`veritally.publication.view`, built once per cut), the watchers woken by each cut,
the static bundle and the fork guard's check at start. It may import the store, the cutter,
the bundle, the fork guard, publication's errors, ingest's page capping and the SDK's
protocol layer with its generated messages; never gRPC, the servicer, the follower or
the app. What goes wrong is raised as an error of :mod:`veritally.publication.errors`
(or answered with None), and the servicer maps it to a status code.

All store access runs on one thread (``executor``), so the event loop never blocks on
SQLite and no read sees half a cut. A cut is served (latest, watchers) only once it is
committed, and written to the bundle after that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from veritally.publication.bundle import BundleWriter
from veritally.publication.conditional import LatestAnswers
from veritally.publication.cutter import Cutter, signed_cut_pb
from veritally.publication.errors import (
    StoreIntegrityError,
    TamperedDataError,
    ViewError,
    ViewUnavailableError,
)
from veritally.publication.published import ForkGuard
from veritally.publication.store import CutRow, PublicationStore
from veritally.publication.view import ViewNames, build_view
from veritally.publication.witnesses import WitnessCollector
from veritally.storage import MAX_PAGE_BYTES, capped_page
from veritally_client.protocol.pb import election_pb2, log_pb2, publication_pb2, results_pb2

log = logging.getLogger(__name__)

__all__ = ["PublicationEngine"]

_DEFINITION_KEY = "election_definition"
_BUNDLE_CUT_KEY = "bundle_cut"
#: Views of cuts kept built besides the newest cut's (GetCutView answers, least recently
#: read dropped first): an outlet filling a gap or checking history reads a few cuts
#: around the one it shows. An answer of a national night is ~1.9 MB serialized and ~7 MB
#: as a message in memory (docs/mesh.md, "The JSON view"), so these and the newest hold
#: ~35 MB; keeping every cut's would grow with the night.
VIEW_CACHE_CUTS = 4

T = TypeVar("T")


@dataclass
class _Latest:
    cut: CutRow | None = None
    signed: log_pb2.SignedCut | None = None
    # The GetLatestCut answers, built once per cut: every media read returns one of these
    # same messages instead of copying the ~300 KB cut into a new one, and a client that
    # holds the results gets an answer without them (conditional.py).
    answers: LatestAnswers | None = None
    # Whether its results are final: the night's last cut, after which none is made.
    final: bool = False

    @classmethod
    def of(cls, cut: CutRow, signed: log_pb2.SignedCut, previous: _Latest | None) -> _Latest:
        try:
            final = results_pb2.Results.FromString(signed.results).final
        except DecodeError:
            final = False  # served as stored; the checks at load refuse a bad blob
        before = previous.cut if previous is not None else None
        answers = LatestAnswers.after(
            previous.answers if previous is not None else None,
            full=publication_pb2.GetLatestCutResponse(cut=signed),
            tree_size=cut.tree_size,
            same_results=before is not None and before.results_sha256 == cut.results_sha256,
        )
        return cls(cut=cut, signed=signed, answers=answers, final=final)

    @property
    def response(self) -> publication_pb2.GetLatestCutResponse | None:
        return self.answers.full if self.answers is not None else None


@dataclass
class PublicationEngine:
    """The publication domain around one store: cuts, reads, watchers and the bundle.

    All store access runs on ``executor`` (one thread), so the event loop never blocks on
    SQLite and no read sees half a cut.
    """

    store: PublicationStore
    cutter: Cutter
    executor: concurrent.futures.ThreadPoolExecutor
    trust_roots: list[bytes]
    bundle: BundleWriter | None = None
    guard: ForkGuard = field(default_factory=lambda: ForkGuard(()))
    # Sends each committed checkpoint to the witnesses before it is served (ADR 0091).
    witnesses: WitnessCollector | None = None
    _latest: _Latest = field(default_factory=_Latest)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: bool = False
    # The stored definition's names, indexed on the first view (it is stored once).
    _names: ViewNames | None = None
    # The stored definition's party order, read at the first cut that has it.
    _parties: tuple[str, ...] | None = None
    # The GetLatestCutView answer of one cut, and GetCutView answers by cut number.
    _latest_view: publication_pb2.GetLatestCutViewResponse | None = None
    _views: OrderedDict[int, publication_pb2.GetCutViewResponse] = field(
        default_factory=OrderedDict
    )
    # Held while a view is looked up or built, so that each is built once.
    _view_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        except TamperedDataError as e:
            log.error("ALARM refusing to serve: %s", e)
            raise

    async def load(self) -> None:
        """Check the store against its newest checkpoint and against what was published
        (the fork guard), load the newest cut (re-served as stored, never re-signed) and
        repair the bundle for cuts committed before a crash but not yet written.

        Raises:
            StoreIntegrityError: if the store does not describe its own checkpoint.
            ForkRefusedError: if the store is behind or diverges from what was published.
        """
        await self._db(self.cutter.check_latest)
        await self._db(self._check_published)
        latest = await self._db(self.store.latest_cut)
        if latest is not None:
            results = await self._db(self.store.results, latest.results_sha256)
            self._latest = _Latest.of(latest, signed_cut_pb(latest, results or b""), None)
        await self._db(self._write_bundle_upto, latest.cut_number if latest else 0)

    @property
    def latest(self) -> log_pb2.SignedCut | None:
        """The newest served cut."""
        return self._latest.signed

    @property
    def latest_response(self) -> publication_pb2.GetLatestCutResponse | None:
        """The GetLatestCut answer for the newest cut (the same message for every read)."""
        return self._latest.response

    @property
    def latest_answers(self) -> LatestAnswers | None:
        """The GetLatestCut answers of the newest cut, by the tree size a client verified
        (docs/adr/0089)."""
        return self._latest.answers

    @property
    def final(self) -> bool:
        """Whether the newest cut is the final one (then no cut is made after it)."""
        return self._latest.final

    @property
    def latest_cut_row(self) -> CutRow | None:
        """The newest cut's row, None before the first."""
        return self._latest.cut

    @property
    def latest_number(self) -> int:
        """Number of the newest cut, 0 before the first."""
        return self._latest.cut.cut_number if self._latest.cut else 0

    @property
    def acta_records(self) -> int:
        """Acta records in the log."""
        return self._latest.cut.acta_records if self._latest.cut else 0

    # -- cutting ----------------------------------------------------------------------

    async def cut(
        self,
        *,
        acta_leaves: list[bytes],
        acta_records: int,
        results: bytes,
        ingest_records: int | None = None,
    ) -> CutRow:
        """Make, persist, serve and bundle one cut.

        Raises:
            UpstreamDataError: if the records do not extend the log.
            StoreIntegrityError: if the store refuses the cut.
        """
        party_ids = await self._party_ids()
        row = await self._db(
            lambda: self.cutter.make_cut(
                acta_leaves=acta_leaves,
                acta_records=acta_records,
                results=results,
                ingest_records=ingest_records,
                party_ids=party_ids,
            )
        )
        # Committed: witnesses may see it now, and it is served with their cosignatures.
        if self.witnesses is not None:
            row = await self._cosign(row)
        async with self._changed:
            self._latest = _Latest.of(row, signed_cut_pb(row, results), self._latest)
            self._changed.notify_all()
        try:
            await self._db(self._write_bundle_upto, row.cut_number)
        except OSError:
            # The cut is committed and served; the bundle catches up at the next cut
            # (its progress is recorded per cut), so a full disk does not stop cutting.
            log.exception("could not write cut %d to the bundle", row.cut_number)
        except StoreIntegrityError as e:
            # A tampered leaf or blob is not published; the alarm is logged by _db.
            log.error("cut %d not written to the bundle: %s", row.cut_number, e)
        return row

    async def _cosign(self, row: CutRow) -> CutRow:
        """The committed cut with the cosignatures its witnesses returned within their
        deadlines (as committed if none did)."""
        assert self.witnesses is not None
        note = row.checkpoint
        text = note[: note.index(b"\n\n") + 1].decode("utf-8")
        lines = await self.witnesses.collect(note, text=text, size=row.tree_size)
        if not lines:
            return row
        return await self._db(self.store.add_cosignatures, row.cut_number, "".join(lines).encode())

    async def witness_size(self, name: str) -> int:
        """The tree size witness ``name`` cosigned last (0 if none)."""
        raw = await self._db(self.store.get_meta, f"witness_size:{name}")
        return int(raw.decode()) if raw else 0

    async def set_witness_size(self, name: str, size: int) -> None:
        """Record the tree size witness ``name`` cosigned (or holds, after a 409)."""
        await self._db(self.store.set_meta, f"witness_size:{name}", str(size).encode())

    def _check_published(self) -> None:
        latest = self.store.latest_cut()
        self.guard.check_at_start(
            tree_size=self.store.tree_size,
            cut_number=latest.cut_number if latest else 0,
            root_at=self.store.root,
        )

    def _write_bundle_upto(self, cut_number: int) -> None:
        if self.bundle is None:
            return
        definition = self.store.get_meta(_DEFINITION_KEY)
        self.bundle.write_static(trust_roots=self.trust_roots, definition=definition)
        raw = self.store.get_meta(_BUNDLE_CUT_KEY)
        done = int(raw.decode()) if raw else 0
        for n in range(done + 1, cut_number + 1):
            cut = self.store.cut(n)
            if cut is None:
                break
            results = self.store.results(cut.results_sha256) or b""
            self.bundle.write_cut(
                self.store, cut, results=results, trust_root_versions=len(self.trust_roots)
            )
            self.store.set_meta(_BUNDLE_CUT_KEY, str(n).encode())

    # -- reads ------------------------------------------------------------------------

    async def get_cut(self, number: int) -> log_pb2.SignedCut | None:
        """A cut by number."""

        def read() -> log_pb2.SignedCut | None:
            row = self.store.cut(number)
            if row is None:
                return None
            return signed_cut_pb(row, self.store.results(row.results_sha256) or b"")

        return await self._db(read)

    # -- views with names -------------------------------------------------------------

    async def latest_view(self) -> publication_pb2.GetLatestCutViewResponse | None:
        """The GetLatestCutView answer of the newest cut (None before the first cut),
        built on its first read; every later read of that cut returns the same message.

        Raises:
            ViewUnavailableError: if the election definition has not been fetched yet.
            ViewError: if the cut's results cannot be named with the stored definition.
        """
        latest = self._latest
        if latest.cut is None or latest.signed is None:
            return None
        cached = self._latest_view
        if cached is not None and cached.view.cut_number == latest.cut.cut_number:
            return cached  # every read but the first of each cut: no wait on a build
        async with self._view_lock:
            cached = self._latest_view
            if cached is not None and cached.view.cut_number == latest.cut.cut_number:
                return cached
            view = self._known_view(latest.cut.cut_number)
            if view is None:
                view = await self._build(latest.cut, latest.signed.results)
            response = publication_pb2.GetLatestCutViewResponse(cut=latest.signed, view=view)
            self._latest_view = response
            return response

    async def cut_view(self, number: int) -> publication_pb2.GetCutViewResponse | None:
        """The GetCutView answer of cut ``number`` (None if there is none), built on its
        first read and kept among the last :data:`VIEW_CACHE_CUTS` read.

        Raises:
            ViewUnavailableError: if the election definition has not been fetched yet.
            ViewError: if the cut's results cannot be named with the stored definition.
            TamperedDataError: if the stored results do not match the cut's digest.
        """
        async with self._view_lock:
            cached = self._views.get(number)
            if cached is not None:
                self._views.move_to_end(number)
                return cached

            def read() -> tuple[CutRow, bytes] | None:
                row = self.store.cut(number)
                if row is None:
                    return None
                return row, self.store.results(row.results_sha256) or b""

            found = await self._db(read)
            if found is None:
                return None
            row, results = found
            view = self._known_view(number) or await self._build(row, results)
            response = publication_pb2.GetCutViewResponse(
                cut=signed_cut_pb(row, results), view=view
            )
            self._views[number] = response
            while len(self._views) > VIEW_CACHE_CUTS:
                self._views.popitem(last=False)
            return response

    def _known_view(self, number: int) -> publication_pb2.CutView | None:
        """The view of cut ``number`` if either answer already holds it."""
        if self._latest_view is not None and self._latest_view.view.cut_number == number:
            return self._latest_view.view
        cached = self._views.get(number)
        return cached.view if cached is not None else None

    async def _build(self, row: CutRow, results: bytes) -> publication_pb2.CutView:
        names = self._names
        try:
            # Indexing and building are CPU work: off the event loop, and off the
            # store's thread so that reads of the store do not wait on them.
            if names is None:
                definition = await self.definition()
                if definition is None:
                    raise ViewUnavailableError("the election definition has not been fetched yet")
                names = self._names = await asyncio.to_thread(ViewNames, definition)
            return await asyncio.to_thread(
                functools.partial(
                    build_view,
                    names=names,
                    results=results,
                    cut_number=row.cut_number,
                    cut_time=row.cut_time,
                )
            )
        except ViewError as e:
            log.error("ALARM cut %d cannot be shown with names: %s", row.cut_number, e)
            raise

    async def watch(self, after: int) -> AsyncIterator[log_pb2.SignedCut]:
        """Every cut numbered above ``after``, then each new one, until closing."""
        next_number = after + 1
        while not self._closing:
            while next_number <= self.latest_number:
                cut = await self.get_cut(next_number)
                if cut is None:
                    return
                yield cut
                next_number += 1
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._ready, next_number))

    def _ready(self, wanted: int) -> bool:
        return self._closing or self.latest_number >= wanted

    async def close_watchers(self) -> None:
        """End every WatchCuts stream."""
        self._closing = True
        async with self._changed:
            self._changed.notify_all()

    async def tree_size(self) -> int:
        """The committed tree size."""
        return self._latest.cut.tree_size if self._latest.cut else 0

    async def acta_proof(
        self, acta_id: str, revision: int, size: int
    ) -> tuple[bytes, int, list[bytes]] | None:
        """(leaf, index, proof) of an acta record within ``size``, or None."""

        def read() -> tuple[bytes, int, list[bytes]] | None:
            index = self.store.acta_leaf_index(acta_id, revision, size)
            if index is None:
                return None
            leaf = self.store.leaves(index, 1)[0]
            return leaf, index, self.store.inclusion_proof(index, size)

        return await self._db(read)

    async def consistency(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof between committed sizes."""
        return await self._db(self.store.consistency_proof, size1, size2)

    async def leaves(self, start: int, count: int, size: int) -> list[bytes]:
        """Committed leaves from ``start``, at most ``count``, below ``size``, and at most
        ``MAX_PAGE_BYTES`` past the first."""
        leaves = await self._db(self.store.leaves, start, min(count, size - start))
        return capped_page(((leaf,) for leaf in leaves), MAX_PAGE_BYTES)

    async def _party_ids(self) -> tuple[str, ...] | None:
        """The stored definition's parties in order (what the results summary refers to),
        read once; None before the definition is stored (the cut then signs no summary)."""
        if self._parties is None:
            definition = await self.definition()
            if definition is not None:
                parsed = election_pb2.ElectionDefinition.FromString(definition)
                self._parties = tuple(p.id for p in parsed.parties)
        return self._parties

    async def definition(self) -> bytes | None:
        """The stored election definition."""
        return await self._db(self.store.get_meta, _DEFINITION_KEY)

    async def set_definition(self, data: bytes) -> None:
        """Store the election definition (first fetch only)."""
        await self._db(self.store.set_meta, _DEFINITION_KEY, data)
        if self.bundle is not None:
            await self._db(
                lambda: (
                    self.bundle.write_static(trust_roots=self.trust_roots, definition=data)
                    if self.bundle
                    else None
                )
            )

    async def renew_lease(self) -> None:
        """Renew the publication lease between cuts.

        Raises:
            LeaseLostError: if this publisher no longer holds it.
        """
        await self._db(self.store.renew_lease)

    async def release_lease(self) -> None:
        """Give the publication lease up (a clean stop); nothing without one."""
        await self._db(self.store.release_lease)

    async def close(self) -> None:
        """Close watchers, then the store (on its thread) and the bundle directory."""
        await self.close_watchers()
        if self.witnesses is not None:
            await self.witnesses.close()
        await self._db(self.store.close)
        if self.bundle is not None:
            self.bundle.close()
        self.executor.shutdown(wait=True)
