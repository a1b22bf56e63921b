"""Witnesses of a local stack: ``veritally up --witnesses N`` (docs/witness.md).

A demo or a rehearsal shows the witness policy end to end on one machine: N witness
processes (``veritally witness serve``), each with its own key and state directory under
``STATE/witnesses/witness-<i>``, and a trust root that lists their keys with a k-of-n
policy, so that media clients refuse a cut without k cosignatures. On a real night the
witnesses are run by independent parties elsewhere (docs/witness.md); nothing here is
needed for that.

:func:`prepare_witnesses` makes the state agree with what was asked: it creates the
missing witness directories (key and the log they witness, the publisher keys of the
newest trust root) and, when the newest trust root lists other witnesses or another
threshold, rotates it once (``trust-root-v<n+1>``, signed by the publisher keys of
version n, as ``veritally trust-root rotate`` would). Asked again with the same count
and threshold, it changes nothing. :func:`found_witnesses` lists the local witnesses the
newest trust root names, which a stack started without ``--witnesses`` keeps running.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from veritally import keypolicy
from veritally.errors import ServiceError
from veritally.publication.errors import KeyFileError, TrustRootFileError
from veritally.publication.keys import load_signer
from veritally.publication.trustroot import (
    load_trust_root_chain,
    rotate_trust_root,
    trust_root_path,
)
from veritally.state import StateDir
from veritally.witness.config import KEY_FILE, add_log, create_key, load_key
from veritally.witness.errors import WitnessConfigError
from veritally_client import TrustRootError
from veritally_client.protocol import CosignatureVerifier

log = logging.getLogger(__name__)

__all__ = [
    "MAX_LOCAL_WITNESSES",
    "LocalWitness",
    "WitnessPolicyError",
    "check_policy",
    "default_threshold",
    "found_witnesses",
    "newest_trust_root",
    "prepare_witnesses",
    "required_cosignatures",
    "witness_dir",
]

#: Most witnesses one local stack runs: each is a process on this machine, and the fixed
#: port layout keeps base + 31 .. base + 39 for them.
MAX_LOCAL_WITNESSES = 9


class WitnessPolicyError(ServiceError, ValueError):
    """The witnesses asked for cannot be set up: a count or threshold out of range, or a
    state directory whose keys or trust root do not allow the rotation."""


@dataclass(frozen=True)
class LocalWitness:
    """One witness process of the stack.

    Attributes:
        index: 1-based; the directory is ``witness-<index>`` and the port base + 30 + index.
        directory: its state directory (key, logs.json, records, evidence).
        key: its cosignature/v1 verifier key, as the trust root lists it.
    """

    index: int
    directory: Path
    key: CosignatureVerifier

    @property
    def name(self) -> str:
        """The name of its process and log file (``witness-<index>``)."""
        return f"witness-{self.index}"


def witness_dir(state: StateDir, index: int) -> Path:
    """The state directory of local witness ``index`` (1-based)."""
    return state.witnesses / f"witness-{index}"


def default_threshold(count: int) -> int:
    """A majority of ``count`` witnesses (2 of 3, as Sigsum's default policy)."""
    return count // 2 + 1 if count else 0


def check_policy(count: int, threshold: int | None = None) -> int:
    """The threshold of ``count`` local witnesses (``threshold``, or a majority).

    Raises:
        WitnessPolicyError: a count or threshold out of range.
    """
    if threshold is None:
        threshold = default_threshold(count)
    if not 0 <= count <= MAX_LOCAL_WITNESSES:
        raise WitnessPolicyError(f"--witnesses must be 0 to {MAX_LOCAL_WITNESSES}, got {count}")
    if count == 0 and threshold != 0:
        raise WitnessPolicyError("--witness-threshold needs --witnesses")
    if count and not 1 <= threshold <= count:
        raise WitnessPolicyError(
            f"--witness-threshold must be 1 to {count} (the number of witnesses), got {threshold}"
        )
    return threshold


def _ensure_witness(state: StateDir, index: int, origin: str, log_keys: list[str]) -> LocalWitness:
    directory = witness_dir(state, index)
    try:
        if (directory / KEY_FILE).exists():
            signer = load_key(directory)
        else:
            signer = create_key(directory, f"localhost/veritally-witness-{index}")
            log.info("created witness key %s", directory / KEY_FILE)
        add_log(directory, origin, log_keys)
    except WitnessConfigError as e:
        raise WitnessPolicyError(f"witness {index}: {e}") from e
    return LocalWitness(index=index, directory=directory, key=signer.verifier())


def prepare_witnesses(
    state: StateDir, count: int, threshold: int | None = None, *, now: dt.datetime | None = None
) -> list[LocalWitness]:
    """Make ``count`` local witnesses and a newest trust root that requires
    ``threshold`` of them (default: a majority); rotate the trust root only if it says
    otherwise now. ``count`` 0 rotates to a trust root without witnesses.

    Returns:
        The witnesses, in index order.

    Raises:
        WitnessPolicyError: a count or threshold out of range, no valid trust root, or
            no publisher key that can sign the rotation.
    """
    k = check_policy(count, threshold)
    when = now if now is not None else dt.datetime.now(dt.UTC)
    directory = keypolicy.trust_root_dir(state)
    try:
        _, root = load_trust_root_chain(directory, now=when)
    except TrustRootFileError as e:
        raise WitnessPolicyError(f"cannot set up witnesses: {e}") from e
    log_keys = [v.key_string() for v in root.verifiers]
    witnesses = [_ensure_witness(state, i, root.origin, log_keys) for i in range(1, count + 1)]
    keys = [w.key for w in witnesses]
    if set(root.witnesses) == set(keys) and root.witness_threshold == k:
        return witnesses
    try:
        signers = [load_signer(p) for p in keypolicy.publisher_keys(state, now=when)]
    except KeyFileError as e:
        raise WitnessPolicyError(f"cannot sign the trust root rotation: {e}") from e
    listed = {v.key_string() for v in root.verifiers}
    signers = [s for s in signers if s.verifier().key_string() in listed]
    if len(signers) < root.threshold:
        raise WitnessPolicyError(
            f"trust root v{root.version} needs {root.threshold} publisher key(s) to rotate; "
            f"{len(signers)} of its keys are in {state.keys}"
        )
    try:
        path, version = rotate_trust_root(
            directory,
            old=signers,
            publishers=signers,
            threshold=root.threshold,
            expires=root.expires,
            now=when,
            witnesses=keys,
            witness_threshold=k,
        )
    except (TrustRootFileError, TrustRootError, FileExistsError, ValueError) as e:
        raise WitnessPolicyError(f"cannot rotate the trust root: {e}") from e
    log.info("trust root v%d (%s) requires %d of %d local witnesses", version, path, k, len(keys))
    return witnesses


def found_witnesses(state: StateDir, *, now: dt.datetime | None = None) -> list[LocalWitness]:
    """The local witnesses (``STATE/witnesses/witness-<i>``) whose keys the newest trust
    root lists; none when there is no valid trust root."""
    when = now if now is not None else dt.datetime.now(dt.UTC)
    try:
        _, root = load_trust_root_chain(keypolicy.trust_root_dir(state), now=when)
    except TrustRootFileError:
        return []
    listed = set(root.witnesses)
    found = []
    for index in range(1, MAX_LOCAL_WITNESSES + 1):
        directory = witness_dir(state, index)
        if not (directory / KEY_FILE).exists():
            continue
        try:
            key = load_key(directory).verifier()
        except WitnessConfigError as e:
            log.warning("skipping %s: %s", directory, e)
            continue
        if key in listed:
            found.append(LocalWitness(index=index, directory=directory, key=key))
    return found


def newest_trust_root(state: StateDir, *, now: dt.datetime | None = None) -> Path:
    """The file of the newest valid trust root version (what a newsroom pins to enforce
    the current witness policy from its first cut), or version 1's path when the chain
    does not load."""
    when = now if now is not None else dt.datetime.now(dt.UTC)
    directory = keypolicy.trust_root_dir(state)
    try:
        _, root = load_trust_root_chain(directory, now=when)
    except TrustRootFileError:
        return state.trust_root_v1
    return trust_root_path(directory, root.version)


def required_cosignatures(state: StateDir, *, now: dt.datetime | None = None) -> int:
    """The k of the newest trust root's k-of-n witness policy (0 without witnesses or
    without a valid chain)."""
    when = now if now is not None else dt.datetime.now(dt.UTC)
    try:
        _, root = load_trust_root_chain(keypolicy.trust_root_dir(state), now=when)
    except TrustRootFileError:
        return 0
    return root.witness_threshold
