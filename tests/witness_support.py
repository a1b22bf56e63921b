"""A log for the witness tests: a growing Merkle tree and its signed checkpoints."""

from __future__ import annotations

from veritally.witness.protocol import format_add_checkpoint
from veritally_client.protocol import Checkpoint, MemoryTree, Signer, sign_note

__all__ = ["ORIGIN", "TestLog"]

ORIGIN = "veritally.example/e1"


class TestLog:
    """A log that signs checkpoints of its tree and writes add-checkpoint bodies."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, *, origin: str = ORIGIN, signer: Signer | None = None) -> None:
        self.origin = origin
        self.signer = signer or Signer.generate(origin)
        self.tree = MemoryTree()

    def grow(self, leaves: int, *, tag: bytes = b"acta") -> None:
        """Append ``leaves`` leaves (``tag`` makes a fork's leaves differ)."""
        start = self.tree.size
        for i in range(start, start + leaves):
            self.tree.append(b"%s %d" % (tag, i))

    def note(self, *, extensions: str = "") -> bytes:
        """The signed checkpoint of the tree as it is now."""
        cp = Checkpoint(origin=self.origin, size=self.tree.size, root_hash=self.tree.root())
        return sign_note(cp.to_text() + extensions, [self.signer])

    def text(self) -> str:
        """The checkpoint text of the tree as it is now (what a cosignature is over)."""
        return self.text_of(self.note())

    @staticmethod
    def text_of(note: bytes) -> str:
        """The text of a signed note: everything before its last blank line."""
        decoded = note.decode("utf-8")
        return decoded[: decoded.rindex("\n\n") + 1]

    def request(self, old_size: int, *, note: bytes | None = None) -> bytes:
        """An add-checkpoint body from ``old_size`` to the tree as it is now."""
        proof = (
            self.tree.consistency_proof(old_size, self.tree.size)
            if 0 < old_size < self.tree.size
            else []
        )
        return format_add_checkpoint(old_size, proof, self.note() if note is None else note)
