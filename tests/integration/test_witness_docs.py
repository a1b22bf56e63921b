"""Every command of docs/witness.md, run as shown (the state directory and the port moved
to the test's own), with the output the page shows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO_ROOT
from veritally_client.protocol import CosignatureVerifier

DOC = REPO_ROOT / "docs" / "witness.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOC_STATE = "/var/lib/veritally-witness"
WAIT_S = 20.0


def _steps() -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) of every console block, in order."""
    steps: list[tuple[str, list[str]]] = []
    for language, body in FENCE.findall(DOC.read_text(encoding="utf-8")):
        assert language == "console", "the page shows only commands a test runs"
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, serving: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert serving.poll() is None, "witness serve exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def test_every_command_of_the_witness_page_runs_as_shown(tmp_path: Path) -> None:
    steps = _steps()
    assert [c.split()[:3] for c, _ in steps] == [
        ["veritally", "witness", "keygen"],
        ["veritally", "witness", "add-log"],
        ["veritally", "witness", "serve"],
        ["curl", "-s", "-o"],
    ]
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    serving: subprocess.Popen[bytes] | None = None
    try:
        for command, shown in steps:
            local = (
                command.replace(DOC_STATE, str(tmp_path / "w"))
                .replace("0.0.0.0:7380", f"127.0.0.1:{port}")
                .replace("127.0.0.1:7380", f"127.0.0.1:{port}")
            )
            if " serve " in local:
                serving = subprocess.Popen(
                    ["bash", "-c", f"exec {local}"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                _wait_listening(port, serving)
                continue
            done = subprocess.run(
                ["bash", "-c", local],
                env=env,
                capture_output=True,
                text=True,
                timeout=WAIT_S,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            printed = done.stdout.splitlines()
            if " keygen " in local:
                # A new key each time: the line has the shape and the name shown.
                (shown_key,) = shown
                (printed_key,) = printed
                assert (
                    CosignatureVerifier.from_key_string(printed_key).name
                    == CosignatureVerifier.from_key_string(shown_key).name
                )
                assert (tmp_path / "w" / "witness.vkey").read_text().strip() == printed_key
            else:
                assert printed == shown
    finally:
        if serving is not None:
            serving.send_signal(signal.SIGTERM)
            serving.wait(timeout=WAIT_S)
    assert serving is not None
    assert serving.returncode == 0  # SIGTERM stops it cleanly
