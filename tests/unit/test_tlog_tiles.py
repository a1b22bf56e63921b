"""The SDK's tlog-tiles layer: paths as the spec writes them, proofs from tiles equal to
the proofs of the whole tree, and no tile trusted before it hashes to the signed root.

The tiles are written here the way the publisher writes them (``tiles_between`` at each
new tree size, partial tiles removed once their full tile exists), over an in-memory
``TileSource``: the narrow interface an HTTP source will implement next.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from veritally_client import BadProofError, MalformedDataError
from veritally_client.protocol import (
    MAX_ENTRY_BYTES,
    TILE_WIDTH,
    MemoryTree,
    TiledTree,
    TileRef,
    encode_entry_bundle,
    parse_entry_bundle,
    parse_tile,
    tile_hashes,
    tile_index_path,
    tiles_between,
)

# Tree sizes the log grows through: partial tiles at one, two and three levels, sizes
# just below, at and above a full tile at levels 0 and 1.
SIZES = (1, 2, 255, 256, 257, 511, 4_097, 65_535, 65_536, 65_537, 70_000, 131_329)


class MemorySource:
    """Files in a dict; a missing path is None, as a 404 or an absent file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.reads: list[str] = []

    def read(self, path: str, limit: int) -> bytes | None:
        self.reads.append(path)
        data = self.files.get(path)
        if data is not None and len(data) > limit:
            raise MalformedDataError(f"{path} is over {limit} bytes")
        return data


def _leaf(i: int) -> bytes:
    return b"leaf %d" % i


def _write(source: MemorySource, tree: MemoryTree, old: int, new: int, *, prune: bool) -> None:
    """What the publisher writes when its tree grows from ``old`` to ``new``."""
    refs = tiles_between(old, new)
    for ref in refs:
        if ref.entries:
            data = encode_entry_bundle(_leaf(i) for i in range(ref.first, ref.first + ref.width))
        else:
            span = TILE_WIDTH**ref.level
            data = tile_hashes(
                [
                    tree.subtree_hash(i * span, (i + 1) * span)
                    for i in range(ref.first, ref.first + ref.width)
                ]
            )
        source.files.setdefault(ref.path, data)
    if prune:
        for ref in refs:
            if ref.full:
                for path in [p for p in source.files if p.startswith(f"{ref.path}.p/")]:
                    del source.files[path]


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    tree = MemoryTree()
    for i in range(SIZES[-1]):
        tree.append(_leaf(i))
    return tree


def _grown(tree: MemoryTree, *, prune: bool) -> MemorySource:
    source = MemorySource()
    old = 0
    for size in SIZES:
        _write(source, tree, old, size, prune=prune)
        old = size
    return source


@pytest.fixture(scope="module")
def pruned(tree: MemoryTree) -> MemorySource:
    return _grown(tree, prune=True)


@pytest.fixture(scope="module")
def kept(tree: MemoryTree) -> MemorySource:
    return _grown(tree, prune=False)


# -- the paths and encodings of the spec ---------------------------------------------------


@pytest.mark.parametrize(
    ("index", "path"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),  # the spec's example
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_tile_index_is_written_in_x_prefixed_groups_of_three_digits(index: int, path: str) -> None:
    assert tile_index_path(index) == path


def test_tile_paths_follow_the_spec_grammar() -> None:
    assert TileRef(level=0, index=1234067, width=256).path == "tile/0/x001/x234/067"
    assert TileRef(level=2, index=5, width=17).path == "tile/2/005.p/17"
    assert TileRef(level=0, index=1000, width=1, entries=True).path == "tile/entries/x001/000.p/1"
    assert TileRef(level=0, index=3, width=256, entries=True).path == "tile/entries/003"
    assert TileRef(level=63, index=0, width=1).path == "tile/63/000.p/1"


@pytest.mark.parametrize(
    "bad",
    [
        {"level": 64, "index": 0, "width": 1},
        {"level": -1, "index": 0, "width": 1},
        {"level": 0, "index": -1, "width": 1},
        {"level": 0, "index": 0, "width": 0},  # empty tiles must not be served
        {"level": 0, "index": 0, "width": 257},
        {"level": 1, "index": 0, "width": 1, "entries": True},
    ],
)
def test_tile_outside_the_grammar_is_a_caller_bug(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="bad tile"):
        TileRef(**bad)  # type: ignore[arg-type]


def _layout(size: int) -> list[str]:
    return [r.path for r in tiles_between(0, size) if not r.entries]


def test_tree_of_70000_has_the_tiles_the_spec_lists() -> None:
    # "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1
    # tile, one partial level 1 tile of width 17, and one partial level 2 tile of width 1"
    paths = _layout(70_000)
    level0 = [p for p in paths if p.startswith("tile/0/")]
    assert len(level0) == 274
    assert sum(".p/" not in p for p in level0) == 273
    assert level0[-1] == "tile/0/273.p/112"
    assert [p for p in paths if not p.startswith("tile/0/")] == [
        "tile/1/000",
        "tile/1/001.p/17",
        "tile/2/000.p/1",
    ]


def test_tree_of_256_is_one_full_tile_and_a_level_1_tile_of_width_1() -> None:
    assert _layout(256) == ["tile/0/000", "tile/1/000.p/1"]
    assert [r.path for r in tiles_between(0, 256) if r.entries] == ["tile/entries/000"]


def test_growing_tree_writes_only_the_tiles_it_did_not_have() -> None:
    assert [r.path for r in tiles_between(255, 257)] == [
        "tile/entries/000",
        "tile/entries/001.p/1",
        "tile/0/000",
        "tile/0/001.p/1",
        "tile/1/000.p/1",
    ]
    assert [r.path for r in tiles_between(300, 301)] == ["tile/entries/001.p/45", "tile/0/001.p/45"]
    assert tiles_between(7, 7) == []


def test_entry_bundle_is_big_endian_uint16_lengths_and_entries() -> None:
    data = encode_entry_bundle([b"", b"ab", bytes(300)])
    assert data == b"\x00\x00" + b"\x00\x02ab" + b"\x01\x2c" + bytes(300)
    assert parse_entry_bundle(data, 3) == [b"", b"ab", bytes(300)]


def test_entry_longer_than_a_uint16_length_is_refused_by_the_writer() -> None:
    encode_entry_bundle([bytes(MAX_ENTRY_BYTES)])
    with pytest.raises(ValueError, match="at most 65535 bytes"):
        encode_entry_bundle([bytes(MAX_ENTRY_BYTES + 1)])


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\x00\x05abc", b"\x00\x01a\x00\x01b\x00\x01c", b"\x00\x01a"],
    ids=["cut-length", "cut-entry", "extra-entry", "missing-entry"],
)
def test_rejects_malformed_entry_bundle(data: bytes) -> None:
    with pytest.raises(MalformedDataError):
        parse_entry_bundle(data, 2)


def test_rejects_tile_that_is_not_a_whole_number_of_hashes() -> None:
    with pytest.raises(MalformedDataError):
        parse_tile(bytes(33), 1)


# -- proofs from tiles ----------------------------------------------------------------------


def _indexes(size: int) -> Iterator[int]:
    rng = random.Random(size)
    picks = {0, 1, 255, 256, 257, 65_535, 65_536, size // 3, size // 2, size - 2, size - 1}
    picks |= {rng.randrange(size) for _ in range(8)}
    return (i for i in sorted(picks) if 0 <= i < size)


@pytest.mark.parametrize("source_kind", ["pruned", "kept"])
@pytest.mark.parametrize("size", SIZES)
def test_proofs_from_tiles_are_the_proofs_of_the_tree(
    tree: MemoryTree, source_kind: str, size: int, request: pytest.FixtureRequest
) -> None:
    source: MemorySource = request.getfixturevalue(source_kind)
    tiled = TiledTree(source, size=size, root_hash=tree.root(size))
    for index in _indexes(size):
        assert tiled.inclusion_proof(index) == tree.inclusion_proof(index, size), index
        assert tiled.leaf_hash(index) == tree.leaf_hash(index)
    for old in {1, 2, 255, 256, 257, 65_536, size // 2, size - 1, size}:
        if 0 < old <= size:
            assert tiled.consistency_proof(old) == tree.consistency_proof(old, size), old
            assert tiled.root_at(old) == tree.root(old)


def test_older_tree_reads_the_full_tile_where_its_partial_one_is_gone(
    tree: MemoryTree, pruned: MemorySource
) -> None:
    assert "tile/0/000.p/255" not in pruned.files
    assert "tile/1/000.p/1" not in pruned.files
    before = len(pruned.reads)
    tiled = TiledTree(pruned, size=255, root_hash=tree.root(255))
    assert pruned.reads[before:] == ["tile/0/000.p/255", "tile/0/000"]
    assert tiled.entry_bundle(0) == [_leaf(i) for i in range(255)]
    assert tiled.partial_entry_bundle() is None  # gone: the full bundle holds its leaves


def test_entries_from_bundles_are_every_leaf(tree: MemoryTree, pruned: MemorySource) -> None:
    tiled = TiledTree(pruned, size=70_000, root_hash=tree.root(70_000))
    leaves = [leaf for bundle in tiled.leaves() for leaf in bundle]
    assert leaves == [_leaf(i) for i in range(70_000)]


# -- nothing is trusted before it hashes to the signed root ---------------------------------


def _copy(source: MemorySource) -> MemorySource:
    copy = MemorySource()
    copy.files = dict(source.files)
    return copy


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_rejects_tiles_of_another_root(tree: MemoryTree, kept: MemorySource) -> None:
    with pytest.raises(BadProofError):
        TiledTree(kept, size=70_000, root_hash=tree.root(69_999))


@pytest.mark.parametrize("path", ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"])
def test_rejects_tampered_edge_tile_at_once(
    tree: MemoryTree, kept: MemorySource, path: str
) -> None:
    source = _copy(kept)
    source.files[path] = _flip(source.files[path], 5)
    with pytest.raises(BadProofError):
        TiledTree(source, size=70_000, root_hash=tree.root(70_000))


@pytest.mark.parametrize("path", ["tile/0/017", "tile/1/000"])
def test_rejects_tampered_full_tile_when_it_is_used(
    tree: MemoryTree, kept: MemorySource, path: str
) -> None:
    source = _copy(kept)
    source.files[path] = _flip(source.files[path], 40)
    tiled = TiledTree(source, size=70_000, root_hash=tree.root(70_000))
    with pytest.raises(BadProofError):
        tiled.inclusion_proof(17 * 256 + 1)


def test_rejects_entry_that_is_not_the_signed_leaf(tree: MemoryTree, kept: MemorySource) -> None:
    source = _copy(kept)
    entries = parse_entry_bundle(source.files["tile/entries/004"], TILE_WIDTH)
    entries[9] = b"leaf 999999"
    source.files["tile/entries/004"] = encode_entry_bundle(entries)
    tiled = TiledTree(source, size=70_000, root_hash=tree.root(70_000))
    with pytest.raises(BadProofError):
        tiled.entry_bundle(4)


def test_rejects_full_tile_that_replaces_a_partial_one_with_other_hashes(
    tree: MemoryTree, pruned: MemorySource
) -> None:
    source = _copy(pruned)
    source.files["tile/0/000"] = _flip(source.files["tile/0/000"], 32 * 200)
    with pytest.raises(BadProofError):
        TiledTree(source, size=255, root_hash=tree.root(255)).leaf_hash(200)


@pytest.mark.parametrize(
    ("path", "use"),
    [
        ("tile/0/017", lambda t: t.inclusion_proof(17 * 256)),
        ("tile/1/002.p/1", lambda t: t.root_hash),
        ("tile/entries/004", lambda t: t.entry_bundle(4)),
        ("tile/entries/513.p/1", lambda t: t.entry_bundle(513)),
    ],
)
def test_rejects_log_missing_a_tile_or_bundle(
    tree: MemoryTree, kept: MemorySource, path: str, use: Callable[[TiledTree], object]
) -> None:
    source = _copy(kept)
    del source.files[path]  # none of these has a full tile to fall back to
    size = SIZES[-1]

    def read() -> object:
        return use(TiledTree(source, size=size, root_hash=tree.root(size)))

    with pytest.raises(MalformedDataError):
        read()


def test_rejects_tile_of_the_wrong_length(tree: MemoryTree, kept: MemorySource) -> None:
    source = _copy(kept)
    source.files["tile/0/273.p/112"] += bytes(32)
    with pytest.raises(MalformedDataError):
        TiledTree(source, size=70_000, root_hash=tree.root(70_000))


def test_empty_tree_has_no_tiles(tree: MemoryTree) -> None:
    source = MemorySource()
    tiled = TiledTree(source, size=0, root_hash=MemoryTree().root())
    assert source.reads == []
    assert list(tiled.leaves()) == []
