"""Publication's app: its typed config, the checks before it starts, and the wiring.

This room owns starting and stopping the service: loading the signing keys and the trust
root that must vouch for them, opening the store and the bundle, building the cutter,
engine, servicer and follower, and running the server and the cut task. It may import
every publication module and the shared server and channel plumbing
(:mod:`veritally.rpc`); nothing imports it but the commands, the stack and tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from veritally.metrics.families import PublicationMetrics
from veritally.publication.bundle import BundleRecord, BundleWriter
from veritally.publication.cutter import Cutter
from veritally.publication.engine import PublicationEngine
from veritally.publication.errors import KeyFileError, LeaseLostError, TrustRootFileError
from veritally.publication.follower import AggregationFollower
from veritally.publication.keys import load_passphrase, load_signer
from veritally.publication.published import ForkGuard
from veritally.publication.servicer import SERVICE_NAME, PublicationServicer
from veritally.publication.store import PublicationStore
from veritally.publication.trustroot import load_trust_root_chain
from veritally.publication.witnesses import WitnessCollector, WitnessEndpoint
from veritally.rpc import ServiceServer, TlsFiles, aio_channel
from veritally.storage import DbLocation, LeaseHolder
from veritally_client.protocol import Signer
from veritally_client.protocol.pb import publication_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["PublicationConfig", "PublicationService", "load_signers", "start_publication"]


@dataclass(frozen=True, kw_only=True)
class PublicationConfig:
    """Everything ``veritally serve publication`` needs.

    Attributes:
        db_path: the store: a SQLite file (created if missing) or a PostgreSQL database.
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
        witnesses: witnesses each committed checkpoint is sent to (docs/adr/0091).
        witness_timeout_seconds: each witness's deadline per checkpoint, in seconds: the
            most a slow or dead witness delays a cut's serving.
        lease: with several publishers on one database, this one's claim to the
            publication lease: it waits as a standby until it holds it, renews it with
            every cut and every third of its length, and stops (``deposed``) when it
            loses it (docs/adr/0094-publication-lease.md). None: the only publisher.
    """

    db_path: DbLocation
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
    witnesses: tuple[WitnessEndpoint, ...] = ()
    witness_timeout_seconds: float = 0.5
    lease: LeaseHolder | None = None


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
class PublicationService:
    """A running publication service."""

    server: ServiceServer
    engine: PublicationEngine
    follower: AggregationFollower
    task: asyncio.Task[None]
    port: int
    metrics: PublicationMetrics
    # Set when this publisher lost the publication lease: it cuts no more.
    deposed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    renewal: asyncio.Task[None] | None = None
    _stopped: bool = False

    async def ended(self) -> None:
        """Return when the service ends by itself (it lost the publication lease)."""
        await self.deposed.wait()

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Stop cutting, end watch streams, drain and stop the server, close the store
        (once: stopping a stopped service does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        for task in (self.task, self.renewal):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.engine.close_watchers()
        await self.server.stop(drain_seconds=drain_seconds, grace=grace)
        await self.follower.channel.close()
        if not self.deposed.is_set():
            # A clean stop gives the lease up, so the standby need not wait it out.
            try:
                await self.engine.release_lease()
            except Exception:
                log.exception("could not release the publication lease: it will lapse")
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
    if config.lease is not None and config.lease.seconds < 2 * config.interval_seconds:
        raise ValueError("the lease must last at least two intervals between cuts")
    if isinstance(config.db_path, Path):
        config.db_path.parent.mkdir(parents=True, exist_ok=True)
    # The bundle first: a bundle that is unsafe to write stops the start before the
    # store is opened.
    bundle = BundleWriter(config.bundle_dir) if config.bundle_dir else None
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="publication-db")
    try:
        store = await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(PublicationStore, config.db_path, lease=config.lease)
        )
    except BaseException:
        executor.shutdown()
        if bundle is not None:
            bundle.close()
        raise
    try:
        if config.lease is not None:
            await _wait_for_lease(store, executor)
    except BaseException:
        await asyncio.get_running_loop().run_in_executor(executor, store.close)
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
    metrics = PublicationMetrics(interval_seconds=config.interval_seconds)
    if config.witnesses:
        listed = {w.key_string() for w in trusted.witnesses}
        for w in config.witnesses:
            if w.key.key_string() not in listed:
                log.warning(
                    "witness %s is not in trust root v%d: its cosignatures count for no client",
                    w.key.name,
                    trusted.version,
                )
        engine.witnesses = WitnessCollector(
            witnesses=config.witnesses,
            timeout_seconds=config.witness_timeout_seconds,
            get_size=engine.witness_size,
            set_size=engine.set_witness_size,
            proof=engine.consistency,
            observe=metrics.observe_witness,
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
    deposed = asyncio.Event()

    async def depose(error: LeaseLostError) -> None:
        log.error("ALARM %s; this publisher stops serving", error)
        await server.set_serving(False)
        deposed.set()

    follower.on_deposed = depose
    metrics.watch(engine)
    metrics.watch_streams(server.streams)
    follower.observe_cut = metrics.observe_cut
    task = asyncio.create_task(follower.run(), name="publication-cuts")
    log.info(
        "publication serving on port %d: origin %s, %d leaves, cut %d, every %.1f s",
        port,
        origin,
        await engine.tree_size(),
        engine.latest_number,
        config.interval_seconds,
    )
    renewal = None
    if config.lease is not None:
        renewal = asyncio.create_task(
            _renew_lease(engine, config.lease, depose), name="publication-lease"
        )
    return PublicationService(
        server=server,
        engine=engine,
        follower=follower,
        task=task,
        port=port,
        metrics=metrics,
        deposed=deposed,
        renewal=renewal,
    )


#: Seconds between two asks of a standby publisher for the lease, at most.
LEASE_POLL_SECONDS = 1.0


async def _wait_for_lease(
    store: PublicationStore, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    """Wait as a standby until ``store`` holds the publication lease."""
    assert store.lease is not None
    loop = asyncio.get_running_loop()
    poll = min(LEASE_POLL_SECONDS, store.lease.seconds / 4)
    seen: tuple[str, int] | None = None
    while True:
        state = await loop.run_in_executor(executor, store.acquire_lease)
        if state.held:
            log.info("publisher %s holds the lease (epoch %d)", state.holder, state.epoch)
            return
        if seen != (state.holder, state.epoch):
            seen = (state.holder, state.epoch)
            log.info(
                "standby: publisher %s holds the lease (epoch %d); %s waits for it",
                state.holder,
                state.epoch,
                store.lease.name,
            )
        await asyncio.sleep(poll)


async def _renew_lease(
    engine: PublicationEngine,
    lease: LeaseHolder,
    depose: Callable[[LeaseLostError], Awaitable[None]],
) -> None:
    """Renew the lease every third of its length, between cuts too (a publisher whose
    aggregation is down keeps it); on losing it, depose this publisher."""
    loop = asyncio.get_running_loop()
    renewed = loop.time()
    while True:
        await asyncio.sleep(lease.seconds / 3)
        epoch = engine.store.lease_epoch
        try:
            await engine.renew_lease()
            renewed = loop.time()
        except LeaseLostError as e:
            await depose(e)
            return
        except Exception:
            # The database unreachable: for a moment, a retry renews the lease; for a
            # whole lease length, it has lapsed and another publisher may hold it.
            log.exception("could not renew the publication lease")
            if loop.time() - renewed >= lease.seconds:
                await depose(
                    LeaseLostError(
                        f"publisher {lease.name} could not renew the lease of epoch {epoch} "
                        f"for {loop.time() - renewed:.1f} s: it lapsed"
                    )
                )
                return
