"""Offline verification of a static bundle directory (docs/bundle-format.md).

A bundle is what the publisher writes for CDNs and mirrors::

    latest                     JSON pointer to the newest cut
    cuts/<n>.cut               serialized SignedCut of every cut n
    checkpoints/<tree size>    signed notes
    results/<sha256 hex>       results blobs
    leaves/<start>.binpb       full GetLeavesResponse pages of the log, chained
    leaves/<start>-<count>.binpb  the tail page of one tree size
    trust-root/v<N>.binpb      every trust root version
    election/definition.binpb  the election definition

Nothing in it is trusted; :func:`verify_bundle`:

1. follows the bundle's trust root versions from the pinned one (each update signed by
   the keys of the version before);
2. reads the election definition;
3. verifies every cut file from 1 to the cut ``latest`` names, each on its own
   (signature, last leaf, results digest, binding to the definition), and that cut n is
   in file n; files of newer cuts are ignored (a cut being written or mirrored: its file
   lands before ``latest`` moves);
4. recounts every leaf page: the root at each cut's tree size must be that cut's signed
   root (so every cut is a prefix of the newest one: no fork inside the bundle), and the
   results of every cut are recomputed from the acta records and compared with the
   signed digests.

Freshness is not judged (a bundle may be an archive); the newest cut time is reported.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from veritally_client._config import ClientConfig
from veritally_client._election import ElectionIndex
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import log_pb2, publication_pb2
from veritally_client._recount import Recounter, RecountReport
from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import CutVerifier, SignedCutBytes, VerifiedCut

__all__ = ["BundleReport", "verify_bundle"]

_FORMAT = "veritally-bundle/2"
# Archives of the first format (fixed 1024-leaf pages named by start and count) still
# verify: only the page names differ.
_FORMAT_1 = "veritally-bundle/1"
# A pointer file is a few hundred bytes; refuse to parse anything much larger.
_MAX_POINTER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class BundleReport:
    """What an offline bundle verification established.

    Attributes:
        latest: the newest cut, verified.
        cuts: every cut of the bundle, verified, in order.
        recount: the recount of every leaf (every cut's results recomputed and matched).
        trust_root: the trust root version the cuts were verified with.
    """

    latest: VerifiedCut
    cuts: tuple[VerifiedCut, ...]
    recount: RecountReport
    trust_root: TrustedRoot


def _read(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise MalformedDataError(f"{path} is {size} bytes, at most {limit}")
        return path.read_bytes()
    except FileNotFoundError as e:
        raise MalformedDataError(f"the bundle has no {path.name} where expected ({path})") from e


def _pointer(root: Path) -> dict[str, Any]:
    raw = _read(root / "latest", _MAX_POINTER_BYTES)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedDataError("bundle 'latest' is not JSON") from e
    if not isinstance(doc, dict) or doc.get("format") not in (_FORMAT, _FORMAT_1):
        raise MalformedDataError(f"bundle 'latest' is not {_FORMAT}")
    return doc


def _page(path: Path, limit: int) -> publication_pb2.GetLeavesResponse:
    resp = publication_pb2.GetLeavesResponse()
    try:
        resp.ParseFromString(_read(path, limit))
    except DecodeError as e:
        raise MalformedDataError(f"{path} does not parse") from e
    return resp


def _fixed_leaf_pages(root: Path, size: int, page: int, limit: int) -> Iterator[list[bytes]]:
    """Pages of the first format: ``page`` leaves each, named by start and count."""
    start = 0
    while start < size:
        count = min(page, size - start)
        path = root / "leaves" / f"{start}-{count}.binpb"
        resp = _page(path, limit)
        if len(resp.leaves) != count:
            raise MalformedDataError(f"{path} holds {len(resp.leaves)} leaves, not {count}")
        yield list(resp.leaves)
        start += count


def _leaf_pages(root: Path, size: int, limit: int) -> Iterator[list[bytes]]:
    """The first ``size`` leaves: full pages ``leaves/<start>.binpb``, each starting where
    the one before ended (its ``tree_size``), then the tail page of ``size`` if the full
    pages end before it. A full page past ``size`` gives only the leaves below it."""
    start = 0
    while start < size:
        path = root / "leaves" / f"{start}.binpb"
        if not path.is_file():
            tail = root / "leaves" / f"{start}-{size - start}.binpb"
            resp = _page(tail, limit)
            if len(resp.leaves) != size - start:
                raise MalformedDataError(
                    f"{tail} holds {len(resp.leaves)} leaves, not {size - start}"
                )
            yield list(resp.leaves)
            return
        resp = _page(path, limit)
        # A page that holds nothing, or says it ends elsewhere, would stall or skew the
        # walk: refuse it.
        if not resp.leaves or resp.tree_size != start + len(resp.leaves):
            raise MalformedDataError(f"{path} is not the page of leaves from {start}")
        leaves = list(resp.leaves[: size - start])
        yield leaves
        start += len(leaves)


def verify_bundle(
    path: Path,
    *,
    trust_root: TrustedRoot,
    config: ClientConfig = ClientConfig(),  # noqa: B008  # frozen, so sharing is safe
    now: dt.datetime | None = None,
) -> BundleReport:
    """Verify a static bundle directory offline, every cut and every leaf.

    Args:
        path: the bundle directory (e.g. an rsync or HTTP mirror).
        trust_root: the pinned trust root.
        config: limits (message and results sizes).
        now: the time to check trust root expiry against (default: now).

    Returns:
        The report; ``report.latest`` is the newest verified cut.

    Raises:
        VerificationError: (a subclass naming the failure) if anything does not verify.
        TrustRootError: if a trust root update in the bundle does not verify.
    """
    root_dir = Path(path)
    now = now or dt.datetime.now(dt.UTC)
    pointer = _pointer(root_dir)
    limit = config.max_message_bytes
    # (1) trust root updates published in the bundle
    trusted_root = trust_root
    versions = pointer.get("trust_root_versions")
    if isinstance(versions, int):
        for version in range(trust_root.version + 1, versions + 1):
            doc = _read(root_dir / "trust-root" / f"v{version}.binpb", limit)
            trusted_root = trusted_root.update(doc, now=now)
    verifier = CutVerifier(trust_root=trusted_root, config=config)
    # (2) the election definition
    election = ElectionIndex.from_bytes(_read(root_dir / "election" / "definition.binpb", limit))
    # (3) every cut up to the one `latest` names, each on its own. A cut file newer than
    # `latest` is a cut being written (its file lands before `latest` moves) or mirrored:
    # it is not published yet, so it is not read.
    newest = pointer.get("cut_number")
    if not isinstance(newest, int) or isinstance(newest, bool) or newest < 1:
        raise MalformedDataError("bundle 'latest' has no valid cut_number")
    cuts: list[VerifiedCut] = []
    for number in range(1, newest + 1):
        signed = log_pb2.SignedCut()
        try:
            signed.ParseFromString(_read(root_dir / "cuts" / f"{number}.cut", limit))
        except DecodeError as e:
            raise MalformedDataError(f"cuts/{number}.cut does not parse") from e
        cut = verifier.verify_offline(
            SignedCutBytes(
                checkpoint=signed.checkpoint,
                cut_leaf=signed.cut_leaf,
                inclusion_proof=tuple(signed.inclusion_proof),
                results=signed.results,
            ),
            definition_sha256=election.definition_sha256,
        )
        if cut.cut_number != number:
            raise MalformedDataError(f"cuts/{number}.cut holds cut {cut.cut_number}")
        cuts.append(cut.with_election(election))
    latest = cuts[-1]
    # (4) every leaf: each cut's root on the way, every cut's results recomputed
    if pointer["format"] == _FORMAT_1:
        page = pointer.get("leaf_page_size")
        if not isinstance(page, int) or page < 1:
            raise MalformedDataError("'latest' has no valid leaf_page_size")
        pages = _fixed_leaf_pages(root_dir, latest.tree_size, page, limit)
    else:
        pages = _leaf_pages(root_dir, latest.tree_size, limit)
    recounter = Recounter(
        election=election,
        tree_size=latest.tree_size,
        root_hash=latest.root_hash,
        signed_roots={c.tree_size: c.root_hash for c in cuts},
    )
    for leaves in pages:
        recounter.feed(leaves)
    report = recounter.finish()
    return BundleReport(latest=latest, cuts=tuple(cuts), recount=report, trust_root=trusted_root)
