"""The PublicationService servicer: gRPC requests in, engine calls, statuses out.

This room owns the wire side of publication's answers: checking each request's fields
(INVALID_ARGUMENT naming the field, with BadRequest details), the page size of
GetLeaves, and mapping the engine's outcomes to status codes (None to NOT_FOUND or
UNAVAILABLE, :class:`~veritally.publication.errors.TamperedDataError` and
:class:`~veritally.publication.errors.ViewError` to DATA_LOSS,
:class:`~veritally.publication.errors.ViewUnavailableError` to UNAVAILABLE). It
may import gRPC, the generated publication modules, the engine and publication's errors;
it decides nothing about cuts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, NoReturn, TypeVar

import grpc

from veritally.bounds import clip
from veritally.publication.engine import PublicationEngine
from veritally.publication.errors import TamperedDataError, ViewError, ViewUnavailableError
from veritally.rpc.status import bad_request
from veritally.storage import MAX_LEAVES_PER_PAGE
from veritally_client.protocol.pb import log_pb2, publication_pb2, publication_pb2_grpc

__all__ = ["SERVICE_NAME", "PublicationServicer"]

SERVICE_NAME = "veritally.v1.PublicationService"


Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
_NO_CUT_YET = "no cut has been made yet"


async def _data_loss(context: Context) -> NoReturn:
    # The alarm (which leaf or blob) is in the log; the client learns only that nothing
    # it could not verify was sent.
    await context.abort(
        grpc.StatusCode.DATA_LOSS, "the publisher's store failed an integrity check"
    )
    raise AssertionError("abort returns only by raising")  # pragma: no cover


async def _invalid(context: Context, field_name: str, message: str) -> NoReturn:
    await context.abort_with_status(
        bad_request(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field_name}: {message}",
            field=field_name,
            description=message,
        )
    )
    raise AssertionError("abort_with_status returns only by raising")  # pragma: no cover


async def _view(context: Context, answer: Awaitable[T]) -> T:
    """The engine's view answer, its failures mapped to statuses: no definition yet is
    UNAVAILABLE; results the stored definition cannot name, or a tampered blob, are
    DATA_LOSS (the engine logged the alarm)."""
    try:
        return await answer
    except ViewUnavailableError as e:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
    except (TamperedDataError, ViewError):
        await _data_loss(context)
    raise AssertionError("abort returns only by raising")  # pragma: no cover


class PublicationServicer(publication_pb2_grpc.PublicationServiceServicer):
    """Answers PublicationService calls from a :class:`PublicationEngine`."""

    def __init__(self, engine: PublicationEngine) -> None:
        """Serve ``engine``."""
        self.engine = engine

    async def GetLatestCut(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetLatestCutRequest, context: Context
    ) -> publication_pb2.GetLatestCutResponse:
        """The newest cut (UNAVAILABLE before the first one); without its results when
        they are those of the cut at ``verified_tree_size`` (docs/adr/0089)."""
        answers = self.engine.latest_answers
        if answers is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _NO_CUT_YET)
        response = answers.cached(request.verified_tree_size)
        if response is None:
            response = await answers.with_proof(request.verified_tree_size, self.engine.consistency)
        return response

    async def GetCut(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetCutRequest, context: Context
    ) -> publication_pb2.GetCutResponse:
        """A cut by number (NOT_FOUND if there is none)."""
        if request.cut_number == 0:
            await _invalid(context, "cut_number", "cut numbers start at 1")
        try:
            cut = await self.engine.get_cut(request.cut_number)
        except TamperedDataError:
            await _data_loss(context)
        if cut is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no cut {request.cut_number}")
        return publication_pb2.GetCutResponse(cut=cut)

    async def WatchCuts(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.WatchCutsRequest, context: Context
    ) -> AsyncIterator[publication_pb2.WatchCutsResponse]:
        """Every cut after ``after_cut_number``, then new ones as they are made."""
        try:
            async for cut in self.engine.watch(request.after_cut_number):
                yield publication_pb2.WatchCutsResponse(cut=cut)
        except TamperedDataError:
            await _data_loss(context)

    async def GetActaInclusionProof(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetActaInclusionProofRequest, context: Context
    ) -> publication_pb2.GetActaInclusionProofResponse:
        """Inclusion proof of an acta record (latest or given revision) at a tree size."""
        if not request.acta_id:
            await _invalid(context, "acta_id", "required")
        size = await self.engine.tree_size()
        if request.tree_size == 0:
            await _invalid(context, "tree_size", "must be at least 1")
        if request.tree_size > size:
            await _invalid(context, "tree_size", f"larger than the log ({size})")
        try:
            found = await self.engine.acta_proof(
                request.acta_id, request.revision, request.tree_size
            )
        except TamperedDataError:
            await _data_loss(context)
        if found is None:
            what = f" revision {request.revision}" if request.revision else ""
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"acta {clip(request.acta_id)}{what} is not in the first "
                f"{request.tree_size} leaves",
            )
        leaf, index, proof = found
        return publication_pb2.GetActaInclusionProofResponse(
            leaf=leaf,
            proof=log_pb2.InclusionProof(
                leaf_index=index, tree_size=request.tree_size, hashes=proof
            ),
        )

    async def GetConsistencyProof(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetConsistencyProofRequest, context: Context
    ) -> publication_pb2.GetConsistencyProofResponse:
        """Consistency proof between two sizes of the log."""
        size = await self.engine.tree_size()
        if request.to_size > size:
            await _invalid(context, "to_size", f"larger than the log ({size})")
        if request.from_size > request.to_size:
            await _invalid(context, "from_size", "larger than to_size")
        proof = await self.engine.consistency(request.from_size, request.to_size)
        return publication_pb2.GetConsistencyProofResponse(
            proof=log_pb2.ConsistencyProof(
                from_size=request.from_size, to_size=request.to_size, hashes=proof
            )
        )

    async def GetLeaves(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetLeavesRequest, context: Context
    ) -> publication_pb2.GetLeavesResponse:
        """Up to ``min(count, MAX_LEAVES_PER_PAGE)`` leaves from ``start``."""
        if request.count == 0:
            await _invalid(context, "count", "must be at least 1")
        size = await self.engine.tree_size()
        if request.start >= size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"start {request.start} is not below size {size}"
            )
        count = min(request.count, MAX_LEAVES_PER_PAGE)
        try:
            leaves = await self.engine.leaves(request.start, count, size)
        except TamperedDataError:
            await _data_loss(context)
        return publication_pb2.GetLeavesResponse(leaves=leaves, tree_size=size)

    async def GetTrustRoot(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetTrustRootRequest, context: Context
    ) -> publication_pb2.GetTrustRootResponse:
        """A trust root version (0 for the newest)."""
        roots = self.engine.trust_roots
        version = request.version or len(roots)
        if version > len(roots):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no trust root version {version}")
        return publication_pb2.GetTrustRootResponse(
            trust_root=log_pb2.TrustRoot.FromString(roots[version - 1])
        )

    async def GetElectionDefinition(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetElectionDefinitionRequest, context: Context
    ) -> publication_pb2.GetElectionDefinitionResponse:
        """The election definition, as fetched from aggregation."""
        data = await self.engine.definition()
        if data is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the election definition has not been fetched yet"
            )
        return publication_pb2.GetElectionDefinitionResponse(definition=data)

    async def GetLatestCutView(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetLatestCutViewRequest, context: Context
    ) -> publication_pb2.GetLatestCutViewResponse:
        """The newest cut with its results named (UNAVAILABLE before the first cut or
        before the election definition is fetched)."""
        response = await _view(context, self.engine.latest_view())
        if response is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _NO_CUT_YET)
        return response

    async def GetCutView(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: publication_pb2.GetCutViewRequest, context: Context
    ) -> publication_pb2.GetCutViewResponse:
        """A cut by number with its results named (NOT_FOUND if there is none)."""
        if request.cut_number == 0:
            await _invalid(context, "cut_number", "cut numbers start at 1")
        response = await _view(context, self.engine.cut_view(request.cut_number))
        if response is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no cut {request.cut_number}")
        return response
