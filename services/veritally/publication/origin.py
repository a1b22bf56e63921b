"""The static origin of the public bundle listener: the bundle directory over HTTP/1.1.

Envoy's public listener (``veritally.mesh.envoy``, listener ``public``) caches in front of
it; this process only answers what the cache does not hold. It listens on loopback (the
stack binds it to 127.0.0.1; only Envoy dials it) and serves exactly the bundle layout
(docs/bundle-format.md), so a mirror or a CDN can copy what it serves:

* GET and HEAD only, of names below the bundle directory (no ``..``, no dot names, no
  symlink followed out of it, no directory listing); anything else 404 or 405;
* ``Cache-Control: no-cache`` for ``latest`` and ``checkpoint`` (replaced at every cut),
  ``public, max-age=31536000, immutable`` for every other name (its name fixes its
  content);
* a strong ``ETag`` from the file's inode, size and modification time in nanoseconds:
  publication replaces ``latest`` and ``checkpoint`` by renaming a new file over them,
  so each version has its own (nginx's ETag, the second and the length, can repeat when
  two cuts fall in one second); ``If-None-Match`` answers 304;
* bounds: request head 8 KiB, 100 headers, 60 s to send it (a keep-alive connection
  idle that long is closed), no request body, files up to 17 MiB.

Run: ``veritally origin --dir BUNDLE --listen 127.0.0.1:PORT`` (until SIGTERM); the stack
supervises it. One concurrency model: asyncio, files read in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

__all__ = ["IMMUTABLE", "MUTABLE", "Origin", "cache_control", "serve"]

MUTABLE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
_MUTABLE_NAMES = frozenset({"latest", "checkpoint"})
# Request head: a GET of a bundle name with a few headers is a few hundred bytes.
MAX_HEAD_BYTES = 8 * 1024
MAX_HEADERS = 100
# Seconds a connection may take to send its next request head (idle keep-alive included).
IDLE_TIMEOUT_S = 60.0
# Largest file served (bytes): an entry bundle is at most about 16 MiB (256 entries of
# 64 KiB); publication writes none above ~8 MiB.
MAX_FILE_BYTES = 17 * 1024 * 1024


def cache_control(name: str) -> str:
    """The Cache-Control of a bundle name (relative path)."""
    return MUTABLE if name in _MUTABLE_NAMES else IMMUTABLE


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


class Origin:
    """Serves one bundle directory (see the module doc)."""

    def __init__(self, root: Path) -> None:
        """Serve below ``root`` (resolved once: a symlinked bundle directory is fine)."""
        self.root = Path(root).resolve()

    def _file(self, target: str) -> tuple[Path, str] | None:
        path = target.split("?", 1)[0]
        if not path.startswith("/"):
            return None
        name = path.lstrip("/")
        parts = name.split("/")
        if not name or any(not p or p.startswith(".") for p in parts):
            return None  # no directory, dot name, temporary file or ".."
        full = (self.root / name).resolve()
        if not full.is_relative_to(self.root):
            return None  # a symlink out of the bundle
        return full, name

    def answer(self, method: str, target: str, if_none_match: str | None) -> _Answer:
        """The answer to one request (pure but for reading the file).

        Raises:
            OSError: the file exists but cannot be read.
        """
        if method not in ("GET", "HEAD"):
            return _Answer(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        found = self._file(target)
        if found is None:
            return _Answer(404, "Not Found", [])
        full, name = found
        try:
            with full.open("rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                    return _Answer(404, "Not Found", [])
                etag = _etag(st)
                headers = [("ETag", etag), ("Cache-Control", cache_control(name))]
                if if_none_match is not None and etag in (
                    t.strip() for t in if_none_match.split(",")
                ):
                    return _Answer(304, "Not Modified", headers)
                body = f.read() if method == "GET" else b""
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return _Answer(404, "Not Found", [])
        kind = "application/json" if name == "latest" else "application/octet-stream"
        headers += [("Content-Type", kind), ("Content-Length", str(st.st_size))]
        return _Answer(200, "OK", headers, body)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: requests in turn until it closes, idles or misbehaves."""
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                lines = head.decode("latin-1").split("\r\n")[:-2]
                request = lines[0].split(" ")
                if len(request) != 3 or len(lines) > MAX_HEADERS + 1:
                    return
                method, target, version = request
                headers = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if not sep:
                        return
                    headers[key.strip().lower()] = value.strip()
                if "content-length" in headers or "transfer-encoding" in headers:
                    return  # no request bodies: GET and HEAD only
                result = await asyncio.to_thread(
                    self.answer, method, target, headers.get("if-none-match")
                )
                close = version != "HTTP/1.1" or headers.get("connection", "") == "close"
                out = [f"HTTP/1.1 {result.status} {result.reason}"]
                # An HTTP cache needs the Date to reckon a response's age (RFC 9111).
                out.append(f"Date: {formatdate(usegmt=True)}")
                out += [f"{k}: {v}" for k, v in result.headers]
                if result.status != 200:
                    out.append("Content-Length: 0")
                if close:
                    out.append("Connection: close")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + result.body)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def serve(root: Path, host: str, port: int) -> None:
    """Serve ``root`` on ``host:port`` until SIGTERM or SIGINT."""
    origin = Origin(root)
    server = await asyncio.start_server(origin.handle, host, port, limit=MAX_HEAD_BYTES)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
