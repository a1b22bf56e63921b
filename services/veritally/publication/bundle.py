"""The static bundle: every cut as immutable files plus an atomically replaced ``latest``.

Layout (docs/bundle-format.md)::

    <bundle>/
      latest                          JSON pointer to the newest cut (replaced atomically)
      cuts/<cut number>.cut           serialized veritally.v1.SignedCut
      checkpoints/<tree size>         the signed note, exact bytes
      results/<sha256 hex>            serialized Results blob
      leaves/<start>.binpb            a full page: serialized veritally.v1.GetLeavesResponse
      leaves/<start>-<count>.binpb    the tail page of one tree size
      trust-root/v<N>.binpb           serialized veritally.v1.TrustRoot, every version
      election/definition.binpb       serialized veritally.v1.ElectionDefinition

Every file except ``latest`` is written once under a name that fixes its content, via a
temporary file and a rename, so a reader (an HTTP server, a CDN, an rsync mirror) never
sees a partial file and caches can keep them forever.

Leaf pages hold at most :data:`LEAF_PAGE_SIZE` leaves and :data:`MAX_LEAF_PAGE_BYTES`
bytes: a page is *full* when it has that many leaves or when the next leaf would not fit,
and a full page is written exactly once, when the log first goes past it. What follows
the last full page is the *tail*, written as a page of its own for each cut that ends in
it (so it is bounded by the same caps) and removed once two newer cuts have replaced it.

The writer trusts nothing in the directory that someone else with write access may have
put there: directories are created with :data:`DIR_MODE`, files with :data:`FILE_MODE`,
whatever the umask; every path below the bundle root is opened relative to a directory
descriptor with ``O_NOFOLLOW``, so a symlink planted in the bundle is never written
through (the writer replaces it, or refuses if it is a directory); temporary files are
created with ``O_EXCL`` in the directory of their final name and renamed over it.

:class:`BundleRecord` reads back what the bundle says was published, for the fork
guard (:mod:`veritally.publication.published`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from google.protobuf.message import DecodeError

from veritally.publication.cutter import signed_cut_pb
from veritally.publication.errors import ForkRefusedError, UnsafeBundlePathError
from veritally.publication.published import Published, note_checkpoint
from veritally.publication.store import CutRow, PublicationStore
from veritally_client.protocol.pb import log_pb2, publication_pb2

__all__ = [
    "BUNDLE_FORMAT",
    "DIR_MODE",
    "FILE_MODE",
    "LEAF_PAGE_SIZE",
    "MAX_LEAF_PAGE_BYTES",
    "BundleRecord",
    "BundleWriter",
    "UnsafeBundlePathError",
    "full_page_name",
    "leaf_page_name",
    "page_layout",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "veritally-bundle/2"
#: Most leaves in one page: ~0.4 MiB of ordinary acta records (~400 bytes each) per file,
#: a good size for HTTP caches, and 500k leaves make ~500 files.
LEAF_PAGE_SIZE = 1024
#: Most bytes in one page file (a serialized GetLeavesResponse). With ordinary records
#: the leaf count binds first; the byte cap binds for large leaves, and bounds what every
#: cut writes for its tail page. 1 MiB is 64 times below what the SDK reads in one file
#: (``ClientConfig.max_message_bytes``, 64 MiB). A page always takes its first leaf, so
#: a page is larger than this only if one leaf is, and leaves are bounded by ingest's
#: maximum acta size, far below the reader's limit.
MAX_LEAF_PAGE_BYTES = 1024 * 1024
#: Directories: the web server that serves the bundle must list and traverse them; only
#: publication's user may add, replace or remove names in them.
DIR_MODE = 0o755
#: Files: world-readable on purpose (the bundle is public), written only by publication.
FILE_MODE = 0o644
#: Bytes of a ``tree_size`` field at most (tag and a 64-bit varint), counted in each page.
_TREE_SIZE_FIELD_BYTES = 11
#: How many tail pages stay after the newest cut's: the previous one, for a reader that
#: read the previous ``latest`` just before it was replaced.
_KEEP_OLD_TAILS = 1
#: Largest ``latest`` or checkpoint file read back: both are a few hundred bytes.
_MAX_POINTER_BYTES = 64 * 1024
#: Largest cut file read back (a SignedCut holds a results blob of a few hundred KiB).
_MAX_CUT_BYTES = 64 * 1024 * 1024
_SUBDIRS = ("cuts", "checkpoints", "results", "leaves", "trust-root", "election")
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def leaf_page_name(start: int, count: int) -> str:
    """Relative path of the tail page holding leaves ``[start, start + count)``."""
    return f"leaves/{start}-{count}.binpb"


def full_page_name(start: int) -> str:
    """Relative path of the full page that starts at leaf ``start``."""
    return f"leaves/{start}.binpb"


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def page_layout(
    sizes: Sequence[int],
    start: int,
    *,
    page_size: int = LEAF_PAGE_SIZE,
    max_bytes: int = MAX_LEAF_PAGE_BYTES,
) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """Split leaves ``[start, start + len(sizes))`` (of the given byte lengths) into pages.

    Returns ``(full, tail)``: the full pages as ``(start, count)``, then the tail (None
    when the leaves end exactly at a full page). A page is full at ``page_size`` leaves,
    or when the next leaf would take it past ``max_bytes``; a page holds at least one leaf.
    """
    full: list[tuple[int, int]] = []
    first, count, used = start, 0, _TREE_SIZE_FIELD_BYTES
    for i, length in enumerate(sizes):
        framed = 1 + _varint_len(length) + length
        if count == page_size or (count and used + framed > max_bytes):
            full.append((first, count))
            first, count, used = start + i, 0, _TREE_SIZE_FIELD_BYTES
        count += 1
        used += framed
    if count == page_size:
        return [*full, (first, count)], None
    return full, ((first, count) if count else None)


class _Dir:
    """The bundle root and its subdirectories as descriptors opened without following
    symlinks: a name swapped for a symlink later changes nothing for this process."""

    def __init__(self, root: Path) -> None:
        # The root itself is the operator's choice (it may be a symlink to a volume);
        # everything below it is opened relative to it.
        if not root.exists():
            root.mkdir(parents=True)
            root.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.subdirs = {name: self._subdir(name) for name in _SUBDIRS}

    def _subdir(self, name: str) -> int:
        try:
            os.mkdir(name, DIR_MODE, dir_fd=self.fd)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=self.fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeBundlePathError(
                    e.errno, f"{self.root / name} is not a directory (a planted symlink?)"
                ) from e
            raise
        if created:
            os.fchmod(fd, DIR_MODE)  # mkdir's mode is masked by the umask
        return fd

    def close(self) -> None:
        for fd in self.subdirs.values():
            os.close(fd)
        os.close(self.fd)

    def where(self, relative: str) -> tuple[int, str]:
        """(directory descriptor, name) of a path relative to the root."""
        head, sep, name = relative.partition("/")
        return (self.subdirs[head], name) if sep else (self.fd, head)

    def kind(self, relative: str) -> int | None:
        """``st_mode`` of a name (not following symlinks), None if absent."""
        dir_fd, name = self.where(relative)
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None

    def write(self, relative: str, data: bytes) -> None:
        """Write ``data`` under ``relative`` atomically: an O_EXCL|O_NOFOLLOW temporary
        file in the same directory, fsynced, then renamed over the name."""
        dir_fd, name = self.where(relative)
        tmp = f".tmp-{secrets.token_hex(8)}"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)  # the umask must not decide who reads
                f.write(data)
                f.flush()
                # On disk before the rename: a checkpoint read back after a power loss
                # must be the signed note, never an empty file.
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise

    def write_once(self, relative: str, data: bytes) -> None:
        """Write ``relative`` unless a regular file has that name (its name fixes its
        content); anything else there (a planted symlink) is replaced, not followed."""
        mode = self.kind(relative)
        if mode is not None and stat.S_ISREG(mode):
            return
        if mode is not None:
            if stat.S_ISDIR(mode):
                raise UnsafeBundlePathError(
                    errno.EISDIR, f"{self.root / relative} is a directory, not a bundle file"
                )
            log.warning("replacing %s, which is not a regular file", self.root / relative)
        self.write(relative, data)

    def read(self, relative: str, limit: int) -> bytes | None:
        """The bytes of a regular file, None if absent or a symlink (the writer never
        makes one, so it holds nothing publication wrote; the next write replaces it).

        Raises:
            ForkRefusedError: if it is not a regular file or larger than ``limit``.
        """
        dir_fd, name = self.where(relative)
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                log.warning("ignoring %s, a symlink planted in the bundle", self.root / relative)
                return None
            raise
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                raise ForkRefusedError(f"bundle {relative} is not a file of at most {limit} B")
            return f.read(limit + 1)

    def names(self, subdir: str) -> list[str]:
        return os.listdir(self.subdirs[subdir])

    def unlink(self, relative: str) -> None:
        dir_fd, name = self.where(relative)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


class BundleWriter:
    """Writes cuts into a bundle directory."""

    def __init__(self, root: Path) -> None:
        """Write under ``root`` (created if missing), resuming the leaf page layout
        from the full pages already there.

        Raises:
            UnsafeBundlePathError: if a subdirectory of the bundle is a symlink.
            OSError: if the directory cannot be created or read.
        """
        self.root = root
        self.dir = _Dir(root)
        self.page_start = self._resume_page_start()
        self._tails: list[str] = []

    def close(self) -> None:
        """Close the directory descriptors."""
        self.dir.close()

    def _resume_page_start(self) -> int:
        starts = [int(n[:-6]) for n in self.dir.names("leaves") if _is_full_page_name(n)]
        if not starts:
            return 0
        last = max(starts)
        raw = self.dir.read(full_page_name(last), MAX_LEAF_PAGE_BYTES + _MAX_POINTER_BYTES)
        try:
            page = publication_pb2.GetLeavesResponse.FromString(raw or b"")
        except DecodeError as e:
            raise UnsafeBundlePathError(
                errno.EINVAL, f"{self.root / full_page_name(last)} does not parse"
            ) from e
        return last + len(page.leaves)

    def write_static(self, *, trust_roots: Sequence[bytes], definition: bytes | None) -> None:
        """Write the trust root versions and the election definition (once each)."""
        for version, doc in enumerate(trust_roots, start=1):
            self.dir.write_once(f"trust-root/v{version}.binpb", doc)
        if definition is not None:
            self.dir.write_once("election/definition.binpb", definition)

    def write_cut(
        self,
        store: PublicationStore,
        cut: CutRow,
        *,
        results: bytes,
        trust_root_versions: int,
    ) -> None:
        """Write one cut's files, then point ``latest`` at it.

        Args:
            store: where the leaves come from.
            cut: the cut (already committed).
            results: its results blob.
            trust_root_versions: how many trust root versions the bundle holds.

        Raises:
            TamperedDataError: if a leaf in the store does not hash to its node (nothing
                of this cut's pages is written then).
            OSError: if a file cannot be written.
        """
        digest_hex = hashlib.sha256(results).hexdigest()
        self.dir.write_once(f"results/{digest_hex}", results)
        self.dir.write_once(f"checkpoints/{cut.tree_size}", cut.checkpoint)
        size = cut.tree_size
        tail = self._write_pages(store, size)
        signed = signed_cut_pb(cut, results).SerializeToString(deterministic=True)
        self.dir.write_once(f"cuts/{cut.cut_number}.cut", signed)
        latest = {
            "format": BUNDLE_FORMAT,
            "cut_number": cut.cut_number,
            "tree_size": size,
            "acta_records": cut.acta_records,
            "cut_time": cut.cut_time,
            "cut": f"cuts/{cut.cut_number}.cut",
            "checkpoint": f"checkpoints/{size}",
            "results": f"results/{digest_hex}",
            "leaf_page_size": LEAF_PAGE_SIZE,
            "leaf_page_max_bytes": MAX_LEAF_PAGE_BYTES,
            "leaf_tail_page": tail,
            "trust_root_versions": trust_root_versions,
            "trust_root": f"trust-root/v{trust_root_versions}.binpb",
            "election_definition": "election/definition.binpb",
        }
        self.dir.write("latest", (json.dumps(latest, indent=2) + "\n").encode())
        self._prune_tails(tail)

    def _write_pages(self, store: PublicationStore, size: int) -> str | None:
        """Full pages completed up to ``size`` (each once), then the tail's page."""
        if size <= self.page_start:
            return None  # an older cut re-written: its leaves are in full pages already
        full, tail = page_layout(store.leaf_sizes(self.page_start, size), self.page_start)
        for start, count in full:
            name = full_page_name(start)
            mode = self.dir.kind(name)
            if mode is None or not stat.S_ISREG(mode):  # written once, never rewritten
                self.dir.write_once(name, _page(store, start, count))
            self.page_start = start + count
        if tail is None:
            return None
        name = leaf_page_name(*tail)
        self.dir.write_once(name, _page(store, *tail))
        return name

    def _prune_tails(self, newest: str | None) -> None:
        if newest is not None and newest not in self._tails:
            self._tails.append(newest)
        while len(self._tails) > _KEEP_OLD_TAILS + (newest is not None):
            self.dir.unlink(self._tails.pop(0))


def _is_full_page_name(name: str) -> bool:
    return name.endswith(".binpb") and name[:-6].isdigit() and name[:-6].isascii()


def _page(store: PublicationStore, start: int, count: int) -> bytes:
    body = publication_pb2.GetLeavesResponse(
        leaves=store.leaves(start, count), tree_size=start + count
    )
    return body.SerializeToString(deterministic=True)


class BundleRecord:
    """The checkpoints a bundle directory says were published (a PublishedRecord).

    Anything there that cannot be read as a checkpoint of this log makes it refuse
    (:class:`ForkRefusedError`): publication cannot rule out having published it.
    """

    def __init__(self, writer: BundleWriter, *, origin: str) -> None:
        """Read the bundle ``writer`` writes, for the log ``origin``."""
        self.dir = writer.dir
        self.origin = origin

    def latest(self) -> Published | None:
        """The checkpoint ``latest`` points to (two small reads)."""
        raw = self.dir.read("latest", _MAX_POINTER_BYTES)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            size, number = doc["tree_size"], doc["cut_number"]
        except (ValueError, TypeError, KeyError) as e:
            raise ForkRefusedError("bundle 'latest' does not parse") from e
        if not isinstance(size, int) or not isinstance(number, int) or size < 1 or number < 1:
            raise ForkRefusedError("bundle 'latest' has no valid tree_size and cut_number")
        found = self._checkpoint(f"checkpoints/{size}", number)
        if found is None:
            raise ForkRefusedError(f"bundle 'latest' names checkpoints/{size}, which is absent")
        return found

    def newest(self) -> Published | None:
        """The newest of ``latest``, the largest checkpoint file and the highest cut."""
        found = [self.latest()]
        sizes = [int(n) for n in self.dir.names("checkpoints") if n.isdigit() and n.isascii()]
        if sizes:
            found.append(self._checkpoint(f"checkpoints/{max(sizes)}", 0))
        numbers = [
            int(n[:-4])
            for n in self.dir.names("cuts")
            if n.endswith(".cut") and n[:-4].isdigit() and n[:-4].isascii()
        ]
        if numbers:
            found.append(self._cut(max(numbers)))
        known = [p for p in found if p is not None]
        if not known:
            return None
        # The largest tree size, and the highest cut number seen with any of them.
        top = max(known, key=lambda p: p.tree_size)
        number = max(p.cut_number for p in known)
        if number == top.cut_number:
            return top
        return Published(
            tree_size=top.tree_size,
            root_hash=top.root_hash,
            cut_number=number,
            where=f"{top.where} (and bundle cuts/{number}.cut)",
        )

    def _parse(self, note: bytes, where: str, number: int) -> Published:
        try:
            checkpoint = note_checkpoint(note)
        except ValueError as e:
            raise ForkRefusedError(f"{where} is not a signed checkpoint") from e
        if checkpoint.origin != self.origin:
            raise ForkRefusedError(
                f"{where} is a checkpoint of {checkpoint.origin!r}, this log is {self.origin!r}"
            )
        return Published(
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            cut_number=number,
            where=where,
        )

    def _checkpoint(self, relative: str, number: int) -> Published | None:
        note = self.dir.read(relative, _MAX_POINTER_BYTES)
        return None if note is None else self._parse(note, f"bundle {relative}", number)

    def _cut(self, number: int) -> Published | None:
        raw = self.dir.read(f"cuts/{number}.cut", _MAX_CUT_BYTES)
        if raw is None:
            return None
        try:
            signed = log_pb2.SignedCut.FromString(raw)
        except DecodeError as e:
            raise ForkRefusedError(f"bundle cuts/{number}.cut does not parse") from e
        return self._parse(signed.checkpoint, f"bundle cuts/{number}.cut", number)
