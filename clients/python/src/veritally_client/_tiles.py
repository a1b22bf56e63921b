"""C2SP tlog-tiles: tile paths, tile and entry bundle encodings, and a verifying reader.

A tiled log (https://c2sp.org/tlog-tiles) is a set of static files under a prefix::

    checkpoint                   the newest signed checkpoint (replaced)
    tile/<L>/<N>[.p/<W>]         Merkle tree tiles (immutable)
    tile/entries/<N>[.p/<W>]     entry bundles: the leaves themselves (immutable)

* A tile holds up to 256 consecutive 32-byte hashes. The ``N``-th tile at level ``L``
  holds ``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])`` for ``i`` in
  0..255: leaf hashes at level 0, above that the hash of each *full* tile of the level
  below (a full subtree of ``256**L`` leaves). Nothing else is stored; the 7 levels of
  the tree between two tile levels are hashed back from the tile.
* ``<N>`` is written in 3-digit groups, every group but the last prefixed with ``x``
  (1234067 is ``x001/x234/067``), so that no file name is also a directory name.
* In the tree of size ``s`` the level-``L`` tiles hold ``s >> 8L`` hashes: the full ones,
  and a *partial* tile of width ``W = (s >> 8L) mod 256`` (``.p/<W>``) when ``W`` is not
  zero. There are tiles at every level where ``s >> 8L`` is not zero.
* An entry bundle holds the entries of the level-0 tile of the same index and width,
  each as a big-endian uint16 length then the entry's bytes.
* A log may delete a partial tile once the full tile exists: a reader that misses one
  reads the full tile and takes its first ``W`` hashes (or entries).

The writer (``veritally.publication.bundle``, through :mod:`veritally_client.protocol`)
and the reader share this module: which tiles a tree has (:func:`tiles_between`), their
paths and their encodings are defined once.

:class:`TiledTree` reads a tree whose size and root a verified checkpoint gave, and
trusts no tile until it hashes up to that root:

1. read the right-edge tile of every level (partial, or the first ``W`` hashes of the
   full tile if the partial is gone);
2. fold them into the root (one perfect subtree per set bit of the size, largest first)
   and reject unless it is the signed root: the edge tiles are then authentic;
3. authenticate any other tile, which is full, by its hash: the Merkle root of its 256
   hashes must be the hash at its place in the (authenticated) tile one level up;
4. authenticate an entry bundle by its entries: each entry's leaf hash must be the hash
   at its place in the authenticated level-0 tile.

Proofs (RFC 9162 inclusion and consistency) are then computed from authenticated tiles
through the ``_merkle`` accessor contract, the same code that serves them from the
publisher's store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from veritally_client._errors import BadProofError, MalformedDataError
from veritally_client._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    subtree_hash_from_perfect,
)

__all__ = [
    "MAX_ENTRY_BUNDLE_BYTES",
    "MAX_ENTRY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "DirectorySource",
    "TileCache",
    "TileRef",
    "TileSource",
    "TiledTree",
    "encode_entry_bundle",
    "parse_entry_bundle",
    "parse_tile",
    "tile_hashes",
    "tile_index_path",
    "tiles_between",
]

#: Tree levels one tile spans: a tile is a perfect subtree of height 8.
TILE_HEIGHT = 8
#: Hashes in a full tile, entries in a full entry bundle.
TILE_WIDTH = 1 << TILE_HEIGHT
#: Largest entry an entry bundle can hold: its length is a big-endian uint16.
MAX_ENTRY_BYTES = 0xFFFF
#: Largest valid entry bundle: 256 entries of the largest size, each with its length.
MAX_ENTRY_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)
#: Highest tile level the spec allows (``<L>`` is 0..63).
MAX_LEVEL = 63
#: Level-0 tiles an authenticated tree keeps besides its edge: a reader walks the log in
#: order, so a few suffice; each is 8 KiB of hashes and 8 KiB of the levels above them.
_KEPT_LEAF_TILES = 64
#: Tiles a shared cache keeps (16 KiB each, so 16 MiB at most).
_CACHED_TILES = 1024


def tile_index_path(index: int) -> str:
    """``<N>`` of a tile path: 3-digit groups, all but the last prefixed with ``x``.

    Raises:
        ValueError: if ``index`` is negative.
    """
    if index < 0:
        raise ValueError(f"a tile index is not negative, got {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


@dataclass(frozen=True, slots=True)
class TileRef:
    """One tile or entry bundle of a tree: where it is and which hashes or entries.

    Attributes:
        level: the tile level (0 for entry bundles, which go with the level-0 tiles).
        index: the tile's index in its level.
        width: hashes (or entries) it holds, 1..256.
        entries: True for an entry bundle, False for a tile of hashes.
    """

    level: int
    index: int
    width: int
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL or (self.entries and self.level):
            raise ValueError(f"bad tile level {self.level}")
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"bad tile index {self.index} or width {self.width}")

    @property
    def full(self) -> bool:
        """Whether it holds 256 hashes (its name never changes content, nor goes away)."""
        return self.width == TILE_WIDTH

    @property
    def first(self) -> int:
        """Index, among the hashes of its level (leaves for level 0), of its first one."""
        return self.index * TILE_WIDTH

    @property
    def path(self) -> str:
        """Its path below the log's prefix, e.g. ``tile/0/x001/234.p/17``."""
        return self.full_path + ("" if self.full else f".p/{self.width}")

    @property
    def full_path(self) -> str:
        """The path of the full tile of this index (what replaces a partial one)."""
        kind = "entries" if self.entries else str(self.level)
        return f"tile/{kind}/{tile_index_path(self.index)}"


def _level_count(size: int, level: int) -> int:
    """Hashes at tile level ``level`` in the tree of ``size`` (full subtrees of 256**L)."""
    return size >> (TILE_HEIGHT * level)


def _tile_at(size: int, level: int, index: int, *, entries: bool = False) -> TileRef:
    width = min(TILE_WIDTH, _level_count(size, level) - index * TILE_WIDTH)
    return TileRef(level=level, index=index, width=width, entries=entries)


def tiles_between(old_size: int, new_size: int) -> list[TileRef]:
    """The entry bundles and tiles the tree of ``new_size`` has and that of ``old_size``
    has not (a tile that grew wider is a new file), in write order: entry bundles first,
    then tiles level by level from 0.

    With ``old_size`` 0, every file of the tree. A log writes these for each new tree
    size before it publishes a checkpoint of that size.

    Raises:
        ValueError: if ``not 0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"bad sizes {old_size}, {new_size}")
    out: list[TileRef] = []
    for entries in (True, False):
        level = 0
        while (count := _level_count(new_size, level)) > 0:
            old = _level_count(old_size, level)
            if count > old:
                last = (count - 1) // TILE_WIDTH
                out += [
                    _tile_at(new_size, level, n, entries=entries)
                    for n in range(old // TILE_WIDTH, last + 1)
                ]
            if entries:
                break  # entry bundles go with level 0 only
            level += 1
    return out


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes.

    Raises:
        ValueError: if an entry is longer than :data:`MAX_ENTRY_BYTES` (the writer
            must refuse such an entry before it logs it) or there are more than 256.
    """
    out = bytearray()
    count = 0
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry is at most {MAX_ENTRY_BYTES} bytes, got {len(entry)}")
        out += len(entry).to_bytes(2, "big")
        out += entry
        count += 1
    if count > TILE_WIDTH:
        raise ValueError(f"an entry bundle holds at most {TILE_WIDTH} entries, got {count}")
    return bytes(out)


def parse_entry_bundle(data: bytes, count: int) -> list[bytes]:
    """The ``count`` entries of an entry bundle.

    Raises:
        MalformedDataError: if the bytes are not exactly ``count`` length-prefixed
            entries.
    """
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(entries) == count:
            raise MalformedDataError(f"entry bundle has bytes after its {count} entries")
        if pos + 2 > end:
            raise MalformedDataError("entry bundle ends inside a length prefix")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > end:
            raise MalformedDataError("entry bundle ends inside an entry")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != count:
        raise MalformedDataError(f"entry bundle holds {len(entries)} entries, not {count}")
    return entries


def parse_tile(data: bytes, width: int) -> list[bytes]:
    """The ``width`` hashes of a tile.

    Raises:
        MalformedDataError: if the tile is not exactly ``width`` hashes long.
    """
    if len(data) != width * HASH_SIZE:
        raise MalformedDataError(
            f"a tile of {width} hashes is {width * HASH_SIZE} bytes, got {len(data)}"
        )
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def tile_hashes(hashes: Sequence[bytes]) -> bytes:
    """A tile's bytes: its hashes, concatenated.

    Raises:
        ValueError: if there are not 1..256 hashes of 32 bytes.
    """
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError("a tile is 1..256 hashes of 32 bytes")
    return b"".join(hashes)


class TileSource(Protocol):
    """Where a tiled log's files are read from: a directory today, HTTP next.

    One call: the bytes at a path below the log's prefix, or None if there is none. A
    source judges nothing; :class:`TiledTree` verifies every byte it returns.
    """

    def read(self, path: str, limit: int) -> bytes | None:
        """The bytes at ``path`` ('/'-separated, relative), None if there is no such file.

        Raises:
            MalformedDataError: if it is larger than ``limit`` bytes.
            TransportError: if it could not be read (a remote source).
        """
        ...


class DirectorySource:
    """A tiled log (or a whole bundle) in a local directory, e.g. a mirror's copy."""

    def __init__(self, root: Path) -> None:
        """Read below ``root``."""
        self.root = Path(root)

    def read(self, path: str, limit: int) -> bytes | None:
        """See :meth:`TileSource.read`.

        Raises:
            ValueError: if ``path`` is absolute or leaves the directory (a caller bug:
                the names read are computed, never taken from the files).
            MalformedDataError: if the file is larger than ``limit`` bytes.
            OSError: if it exists but cannot be read.
        """
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a relative bundle path: {path!r}")
        target = self.root.joinpath(*parts)
        try:
            with target.open("rb") as f:
                data = f.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError as e:
            raise MalformedDataError(f"{target} is a directory, not a file") from e
        if len(data) > limit:
            raise MalformedDataError(f"{target} is larger than {limit} bytes")
        return data


class _Tile:
    """A tile's hashes and the levels of its subtree above them (``rows[r]`` holds the
    hashes of its aligned subtrees of ``2**r`` hashes; ``rows[8][0]`` is a full tile's
    Merkle root)."""

    __slots__ = ("rows",)

    def __init__(self, hashes: list[bytes]) -> None:
        rows = [hashes]
        row = hashes
        while len(row) > 1:
            row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
            rows.append(row)
        self.rows = rows


@dataclass(frozen=True, slots=True)
class _View:
    """A tile as one tree size sees it: its first ``width`` hashes (a full tile read in
    place of a gone partial one holds more)."""

    tile: _Tile
    width: int

    def node(self, height: int, index: int) -> bytes:
        if (index + 1) << height > self.width:
            raise ValueError(f"node {index} at height {height} is outside the tile")
        return self.tile.rows[height][index]

    def root(self) -> bytes:
        return self.tile.rows[TILE_HEIGHT][0]


class TileCache:
    """Parsed tiles by path, shared by the trees of one log (tile files never change
    content). It holds bytes and hashes only: every tree authenticates what it uses."""

    def __init__(self, max_tiles: int = _CACHED_TILES) -> None:
        """Keep at most ``max_tiles`` tiles (16 KiB each), least recently used first out."""
        self._tiles: OrderedDict[str, _Tile] = OrderedDict()
        self._max = max_tiles

    def get(self, path: str) -> _Tile | None:
        """The parsed tile at ``path``, None if it is not kept."""
        tile = self._tiles.get(path)
        if tile is not None:
            self._tiles.move_to_end(path)
        return tile

    def put(self, path: str, tile: _Tile) -> None:
        """Keep ``tile`` (parsed from the bytes at ``path``), dropping the oldest one."""
        self._tiles[path] = tile
        if len(self._tiles) > self._max:
            self._tiles.popitem(last=False)


class TiledTree:
    """The tree of a verified checkpoint, read from its tiles (see the module doc).

    Construct it with the size and root of a checkpoint whose signature was verified; it
    reads and checks the right edge at once, and any other tile when first used.
    """

    def __init__(
        self,
        source: TileSource,
        *,
        size: int,
        root_hash: bytes,
        cache: TileCache | None = None,
        max_entry_bundle_bytes: int = MAX_ENTRY_BUNDLE_BYTES,
    ) -> None:
        """Read and authenticate the right-edge tiles of the tree of ``size``.

        Args:
            source: where the files are.
            size: the verified tree size.
            root_hash: the verified root hash.
            cache: tiles shared with other trees of the same log (optional).
            max_entry_bundle_bytes: bytes. Largest entry bundle read (a valid one is at
                most :data:`MAX_ENTRY_BUNDLE_BYTES`).

        Raises:
            BadProofError: if the tiles do not hash to ``root_hash``.
            MalformedDataError: if a tile is missing or not a whole number of hashes.
            ValueError: if ``size`` is negative or ``root_hash`` is not 32 bytes.
        """
        if size < 0 or len(root_hash) != HASH_SIZE:
            raise ValueError("a tree has a non-negative size and a 32-byte root")
        self._source = source
        self._size = size
        self._root = root_hash
        self._cache = cache if cache is not None else TileCache()
        self._max_bundle = max_entry_bundle_bytes
        # Authenticated tiles: every edge and upper tile, and the last level-0 ones used.
        self._trusted: dict[tuple[int, int], _View] = {}
        self._leaf_tiles: OrderedDict[int, _View] = OrderedDict()
        self._check_edge()

    @property
    def size(self) -> int:
        """The tree size."""
        return self._size

    @property
    def root_hash(self) -> bytes:
        """The signed root these tiles hash to."""
        return self._root

    # -- reading and authenticating -------------------------------------------------

    def _load(self, ref: TileRef) -> _Tile | None:
        path = ref.path
        tile = self._cache.get(path)
        if tile is None:
            data = self._source.read(path, ref.width * HASH_SIZE)
            if data is None:
                return None
            tile = _Tile(parse_tile(data, ref.width))
            self._cache.put(path, tile)
        return tile

    def _read(self, level: int, index: int) -> _View:
        """The tile as this tree size sees it, not yet authenticated."""
        ref = _tile_at(self._size, level, index)
        tile = self._load(ref)
        if tile is None and not ref.full:
            # The partial tile may be gone once the full one exists.
            tile = self._load(TileRef(level=level, index=index, width=TILE_WIDTH))
        if tile is None:
            raise MalformedDataError(f"the log has no {ref.path} (nor its full tile)")
        return _View(tile, ref.width)

    def _check_edge(self) -> None:
        # (1) the right-edge tile of every level, (2) folded into the root
        edge: dict[tuple[int, int], _View] = {}
        blocks: list[bytes] = []
        level = 0
        while _level_count(self._size, level):
            level += 1
        for lvl in reversed(range(level)):
            count = _level_count(self._size, lvl)
            width = count % TILE_WIDTH
            if not width:
                continue  # no partial tile: the bits of this level are zero
            view = self._read(lvl, count // TILE_WIDTH)
            edge[(lvl, count // TILE_WIDTH)] = view
            pos = 0
            for height in reversed(range(TILE_HEIGHT)):
                if width >> height & 1:
                    blocks.append(view.node(height, pos >> height))
                    pos += 1 << height
        root = CompactRange(size=self._size, hashes=blocks).root() if blocks else EMPTY_ROOT
        if root != self._root:
            raise BadProofError(
                f"the tiles of the tree of size {self._size} do not hash to its signed root"
            )
        self._trusted.update(edge)

    def _tile(self, level: int, index: int) -> _View:
        """An authenticated tile of this tree (step 3 for the ones not on the edge)."""
        view = self._trusted.get((level, index))
        if view is None and level == 0:
            view = self._leaf_tiles.get(index)
            if view is not None:
                self._leaf_tiles.move_to_end(index)
        if view is not None:
            return view
        if (index + 1) * TILE_WIDTH > _level_count(self._size, level):
            raise ValueError(f"tile {index} of level {level} is outside the tree")
        # (3) a full tile inside the tree: its root is a hash in the tile above
        view = self._read(level, index)
        above = self._tile(level + 1, index // TILE_WIDTH)
        if view.root() != above.node(0, index % TILE_WIDTH):
            raise BadProofError(
                f"{TileRef(level=level, index=index, width=TILE_WIDTH).path} does not "
                "hash to its place in the tile above"
            )
        if level:
            self._trusted[(level, index)] = view
        else:
            self._leaf_tiles[index] = view
            if len(self._leaf_tiles) > _KEPT_LEAF_TILES:
                self._leaf_tiles.popitem(last=False)
        return view

    def _perfect(self, height: int, index: int) -> bytes:
        """Hash of the perfect subtree of ``2**height`` leaves at ``index``."""
        level, rest = divmod(height, TILE_HEIGHT)
        first = index << rest  # among the hashes of that tile level
        view = self._tile(level, first // TILE_WIDTH)
        return view.node(rest, (first % TILE_WIDTH) >> rest)

    # -- the tree -------------------------------------------------------------------

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Merkle tree hash of leaves ``[start, end)`` (the ``_merkle`` accessor contract).

        Raises:
            ValueError: if the range is outside the tree or not aligned.
            BadProofError, MalformedDataError: if a tile it needs does not verify.
        """
        if end > self._size:
            raise ValueError(f"leaf range [{start}, {end}) is outside a tree of {self._size}")
        return subtree_hash_from_perfect(start, end, self._perfect)

    def leaf_hash(self, index: int) -> bytes:
        """The authenticated hash of leaf ``index``.

        Raises:
            ValueError: if ``index`` is outside the tree.
            BadProofError, MalformedDataError: if its tile does not verify.
        """
        if not 0 <= index < self._size:
            raise ValueError(f"leaf {index} is outside a tree of {self._size}")
        return self._perfect(0, index)

    def root_at(self, size: int) -> bytes:
        """The root of the tree's first ``size`` leaves, from its tiles.

        Raises:
            ValueError: if ``size`` is negative or larger than the tree.
            BadProofError, MalformedDataError: if a tile it needs does not verify.
        """
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside a tree of {self._size}")
        return self.subtree_hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of leaf ``index`` in this tree.

        Raises:
            ValueError: if ``index`` is outside the tree.
            BadProofError, MalformedDataError: if a tile it needs does not verify.
        """
        return inclusion_proof(index, self._size, self.subtree_hash)

    def consistency_proof(self, size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``size`` to this one.

        Raises:
            ValueError: if ``size`` is negative or larger than the tree.
            BadProofError, MalformedDataError: if a tile it needs does not verify.
        """
        return consistency_proof(size, self._size, self.subtree_hash)

    # -- entries --------------------------------------------------------------------

    def entry_bundle(self, index: int) -> list[bytes]:
        """The authenticated entries of bundle ``index``: leaves ``256 * index`` on, as
        many as the tree holds there (from the full bundle if the partial one is gone).

        Raises:
            ValueError: if the bundle is outside the tree.
            BadProofError: if an entry is not the leaf the signed tree holds there.
            MalformedDataError: if the bundle is missing or does not parse.
        """
        if not 0 <= index * TILE_WIDTH < self._size:
            raise ValueError(f"entry bundle {index} is outside a tree of {self._size}")
        ref = _tile_at(self._size, 0, index, entries=True)
        data = self._source.read(ref.path, self._max_bundle)
        if data is not None:
            return self._check_entries(ref, parse_entry_bundle(data, ref.width))
        if not ref.full:
            data = self._source.read(ref.full_path, self._max_bundle)
        if data is None:
            raise MalformedDataError(f"the log has no {ref.path} (nor its full bundle)")
        return self._check_entries(ref, parse_entry_bundle(data, TILE_WIDTH)[: ref.width])

    def partial_entry_bundle(self) -> list[bytes] | None:
        """The authenticated entries of this tree's own partial bundle (the last one),
        None if the tree ends at a full bundle or that file is gone.

        Raises:
            BadProofError, MalformedDataError: as :meth:`entry_bundle`.
        """
        if not self._size % TILE_WIDTH:
            return None
        ref = _tile_at(self._size, 0, self._size // TILE_WIDTH, entries=True)
        data = self._source.read(ref.path, self._max_bundle)
        if data is None:
            return None
        return self._check_entries(ref, parse_entry_bundle(data, ref.width))

    def _check_entries(self, ref: TileRef, entries: list[bytes]) -> list[bytes]:
        # (4) each entry is the leaf the authenticated level-0 tile holds there
        view = self._tile(0, ref.index)
        for i, entry in enumerate(entries):
            if leaf_hash(entry) != view.node(0, i):
                raise BadProofError(
                    f"entry {ref.first + i} of {ref.path} is not the leaf the signed tree "
                    "holds there"
                )
        return entries

    def leaves(self) -> Iterator[list[bytes]]:
        """Every leaf of the tree, one authenticated entry bundle at a time.

        Raises:
            BadProofError, MalformedDataError: as :meth:`entry_bundle`.
        """
        for index in range((self._size + TILE_WIDTH - 1) // TILE_WIDTH):
            yield self.entry_bundle(index)
