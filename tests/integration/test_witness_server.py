"""The witness's HTTP server in this process, on a loopback socket, for the bounds whose
real values would make a test wait (the body deadline)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.witness_support import TestLog
from veritally.witness.protocol import WitnessedLog
from veritally.witness.server import Witness, WitnessServer
from veritally.witness.store import StateStore
from veritally_client.protocol import CosignatureSigner

DEADLINE_S = 1.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[WitnessServer, TestLog]]:
    log = TestLog()
    logs = {log.origin: WitnessedLog(origin=log.origin, keys=(log.signer.verifier(),))}
    with StateStore(tmp_path / "w") as store:
        witness = Witness(signer=CosignatureSigner.generate("w"), logs=logs, store=store)
        running = WitnessServer(("127.0.0.1", 0), witness, body_deadline_s=DEADLINE_S)
        thread = threading.Thread(target=running.serve_forever, daemon=True)
        thread.start()
        try:
            yield running, log
        finally:
            running.shutdown()
            running.server_close()
            thread.join()


def test_closes_a_connection_that_drips_its_body_slower_than_the_deadline(
    server: tuple[WitnessServer, TestLog],
) -> None:
    running, log = server
    log.grow(3)
    body = log.request(0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.server_address[1]), timeout=10) as sock:
        head = f"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        answer = b""
        for i in range(len(body)):  # one byte every 0.2 s: each read is quick, the whole slow
            try:
                sock.sendall(body[i : i + 1])
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            break
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert DEADLINE_S <= time.monotonic() - started < DEADLINE_S + 5


def test_a_body_in_time_is_cosigned(server: tuple[WitnessServer, TestLog]) -> None:
    running, log = server
    log.grow(3)
    body = log.request(0)
    with socket.create_connection(("127.0.0.1", running.server_address[1]), timeout=10) as sock:
        head = f"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
