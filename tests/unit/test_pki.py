"""The deployment PKI: what each certificate says, how keys are stored, what the CRL holds."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from veritally.pki import (
    MANIFEST_NAME,
    Identity,
    Pki,
    PkiError,
    ServiceSans,
    init_pki,
    issue_foreign_identity,
    spiffe_id,
)

TRUST_DOMAIN = "veritally.example"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    return init_pki(
        root,
        trust_domain=TRUST_DOMAIN,
        media=3,
        capture_centres=2,
        service_sans={"ingest": ServiceSans(dns_names=("ingest-1.internal",))},
    )


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ca_key(pki: Pki) -> ec.EllipticCurvePublicKey:
    key = _cert(pki.ca_cert).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _crl(pki: Pki) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pki.crl.read_bytes())


def _sans(identity: Identity) -> x509.SubjectAlternativeName:
    return (
        _cert(identity.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )


def test_creates_every_party_with_its_spiffe_id(pki: Pki) -> None:
    names = {i.spiffe_id for i in pki.identities()}
    base = f"spiffe://{TRUST_DOMAIN}"
    assert names == {
        f"{base}/service/ingest",
        f"{base}/service/aggregation",
        f"{base}/service/publication",
        f"{base}/service/envoy",
        f"{base}/media/outlet-01",
        f"{base}/media/outlet-02",
        f"{base}/media/outlet-03",
        f"{base}/capture/cc-01",
        f"{base}/capture/cc-02",
        f"{base}/operator/ops-01",
    }


def test_certificate_uri_san_is_the_identity(pki: Pki) -> None:
    for identity in pki.identities():
        uris = _sans(identity).get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [identity.spiffe_id]


def test_envoy_certificate_names_the_address_clients_dial(pki: Pki) -> None:
    sans = _sans(pki.identity("envoy"))
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def test_service_certificates_name_the_hosts_envoy_dials(pki: Pki) -> None:
    ingest = _sans(pki.identity("ingest"))
    assert {"ingest", "localhost", "ingest-1.internal"} <= set(
        ingest.get_values_for_type(x509.DNSName)
    )
    for name in ("aggregation", "publication"):
        assert name in _sans(pki.identity(name)).get_values_for_type(x509.DNSName)


def test_client_certificates_carry_no_host_names(pki: Pki) -> None:
    for name in ("outlet-01", "cc-01", "ops-01"):
        sans = _sans(pki.identity(name))
        assert sans.get_values_for_type(x509.DNSName) == []
        assert sans.get_values_for_type(x509.IPAddress) == []


def test_only_services_may_act_as_tls_servers(pki: Pki) -> None:
    for identity in pki.identities():
        eku = _cert(identity.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku.value
        assert (ExtendedKeyUsageOID.SERVER_AUTH in eku.value) == (identity.role == "service")


def test_private_keys_are_readable_by_owner_only(pki: Pki) -> None:
    keys = [pki.ca_key, *(i.key for i in pki.identities())]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_keys_are_ecdsa_p256(pki: Pki) -> None:
    for identity in pki.identities():
        public = _cert(identity.cert).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)


def test_ca_may_sign_leaves_only(pki: Pki) -> None:
    ca = _cert(pki.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    ca.verify_directly_issued_by(ca)  # self-signed


def test_leaves_are_issued_by_the_ca_and_are_not_cas(pki: Pki) -> None:
    ca = _cert(pki.ca_cert)
    for identity in pki.identities():
        leaf = _cert(identity.cert)
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert leaf.serial_number == identity.serial


def test_fresh_crl_is_empty_and_signed_by_the_ca(pki: Pki) -> None:
    fresh = init_pki(
        pki.root.parent / "fresh", trust_domain=TRUST_DOMAIN, media=1, capture_centres=0
    )
    crl = _crl(fresh)
    assert len(crl) == 0
    assert crl.is_signature_valid(_ca_key(fresh))


def test_revoke_lists_serial_in_signed_crl(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, trust_domain=TRUST_DOMAIN, media=2, capture_centres=1)
    revoked = pki.revoke("outlet-02")
    crl = _crl(pki)
    assert crl.is_signature_valid(_ca_key(pki))
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(pki.identity("outlet-01").serial) is None
    assert pki.is_revoked("outlet-02")
    assert not pki.is_revoked("outlet-01")


def test_revocations_survive_reload_and_accumulate(tmp_path: Path) -> None:
    init_pki(tmp_path, trust_domain=TRUST_DOMAIN, media=2, capture_centres=1).revoke("cc-01")
    pki = Pki.load(tmp_path)
    assert pki.is_revoked("cc-01")
    pki.revoke("outlet-01")
    pki.revoke("outlet-01")  # twice: harmless
    crl = _crl(Pki.load(tmp_path))
    assert len(crl) == 2


def test_manifest_lists_every_identity_and_its_files(pki: Pki) -> None:
    doc = json.loads((pki.root / MANIFEST_NAME).read_text())
    assert doc["trust_domain"] == TRUST_DOMAIN
    assert {e["spiffe_id"] for e in doc["identities"]} == {i.spiffe_id for i in pki.identities()}
    for entry in doc["identities"]:
        assert (pki.root / entry["cert"]).is_file()
        assert (pki.root / entry["key"]).is_file()
    loaded = Pki.load(pki.root)
    assert loaded.identity("outlet-03") == pki.identity("outlet-03")


def test_init_refuses_to_overwrite_an_existing_pki(pki: Pki) -> None:
    with pytest.raises(FileExistsError):
        init_pki(pki.root, trust_domain=TRUST_DOMAIN, media=1, capture_centres=1)


def test_load_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(PkiError):
        Pki.load(tmp_path)


def test_unknown_identity_is_an_error(pki: Pki) -> None:
    with pytest.raises(PkiError):
        pki.identity("outlet-99")


@pytest.mark.parametrize(
    ("trust_domain", "role", "name"),
    [
        ("Veritally.Example", "media", "outlet-01"),
        ("veritally.example/evil", "media", "outlet-01"),
        ("veritally.example", "root", "outlet-01"),
        ("veritally.example", "media", "../outlet"),
        ("veritally.example", "media", ""),
    ],
)
def test_rejects_malformed_spiffe_ids(trust_domain: str, role: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        spiffe_id(trust_domain, role, name)


def test_foreign_identity_does_not_chain_to_our_ca(pki: Pki, tmp_path: Path) -> None:
    foreign = issue_foreign_identity(
        tmp_path, trust_domain=TRUST_DOMAIN, role="media", name="outlet-01"
    )
    assert foreign.spiffe_id == pki.identity("outlet-01").spiffe_id  # same name...
    ours, theirs = _cert(pki.ca_cert), _cert(foreign.cert)
    assert theirs.issuer == ours.subject  # ...and an issuer of the same name...
    with pytest.raises(InvalidSignature):  # ...but not our key
        theirs.verify_directly_issued_by(ours)


def test_identity_outside_trust_domain_is_signed_by_our_ca(pki: Pki, tmp_path: Path) -> None:
    stranger = issue_foreign_identity(
        tmp_path, trust_domain="elsewhere.example", role="media", name="outlet-01", ca=pki
    )
    _cert(stranger.cert).verify_directly_issued_by(_cert(pki.ca_cert))
    assert stranger.spiffe_id.startswith("spiffe://elsewhere.example/")
    assert stat.S_IMODE(stranger.key.stat().st_mode) == 0o600


def test_issue_adds_an_identity_to_the_manifest(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, trust_domain=TRUST_DOMAIN, media=1, capture_centres=0)
    added = pki.issue(role="media", name="outlet-77")
    assert Pki.load(tmp_path).identity("outlet-77") == added
    _cert(added.cert).verify_directly_issued_by(_cert(pki.ca_cert))


def test_cli_init_then_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from veritally.cli.main import main

    root = tmp_path / "pki"
    args = ["pki", "init", "--dir", str(root), "--media", "2", "--capture-centres", "1"]
    assert main([*args, "--service-host", "ingest=10.0.1.10"]) == 0
    assert main(["pki", "revoke", "--dir", str(root), "outlet-02"]) == 0
    pki = Pki.load(root)
    assert pki.is_revoked("outlet-02")
    ips = _sans(pki.identity("ingest")).get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.0.1.10") in ips
    # A second init over the same directory is refused, not silently overwritten.
    assert main(args) == 1
    assert main(["pki", "revoke", "--dir", str(root), "nobody"]) == 1
    capsys.readouterr()


def test_each_capture_operator_has_a_certificate_naming_centre_and_operator(
    tmp_path: Path,
) -> None:
    pki = init_pki(
        tmp_path, trust_domain=TRUST_DOMAIN, media=0, capture_centres=2, capture_operators=2
    )
    names = sorted(i.name for i in pki.identities("capture"))
    assert names == ["cc-01", "cc-01/op-1", "cc-01/op-2", "cc-02", "cc-02/op-1", "cc-02/op-2"]
    operator = Pki.load(tmp_path).identity("cc-02/op-1")
    assert operator.spiffe_id == f"spiffe://{TRUST_DOMAIN}/capture/cc-02/op-1"
    uris = _sans(operator).get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [operator.spiffe_id]
    _cert(operator.cert).verify_directly_issued_by(_cert(pki.ca_cert))
    added = pki.issue_capture_operator(centre="cc-01", operator="op-3")
    assert Pki.load(tmp_path).identity("cc-01/op-3") == added


@pytest.mark.parametrize(
    ("centre", "operator"),
    [("cc-01", "\u043ep-1"), ("cc-01", "OP-1"), ("cc-01", "op/1"), ("cc-01", ""), ("", "op-1")],
)
def test_rejects_confusable_or_malformed_capture_operator_names(
    pki: Pki, centre: str, operator: str
) -> None:
    with pytest.raises(ValueError, match="lowercase path segment"):
        pki.issue_capture_operator(centre=centre, operator=operator)


def test_cli_issues_and_revokes_a_capture_operator(tmp_path: Path) -> None:
    from veritally.cli.main import main

    root = tmp_path / "pki"
    init = ["pki", "init", "--dir", str(root), "--capture-centres", "1", "--capture-operators", "1"]
    assert main(init) == 0
    # The commands of docs/operations.md (operators).
    assert (
        main(["pki", "issue-capture-operator", "--dir", str(root), "--centre", "cc-01", "op-3"])
        == 0
    )
    assert main(["pki", "revoke", "--dir", str(root), "cc-01/op-3"]) == 0
    pki = Pki.load(root)
    assert {i.name for i in pki.identities("capture")} == {"cc-01", "cc-01/op-1", "cc-01/op-3"}
    assert pki.is_revoked("cc-01/op-3")
    assert not pki.is_revoked("cc-01/op-1")
    assert (
        main(["pki", "issue-capture-operator", "--dir", str(root), "--centre", "cc-01", "OP"]) == 1
    )
