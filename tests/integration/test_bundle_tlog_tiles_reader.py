"""Generic transparency tooling can read our log: a tlog-tiles reader written here from
the specifications alone reads a bundle our publisher wrote.

The reader below implements, with hashlib and PyNaCl only and none of our Merkle, tile,
note or checkpoint code:

* C2SP signed-note (the checkpoint's Ed25519 signature, its key id) and tlog-checkpoint
  (origin, size, base64 root hash);
* C2SP tlog-tiles: ``checkpoint`` at the root, tile paths ``tile/<L>/<N>[.p/<W>]`` with
  ``<N>`` in x-prefixed 3-digit groups, partial tiles of width ``floor(s / 256**L) mod
  256`` (or the full tile in their place once it exists), entry bundles of big-endian
  uint16 lengths;
* RFC 9162 hashing (leaf prefix 0x00, node prefix 0x01, the split at the largest power
  of two below the size).

It recomputes the root of every checkpoint the bundle published from the tiles alone,
checks each tile against the level below, and reads every leaf from the entry bundles.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from tests.pub_support import (
    make_publisher,
    publication_config,
    start_fake_aggregation,
    wait_for_first_cut,
)
from veritally.publication.app import start_publication

# -- a reader from the specifications --------------------------------------------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right)


def tile_index(n: int) -> str:
    """``<N>``: zero-padded 3-digit path elements, all but the last prefixed with x."""
    digits = f"{n:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


@dataclass(frozen=True)
class SignedCheckpoint:
    origin: str
    size: int
    root: bytes


def open_checkpoint(note: bytes, vkey: str) -> SignedCheckpoint:
    """Verify a signed note by the key ``<name>+<hex key id>+<base64(0x01 || key)>`` and
    parse the checkpoint in it."""
    name, key_id_hex, key_b64 = vkey.split("+", 2)  # base64 may hold "+" too
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01  # Ed25519
    public_key = raw[1:]
    key_id = _sha256(name.encode() + b"\n" + b"\x01" + public_key)[:4]
    assert key_id.hex() == key_id_hex
    text, _, signatures = note.partition(b"\n\n")
    text += b"\n"  # the signed text ends with its newline
    verified = False
    for line in signatures.decode().splitlines():
        dash, signer, blob = line.split(" ")
        assert dash == "\u2014"
        sig = base64.b64decode(blob)
        if signer == name and sig[:4] == key_id:
            nacl.signing.VerifyKey(public_key).verify(text, sig[4:])
            verified = True
    assert verified, "no signature by the log's key"
    origin, size, root_b64 = text.decode().splitlines()[:3]
    return SignedCheckpoint(origin=origin, size=int(size), root=base64.b64decode(root_b64))


class TiledLog:
    """The tiles and entries of one tree size, read from a directory."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size

    def _file(self, kind: str, n: int, width: int) -> bytes:
        full = self.root / "tile" / kind / tile_index(n)
        if width < 256:
            partial = Path(f"{full}.p") / str(width)
            if partial.exists():
                return partial.read_bytes()
            # Gone once the full tile exists: its first `width` items are the same.
        return full.read_bytes()

    def hashes(self, level: int) -> list[bytes]:
        """Every hash at tile level ``level``: MTH of the full subtrees of 256**level."""
        count = self.size >> (8 * level)
        out: list[bytes] = []
        for n in range((count + 255) // 256):
            width = min(256, count - 256 * n)
            data = self._file(str(level), n, width)[: 32 * width]
            assert len(data) == 32 * width
            out += [data[i : i + 32] for i in range(0, len(data), 32)]
        return out

    def entries(self) -> list[bytes]:
        out: list[bytes] = []
        for n in range((self.size + 255) // 256):
            width = min(256, self.size - 256 * n)
            data = self._file("entries", n, width)
            pos = 0
            bundle: list[bytes] = []
            while pos < len(data):
                length = int.from_bytes(data[pos : pos + 2], "big")
                bundle.append(data[pos + 2 : pos + 2 + length])
                pos += 2 + length
            assert pos == len(data)
            out += bundle[:width]
        return out

    def levels(self) -> list[list[bytes]]:
        """The hashes of every tile level that has any."""
        out = []
        level = 0
        while self.size >> (8 * level):
            out.append(self.hashes(level))
            level += 1
        return out

    def root_from_tiles(self) -> bytes:
        """RFC 9162 MTH of the tree, each full aligned subtree of 256**L leaves (L >= 1)
        taken from level L's tiles, every other node hashed from the leaf hashes."""
        levels = self.levels()

        def mth(lo: int, hi: int) -> bytes:
            n = hi - lo
            for level in range(len(levels) - 1, 0, -1):
                span = 1 << (8 * level)
                if n == span and lo % span == 0:
                    return levels[level][lo // span]
            if n == 1:
                return levels[0][lo]
            k = 1 << ((n - 1).bit_length() - 1)
            return node_hash(mth(lo, lo + k), mth(lo + k, hi))

        return mth(0, self.size)


def perfect_root(hashes: list[bytes]) -> bytes:
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def mth_of_leaves(leaf_hashes: list[bytes]) -> bytes:
    """RFC 9162 MTH straight from the leaf hashes."""
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = 1 << ((len(leaf_hashes) - 1).bit_length() - 1)
    return node_hash(mth_of_leaves(leaf_hashes[:k]), mth_of_leaves(leaf_hashes[k:]))


def test_the_readers_tile_index_is_the_specs() -> None:
    assert tile_index(1234067) == "x001/x234/067"
    assert tile_index(5) == "005"
    assert tile_index(1000) == "x001/000"


# -- the bundle our publisher writes -----------------------------------------------------


async def test_a_reader_written_from_the_specs_reads_every_checkpoint_tile_and_leaf(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(70)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    sizes = []
    try:
        await wait_for_first_cut(service, tmp_path / "bundle")
        # Sizes with partial tiles at levels 0 and 1, a cut that fills level-0 tiles
        # (their partial tiles go), one that ends exactly at a full tile, and enough
        # leaves for full tiles at level 1.
        for n in (150, 300, 7, 65_536 - 531 - 1, 600):
            fake.fake.add(n)
            sizes.append((await service.follower.cut_once()).tree_size)
        store_leaves = service.engine.store.leaves(0, sizes[-1])
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    bundle = tmp_path / "bundle"
    vkey = publisher.signer.verifier().key_string()
    assert 65_536 in sizes  # a tree of a full level-1 tile and a level-2 tile of width 1

    newest = open_checkpoint((bundle / "checkpoint").read_bytes(), vkey)
    assert newest.size == sizes[-1]
    log = TiledLog(bundle, newest.size)
    # Every leaf from the entry bundles, each the leaf hash in its level-0 tile.
    entries = log.entries()
    assert entries == store_leaves
    levels = log.levels()
    assert levels[0] == [leaf_hash(e) for e in entries]
    # Every hash of a level-L tile is the root of a full tile of the level below.
    for level in range(1, len(levels)):
        below = levels[level - 1]
        assert levels[level] == [
            perfect_root(below[i : i + 256]) for i in range(0, len(below) - 255, 256)
        ]
    assert log.root_from_tiles() == newest.root == mth_of_leaves(levels[0])

    # Every checkpoint ever published, read as its readers read it (their partial tiles,
    # or the full ones that replaced them).
    for size_file in sorted((bundle / "checkpoints").iterdir(), key=lambda p: int(p.name)):
        signed = open_checkpoint(size_file.read_bytes(), vkey)
        assert signed.size == int(size_file.name)
        older = TiledLog(bundle, signed.size)
        assert older.root_from_tiles() == signed.root
        assert older.entries() == store_leaves[: signed.size]
