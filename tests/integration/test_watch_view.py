"""The watch view tells when it is not live: reconnecting, how old the shown cut is,
stale, and giving up (exit 3) after --max-failures.

Before, ``watch`` kept showing ``cut 169 · ... · verified`` with nothing on stderr while
the publisher was down, retrying forever. The live table is read from a real terminal
(tmux, 80 x 24); the plain mode's stderr is read as a script would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.sdk_fakes.stack import SdkStack, sdk_stack

CLI = Path(sys.executable).parent / "veritally-client"
WAIT_S = 20.0  # bound on every wait for the terminal to show something (s)


def _argv(stack: SdkStack, *extra: str) -> list[str]:
    return [
        str(CLI),
        "--endpoint",
        stack.endpoint,
        "--unsafe-plaintext",
        "--trust-root",
        str(stack.trust_root_file),
        "--state-dir",
        str(stack.state_dir),
        "--max-age",
        "3",
        *extra,
    ]


def _pane(session: str) -> str:
    done = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def _until(session: str, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        screen = await asyncio.to_thread(_pane, session)
        if text in screen:
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never shown; the terminal shows:\n{screen}")
        await asyncio.sleep(0.1)


async def test_live_view_shows_reconnecting_then_stale_then_gives_up(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        session = f"veritally-watch-{uuid.uuid4().hex[:8]}"
        command = " ".join(_argv(stack, "watch", "--max-failures", "5"))
        await asyncio.to_thread(
            subprocess.run,
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "80",
                "-y",
                "24",
                f"TERM=xterm-256color {command}; echo EXIT=$?; sleep 60",
            ],
            check=True,
        )
        try:
            live = await _until(session, "live · cut 1 shown is ")
            assert "Presidencia" in live or "PRES" in live
            await stack.service.stop(grace=0.1)  # the publisher goes away
            down = await _until(session, "RECONNECTING (attempt ")
            assert "shown is " in down
            stale = await _until(session, "STALE: cut 1 shown is ")
            assert "RECONNECTING (attempt " in stale
            end = await _until(session, "EXIT=")
            assert "EXIT=3" in end
            assert "gave up after 5 attempts" in end
            assert all(len(line) <= 80 for line in end.splitlines())
        finally:
            await asyncio.to_thread(
                subprocess.run, ["tmux", "kill-session", "-t", session], check=False
            )


async def test_plain_watch_says_on_stderr_that_it_reconnects_and_gives_up(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        process = await asyncio.create_subprocess_exec(
            *_argv(stack, "watch", "--plain", "--max-failures", "3"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), WAIT_S)
        assert b'"cut_number": 1' in first
        await stack.service.stop(grace=0.1)
        _, err = await asyncio.wait_for(process.communicate(), WAIT_S)
        assert process.returncode == 3
        lines = err.decode().splitlines()
        assert lines[0].startswith("veritally-client: RECONNECTING (attempt 1, next in 0.5 s) · ")
        assert " · cut 1 shown is " in lines[0]
        assert "RECONNECTING (attempt 2, next in 1.0 s) · " in lines[1]
        assert "gave up after 3 attempts" in lines[-1]
