"""The bundle directory is written safely and its pages always fit a reader.

Attacks on a real publication service (real SQLite, a real aggregation server on a
socket) writing its bundle:

* someone with write access to the bundle directory plants symlinks in it, hoping that
  publication writes through them (outside the bundle, or their content under our name);
* a restrictive umask makes the bundle unreadable by the web server that serves it;
* large leaves make entry bundles larger than the SDK reads (or than a tlog-tiles entry
  can be), and heartbeat cuts rewrite large partial bundles every interval until the
  disk fills.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pub_support import (
    RunningFake,
    acta_leaf,
    make_publisher,
    publication_config,
    start_fake_aggregation,
    wait_for_first_cut,
)
from veritally import bounds
from veritally.publication.app import PublicationService, start_publication
from veritally.publication.bundle import UnsafeBundlePathError
from veritally.publication.errors import UpstreamDataError
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client.protocol import DirectorySource, TiledTree, parse_checkpoint

# Image bytes that make a leaf just under the longest leaf publication logs.
_LARGE = bounds.MAX_LEAF_BYTES - 200
# What the reader is told it may read in one file here: the largest entry bundle of
# leaves at the bound (256 of them, each with its 2-byte length).
_READER_LIMIT = 256 * (2 + bounds.MAX_LEAF_BYTES)


@dataclass
class Running:
    fake: RunningFake
    service: PublicationService
    bundle: Path


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    service = await start_publication(
        publication_config(tmp_path, make_publisher(tmp_path), fake.target)
    )
    try:
        await wait_for_first_cut(service, tmp_path / "bundle")
        yield Running(fake, service, tmp_path / "bundle")
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_directory_symlink_planted_in_the_bundle_is_not_written_through(
    running: Running, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (running.bundle / "cuts").rename(running.bundle / "cuts-moved")
    (running.bundle / "cuts").symlink_to(outside)
    running.fake.fake.add(3)
    await running.service.follower.cut_once()
    assert list(outside.iterdir()) == []
    assert (running.bundle / "cuts-moved" / "2.cut").is_file()


async def test_file_symlink_planted_at_a_bundle_name_is_replaced_not_trusted(
    running: Running, tmp_path: Path
) -> None:
    forged = tmp_path / "forged"
    forged.write_bytes(b"a checkpoint the publisher never signed\n")
    running.fake.fake.add(3)
    size = 11 + 3 + 1  # the next cut's tree size
    (running.bundle / f"checkpoints/{size}").symlink_to(forged)
    (running.bundle / "latest").unlink()
    (running.bundle / "latest").symlink_to(forged)
    row = await running.service.follower.cut_once()
    assert row.tree_size == size
    assert forged.read_bytes() == b"a checkpoint the publisher never signed\n"
    for name in (f"checkpoints/{size}", "latest"):
        assert not (running.bundle / name).is_symlink()
    assert (running.bundle / f"checkpoints/{size}").read_bytes() == row.checkpoint


async def test_refuses_to_start_on_a_bundle_whose_subdirectory_is_a_symlink(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "results").symlink_to(outside)
    fake = await start_fake_aggregation()
    try:
        with pytest.raises(UnsafeBundlePathError):
            await start_publication(
                publication_config(tmp_path, make_publisher(tmp_path), fake.target)
            )
    finally:
        await fake.stop()
    assert list(outside.iterdir()) == []


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


async def test_bundle_stays_readable_by_its_web_server_under_a_restrictive_umask(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    with _umask(0o077):
        service = await start_publication(
            publication_config(tmp_path, make_publisher(tmp_path), fake.target)
        )
        try:
            await wait_for_first_cut(service, tmp_path / "bundle")
        finally:
            await service.stop(grace=0.1)
            await fake.stop()
    bundle = tmp_path / "bundle"
    for path in [bundle, *bundle.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path


def _large_leaf(sequence: int, image: int = _LARGE) -> bytes:
    leaf = acta_pb2.LogLeaf.FromString(acta_leaf(sequence, f"L{sequence:06d}/P"))
    leaf.acta_record.acta.image_sha256 = bytes(image)  # a large leaf of any kind
    return leaf.SerializeToString(deterministic=True)


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


def _tree(bundle: Path, tree_size: int) -> TiledTree:
    """The bundle's tiled tree at ``tree_size``, authenticated against its checkpoint."""
    note = (bundle / f"checkpoints/{tree_size}").read_bytes()
    checkpoint = parse_checkpoint(note.split(b"\n\n", 1)[0].decode() + "\n")
    return TiledTree(
        DirectorySource(bundle),
        size=tree_size,
        root_hash=checkpoint.root_hash,
        max_entry_bundle_bytes=_READER_LIMIT,
    )


async def test_leaves_at_the_bound_never_make_an_entry_bundle_larger_than_a_reader_reads(
    running: Running,
) -> None:
    fake = running.fake.fake
    for _ in range(300):  # a full bundle of leaves at the bound, and then some
        fake.leaves.append(_large_leaf(len(fake.leaves)))
    row = await running.service.follower.cut_once()
    entries = running.bundle / "tile" / "entries"
    assert max(p.stat().st_size for p in entries.rglob("*") if p.is_file()) <= _READER_LIMIT
    # The SDK's reader, limited to the largest bundle, reads every leaf back.
    read = [leaf for bundle in _tree(running.bundle, row.tree_size).leaves() for leaf in bundle]
    assert read == running.service.engine.store.leaves(0, row.tree_size)


async def test_leaf_longer_than_the_bound_is_refused_before_it_is_logged(
    running: Running,
) -> None:
    fake = running.fake.fake
    before = running.service.engine.store.tree_size
    fake.leaves.append(_large_leaf(len(fake.leaves), image=bounds.MAX_LEAF_BYTES))
    with pytest.raises(UpstreamDataError):
        await running.service.follower.cut_once()
    assert running.service.engine.store.tree_size == before


async def test_heartbeat_cuts_over_large_leaves_do_not_rewrite_tiles_or_fill_the_disk(
    running: Running,
) -> None:
    fake = running.fake.fake
    for _ in range(20):
        fake.leaves.append(_large_leaf(len(fake.leaves)))
    first = await running.service.follower.cut_once()
    tiles = running.bundle / "tile"
    before = _files(tiles)
    for _ in range(10):  # heartbeat cuts: one small cut leaf each
        row = await running.service.follower.cut_once()
    now = _files(tiles)
    assert {k: now[k] for k in before} == before  # written once, never again
    # Each heartbeat adds one partial bundle and one partial tile of its own size: the
    # large leaves are rewritten into each partial bundle, but a partial bundle holds
    # fewer than 256 leaves, and all go once the full bundle exists.
    added = sum((tiles / k).stat().st_size for k in now.keys() - before.keys())
    assert added <= 10 * (256 * (2 + bounds.MAX_LEAF_BYTES) + 256 * 32)
    read = [leaf for bundle in _tree(running.bundle, row.tree_size).leaves() for leaf in bundle]
    assert len(read) == row.tree_size > first.tree_size


async def test_partial_tiles_replaced_by_a_full_one_are_removed(running: Running) -> None:
    fake = running.fake.fake
    partial = running.bundle / "tile" / "entries" / "000.p"
    sizes = []
    for n in (50, 100):  # two more cuts inside the first tile
        fake.add(n)
        sizes.append((await running.service.follower.cut_once()).tree_size)
    # Kept for the readers of each size while the tile is not full.
    assert sorted(int(p.name) for p in partial.iterdir()) == [11, *sizes]
    fake.add(150)
    sizes.append((await running.service.follower.cut_once()).tree_size)
    assert sizes[-1] > 256
    assert (running.bundle / "tile/entries/000").is_file()
    assert not partial.exists()
    assert not (running.bundle / "tile" / "0" / "000.p").exists()
    # A reader of the older sizes reads the full tile instead.
    for size in sizes:
        assert len([x for b in _tree(running.bundle, size).leaves() for x in b]) == size


async def test_symlink_planted_at_a_tile_directory_is_replaced_not_written_through(
    running: Running, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # Names the next cut makes: the level-1 tiles and the second partial tile.
    (running.bundle / "tile" / "1").symlink_to(outside)
    (running.bundle / "tile" / "0" / "001.p").symlink_to(outside)
    running.fake.fake.add(250)
    row = await running.service.follower.cut_once()
    assert row.tree_size == 11 + 250 + 1
    assert list(outside.iterdir()) == []
    for name in ("tile/1", "tile/0/001.p"):
        directory = running.bundle / name
        assert directory.is_dir()
        assert not directory.is_symlink()
    assert (running.bundle / "tile/0/001.p/6").is_file()
    assert (running.bundle / "tile/1/000.p/1").is_file()
    assert len([x for b in _tree(running.bundle, row.tree_size).leaves() for x in b]) == 262


async def test_tile_directory_swapped_for_a_symlink_after_it_was_opened_changes_nothing(
    running: Running, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (running.bundle / "tile" / "0" / "000.p").rename(running.bundle / "moved")
    (running.bundle / "tile" / "0" / "000.p").symlink_to(outside)
    running.fake.fake.add(3)
    row = await running.service.follower.cut_once()
    assert list(outside.iterdir()) == []
    assert (running.bundle / "moved" / str(row.tree_size)).is_file()
