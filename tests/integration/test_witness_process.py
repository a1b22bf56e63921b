"""The real ``veritally witness serve`` process over a loopback socket: what a log sees
(status codes, bodies, content types of c2sp.org/tlog-witness), its state across a
SIGKILL and restart, and its bounds."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.witness_support import ORIGIN, TestLog
from veritally.witness.server import MAX_BODY_BYTES, MAX_CONNECTIONS
from veritally.witness.store import origin_hash
from veritally_client.protocol import CosignatureVerifier

WAIT_S = 20.0


def veritally(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``veritally ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "veritally.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@dataclass
class WitnessProcess:
    """A running ``veritally witness serve``."""

    popen: subprocess.Popen[bytes]
    port: int

    def post(self, body: bytes, path: str = "/add-checkpoint") -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        try:
            conn.request("POST", path, body=body)
            answer = conn.getresponse()
            return answer.status, answer.read(), answer.getheader("Content-Type", "")
        finally:
            conn.close()

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=WAIT_S)


def start(state: Path) -> WitnessProcess:
    port_file = state.parent / f"{state.name}.port"
    port_file.unlink(missing_ok=True)
    log_file = state.parent / f"{state.name}.log"
    with log_file.open("ab") as stderr:
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "veritally.cli", "witness", "serve"),
                *("--state", str(state), "--listen", "127.0.0.1:0"),
                *("--port-file", str(port_file)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + WAIT_S
    while not port_file.exists():
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            popen.wait(timeout=WAIT_S)
            raise AssertionError(log_file.read_text(errors="replace"))
        time.sleep(0.05)
    return WitnessProcess(popen=popen, port=int(port_file.read_text()))


@dataclass
class Setup:
    state: Path
    log: TestLog
    witness_key: CosignatureVerifier


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    state = tmp_path / "witness"
    made = veritally("witness", "keygen", "--state", str(state), "--name", "witness.example/w1")
    assert made.returncode == 0, made.stderr
    log = TestLog()
    added = veritally(
        "witness", "add-log", "--state", str(state), "--origin", ORIGIN,
        "--key", log.signer.verifier().key_string(),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return Setup(state, log, CosignatureVerifier.from_key_string(made.stdout.strip()))


@pytest.fixture
def running(setup: Setup) -> Iterator[WitnessProcess]:
    process = start(setup.state)
    yield process
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        process.popen.wait(timeout=WAIT_S)


def test_cosigns_a_checkpoint_that_extends_the_one_it_cosigned(
    setup: Setup, running: WitnessProcess
) -> None:
    log = setup.log
    log.grow(5)
    status, body, content_type = running.post(log.request(0))
    assert (status, content_type) == (200, "text/plain; charset=utf-8")
    cosigned = setup.witness_key.verify_line(log.text(), body.decode())
    assert abs(cosigned.timestamp - time.time()) < 60
    log.grow(7)
    status, body, _ = running.post(log.request(5))
    assert status == 200
    setup.witness_key.verify_line(log.text(), body.decode())


def test_refuses_a_checkpoint_that_does_not_extend_the_one_it_cosigned(
    setup: Setup, running: WitnessProcess
) -> None:
    log = setup.log
    log.grow(5)
    assert running.post(log.request(0))[0] == 200
    fork = TestLog(signer=log.signer)
    fork.grow(8, tag=b"forged")
    assert running.post(fork.request(5))[0] == 422
    # A client that does not know the witness's size learns it from the 409.
    assert running.post(fork.request(0)) == (409, b"5\n", "text/x.tlog.size")


def test_keeps_its_state_across_sigkill_and_never_cosigns_a_fork_after_it(
    setup: Setup, running: WitnessProcess
) -> None:
    log = setup.log
    log.grow(6)
    status, line, _ = running.post(log.request(0))
    assert status == 200
    running.kill()  # SIGKILL right after the answer: the record was on disk before it
    again = start(setup.state)
    try:
        fork = TestLog(signer=log.signer)
        fork.grow(6, tag=b"forged")
        assert again.post(fork.request(0)) == (409, b"6\n", "text/x.tlog.size")
        assert again.post(fork.request(6))[0] == 422
        # Two roots signed for size 6: the witness keeps both notes as evidence.
        assert len(list((setup.state / "evidence").glob("*.json"))) == 1
        fork.grow(3, tag=b"forged")
        assert again.post(fork.request(6))[0] == 422
        log.grow(2)
        assert again.post(log.request(6))[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", again.port, timeout=WAIT_S)
        conn.request("GET", f"/{origin_hash(ORIGIN)}/checkpoint")
        served = conn.getresponse()
        note = served.read()
        conn.close()
        assert served.status == 200
        assert TestLog.text_of(note) == log.text()
        setup.witness_key.verify_line(TestLog.text_of(note), note.decode().splitlines()[-1])
    finally:
        again.kill()
    assert line  # the first cosignature was given before the kill


def test_answers_each_refusal_with_the_specs_status(setup: Setup, running: WitnessProcess) -> None:
    other = TestLog(origin="other.example/log")
    other.grow(2)
    assert running.post(other.request(0))[0] == 404
    impostor = TestLog(origin=ORIGIN)
    impostor.grow(2)
    assert running.post(impostor.request(0))[0] == 403
    assert running.post(b"old 0\nno empty line")[0] == 400
    assert running.post(b"", path="/nowhere")[0] == 404


def test_refuses_an_oversized_body_without_reading_it(running: WitnessProcess) -> None:
    status, _, _ = running.post(b"old 0\n\n" + b"x" * MAX_BODY_BYTES)
    assert status == 413


def test_refuses_a_body_without_content_length(running: WitnessProcess) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=WAIT_S) as sock:
        sock.sendall(
            b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nold 0\r\n0\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_serves_several_requests_on_one_keep_alive_connection(
    setup: Setup, running: WitnessProcess
) -> None:
    log = setup.log
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=WAIT_S)
    try:
        for old in (0, 3, 6):
            log.grow(3)
            conn.request("POST", "/add-checkpoint", body=log.request(old))
            answer = conn.getresponse()
            assert answer.status == 200, answer.read()
            answer.read()
    finally:
        conn.close()


def test_a_second_witness_on_the_same_state_directory_exits_with_a_message(
    setup: Setup, running: WitnessProcess
) -> None:
    second = veritally("witness", "serve", "--state", str(setup.state), "--listen", "127.0.0.1:0")
    assert second.returncode == 1
    assert "another witness process serves" in second.stderr


def test_keygen_never_overwrites_the_witness_key(setup: Setup) -> None:
    key = (setup.state / "witness.key").read_bytes()
    again = veritally("witness", "keygen", "--state", str(setup.state), "--name", "w2")
    assert again.returncode == 1
    assert "keeps its key" in again.stderr
    assert (setup.state / "witness.key").read_bytes() == key
    assert (setup.state / "witness.key").stat().st_mode & 0o777 == 0o600


def test_answers_503_beyond_its_connection_bound_and_serves_again_after(
    setup: Setup, running: WitnessProcess
) -> None:
    # Connections that send nothing hold their threads (up to the socket timeout).
    held = [
        socket.create_connection(("127.0.0.1", running.port), timeout=WAIT_S)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        time.sleep(0.5)  # every held connection accepted and given its thread
        with socket.create_connection(("127.0.0.1", running.port), timeout=WAIT_S) as extra:
            assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
    setup.log.grow(2)
    deadline = time.monotonic() + WAIT_S
    while (status := running.post(setup.log.request(0))[0]) == 503:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status == 200


def test_bad_log_key_and_missing_witness_key_are_refused_with_a_message(tmp_path: Path) -> None:
    state = tmp_path / "fresh"
    bad = veritally(
        "witness", "add-log", "--state", str(state), "--origin", ORIGIN,
        "--key", "veritally.example/e1+da53bc47+ARYYlTKkNbIxe1rFFgZG7t0oERRb7NKagnZCXjsOdbzé",
    )  # fmt: skip
    assert bad.returncode == 1
    assert "is malformed" in bad.stderr
    assert "Traceback" not in bad.stderr
    no_key = veritally("witness", "serve", "--state", str(state), "--listen", "127.0.0.1:0")
    assert no_key.returncode == 1
    assert "veritally witness keygen writes it" in no_key.stderr
