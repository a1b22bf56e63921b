"""The publication service: cut scheduler, gRPC adapter, static bundle.

Every ``interval`` seconds the scheduler (:meth:`PublicationEngine.cut_once`):

1. asks aggregation for the results blob and the position M it covers, atomically
   (``GetResultsBlob``), with how many records ingest had accepted as aggregation last
   heard (signed into the cut record as ``ingest_records``);
2. streams the acta records from the log's current acta count up to M
   (``StreamAggregatedRecords``, ``follow=False``), keeping the exact bytes;
3. makes the cut (:mod:`veritally.publication.cutter`: append, sign, persist in one
   transaction) — a heartbeat cut with no new records when nothing changed;
4. only then serves it (latest, watchers) and writes it to the bundle;
5. the stall alarm (:mod:`veritally.publication.liveness`): when the log stays behind
   ingest's figure without covering a new record for ``STALL_ALARM_INTERVALS``
   intervals, every interval logs an ERROR with the lag until it moves on.

If aggregation is unreachable or sends something that cannot extend the log, no cut is
made that interval: clients then see the latest cut age, which is the signal they need.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import (  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from veritally.ingest.bounds import clip
from veritally.publication.bundle import BundleRecord, BundleWriter
from veritally.publication.cutter import Cutter, signed_cut_pb
from veritally.publication.errors import (
    ForkRefusedError,
    KeyFileError,
    PublicationError,
    StoreIntegrityError,
    TamperedDataError,
    TrustRootFileError,
    UpstreamDataError,
)
from veritally.publication.keys import load_passphrase, load_signer
from veritally.publication.liveness import StallWatch
from veritally.publication.published import ForkGuard
from veritally.publication.store import CutRow, PublicationStore
from veritally.publication.trustroot import load_trust_root_chain
from veritally.rpc import ServiceServer, TlsFiles, aio_channel
from veritally.storage import capped_page
from veritally_client.protocol import Signer
from veritally_client.protocol.pb import (
    aggregation_pb2,
    aggregation_pb2_grpc,
    log_pb2,
    publication_pb2,
    publication_pb2_grpc,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_LEAVES_PER_PAGE",
    "MAX_PAGE_BYTES",
    "PublicationConfig",
    "PublicationEngine",
    "PublicationService",
    "PublicationServicer",
    "load_signers",
    "start_publication",
]

SERVICE_NAME = "veritally.v1.PublicationService"
#: Leaves per GetLeaves answer: acta leaves are ~0.3-0.5 KiB, so 4096 keep a page near
#: 2 MiB — far below the gRPC and Envoy message limits — while a 500k-leaf recount still
#: needs only ~120 calls.
MAX_LEAVES_PER_PAGE = 4096
#: Bytes of leaves per GetLeaves answer past the first leaf (always taken): with leaves
#: of at most ``bounds.MAX_LEAF_BYTES`` an answer stays under 2 MiB + 32 KiB, below gRPC's
#: default 4 MiB receive limit, whatever an attacker managed to get logged.
MAX_PAGE_BYTES = 2 * 1024 * 1024
#: Deadline of each call to aggregation, in seconds: well under a cut interval's worth of
#: waiting on a healthy loopback/mesh hop, long enough for a large first catch-up batch.
AGGREGATION_DEADLINE_S = 30.0
_DEFINITION_KEY = "election_definition"
_BUNDLE_CUT_KEY = "bundle_cut"

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class PublicationConfig:
    """Everything ``veritally serve publication`` needs.

    Attributes:
        db_path: the SQLite store (created if missing).
        key_files: publisher signing key files (all sign every checkpoint).
        passphrase_file: passphrase of encrypted key files.
        trust_root_dir: directory of ``trust-root-v<N>.binpb`` files.
        aggregation_target: ``host:port`` of the aggregation service.
        aggregation_tls: client certificate for the aggregation channel (mTLS).
        aggregation_server_name: TLS name of aggregation, if not the target's host.
        listen: ``host:port`` to serve on (port 0 for an ephemeral one).
        listen_tls: server certificate (mTLS) for the listener.
        interceptors: server interceptors, e.g. the mesh's peer check admitting only
            Envoy's identity.
        interval_seconds: time between cuts, in seconds (heartbeat included).
        origin: checkpoint origin line; defaults to the trust root's.
        bundle_dir: where to write the static bundle (None: no bundle).
    """

    db_path: Path
    key_files: tuple[Path, ...]
    trust_root_dir: Path
    aggregation_target: str
    passphrase_file: Path | None = None
    aggregation_tls: TlsFiles | None = None
    aggregation_server_name: str | None = None
    listen: str = "127.0.0.1:0"
    listen_tls: TlsFiles | None = None
    interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()
    interval_seconds: float = 2.0
    origin: str | None = None
    bundle_dir: Path | None = None


def load_signers(config: PublicationConfig) -> list[Signer]:
    """Load every configured key, refusing to go on without a usable one.

    Raises:
        KeyFileError: if no key is configured or any key file is unusable.
    """
    if not config.key_files:
        raise KeyFileError("no signing key configured: the publisher signs every cut")
    passphrase = load_passphrase(config.passphrase_file) if config.passphrase_file else None
    return [load_signer(p, passphrase=passphrase) for p in config.key_files]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Latest:
    cut: CutRow | None = None
    signed: log_pb2.SignedCut | None = None
    # The GetLatestCut answer, built once per cut: every media read returns this same
    # message instead of copying the ~300 KB cut into a new one.
    response: publication_pb2.GetLatestCutResponse | None = None

    @classmethod
    def of(cls, cut: CutRow, signed: log_pb2.SignedCut) -> _Latest:
        return cls(
            cut=cut, signed=signed, response=publication_pb2.GetLatestCutResponse(cut=signed)
        )


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
    _latest: _Latest = field(default_factory=_Latest)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: bool = False

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
            self._latest = _Latest.of(latest, signed_cut_pb(latest, results or b""))
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
        row = await self._db(
            lambda: self.cutter.make_cut(
                acta_leaves=acta_leaves,
                acta_records=acta_records,
                results=results,
                ingest_records=ingest_records,
            )
        )
        # Committed: from here on it may be served.
        async with self._changed:
            self._latest = _Latest.of(row, signed_cut_pb(row, results))
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

    async def close(self) -> None:
        """Close watchers, then the store (on its thread) and the bundle directory."""
        await self.close_watchers()
        await self._db(self.store.close)
        if self.bundle is not None:
            self.bundle.close()
        self.executor.shutdown(wait=True)


class AggregationFollower:
    """Pulls results and records from aggregation and makes each interval's cut."""

    def __init__(
        self, *, engine: PublicationEngine, channel: grpc.aio.Channel, interval: float
    ) -> None:
        """Follow aggregation through ``channel`` every ``interval`` seconds."""
        self.engine = engine
        self.stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        self.interval = interval
        self.channel = channel
        # One cut at a time: the scheduler and any operator-triggered cut never interleave.
        self._lock = asyncio.Lock()
        #: Scheduled cut attempts finished so far (made or skipped), for monitoring.
        self.attempts = 0
        #: Ingest's accepted records as aggregation reported them in this interval's
        #: GetResultsBlob (None until it answers in an interval).
        self.ingest_records: int | None = None
        self._stall = StallWatch()
        #: Called when the fork guard refuses to sign (the service reports NOT_SERVING).
        self.on_refusal: Callable[[], Awaitable[None]] | None = None

    async def ensure_definition(self) -> None:
        """Fetch and store the election definition once.

        Raises:
            grpc.aio.AioRpcError: if aggregation cannot answer.
        """
        if await self.engine.definition() is not None:
            return
        resp = await self.stub.GetDefinition(
            aggregation_pb2.GetDefinitionRequest(), timeout=AGGREGATION_DEADLINE_S
        )
        await self.engine.set_definition(resp.definition)

    async def cut_once(self) -> CutRow:
        """One cut (see the module docstring).

        Raises:
            grpc.aio.AioRpcError: if aggregation cannot answer.
            UpstreamDataError: if what it sends cannot extend the log.
            ForkRefusedError: if the store does not extend what was published (the
                service then reports NOT_SERVING, for good).
        """
        async with self._lock:
            try:
                return await self._cut_once()
            except ForkRefusedError:
                if self.on_refusal is not None:
                    await self.on_refusal()
                raise

    async def _cut_once(self) -> CutRow:
        await self.ensure_definition()
        # (1) results at M, atomically with M
        blob = await self.stub.GetResultsBlob(
            aggregation_pb2.GetResultsBlobRequest(), timeout=AGGREGATION_DEADLINE_S
        )
        have = self.engine.acta_records
        m = blob.acta_records
        # Aggregation knows at least the records it counted (an older one reports 0).
        self.ingest_records = max(blob.ingest_records, m)
        if m < have:
            raise UpstreamDataError(f"aggregation is at {m} records, the log already has {have}")
        # (2) the records [have, M), exact bytes
        leaves: list[bytes] = []
        if m > have:
            call = self.stub.StreamAggregatedRecords(
                aggregation_pb2.StreamAggregatedRecordsRequest(from_sequence=have, follow=False),
                timeout=AGGREGATION_DEADLINE_S,
            )
            async for batch in call:
                if batch.first_sequence != have + len(leaves):
                    call.cancel()
                    raise UpstreamDataError(
                        f"batch starts at {batch.first_sequence}, expected {have + len(leaves)}"
                    )
                leaves.extend(batch.leaves)
                if have + len(leaves) >= m:
                    call.cancel()  # the records after M belong to a later cut
                    break
            if have + len(leaves) < m:
                raise UpstreamDataError(
                    f"aggregation streamed {len(leaves)} records, {m - have} expected"
                )
            del leaves[m - have :]
        # (3) and (4)
        return await self.engine.cut(
            acta_leaves=leaves,
            acta_records=m,
            results=blob.results,
            ingest_records=self.ingest_records,
        )

    def _check_stall(self) -> None:
        """(5) the stall alarm, once per interval in which aggregation answered."""
        if self.ingest_records is None:
            return
        stall = self._stall.observe(
            acta_records=self.engine.acta_records, ingest_records=self.ingest_records
        )
        if stall is not None:
            log.error(
                "publication stalled: the log covers %d acta records, ingest had accepted "
                "%d (%d behind) and no record was added for %d intervals (%.0f s)",
                stall.acta_records,
                stall.ingest_records,
                stall.lag_records,
                stall.intervals,
                stall.intervals * self.interval,
            )

    async def run(self) -> None:
        """Cut every interval until cancelled; errors skip one interval."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.ingest_records = None
            try:
                row = await self.cut_once()
                log.debug("cut %d: size %d", row.cut_number, row.tree_size)
            except grpc.aio.AioRpcError as e:
                log.warning("no cut this interval: aggregation: %s", e.code())
            except ForkRefusedError:
                pass  # the guard logged the ALARM; nothing was signed, nor will be
            except PublicationError as e:
                log.error("no cut this interval: %s", e)
            except Exception:
                # Keep the heartbeat alive whatever went wrong; the error is logged, and
                # nothing was served because nothing was committed.
                log.exception("no cut this interval")
            self._check_stall()
            self.attempts += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - self.interval)  # no burst after a stall


def _field_error(field_name: str, message: str) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field_name, description=message)
            ]
        )
    )
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(
            code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
            message=f"{field_name}: {message}",
            details=[detail],
        )
    )
    return status


Context = grpc.aio.ServicerContext[Any, Any]


async def _data_loss(context: Context) -> NoReturn:
    # The alarm (which leaf or blob) is in the log; the client learns only that nothing
    # it could not verify was sent.
    await context.abort(
        grpc.StatusCode.DATA_LOSS, "the publisher's store failed an integrity check"
    )
    raise AssertionError("abort returns only by raising")  # pragma: no cover


async def _invalid(context: Context, field_name: str, message: str) -> NoReturn:
    await context.abort_with_status(_field_error(field_name, message))
    raise AssertionError("abort_with_status returns only by raising")  # pragma: no cover


class PublicationServicer(publication_pb2_grpc.PublicationServiceServicer):
    """Answers PublicationService calls from a :class:`PublicationEngine`."""

    def __init__(self, engine: PublicationEngine) -> None:
        """Serve ``engine``."""
        self.engine = engine

    async def GetLatestCut(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetLatestCutRequest, context: Context
    ) -> publication_pb2.GetLatestCutResponse:
        """The newest cut (UNAVAILABLE before the first one)."""
        response = self.engine.latest_response
        if response is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no cut has been made yet")
        return response

    async def GetCut(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetCutRequest, context: Context
    ) -> publication_pb2.GetCutResponse:
        """A cut by number (NOT_FOUND if there is none)."""
        if request.cut_number == 0:
            await _invalid(context, "cut_number", "cut numbers start at 1")
        try:
            cut = await self.engine.get_cut(request.cut_number)
        except TamperedDataError:
            await _data_loss(context)
        if cut is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no cut {request.cut_number}")
        return publication_pb2.GetCutResponse(cut=cut)

    async def WatchCuts(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.WatchCutsRequest, context: Context
    ) -> AsyncIterator[publication_pb2.WatchCutsResponse]:
        """Every cut after ``after_cut_number``, then new ones as they are made."""
        try:
            async for cut in self.engine.watch(request.after_cut_number):
                yield publication_pb2.WatchCutsResponse(cut=cut)
        except TamperedDataError:
            await _data_loss(context)

    async def GetActaInclusionProof(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetActaInclusionProofRequest, context: Context
    ) -> publication_pb2.GetActaInclusionProofResponse:
        """Inclusion proof of an acta record (latest or given revision) at a tree size."""
        if not request.acta_id:
            await _invalid(context, "acta_id", "required")
        size = await self.engine.tree_size()
        if request.tree_size == 0:
            await _invalid(context, "tree_size", "must be at least 1")
        if request.tree_size > size:
            await _invalid(context, "tree_size", f"larger than the log ({size})")
        try:
            found = await self.engine.acta_proof(
                request.acta_id, request.revision, request.tree_size
            )
        except TamperedDataError:
            await _data_loss(context)
        if found is None:
            what = f" revision {request.revision}" if request.revision else ""
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"acta {clip(request.acta_id)}{what} is not in the first "
                f"{request.tree_size} leaves",
            )
        leaf, index, proof = found
        return publication_pb2.GetActaInclusionProofResponse(
            leaf=leaf,
            proof=log_pb2.InclusionProof(
                leaf_index=index, tree_size=request.tree_size, hashes=proof
            ),
        )

    async def GetConsistencyProof(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetConsistencyProofRequest, context: Context
    ) -> publication_pb2.GetConsistencyProofResponse:
        """Consistency proof between two sizes of the log."""
        size = await self.engine.tree_size()
        if request.to_size > size:
            await _invalid(context, "to_size", f"larger than the log ({size})")
        if request.from_size > request.to_size:
            await _invalid(context, "from_size", "larger than to_size")
        proof = await self.engine.consistency(request.from_size, request.to_size)
        return publication_pb2.GetConsistencyProofResponse(
            proof=log_pb2.ConsistencyProof(
                from_size=request.from_size, to_size=request.to_size, hashes=proof
            )
        )

    async def GetLeaves(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetLeavesRequest, context: Context
    ) -> publication_pb2.GetLeavesResponse:
        """Up to ``min(count, MAX_LEAVES_PER_PAGE)`` leaves from ``start``."""
        if request.count == 0:
            await _invalid(context, "count", "must be at least 1")
        size = await self.engine.tree_size()
        if request.start >= size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"start {request.start} is not below size {size}"
            )
        count = min(request.count, MAX_LEAVES_PER_PAGE)
        try:
            leaves = await self.engine.leaves(request.start, count, size)
        except TamperedDataError:
            await _data_loss(context)
        return publication_pb2.GetLeavesResponse(leaves=leaves, tree_size=size)

    async def GetTrustRoot(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetTrustRootRequest, context: Context
    ) -> publication_pb2.GetTrustRootResponse:
        """A trust root version (0 for the newest)."""
        roots = self.engine.trust_roots
        version = request.version or len(roots)
        if version > len(roots):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no trust root version {version}")
        return publication_pb2.GetTrustRootResponse(
            trust_root=log_pb2.TrustRoot.FromString(roots[version - 1])
        )

    async def GetElectionDefinition(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetElectionDefinitionRequest, context: Context
    ) -> publication_pb2.GetElectionDefinitionResponse:
        """The election definition, as fetched from aggregation."""
        data = await self.engine.definition()
        if data is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the election definition has not been fetched yet"
            )
        return publication_pb2.GetElectionDefinitionResponse(definition=data)


@dataclass
class PublicationService:
    """A running publication service."""

    server: ServiceServer
    engine: PublicationEngine
    follower: AggregationFollower
    task: asyncio.Task[None]
    port: int

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Stop cutting, end watch streams, drain and stop the server, close the store."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.engine.close_watchers()
        await self.server.stop(drain_seconds=drain_seconds, grace=grace)
        await self.follower.channel.close()
        await self.engine.close()


async def start_publication(
    config: PublicationConfig,
    *,
    clock: Callable[[], dt.datetime] = _now,
    before_commit: Callable[[bytes], None] | None = None,
) -> PublicationService:
    """Check keys and trust root, open the store, start serving and cutting.

    Args:
        config: the configuration.
        clock: source of cut times.
        before_commit: crash-injection point for tests (see :class:`Cutter`).

    Raises:
        KeyFileError: if a signing key is missing, corrupt or group/world accessible.
        TrustRootFileError: if the trust root does not verify, has expired, does not
            list every signing key, or names another origin.
        StoreIntegrityError: if the store does not match its own checkpoints.
        ForkRefusedError: if the store is behind or diverges from a checkpoint already
            published in the bundle (e.g. restored from an older backup).
        UnsafeBundlePathError: if a bundle subdirectory is a symlink.
        OSError: if the address cannot be bound.
    """
    # Refuse to start without usable keys and a trust root that vouches for them: a
    # checkpoint clients cannot verify is as bad as an unsigned one.
    signers = load_signers(config)
    trust_roots, trusted = load_trust_root_chain(config.trust_root_dir, now=clock())
    listed = {v.key_string() for v in trusted.verifiers}
    for s in signers:
        if s.verifier().key_string() not in listed:
            raise TrustRootFileError(
                f"key {s.name} ({s.key_id.hex()}) is not in trust root v{trusted.version}"
            )
    if len(signers) < trusted.threshold:
        raise TrustRootFileError(
            f"trust root v{trusted.version} needs {trusted.threshold} signatures per "
            f"checkpoint, {len(signers)} keys configured"
        )
    origin = config.origin or trusted.origin
    if origin != trusted.origin:
        raise TrustRootFileError(
            f"configured origin {origin!r} differs from the trust root's {trusted.origin!r}"
        )
    if config.interval_seconds <= 0:
        raise ValueError("interval_seconds must be positive")
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    # The bundle first: a bundle that is unsafe to write stops the start before the
    # store is opened.
    bundle = BundleWriter(config.bundle_dir) if config.bundle_dir else None
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="publication-db")
    try:
        store = await asyncio.get_running_loop().run_in_executor(
            executor, PublicationStore, config.db_path
        )
    except BaseException:
        executor.shutdown()
        if bundle is not None:
            bundle.close()
        raise
    # What was published outside the store (docs/adr/0026): the bundle today; the
    # witnesses' cosigned checkpoints will be a second record here.
    guard = ForkGuard([BundleRecord(bundle, origin=origin)] if bundle else [])
    cutter = Cutter(
        store=store,
        signers=signers,
        origin=origin,
        clock=clock,
        before_commit=before_commit,
        guard=guard,
    )
    engine = PublicationEngine(
        store=store,
        cutter=cutter,
        executor=executor,
        trust_roots=trust_roots,
        bundle=bundle,
        guard=guard,
    )
    try:
        await engine.load()
    except BaseException:
        await engine.close()
        raise
    server = ServiceServer(name=SERVICE_NAME, interceptors=config.interceptors)
    publication_pb2_grpc.add_PublicationServiceServicer_to_server(
        PublicationServicer(engine), server.grpc
    )
    port = await server.start(config.listen, tls=config.listen_tls)
    channel = aio_channel(
        config.aggregation_target,
        tls=config.aggregation_tls,
        server_name=config.aggregation_server_name,
    )
    follower = AggregationFollower(engine=engine, channel=channel, interval=config.interval_seconds)

    async def refuse() -> None:
        await server.set_serving(False)

    follower.on_refusal = refuse
    task = asyncio.create_task(follower.run(), name="publication-cuts")
    log.info(
        "publication serving on port %d: origin %s, %d leaves, cut %d, every %.1f s",
        port,
        origin,
        await engine.tree_size(),
        engine.latest_number,
        config.interval_seconds,
    )
    return PublicationService(server=server, engine=engine, follower=follower, task=task, port=port)
