"""Trust root files on disk: ``<dir>/trust-root-v<N>.binpb``, one per version.

Each file is a serialized ``veritally.v1.TrustRoot`` document, exactly as signed (the
``.binpb`` suffix is buf's name for binary protobuf). Versions are dense from 1; the
publication service serves every one of them and refuses to start unless the chain
verifies and the newest version lists every key it signs with (docs/adr/0023).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path

from veritally.publication.errors import TrustRootFileError
from veritally_client import TrustRootError
from veritally_client.protocol import CosignatureVerifier, Signer, TrustedRoot, sign_trust_root
from veritally_client.protocol.pb import log_pb2

__all__ = [
    "TRUST_ROOT_FILE_RE",
    "build_body",
    "create_trust_root",
    "load_trust_root_chain",
    "rotate_trust_root",
    "trust_root_path",
    "write_trust_root",
]

TRUST_ROOT_FILE_RE = re.compile(r"trust-root-v([1-9][0-9]*)\.binpb")
# Most versions read from a directory: one rotation a week for years fits; more means
# the directory is not what we think it is.
MAX_VERSIONS = 1000


def trust_root_path(directory: Path, version: int) -> Path:
    """Where version ``version`` lives."""
    return directory / f"trust-root-v{version}.binpb"


def load_trust_root_chain(directory: Path, *, now: dt.datetime) -> tuple[list[bytes], TrustedRoot]:
    """Read and verify every version in ``directory``.

    Returns:
        The documents in version order (index 0 is version 1) and the newest verified
        trust root.

    Raises:
        TrustRootFileError: if there is none, versions are missing, or the chain does not
            verify (including an expired newest version).
    """
    if not directory.is_dir():
        raise TrustRootFileError(f"trust root directory {directory} does not exist")
    versions = sorted(
        int(m.group(1)) for p in directory.iterdir() if (m := TRUST_ROOT_FILE_RE.fullmatch(p.name))
    )
    if not versions:
        raise TrustRootFileError(f"no trust-root-v<N>.binpb file in {directory}")
    if versions != list(range(1, len(versions) + 1)) or len(versions) > MAX_VERSIONS:
        raise TrustRootFileError(f"trust root versions in {directory} are not 1..n: {versions}")
    docs = [trust_root_path(directory, v).read_bytes() for v in versions]
    try:
        root = TrustedRoot.from_chain(docs, now=now)
    except TrustRootError as e:
        raise TrustRootFileError(f"trust root chain in {directory} does not verify: {e}") from e
    return docs, root


def build_body(
    *,
    version: int,
    origin: str,
    publishers: Sequence[Signer],
    threshold: int,
    expires: dt.datetime,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_threshold: int = 0,
) -> log_pb2.TrustRootBody:
    """A trust root body listing the publishers' verifier keys and the witnesses' keys
    with how many of them must cosign each checkpoint (docs/adr/0091).

    Raises:
        ValueError: if ``expires`` is naive.
    """
    if expires.tzinfo is None:
        raise ValueError("expires must be timezone-aware")
    body = log_pb2.TrustRootBody(
        version=version,
        origin=origin,
        publisher_keys=[s.verifier().key_string() for s in publishers],
        threshold=threshold,
        witness_keys=[w.key_string() for w in witnesses],
        witness_threshold=witness_threshold,
    )
    body.expires_time.FromDatetime(expires.astimezone(dt.UTC))
    return body


def write_trust_root(directory: Path, version: int, data: bytes) -> Path:
    """Write a signed document as the file of its version (never overwriting).

    Raises:
        FileExistsError: if that version already exists.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = trust_root_path(directory, version)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def create_trust_root(
    directory: Path,
    *,
    publishers: Sequence[Signer],
    origin: str,
    threshold: int,
    expires: dt.datetime,
    now: dt.datetime,
    witnesses: Sequence[CosignatureVerifier] = (),
    witness_threshold: int = 0,
) -> Path:
    """Write version 1, listing and signed by ``publishers`` (and listing
    ``witnesses``, ``witness_threshold`` of whom must cosign), once it verifies.

    Raises:
        FileExistsError: ``directory`` already has a trust root (rotate it instead).
        TrustRootError: the document would not verify (e.g. threshold above the keys).
        ValueError: ``expires`` is naive.
    """
    body = build_body(
        version=1,
        origin=origin,
        publishers=publishers,
        threshold=threshold,
        expires=expires,
        witnesses=witnesses,
        witness_threshold=witness_threshold,
    )
    if any(directory.glob("trust-root-v*.binpb")):
        raise FileExistsError(f"{directory} already has a trust root; rotate it")
    data = sign_trust_root(body, list(publishers))
    TrustedRoot.from_bytes(data, now=now)  # never leave a document clients would reject
    return write_trust_root(directory, 1, data)


def rotate_trust_root(
    directory: Path,
    *,
    old: Sequence[Signer],
    publishers: Sequence[Signer],
    threshold: int,
    expires: dt.datetime,
    now: dt.datetime,
    witnesses: Sequence[CosignatureVerifier] | None = None,
    witness_threshold: int | None = None,
) -> tuple[Path, int]:
    """Write version n + 1 of the chain in ``directory``: listing ``publishers``, signed
    by the ``old`` keys (of version n) and the new ones, once it verifies as an update
    of version n. The witnesses and their threshold are version n's unless given (a
    publisher key rotation does not drop the witnesses by accident).

    Returns:
        The file written and its version.

    Raises:
        TrustRootFileError: the chain in ``directory`` does not load or verify.
        TrustRootError: the new version does not verify as an update of version n.
        FileExistsError: that version was written meanwhile.
        ValueError: ``expires`` is naive.
    """
    _docs, current = load_trust_root_chain(directory, now=now)
    body = build_body(
        version=current.version + 1,
        origin=current.origin,
        publishers=publishers,
        threshold=threshold,
        expires=expires,
        witnesses=current.witnesses if witnesses is None else witnesses,
        witness_threshold=(
            current.witness_threshold if witness_threshold is None else witness_threshold
        ),
    )
    old_ids = {o.key_id for o in old}
    signers = [*old, *(k for k in publishers if k.key_id not in old_ids)]
    data = sign_trust_root(body, signers)
    current.update(data, now=now)  # never leave a document clients would reject
    return write_trust_root(directory, body.version, data), body.version
