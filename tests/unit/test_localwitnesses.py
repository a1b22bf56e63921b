"""The local witnesses of ``veritally up --witnesses``: the state directory and the trust
root agree with what was asked after one rotation, asking again changes nothing, and a
policy no set of witnesses can meet is refused before anything is written."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from veritally.localwitnesses import (
    WitnessPolicyError,
    check_policy,
    found_witnesses,
    newest_trust_root,
    prepare_witnesses,
    required_cosignatures,
)
from veritally.publication.trustroot import load_trust_root_chain
from veritally.state import Bootstrap, StateDir
from veritally_client import TrustedRoot


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> StateDir:
    state = StateDir(tmp_path_factory.mktemp("lw") / "state")
    Bootstrap(casillas=10, seed=2).ensure(state)
    return state


@pytest.fixture
def state(bootstrapped: StateDir, tmp_path: Path) -> StateDir:
    copy = tmp_path / "state"
    shutil.copytree(bootstrapped.root, copy)
    return StateDir(copy)


def _root(state: StateDir) -> TrustedRoot:
    return load_trust_root_chain(state.trust_root, now=dt.datetime.now(dt.UTC))[1]


def test_three_witnesses_get_a_trust_root_requiring_two_and_asking_again_changes_nothing(
    state: StateDir,
) -> None:
    made = prepare_witnesses(state, 3)
    root = _root(state)
    assert (root.version, root.witness_threshold) == (2, 2)
    assert list(root.witnesses) == [w.key for w in made]
    # Each witness witnesses this log, with the publisher keys of the trust root.
    for w in made:
        text = (w.directory / "logs.json").read_text()
        assert root.origin in text
        assert root.verifiers[0].key_string() in text
    assert prepare_witnesses(state, 3) == made
    assert _root(state).version == 2
    assert found_witnesses(state) == made
    assert newest_trust_root(state).name == "trust-root-v2.binpb"
    assert required_cosignatures(state) == 2


def test_another_threshold_rotates_once_more_and_zero_drops_the_policy(state: StateDir) -> None:
    made = prepare_witnesses(state, 3)
    prepare_witnesses(state, 3, 3)
    assert (_root(state).version, _root(state).witness_threshold) == (3, 3)
    assert prepare_witnesses(state, 0) == []
    root = _root(state)
    assert (root.version, root.witnesses, root.witness_threshold) == (4, (), 0)
    assert found_witnesses(state) == []
    # Their keys stay: a witness never loses its key, and asked again they come back.
    assert prepare_witnesses(state, 3) == made


@pytest.mark.parametrize(
    ("count", "threshold", "named"),
    [(3, 4, "--witness-threshold"), (3, 0, "--witness-threshold"), (10, None, "--witnesses"),
     (-1, None, "--witnesses"), (0, 1, "--witness-threshold")],
)  # fmt: skip
def test_a_policy_no_witness_set_can_meet_is_refused_before_anything_is_written(
    state: StateDir, count: int, threshold: int | None, named: str
) -> None:
    with pytest.raises(WitnessPolicyError, match=named):
        prepare_witnesses(state, count, threshold)
    assert not (state.root / "witnesses").exists()
    assert _root(state).version == 1


def test_the_default_threshold_is_a_majority() -> None:
    assert [check_policy(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
