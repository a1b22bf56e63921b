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
from veritally_client.protocol import Signer, TrustedRoot
from veritally_client.protocol.pb import log_pb2

__all__ = [
    "TRUST_ROOT_FILE_RE",
    "build_body",
    "load_trust_root_chain",
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
) -> log_pb2.TrustRootBody:
    """A trust root body listing the publishers' verifier keys.

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
