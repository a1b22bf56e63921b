"""What a newsroom sees when its TLS material is wrong, through the real Envoy edge.

Before, an expired, revoked or unknown-CA certificate all ended in
``UNAVAILABLE ... Unwrap failed (TSI_DATA_CORRUPTED)`` (exit 3) with gRPC's C-core log
lines on stderr, and a key of another certificate in ``UNAVAILABLE ... UNKNOWN``. Each
case runs ``veritally-client latest`` as a newsroom would and reads its stderr.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from veritally.pki import Pki, issue_foreign_identity
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client._cli import EXIT_OK, EXIT_TRANSPORT, EXIT_USAGE

pytestmark = [pytest.mark.e2e]

CLI = Path(sys.executable).parent / "veritally-client"
GRPC_LOG_MARKS = ("ssl_transport_security", "secure_endpoint.cc", "TSI_DATA_CORRUPTED", "E1")
WAIT_S = 15.0  # bounded wait for Envoy to apply a new CRL (s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("tls"))
    Bootstrap(casillas=30, seed=5).ensure(state)
    with Stack(state, base_port=None, drain_seconds=0.5, interval_s=0.5) as running:
        yield running


def _latest(
    stack: Stack, tmp: Path, *, cert: Path, key: Path, ca: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [
        str(CLI),
        "--endpoint",
        stack.endpoints.edge,
        "--trust-root",
        str(stack.state.trust_root_v1),
        "--state-dir",
        str(tmp / "state"),
        "--ca",
        str(ca or stack.tls("outlet-01").ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
        "latest",
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _no_grpc_log(stderr: str) -> None:
    for mark in GRPC_LOG_MARKS:
        assert mark not in stderr, stderr


def _expired_copy(pki: Pki, name: str, out: Path) -> tuple[Path, Path]:
    """A certificate of ``name``'s identity, signed by the stack's CA, expired yesterday."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    source = x509.load_pem_x509_certificate(pki.identity(name).cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(source.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in source.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier):
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = out / "expired.pem", out / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_good_certificate_reads_the_latest_cut(stack: Stack, tmp_path: Path) -> None:
    tls = stack.tls("outlet-01")
    done = _latest(stack, tmp_path, cert=tls.cert, key=tls.key)
    assert done.returncode == EXIT_OK, done.stderr
    assert "verified cut" in done.stderr + done.stdout


def test_expired_certificate_is_a_local_mistake_said_before_connecting(
    stack: Stack, tmp_path: Path
) -> None:
    cert, key = _expired_copy(stack.pki, "outlet-01", tmp_path)
    done = _latest(stack, tmp_path, cert=cert, key=key)
    assert done.returncode == EXIT_USAGE
    assert "the certificate (--cert) of CN=outlet-01 expired at " in done.stderr
    _no_grpc_log(done.stderr)


def test_key_of_another_certificate_is_a_local_mistake_said_before_connecting(
    stack: Stack, tmp_path: Path
) -> None:
    done = _latest(
        stack, tmp_path, cert=stack.tls("outlet-01").cert, key=stack.tls("outlet-02").key
    )
    assert done.returncode == EXIT_USAGE
    assert "the key (--key) is not the key of the certificate (--cert) of CN=outlet-01" in (
        done.stderr
    )
    _no_grpc_log(done.stderr)


def test_certificate_of_another_ca_is_said_in_words(stack: Stack, tmp_path: Path) -> None:
    foreign = issue_foreign_identity(
        tmp_path / "foreign", trust_domain=stack.pki.trust_domain, role="media", name="outlet-01"
    )
    done = _latest(stack, tmp_path, cert=foreign.cert, key=foreign.key)
    assert done.returncode == EXIT_TRANSPORT
    assert "the publisher does not know the CA that issued this client's certificate" in (
        done.stderr
    )
    assert "(TLS alert tlsv1_alert_unknown_ca)" in done.stderr
    _no_grpc_log(done.stderr)


def test_wrong_ca_for_the_publisher_is_said_in_words(stack: Stack, tmp_path: Path) -> None:
    # A CA of another authority (the files it writes beside its own certificate).
    issue_foreign_identity(
        tmp_path / "foreign", trust_domain=stack.pki.trust_domain, role="media", name="x"
    )
    tls = stack.tls("outlet-01")
    done = _latest(
        stack, tmp_path, cert=tls.cert, key=tls.key, ca=tmp_path / "foreign" / "foreign-ca.pem"
    )
    assert done.returncode == EXIT_TRANSPORT
    assert "the publisher's certificate does not verify against the CA given (--ca)" in (
        done.stderr
    )
    _no_grpc_log(done.stderr)


def test_revoked_certificate_is_said_in_words(stack: Stack, tmp_path: Path) -> None:
    stack.pki.revoke("outlet-03")
    tls = stack.tls("outlet-03")
    deadline = time.monotonic() + WAIT_S
    while True:  # Envoy applies the new CRL on its next read of the file
        done = _latest(stack, tmp_path, cert=tls.cert, key=tls.key)
        if done.returncode != EXIT_OK or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert done.returncode == EXIT_TRANSPORT, done.stderr
    assert "the authority has revoked this client's certificate" in done.stderr
    assert "(TLS alert sslv3_alert_certificate_revoked)" in done.stderr
    _no_grpc_log(done.stderr)
