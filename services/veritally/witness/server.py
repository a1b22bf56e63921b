"""The witness's HTTP/1.1 interface (c2sp.org/tlog-witness), on the standard library's
threading HTTP server.

* ``POST /add-checkpoint``: 200 with the cosignature line (``text/plain``), or the
  refusal's status: 400 malformed, 403 bad or missing log signature, 404 unknown log,
  409 old size mismatch (body: the size cosigned last and a newline, ``Content-Type:
  text/x.tlog.size``), 422 bad proof; 413 over :data:`MAX_BODY_BYTES`, 411 without a
  ``Content-Length``, 400 with a ``Transfer-Encoding``.
* ``GET /<hex SHA-256 of origin>/checkpoint``: the latest checkpoint cosigned for that log
  with the log's signatures and the witness's cosignature (monitoring), 404 if none.

Why threads and not asyncio: the work per request is one signature check, one fsync and
one signature under a lock that serializes them anyway; ``http.server`` is well known, in
the standard library, and speaks HTTP/1.1 keep-alive. Every input is bounded: the body
(:data:`MAX_BODY_BYTES`), the time any socket operation may take
(:data:`SOCKET_TIMEOUT_S`, which also closes idle keep-alive connections), the time a
whole body may take (:data:`BODY_DEADLINE_S`, then 408), the number of connections
served at once (:data:`MAX_CONNECTIONS`; beyond it a connection gets 503 and is
closed), and ``http.server``'s own limits on header lines (64 KiB) and count (100).
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from veritally.logs import event
from veritally.witness.protocol import (
    Code,
    LogRecord,
    RefusalError,
    WitnessedLog,
    check_add_checkpoint,
    parse_add_checkpoint,
)
from veritally.witness.store import StateStore, origin_hash
from veritally_client.protocol import CosignatureSigner

log = logging.getLogger(__name__)

__all__ = [
    "BODY_DEADLINE_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "SOCKET_TIMEOUT_S",
    "Answer",
    "Witness",
    "WitnessServer",
]

#: Largest request body, in bytes: the old size line, 63 proof lines (~2.9 kB) and a
#: checkpoint note with 16 ML-DSA-44 signatures (~3.3 kB each in base64), the most
#: signed-note asks a verifier to accept, with room to spare.
MAX_BODY_BYTES = 128 * 1024
#: Seconds any one read or write on a connection may take; an idle keep-alive
#: connection is closed after as long. A log answers within milliseconds.
SOCKET_TIMEOUT_S = 10.0
#: Seconds a whole request body may take to arrive (408 and the connection closed after):
#: 128 KiB at a dial-up's pace, far more than a log on a datacenter link needs; without
#: it a client could keep a connection for 10 s per byte.
BODY_DEADLINE_S = 30.0
#: Connections served at once (one thread each): the logs of one deployment and a few
#: monitors need a handful; the bound keeps a flood from exhausting threads and memory.
MAX_CONNECTIONS = 64

_STATUS = {
    Code.MALFORMED: 400,
    Code.FORBIDDEN: 403,
    Code.UNKNOWN_LOG: 404,
    Code.CONFLICT: 409,
    Code.BAD_PROOF: 422,
}


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


class Witness:
    """The witness's logic around its key, its logs and its state.

    Thread-safe: checking a request against the record, cosigning and persisting the new
    record run under one lock (the atomicity c2sp.org/tlog-witness requires).
    """

    def __init__(
        self,
        *,
        signer: CosignatureSigner,
        logs: dict[str, WitnessedLog],
        store: StateStore,
    ) -> None:
        self.signer = signer
        self.logs = logs
        self.store = store
        self._lock = threading.Lock()

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one add-checkpoint request body."""
        try:
            request = parse_add_checkpoint(body)
            with self._lock:
                checkpoint, text = check_add_checkpoint(request, self.logs, self.store.records)
                # The time of the statement; never 0 (the spec forbids omitting it).
                cosignature = self.signer.cosign(text, timestamp=max(1, int(time.time())))
                line = cosignature.line().encode("utf-8")
                record = LogRecord(
                    size=checkpoint.size,
                    root_hash=checkpoint.root_hash,
                    note=request.note + line,
                )
                # Durable before the cosignature leaves the process.
                self.store.put(checkpoint.origin, record)
        except RefusalError as refusal:
            if refusal.equivocation is not None and refusal.origin is not None:
                self._keep_evidence(refusal.origin, *refusal.equivocation)
            log.info(
                "refused: %s",
                refusal,
                extra=event(origin=refusal.origin, refusal=refusal.code.value),
            )
            if refusal.code is Code.CONFLICT:
                body_409 = f"{refusal.size}\n".encode("ascii")
                return Answer(409, body_409, "text/x.tlog.size")
            return Answer(_STATUS[refusal.code], f"{refusal}\n".encode())
        log.info(
            "cosigned %s at size %d",
            checkpoint.origin,
            checkpoint.size,
            extra=event(origin=checkpoint.origin, size=checkpoint.size),
        )
        return Answer(200, line)

    def _keep_evidence(self, origin: str, cosigned: bytes, refused: bytes) -> None:
        try:
            with self._lock:
                path = self.store.put_evidence(origin, cosigned, refused)
        except OSError:
            log.exception("could not keep the evidence of an equivocation by %s", origin)
            return
        log.warning(
            "log %s signed two roots for one tree size: evidence in %s",
            origin,
            path if path is not None else "(not kept: the evidence directory is full)",
            extra=event(origin=origin, evidence=str(path) if path else None),
        )

    def latest(self, hashed_origin: str) -> Answer:
        """The monitoring answer for ``GET /<hashed_origin>/checkpoint``."""
        with self._lock:
            records = list(self.store.records.items())
        for origin, record in records:
            if origin_hash(origin) == hashed_origin:
                return Answer(200, record.note)
        return Answer(404, b"no checkpoint cosigned for that log\n")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec asks logs to use
    server_version = "veritally-witness"
    timeout = SOCKET_TIMEOUT_S
    server: WitnessServer

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._send(Answer(404, b"no such endpoint\n"))
            return
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            self._send(Answer(400, b"send the body with a Content-Length\n"))
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._send(Answer(411, b"a Content-Length is required\n"))
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read: drop the connection
            self._send(Answer(413, f"the body is larger than {MAX_BODY_BYTES} bytes\n".encode()))
            return
        body = self._read_body(length)
        if body is None:
            self.close_connection = True
            self._send(Answer(408, b"the body did not arrive in time\n"))
            return
        if len(body) != length:  # the client closed the connection early
            self.close_connection = True
            return
        self._send(self.server.witness.add_checkpoint(body))

    def _read_body(self, length: int) -> bytes | None:
        """The body, read in chunks against the server's deadline (None past it)."""
        deadline = time.monotonic() + self.server.body_deadline_s
        chunks: list[bytes] = []
        remaining = length
        while remaining > 0:
            if time.monotonic() > deadline:
                return None
            chunk = self.rfile.read1(min(remaining, 16 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def do_GET(self) -> None:
        parts = self.path.split("/")
        if len(parts) == 3 and parts[0] == "" and parts[2] == "checkpoint":
            self._send(self.server.witness.latest(parts[1]))
            return
        self._send(Answer(404, b"no such endpoint\n"))

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class WitnessServer(http.server.ThreadingHTTPServer):
    """The HTTP server, one thread per connection, at most :data:`MAX_CONNECTIONS`."""

    daemon_threads = True
    # The listen backlog: a burst of connections up to the bound waits to be accepted
    # (and is then served or answered 503) instead of being dropped by the kernel.
    request_queue_size = 2 * MAX_CONNECTIONS

    def __init__(
        self,
        address: tuple[str, int],
        witness: Witness,
        *,
        body_deadline_s: float = BODY_DEADLINE_S,
    ) -> None:
        self.witness = witness
        self.body_deadline_s = body_deadline_s
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse_busy(request: socket.socket) -> None:
    try:
        request.settimeout(1.0)
        request.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        pass  # the client is gone or slow: nothing more is owed to it
