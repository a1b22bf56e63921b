"""The static bundle: every cut as immutable files plus an atomically replaced ``latest``.

Layout (docs/bundle-format.md)::

    <bundle>/
      latest                          JSON pointer to the newest cut (replaced atomically)
      cuts/<cut number>.cut           serialized veritally.v1.SignedCut
      checkpoints/<tree size>         the signed note, exact bytes
      results/<sha256 hex>            serialized Results blob
      leaves/<start>-<count>.binpb    serialized veritally.v1.GetLeavesResponse
      trust-root/v<N>.binpb           serialized veritally.v1.TrustRoot, every version
      election/definition.binpb       serialized veritally.v1.ElectionDefinition

Every file except ``latest`` is written once under a name that fixes its content, via a
temporary file and a rename, so a reader (an HTTP server, a CDN, an rsync mirror) never
sees a partial file and caches can keep them forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from veritally.publication.cutter import signed_cut_pb
from veritally.publication.store import CutRow, PublicationStore
from veritally_client._gen.veritally.v1 import publication_pb2

__all__ = ["BUNDLE_FORMAT", "LEAF_PAGE_SIZE", "BundleWriter", "leaf_page_name"]

BUNDLE_FORMAT = "veritally-bundle/1"
#: Leaves per full page: ~0.5 MiB of acta records per file, a good size for HTTP caches,
#: and 500k leaves make ~500 files.
LEAF_PAGE_SIZE = 1024


def leaf_page_name(start: int, count: int) -> str:
    """Relative path of the page holding leaves ``[start, start + count)``."""
    return f"leaves/{start}-{count}.binpb"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # served by a web server: world-readable on purpose
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_once(path: Path, data: bytes) -> None:
    if not path.exists():
        _write_atomic(path, data)


class BundleWriter:
    """Writes cuts into a bundle directory."""

    def __init__(self, root: Path, *, page_size: int = LEAF_PAGE_SIZE) -> None:
        """Write under ``root`` (created if missing)."""
        self.root = root
        self.page_size = page_size
        root.mkdir(parents=True, exist_ok=True)

    def write_static(self, *, trust_roots: Sequence[bytes], definition: bytes | None) -> None:
        """Write the trust root versions and the election definition (once each)."""
        for version, doc in enumerate(trust_roots, start=1):
            _write_once(self.root / f"trust-root/v{version}.binpb", doc)
        if definition is not None:
            _write_once(self.root / "election/definition.binpb", definition)

    def write_cut(
        self,
        store: PublicationStore,
        cut: CutRow,
        *,
        previous_size: int,
        results: bytes,
        trust_root_versions: int,
    ) -> None:
        """Write one cut's files, then point ``latest`` at it.

        Args:
            store: where the leaves come from.
            cut: the cut (already committed).
            previous_size: tree size of the cut before it (0 for the first).
            results: its results blob.
            trust_root_versions: how many trust root versions the bundle holds.
        """
        digest_hex = hashlib.sha256(results).hexdigest()
        _write_once(self.root / f"results/{digest_hex}", results)
        _write_once(self.root / f"checkpoints/{cut.tree_size}", cut.checkpoint)
        # Leaf pages: every full page completed since the previous cut, then the tail.
        size = cut.tree_size
        page = self.page_size
        tail = ""
        for start in range(previous_size - previous_size % page, size, page):
            count = min(page, size - start)
            name = leaf_page_name(start, count)
            if count < page:
                tail = name
            path = self.root / name
            if not path.exists():
                body = publication_pb2.GetLeavesResponse(
                    leaves=store.leaves(start, count), tree_size=start + count
                )
                _write_atomic(path, body.SerializeToString(deterministic=True))
        signed = signed_cut_pb(cut, results).SerializeToString(deterministic=True)
        _write_once(self.root / f"cuts/{cut.cut_number}.cut", signed)
        latest = {
            "format": BUNDLE_FORMAT,
            "cut_number": cut.cut_number,
            "tree_size": size,
            "acta_records": cut.acta_records,
            "cut_time": cut.cut_time,
            "cut": f"cuts/{cut.cut_number}.cut",
            "checkpoint": f"checkpoints/{size}",
            "results": f"results/{digest_hex}",
            "leaf_page_size": page,
            "full_leaf_pages": size // page,
            "leaf_tail_page": tail or None,
            "trust_root_versions": trust_root_versions,
            "trust_root": f"trust-root/v{trust_root_versions}.binpb",
            "election_definition": "election/definition.binpb",
        }
        _write_atomic(self.root / "latest", (json.dumps(latest, indent=2) + "\n").encode())
