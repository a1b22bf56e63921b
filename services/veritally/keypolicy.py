"""Which signing keys and trust root the stack's publication is launched with.

The rule a reviewer must check alone: publication signs with exactly the key files in
``STATE/keys`` that the newest valid trust root in ``STATE/trust-root`` lists, so that
after a rotation (new key generated, ``veritally trust-root rotate``) a restarted
publication signs with the keys media are told to expect (ADR 0062). When none is
listed (no trust root yet, or none of the keys), it falls back to ``publisher.key``,
and publication then refuses to start, naming the key.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from veritally.publication.errors import KeyFileError, TrustRootFileError
from veritally.publication.keys import load_signer
from veritally.publication.trustroot import load_trust_root_chain
from veritally.state import StateDir

log = logging.getLogger(__name__)

__all__ = ["publisher_keys", "trust_root_dir"]


def trust_root_dir(state: StateDir) -> Path:
    """The directory of ``trust-root-v<N>.binpb`` publication is launched with."""
    return state.trust_root


def publisher_keys(state: StateDir, *, now: dt.datetime | None = None) -> list[Path]:
    """The key files in ``state.keys`` that the newest trust root lists (sorted), or
    ``[state.publisher_key]`` when it lists none of them or there is no valid chain.

    Encrypted or broken key files are skipped with a warning: they are not the stack's
    to use.
    """
    when = now if now is not None else dt.datetime.now(dt.UTC)
    try:
        _, root = load_trust_root_chain(trust_root_dir(state), now=when)
    except TrustRootFileError:
        return [state.publisher_key]
    listed = {v.key_string() for v in root.verifiers}
    chosen = []
    for path in sorted(state.keys.glob("*.key")):
        try:
            signer = load_signer(path)
        except KeyFileError as e:  # an encrypted or broken key: not ours to use
            log.warning("skipping %s: %s", path, e)
            continue
        if signer.verifier().key_string() in listed:
            chosen.append(path)
    return chosen or [state.publisher_key]
