"""Client channels from one veritally service to another (through the mesh in a
deployment)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from veritally.rpc.tls import TlsFiles

__all__ = ["MAX_MESSAGE_BYTES", "aio_channel"]

# Largest message a service sends, and a client channel accepts, in bytes. Results blobs
# of a national election are a few hundred KiB and leaf pages are capped well below this.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def aio_channel(
    target: str, *, tls: TlsFiles | None = None, server_name: str | None = None
) -> grpc.aio.Channel:
    """Open a grpc.aio channel to another service (through the mesh in a deployment).

    Args:
        target: ``host:port``.
        tls: client certificate and CA; plaintext when None (tests on loopback only).
        server_name: TLS name to check the server certificate against, when it differs
            from the host in ``target``.
    """
    options = list(_CHANNEL_OPTIONS)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))  # type: ignore[arg-type]
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)
