"""C2SP tlog-checkpoint note texts (c2sp.org/tlog-checkpoint).

The text is the origin line, the tree size in ASCII decimal without leading zeroes, and
the base64 root hash, each ending in a newline. veritally's logs never write extension
lines (the spec discourages them because monitors cannot audit them), and
:func:`parse_checkpoint` rejects them by default so that nothing unaudited can ride along
in a checkpoint of ours. Third-party checkpoints (e.g. from witnesses or other logs) may
carry them; pass ``allow_extension_lines=True`` to accept and ignore them. See
docs/adr/0021-checkpoint-extension-lines.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from veritally_client._errors import MalformedDataError
from veritally_client._merkle import HASH_SIZE

__all__ = ["MAX_TREE_SIZE", "Checkpoint", "parse_checkpoint"]

#: Largest tree size accepted: sizes travel as uint64 in our protobufs.
MAX_TREE_SIZE = 2**64 - 1
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and root hash. Valid by construction.

    Attributes:
        origin: the log's origin line (non-empty, no newline or control characters).
        size: number of leaves.
        root_hash: the 32-byte RFC 9162 root hash.
    """

    origin: str
    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        if not self.origin or any(ord(c) < 0x20 for c in self.origin):
            raise ValueError("the origin must be non-empty without control characters")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"root hash must be {HASH_SIZE} bytes")

    def to_text(self) -> str:
        """The note text: three lines, each ending in a newline."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n"


def parse_checkpoint(text: str, *, allow_extension_lines: bool = False) -> Checkpoint:
    """Parse a checkpoint note text (already taken out of a verified signed note).

    Args:
        text: the note text, ending in a newline.
        allow_extension_lines: accept (and ignore) extension lines after the root hash,
            for third-party logs. Our own logs never have them.

    Returns:
        The checkpoint.

    Raises:
        MalformedDataError: if the text is not a well-formed checkpoint, or has extension
            lines and ``allow_extension_lines`` is false.
    """
    if not text.endswith("\n"):
        raise MalformedDataError("a checkpoint text ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedDataError("a checkpoint has at least three lines")
    origin, size_line, root_line = lines[0], lines[1], lines[2]
    extensions = lines[3:]
    if extensions and not allow_extension_lines:
        raise MalformedDataError("extension lines are not allowed in this log's checkpoints")
    if any(not line for line in extensions):
        raise MalformedDataError("extension lines must be non-empty")
    if not origin or any(ord(c) < 0x20 for c in origin):
        raise MalformedDataError("the origin line is empty or has control characters")
    if not _SIZE_RE.fullmatch(size_line):
        raise MalformedDataError(f"bad tree size line {size_line!r}")
    size = int(size_line)
    if size > MAX_TREE_SIZE:
        raise MalformedDataError("tree size does not fit in 64 bits")
    try:
        root = base64.b64decode(root_line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise MalformedDataError("the root hash line is not base64") from e
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_line:
        raise MalformedDataError(f"the root hash is not canonical base64 of {HASH_SIZE} bytes")
    return Checkpoint(origin=origin, size=size, root_hash=root)
