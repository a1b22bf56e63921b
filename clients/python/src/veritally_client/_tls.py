"""The client's TLS material checked before connecting, and handshake failures in words.

gRPC reports every refused client certificate the same way (``UNAVAILABLE: ... Unwrap
failed (TSI_DATA_CORRUPTED)``), whatever the server said, because with TLS 1.3 the
server's alert arrives after the client considers the handshake done. Two things help a
newsroom instead:

* :func:`check_credentials`, before any connection: the files parse as what they claim,
  the key is the certificate's, and the certificate is within its validity;
* :func:`diagnose_handshake`, after gRPC failed to connect: one handshake of our own with
  the same files (Python's ``ssl``), whose alert (expired, revoked, unknown CA, ...) or
  verification error is turned into a sentence.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from veritally_client._errors import CredentialsError

if TYPE_CHECKING:
    from veritally_client._transport import TlsCredentials

__all__ = ["check_credentials", "diagnose_handshake"]

# What the server's alert means for the one reading the message (OpenSSL's reason names).
_ALERTS: Final = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the publisher says this client's certificate has "
    "expired: ask the authority for a new one",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the authority has revoked this client's "
    "certificate: ask it why, and for a new one",
    "TLSV1_ALERT_UNKNOWN_CA": "the publisher does not know the CA that issued this "
    "client's certificate (a certificate of another stack or authority?)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the publisher refused this client's certificate as bad",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the publisher refused this client's certificate "
    "as unsupported (its key usage or type)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the publisher refused this client's certificate",
    "TLSV1_ALERT_ACCESS_DENIED": "the publisher refused access to this client's identity",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the publisher and this client share no TLS version",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the publisher requires a client certificate",
}
_DIAGNOSIS_TIMEOUT_S: Final = 3.0


def check_credentials(credentials: TlsCredentials, now: dt.datetime) -> None:
    """Check the client's own TLS material, locally.

    Raises:
        CredentialsError: a file is not PEM of its kind, the key is not the
            certificate's, or the certificate has expired or is not valid yet at ``now``.
    """
    try:
        x509.load_pem_x509_certificates(credentials.ca)
    except ValueError:
        raise CredentialsError("the CA file (--ca) holds no PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificates(credentials.cert)[0]
    except ValueError:
        raise CredentialsError("the certificate file (--cert) holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(credentials.key, password=None)
    except (ValueError, TypeError):
        raise CredentialsError(
            "the key file (--key) holds no unencrypted PEM private key"
        ) from None
    subject = cert.subject.rfc4514_string() or "(no subject)"
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise CredentialsError(
            f"the key (--key) is not the key of the certificate (--cert) of {subject}: "
            "give the key file issued with that certificate"
        )
    if now >= cert.not_valid_after_utc:
        raise CredentialsError(
            f"the certificate (--cert) of {subject} expired at "
            f"{cert.not_valid_after_utc.isoformat()}: ask the authority for a new one"
        )
    if now < cert.not_valid_before_utc:
        raise CredentialsError(
            f"the certificate (--cert) of {subject} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()} (is this machine's clock right?)"
        )


def diagnose_handshake(endpoint: str, credentials: TlsCredentials) -> str | None:
    """Why a TLS connection to ``endpoint`` with ``credentials`` fails, in words.

    Returns:
        A sentence for an alert from the server or a failed check of the server's
        certificate; None if the handshake succeeds or fails for another reason
        (nothing listening, a timeout: gRPC's own message says those well).
    """
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        port_number = int(port)
    except ValueError:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=_text(credentials.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory(prefix="veritally-tls-") as directory:
        # ssl loads a certificate chain from files only; they live for this call.
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert.write_bytes(credentials.cert)
        key.touch(mode=0o600)
        key.write_bytes(credentials.key)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError:
            return None  # check_credentials says what is wrong with the files
    name = credentials.server_name or host
    try:
        with (
            socket.create_connection((host, port_number), timeout=_DIAGNOSIS_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            # With TLS 1.3 the server judges the client's certificate after the client
            # has finished: its verdict is the first thing to read. A server that is
            # happy waits for the HTTP/2 preface instead, and the read times out.
            tls.recv(1)
    except ssl.SSLCertVerificationError as e:
        return (
            f"the publisher's certificate does not verify against the CA given (--ca) for "
            f"the name {name!r}: {e.verify_message}"
        )
    except ssl.SSLError as e:
        reason = e.reason or ""
        meaning = _ALERTS.get(reason)
        if meaning is not None:
            return f"{meaning} (TLS alert {reason.lower()})"
        return f"the TLS handshake failed: {reason.lower() or e}" if reason else None
    except OSError:
        return None
    return None


def _text(pem: bytes) -> str:
    return pem.decode("ascii", "replace")
