"""An in-memory publisher that signs REAL cuts, for the SDK's unit tests.

It keeps a real RFC 9162 log (``MemoryTree``) of real serialized ``LogLeaf`` records,
computes real results with the SDK's ``Tally`` over a small real ``ElectionIndex``,
signs real C2SP checkpoints with real Ed25519 keys, and implements the client's
``Transport`` Protocol. Tests make it misbehave by setting the override attributes or by
editing what it returns; nothing in the client is mocked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from veritally_client._checkpoint import Checkpoint
from veritally_client._cosignature import CosignatureSigner
from veritally_client._cut import cut_leaf_bytes
from veritally_client._election import ElectionIndex, acta_id
from veritally_client._errors import TransportError
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    election_pb2,
    log_pb2,
    publication_pb2,
    results_pb2,
)
from veritally_client._merkle import MemoryTree
from veritally_client._note import sign_note
from veritally_client._signing import Signer
from veritally_client._summary import results_summary_bytes
from veritally_client._tally import Tally
from veritally_client._tiles import (
    TILE_WIDTH,
    TileRef,
    encode_entry_bundle,
    tile_hashes,
    tiles_between,
)
from veritally_client._trustroot import TrustedRoot, sign_trust_root

ORIGIN = "prep.example/e2026"
START = dt.datetime(2026, 6, 2, 20, 0, tzinfo=dt.UTC)
CUT_INTERVAL = dt.timedelta(seconds=60)
SEED = b"\x07" * 32


def small_election(*, states: int = 2, districts: int = 2, sections: int = 2) -> ElectionIndex:
    """``states`` x ``districts`` x ``sections``, 2 casillas per section (one of them
    special in the first section of each district), contests PRES (3 options) and SEN."""
    pb = election_pb2.ElectionDefinition(id="sdk-test-2026", name="SDK test election")
    for pid in ("PA", "PB", "PC"):
        pb.parties.add(id=pid, name=f"Party {pid}")
    pres = pb.contests.add(id="PRES", name="President")
    pres.options.add(id="PA", name="A", party_ids=["PA"])
    pres.options.add(id="PB", name="B", party_ids=["PB"])
    pres.options.add(id="PB_PC", name="B+C", party_ids=["PB", "PC"])
    sen = pb.contests.add(id="SEN", name="Senate")
    sen.options.add(id="PA", name="A", party_ids=["PA"])
    sen.options.add(id="PC", name="C", party_ids=["PC"])
    for s in range(1, states + 1):
        sid = f"{s:02d}"
        pb.states.add(id=sid, name=f"State {sid}")
        for d in range(1, districts + 1):
            did = f"{sid}-{d:02d}"
            pb.districts.add(id=did, state_id=sid, name=f"District {did}")
            for sec in range(1, sections + 1):
                secid = f"{did}-{sec:04d}"
                pb.sections.add(id=secid, district_id=did)
                pb.casillas.add(
                    id=f"{secid}-B1",
                    section_id=secid,
                    type=election_pb2.CASILLA_TYPE_BASICA,
                    nominal_list=400,
                    party_representatives=2,
                )
                if sec == 1:
                    pb.casillas.add(
                        id=f"{secid}-S1",
                        section_id=secid,
                        type=election_pb2.CASILLA_TYPE_ESPECIAL,
                        ballot_limit=300,
                        party_representatives=2,
                    )
                else:
                    pb.casillas.add(
                        id=f"{secid}-C1",
                        section_id=secid,
                        type=election_pb2.CASILLA_TYPE_CONTIGUA,
                        nominal_list=350,
                        party_representatives=2,
                    )
    return ElectionIndex.from_pb(pb)


def publisher_key(name: str = "prep.example", seed: bytes = SEED) -> Signer:
    """A deterministic publisher key."""
    return Signer.from_seed(name, seed)


def make_trust_root(
    signers: list[Signer],
    *,
    origin: str = ORIGIN,
    threshold: int = 1,
    expires: dt.datetime = START + dt.timedelta(days=30),
    version: int = 1,
    signed_by: list[Signer] | None = None,
    witnesses: list[CosignatureSigner] | None = None,
    witness_threshold: int = 0,
) -> bytes:
    """A trust root document listing ``signers`` (and ``witnesses``, of whom
    ``witness_threshold`` must cosign), signed by them (or ``signed_by``)."""
    body = log_pb2.TrustRootBody(
        version=version,
        origin=origin,
        publisher_keys=[s.verifier().key_string() for s in signers],
        threshold=threshold,
        witness_keys=[w.verifier().key_string() for w in witnesses or ()],
        witness_threshold=witness_threshold,
    )
    body.expires_time.FromDatetime(expires)
    return sign_trust_root(body, signed_by if signed_by is not None else signers)


def trusted_root(
    signers: list[Signer],
    *,
    origin: str = ORIGIN,
    threshold: int = 1,
    witnesses: list[CosignatureSigner] | None = None,
    witness_threshold: int = 0,
) -> TrustedRoot:
    """The verified trust root of ``signers`` and ``witnesses`` (at START)."""
    document = make_trust_root(
        signers,
        origin=origin,
        threshold=threshold,
        witnesses=witnesses,
        witness_threshold=witness_threshold,
    )
    return TrustedRoot.from_bytes(document, now=START)


def witness_key(i: int) -> CosignatureSigner:
    """A deterministic witness key, ``witness.example/w<i>``."""
    return CosignatureSigner(name=f"witness.example/w{i}", seed=bytes([0x40 + i]) * 32)


@dataclass
class FakePublisher:
    """A publisher with a real log. Implements the client's Transport Protocol.

    Misbehaviour knobs (None = honest):

    * ``latest_override``: served by get_latest_cut (and, whole, by
      get_latest_cut_since) instead of the newest cut;
    * ``since_override``: ``verified_tree_size -> GetLatestCutResponse`` served by
      get_latest_cut_since instead of the honest answer;
    * ``consistency_override``: ``(from, to) -> hashes`` instead of the real proof;
    * ``leaf_override``: index -> bytes served by get_leaves instead of the real leaf;
    * ``stream_failures``: how many watch_cuts calls fail before one works;
    * ``stream_cuts_override``: what watch_cuts streams instead of the real cuts;
    * ``inclusion_override``: ``(leaf, proof) -> (leaf, proof)`` for acta proofs.

    Witnesses: each note :meth:`sign` makes carries the cosignatures of the
    ``witnesses`` whose indexes are in ``cosigning`` (None: all), timestamped at the
    publisher's clock plus ``cosign_offset``; ``witness_threshold`` of them are required
    by :meth:`trust_root`.
    """

    election: ElectionIndex = field(default_factory=small_election)
    signers: list[Signer] = field(default_factory=lambda: [publisher_key()])
    origin: str = ORIGIN
    now: dt.datetime = START
    seed: int = 1
    tree: MemoryTree = field(default_factory=MemoryTree)
    leaves: list[bytes] = field(default_factory=list)
    cuts: list[log_pb2.SignedCut] = field(default_factory=list)
    latest_override: log_pb2.SignedCut | None = None
    since_override: Callable[[int], publication_pb2.GetLatestCutResponse] | None = None
    # Each get_latest_cut_since answer: (verified_tree_size, serialized size in bytes).
    since_answers: list[tuple[int, int]] = field(default_factory=list)
    consistency_override: Callable[[int, int], list[bytes]] | None = None
    leaf_override: dict[int, bytes] = field(default_factory=dict)
    stream_failures: int = 0
    stream_cuts_override: list[log_pb2.SignedCut] | None = None
    inclusion_override: (
        Callable[[bytes, log_pb2.InclusionProof], tuple[bytes, log_pb2.InclusionProof]] | None
    ) = None
    closed: bool = False
    idle_timeouts: list[float] = field(default_factory=list)
    trust_root_versions: list[bytes] = field(default_factory=list)
    witnesses: list[CosignatureSigner] = field(default_factory=list)
    witness_threshold: int = 0
    cosigning: list[int] | None = None
    cosign_offset: dt.timedelta = dt.timedelta(0)
    # Whether cut records sign the results summary (docs/adr/0092); each summary signed,
    # by its digest.
    sign_summaries: bool = False
    summaries: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tally = Tally(self.election)
        self._rng = random.Random(self.seed)
        self._acta_leaf: dict[str, list[int]] = {}  # acta id -> leaf index per revision
        self._pending = [
            acta_id(c.id, k.id) for c in self.election.casillas for k in self.election.contests
        ]

    # -- building the log ---------------------------------------------------------------

    def _record(self, aid: str, revision: int) -> acta_pb2.ActaRecord:
        casilla_id, contest_id = aid.rsplit("/", 1)
        acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
        for oid in self.election.option_ids(contest_id):
            acta.option_votes.add(option_id=oid, votes=self._rng.randrange(0, 60))
        acta.unregistered_votes = self._rng.randrange(0, 3)
        acta.null_votes = self._rng.randrange(0, 5)
        acta.image_sha256 = hashlib.sha256(f"{aid}#{revision}".encode()).digest()
        record = acta_pb2.ActaRecord(
            acta_id=aid,
            revision=revision,
            acta=acta,
            counted=True,
            sequence=self.tally.acta_records,
        )
        record.received_time.FromDatetime(self.now)
        return record

    def _append_record(self, record: acta_pb2.ActaRecord) -> None:
        self.tally.apply(record)
        leaf = acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)
        index = self.tree.append(leaf)
        self.leaves.append(leaf)
        self._acta_leaf.setdefault(record.acta_id, []).append(index)

    def add_actas(self, n: int) -> list[str]:
        """Append ``n`` new acta records (first revisions); returns their acta ids."""
        ids = []
        for _ in range(n):
            aid = self._pending.pop(0)
            self._append_record(self._record(aid, 1))
            ids.append(aid)
        return ids

    def correct(self, aid: str) -> None:
        """Append a correction (the next revision) of ``aid``."""
        revision = len(self._acta_leaf[aid]) + 1
        self._append_record(self._record(aid, revision))

    def make_cut(
        self,
        *,
        final: bool = False,
        results_mutator: Callable[[results_pb2.Results], None] | None = None,
        signers: list[Signer] | None = None,
        advance: dt.timedelta = CUT_INTERVAL,
        behind: int | None = None,
        record_mutator: Callable[[acta_pb2.CutRecord], None] | None = None,
        summary_mutator: Callable[[results_pb2.ResultsSummary], None] | None = None,
    ) -> log_pb2.SignedCut:
        """Append a cut record over the log so far, sign the tree, and store the cut.

        ``results_mutator`` edits the results before they are hashed and signed: a
        publisher that signs results which are not those of its log. ``behind`` makes
        the cut record say that ingest had accepted that many records more than it
        covers (None: no ingest figure). ``record_mutator`` edits the cut record before
        it is signed. With ``sign_summaries`` the record signs the results summary;
        ``summary_mutator`` edits it first (a summary that is not the results').
        """
        self.now += advance
        results = self.tally.results(final=final)
        if results_mutator is not None:
            results_mutator(results)
        blob = results.SerializeToString(deterministic=True)
        acta_records = self.tally.acta_records
        summary_sha256 = b""
        if self.sign_summaries:
            summary = results_summary_bytes(blob, party_ids=self.election.party_ids)
            if summary_mutator is not None:
                parsed_summary = results_pb2.ResultsSummary.FromString(summary)
                summary_mutator(parsed_summary)
                summary = parsed_summary.SerializeToString(deterministic=True)
            summary_sha256 = hashlib.sha256(summary).digest()
            self.summaries[summary_sha256] = summary
        leaf = cut_leaf_bytes(
            cut_number=len(self.cuts) + 1,
            cut_time=self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            acta_records=acta_records,
            results_sha256=hashlib.sha256(blob).digest(),
            ingest_records=None if behind is None else acta_records + behind,
            summary_sha256=summary_sha256,
        )
        if record_mutator is not None:
            parsed = acta_pb2.LogLeaf.FromString(leaf)
            record_mutator(parsed.cut_record)
            leaf = parsed.SerializeToString(deterministic=True)
        index = self.tree.append(leaf)
        self.leaves.append(leaf)
        size = self.tree.size
        note = self.sign(Checkpoint(self.origin, size, self.tree.root()), signers=signers)
        cut = log_pb2.SignedCut(
            checkpoint=note,
            cut_leaf=leaf,
            inclusion_proof=self.tree.inclusion_proof(index, size),
            results=blob,
        )
        self.cuts.append(cut)
        return cut

    def sign(self, checkpoint: Checkpoint, *, signers: list[Signer] | None = None) -> bytes:
        """A signed note of ``checkpoint`` (by this publisher's keys unless given), with
        the cosignatures of the cosigning witnesses."""
        text = checkpoint.to_text()
        note = sign_note(text, signers if signers is not None else self.signers)
        chosen = range(len(self.witnesses)) if self.cosigning is None else self.cosigning
        stamp = int((self.now + self.cosign_offset).timestamp())
        lines = [self.witnesses[i].cosign(text, timestamp=stamp).line() for i in chosen]
        return note + "".join(lines).encode()

    def step(self, actas: int = 3, *, behind: int | None = None) -> log_pb2.SignedCut:
        """Add ``actas`` records and cut (``behind``: see :meth:`make_cut`)."""
        self.add_actas(actas)
        return self.make_cut(behind=behind)

    def trust_root(self, *, threshold: int = 1) -> TrustedRoot:
        """The trust root pinning this publisher's keys and witnesses."""
        return trusted_root(
            self.signers,
            origin=self.origin,
            threshold=threshold,
            witnesses=self.witnesses,
            witness_threshold=self.witness_threshold,
        )

    # -- Transport ----------------------------------------------------------------------

    def get_latest_cut(self) -> log_pb2.SignedCut:
        if self.latest_override is not None:
            return self.latest_override
        if not self.cuts:
            raise TransportError("NOT_FOUND: no cut yet")
        return self.cuts[-1]

    def get_latest_cut_since(self, verified_tree_size: int) -> publication_pb2.GetLatestCutResponse:
        if self.since_override is not None:
            answer = self.since_override(verified_tree_size)
        else:
            answer = self._since(verified_tree_size)
        self.since_answers.append((verified_tree_size, answer.ByteSize()))
        return answer

    def _since(self, v: int) -> publication_pb2.GetLatestCutResponse:
        """The answers of docs/adr/0089, as publication gives them."""
        newest = self.get_latest_cut()
        whole = publication_pb2.GetLatestCutResponse(cut=newest)
        if self.latest_override is not None:
            return whole
        verified = next((c for c in self.cuts if _cut_size(c) == v), None)
        if verified is None or _digest(verified) != _digest(newest):
            return whole
        size = _cut_size(newest)
        if v == size:
            return publication_pb2.GetLatestCutResponse(
                cut=log_pb2.SignedCut(checkpoint=newest.checkpoint), results_unchanged=True
            )
        return publication_pb2.GetLatestCutResponse(
            cut=log_pb2.SignedCut(
                checkpoint=newest.checkpoint,
                cut_leaf=newest.cut_leaf,
                inclusion_proof=newest.inclusion_proof,
            ),
            results_unchanged=True,
            consistency_proof=[] if v == size - 1 else self.tree.consistency_proof(v, size),
        )

    def get_cut(self, cut_number: int) -> log_pb2.SignedCut:
        if not 1 <= cut_number <= len(self.cuts):
            raise TransportError(f"NOT_FOUND: no cut {cut_number}")
        return self.cuts[cut_number - 1]

    def watch_cuts(
        self, after_cut_number: int, *, idle_timeout: float
    ) -> Iterator[log_pb2.SignedCut]:
        self.idle_timeouts.append(idle_timeout)
        if self.stream_failures > 0:
            self.stream_failures -= 1
            raise TransportError("UNAVAILABLE: stream broken")
        cuts = self.stream_cuts_override
        if cuts is None:
            cuts = [c for c in self.cuts if _cut_number(c) > after_cut_number]
        yield from cuts
        raise TransportError("UNAVAILABLE: the server ended the stream")

    def get_consistency_proof(self, from_size: int, to_size: int) -> list[bytes]:
        if self.consistency_override is not None:
            return self.consistency_override(from_size, to_size)
        if not 0 < from_size <= to_size <= self.tree.size:
            raise TransportError(f"INVALID_ARGUMENT: no proof from {from_size} to {to_size}")
        return self.tree.consistency_proof(from_size, to_size)

    def get_inclusion_proof(
        self, acta_id: str, revision: int, tree_size: int
    ) -> tuple[bytes, log_pb2.InclusionProof]:
        indexes = [i for i in self._acta_leaf.get(acta_id, []) if i < tree_size]
        if not indexes or revision > len(indexes):
            raise TransportError(f"NOT_FOUND: no acta {acta_id!r}")
        index = indexes[revision - 1] if revision else indexes[-1]
        proof = log_pb2.InclusionProof(
            leaf_index=index,
            tree_size=tree_size,
            hashes=self.tree.inclusion_proof(index, tree_size),
        )
        leaf = self.leaves[index]
        if self.inclusion_override is not None:
            return self.inclusion_override(leaf, proof)
        return leaf, proof

    def get_leaves(self, start: int, count: int) -> list[bytes]:
        end = min(start + count, len(self.leaves))
        return [self.leaf_override.get(i, self.leaves[i]) for i in range(start, end)]

    def get_trust_root(self, version: int) -> bytes:
        versions = self.trust_root_versions or [make_trust_root(self.signers, origin=self.origin)]
        if version > len(versions):
            raise TransportError(f"NOT_FOUND: no trust root version {version}")
        return versions[version - 1 if version else -1]

    def get_election_definition(self) -> bytes:
        return self.election.definition_bytes

    def close(self) -> None:
        self.closed = True


def _cut_number(cut: log_pb2.SignedCut) -> int:
    leaf = acta_pb2.LogLeaf.FromString(cut.cut_leaf)
    return leaf.cut_record.cut_number


def write_bundle(
    pub: FakePublisher, root: Path, *, legacy_format: int = 0, page_size: int = 4
) -> None:
    """Write ``pub``'s log in the static bundle layout of docs/bundle-format.md.

    Format 3 (tiles), as the publisher writes it cut after cut: each cut's new tiles,
    its cut file, ``checkpoint``, ``latest``, then the partial tiles its full ones
    replace are removed. With ``legacy_format`` 1 or 2, an archive of that earlier
    format instead, whose leaf pages hold ``page_size`` leaves (the SDK still reads them).
    """
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("cuts", "checkpoints", "results", "trust-root", "election"):
        (root / sub).mkdir(exist_ok=True)
    (root / "trust-root" / "v1.binpb").write_bytes(make_trust_root(pub.signers))
    (root / "election" / "definition.binpb").write_bytes(pub.election.definition_bytes)
    if legacy_format:
        _write_legacy(pub, root, legacy_format, page_size)
        return
    written = 0
    for n, cut in enumerate(pub.cuts, start=1):
        size = _cut_size(cut)
        (root / "results" / hashlib.sha256(cut.results).hexdigest()).write_bytes(cut.results)
        (root / "checkpoints" / str(size)).write_bytes(cut.checkpoint)
        refs = tiles_between(written, size)
        for ref in refs:
            path = root / ref.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_tile_bytes(pub, ref))
        (root / "cuts" / f"{n}.cut").write_bytes(cut.SerializeToString(deterministic=True))
        (root / "checkpoint").write_bytes(cut.checkpoint)
        latest = {
            "format": "veritally-bundle/3",
            "cut_number": n,
            "tree_size": size,
            "cut": f"cuts/{n}.cut",
            "trust_root_versions": 1,
        }
        (root / "latest").write_text(json.dumps(latest))
        for ref in refs:
            if ref.full:
                shutil.rmtree(root / f"{ref.path}.p", ignore_errors=True)
        written = size


def _digest(cut: log_pb2.SignedCut) -> bytes:
    return acta_pb2.LogLeaf.FromString(cut.cut_leaf).cut_record.results_sha256


def _cut_size(cut: log_pb2.SignedCut) -> int:
    record = acta_pb2.LogLeaf.FromString(cut.cut_leaf).cut_record
    return record.acta_records + record.cut_number  # the cut record is the last leaf


def _tile_bytes(pub: FakePublisher, ref: TileRef) -> bytes:
    if ref.entries:
        return encode_entry_bundle(pub.leaves[ref.first : ref.first + ref.width])
    span = TILE_WIDTH**ref.level  # leaves under each hash of the tile
    return tile_hashes(
        [
            pub.tree.subtree_hash(i * span, (i + 1) * span)
            for i in range(ref.first, ref.first + ref.width)
        ]
    )


def _write_legacy(pub: FakePublisher, root: Path, version: int, page_size: int) -> None:
    """Format 1: every page ``leaves/<start>-<count>.binpb``; format 2: full pages
    ``leaves/<start>.binpb`` and the tail page of the size ``leaves/<start>-<count>``."""
    (root / "leaves").mkdir(exist_ok=True)
    for n, cut in enumerate(pub.cuts, start=1):
        (root / "cuts" / f"{n}.cut").write_bytes(cut.SerializeToString(deterministic=True))
        (root / "results" / hashlib.sha256(cut.results).hexdigest()).write_bytes(cut.results)
    size = pub.tree.size
    for start in range(0, size, page_size):
        count = min(page_size, size - start)
        page = publication_pb2.GetLeavesResponse(
            leaves=pub.leaves[start : start + count], tree_size=start + count
        )
        full = version == 2 and count == page_size
        name = f"{start}.binpb" if full else f"{start}-{count}.binpb"
        (root / "leaves" / name).write_bytes(page.SerializeToString())
    latest = {
        "format": f"veritally-bundle/{version}",
        "cut_number": len(pub.cuts),
        "tree_size": size,
        "cut": f"cuts/{len(pub.cuts)}.cut",
        "leaf_page_size": page_size,
        "trust_root_versions": 1,
    }
    (root / "latest").write_text(json.dumps(latest))


def with_two_cuts(publisher: FakePublisher) -> FakePublisher:
    """``publisher`` after cutting 4 actas and then 3 more: cut 2 at tree size 9 (the
    7 actas and the 2 cut records). The SDK tests' usual starting point."""
    publisher.step(4)
    publisher.step(3)
    return publisher
