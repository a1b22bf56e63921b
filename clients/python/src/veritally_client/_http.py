"""The client's port over HTTP: any mirror of the static bundle (docs/bundle-format.md).

:class:`HttpTransport` implements :class:`~veritally_client._transport.Transport` from the
bundle's files, so a newsroom can read the publisher's public listener, a CDN or another
newsroom's nginx mirror, and :class:`~veritally_client.Client` verifies what it reads with
the same pure verifier as over gRPC. Nothing read here is trusted:

1. ``latest`` names the newest cut (only its number is used: names are computed, never
   taken from the files); ``cuts/<n>.cut`` is the signed cut the verifier checks;
2. consistency and inclusion proofs are computed from tiles (``tile/<L>/<N>``) read
   through :class:`HttpSource` by a :class:`~veritally_client._tiles.TiledTree`, which
   authenticates every tile against the root of ``checkpoints/<size>``: that root is only
   claimed here, and the verifier then checks the proof against the signed roots;
3. leaves come from entry bundles, each entry checked against its level-0 tile;
4. trust root versions and the election definition are plain files, verified by the
   client (update signatures, the digest bound into the signed results).

HTTP: one httpx client (HTTP/2 when the server offers it, connections reused); ``latest``
and ``checkpoint`` are revalidated with ``If-None-Match`` on every read (a poll of an
unchanged bundle costs a 304); every other name is immutable (its name fixes its
content), so it is kept after the first read and never asked for again. Every response
has a size bound, checked on ``Content-Length`` before the body is read and again while
it is read. httpx's errors are wrapped once, here, as :class:`TransportError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import httpx
from google.protobuf.message import DecodeError

from veritally_client._errors import MalformedDataError, TransportError
from veritally_client._gen.veritally.v1 import log_pb2, publication_pb2
from veritally_client._leaf import parse_leaf_view
from veritally_client._merkle import HASH_SIZE
from veritally_client._tiles import MAX_ENTRY_BUNDLE_BYTES, TILE_WIDTH, TileCache, TiledTree

__all__ = ["HttpLimits", "HttpSource", "HttpTransport"]

SignedCutPb = log_pb2.SignedCut
InclusionProofPb = log_pb2.InclusionProof

#: The two names a bundle replaces; every other name is written once (bundle-format.md).
MUTABLE_NAMES: Final = frozenset({"latest", "checkpoint"})
# `latest` and a signed note are a few hundred bytes; 64 KiB is far above any honest one.
_MAX_POINTER_BYTES = 64 * 1024
# Largest cut number accepted from `latest`: a cut every second for 30 years is below it;
# it only keeps a hostile pointer from naming absurd files.
_MAX_CUT_NUMBER = 10**9
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """Bounds of an :class:`HttpTransport`.

    Attributes:
        timeout: seconds. Connect, read and write timeout of each request.
        max_file_bytes: bytes. Largest cut, results, trust root or definition file read
            (a national cut is ~0.5 MB); the client's ``max_message_bytes``.
        poll_interval: seconds. How often ``watch_cuts`` revalidates ``latest``; a
            publisher cuts every few seconds, and each poll of an unchanged bundle is
            one 304 of a few hundred bytes.
        cache_bytes: bytes. Immutable files kept in memory (cuts, checkpoints, trust
            roots, the definition), least recently used first out. Tiles are kept
            parsed by the tile cache (16 MiB at most); entry bundles are not kept.
        max_connections: connections to the mirror; HTTP/2 multiplexes on one.
    """

    timeout: float = 30.0
    max_file_bytes: int = 64 * 1024 * 1024
    poll_interval: float = 1.0
    cache_bytes: int = 32 * 1024 * 1024
    max_connections: int = 4

    def __post_init__(self) -> None:
        for name in ("timeout", "max_file_bytes", "poll_interval", "cache_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HttpLimits.{name} must be positive")
        if self.max_connections < 1:
            raise ValueError("HttpLimits.max_connections must be at least 1")


def _base_url(endpoint: str) -> httpx.URL:
    url = httpx.URL(endpoint)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected an http(s):// URL of a bundle, got {endpoint!r}")
    if url.query or url.fragment:
        raise ValueError(f"a bundle URL has no query or fragment: {endpoint!r}")
    path = url.path if url.path.endswith("/") else url.path + "/"
    return url.copy_with(path=path)


class HttpSource:
    """The bundle's files over HTTP: a :class:`~veritally_client._tiles.TileSource`.

    It judges nothing (the readers verify every byte); it bounds what it reads, keeps
    immutable files, and revalidates ``latest`` and ``checkpoint``.
    """

    def __init__(self, client: httpx.Client, *, base_url: str, limits: HttpLimits) -> None:
        """Read below ``base_url`` with ``client`` (prefer :meth:`HttpTransport.open`).

        Raises:
            ValueError: ``base_url`` is not an http(s) URL.
        """
        self._client = client
        self._base = _base_url(base_url)
        self._limits = limits
        self._lock = threading.Lock()
        self._immutable: OrderedDict[str, bytes] = OrderedDict()
        self._immutable_bytes = 0
        self._validators: dict[str, tuple[str, bytes]] = {}  # name -> (ETag, body)
        #: Requests sent and 304 answers received (what a poll costs).
        self.requests = 0
        self.not_modified = 0

    @property
    def base_url(self) -> str:
        """The bundle's URL (ends with ``/``)."""
        return str(self._base)

    def read(self, path: str, limit: int) -> bytes | None:
        """See :meth:`veritally_client._tiles.TileSource.read`.

        Raises:
            ValueError: ``path`` is not a relative bundle path (a caller bug: names are
                computed).
            MalformedDataError: the file is larger than ``limit`` bytes.
            TransportError: the mirror cannot be reached or answers an error status.
        """
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a relative bundle path: {path!r}")
        mutable = path in MUTABLE_NAMES
        if not mutable:
            with self._lock:
                kept = self._immutable.get(path)
                if kept is not None:
                    self._immutable.move_to_end(path)
                    return kept
        data = self._get(path, limit, revalidate=mutable)
        if data is not None and not mutable and not path.startswith("tile/"):
            # Tiles are kept parsed by the tile cache, entry bundles not at all (a
            # recount reads each once).
            self._keep(path, data)
        return data

    def _keep(self, path: str, data: bytes) -> None:
        if len(data) > self._limits.cache_bytes // 4:
            return  # one file must not flush the rest
        with self._lock:
            if path in self._immutable:
                return
            self._immutable[path] = data
            self._immutable_bytes += len(data)
            while self._immutable_bytes > self._limits.cache_bytes:
                _, old = self._immutable.popitem(last=False)
                self._immutable_bytes -= len(old)

    def _get(self, path: str, limit: int, *, revalidate: bool) -> bytes | None:
        url = self._base.join(path)
        headers = {"Accept-Encoding": "identity"}
        kept = self._validators.get(path) if revalidate else None
        if kept is not None:
            headers["If-None-Match"] = kept[0]
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                self.requests += 1
                if resp.status_code == 304 and kept is not None:
                    self.not_modified += 1
                    return kept[1]
                if resp.status_code in (404, 410):
                    return None
                if resp.status_code != 200:
                    raise TransportError(f"GET {url} answered HTTP {resp.status_code}")
                data = self._body(resp, url, limit)
                etag = resp.headers.get("ETag")
        except httpx.HTTPError as e:
            raise TransportError(f"GET {url} failed: {type(e).__name__}: {e}") from e
        if revalidate:
            if etag:
                self._validators[path] = (etag, data)
            else:
                self._validators.pop(path, None)
        return data

    @staticmethod
    def _body(resp: httpx.Response, url: httpx.URL, limit: int) -> bytes:
        # (bounds) the announced length first, then what really arrives (decoded, if a
        # server compressed it although identity was asked for)
        announced = resp.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise MalformedDataError(f"{url} is {announced} bytes, more than the {limit} allowed")
        out = bytearray()
        for chunk in resp.iter_bytes(_READ_CHUNK):
            out += chunk
            if len(out) > limit:
                raise MalformedDataError(f"{url} is larger than the {limit} bytes allowed")
        return bytes(out)


def _claimed_root(note: bytes, size: int) -> bytes:
    """The root hash a checkpoint note CLAIMS for ``size``, read without verifying it:
    the tiles are authenticated against it, and the proofs computed from them are then
    checked by the verifier against the signed roots."""
    lines = note.split(b"\n", 3)
    if len(lines) < 4 or lines[1] != str(size).encode():
        raise MalformedDataError(f"checkpoints/{size} is not a checkpoint of tree size {size}")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error as e:
        raise MalformedDataError(f"checkpoints/{size} has no base64 root hash") from e
    if len(root) != HASH_SIZE:
        raise MalformedDataError(f"checkpoints/{size} has no 32-byte root hash")
    return root


class HttpTransport:
    """A publisher read from a static bundle over HTTP(S) (see the module doc).

    Use :meth:`open` for ``https://`` (server authentication, no client certificate) or
    :meth:`unsafe_plaintext` for ``http://`` (tests and loopback mirrors).
    """

    def __init__(self, client: httpx.Client, *, base_url: str, limits: HttpLimits) -> None:
        """Wrap an httpx client (prefer :meth:`open`).

        Raises:
            ValueError: ``base_url`` is not an http(s) URL.
        """
        self._client = client
        self._limits = limits
        self.source = HttpSource(client, base_url=base_url, limits=limits)
        self._tiles = TileCache()
        self._trees: OrderedDict[int, TiledTree] = OrderedDict()
        self._newest_size = 0
        self._closed = threading.Event()

    @staticmethod
    def _httpx(verify: object, limits: HttpLimits) -> httpx.Client:
        return httpx.Client(
            http2=True,
            verify=verify,  # type: ignore[arg-type]  # an SSLContext, True or a CA path
            timeout=limits.timeout,
            limits=httpx.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_connections,
            ),
            follow_redirects=False,  # a mirror is named by its URL; nothing to follow
            trust_env=False,  # no proxy or CA settings from the environment
        )

    @classmethod
    def open(
        cls, endpoint: str, *, ca: bytes | None = None, limits: HttpLimits = HttpLimits()
    ) -> HttpTransport:
        """Read the bundle at ``endpoint`` (``https://host[:port]/prefix/``).

        Args:
            endpoint: the bundle's URL.
            ca: PEM CA certificate(s) the server's certificate must chain to (a
                deployment's own CA); None for the system's trusted CAs.
            limits: bounds.

        Raises:
            ValueError: ``endpoint`` is not an ``https://`` URL.
        """
        import ssl

        if not endpoint.startswith("https://"):
            raise ValueError(f"open() reads https:// URLs (see unsafe_plaintext), got {endpoint!r}")
        context = ssl.create_default_context()
        if ca is not None:
            context = ssl.create_default_context(cadata=ca.decode("ascii"))
        context.set_alpn_protocols(["h2", "http/1.1"])
        return cls(cls._httpx(context, limits), base_url=endpoint, limits=limits)

    @classmethod
    def unsafe_plaintext(cls, endpoint: str, *, limits: HttpLimits = HttpLimits()) -> HttpTransport:
        """Read an ``http://`` bundle: no server authentication. Tests and loopback only.

        What is read is verified all the same, but anyone on the path can withhold
        cuts (the reader then sees a stale view) or see what is read.

        Raises:
            ValueError: ``endpoint`` is not an ``http://`` URL.
        """
        if not endpoint.startswith("http://"):
            raise ValueError(f"unsafe_plaintext() reads http:// URLs, got {endpoint!r}")
        return cls(cls._httpx(False, limits), base_url=endpoint, limits=limits)

    def close(self) -> None:
        """Close the connections (from any thread: a watch in progress then ends)."""
        self._closed.set()
        self._client.close()

    # -- files ----------------------------------------------------------------------

    def _require(self, path: str, limit: int, what: str) -> bytes:
        if self._closed.is_set():
            raise TransportError(f"{what}: the client was closed")
        try:
            data = self.source.read(path, limit)
        except TransportError:
            if self._closed.is_set():
                raise TransportError(f"{what}: the client was closed") from None
            raise
        if data is None:
            raise TransportError(f"{what}: NOT_FOUND: {self.source.base_url}{path}")
        return data

    def _latest_number(self) -> tuple[int, dict[str, object]]:
        raw = self._require("latest", _MAX_POINTER_BYTES, "latest")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedDataError("the bundle's 'latest' is not JSON") from e
        number = doc.get("cut_number") if isinstance(doc, dict) else None
        if not isinstance(number, int) or isinstance(number, bool):
            raise MalformedDataError("the bundle's 'latest' names no cut_number")
        if not 1 <= number <= _MAX_CUT_NUMBER:
            raise MalformedDataError(f"the bundle's 'latest' names cut {number}")
        return number, doc

    def _tree(self, size: int) -> TiledTree:
        """The tiled tree of ``size``, authenticated against its claimed root."""
        tree = self._trees.get(size)
        if tree is None:
            note = self._require(f"checkpoints/{size}", _MAX_POINTER_BYTES, "checkpoint")
            tree = TiledTree(
                self.source,
                size=size,
                root_hash=_claimed_root(note, size),
                cache=self._tiles,
                max_entry_bundle_bytes=min(self._limits.max_file_bytes, MAX_ENTRY_BUNDLE_BYTES),
            )
            self._trees[size] = tree
            if len(self._trees) > 4:  # the trusted size, the newest, and a few in between
                self._trees.popitem(last=False)
        self._trees.move_to_end(size)
        return tree

    # -- Transport --------------------------------------------------------------------

    def get_latest_cut(self) -> SignedCutPb:
        """See :class:`~veritally_client._transport.Transport`: the cut ``latest`` names.

        Raises:
            TransportError: the mirror cannot be reached, or lacks the cut it names.
            MalformedDataError: ``latest`` or the cut file does not parse.
        """
        number, _ = self._latest_number()
        cut = self.get_cut(number)
        # The tree recounts and acta proofs read (verified by the client before it asks).
        self._newest_size = max(self._newest_size, self._cut_size(cut))
        return cut

    def get_latest_cut_since(self, verified_tree_size: int) -> publication_pb2.GetLatestCutResponse:
        """See :class:`~veritally_client._transport.Transport` (docs/adr/0089).

        A mirror of files has no proofs to hand out without results, so: while
        ``latest`` still names the verified tree (a 304 costs the poll), the answer is
        that cut's checkpoint alone, marked unchanged (the client checks its signature
        and that it is the very tree it verified); otherwise the whole newest cut, which
        is always a correct answer.

        Raises:
            TransportError: the mirror cannot be reached, or lacks the cut it names.
            MalformedDataError: ``latest`` or the cut file does not parse.
        """
        cut = self.get_latest_cut()
        if self._cut_size(cut) == verified_tree_size:
            return publication_pb2.GetLatestCutResponse(
                cut=SignedCutPb(checkpoint=cut.checkpoint), results_unchanged=True
            )
        return publication_pb2.GetLatestCutResponse(cut=cut)

    def get_cut(self, cut_number: int) -> SignedCutPb:
        """See :class:`~veritally_client._transport.Transport`.

        Raises:
            TransportError: no such cut file, or the mirror cannot be reached.
            MalformedDataError: the file does not parse.
        """
        data = self._require(f"cuts/{cut_number}.cut", self._limits.max_file_bytes, "GetCut")
        try:
            cut = SignedCutPb.FromString(data)
        except DecodeError as e:
            raise MalformedDataError(f"cuts/{cut_number}.cut does not parse") from e
        return cut

    def watch_cuts(self, after_cut_number: int, *, idle_timeout: float) -> Iterator[SignedCutPb]:
        """See :class:`~veritally_client._transport.Transport`: polls ``latest`` (a 304
        while nothing changed) every ``poll_interval`` and yields every cut after
        ``after_cut_number`` in order.

        Raises:
            TransportError: no new cut for ``idle_timeout`` seconds, the mirror cannot be
                reached, or the client was closed.
        """
        after = after_cut_number
        last_new = time.monotonic()
        while True:
            number, _ = self._latest_number()
            if number > after:
                last_new = time.monotonic()
                for n in range(after + 1, number + 1):
                    yield self.get_cut(n)
                    after = n
            elif time.monotonic() - last_new > idle_timeout:
                raise TransportError(f"watch: no new cut for {idle_timeout:.0f} s; reconnecting")
            if self._closed.wait(self._limits.poll_interval):
                raise TransportError("watch: the client was closed")

    def get_consistency_proof(self, from_size: int, to_size: int) -> list[bytes]:
        """See :class:`~veritally_client._transport.Transport`: computed from the tiles
        of ``to_size``.

        Raises:
            TransportError: the mirror lacks the checkpoint, or cannot be reached.
            BadProofError: the tiles do not hash to the claimed root.
            MalformedDataError: a tile is missing or malformed.
        """
        if not 0 < from_size <= to_size:
            raise TransportError(f"INVALID_ARGUMENT: no proof from {from_size} to {to_size}")
        self._newest_size = max(self._newest_size, to_size)
        return self._tree(to_size).consistency_proof(from_size)

    def get_inclusion_proof(
        self, acta_id: str, revision: int, tree_size: int
    ) -> tuple[bytes, InclusionProofPb]:
        """See :class:`~veritally_client._transport.Transport`.

        A bundle has no index by acta, so the entry bundles are read from the newest
        back until the record is found: up to every leaf of the tree (a recount's
        download) for an acta captured early. Each entry is authenticated on the way.

        Raises:
            TransportError: no such acta (revision) in the tree, or the mirror cannot be
                reached.
            BadProofError, MalformedDataError: a tile or entry bundle does not verify.
        """
        if tree_size < 1:
            raise TransportError(f"INVALID_ARGUMENT: tree size {tree_size}")
        tree = self._tree(tree_size)
        for bundle in reversed(range((tree_size + TILE_WIDTH - 1) // TILE_WIDTH)):
            entries = tree.entry_bundle(bundle)
            for i in reversed(range(len(entries))):
                leaf = parse_leaf_view(entries[i])
                if leaf.WhichOneof("kind") != "acta_record":
                    continue
                record = leaf.acta_record
                if record.acta_id != acta_id:
                    continue
                index = bundle * TILE_WIDTH + i
                if revision in (0, record.revision):
                    proof = InclusionProofPb(
                        leaf_index=index, tree_size=tree_size, hashes=tree.inclusion_proof(index)
                    )
                    return entries[i], proof
        raise TransportError(f"NOT_FOUND: no acta {acta_id!r} revision {revision or 'any'}")

    def get_leaves(self, start: int, count: int) -> list[bytes]:
        """See :class:`~veritally_client._transport.Transport`: the leaves of one entry
        bundle of the newest tree read so far (fewer than ``count`` at a bundle's end),
        each authenticated against its tile.

        Raises:
            TransportError: nothing read yet, or the range is outside that tree.
            BadProofError, MalformedDataError: an entry bundle does not verify.
        """
        size = self._newest_size
        if size == 0:
            number, _ = self._latest_number()
            size = self._cut_size(self.get_cut(number))
            self._newest_size = size
        if not 0 <= start < size or count < 1:
            raise TransportError(f"INVALID_ARGUMENT: no leaves [{start}, +{count}) in {size}")
        entries = self._tree(size).entry_bundle(start // TILE_WIDTH)
        offset = start % TILE_WIDTH
        return entries[offset : offset + count]

    @staticmethod
    def _cut_size(cut: SignedCutPb) -> int:
        lines = cut.checkpoint.split(b"\n", 2)
        if len(lines) < 3 or not lines[1].isdigit() or len(lines[1]) > 20:
            raise MalformedDataError("the cut's checkpoint holds no tree size")
        return int(lines[1])

    def get_trust_root(self, version: int) -> bytes:
        """See :class:`~veritally_client._transport.Transport` (0: the newest, which
        ``latest`` counts).

        Raises:
            TransportError: no such version, or the mirror cannot be reached.
            MalformedDataError: ``latest`` does not say how many versions there are.
        """
        if version == 0:
            _, doc = self._latest_number()
            versions = doc.get("trust_root_versions")
            if not isinstance(versions, int) or isinstance(versions, bool) or versions < 1:
                raise MalformedDataError("the bundle's 'latest' has no trust_root_versions")
            version = versions
        path = f"trust-root/v{version}.binpb"
        return self._require(path, self._limits.max_file_bytes, "GetTrustRoot")

    def get_election_definition(self) -> bytes:
        """See :class:`~veritally_client._transport.Transport`.

        Raises:
            TransportError: the mirror has no definition, or cannot be reached.
        """
        path = "election/definition.binpb"
        return self._require(path, self._limits.max_file_bytes, "GetElectionDefinition")
