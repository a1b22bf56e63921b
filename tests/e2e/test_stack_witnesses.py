"""``veritally up --witnesses 3``: the stack runs three real witness processes, the newest
trust root requires 2 of them, and a media client pinned to it verifies every cut by its
quorum, also while a witness is killed with SIGKILL and restarted by the watchdog; with
two witnesses gone, a new cut is refused with its own typed error."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from veritally.election import load_actas, load_election
from veritally.localwitnesses import witness_dir
from veritally.publication.trustroot import load_trust_root_chain
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import (
    Client,
    ClientConfig,
    InsufficientCosignaturesError,
    VerifiedCut,
    VeritallyError,
)
from veritally_client.protocol import CosignatureVerifier
from veritally_client.protocol.pb import acta_pb2, ingest_pb2, ingest_pb2_grpc

CASILLAS = 40
WAIT_S = 60.0
CALL_TIMEOUT_S = 20.0


def _stack(state: StateDir, *, auto_restart: bool, witnesses: int | None = 3) -> Stack:
    return Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        single_capture=True,
        auto_restart=auto_restart,
        restart_backoff_s=0.2,
        witnesses=witnesses,
    )


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    Bootstrap(casillas=CASILLAS, seed=5).ensure(state)
    return state


@pytest.fixture
def actas(state: StateDir) -> Iterator[acta_pb2.Acta]:
    return iter(load_actas(load_election(state.election_yaml), state.actas_csv))


def _submit(stack: Stack, actas: Iterator[acta_pb2.Acta], n: int) -> None:
    """Capture actas as cc-01 until ``n`` are accepted (it may capture some states only)."""
    accepted = 0
    with grpc.secure_channel(stack.endpoints.edge, stack.tls("cc-01").channel_credentials()) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        while accepted < n:
            answer = stub.SubmitActas(
                iter([ingest_pb2.SubmitActasRequest(actas=[next(actas)])]), timeout=CALL_TIMEOUT_S
            )
            accepted += answer.outcomes[0].status == ingest_pb2.OUTCOME_STATUS_ACCEPTED


def _cosigners(stack: Stack, cut: VerifiedCut) -> set[str]:
    """The local witnesses whose cosignature line on the cut's note verifies."""
    text, _, signatures = cut.note.decode().partition("\n\n")
    found = set()
    for w in stack.witnesses:
        for line in signatures.splitlines():
            with contextlib.suppress(VeritallyError):  # another signer's line
                w.key.verify_line(text + "\n", line)
                found.add(w.name)
    return found


def _next_cut(client: Client, after: int) -> VerifiedCut:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        cut = client.latest()
        if cut.checkpoint.size > after:
            return cut
        time.sleep(0.2)
    raise AssertionError(f"no cut beyond tree size {after} within {WAIT_S} s")


def test_media_verify_each_cut_by_two_of_three_witnesses_across_a_witness_kill(
    state: StateDir, actas: Iterator[acta_pb2.Acta], tmp_path: Path
) -> None:
    with _stack(state, auto_restart=True) as stack:
        _, root = load_trust_root_chain(state.trust_root, now=dt.datetime.now(dt.UTC))
        assert (root.version, root.witness_threshold) == (2, 2)
        assert set(root.witnesses) == {w.key for w in stack.witnesses}
        assert stack.pinned_trust_root().name == "trust-root-v2.binpb"
        # Each witness keeps its own key and state directory, as an independent one would.
        for w in stack.witnesses:
            vkey = (witness_dir(state, w.index) / "witness.vkey").read_text().strip()
            assert CosignatureVerifier.from_key_string(vkey) == w.key
        with stack.media_client(
            "outlet-01",
            state_dir=tmp_path / "media",
            config=ClientConfig(max_checkpoint_age=120.0),
        ) as client:
            _submit(stack, actas, 5)
            cut = _next_cut(client, 0)
            assert _cosigners(stack, cut) == {"witness-1", "witness-2", "witness-3"}

            old = stack.pids()["witness-2"]
            assert old is not None
            os.kill(old, signal.SIGKILL)
            _submit(stack, actas, 5)
            during = _next_cut(client, cut.checkpoint.size)
            assert len(_cosigners(stack, during)) >= 2

            deadline = time.monotonic() + WAIT_S
            while stack.pids()["witness-2"] in (None, old) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert stack.pids()["witness-2"] not in (None, old), "witness-2 was not restarted"
            # Back with its state: it cosigns trees that extend what it cosigned.
            size = during.checkpoint.size
            for _ in range(20):
                _submit(stack, actas, 1)
                after = _next_cut(client, size)
                size = after.checkpoint.size
                if "witness-2" in _cosigners(stack, after):
                    break
            else:
                raise AssertionError("the restarted witness never cosigned again")
            assert _cosigners(stack, after) == {"witness-1", "witness-2", "witness-3"}
    # Started again without --witnesses, the stack runs the witnesses the trust root lists
    # (no new version), each with the records it kept: the media client's state goes on.
    with (
        _stack(state, auto_restart=False, witnesses=None) as again,
        again.media_client(
            "outlet-01", state_dir=tmp_path / "media", config=ClientConfig(max_checkpoint_age=120.0)
        ) as client,
    ):
        assert [w.key for w in again.witnesses] == [w.key for w in stack.witnesses]
        _submit(again, actas, 1)
        last = _next_cut(client, size)
        assert _cosigners(again, last) == {"witness-1", "witness-2", "witness-3"}
    assert not (state.trust_root / "trust-root-v3.binpb").exists()


def test_a_cut_without_its_witness_quorum_is_refused_by_media(
    state: StateDir, actas: Iterator[acta_pb2.Acta], tmp_path: Path
) -> None:
    with (
        _stack(state, auto_restart=False) as stack,
        stack.media_client(
            "outlet-01",
            state_dir=tmp_path / "media",
            config=ClientConfig(max_checkpoint_age=120.0),
        ) as client,
    ):
        _submit(stack, actas, 3)
        cut = _next_cut(client, 0)
        stack.kill("witness-1")
        stack.kill("witness-3")
        _submit(stack, actas, 3)
        refused = _wait_refused(client, cut.checkpoint.size)
        assert refused.note  # the refused note is kept as evidence
        assert "2" in str(refused)


def _wait_refused(client: Client, size: int) -> InsufficientCosignaturesError:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            newer = client.latest()
        except InsufficientCosignaturesError as e:
            return e
        assert newer.checkpoint.size == size  # not cut yet
        time.sleep(0.2)
    raise AssertionError("a cut cosigned by 1 of 3 witnesses was not refused")


def _up(state: StateDir, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veritally.cli", "up", "--state", str(state.root), *flags],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--witnesses", "3", "--witness-threshold", "4"), "--witness-threshold"),
        (("--witnesses", "10"), "--witnesses"),
        (("--witness-threshold", "1"), "--witness-threshold"),
    ],
)
def test_up_refuses_a_witness_policy_no_witness_set_can_meet(
    state: StateDir, flags: tuple[str, ...], named: str
) -> None:
    done = _up(state, "--base-port", "0", *flags)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    # Nothing was started or rotated.
    assert not (state.root / "witnesses").exists()
    assert sorted(p.name for p in state.trust_root.glob("*.binpb")) == ["trust-root-v1.binpb"]


def test_up_with_witnesses_prints_the_policy_and_each_witness_then_stops_them_on_sigterm(
    state: StateDir, tmp_path: Path
) -> None:
    # As docs/operations.md shows it, on free ports.
    log = tmp_path / "up.log"
    argv = [sys.executable, "-m", "veritally.cli", "up", "--state", str(state.root)]
    flags = ["--base-port", "0", "--witnesses", "3", "--witness-threshold", "3"]
    wide = {**os.environ, "COLUMNS": "400"}  # rich's table keeps each row on one line
    with log.open("wb") as out, subprocess.Popen([*argv, *flags], stderr=out, env=wide) as proc:
        try:
            deadline = time.monotonic() + WAIT_S
            while "Ctrl-C" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            shown = log.read_text()
            assert "3 of 3 cosignatures" in shown
            assert "trust-root-v2.binpb" in shown
            for i in (1, 2, 3):
                assert f"witness-{i} (tlog-witness, loopback)" in shown
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT_S) == 0, log.read_text()
    # Every witness process is gone: each held its state directory's lock.
    for i in (1, 2, 3):
        lock = witness_dir(state, i) / "lock"
        with lock.open("rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
