"""PEM files for mutual TLS, on both sides of a call between services.

In a deployment every service accepts only mutual TLS from the Envoy mesh; in tests they
may listen in plaintext on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TlsFiles"]


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for mutual TLS.

    Attributes:
        cert: this party's certificate chain.
        key: its private key.
        ca: the CA that peers' certificates must chain to.
    """

    cert: Path
    key: Path
    ca: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate from ``ca``."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials presenting ``cert`` and trusting ``ca``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )
