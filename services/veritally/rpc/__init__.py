"""The gRPC plumbing every veritally service shares: its server (health, reflection,
drain), client channels, mutual TLS files, request parsing, per-identity stream bounds
(:mod:`veritally.rpc.streams`) and error statuses (:mod:`veritally.rpc.status`)."""

from veritally.rpc.channel import MAX_MESSAGE_BYTES, aio_channel
from veritally.rpc.interceptors import MalformedRequestInterceptor
from veritally.rpc.server import SMALL_REQUEST_BYTES, ServiceServer, run_until_signalled
from veritally.rpc.tls import TlsFiles

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SMALL_REQUEST_BYTES",
    "MalformedRequestInterceptor",
    "ServiceServer",
    "TlsFiles",
    "aio_channel",
    "run_until_signalled",
]
