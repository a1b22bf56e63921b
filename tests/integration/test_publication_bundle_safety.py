"""The bundle directory is written safely and its pages always fit a reader.

Attacks on a real publication service (real SQLite, a real aggregation server on a
socket) writing its bundle:

* someone with write access to the bundle directory plants symlinks in it, hoping that
  publication writes through them (outside the bundle, or their content under our name);
* a restrictive umask makes the bundle unreadable by the web server that serves it;
* large leaves make pages larger than the SDK reads, and heartbeat cuts rewrite a large
  tail page every interval until the disk fills.
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
from veritally.publication.app import PublicationService, start_publication
from veritally.publication.bundle import MAX_LEAF_PAGE_BYTES, UnsafeBundlePathError
from veritally_client._bundle import _leaf_pages
from veritally_client._gen.veritally.v1 import acta_pb2

# Bytes of each large leaf: three fit a page, a fourth does not.
_LARGE = 300_000
# What the reader is told it may read in one file here: twice the writer's page cap.
_READER_LIMIT = 2 * MAX_LEAF_PAGE_BYTES


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


def _large_leaf(sequence: int) -> bytes:
    leaf = acta_pb2.LogLeaf.FromString(acta_leaf(sequence, f"L{sequence:06d}/P"))
    leaf.acta_record.acta.image_sha256 = bytes(_LARGE)  # a large leaf of any kind
    return leaf.SerializeToString(deterministic=True)


def _sizes(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


async def test_large_leaves_never_make_a_bundle_page_larger_than_a_reader_reads(
    running: Running,
) -> None:
    fake = running.fake.fake
    for _ in range(20):
        fake.leaves.append(_large_leaf(len(fake.leaves)))
    row = await running.service.follower.cut_once()
    leaves_dir = running.bundle / "leaves"
    assert max(p.stat().st_size for p in leaves_dir.iterdir()) <= MAX_LEAF_PAGE_BYTES
    # The SDK's reader, limited to twice the cap per file, reads every leaf back.
    read = [
        leaf for page in _leaf_pages(running.bundle, row.tree_size, _READER_LIMIT) for leaf in page
    ]
    assert read == running.service.engine.store.leaves(0, row.tree_size)


async def test_heartbeat_cuts_over_large_leaves_do_not_rewrite_pages_or_fill_the_disk(
    running: Running,
) -> None:
    fake = running.fake.fake
    for _ in range(20):
        fake.leaves.append(_large_leaf(len(fake.leaves)))
    await running.service.follower.cut_once()
    leaves_dir = running.bundle / "leaves"
    full_pages = {k: v for k, v in _sizes(leaves_dir).items() if "-" not in k}
    log_bytes = sum((leaves_dir / name).stat().st_size for name in full_pages)
    for _ in range(10):  # heartbeat cuts: one small cut leaf each
        row = await running.service.follower.cut_once()
    now = _sizes(leaves_dir)
    assert {k: now[k] for k in full_pages} == full_pages  # written once, never again
    on_disk = sum(p.stat().st_size for p in leaves_dir.iterdir())
    # The full pages, plus at most the newest tail and the one before it.
    assert on_disk <= log_bytes + 2 * MAX_LEAF_PAGE_BYTES
    read = [
        leaf for page in _leaf_pages(running.bundle, row.tree_size, _READER_LIMIT) for leaf in page
    ]
    assert len(read) == row.tree_size
