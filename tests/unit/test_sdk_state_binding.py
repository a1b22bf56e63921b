"""The trusted state belongs to one publisher and one client at a time.

A state directory reused for another stack with the same origin line (another night's
keys) used to end in an opaque ``RollbackError`` (or worse, a comparison of two unrelated
logs); a second client on the same directory silently overwrote the first one's checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, make_trust_root, publisher_key, with_two_cuts
from veritally_client import Client, RollbackError, StateInUseError, StateMismatchError
from veritally_client._cli import EXIT_USAGE, main
from veritally_client._state import StateStore

OTHER_SEED = b"\x2a" * 32  # not sdk_fake.SEED


def _client(pub: FakePublisher, state_dir: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, clock=lambda: pub.now
    )


def _night(tmp_path: Path) -> tuple[FakePublisher, Path]:
    """A state directory that verified cut 2 of the default publisher, then closed."""
    pub = with_two_cuts(FakePublisher())
    with _client(pub, tmp_path) as client:
        client.latest()
    return pub, tmp_path


def _other_publisher() -> FakePublisher:
    """Same origin line, other key: another stack, another night."""
    other = FakePublisher(signers=[publisher_key(seed=OTHER_SEED)])
    other.step(1)
    return other


def _state_file(state_dir: Path) -> Path:
    (path,) = state_dir.glob("*/state.json")
    return path


def test_state_of_another_publisher_with_the_same_origin_is_refused_saying_what_it_holds(
    tmp_path: Path,
) -> None:
    _, state_dir = _night(tmp_path)
    before = _state_file(state_dir).read_bytes()
    with pytest.raises(StateMismatchError) as caught:
        _client(_other_publisher(), state_dir)
    message = str(caught.value)
    assert "another publisher" in message
    assert "cut 2 (tree size 9" in message
    assert "trust root v1" in message
    assert "use another state directory (--state-dir)" in message
    assert _state_file(state_dir).read_bytes() == before  # nothing changed


def test_the_same_publisher_reopens_its_own_state(tmp_path: Path) -> None:
    pub, state_dir = _night(tmp_path)
    doc = json.loads(_state_file(state_dir).read_text())
    assert doc["trust_root_version"] == 1
    pub.step(2)
    with _client(pub, state_dir) as client:
        assert client.latest().cut_number == 3


@pytest.mark.parametrize("publisher", ["same", "other"])
def test_state_written_before_the_binding_is_checked_by_its_signed_checkpoint(
    tmp_path: Path, publisher: str
) -> None:
    pub, state_dir = _night(tmp_path)
    path = _state_file(state_dir)
    doc = json.loads(path.read_text())
    del doc["trust_root_version"], doc["trust_root_sha256"]
    path.write_text(json.dumps(doc))  # as an older client wrote it
    if publisher == "other":
        with pytest.raises(StateMismatchError, match="keys none of those sign"):
            _client(_other_publisher(), state_dir)
        return
    pub.step(1)
    with _client(pub, state_dir) as client:
        assert client.latest().cut_number == 3
    assert json.loads(path.read_text())["trust_root_version"] == 1  # bound from now on


def test_trust_root_chain_in_the_directory_that_does_not_follow_the_pinned_root_is_refused(
    tmp_path: Path,
) -> None:
    pub, state_dir = _night(tmp_path)
    other = publisher_key(seed=OTHER_SEED)
    foreign_v2 = make_trust_root([other], version=2, signed_by=[other])
    store = StateStore(state_dir, origin=pub.origin)
    store.save_trust_root(2, foreign_v2)
    store.close()
    with pytest.raises(StateMismatchError, match="does not follow the pinned trust root v1"):
        _client(pub, state_dir)


def test_second_client_on_one_state_directory_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    pub = with_two_cuts(FakePublisher())
    first = _client(pub, tmp_path)
    first.latest()
    with pytest.raises(StateInUseError, match="in use by process"):
        _client(pub, tmp_path)
    first.close()
    with _client(pub, tmp_path) as again:
        assert again.latest().cut_number == 2


def test_state_directory_held_by_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    pub = with_two_cuts(FakePublisher())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from veritally_client._state import StateStore;"
            f"s = StateStore(Path({str(tmp_path)!r}), origin={pub.origin!r});"
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateInUseError, match=f"in use by process {holder.pid}"):
            _client(pub, tmp_path)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The lock dies with its process: no stale lock file to remove by hand.
    deadline = time.monotonic() + 5
    while True:
        try:
            with _client(pub, tmp_path) as client:
                assert client.latest().cut_number == 2
            break
        except StateInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_cli_with_another_publishers_state_directory_is_a_usage_error_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, state_dir = _night(tmp_path / "state")
    other = _other_publisher()
    root = tmp_path / "root.pb"
    root.write_bytes(make_trust_root(other.signers, expires=other.now.replace(year=2100)))
    code = main(
        [
            "--endpoint",
            "127.0.0.1:9",  # never reached: the state directory is refused first
            "--unsafe-plaintext",
            "--trust-root",
            str(root),
            "--state-dir",
            str(state_dir),
            "latest",
        ]
    )
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "belongs to another publisher" in err
    assert "(--state-dir)" in err


def test_same_publishers_state_of_another_night_is_a_rollback_that_says_which_state(
    tmp_path: Path,
) -> None:
    """Same keys and origin, a new log (another night): authentic but older than the
    state, so still a RollbackError (it may be an attack), saying what the state holds."""
    _, state_dir = _night(tmp_path)
    new_night = FakePublisher()
    new_night.step(1)
    with _client(new_night, state_dir) as client, pytest.raises(RollbackError) as caught:
        client.latest()
    message = str(caught.value)
    assert "tree size 2 is below the verified size 9" in message
    assert f"the trusted state in {state_dir} holds cut 2" in message
    assert "use another state directory (--state-dir)" in message
