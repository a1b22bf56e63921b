"""Offline verification of a static bundle (docs/bundle-format.md).

A bundle is what the publisher writes for CDNs and mirrors (format 3)::

    checkpoint                 the newest signed note (C2SP tlog-tiles)
    latest                     JSON pointer to the newest cut
    cuts/<n>.cut               serialized SignedCut of every cut n
    checkpoints/<tree size>    signed notes
    results/<sha256 hex>       results blobs
    tile/<L>/<N>[.p/<W>]       the Merkle tree as C2SP tlog-tiles tiles
    tile/entries/<N>[.p/<W>]   the leaves as C2SP tlog-tiles entry bundles
    trust-root/v<N>.binpb      every trust root version
    election/definition.binpb  the election definition

Formats 1 and 2 held the leaves as ``leaves/`` pages instead of tiles; they are still
read. Everything is read through a :class:`~veritally_client._tiles.TileSource`, so the
same verification can run over a mirror's HTTP origin. Nothing in it is trusted;
:func:`verify_bundle`:

1. reads ``latest``: an untrusted pointer that names the newest published cut and how
   many trust root versions the bundle holds;
2. follows the bundle's trust root versions from the pinned one (each update signed by
   the keys of the version before);
3. reads the election definition;
4. verifies every cut file from 1 to the cut ``latest`` names, each on its own
   (signature, last leaf, results digest, binding to the definition), and that cut n is
   in file n; files of newer cuts are ignored (a cut being written or mirrored: its file
   lands before ``latest`` moves);
5. (format 3) reads the newest cut's tree from its tiles, authenticated against its
   signed root; for every older cut, checks a consistency proof computed from those
   tiles (one that leads to the newest root but not to the older cut's is a fork) and
   that the tiles a reader of that cut reads (its right edge, partial tiles or the full
   ones that replaced them, and its partial entry bundle if still there) hash to its
   root; then checks the root ``checkpoint``: signed by the trust root, not older than the
   cut ``latest`` names, and that same tree or one extending it (from its tiles);
6. recounts every leaf (format 3: from the entry bundles, each entry checked against its
   authenticated level-0 tile): the root at each cut's tree size must be that cut's
   signed root (so every cut is a prefix of the newest one: no fork inside the bundle),
   and the results of every cut are recomputed from the acta records and compared with
   the signed digests.

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

from veritally_client._checkpoint import Checkpoint
from veritally_client._config import ClientConfig
from veritally_client._election import ElectionIndex
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import log_pb2, publication_pb2
from veritally_client._recount import Recounter, RecountReport
from veritally_client._tiles import (
    MAX_ENTRY_BUNDLE_BYTES,
    DirectorySource,
    TileCache,
    TiledTree,
    TileSource,
)
from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import (
    CutVerifier,
    SignedCutBytes,
    VerifiedCut,
    _check_extends,
    _check_same_tree,
)

__all__ = ["BundleReport", "verify_bundle"]

_FORMAT = "veritally-bundle/3"
# Archives of the earlier formats still verify: format 2 held the leaves as protobuf
# pages (full pages named by their first leaf, a tail page per tree size), format 1 as
# fixed 1024-leaf pages named by start and count.
_FORMAT_2 = "veritally-bundle/2"
_FORMAT_1 = "veritally-bundle/1"
_FORMATS = (_FORMAT, _FORMAT_2, _FORMAT_1)
# A pointer file or a checkpoint is a few hundred bytes; refuse to parse anything much
# larger.
_MAX_POINTER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class BundleReport:
    """What an offline bundle verification established.

    Attributes:
        latest: the newest published cut (the one ``latest`` names), verified.
        cuts: every cut up to it, verified, in order.
        recount: the recount of every leaf (every cut's results recomputed and matched).
        trust_root: the trust root version the cuts were verified with.
    """

    latest: VerifiedCut
    cuts: tuple[VerifiedCut, ...]
    recount: RecountReport
    trust_root: TrustedRoot


def _read(source: TileSource, path: str, limit: int) -> bytes:
    data = source.read(path, limit)
    if data is None:
        raise MalformedDataError(f"the bundle has no {path}")
    return data


def _pointer(source: TileSource) -> dict[str, Any]:
    raw = _read(source, "latest", _MAX_POINTER_BYTES)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedDataError("bundle 'latest' is not JSON") from e
    if not isinstance(doc, dict) or doc.get("format") not in _FORMATS:
        raise MalformedDataError(f"bundle 'latest' is not {_FORMAT} (nor an earlier format)")
    return doc


def _page(source: TileSource, path: str, limit: int) -> publication_pb2.GetLeavesResponse:
    resp = publication_pb2.GetLeavesResponse()
    try:
        resp.ParseFromString(_read(source, path, limit))
    except DecodeError as e:
        raise MalformedDataError(f"{path} does not parse") from e
    return resp


def _fixed_leaf_pages(
    source: TileSource, size: int, page: int, limit: int
) -> Iterator[list[bytes]]:
    """Pages of the first format: ``page`` leaves each, named by start and count."""
    start = 0
    while start < size:
        count = min(page, size - start)
        path = f"leaves/{start}-{count}.binpb"
        resp = _page(source, path, limit)
        if len(resp.leaves) != count:
            raise MalformedDataError(f"{path} holds {len(resp.leaves)} leaves, not {count}")
        yield list(resp.leaves)
        start += count


def _leaf_pages(source: TileSource, size: int, limit: int) -> Iterator[list[bytes]]:
    """Pages of the second format, the first ``size`` leaves: full pages
    ``leaves/<start>.binpb``, each starting where the one before ended (its
    ``tree_size``), then the tail page of ``size`` if the full pages end before it. A full
    page past ``size`` gives only the leaves below it."""
    start = 0
    while start < size:
        path = f"leaves/{start}.binpb"
        raw = source.read(path, limit)
        if raw is None:
            tail = f"leaves/{start}-{size - start}.binpb"
            resp = _page(source, tail, limit)
            if len(resp.leaves) != size - start:
                raise MalformedDataError(
                    f"{tail} holds {len(resp.leaves)} leaves, not {size - start}"
                )
            yield list(resp.leaves)
            return
        resp = publication_pb2.GetLeavesResponse()
        try:
            resp.ParseFromString(raw)
        except DecodeError as e:
            raise MalformedDataError(f"{path} does not parse") from e
        # A page that holds nothing, or says it ends elsewhere, would stall or skew the
        # walk: refuse it.
        if not resp.leaves or resp.tree_size != start + len(resp.leaves):
            raise MalformedDataError(f"{path} is not the page of leaves from {start}")
        leaves = list(resp.leaves[: size - start])
        yield leaves
        start += len(leaves)


def _cuts(
    source: TileSource,
    newest: object,
    *,
    verifier: CutVerifier,
    election: ElectionIndex,
    limit: int,
) -> list[VerifiedCut]:
    """Step 4: cuts 1 to ``newest`` (the number ``latest`` names), each verified alone."""
    if not isinstance(newest, int) or isinstance(newest, bool) or newest < 1:
        raise MalformedDataError("bundle 'latest' has no valid cut_number")
    cuts: list[VerifiedCut] = []
    for number in range(1, newest + 1):
        signed = log_pb2.SignedCut()
        try:
            signed.ParseFromString(_read(source, f"cuts/{number}.cut", limit))
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
    return cuts


def _tiled_tree(
    source: TileSource, cuts: list[VerifiedCut], *, verifier: CutVerifier, limit: int
) -> TiledTree:
    """Step 5: the newest cut's tree from its tiles, every older cut checked against
    them, and the root ``checkpoint`` checked against the newest cut."""
    cache = TileCache()  # tiles read once for the trees of every cut

    def tree(checkpoint: Checkpoint) -> TiledTree:
        return TiledTree(
            source,
            size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            cache=cache,
            max_entry_bundle_bytes=min(limit, MAX_ENTRY_BUNDLE_BYTES),
        )

    latest = cuts[-1]
    newest = (latest.note, latest.checkpoint)
    tiled = tree(latest.checkpoint)
    for cut in cuts[:-1]:
        # A proof from authenticated tiles that reaches the newest root but not this
        # cut's shows two signed trees that cannot both be true: a fork.
        proof = tiled.consistency_proof(cut.tree_size)
        _check_extends(
            older=(cut.note, cut.checkpoint), newer=newest, proof=proof, older_is_first=True
        )
        # What a reader of this cut reads: its own edge tiles and partial entry bundle.
        tree(cut.checkpoint).partial_entry_bundle()
    note = _read(source, "checkpoint", _MAX_POINTER_BYTES)
    published = verifier.open_checkpoint(note)
    if published.size < latest.tree_size:
        # `checkpoint` is replaced before `latest`, so it is never older when read after.
        raise MalformedDataError(
            f"'checkpoint' signs tree size {published.size}, older than the cut 'latest' "
            f"names ({latest.tree_size})"
        )
    if published.size == latest.tree_size:
        _check_same_tree(first=newest, second=(note, published))
    else:  # a newer cut was published since `latest` was read: its tiles are all there
        proof = tree(published).consistency_proof(latest.tree_size)
        _check_extends(older=newest, newer=(note, published), proof=proof, older_is_first=True)
    return tiled


def verify_bundle(
    path: Path,
    *,
    trust_root: TrustedRoot,
    config: ClientConfig = ClientConfig(),  # noqa: B008  # frozen, so sharing is safe
    now: dt.datetime | None = None,
) -> BundleReport:
    """Verify a static bundle directory offline, every cut and every leaf.

    The bundle may be one its publisher (or a mirror) is writing: it verifies the cut
    ``latest`` names and those before it, whatever newer files are there.

    Args:
        path: the bundle directory (e.g. an rsync or HTTP mirror).
        trust_root: the pinned trust root.
        config: limits (message and results sizes).
        now: the time to check trust root expiry against (default: now).

    Returns:
        The report; ``report.latest`` is the newest published cut, verified.

    Raises:
        VerificationError: (a subclass naming the failure) if anything does not verify.
        TrustRootError: if a trust root update in the bundle does not verify.
    """
    source = DirectorySource(Path(path))
    now = now or dt.datetime.now(dt.UTC)
    limit = config.max_message_bytes
    # (1) the pointer, untrusted
    pointer = _pointer(source)
    # (2) trust root updates published in the bundle
    trusted_root = trust_root
    versions = pointer.get("trust_root_versions")
    if isinstance(versions, int):
        for version in range(trust_root.version + 1, versions + 1):
            doc = _read(source, f"trust-root/v{version}.binpb", limit)
            trusted_root = trusted_root.update(doc, now=now)
    verifier = CutVerifier(trust_root=trusted_root, config=config)
    # (3) the election definition
    election = ElectionIndex.from_bytes(_read(source, "election/definition.binpb", limit))
    # (4) every published cut on its own
    cuts = _cuts(
        source, pointer.get("cut_number"), verifier=verifier, election=election, limit=limit
    )
    latest = cuts[-1]
    # (5) the tiles; (6) every leaf: each cut's root on the way, every cut's results
    pages: Iterator[list[bytes]]
    if pointer["format"] == _FORMAT:
        pages = _tiled_tree(source, cuts, verifier=verifier, limit=limit).leaves()
    elif pointer["format"] == _FORMAT_2:
        pages = _leaf_pages(source, latest.tree_size, limit)
    else:
        page = pointer.get("leaf_page_size")
        if not isinstance(page, int) or page < 1:
            raise MalformedDataError("'latest' has no valid leaf_page_size")
        pages = _fixed_leaf_pages(source, latest.tree_size, page, limit)
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
