"""Replay a recorded bundle over HTTP as it stood at each cut, at any speed.

A newsroom rehearses against a recorded night (a copy of the authority's bundle,
docs/bundle-format.md) on its own machine, without the authority's stack:
``veritally-client replay DIR`` serves the bundle layout exactly, so any reader of the
bundle (the SDK, ``curl``, a mirror, a generic tlog-tiles tool) reads the replayed
moment as it would read the authority's origin at that moment.

1. Verify the recording completely, as ``verify-bundle`` does (:func:`verify_bundle`):
   a desk builds against verified data, and a recording that does not verify is never
   served. Only the cuts up to the one the recording's ``latest`` names are replayed.
2. Map the signed cut times to the wall clock (:func:`schedule`): the ``--from-cut`` cut
   goes live at once, each later one when as much time, divided by ``--speed``, has
   passed as between the two cut times.
3. Serve the bundle as it stood when the cut of the moment was published
   (:meth:`Recording.respond`): ``latest`` and ``checkpoint`` name that cut; the cut,
   checkpoint and results files of later cuts are 404; tiles and entry bundles are those
   of its tree: a full tile once the tree holds it, and a partial tile of width ``W``
   while its full tile is not in the tree yet and a published cut's tree ended there
   (the publisher writes the partial tiles of every size it signs and removes them when
   the full tile comes). A partial tile is the prefix of the recorded tile: tlog-tiles
   defines the ``i``-th hash of a tile by ``i`` alone, the same in every width, and an
   entry bundle's entries are those of its level-0 tile.

What is replayed is signed by the authority: a replayed cut carries its recorded cut time,
so a client that checks freshness must allow old cuts (``ClientConfig.max_checkpoint_age``,
``--max-age``). The trust root versions and the election definition are served as
recorded, at every moment.

Every input is bounded: request targets are parsed into the names above (nothing from a
request reaches the file system as a path), a request's head has a size and a time
limit, connections are limited in number, and each socket operation has a timeout.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from veritally_client._bundle import _FORMAT, _pointer, verify_bundle
from veritally_client._config import ClientConfig
from veritally_client._errors import MalformedDataError
from veritally_client._merkle import HASH_SIZE
from veritally_client._tiles import (
    MAX_ENTRY_BUNDLE_BYTES,
    MAX_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    DirectorySource,
    encode_entry_bundle,
    parse_entry_bundle,
    tile_index_path,
)
from veritally_client._trustroot import TrustedRoot

__all__ = [
    "MAX_SPEED",
    "MIN_SPEED",
    "LiveCut",
    "RecordedCut",
    "Recording",
    "Reply",
    "ServeLimits",
    "check_pace",
    "replay",
    "schedule",
]

#: Slowest replay: a hundredth of real time (a minute of the night in 100 minutes).
MIN_SPEED: Final = 0.01
#: Fastest replay: a million times real time (a 12-hour night in 43 ms).
MAX_SPEED: Final = 1_000_000.0
#: Longest a replay may hold its last cut before it ends: a day, in seconds.
MAX_HOLD: Final = 86_400.0

# Caching, as the bundle's own contract says (docs/bundle-format.md): every name but the
# two pointers fixes its content. A name that is 404 now may exist at a later moment.
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_NOT_STORED = "no-store"
_OCTETS = "application/octet-stream"
_NOTE = "text/plain; charset=utf-8"  # tlog-tiles: the checkpoint's content type
_JSON = "application/json"

# The names of the bundle, as the publisher writes them (decimal without leading zeros).
_NUMBER = r"(0|[1-9][0-9]{0,18})"
_CUT = re.compile(rf"cuts/{_NUMBER}\.cut")
_CHECKPOINT = re.compile(rf"checkpoints/{_NUMBER}")
_RESULTS = re.compile(r"results/([0-9a-f]{64})")
_TRUST_ROOT = re.compile(rf"trust-root/v{_NUMBER}\.binpb")
_TILE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)
_DEFINITION = "election/definition.binpb"
# The characters of every bundle name; a target with any other (``%``, ``\``, ...) is
# refused before it is split.
_TARGET_CHARS = re.compile(r"/[A-Za-z0-9._/-]*")


@dataclass(frozen=True, kw_only=True)
class ServeLimits:
    """The bounds of the replay's HTTP server.

    Attributes:
        max_connections: connections. Served at once; one more is answered 503 and
            closed. A graphics desk runs a few readers, not thousands.
        max_target_bytes: bytes. Longest request target: the longest bundle name (a
            tile of level 63 with a 19-digit index) is under 100 bytes.
        max_head_bytes: bytes. Largest request line and headers together; a browser
            sends 1 to 2 KiB.
        head_seconds: seconds. Longest wait for a whole request head, from the
            connection or the previous response: an idle or trickling client is
            disconnected then, so that it cannot hold a slot.
        socket_timeout: seconds. Longest any read or write of the socket may block; a
            write of the largest entry bundle (about 16 MiB) must finish within it.
    """

    max_connections: int = 64
    max_target_bytes: int = 1024
    max_head_bytes: int = 16 * 1024
    head_seconds: float = 30.0
    socket_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_target_bytes", "max_head_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeLimits.{name} must be positive")
        if self.head_seconds <= 0 or self.socket_timeout <= 0:
            raise ValueError("ServeLimits timeouts must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedCut:
    """What the replay serves of one verified recorded cut.

    Attributes:
        cut_number: the cut number.
        cut_time: the signed cut time (UTC).
        cut_time_text: the signed cut time as the cut record writes it.
        tree_size: its tree size.
        acta_records: the acta records it covers.
        results_sha256: the hex SHA-256 of its results (their file name).
        note: the exact signed checkpoint (what ``checkpoint`` serves at its moment).
    """

    cut_number: int
    cut_time: dt.datetime
    cut_time_text: str
    tree_size: int
    acta_records: int
    results_sha256: str
    note: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One HTTP answer of the replay.

    Attributes:
        status: the HTTP status.
        body: the bytes (for HEAD, only their length is sent).
        content_type: its Content-Type.
        cache_control: its Cache-Control.
        etag: a strong validator (``latest`` and ``checkpoint``), None for the others.
    """

    status: int
    body: bytes
    content_type: str
    cache_control: str
    etag: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveCut:
    """A cut just gone live in the replay.

    Attributes:
        cut: the cut.
        night_seconds: seconds of signed time from the first replayed cut to it.
        replay_seconds: seconds of the replay's clock from its start (of this round).
        round: 1 for the first pass, then 2, 3... (``--loop``).
    """

    cut: RecordedCut
    night_seconds: float
    replay_seconds: float
    round: int


def check_pace(*, speed: float, hold: float) -> None:
    """Check ``--speed`` and ``--hold`` (before a long verification, not after).

    Raises:
        ValueError: if ``speed`` is outside :data:`MIN_SPEED` .. :data:`MAX_SPEED` or
            ``hold`` outside 0 .. :data:`MAX_HOLD` seconds.
    """
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"--speed must be between {MIN_SPEED:g} and {MAX_SPEED:g}")
    if not 0 <= hold <= MAX_HOLD:
        raise ValueError(f"--hold must be between 0 and {MAX_HOLD:g} seconds")


def schedule(times: Sequence[dt.datetime], *, from_cut: int, speed: float) -> list[float]:
    """When each cut from ``from_cut`` on goes live: seconds after the replay starts.

    Args:
        times: the signed cut times of cuts 1, 2, ... in order.
        from_cut: the cut number live at the start (1 for the first).
        speed: signed seconds per replay second (60: an hour a minute).

    Returns:
        One offset per cut ``from_cut`` .. ``len(times)``; the first is 0. A cut time
        earlier than the one before (never signed by a working publisher) goes live
        right after it: the replay never goes back.

    Raises:
        ValueError: if ``from_cut`` is not one of the cuts or ``speed`` is outside
            :data:`MIN_SPEED` .. :data:`MAX_SPEED`.
    """
    if not 1 <= from_cut <= len(times):
        raise ValueError(f"--from-cut must be a cut of the recording, 1 to {len(times)}")
    check_pace(speed=speed, hold=0.0)
    start = times[from_cut - 1]
    offsets: list[float] = []
    last = 0.0
    for when in times[from_cut - 1 :]:
        last = max(last, (when - start).total_seconds() / speed)
        offsets.append(last)
    return offsets


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _reply(status: HTTPStatus, message: str) -> Reply:
    return Reply(
        status=status,
        body=f"{status.value} {message}\n".encode(),
        content_type=_NOTE,
        cache_control=_NOT_STORED,
    )


def _not_found(name: str) -> Reply:
    return _reply(HTTPStatus.NOT_FOUND, f"{name} is not in the bundle at this moment")


class Recording:
    """A verified recorded bundle, and what it serves at each of its cuts.

    Only :meth:`open` makes one: it verifies the recording first. Files are read from
    the recording when asked for, within the SDK's limits.
    """

    def __init__(
        self,
        source: DirectorySource,
        cuts: Sequence[RecordedCut],
        pointer: dict[str, object],
        *,
        limit: int,
    ) -> None:
        """Use :meth:`open`."""
        self._source = source
        self.cuts: tuple[RecordedCut, ...] = tuple(cuts)
        sizes = [c.tree_size for c in self.cuts]
        self._sizes = sizes
        # The first moment (index into ``cuts``) at which each name is published.
        self._by_size = {c.tree_size: i for i, c in enumerate(self.cuts)}
        self._by_results: dict[str, int] = {}
        for i, c in enumerate(self.cuts):
            self._by_results.setdefault(c.results_sha256, i)
        versions = pointer.get("trust_root_versions")
        self._trust_roots = versions if isinstance(versions, int) else 1
        self._latest = [self._pointer_at(pointer, c) for c in self.cuts]
        self._limit = limit  # bytes: the largest file read, as the verification's

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        trust_root: TrustedRoot,
        config: ClientConfig = ClientConfig(),  # noqa: B008  # frozen, so sharing is safe
    ) -> Recording:
        """Verify the recorded bundle at ``path`` (step 1) and prepare its replay.

        Args:
            path: the recorded bundle directory.
            trust_root: the pinned trust root.
            config: the verification's limits (and ``allow_test`` for a rehearsal's
                recording).

        Raises:
            VerificationError: (a subclass naming the failure) if the recording does not
                verify; nothing of it is served then.
            TrustRootError: if a trust root update in it does not verify.
            ValueError: if it is a bundle of an earlier format (leaf pages, no tiles),
                which has no tiles to serve.
            OSError: if a file of it cannot be read.
        """
        source = DirectorySource(Path(path))
        pointer = _pointer(source)
        if pointer["format"] != _FORMAT:
            raise ValueError(
                f"{path} is a {pointer['format']} bundle; the replay serves {_FORMAT} (tiles)"
            )
        # (1) the same verification as verify-bundle, every cut and every leaf
        report = verify_bundle(Path(path), trust_root=trust_root, config=config)
        cuts = [
            RecordedCut(
                cut_number=c.cut_number,
                cut_time=c.cut_time,
                cut_time_text=c.cut_record.cut_time,
                tree_size=c.tree_size,
                acta_records=c.acta_records,
                results_sha256=c.cut_record.results_sha256.hex(),
                note=c.note,
            )
            for c in report.cuts
        ]
        return cls(source, cuts, pointer, limit=config.max_message_bytes)

    @staticmethod
    def _pointer_at(pointer: dict[str, object], cut: RecordedCut) -> bytes:
        """``latest`` as the publisher wrote it when ``cut`` was the newest: the
        recording's own pointer, with that cut's fields."""
        doc = dict(pointer)
        doc.update(
            cut_number=cut.cut_number,
            tree_size=cut.tree_size,
            acta_records=cut.acta_records,
            cut_time=cut.cut_time_text,
            cut=f"cuts/{cut.cut_number}.cut",
            checkpoint=f"checkpoints/{cut.tree_size}",
            results=f"results/{cut.results_sha256}",
        )
        return (json.dumps(doc, indent=2) + "\n").encode()

    # -- step 3: the bundle at a moment ------------------------------------------------

    def respond(self, target: str, *, moment: int) -> Reply:
        """The answer to ``GET target`` when cut ``self.cuts[moment]`` is the newest.

        Args:
            target: the request target, as received (``/latest``, ``/tile/0/001.p/7``).
            moment: an index into :attr:`cuts`.

        Returns:
            200 with the file, 404 for a name the bundle does not have at that moment,
            400 for a target that is not a bundle name's form, 414 for one too long.

        Raises:
            IndexError: if ``moment`` is not an index of :attr:`cuts` (a caller bug).
        """
        cut = self.cuts[moment]
        path = target.split("?", 1)[0]  # a query (a cache buster) names the same file
        if not _TARGET_CHARS.fullmatch(path):
            return _reply(HTTPStatus.BAD_REQUEST, "not a bundle name")
        name = path[1:]
        if any(part in ("", ".", "..") for part in name.split("/")):
            if not name:
                return _not_found("/")
            return _reply(HTTPStatus.BAD_REQUEST, "not a bundle name")
        if name == "latest":
            body = self._latest[moment]
            return Reply(
                status=HTTPStatus.OK,
                body=body,
                content_type=_JSON,
                cache_control=_REVALIDATE,
                etag=_etag(body),
            )
        if name == "checkpoint":
            return Reply(
                status=HTTPStatus.OK,
                body=cut.note,
                content_type=_NOTE,
                cache_control=_REVALIDATE,
                etag=_etag(cut.note),
            )
        if name == _DEFINITION:
            return self._file(name)
        if m := _CUT.fullmatch(name):
            return self._file(name) if 1 <= int(m[1]) <= cut.cut_number else _not_found(name)
        if m := _CHECKPOINT.fullmatch(name):
            first = self._by_size.get(int(m[1]))
            ok = first is not None and first <= moment
            return self._file(name, content_type=_NOTE) if ok else _not_found(name)
        if m := _RESULTS.fullmatch(name):
            first = self._by_results.get(m[1])
            return self._file(name) if first is not None and first <= moment else _not_found(name)
        if m := _TRUST_ROOT.fullmatch(name):
            ok = 1 <= int(m[1]) <= self._trust_roots
            return self._file(name) if ok else _not_found(name)
        if m := _TILE.fullmatch(name):
            return self._tile(name, m, moment)
        return _not_found(name)

    def _file(self, name: str, *, content_type: str = _OCTETS) -> Reply:
        data = self._source.read(name, self._limit)
        if data is None:
            return _reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"the recording lost {name}")
        return Reply(
            status=HTTPStatus.OK, body=data, content_type=content_type, cache_control=_IMMUTABLE
        )

    def _tile(self, name: str, m: re.Match[str], moment: int) -> Reply:
        entries = m[1] == "entries"
        level = 0 if entries else int(m[1])
        index = int(m[2].replace("x", "").replace("/", ""))
        if level > MAX_LEVEL or tile_index_path(index) != m[2]:
            return _reply(HTTPStatus.BAD_REQUEST, "not a tile name")
        width = TILE_WIDTH if m[3] is None else int(m[3])
        if m[3] is not None and width >= TILE_WIDTH:
            return _reply(HTTPStatus.BAD_REQUEST, "a partial tile is 1 to 255 wide")
        shift = TILE_HEIGHT * level
        first = index * TILE_WIDTH  # among the hashes of the level
        held = (self._sizes[moment] >> shift) - first  # of this tile's, in the tree now
        if width == TILE_WIDTH:
            if held < TILE_WIDTH:
                return _not_found(name)
        elif (
            held >= TILE_WIDTH
            or width > held
            or not self._signed_width(shift, first + width, moment)
        ):
            # The full tile replaced it, or no tree published so far ends there.
            return _not_found(name)
        return self._prefix(name, level, index, width, entries=entries)

    def _signed_width(self, shift: int, count: int, moment: int) -> bool:
        """Whether a cut up to ``moment`` has ``count`` hashes at the tile level of
        ``shift``: the trees whose size is in ``[count << shift, (count + 1) << shift)``."""
        at = bisect.bisect_left(self._sizes, count << shift, hi=moment + 1)
        return at <= moment and self._sizes[at] < (count + 1) << shift

    def _prefix(self, name: str, level: int, index: int, width: int, *, entries: bool) -> Reply:
        """The first ``width`` hashes (or entries) of the widest recorded file of the
        tile: the full one, or the partial one of the recording's newest tree."""
        kind = "entries" if entries else str(level)
        base = f"tile/{kind}/{tile_index_path(index)}"
        have = min(TILE_WIDTH, (self._sizes[-1] >> (TILE_HEIGHT * level)) - index * TILE_WIDTH)
        limit = MAX_ENTRY_BUNDLE_BYTES if entries else TILE_WIDTH * HASH_SIZE
        data = None if have == TILE_WIDTH else self._source.read(f"{base}.p/{have}", limit)
        if data is None:  # a full tile, or a recording made while its tile filled
            data, have = self._source.read(base, limit), TILE_WIDTH
        if data is None:
            return _reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"the recording lost {base}")
        try:
            if entries and width == have:  # the recorded file itself, verified at open
                body = data
            elif entries:
                body = encode_entry_bundle(parse_entry_bundle(data, have)[:width])
            elif len(data) == have * HASH_SIZE:
                body = data[: width * HASH_SIZE]
            else:
                raise MalformedDataError(f"{base} is not {have} hashes")
        except MalformedDataError:
            return _reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"the recording's {base} changed")
        return Reply(
            status=HTTPStatus.OK, body=body, content_type=_OCTETS, cache_control=_IMMUTABLE
        )


# -- the HTTP server -----------------------------------------------------------------------


class _Deadlines:
    """Connections that must send a whole request head by a deadline, and the thread
    that disconnects those that do not (a socket timeout alone bounds each read, not a
    client that trickles a byte at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-deadlines", daemon=True)
        self._thread.start()

    def watch(self, conn: socket.socket, seconds: float) -> None:
        with self._lock:
            self._due[conn] = time.monotonic() + seconds

    def unwatch(self, conn: socket.socket) -> None:
        with self._lock:
            self._due.pop(conn, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [c for c, due in self._due.items() if due <= now]
                for conn in late:
                    del self._due[conn]
            for conn in late:
                # Its blocked read returns at once; it may be closed by its handler already.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``limits.max_connections`` at once."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], recording: Recording, limits: ServeLimits) -> None:
        self.recording = recording
        self.limits = limits
        self.moment = 0  # index into recording.cuts; one int, replaced whole
        self.deadlines = _Deadlines()
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        if ":" in address[0]:  # an IPv6 address (``--listen [::1]:8088``)
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self.deadlines.close()
            raise

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]  # a TCP server: sockets, not UDP tuples
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass  # it is refused either way
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]  # as above
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away or timed out ends its own connection only

    def server_close(self) -> None:
        super().server_close()
        self.deadlines.close()


class _HeadTooLargeError(Exception):
    """The request line or headers exceed ``ServeLimits.max_head_bytes``."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: a reader fetches many small tiles
    server_version = "veritally-replay"
    sys_version = ""
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = _NOTE

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.socket_timeout)

    def finish(self) -> None:
        self.server.deadlines.unwatch(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the command prints one line per cut; requests are not logged

    def _read_head(self) -> tuple[bytes, bytes] | None:
        """The request line and the header lines, None at the end of the stream.

        Raises:
            _HeadTooLargeError: past ``max_head_bytes``.
        """
        limit = self.server.limits.max_head_bytes
        line = self.rfile.readline(limit + 1)
        if not line:
            return None
        if len(line) > limit:
            raise _HeadTooLargeError
        total, lines = len(line), []
        while True:
            header = self.rfile.readline(limit - total + 1)
            total += len(header)
            if total > limit:
                raise _HeadTooLargeError
            if not header:
                return None  # the client went away inside the head
            lines.append(header)
            if header in (b"\r\n", b"\n"):
                return line, b"".join(lines)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.server.deadlines.watch(self.connection, limits.head_seconds)
        try:
            head = self._read_head()
        except _HeadTooLargeError:
            self.requestline, self.request_version, self.command = "", "", ""
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Request head too large")
            return
        except OSError:  # a timeout, or the deadline's shutdown
            self.close_connection = True
            return
        self.server.deadlines.unwatch(self.connection)
        if head is None:
            self.close_connection = True
            return
        self.raw_requestline, headers = head
        stream, self.rfile = self.rfile, io.BytesIO(headers)
        try:
            parsed = self.parse_request()  # sends its own 400 / 505 / 431
        finally:
            self.rfile = stream
        if not parsed:
            return
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True
            self._send(_reply(HTTPStatus.METHOD_NOT_ALLOWED, "GET and HEAD only"), allow=True)
        elif (
            self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0"
        ):
            # A body would have to be read to find the next request: none is taken.
            self.close_connection = True
            self._send(_reply(HTTPStatus.BAD_REQUEST, "a request has no body here"))
        elif len(self.path) > limits.max_target_bytes:
            self.close_connection = True
            self._send(_reply(HTTPStatus.REQUEST_URI_TOO_LONG, "not a bundle name"))
        else:
            reply = self.server.recording.respond(self.path, moment=self.server.moment)
            self._send(reply)
        self.wfile.flush()

    def _send(self, reply: Reply, *, allow: bool = False) -> None:
        status, body = reply.status, reply.body
        if reply.etag is not None and _matches(self.headers.get("If-None-Match"), reply.etag):
            status, body = HTTPStatus.NOT_MODIFIED, b""
        self.send_response(status)
        self.send_header("Cache-Control", reply.cache_control)
        # Browsers on the desk's machine (a graphic in development) read it too.
        self.send_header("Access-Control-Allow-Origin", "*")
        if allow:
            self.send_header("Allow", "GET, HEAD")
        if reply.etag is not None:
            self.send_header("ETag", reply.etag)
            self.send_header("Access-Control-Expose-Headers", "ETag")
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


def _matches(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, RFC 9110)."""
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def replay(
    recording: Recording,
    *,
    listen: tuple[str, int],
    speed: float,
    from_cut: int = 1,
    hold: float = 60.0,
    loop: bool = False,
    on_serving: Callable[[str], None] = lambda url: None,
    on_live: Callable[[LiveCut], None] = lambda live: None,
    limits: ServeLimits = ServeLimits(),
    stop: threading.Event | None = None,
) -> None:
    """Serve ``recording`` at ``listen``, moving from cut to cut on the signed clock.

    Args:
        recording: the verified recording.
        listen: the address (host, port; port 0 picks a free one).
        speed: signed seconds per replay second.
        from_cut: the cut number live at the start.
        hold: seconds the last cut stays live before the replay ends or starts again.
        loop: start again from ``from_cut`` after the hold, until interrupted.
        on_serving: called with the URL of the bundle once it is served.
        on_live: called with each cut as it goes live.
        limits: the server's bounds.
        stop: ends the replay early when set (from another thread); Ctrl-C does in the
            command.

    Raises:
        ValueError: if ``from_cut``, ``speed`` or ``hold`` is out of its bounds.
        OSError: if the address cannot be bound.
        KeyboardInterrupt: on Ctrl-C (the server is stopped first).
    """
    cuts = recording.cuts
    check_pace(speed=speed, hold=hold)
    offsets = schedule([c.cut_time for c in cuts], from_cut=from_cut, speed=speed)
    stopped = stop if stop is not None else threading.Event()
    server = _Server(listen, recording, limits)
    server.moment = from_cut - 1  # (3) before the first request
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="replay-http"
    )
    serving.start()
    try:
        bound, port = server.server_address[:2]
        host = bound.decode() if isinstance(bound, bytes) else bound
        shown = f"[{host}]" if ":" in host else host
        on_serving(f"http://{shown}:{port}/")
        start_time = cuts[from_cut - 1].cut_time
        round_ = 1
        while True:
            # (2) the signed clock, scaled, from this round's start
            started = time.monotonic()
            for index, offset in enumerate(offsets, start=from_cut - 1):
                if stopped.wait(max(0.0, started + offset - time.monotonic())):
                    return
                server.moment = index
                cut = cuts[index]
                on_live(
                    LiveCut(
                        cut=cut,
                        night_seconds=(cut.cut_time - start_time).total_seconds(),
                        replay_seconds=time.monotonic() - started,
                        round=round_,
                    )
                )
            if stopped.wait(hold) or not loop:
                return
            round_ += 1
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
