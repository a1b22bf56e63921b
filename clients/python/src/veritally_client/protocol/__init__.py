"""The SDK's public low-level protocol layer: the signed formats and their primitives.

``veritally_client`` is the verifying client an outlet or an observer uses; this layer is
for code that *produces* or *re-checks* the formats that client verifies: the authority's
services (ingest, aggregation, publication), monitors, witnesses, and the project's
benchmarks and scripts. It re-exports, under stable public names, the pieces those need:

- signed notes and checkpoints (C2SP ``signed-note`` / ``tlog-checkpoint``):
  :func:`sign_note`, :func:`open_note`, :class:`Checkpoint`, :func:`parse_checkpoint`;
- the RFC 6962 Merkle tree: hashes, proofs and their checks, :class:`CompactRange`,
  :class:`MemoryTree`;
- Ed25519 note keys: :class:`Signer`, :class:`Verifier`, :func:`is_valid_key_name`;
- witness cosignatures (C2SP ``tlog-cosignature``, ``cosignature/v1``), written and read
  by one module: :class:`CosignatureSigner`, :class:`CosignatureVerifier`,
  :class:`Cosignature`, :func:`parse_cosignature_line`, :func:`cosigned_message`;
- the trust root: :class:`TrustedRoot`, :func:`sign_trust_root`;
- the election index and acta ids: :class:`ElectionIndex`, :func:`acta_id`;
- log leaves, written and read by one module: the acta record leaf ingest writes,
  :func:`serialize_acta`, :func:`encode_timestamp`, :func:`leaf_bytes` (and
  :func:`varint`), and every leaf read back, :func:`parse_leaf`, :func:`parse_leaf_view`;
- the tally over log leaves: :class:`Tally`;
- the cut record, written and read by one module: :func:`cut_leaf_bytes`,
  :func:`parse_cut_leaf`, :func:`format_cut_time`, :func:`parse_cut_time`,
  :func:`ingest_records_of`;
- the results summary a cut record signs, written and read by one module:
  :func:`results_summary_bytes`, :func:`verify_summary`, :data:`MAX_SUMMARY_BYTES`;
- the tiled log (C2SP ``tlog-tiles``), written and read by one module: which files a
  tree has, :func:`tiles_between` and :class:`TileRef`, their encodings,
  :func:`tile_hashes`, :func:`parse_tile`, :func:`encode_entry_bundle`,
  :func:`parse_entry_bundle`, and :class:`TiledTree`, which authenticates tiles against
  a signed root and computes proofs from them over any :class:`TileSource` (a
  :class:`DirectorySource` today);
- the generated protobuf message and gRPC modules, in :mod:`veritally_client.protocol.pb`.

The typed errors these raise (``MalformedDataError``, ``TrustRootError``, ...) are the
SDK's error tree and are imported from ``veritally_client`` itself.

Stability: the names in ``__all__`` (and those of :mod:`veritally_client.protocol.pb`)
are public. Their signatures and the byte formats they write and read change only with a
major version, or with a new format version that the old one keeps verifying beside.
What may change between minor versions: new names, new keyword-only parameters with
defaults, new fields in the generated messages (added with new numbers, never renumbered),
and anything reached through the SDK's private modules (``veritally_client._*``), which
this layer exists so that no code outside the SDK has to import.
"""

from veritally_client._checkpoint import Checkpoint as Checkpoint
from veritally_client._checkpoint import parse_checkpoint as parse_checkpoint
from veritally_client._cosignature import Cosignature as Cosignature
from veritally_client._cosignature import CosignatureSigner as CosignatureSigner
from veritally_client._cosignature import CosignatureVerifier as CosignatureVerifier
from veritally_client._cosignature import cosigned_message as cosigned_message
from veritally_client._cosignature import parse_cosignature_line as parse_cosignature_line
from veritally_client._cut import cut_leaf_bytes as cut_leaf_bytes
from veritally_client._cut import format_cut_time as format_cut_time
from veritally_client._cut import ingest_records_of as ingest_records_of
from veritally_client._cut import parse_cut_leaf as parse_cut_leaf
from veritally_client._cut import parse_cut_time as parse_cut_time
from veritally_client._election import ElectionIndex as ElectionIndex
from veritally_client._election import acta_id as acta_id
from veritally_client._election import parse_acta_id as parse_acta_id
from veritally_client._leaf import LeafView as LeafView
from veritally_client._leaf import encode_timestamp as encode_timestamp
from veritally_client._leaf import leaf_bytes as leaf_bytes
from veritally_client._leaf import parse_leaf as parse_leaf
from veritally_client._leaf import parse_leaf_view as parse_leaf_view
from veritally_client._leaf import serialize_acta as serialize_acta
from veritally_client._leaf import varint as varint
from veritally_client._merkle import EMPTY_ROOT as EMPTY_ROOT
from veritally_client._merkle import HASH_SIZE as HASH_SIZE
from veritally_client._merkle import CompactRange as CompactRange
from veritally_client._merkle import MemoryTree as MemoryTree
from veritally_client._merkle import consistency_proof as consistency_proof
from veritally_client._merkle import inclusion_proof as inclusion_proof
from veritally_client._merkle import leaf_hash as leaf_hash
from veritally_client._merkle import node_hash as node_hash
from veritally_client._merkle import perfect_subtrees as perfect_subtrees
from veritally_client._merkle import subtree_hash_from_perfect as subtree_hash_from_perfect
from veritally_client._merkle import verify_consistency as verify_consistency
from veritally_client._merkle import verify_inclusion as verify_inclusion
from veritally_client._note import VerifiedNote as VerifiedNote
from veritally_client._note import open_note as open_note
from veritally_client._note import sign_note as sign_note
from veritally_client._signing import Signer as Signer
from veritally_client._signing import Verifier as Verifier
from veritally_client._signing import is_valid_key_name as is_valid_key_name
from veritally_client._summary import MAX_SUMMARY_BYTES as MAX_SUMMARY_BYTES
from veritally_client._summary import results_summary_bytes as results_summary_bytes
from veritally_client._summary import verify_summary as verify_summary
from veritally_client._tally import Tally as Tally
from veritally_client._tiles import MAX_ENTRY_BUNDLE_BYTES as MAX_ENTRY_BUNDLE_BYTES
from veritally_client._tiles import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from veritally_client._tiles import TILE_HEIGHT as TILE_HEIGHT
from veritally_client._tiles import TILE_WIDTH as TILE_WIDTH
from veritally_client._tiles import DirectorySource as DirectorySource
from veritally_client._tiles import TileCache as TileCache
from veritally_client._tiles import TiledTree as TiledTree
from veritally_client._tiles import TileRef as TileRef
from veritally_client._tiles import TileSource as TileSource
from veritally_client._tiles import encode_entry_bundle as encode_entry_bundle
from veritally_client._tiles import parse_entry_bundle as parse_entry_bundle
from veritally_client._tiles import parse_tile as parse_tile
from veritally_client._tiles import tile_hashes as tile_hashes
from veritally_client._tiles import tile_index_path as tile_index_path
from veritally_client._tiles import tiles_between as tiles_between
from veritally_client._trustroot import TrustedRoot as TrustedRoot
from veritally_client._trustroot import sign_trust_root as sign_trust_root
from veritally_client.protocol import pb as pb

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_ENTRY_BUNDLE_BYTES",
    "MAX_ENTRY_BYTES",
    "MAX_SUMMARY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Checkpoint",
    "CompactRange",
    "Cosignature",
    "CosignatureSigner",
    "CosignatureVerifier",
    "DirectorySource",
    "ElectionIndex",
    "LeafView",
    "MemoryTree",
    "Signer",
    "Tally",
    "TileCache",
    "TileRef",
    "TileSource",
    "TiledTree",
    "TrustedRoot",
    "VerifiedNote",
    "Verifier",
    "acta_id",
    "consistency_proof",
    "cosigned_message",
    "cut_leaf_bytes",
    "encode_entry_bundle",
    "encode_timestamp",
    "format_cut_time",
    "inclusion_proof",
    "ingest_records_of",
    "is_valid_key_name",
    "leaf_bytes",
    "leaf_hash",
    "node_hash",
    "open_note",
    "parse_acta_id",
    "parse_checkpoint",
    "parse_cosignature_line",
    "parse_cut_leaf",
    "parse_cut_time",
    "parse_entry_bundle",
    "parse_leaf",
    "parse_leaf_view",
    "parse_tile",
    "pb",
    "perfect_subtrees",
    "results_summary_bytes",
    "serialize_acta",
    "sign_note",
    "sign_trust_root",
    "subtree_hash_from_perfect",
    "tile_hashes",
    "tile_index_path",
    "tiles_between",
    "varint",
    "verify_consistency",
    "verify_inclusion",
    "verify_summary",
]
