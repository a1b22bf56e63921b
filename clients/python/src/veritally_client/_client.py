"""The verifying client: fetches through a transport, verifies with the pure core, and
persists trusted state only after every check passed.

Like python-tuf's ``Updater`` around its ``TrustedMetadataSet``: this module does the IO
(transport calls, state files, clock, backoff sleeps); :mod:`veritally_client._verify`
decides what is true.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from google.protobuf.message import DecodeError

from veritally_client._config import ClientConfig
from veritally_client._election import ElectionIndex
from veritally_client._errors import (
    DigestMismatchError,
    InsufficientCosignaturesError,
    MalformedDataError,
    RollbackError,
    StateMismatchError,
    TransportError,
    TrustRootError,
    UnknownKeyError,
    VerificationError,
)
from veritally_client._gen.veritally.v1 import log_pb2
from veritally_client._note import open_note
from veritally_client._recount import Recounter, RecountReport
from veritally_client._state import StateStore, TrustedState, decode_evidence
from veritally_client._tls import check_credentials
from veritally_client._transport import GrpcTransport, TlsCredentials, Transport
from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import (
    CutVerifier,
    ProvenActa,
    RecordedForkError,
    SignedCutBytes,
    VerifiedCut,
    claimed_tree_size,
    to_trusted_state,
    verify_acta_inclusion,
)

__all__ = ["Client", "ProgressCallback", "WatchEvent", "load_trust_root", "verify_evidence"]

# Trust root versions followed in one refresh; a rotation is rare (a few per election),
# so a publisher claiming hundreds of versions ahead is refused rather than followed.
_MAX_TRUST_ROOT_STEPS = 100

#: ``progress(done, total)`` in leaves, called after each page of a recount.
ProgressCallback = Callable[[int, int], None]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_trust_root(path: Path, *, now: dt.datetime | None = None) -> TrustedRoot:
    """Load and verify a pinned trust root file (a serialized TrustRoot document).

    Args:
        path: the file, as received out of band from the electoral authority.
        now: the time to check its expiry against (default: now).

    Raises:
        TrustRootError: if it is malformed, not self-signed at its threshold, or expired.
        OSError: if the file cannot be read.
    """
    return TrustedRoot.from_bytes(Path(path).read_bytes(), now=now or _utcnow())


def verify_evidence(data: bytes, *, trust_root: TrustedRoot) -> int:
    """Check an exported fork-evidence document against a trust root.

    Args:
        data: the JSON document from ``Client.export_evidence``.
        trust_root: the trust root of the log it is about.

    Returns:
        The number of evidence entries, each showing two conflicting signed trees.

    Raises:
        VerificationError: (a subclass) if any entry does not verify or shows no fork.
        MalformedDataError: if the document is not evidence.
    """
    verifier = CutVerifier(trust_root=trust_root, config=ClientConfig())
    items = decode_evidence(data)
    for item in items:
        verifier.verify_evidence(item)
    return len(items)


def _signed_bytes(cut: log_pb2.SignedCut) -> SignedCutBytes:
    return SignedCutBytes(
        checkpoint=bytes(cut.checkpoint),
        cut_leaf=bytes(cut.cut_leaf),
        inclusion_proof=tuple(bytes(h) for h in cut.inclusion_proof),
        results=bytes(cut.results),
    )


class Client:
    """A client that verifies every cut it hands over.

    One client per thread: its calls are not synchronised with each other, and two
    clients must not share a ``state_dir`` concurrently.

    Usage::

        root = load_trust_root(Path("trust-root.pb"))
        with Client(endpoint="prep.example:443", trust_root=root, state_dir=Path("state"),
                    credentials=TlsCredentials.from_files(ca=..., cert=..., key=...)) as c:
            cut = c.latest()
            print(cut.national())
    """

    def __init__(
        self,
        *,
        endpoint: str,
        trust_root: TrustedRoot,
        state_dir: Path,
        credentials: TlsCredentials | None = None,
        unsafe_plaintext: bool = False,
        config: ClientConfig = ClientConfig(),  # noqa: B008  # frozen, so sharing is safe
        http_ca: bytes | None = None,
    ) -> None:
        """Connect to a publication service (directly or through Envoy), or read a
        mirror of its static bundle over HTTP.

        Args:
            endpoint: ``host:port`` of a publication service (gRPC), or the URL of a
                bundle (``https://mirror.example/prep/``), read with
                :class:`~veritally_client._http.HttpTransport` and verified alike.
            trust_root: the pinned, verified trust root (see :func:`load_trust_root`).
            state_dir: where the trusted state and fork evidence are kept.
            credentials: mTLS material; required for gRPC unless ``unsafe_plaintext``;
                not used for a bundle URL (a mirror asks no client certificate).
            unsafe_plaintext: connect without TLS (tests, local servers on loopback);
                required for an ``http://`` bundle URL.
            config: safety limits.
            http_ca: PEM CA certificate(s) an ``https://`` bundle URL's server
                certificate must chain to (a deployment's own CA); None for the system's.

        Raises:
            ValueError: if neither or both of ``credentials`` and ``unsafe_plaintext``
                are given for gRPC; for a bundle URL, ``credentials`` given, or
                ``unsafe_plaintext`` not matching ``http://``.
            CredentialsError: the TLS files are unusable (not PEM, a key that is not the
                certificate's, a certificate out of its validity).
            StateMismatchError: ``state_dir`` holds another publisher's state.
            StateInUseError: another client holds ``state_dir``.
        """
        transport: Transport
        if endpoint.startswith(("http://", "https://")):
            transport = _http_transport(endpoint, credentials, unsafe_plaintext, http_ca, config)
        elif (credentials is None) == (not unsafe_plaintext):
            raise ValueError("give exactly one of credentials= and unsafe_plaintext=True")
        elif credentials is not None:
            check_credentials(credentials, _utcnow())
            transport = GrpcTransport.open(
                endpoint,
                credentials=credentials,
                timeout=config.rpc_timeout,
                max_message_bytes=config.max_message_bytes,
            )
        else:
            transport = GrpcTransport.unsafe_plaintext(
                endpoint, timeout=config.rpc_timeout, max_message_bytes=config.max_message_bytes
            )
        self._setup(transport, trust_root, Path(state_dir), config, _utcnow)

    @classmethod
    def from_transport(
        cls,
        transport: Transport,
        *,
        trust_root: TrustedRoot,
        state_dir: Path,
        config: ClientConfig = ClientConfig(),  # noqa: B008  # frozen, so sharing is safe
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> Client:
        """A client over any :class:`Transport` (an in-memory publisher, a replay).

        Args:
            transport: the port to the publisher.
            trust_root: the pinned, verified trust root.
            state_dir: where the trusted state and fork evidence are kept.
            config: safety limits.
            clock: returns the current time (timezone-aware); tests and replays set it.
        """
        client = cls.__new__(cls)
        client._setup(transport, trust_root, Path(state_dir), config, clock)
        return client

    def _setup(
        self,
        transport: Transport,
        trust_root: TrustedRoot,
        state_dir: Path,
        config: ClientConfig,
        clock: Callable[[], dt.datetime],
    ) -> None:
        if not isinstance(trust_root, TrustedRoot):
            raise TypeError("trust_root must be a TrustedRoot (see load_trust_root)")
        self._transport = transport
        self._config = config
        self._clock = clock
        self._store = StateStore(state_dir, origin=trust_root.origin)
        try:
            trust_root = _bound_trust_root(self._store, trust_root, clock())
        except BaseException:
            self._store.close()
            raise
        self._verifier = CutVerifier(trust_root=trust_root, config=config)
        self._election: ElectionIndex | None = None
        # The newest cut verified by this client, whose results a publisher may then
        # leave out of an answer (docs/adr/0089); valid while the trusted state records it.
        self._held: VerifiedCut | None = None
        self._closed = threading.Event()
        self._sleep: Callable[[float], object] = self._closed.wait

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and release the state directory. Trusted state is
        already on disk.

        Safe from another thread: a :meth:`watch` in progress then ends (its loop simply
        stops), and any other call in flight or made later raises :class:`TransportError`
        ("the client was closed").
        """
        self._closed.set()
        try:
            self._transport.close()
        finally:
            self._store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------

    @property
    def trust_root(self) -> TrustedRoot:
        """The trust root in use."""
        return self._verifier.trust_root

    @property
    def trusted_state(self) -> TrustedState | None:
        """The last verified (and persisted) state, or None before the first cut.

        Raises:
            MalformedDataError: if the state file is corrupt.
        """
        return self._store.load()

    def export_evidence(self) -> bytes:
        """Fork evidence seen so far, as JSON others can check with :func:`verify_evidence`.

        Raises:
            MalformedDataError: if the evidence file is corrupt.
        """
        return self._store.export_evidence()

    def _trusted_or_latest(self) -> TrustedState:
        state = self._store.load()
        if state is None:
            self.latest()
            state = self._store.load()
            if state is None:  # latest() persists its cut or raises
                raise RuntimeError("the trusted state was not persisted")
        return state

    # -- verbs ------------------------------------------------------------------------

    def refresh_trust_root(self) -> TrustedRoot:
        """Follow the publisher's trust root updates (key rotations) from the one in use.

        Every version n + 1 must be signed by the keys of version n (and its own); each
        verified version is kept in the state directory and re-verified on the next start.

        Returns:
            The newest verified trust root, now in use.

        Raises:
            TrustRootError: if an update does not verify (nothing is changed then).
            MalformedDataError: if the publisher's newest document does not parse.
            TransportError: if the publisher cannot be reached.
        """
        root = self._verifier.trust_root
        newest = self._transport.get_trust_root(0)
        try:
            # Read, not trusted: only how many versions to fetch and verify one by one.
            claimed = log_pb2.TrustRootBody.FromString(
                log_pb2.TrustRoot.FromString(newest).body
            ).version
        except DecodeError as e:
            raise MalformedDataError("the newest trust root does not parse") from e
        if claimed > root.version + _MAX_TRUST_ROOT_STEPS:
            raise MalformedDataError(
                f"trust root version {claimed} is too far ahead of {root.version}"
            )
        updates = []
        for version in range(root.version + 1, claimed + 1):
            document = newest if version == claimed else self._transport.get_trust_root(version)
            root = root.update(document, now=self._clock())
            updates.append((version, document))
        for version, document in updates:
            self._store.save_trust_root(version, document)
        if updates:
            self._verifier = CutVerifier(trust_root=root, config=self._config)
        return root

    def _advance(
        self, signed: log_pb2.SignedCut, *, unchanged: _Unchanged | None = None
    ) -> VerifiedCut:
        """Verify a cut as the new newest one and persist it (only if every check passed).

        With ``unchanged``, ``signed`` is an answer without results that claims they are
        those of the held cut (docs/adr/0089), verified as such.

        A checkpoint signed by no key of the trust root in use may be signed by rotated
        keys, and one without its witness quorum may be cosigned by rotated witnesses:
        the trust root is refreshed once (updates are signed by the old keys) and the cut
        verified again.
        """
        try:
            return self._advance_once(signed, unchanged)
        except (UnknownKeyError, InsufficientCosignaturesError):
            # A newer trust root may list other keys or witnesses (rotated like them).
            before = self._verifier.trust_root.version
            if self.refresh_trust_root().version == before:
                raise
            return self._advance_once(signed, unchanged)

    def _advance_once(self, signed: log_pb2.SignedCut, unchanged: _Unchanged | None) -> VerifiedCut:
        trusted = self._store.load()
        cut_bytes = _signed_bytes(signed)
        try:
            if unchanged is not None:
                if trusted is None:
                    raise RuntimeError("an unchanged answer was asked for without a state")
                cut = self._verifier.verify_unchanged(
                    cut_bytes,
                    previous=unchanged.previous,
                    trusted=trusted,
                    consistency_proof=unchanged.consistency_proof,
                    now=self._clock(),
                )
            else:
                proof: list[bytes] = []
                if trusted is not None:
                    size = claimed_tree_size(cut_bytes.checkpoint)
                    if size > trusted.tree_size:
                        proof = self._transport.get_consistency_proof(trusted.tree_size, size)
                cut = self._verifier.verify_update(
                    cut_bytes,
                    trusted=trusted,
                    consistency_proof=proof,
                    now=self._clock(),
                )
        except RecordedForkError as e:
            self._store.record_evidence(e.record)
            raise
        except RollbackError as e:
            assert trusted is not None  # no rollback without a verified state
            # Signed by this publisher's keys, and older than what this directory holds:
            # a rollback, or this publisher's directory of another night.
            raise RollbackError(
                f"{e} (the trusted state in {self._store.directory.parent} holds cut "
                f"{trusted.cut_number}, election definition "
                f"{trusted.definition_sha256.hex()[:16]}...; if it is this publisher's "
                "state of another night, use another state directory (--state-dir))"
            ) from None
        if trusted is None or cut.tree_size > trusted.tree_size:
            self._store.save(to_trusted_state(cut, trust_root=self._verifier.trust_root))
        # Held without its election loader: a bound method of this client would make a
        # cycle that keeps an unclosed client (and its state lock) alive until collected.
        self._held = cut
        return cut._named(self.election)

    def latest(self) -> VerifiedCut:
        """The newest cut, verified (signature, last leaf, digest, no rollback, no fork,
        fresh, bound to the election, not stuck behind ingest) and persisted as the
        trusted state.

        Once this client has verified a cut, it tells the publisher that cut's tree size,
        and a publisher whose newest cut signs the same results answers without them
        (a few hundred bytes instead of the whole blob; docs/adr/0089). Such an answer is
        verified as fully as a whole cut, the results being the ones verified before, and
        the cut's ``results_changed`` is False. Compare ``cut_number`` to tell a new cut.

        Raises:
            StalledError: the cuts have said for longer than ``config.max_stall_seconds``
                that ingest accepted records they do not cover (the pipeline is stuck).
            VerificationError: (a subclass naming the failure) if it does not verify.
            TransportError: if the publisher cannot be reached.
            TrustRootError: if the trust root expired.
        """
        # The held cut is the one the trusted state records: this client alone writes the
        # state (it holds the directory's lock) and holds each cut it persisted
        # (verify_unchanged checks it all the same).
        held = self._held
        if held is None:
            return self._advance(self._transport.get_latest_cut())
        answer = self._transport.get_latest_cut_since(held.tree_size)
        if not answer.results_unchanged:
            return self._advance(answer.cut)
        unchanged = _Unchanged(previous=held, consistency_proof=tuple(answer.consistency_proof))
        return self._advance(answer.cut, unchanged=unchanged)

    def cut(self, number: int) -> VerifiedCut:
        """A cut by number, verified and checked consistent with the trusted state (a past
        cut is not checked for freshness and is never persisted).

        Raises:
            VerificationError: (a subclass) if it does not verify, or is not that cut.
            TransportError: if the publisher cannot be reached or has no such cut.
            ValueError: if ``number`` is below 1.
        """
        if number < 1:
            raise ValueError("cut numbers start at 1")
        trusted = self._trusted_or_latest()
        cut_bytes = _signed_bytes(self._transport.get_cut(number))
        size = claimed_tree_size(cut_bytes.checkpoint)
        proof: list[bytes] = []
        if size < trusted.tree_size:
            proof = self._transport.get_consistency_proof(size, trusted.tree_size)
        elif size > trusted.tree_size:
            proof = self._transport.get_consistency_proof(trusted.tree_size, size)
        try:
            cut = self._verifier.verify_historical(
                cut_bytes, trusted=trusted, consistency_proof=proof
            )
        except RecordedForkError as e:
            self._store.record_evidence(e.record)
            raise
        if cut.cut_number != number:
            raise MalformedDataError(f"asked for cut {number}, got cut {cut.cut_number}")
        return cut._named(self.election)

    def watch(
        self, *, on_event: Callable[[WatchEvent], None] | None = None
    ) -> Generator[VerifiedCut, None, None]:
        """Verified cuts as they are made, forever (break out of the loop to stop).

        ``on_event`` (called in the watching thread) hears what happens between cuts: a
        failed attempt and when the next one is (``"reconnecting"``), and a connection
        that works again (``"connected"``), so that a live view can say it is not live.

        On each (re)connection the newest cut is verified first (consistency from the last
        verified tree covers every cut missed while disconnected), then the server stream
        is followed from it; every streamed cut is verified against the previous one.
        A broken stream, or one silent for ``config.max_checkpoint_age`` seconds, is
        reconnected with exponential backoff; a frozen publisher then shows as
        :class:`StaleCheckpointError` from the reconnection's check of the newest cut, and
        a publisher heartbeating over a stuck pipeline as :class:`StalledError`.

        Yields:
            Each newer verified cut, once.

        Ends (returns) when :meth:`close` is called, from any thread.

        Raises:
            VerificationError: (a subclass) as soon as a cut does not verify.
            TransportError: after ``config.watch_max_failures`` consecutive failures (never
                when it is 0): "gave up after N attempts: ...".
        """
        backoff = self._config.watch_backoff_initial
        failures = 0
        last = self._store.load()
        last_number = last.cut_number if last is not None else 0
        while not self._closed.is_set():
            try:
                newest = self.latest()
                if failures and on_event is not None:
                    on_event(WatchEvent("connected", failures=0, retry_in=0.0, error=""))
                if newest.cut_number > last_number:
                    # Progress: the backoff starts again from its initial value.
                    failures, backoff = 0, self._config.watch_backoff_initial
                    last_number = newest.cut_number
                    yield newest
                # A publisher cuts at least every interval; a stream silent for longer
                # than a cut may be old is dropped, and the reconnection's latest()
                # then fails as stale if the publisher is frozen.
                stream = self._transport.watch_cuts(
                    last_number, idle_timeout=self._config.max_checkpoint_age
                )
                for signed in stream:
                    cut = self._advance(signed)
                    if cut.cut_number > last_number:
                        failures, backoff = 0, self._config.watch_backoff_initial
                        last_number = cut.cut_number
                        yield cut
            except TransportError as e:
                if self._closed.is_set():
                    return
                failures += 1
                limit = self._config.watch_max_failures
                if limit and failures >= limit:
                    raise TransportError(f"gave up after {failures} attempts: {e}") from e
                if on_event is not None:
                    on_event(
                        WatchEvent(
                            "reconnecting", failures=failures, retry_in=backoff, error=str(e)
                        )
                    )
                self._sleep(backoff)
                backoff = min(backoff * 2, self._config.watch_backoff_max)

    def prove_acta(self, acta_id: str, *, revision: int | None = None) -> ProvenActa:
        """Prove that an acta record is in the log at the last verified tree size.

        Args:
            acta_id: ``"<casilla_id>/<contest_id>"``.
            revision: the revision wanted; None for the latest one the server knows within
                the verified tree (only a recount shows that no later revision exists).

        Returns:
            The verified record with its proof.

        Raises:
            VerificationError: (a subclass) if the proof or the record does not verify.
            TransportError: if the publisher cannot be reached or knows no such acta.
            ValueError: if ``revision`` is below 1.
        """
        if revision is not None and revision < 1:
            raise ValueError("revisions start at 1")
        trusted = self._trusted_or_latest()
        leaf, proof = self._transport.get_inclusion_proof(acta_id, revision or 0, trusted.tree_size)
        return verify_acta_inclusion(
            trusted=trusted,
            acta_id=acta_id,
            revision=revision,
            leaf=leaf,
            leaf_index=proof.leaf_index,
            proof_tree_size=proof.tree_size,
            proof=list(proof.hashes),
        )

    def election(self) -> ElectionIndex:
        """The election definition, checked against the digest bound into the signed
        results.

        Raises:
            DigestMismatchError: if the served definition is not the one signed for.
            MalformedDataError: if it does not parse.
            TransportError: if the publisher cannot be reached.
        """
        trusted = self._trusted_or_latest()
        if self._election is None or self._election.definition_sha256 != trusted.definition_sha256:
            data = self._transport.get_election_definition()
            index = ElectionIndex.from_bytes(data)
            if index.definition_sha256 != trusted.definition_sha256:
                raise DigestMismatchError(
                    f"election definition hashes to {index.definition_sha256.hex()}, the "
                    f"signed results are for {trusted.definition_sha256.hex()}"
                )
            self._election = index
        return self._election

    def recount(self, *, progress: ProgressCallback | None = None) -> RecountReport:
        """Download every leaf of the last verified tree, recompute its root and the
        results of every cut in it, and compare them with what was signed.

        Args:
            progress: called as ``progress(leaves_done, tree_size)`` after each page.

        Returns:
            The report; its ``unit`` method gives any unit's results, down to casillas.

        Raises:
            RecountMismatchError: a cut's signed results differ from the recomputed ones.
            BadProofError: the leaves do not hash to the signed root.
            MalformedDataError: a leaf is malformed or the server sent a bad page.
            DigestMismatchError: the election definition is not the one signed for.
            TransportError: if the publisher cannot be reached.
        """
        trusted = self._trusted_or_latest()
        election = self.election()
        recounter = Recounter(
            election=election, tree_size=trusted.tree_size, root_hash=trusted.root_hash
        )
        page = self._config.max_leaves_per_page
        start = 0
        while start < trusted.tree_size:
            want = min(page, trusted.tree_size - start)
            leaves = self._transport.get_leaves(start, want)
            if not leaves or len(leaves) > want:
                raise MalformedDataError(f"asked for {want} leaves from {start}, got {len(leaves)}")
            recounter.feed(leaves)
            start += len(leaves)
            if progress is not None:
                progress(start, trusted.tree_size)
        return recounter.finish()


@dataclass(frozen=True)
class _Unchanged:
    """What an answer without results is verified with: the held verified cut whose
    results it claims, and the consistency proof it carried."""

    previous: VerifiedCut
    consistency_proof: tuple[bytes, ...]


@dataclass(frozen=True)
class WatchEvent:
    """What :meth:`Client.watch` is doing between cuts.

    Attributes:
        kind: ``"reconnecting"`` (an attempt failed; the next one is in ``retry_in``
            seconds) or ``"connected"`` (an attempt worked after failures).
        failures: consecutive failed attempts so far (0 when connected).
        retry_in: seconds until the next attempt (0 when connected).
        error: why the last attempt failed ("" when connected).
    """

    kind: Literal["reconnecting", "connected"]
    failures: int
    retry_in: float
    error: str


def _http_transport(
    endpoint: str,
    credentials: TlsCredentials | None,
    unsafe_plaintext: bool,
    http_ca: bytes | None,
    config: ClientConfig,
) -> Transport:
    """The transport of a bundle URL (httpx is imported only for one)."""
    from veritally_client._http import HttpLimits, HttpTransport

    if credentials is not None:
        raise ValueError("a bundle URL takes no credentials= (use http_ca= for its CA)")
    plaintext = endpoint.startswith("http://")
    if unsafe_plaintext != plaintext:
        raise ValueError("an http:// bundle URL needs unsafe_plaintext=True, https:// not")
    limits = HttpLimits(timeout=config.rpc_timeout, max_file_bytes=config.max_message_bytes)
    if plaintext:
        return HttpTransport.unsafe_plaintext(endpoint, limits=limits)
    return HttpTransport.open(endpoint, ca=http_ca, limits=limits)


def _bound_trust_root(store: StateStore, pinned: TrustedRoot, now: dt.datetime) -> TrustedRoot:
    """The trust root in use: the pinned one, then the versions a previous run of this
    state directory verified (each re-verified as an update of the one before); and the
    check that the directory's trusted state was verified under one of them.

    Raises:
        StateMismatchError: the directory's trust root versions do not follow the pinned
            one, or its state was verified under a trust root not in that chain: it
            belongs to another publisher (or another night's keys).
        TrustRootError: the newest version has expired.
        MalformedDataError: the state file is corrupt.
    """
    where = store.directory.parent
    digests = {pinned.version: hashlib.sha256(pinned.document).digest()}
    chain = [pinned]
    root = pinned
    for document in store.trust_root_documents(after_version=pinned.version):
        try:
            # Older versions have usually expired: only the newest must be fresh.
            root = root.update(document, now=None)
        except TrustRootError as e:
            raise StateMismatchError(
                f"the state directory {where} holds trust root v{root.version + 1} of "
                f"origin {pinned.origin!r} that does not follow the pinned trust root "
                f"v{pinned.version} ({e}): it belongs to another publisher; use another "
                "state directory (--state-dir) for this one"
            ) from None
        chain.append(root)
        digests[root.version] = hashlib.sha256(document).digest()
    if now >= root.expires:
        raise TrustRootError(f"trust root v{root.version} expired at {root.expires}")
    state = store.load()
    if state is None:
        return root
    if state.trust_root_sha256 is not None:
        bound = digests.get(state.trust_root_version) == state.trust_root_sha256
    else:
        # A state written before the binding: its checkpoint must be signed by the keys
        # of one of the versions.
        bound = any(_signed_under(state.checkpoint, r) for r in chain)
    if not bound:
        known = ", ".join(f"v{v}" for v in sorted(digests))
        under = (
            f"trust root v{state.trust_root_version} ({state.trust_root_sha256.hex()[:16]}...)"
            if state.trust_root_sha256 is not None
            else "keys none of those sign"
        )
        raise StateMismatchError(
            f"the state in {where} belongs to another publisher or night: it holds cut "
            f"{state.cut_number} (tree size {state.tree_size}, election definition "
            f"{state.definition_sha256.hex()[:16]}...) verified under {under}, and this "
            f"client pins trust root {known} of origin {pinned.origin!r}; use another "
            "state directory (--state-dir) for this one"
        )
    return root


def _signed_under(note: bytes, root: TrustedRoot) -> bool:
    try:
        open_note(note, root.verifiers, threshold=root.threshold)
    except VerificationError:
        return False
    return True
