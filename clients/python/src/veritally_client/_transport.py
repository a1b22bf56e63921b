"""The client's one port to the publisher, and its gRPC implementation.

:class:`Transport` is the small Protocol the client talks through (like python-tuf's
``FetcherInterface``): it moves bytes and wire messages and trusts nothing. Tests plug an
in-memory fake publisher into it; production uses :class:`GrpcTransport` (sync gRPC, mTLS
to Envoy or to a publication server).

Every gRPC error is wrapped once, here, as :class:`TransportError` (``raise ... from e``)
so that callers tell a network failure from a verification failure by type.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import grpc

from veritally_client._errors import TransportError
from veritally_client._gen.veritally.v1 import log_pb2, publication_pb2, publication_pb2_grpc
from veritally_client._tls import diagnose_handshake

__all__ = ["GrpcTransport", "TlsCredentials", "Transport"]

SignedCutPb = log_pb2.SignedCut
InclusionProofPb = log_pb2.InclusionProof
LatestCutPb = publication_pb2.GetLatestCutResponse


@runtime_checkable
class Transport(Protocol):
    """What the client needs from a publisher. Nothing returned here is trusted."""

    def get_latest_cut(self) -> SignedCutPb:
        """The newest signed cut."""
        ...

    def get_latest_cut_since(self, verified_tree_size: int) -> LatestCutPb:
        """The newest signed cut for a client that verified the cut of tree size
        ``verified_tree_size`` and holds its results (docs/adr/0089).

        The answer is a ``GetLatestCutResponse``. When ``results_unchanged`` is False,
        ``cut`` is the whole newest cut, as :meth:`get_latest_cut` returns it. When it is
        True the publisher claims that the newest cut's record signs the results digest
        of the verified cut, and ``cut`` leaves the results out: ``cut.results`` is
        empty; if the newest tree is the verified one (same size) only
        ``cut.checkpoint`` is set; otherwise ``cut_leaf`` and ``inclusion_proof`` are
        set too, and ``consistency_proof`` holds the proof from ``verified_tree_size``
        to the new size, except when the new tree is exactly one leaf larger (then the
        inclusion proof of the last leaf proves the extension and the list is empty).

        Answering the whole cut (``results_unchanged`` False) is always correct: a
        transport without a cheap way to tell (a mirror of files, say) may implement
        this as ``GetLatestCutResponse(cut=self.get_latest_cut())``. The client verifies
        either answer fully and trusts neither claim.
        """
        ...

    def get_cut(self, cut_number: int) -> SignedCutPb:
        """A signed cut by number."""
        ...

    def watch_cuts(self, after_cut_number: int, *, idle_timeout: float) -> Iterator[SignedCutPb]:
        """Every cut after ``after_cut_number``, then new ones as they are made.

        The stream must end with a TransportError when no cut arrives for
        ``idle_timeout`` seconds (a frozen publisher or a silently dead connection).
        """
        ...

    def get_consistency_proof(self, from_size: int, to_size: int) -> list[bytes]:
        """Consistency proof hashes between two tree sizes."""
        ...

    def get_inclusion_proof(
        self, acta_id: str, revision: int, tree_size: int
    ) -> tuple[bytes, InclusionProofPb]:
        """An acta record's leaf bytes and its inclusion proof at ``tree_size``."""
        ...

    def get_leaves(self, start: int, count: int) -> list[bytes]:
        """Up to ``count`` consecutive leaves from ``start``, exactly as hashed."""
        ...

    def get_trust_root(self, version: int) -> bytes:
        """A serialized TrustRoot document (0 for the newest version)."""
        ...

    def get_election_definition(self) -> bytes:
        """The serialized ElectionDefinition."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, kw_only=True)
class TlsCredentials:
    """PEM material for mutual TLS with the publisher (or the Envoy in front of it).

    Attributes:
        ca: the CA certificate(s) the server's certificate must chain to.
        cert: this client's certificate chain (its media-outlet identity).
        key: this client's private key.
        server_name: name to check the server certificate against when it differs from
            the host in the endpoint (e.g. connecting to 127.0.0.1 of a "localhost" cert).
    """

    ca: bytes
    cert: bytes
    key: bytes
    server_name: str | None = None

    @classmethod
    def from_files(
        cls, *, ca: Path, cert: Path, key: Path, server_name: str | None = None
    ) -> TlsCredentials:
        """Read PEM files.

        Raises:
            OSError: if a file cannot be read.
        """
        return cls(
            ca=Path(ca).read_bytes(),
            cert=Path(cert).read_bytes(),
            key=Path(key).read_bytes(),
            server_name=server_name,
        )

    def __repr__(self) -> str:
        # Never print the private key.
        return f"TlsCredentials(server_name={self.server_name!r})"


# Marks of a TLS failure in gRPC's details of an UNAVAILABLE connection.
_TLS_FAILURES = ("TSI_", "Unwrap failed", "SSL", "handshake", "Handshake")


def _wrap(e: grpc.RpcError, what: str) -> TransportError:
    code = e.code() if isinstance(e, grpc.Call) else None
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    name = code.name if code is not None else "UNKNOWN"
    return TransportError(f"{what} failed: {name}: {details}")


class GrpcTransport:
    """The publication service over sync gRPC.

    Use :meth:`GrpcTransport.open` with TLS credentials, or
    :meth:`GrpcTransport.unsafe_plaintext` for tests and local servers on loopback.
    """

    def __init__(self, channel: grpc.Channel, *, timeout: float) -> None:
        """Wrap an open channel (prefer :meth:`open`).

        Args:
            channel: a gRPC channel to a PublicationService.
            timeout: deadline of unary calls, in seconds.
        """
        self._channel = channel
        self._stub = publication_pb2_grpc.PublicationServiceStub(channel)
        self._timeout = timeout
        self._closed = False
        # Set by open(): what a failed TLS connection is diagnosed with.
        self._endpoint: str | None = None
        self._credentials: TlsCredentials | None = None

    @contextlib.contextmanager
    def _rpc(self, what: str) -> Iterator[None]:
        """gRPC's errors as TransportError; a call on (or cut off by) a closed channel as
        a TransportError that says so, where grpc raises a bare ValueError."""
        try:
            yield
        except grpc.RpcError as e:
            if self._closed:
                raise TransportError(f"{what}: the client was closed") from None
            raise self._explain(e, what) from e
        except ValueError:
            if self._closed:
                raise TransportError(f"{what}: the client was closed") from None
            raise

    def _explain(self, e: grpc.RpcError, what: str) -> TransportError:
        """The TransportError of a failed call; a failed TLS connection says why, in
        words, from a handshake of our own (veritally_client._tls)."""
        error = _wrap(e, what)
        details = e.details() if isinstance(e, grpc.Call) else ""
        tls_failure = any(m in (details or "") for m in _TLS_FAILURES)
        if tls_failure and self._endpoint is not None and self._credentials is not None:
            reason = diagnose_handshake(self._endpoint, self._credentials)
            if reason is not None:
                return TransportError(f"{what}: cannot connect to {self._endpoint}: {reason}")
        return error

    @staticmethod
    def _options(max_message_bytes: int) -> list[tuple[str, int | str]]:
        return [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 1024 * 1024),  # requests are tiny
        ]

    @classmethod
    def open(
        cls,
        endpoint: str,
        *,
        credentials: TlsCredentials,
        timeout: float,
        max_message_bytes: int,
    ) -> Self:
        """Open a mutual-TLS channel to ``endpoint`` (``host:port``)."""
        options = cls._options(max_message_bytes)
        if credentials.server_name:
            options.append(("grpc.ssl_target_name_override", credentials.server_name))
        creds = grpc.ssl_channel_credentials(
            root_certificates=credentials.ca,
            private_key=credentials.key,
            certificate_chain=credentials.cert,
        )
        transport = cls(grpc.secure_channel(endpoint, creds, options=options), timeout=timeout)
        transport._endpoint = endpoint
        transport._credentials = credentials
        return transport

    @classmethod
    def unsafe_plaintext(
        cls, endpoint: str, *, timeout: float, max_message_bytes: int
    ) -> GrpcTransport:
        """Open a plaintext channel: no server authentication. Tests and loopback only.

        Verification of what is received does not depend on the channel, but without TLS
        anyone on the path can withhold cuts or see what is read.
        """
        options = cls._options(max_message_bytes)
        return cls(grpc.insecure_channel(endpoint, options=options), timeout=timeout)

    def close(self) -> None:
        """Close the channel (from any thread: calls in flight end with TransportError)."""
        self._closed = True
        self._channel.close()

    def get_latest_cut(self) -> SignedCutPb:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error.
        """
        with self._rpc("GetLatestCut"):
            resp = self._stub.GetLatestCut(
                publication_pb2.GetLatestCutRequest(), timeout=self._timeout
            )
        return resp.cut

    def get_latest_cut_since(self, verified_tree_size: int) -> LatestCutPb:
        """See :class:`Transport`: GetLatestCut with ``verified_tree_size``.

        Raises:
            TransportError: on any gRPC error.
        """
        with self._rpc("GetLatestCut"):
            resp: LatestCutPb = self._stub.GetLatestCut(
                publication_pb2.GetLatestCutRequest(verified_tree_size=verified_tree_size),
                timeout=self._timeout,
            )
        return resp

    def get_cut(self, cut_number: int) -> SignedCutPb:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error (NOT_FOUND for an unknown cut).
        """
        with self._rpc("GetCut"):
            resp = self._stub.GetCut(
                publication_pb2.GetCutRequest(cut_number=cut_number), timeout=self._timeout
            )
        return resp.cut

    def watch_cuts(self, after_cut_number: int, *, idle_timeout: float) -> Iterator[SignedCutPb]:
        """See :class:`Transport`. The stream has no overall deadline; a timer cancels it
        after ``idle_timeout`` seconds without a message, and closing the iterator
        cancels it too.

        Raises:
            TransportError: on any gRPC error, on idleness, and when the stream ends.
        """
        with self._rpc("WatchCuts"):
            call = self._stub.WatchCuts(
                publication_pb2.WatchCutsRequest(after_cut_number=after_cut_number)
            )
        idle = threading.Event()

        def expire() -> None:
            idle.set()
            call.cancel()

        def arm() -> threading.Timer:
            timer = threading.Timer(idle_timeout, expire)
            timer.daemon = True
            timer.start()
            return timer

        timer = arm()
        try:
            for resp in call:
                timer.cancel()
                yield resp.cut
                timer = arm()
        except grpc.RpcError as e:
            if self._closed:
                raise TransportError("WatchCuts: the client was closed") from None
            if idle.is_set():
                raise TransportError(
                    f"WatchCuts: no cut for {idle_timeout:.0f} s; reconnecting"
                ) from e
            raise self._explain(e, "WatchCuts") from e
        finally:
            timer.cancel()
            call.cancel()
        raise TransportError("WatchCuts: the server ended the stream")

    def get_consistency_proof(self, from_size: int, to_size: int) -> list[bytes]:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error.
        """
        with self._rpc("GetConsistencyProof"):
            resp = self._stub.GetConsistencyProof(
                publication_pb2.GetConsistencyProofRequest(from_size=from_size, to_size=to_size),
                timeout=self._timeout,
            )
        return list(resp.proof.hashes)

    def get_inclusion_proof(
        self, acta_id: str, revision: int, tree_size: int
    ) -> tuple[bytes, InclusionProofPb]:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error (NOT_FOUND for an unknown acta).
        """
        with self._rpc("GetActaInclusionProof"):
            resp = self._stub.GetActaInclusionProof(
                publication_pb2.GetActaInclusionProofRequest(
                    acta_id=acta_id, revision=revision, tree_size=tree_size
                ),
                timeout=self._timeout,
            )
        return resp.leaf, resp.proof

    def get_leaves(self, start: int, count: int) -> list[bytes]:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error.
        """
        with self._rpc("GetLeaves"):
            resp = self._stub.GetLeaves(
                publication_pb2.GetLeavesRequest(start=start, count=count),
                timeout=self._timeout,
            )
        return list(resp.leaves)

    def get_trust_root(self, version: int) -> bytes:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error (NOT_FOUND for an unknown version).
        """
        with self._rpc("GetTrustRoot"):
            resp = self._stub.GetTrustRoot(
                publication_pb2.GetTrustRootRequest(version=version), timeout=self._timeout
            )
        return resp.trust_root.SerializeToString()

    def get_election_definition(self) -> bytes:
        """See :class:`Transport`.

        Raises:
            TransportError: on any gRPC error.
        """
        with self._rpc("GetElectionDefinition"):
            resp = self._stub.GetElectionDefinition(
                publication_pb2.GetElectionDefinitionRequest(), timeout=self._timeout
            )
        return resp.definition
