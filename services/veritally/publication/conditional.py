"""The answers of GetLatestCut for one cut, built once when it is made (docs/adr/0089).

A media client polls the newest cut far more often than publication cuts, and most cuts
of a night are heartbeats whose results are those of the cut before (the results blob is
a pure function of the acta records it covers, and a heartbeat covers no new one). So a
client that says which tree it verified (``verified_tree_size``) is answered without the
results when the newest cut's results are the ones it holds:

1. the cuts since the results last changed form a *run*: they cover the same acta
   records, so their trees have consecutive sizes ``run_start .. tree_size`` (one cut
   record each) and their cut records sign one results digest;
2. a verified size of the newest tree gets only the checkpoint (the client holds the
   cut leaf and its inclusion proof);
3. the size just before gets the checkpoint, the cut leaf and its inclusion proof: the
   proof's hashes are the verified tree's subtrees, so it proves the extension too;
4. an older size of the run also gets the consistency proof, read from the store once
   per (cut, size) and kept (at most ``PROOF_ANSWERS_KEPT`` sizes per cut);
5. any other size (before the run, above the log, none) gets the full cut.

Answers 2, 3 and 5 are messages built here once per cut and returned as they are to
every read. Nothing here is trusted by the client: it verifies a small answer exactly
as a full one, with the results it verified before in place of the blob.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from veritally_client.protocol.pb import log_pb2, publication_pb2

__all__ = ["PROOF_ANSWERS_KEPT", "LatestAnswers"]

#: Answers with a consistency proof kept per cut (least recently used dropped first).
#: Clients polling once per interval are answered by (3); this serves those a few
#: intervals behind, each verified size at ~1.3 KB, so the bound is ~85 KB per cut.
PROOF_ANSWERS_KEPT = 64

GetLatestCutResponsePb = publication_pb2.GetLatestCutResponse
SignedCutPb = log_pb2.SignedCut


@dataclass
class LatestAnswers:
    """The GetLatestCut answers of the newest cut.

    Attributes:
        full: the whole signed cut (every client without a usable verified size).
        tree_size: the cut's tree size.
        run_start: the smallest tree size of a cut whose results are this cut's (1).
    """

    full: GetLatestCutResponsePb
    tree_size: int
    run_start: int
    _same_tree: GetLatestCutResponsePb = field(init=False, repr=False)
    _one_behind: GetLatestCutResponsePb = field(init=False, repr=False)
    _with_proof: OrderedDict[int, GetLatestCutResponsePb] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if not 1 <= self.run_start <= self.tree_size:
            raise ValueError(f"run_start {self.run_start} outside 1..{self.tree_size}")
        signed = self.full.cut
        # (2) the verified tree itself: its checkpoint again (a newer signature, or the
        # same note; either way the client re-verifies it)
        self._same_tree = GetLatestCutResponsePb(
            cut=SignedCutPb(checkpoint=signed.checkpoint), results_unchanged=True
        )
        # (3) one cut record more
        self._one_behind = GetLatestCutResponsePb(
            cut=SignedCutPb(
                checkpoint=signed.checkpoint,
                cut_leaf=signed.cut_leaf,
                inclusion_proof=signed.inclusion_proof,
            ),
            results_unchanged=True,
        )

    @classmethod
    def after(
        cls,
        previous: LatestAnswers | None,
        *,
        full: GetLatestCutResponsePb,
        tree_size: int,
        same_results: bool,
    ) -> LatestAnswers:
        """The answers of a new cut, continuing ``previous``'s run when ``same_results``
        (the new cut signs the results digest of the previous one)."""
        run_start = tree_size
        if same_results and previous is not None and previous.tree_size < tree_size:
            run_start = previous.run_start
        return cls(full=full, tree_size=tree_size, run_start=run_start)

    def cached(self, verified_tree_size: int) -> GetLatestCutResponsePb | None:
        """The answer for a client that verified ``verified_tree_size`` (0: none), or
        None when it needs a consistency proof first (:meth:`with_proof`)."""
        v = verified_tree_size
        if v < self.run_start or v > self.tree_size:
            return self.full  # (5)
        if v == self.tree_size:
            return self._same_tree  # (2)
        if v == self.tree_size - 1:
            return self._one_behind  # (3)
        found = self._with_proof.get(v)
        if found is not None:
            self._with_proof.move_to_end(v)
        return found

    async def with_proof(
        self,
        verified_tree_size: int,
        consistency: Callable[[int, int], Awaitable[list[bytes]]],
    ) -> GetLatestCutResponsePb:
        """(4) The answer for an older size of the run, its consistency proof read with
        ``consistency(from_size, to_size)`` once and kept."""
        found = self.cached(verified_tree_size)
        if found is not None:
            return found
        proof = await consistency(verified_tree_size, self.tree_size)
        answer = GetLatestCutResponsePb(
            cut=self._one_behind.cut, results_unchanged=True, consistency_proof=proof
        )
        self._with_proof[verified_tree_size] = answer
        while len(self._with_proof) > PROOF_ANSWERS_KEPT:
            self._with_proof.popitem(last=False)
        return answer
