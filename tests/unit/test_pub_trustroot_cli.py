"""``veritally trust-root create|rotate`` writes documents that verify as a chain."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from veritally.cli import trustroot as trustroot_cli
from veritally.publication.errors import TrustRootFileError
from veritally.publication.keys import write_key_files
from veritally.publication.trustroot import load_trust_root_chain, trust_root_path
from veritally_client._errors import TrustRootError
from veritally_client._signing import Signer
from veritally_client._trustroot import TrustedRoot
from veritally_client.protocol import CosignatureSigner

EXPIRES = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    trustroot_cli.add_arguments(parser)
    return trustroot_cli.run(parser.parse_args(argv))


def _key(tmp_path: Path, name: str) -> tuple[Path, Signer]:
    signer = Signer.generate(name)
    path = tmp_path / f"{name}.key"
    write_key_files(signer, path)
    return path, signer


def _create_args(key: Path, directory: Path) -> list[str]:
    """``trust-root create`` for origin veritally.example/e, expiring at EXPIRES."""
    return [
        "create",
        "--key",
        str(key),
        "--origin",
        "veritally.example/e",
        "--expires",
        EXPIRES,
        "--dir",
        str(directory),
    ]


def _rotate_args(directory: Path, *, old_key: Path, key: Path) -> list[str]:
    """``trust-root rotate`` from ``old_key`` to ``key``, expiring at EXPIRES."""
    return [
        "rotate",
        "--dir",
        str(directory),
        "--old-key",
        str(old_key),
        "--key",
        str(key),
        "--expires",
        EXPIRES,
    ]


def test_create_then_rotate_builds_a_verifying_chain(tmp_path: Path) -> None:
    k1, s1 = _key(tmp_path, "pub1")
    k2, s2 = _key(tmp_path, "pub2")
    d = tmp_path / "tr"
    assert _run(_create_args(k1, d)) == 0
    assert _run(_rotate_args(d, old_key=k1, key=k2)) == 0
    docs, root = load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))
    assert len(docs) == 2
    assert root.version == 2
    assert root.verifiers == (s2.verifier(),)
    v1 = TrustedRoot.from_bytes(trust_root_path(d, 1).read_bytes(), now=dt.datetime.now(dt.UTC))
    assert v1.verifiers == (s1.verifier(),)
    assert v1.update(docs[1], now=dt.datetime.now(dt.UTC)).version == 2


def test_rotate_refuses_without_the_old_key(tmp_path: Path) -> None:
    k1, _ = _key(tmp_path, "pub1")
    k2, _ = _key(tmp_path, "pub2")
    k3, _ = _key(tmp_path, "pub3")
    d = tmp_path / "tr"
    assert _run(_create_args(k1, d)) == 0
    assert _run(_rotate_args(d, old_key=k3, key=k2)) == 1
    assert not trust_root_path(d, 2).exists()


def test_create_refuses_an_existing_trust_root(tmp_path: Path) -> None:
    k1, _ = _key(tmp_path, "pub1")
    d = tmp_path / "tr"
    args = _create_args(k1, d)
    assert _run(args) == 0
    before = trust_root_path(d, 1).read_bytes()
    assert _run(args) == 1
    assert trust_root_path(d, 1).read_bytes() == before


def test_rejects_a_gap_in_versions(tmp_path: Path) -> None:
    k1, _ = _key(tmp_path, "pub1")
    d = tmp_path / "tr"
    assert _run(_create_args(k1, d)) == 0
    trust_root_path(d, 1).rename(trust_root_path(d, 2))
    with pytest.raises(TrustRootFileError):
        load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))


def test_rejects_a_tampered_document(tmp_path: Path) -> None:
    k1, _ = _key(tmp_path, "pub1")
    d = tmp_path / "tr"
    assert _run(_create_args(k1, d)) == 0
    path = trust_root_path(d, 1)
    data = path.read_bytes().replace(b"veritally.example/e", b"veritally.example/f")
    path.write_bytes(data)
    with pytest.raises(TrustRootFileError) as e:
        load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))
    assert isinstance(e.value.__cause__, TrustRootError)


def test_create_lists_witnesses_with_a_majority_and_rotate_keeps_them(tmp_path: Path) -> None:
    k1, _s1 = _key(tmp_path, "pub1")
    vkeys = [CosignatureSigner.generate(f"w{i}.example").verifier() for i in range(3)]
    d = tmp_path / "tr"
    witness_args = [arg for v in vkeys for arg in ("--witness", v.key_string())]
    assert _run([*_create_args(k1, d), *witness_args]) == 0
    _docs, root = load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))
    assert (root.witnesses, root.witness_threshold) == (tuple(vkeys), 2)
    assert _run(_rotate_args(d, old_key=k1, key=k1)) == 0
    _docs, root = load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))
    assert (root.version, root.witnesses, root.witness_threshold) == (2, tuple(vkeys), 2)
    assert _run([*_rotate_args(d, old_key=k1, key=k1), "--no-witnesses"]) == 0
    _docs, root = load_trust_root_chain(d, now=dt.datetime.now(dt.UTC))
    assert (root.witnesses, root.witness_threshold) == ((), 0)


def test_create_refuses_a_witness_threshold_above_the_witnesses(tmp_path: Path) -> None:
    k1, _s1 = _key(tmp_path, "pub1")
    vkey = CosignatureSigner.generate("w.example").verifier().key_string()
    args = [*_create_args(k1, tmp_path / "tr"), "--witness", vkey, "--witness-threshold", "2"]
    assert _run(args) == 1
