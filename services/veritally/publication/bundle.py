"""The static bundle: every cut as immutable files, a C2SP tiled log, and two pointers.

Layout (docs/bundle-format.md)::

    <bundle>/
      checkpoint                      the newest signed note (replaced atomically)
      latest                          JSON pointer to the newest cut (replaced atomically)
      cuts/<cut number>.cut           serialized veritally.v1.SignedCut
      checkpoints/<tree size>         the signed note, exact bytes
      results/<sha256 hex>            serialized Results blob, or ResultsSummary
      tile/<L>/<N>[.p/<W>]            C2SP tlog-tiles Merkle tree tiles
      tile/entries/<N>[.p/<W>]        C2SP tlog-tiles entry bundles (the leaves)
      trust-root/v<N>.binpb           serialized veritally.v1.TrustRoot, every version
      election/definition.binpb       serialized veritally.v1.ElectionDefinition

Every file except ``checkpoint`` and ``latest`` is written once under a name that fixes
its content, via a temporary file and a rename, so a reader (an HTTP server, a CDN, an
rsync mirror) never sees a partial file and caches can keep them forever. Which tiles a
tree size has, their names and their bytes come from the SDK's tile module
(:func:`veritally_client.protocol.tiles_between`), the one its reader uses.

A cut writes, in this order: its results (and the summary its cut record signs) and
checkpoint files, the entry bundles and
tiles its tree has that the previous one did not, its cut file, then ``checkpoint`` and
``latest``; so everything a pointer names exists when it changes. Only then are the
partial tiles that a full tile of this cut replaces removed (a reader that misses one
reads the full tile, as the spec says).

The writer trusts nothing in the directory that someone else with write access may have
put there: directories are created with :data:`DIR_MODE`, files with :data:`FILE_MODE`,
whatever the umask; every path below the bundle root is opened relative to a directory
descriptor with ``O_NOFOLLOW``, so a symlink planted in the bundle is never written
through (the writer replaces it, or refuses if it is a directory where a file belongs,
or a top-level directory); temporary files are created with ``O_EXCL`` in the directory
of their final name and renamed over it.

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
from veritally.publication.errors import (
    ForkRefusedError,
    StoreIntegrityError,
    UnsafeBundlePathError,
)
from veritally.publication.published import Published, note_checkpoint
from veritally.publication.store import CutRow, PublicationStore
from veritally_client.protocol import (
    TILE_HEIGHT,
    TileRef,
    encode_entry_bundle,
    parse_cut_leaf,
    tile_hashes,
    tiles_between,
)
from veritally_client.protocol.pb import log_pb2

__all__ = [
    "BUNDLE_FORMAT",
    "DIR_MODE",
    "FILE_MODE",
    "BundleRecord",
    "BundleWriter",
    "UnsafeBundlePathError",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "veritally-bundle/3"
#: Directories: the web server that serves the bundle must list and traverse them; only
#: publication's user may add, replace or remove names in them.
DIR_MODE = 0o755
#: Files: world-readable on purpose (the bundle is public), written only by publication.
FILE_MODE = 0o644
#: Largest ``latest`` or checkpoint file read back: both are a few hundred bytes.
_MAX_POINTER_BYTES = 64 * 1024
#: Largest cut file read back (a SignedCut holds a results blob of a few hundred KiB).
_MAX_CUT_BYTES = 64 * 1024 * 1024
#: The directories under the root, opened at start: one that is a symlink stops it.
_SUBDIRS = ("cuts", "checkpoints", "results", "tile", "trust-root", "election")
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW


class _Dir:
    """The bundle root and the directories below it as descriptors opened without
    following symlinks: a name swapped for a symlink later changes nothing for this
    process.

    The top-level directories are opened at start, and one that is not a directory stops
    the writer. The directories of the tiled log (``tile/0/x001``, ``tile/0/005.p`` ...)
    are made when first written to; a symlink or file planted at one of those names is
    replaced by a real directory, as a planted file name is by the real file.
    """

    def __init__(self, root: Path) -> None:
        # The root itself is the operator's choice (it may be a symlink to a volume);
        # everything below it is opened relative to it.
        if not root.exists():
            root.mkdir(parents=True)
            root.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds: dict[str, int] = {}
        for name in _SUBDIRS:
            self.fds[name] = self._subdir(self.fd, name, name, replace=False)

    def _subdir(self, parent: int, name: str, relative: str, *, replace: bool) -> int:
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not replace:
                raise UnsafeBundlePathError(
                    e.errno, f"{self.root / relative} is not a directory (a planted symlink?)"
                ) from e
            log.warning("replacing %s, which is not a directory", self.root / relative)
            os.unlink(name, dir_fd=parent)
            os.mkdir(name, DIR_MODE, dir_fd=parent)
            created = True
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        if created:
            os.fchmod(fd, DIR_MODE)  # mkdir's mode is masked by the umask
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        os.close(self.fd)

    def _make_dir(self, relative: str) -> int:
        """Descriptor of the directory ``relative``, made if missing."""
        fd = self.fds.get(relative)
        if fd is None:
            head, sep, name = relative.rpartition("/")
            parent = self._make_dir(head) if sep else self.fd
            fd = self.fds[relative] = self._subdir(parent, name, relative, replace=True)
        return fd

    def _find_dir(self, relative: str) -> int | None:
        """Descriptor of the directory ``relative``, None if it is not one."""
        fd = self.fds.get(relative)
        if fd is not None:
            return fd
        head, sep, name = relative.rpartition("/")
        parent = self._find_dir(head) if sep else self.fd
        if parent is None:
            return None
        try:
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        self.fds[relative] = fd
        return fd

    def where(self, relative: str) -> tuple[int, str]:
        """(directory descriptor, name) of a path relative to the root, making the
        directory if it is missing."""
        head, sep, name = relative.rpartition("/")
        return (self._make_dir(head) if sep else self.fd), name

    def lookup(self, relative: str) -> tuple[int | None, str]:
        """As :meth:`where`, but the descriptor is None if the directory is absent."""
        head, sep, name = relative.rpartition("/")
        return (self._find_dir(head) if sep else self.fd), name

    def kind(self, relative: str) -> int | None:
        """``st_mode`` of a name (not following symlinks), None if absent."""
        dir_fd, name = self.lookup(relative)
        if dir_fd is None:
            return None
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

    def has_file(self, relative: str) -> bool:
        """Whether a regular file has that name (written before: its name fixes its
        content)."""
        mode = self.kind(relative)
        return mode is not None and stat.S_ISREG(mode)

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
        dir_fd, name = self.lookup(relative)
        if dir_fd is None:
            return None
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
        return os.listdir(self.fds[subdir])

    def remove_dir(self, relative: str) -> None:
        """Remove the directory ``relative`` and the files in it (anything else at that
        name is removed too; what cannot be removed is left)."""
        parent, name = self.lookup(relative)
        if parent is None:
            return
        fd = self.fds.pop(relative, None)
        if fd is not None:
            os.close(fd)
        try:
            fd = os.open(name, _DIR_OPEN, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # not ours: it goes too
                os.unlink(name, dir_fd=parent)
            elif e.errno != errno.ENOENT:
                raise
            return
        try:
            for entry in os.listdir(fd):
                with contextlib.suppress(OSError):  # a directory planted inside stays
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent)


class BundleWriter:
    """Writes cuts into a bundle directory."""

    def __init__(self, root: Path) -> None:
        """Write under ``root`` (created if missing).

        Raises:
            UnsafeBundlePathError: if a top-level subdirectory of the bundle is a symlink.
            OSError: if the directory cannot be created or read.
        """
        self.root = root
        self.dir = _Dir(root)
        # The tree size whose tiles this process wrote. From 0 at start, the first cut
        # checks every tile name (a stat each; only missing ones are written), so a
        # bundle of an older format, or one a crash left behind, gets every tile.
        self._tiled_size = 0

    def close(self) -> None:
        """Close the directory descriptors."""
        self.dir.close()

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
        """Write one cut's files, then point ``checkpoint`` and ``latest`` at it.

        Args:
            store: where the leaves and the tree's hashes come from.
            cut: the cut (already committed).
            results: its results blob.
            trust_root_versions: how many trust root versions the bundle holds.

        Raises:
            TamperedDataError: if a leaf in the store does not hash to its node (nothing
                of this cut's tiles from that leaf on is written then, nor its pointers).
            StoreIntegrityError: if the store lacks a leaf or a node of the tree.
            OSError: if a file cannot be written.
        """
        size = cut.tree_size
        digest_hex = hashlib.sha256(results).hexdigest()
        self.dir.write_once(f"results/{digest_hex}", results)
        summary_sha256 = parse_cut_leaf(cut.cut_leaf).summary_sha256
        summary = store.results(summary_sha256) if summary_sha256 else None
        if summary is not None:
            # Named by its digest like the results: immutable, shared by heartbeats.
            self.dir.write_once(f"results/{summary_sha256.hex()}", summary)
        self.dir.write_once(f"checkpoints/{size}", cut.checkpoint)
        written = tiles_between(min(self._tiled_size, size), size)
        for ref in written:
            if not self.dir.has_file(ref.path):  # written once: no need to read it again
                self.dir.write_once(ref.path, _tile_bytes(store, ref))
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
            **({"summary": f"results/{summary_sha256.hex()}"} if summary is not None else {}),
            "trust_root_versions": trust_root_versions,
            "trust_root": f"trust-root/v{trust_root_versions}.binpb",
            "election_definition": "election/definition.binpb",
        }
        # ``checkpoint`` first: a reader that read ``latest`` then finds a checkpoint at
        # least as new, and one reading only ``checkpoint`` (generic tlog tooling) finds
        # every tile of it already there.
        self.dir.write("checkpoint", cut.checkpoint)
        self.dir.write("latest", (json.dumps(latest, indent=2) + "\n").encode())
        self._tiled_size = max(self._tiled_size, size)
        # Partial tiles a full one of this cut replaces: a reader of an older tree that
        # misses one reads the full tile (tlog-tiles allows removing them then).
        for ref in written:
            if ref.full:
                self.dir.remove_dir(f"{ref.path}.p")


def _tile_bytes(store: PublicationStore, ref: TileRef) -> bytes:
    """The bytes of one tile or entry bundle of the store's tree."""
    if ref.entries:
        leaves = store.leaves(ref.first, ref.width)  # each checked against its node
        if len(leaves) != ref.width:
            raise StoreIntegrityError(
                f"the store has {len(leaves)} of the {ref.width} leaves from {ref.first}"
            )
        return encode_entry_bundle(leaves)
    # Level L of the tiles holds the complete subtrees of 256**L leaves: the store's
    # nodes of height 8L.
    level = TILE_HEIGHT * ref.level
    return tile_hashes(store.perfect_hashes(level, ref.first, ref.first + ref.width))


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
