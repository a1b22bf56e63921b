"""Publisher key files: the service refuses unusable keys with a clear error."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from veritally.cli import keys as keys_cli
from veritally.publication.errors import KeyFileError
from veritally.publication.keys import load_passphrase, load_signer, write_key_files
from veritally_client._signing import Signer, Verifier


def _passphrase(tmp_path: Path, text: str = "correct horse battery staple") -> Path:
    path = tmp_path / "pass"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_generated_key_file_is_0600_and_has_public_key(tmp_path: Path) -> None:
    signer = Signer.generate("veritally.example/e1")
    out = tmp_path / "k.key"
    pub = write_key_files(signer, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert Verifier.from_key_string(pub.read_text().strip()) == signer.verifier()
    assert load_signer(out).verifier() == signer.verifier()


def test_rejects_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        load_signer(tmp_path / "absent.key")


@pytest.mark.parametrize(
    "content",
    [b"", b"PRIVATE+KEY+x+00000000+AAAA\n", b"\xff\xfe", b"{not json", b'{"format": "other"}'],
)
def test_rejects_key_file_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_signer(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_rejects_key_file_world_readable(tmp_path: Path, mode: int) -> None:
    out = tmp_path / "k.key"
    write_key_files(Signer.generate("k"), out)
    out.chmod(mode)
    with pytest.raises(KeyFileError):
        load_signer(out)


def test_encrypted_key_roundtrips_with_passphrase(tmp_path: Path) -> None:
    signer = Signer.generate("k")
    out = tmp_path / "k.key"
    write_key_files(signer, out, passphrase=load_passphrase(_passphrase(tmp_path)))
    assert signer.private_key_string().encode() not in out.read_bytes()
    loaded = load_signer(out, passphrase=b"correct horse battery staple")
    assert loaded.verifier() == signer.verifier()


def test_rejects_encrypted_key_with_wrong_or_no_passphrase(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    write_key_files(Signer.generate("k"), out, passphrase=b"right")
    with pytest.raises(KeyFileError):
        load_signer(out, passphrase=b"wrong")
    with pytest.raises(KeyFileError):
        load_signer(out)


def test_rejects_tampered_encrypted_key(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    write_key_files(Signer.generate("k"), out, passphrase=b"right")
    out.write_text(out.read_text().replace('"name": "k"', '"name": "j"'))
    with pytest.raises(KeyFileError):
        load_signer(out, passphrase=b"right")


def test_never_overwrites_a_key(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    write_key_files(Signer.generate("k"), out)
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_files(Signer.generate("k"), out)
    assert out.read_bytes() == before


def test_rejects_world_readable_passphrase_file(tmp_path: Path) -> None:
    path = _passphrase(tmp_path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError):
        load_passphrase(path)


def test_keys_generate_command_writes_private_and_public_files(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    keys_cli.add_arguments(parser)
    out = tmp_path / "pub.key"
    args = parser.parse_args(
        [
            "generate",
            "--name",
            "veritally.example/e1",
            "--out",
            str(out),
            "--passphrase-file",
            str(_passphrase(tmp_path)),
        ]
    )
    old_umask = os.umask(0)  # even a permissive umask must not widen the key's mode
    try:
        assert keys_cli.run(args) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    verifier = Verifier.from_key_string((tmp_path / "pub.key.pub").read_text().strip())
    assert load_signer(out, passphrase=b"correct horse battery staple").verifier() == verifier
