"""The deployment's certificate authority and the X.509 identities of every party.

Every connection in a veritally deployment is mutual TLS, and every party is named by a
SPIFFE-style URI SAN in its certificate: ``spiffe://<trust domain>/<role>/<name>``. Envoy
authorises by that URI (RBAC) and rate-limits by it, so the role in the path is what
decides what a party may call:

* ``service/ingest``, ``service/aggregation``, ``service/publication``: the services,
  which also carry DNS/IP SANs for the names Envoy dials them by;
* ``service/envoy``: the mesh itself (edge and internal listeners, and the client
  certificate it presents to the services), with ``localhost`` and ``127.0.0.1`` since
  clients connect to it by address;
* ``media/outlet-NN``: accredited media outlets (read publication);
* ``capture/cc-NN``: capture centres (submit actas to ingest);
* ``operator/ops-NN``: operators (ingest's administrative calls).

Layout of a PKI directory (everything the mesh and the services need, and a manifest)::

    DIR/manifest.json            every identity and its files, the revoked serials
    DIR/ca/ca.pem, ca.key         the CA (key mode 0600)
    DIR/ca/crl.pem                the CA's certificate revocation list (always present)
    DIR/<role>/<name>.pem, .key   one identity (key mode 0600)

Keys are ECDSA P-256: small, fast to generate in tests and supported by Envoy (BoringSSL)
and gRPC alike. Private keys are created with ``os.open(..., 0o600)`` and renamed into
place, so they are never readable by others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veritally.errors import VeritallyError

__all__ = [
    "CA_VALIDITY",
    "CRL_VALIDITY",
    "ENVOY_NAME",
    "LEAF_VALIDITY",
    "MANIFEST_NAME",
    "ROLE_CAPTURE",
    "ROLE_MEDIA",
    "ROLE_OPERATOR",
    "ROLE_SERVICE",
    "SERVICE_NAMES",
    "Identity",
    "Pki",
    "PkiError",
    "PkiLayout",
    "ServiceSans",
    "capture_operator_name",
    "capture_operator_spiffe_id",
    "crl_next_update",
    "init_pki",
    "is_valid_name",
    "issue_foreign_identity",
    "layout",
    "spiffe_id",
]

ROLE_SERVICE = "service"
ROLE_MEDIA = "media"
ROLE_CAPTURE = "capture"
ROLE_OPERATOR = "operator"
_ROLES = (ROLE_SERVICE, ROLE_MEDIA, ROLE_CAPTURE, ROLE_OPERATOR)

# The three services, and the mesh's own identity (also a service).
SERVICE_NAMES = ("ingest", "aggregation", "publication")
ENVOY_NAME = "envoy"

MANIFEST_NAME = "manifest.json"
_MANIFEST_VERSION = 1

# An election night lasts a day or two; certificates outlive it with a wide margin but
# not by years, so a leaked key of a past election is useless. CA: five years, so that
# one CA can serve a rehearsal cycle; leaves: 90 days. Both in days.
CA_VALIDITY = dt.timedelta(days=5 * 365)
LEAF_VALIDITY = dt.timedelta(days=90)
# A CRL's nextUpdate, a week after it is issued (in days). Envoy (BoringSSL) DOES enforce
# it: once nextUpdate has passed, every new handshake on every listener fails as if the
# certificate were revoked (`ssl.fail_verify_error`). So a CRL is not written once: it is
# reissued on every revocation and on a schedule by `veritally up` (see
# veritally.supervisor.CrlKeeper and docs/operations.md); a week leaves an operator days
# to notice and fix a CA that stopped reissuing, and a relying party would still notice
# a CA stalled for longer.
CRL_VALIDITY = dt.timedelta(days=7)
# Clocks of the parties may differ by a little; certificates are valid from a few minutes
# before they were issued (in minutes).
_BACKDATE = dt.timedelta(minutes=5)

# A trust domain is a DNS-like name; a name is a path segment. Kept strict so that the
# URI SANs and the file names built from them need no escaping.
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$")


def layout(root: Path) -> PkiLayout:
    """Where a PKI directory keeps its files (whether or not it exists yet)."""
    return PkiLayout(root=Path(root))


@dataclass(frozen=True)
class PkiLayout:
    """The file layout of a PKI directory; see the module docstring.

    Attributes:
        root: the directory.
    """

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (what every party trusts)."""
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA private key (mode 0600; needed only to issue and revoke)."""
        return self.root / "ca" / "ca.key"

    @property
    def crl(self) -> Path:
        """The CRL, signed by the CA; always present (empty when nothing is revoked)."""
        return self.root / "ca" / "crl.pem"

    def cert(self, role: str, name: str) -> Path:
        """The certificate of ``<role>/<name>``."""
        return self.root / role / f"{name}.pem"

    def key(self, role: str, name: str) -> Path:
        """The private key of ``<role>/<name>``."""
        return self.root / role / f"{name}.key"


class PkiError(VeritallyError):
    """A PKI directory is missing, inconsistent, or asked for an identity it lacks."""


def crl_next_update(path: Path) -> dt.datetime:
    """The nextUpdate of the CRL at ``path`` (UTC): when Envoy stops accepting it.

    Raises:
        PkiError: the file is missing, is not a PEM CRL, or has no nextUpdate.
    """
    try:
        crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot read the CRL {path}: {e}") from e
    next_update = crl.next_update_utc
    if next_update is None:
        raise PkiError(f"the CRL {path} has no nextUpdate")
    return next_update


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may name a party in a SPIFFE ID: 1 to 64 lowercase ASCII letters,
    digits, ``-`` and ``_``, starting and ending with a letter or digit (so no two names
    look alike)."""
    return bool(_NAME_RE.match(name))


def spiffe_id(trust_domain: str, role: str, name: str) -> str:
    """The SPIFFE ID of a party: ``spiffe://<trust domain>/<role>/<name>``.

    Raises:
        ValueError: a malformed trust domain, an unknown role or a malformed name.
    """
    if not _TRUST_DOMAIN_RE.match(trust_domain):
        raise ValueError(f"trust domain must be a lowercase DNS-like name, got {trust_domain!r}")
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    if not _NAME_RE.match(name):
        raise ValueError(f"name must be a lowercase path segment, got {name!r}")
    return f"spiffe://{trust_domain}/{role}/{name}"


# Capture operators -----------------------------------------------------------------
# A capture centre's operators each hold their own certificate, whose SPIFFE ID names
# the centre and the operator: ``spiffe://<td>/capture/<centre>/<operator>``. Envoy's
# RBAC admits the whole ``capture/`` prefix; ingest reads the centre and the operator
# from the verified ID (docs/adr/0034-operator-identity-from-certificates.md). Both
# segments are names (``_NAME_RE``: short lowercase ASCII), so no two operators can
# look alike.


def capture_operator_name(centre: str, operator: str) -> str:
    """The PKI name of a capture operator's identity, ``<centre>/<operator>``.

    Raises:
        ValueError: a malformed centre or operator name.
    """
    for label, value in (("centre", centre), ("operator", operator)):
        if not _NAME_RE.match(value):
            raise ValueError(f"{label} must be a lowercase path segment, got {value!r}")
    return f"{centre}/{operator}"


def capture_operator_spiffe_id(trust_domain: str, centre: str, operator: str) -> str:
    """``spiffe://<trust domain>/capture/<centre>/<operator>``.

    Raises:
        ValueError: a malformed trust domain, centre or operator name.
    """
    capture_operator_name(centre, operator)  # validates both names
    return spiffe_id(trust_domain, ROLE_CAPTURE, centre) + "/" + operator


@dataclass(frozen=True, kw_only=True)
class Identity:
    """One party's certificate and key, as files.

    Attributes:
        name: the name, unique within the PKI (``ingest``, ``outlet-01``, ``cc-03``...).
        role: ``service``, ``media``, ``capture`` or ``operator``.
        spiffe_id: the URI SAN, ``spiffe://<trust domain>/<role>/<name>``.
        cert: PEM certificate.
        key: PEM private key (PKCS#8, unencrypted, mode 0600).
        serial: the certificate's serial number (what a CRL lists).
        dns_names: DNS SANs (services and Envoy only).
        ip_addresses: IP SANs (services and Envoy only).
    """

    name: str
    role: str
    spiffe_id: str
    cert: Path
    key: Path
    serial: int
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a key that is never readable by others: created 0600, then renamed."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CRL, manifest) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(trust_domain: str, *, common_name: str) -> _Issued:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        # Path length 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert=cert, key=key)


def _make_leaf(
    ca: _Issued,
    *,
    uri: str,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
) -> _Issued:
    key = _new_key()
    now = _now()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    sans += [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    # Every party is a TLS client (services call each other through the mesh); those
    # that listen are also servers.
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + LEAF_VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        # SPIFFE X.509-SVIDs carry the URI SAN; critical only when the subject is empty,
        # which ours is not.
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(ca.key, hashes.SHA256())
    )
    return _Issued(cert=cert, key=key)


def _build_crl(
    ca: _Issued, revoked: dict[int, dt.datetime], validity: dt.timedelta
) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + validity)
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


class Pki:
    """A PKI directory: the CA, every identity, the CRL. Obtain one from
    :func:`init_pki` or :meth:`Pki.load`.

    Attributes:
        root: the directory.
        trust_domain: the SPIFFE trust domain.
    """

    def __init__(
        self,
        *,
        root: Path,
        trust_domain: str,
        identities: dict[str, Identity],
        revoked: dict[int, dt.datetime],
    ) -> None:
        """Use :func:`init_pki` or :meth:`Pki.load` instead."""
        self.root = root
        self.trust_domain = trust_domain
        self._identities = dict(identities)
        self._revoked = dict(revoked)

    # -- files ------------------------------------------------------------------------

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (what every party trusts)."""
        return layout(self.root).ca_cert

    @property
    def ca_key(self) -> Path:
        """The CA private key (mode 0600; needed only to issue and revoke)."""
        return layout(self.root).ca_key

    @property
    def crl(self) -> Path:
        """The CRL, signed by the CA; always present (empty when nothing is revoked)."""
        return layout(self.root).crl

    @property
    def manifest(self) -> Path:
        """The manifest listing every identity and its files."""
        return self.root / MANIFEST_NAME

    # -- queries ----------------------------------------------------------------------

    def identity(self, name: str) -> Identity:
        """The identity named ``name`` (``ingest``, ``envoy``, ``outlet-01``...).

        Raises:
            PkiError: no such identity.
        """
        try:
            return self._identities[name]
        except KeyError:
            raise PkiError(f"no identity named {name!r} in {self.root}") from None

    def identities(self, role: str | None = None) -> list[Identity]:
        """Every identity, or those of one role, in a stable order."""
        return [i for i in self._identities.values() if role is None or i.role == role]

    def is_revoked(self, name: str) -> bool:
        """Whether the certificate of ``name`` is on the CRL.

        Raises:
            PkiError: no such identity.
        """
        return self.identity(name).serial in self._revoked

    # -- changes ----------------------------------------------------------------------

    def _load_ca(self) -> _Issued:
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key} is not an ECDSA key")
        return _Issued(cert=cert, key=key)

    def revoke(self, name: str) -> Identity:
        """Put the certificate of ``name`` on the CRL and rewrite the CRL file.

        The new CRL is renamed into place, which an Envoy watching it through SDS
        picks up for new connections; an Envoy with a static CRL needs a restart (see
        docs/mesh.md). Revoking twice is harmless.

        Returns:
            The revoked identity.

        Raises:
            PkiError: no such identity, or the CA files are unreadable.
        """
        identity = self.identity(name)
        with self._crl_lock():
            # Another process (the stack's CRL reissue, another revoke) may have written
            # since this one loaded: keep every serial the manifest lists.
            self._merge_revoked()
            if identity.serial not in self._revoked:
                self._revoked[identity.serial] = _now()
            self._write_crl(self._load_ca())
            self._write_manifest()
        return identity

    def reissue_crl(self, *, validity: dt.timedelta = CRL_VALIDITY) -> dt.datetime:
        """Sign the CRL again with the same revoked serials and a new nextUpdate, and
        rename it into place (an Envoy watching it through SDS picks it up for new
        handshakes without a restart). Returns the new nextUpdate.

        The revoked serials are read again from the manifest under the same lock as
        :meth:`revoke`, so a revocation made by another process is never undone.

        Raises:
            ValueError: a non-positive validity.
            PkiError: the CA files are unreadable (an offline CA: reissue where the key
                is, and copy the CRL in by renaming).
        """
        if validity <= dt.timedelta(0):
            raise ValueError(f"validity must be positive, got {validity}")
        with self._crl_lock():
            self._merge_revoked()
            try:
                ca = self._load_ca()
            except OSError as e:
                raise PkiError(f"cannot load the CA to reissue the CRL: {e}") from e
            self._write_crl(ca, validity=validity)
        return crl_next_update(self.crl)

    @contextlib.contextmanager
    def _crl_lock(self) -> Iterator[None]:
        """An exclusive lock on the CRL (and the manifest's revoked list) across
        processes: ``DIR/ca/.crl.lock``, held with flock."""
        lock_path = self.crl.with_name(".crl.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _merge_revoked(self) -> None:
        if not self.manifest.exists():
            return
        on_disk = Pki.load(self.root)._revoked
        for serial, when in on_disk.items():
            self._revoked.setdefault(serial, when)

    def issue(
        self,
        *,
        role: str,
        name: str,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> Identity:
        """Issue (or reissue) an identity signed by this CA and record it.

        Raises:
            ValueError: a malformed role or name.
            PkiError: the CA files are unreadable.
        """
        ca = self._load_ca()
        identity = self._issue(ca, role=role, name=name, dns=dns_names, ips=ip_addresses)
        self._write_manifest()
        return identity

    def issue_capture_operator(self, *, centre: str, operator: str) -> Identity:
        """Issue (or reissue) the certificate of one operator of a capture centre,
        ``spiffe://<td>/capture/<centre>/<operator>``, named ``<centre>/<operator>``.

        Raises:
            ValueError: a malformed centre or operator name.
            PkiError: the CA files are unreadable.
        """
        ca = self._load_ca()
        identity = self._issue_capture_operator(ca, centre=centre, operator=operator)
        self._write_manifest()
        return identity

    def _issue_capture_operator(self, ca: _Issued, *, centre: str, operator: str) -> Identity:
        return self._issue(
            ca,
            role=ROLE_CAPTURE,
            name=capture_operator_name(centre, operator),
            dns=(),
            ips=(),
            uri=capture_operator_spiffe_id(self.trust_domain, centre, operator),
        )

    def _issue(
        self,
        ca: _Issued,
        *,
        role: str,
        name: str,
        dns: Sequence[str],
        ips: Sequence[str],
        uri: str | None = None,
    ) -> Identity:
        uri = uri or spiffe_id(self.trust_domain, role, name)
        issued = _make_leaf(
            ca,
            uri=uri,
            common_name=name,
            dns_names=dns,
            ip_addresses=ips,
            server=role == ROLE_SERVICE,
        )
        cert_path = layout(self.root).cert(role, name)
        key_path = layout(self.root).key(role, name)
        _write_private_key(key_path, issued.key)
        _write_public(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM))
        identity = Identity(
            name=name,
            role=role,
            spiffe_id=uri,
            cert=cert_path,
            key=key_path,
            serial=issued.cert.serial_number,
            dns_names=tuple(dns),
            ip_addresses=tuple(ips),
        )
        self._identities[name] = identity
        return identity

    def _write_crl(self, ca: _Issued, *, validity: dt.timedelta = CRL_VALIDITY) -> None:
        crl = _build_crl(ca, self._revoked, validity)
        _write_public(self.crl, crl.public_bytes(serialization.Encoding.PEM))

    def _write_manifest(self) -> None:
        doc = {
            "version": _MANIFEST_VERSION,
            "trust_domain": self.trust_domain,
            "ca": {
                "cert": str(self.ca_cert.relative_to(self.root)),
                "key": str(self.ca_key.relative_to(self.root)),
                "crl": str(self.crl.relative_to(self.root)),
            },
            "identities": [
                {
                    "name": i.name,
                    "role": i.role,
                    "spiffe_id": i.spiffe_id,
                    "cert": str(i.cert.relative_to(self.root)),
                    "key": str(i.key.relative_to(self.root)),
                    "serial": str(i.serial),
                    "dns_names": list(i.dns_names),
                    "ip_addresses": list(i.ip_addresses),
                }
                for i in self._identities.values()
            ],
            "revoked": [
                {"serial": str(s), "revoked_at": t.isoformat()}
                for s, t in sorted(self._revoked.items())
            ],
        }
        _write_public(self.manifest, (json.dumps(doc, indent=2) + "\n").encode())

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, root: Path) -> Pki:
        """Read a PKI directory made by :func:`init_pki`.

        Raises:
            PkiError: no manifest, or a manifest that is not ours.
        """
        root = Path(root)
        try:
            doc = json.loads((root / MANIFEST_NAME).read_text())
        except FileNotFoundError:
            raise PkiError(f"{root} has no {MANIFEST_NAME}: run `veritally pki init`") from None
        except json.JSONDecodeError as e:
            raise PkiError(f"{root / MANIFEST_NAME} is not JSON: {e}") from e
        if not isinstance(doc, dict) or doc.get("version") != _MANIFEST_VERSION:
            raise PkiError(f"{root / MANIFEST_NAME}: expected version {_MANIFEST_VERSION}")
        try:
            identities = {
                entry["name"]: Identity(
                    name=entry["name"],
                    role=entry["role"],
                    spiffe_id=entry["spiffe_id"],
                    cert=root / entry["cert"],
                    key=root / entry["key"],
                    serial=int(entry["serial"]),
                    dns_names=tuple(entry["dns_names"]),
                    ip_addresses=tuple(entry["ip_addresses"]),
                )
                for entry in doc["identities"]
            }
            revoked = {
                int(r["serial"]): dt.datetime.fromisoformat(r["revoked_at"]) for r in doc["revoked"]
            }
            trust_domain = str(doc["trust_domain"])
        except (KeyError, TypeError, ValueError) as e:
            raise PkiError(f"{root / MANIFEST_NAME} is malformed: {e!r}") from e
        return cls(root=root, trust_domain=trust_domain, identities=identities, revoked=revoked)


@dataclass(frozen=True, kw_only=True)
class ServiceSans:
    """The DNS and IP names a service certificate carries: the names Envoy dials.

    Attributes:
        dns_names: host names (defaults: the service name and localhost).
        ip_addresses: addresses (default 127.0.0.1 for the single-machine layout).
    """

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)


_DEFAULT_SERVICE_SANS = ServiceSans()


@dataclass(frozen=True, kw_only=True)
class _Plan:
    role: str
    name: str
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def init_pki(
    root: Path,
    *,
    trust_domain: str,
    media: int,
    capture_centres: int,
    operators: int = 1,
    capture_operators: int = 0,
    service_sans: dict[str, ServiceSans] | None = None,
) -> Pki:
    """Create a CA, an empty CRL and every identity of a deployment in ``root``.

    Args:
        root: the directory; must not already hold a PKI.
        trust_domain: the SPIFFE trust domain (``veritally.example``).
        media: number of media outlets (``outlet-01``...).
        capture_centres: number of capture centres (``cc-01``...).
        operators: number of operators (``ops-01``...), who correct actas and resolve
            cross-checks.
        capture_operators: operators per capture centre (``cc-01/op-1``...), each with
            a certificate ``spiffe://<td>/capture/<centre>/<operator>``; double capture
            needs two of them.
        service_sans: extra DNS/IP SANs per service name, for the hosts Envoy dials in a
            multi-host deployment. Every service always has its own name and
            ``localhost`` as DNS SANs.

    Raises:
        FileExistsError: ``root`` already holds a PKI (never overwrite a CA silently).
        ValueError: a malformed trust domain or a negative count.
    """
    root = Path(root)
    if (root / MANIFEST_NAME).exists():
        raise FileExistsError(f"{root} already holds a PKI")
    for label, count in (("media", media), ("capture_centres", capture_centres)):
        if count < 0:
            raise ValueError(f"{label} must be >= 0, got {count}")
    if operators < 0:
        raise ValueError(f"operators must be >= 0, got {operators}")
    if capture_operators < 0:
        raise ValueError(f"capture_operators must be >= 0, got {capture_operators}")
    spiffe_id(trust_domain, ROLE_SERVICE, ENVOY_NAME)  # validates the trust domain
    sans = service_sans or {}

    plans: list[_Plan] = []
    for svc in SERVICE_NAMES:
        extra = sans.get(svc, _DEFAULT_SERVICE_SANS)
        dns = tuple(dict.fromkeys((svc, "localhost", *extra.dns_names)))
        plans.append(_Plan(role=ROLE_SERVICE, name=svc, dns=dns, ips=extra.ip_addresses))
    envoy_extra = sans.get(ENVOY_NAME, _DEFAULT_SERVICE_SANS)
    plans.append(
        _Plan(
            role=ROLE_SERVICE,
            name=ENVOY_NAME,
            dns=tuple(dict.fromkeys((ENVOY_NAME, "localhost", *envoy_extra.dns_names))),
            ips=tuple(dict.fromkeys(("127.0.0.1", *envoy_extra.ip_addresses))),
        )
    )
    plans += [_Plan(role=ROLE_MEDIA, name=f"outlet-{i:02d}") for i in range(1, media + 1)]
    plans += [_Plan(role=ROLE_CAPTURE, name=f"cc-{i:02d}") for i in range(1, capture_centres + 1)]
    plans += [_Plan(role=ROLE_OPERATOR, name=f"ops-{i:02d}") for i in range(1, operators + 1)]

    root.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(trust_domain, common_name=f"veritally CA ({trust_domain})")
    pki = Pki(root=root, trust_domain=trust_domain, identities={}, revoked={})
    _write_private_key(pki.ca_key, ca.key)
    _write_public(pki.ca_cert, ca.cert.public_bytes(serialization.Encoding.PEM))
    pki._write_crl(ca)
    for plan in plans:
        pki._issue(ca, role=plan.role, name=plan.name, dns=plan.dns, ips=plan.ips)
    for i in range(1, capture_centres + 1):
        for j in range(1, capture_operators + 1):
            pki._issue_capture_operator(ca, centre=f"cc-{i:02d}", operator=f"op-{j}")
    # The manifest goes last: a directory with a manifest is a complete PKI.
    pki._write_manifest()
    return pki


def issue_foreign_identity(
    directory: Path,
    *,
    trust_domain: str,
    role: str,
    name: str,
    ca: Pki | None = None,
) -> Identity:
    """Issue a certificate that our mesh must refuse, for tests and drills.

    With ``ca=None`` a fresh, unrelated CA signs it (``directory/foreign-ca.pem``): a
    certificate from ANOTHER CA. With ``ca`` given, that CA signs it but the URI SAN uses
    ``trust_domain``, so it lies outside ``ca``'s trust domain when they differ. The
    identity is not recorded in any manifest.

    Raises:
        ValueError: a malformed trust domain, role or name.
    """
    directory = Path(directory)
    uri = spiffe_id(trust_domain, role, name)
    if ca is None:
        # The impostor CA takes the same name as ours: only its key differs, so a
        # relying party that compared names instead of signatures would be fooled.
        issuer = _make_ca(trust_domain, common_name=f"veritally CA ({trust_domain})")
        _write_public(
            directory / "foreign-ca.pem", issuer.cert.public_bytes(serialization.Encoding.PEM)
        )
    else:
        issuer = ca._load_ca()
    issued = _make_leaf(issuer, uri=uri, common_name=name)
    cert_path = directory / f"{role}-{name}.pem"
    key_path = directory / f"{role}-{name}.key"
    _write_private_key(key_path, issued.key)
    _write_public(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM))
    return Identity(
        name=name,
        role=role,
        spiffe_id=uri,
        cert=cert_path,
        key=key_path,
        serial=issued.cert.serial_number,
    )
