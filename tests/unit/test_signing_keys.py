"""Key strings and key ids interoperate with golang.org/x/mod/sumdb/note."""

from __future__ import annotations

import base64
import hashlib

import pytest

from veritally_client._errors import MalformedDataError
from veritally_client._signing import Signer, Verifier

# From golang.org/x/mod/sumdb/note's documentation and tests (note_test.go):
GO_PRIVATE = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PUBLIC = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


def test_go_key_pair_roundtrips() -> None:
    signer = Signer.from_private_key_string(GO_PRIVATE)
    assert signer.private_key_string() == GO_PRIVATE
    assert signer.verifier().key_string() == GO_PUBLIC
    assert Verifier.from_key_string(GO_PUBLIC) == signer.verifier()


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    signer = Signer.generate("example.com/log")
    pub = signer.verifier().public_key
    want = hashlib.sha256(b"example.com/log\n\x01" + pub).digest()[:4]
    assert signer.key_id == want == signer.verifier().key_id


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a3+AhpczQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # algorithm 2
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # bad b64
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space
        "PeterNeumann+c74f20a3",
        "",
    ],
)
def test_rejects_malformed_verifier_key_string(text: str) -> None:
    with pytest.raises(MalformedDataError):
        Verifier.from_key_string(text)


def test_rejects_private_key_string_with_wrong_key_id() -> None:
    name, _hex, b64 = GO_PRIVATE.removeprefix("PRIVATE+KEY+").split("+", 2)
    with pytest.raises(MalformedDataError):
        Signer.from_private_key_string(f"PRIVATE+KEY+{name}+00000000+{b64}")
    assert len(base64.b64decode(b64)) == 33


def test_signer_repr_never_shows_the_secret() -> None:
    signer = Signer.generate("k")
    # PRIVATE+KEY+<name>+<key id>+<base64>: the base64 itself may contain "+".
    secret = signer.private_key_string().split("+", 4)[4]
    assert secret not in repr(signer)
    # Nor the seed in any other spelling a dataclass or debug repr would use.
    seed = base64.b64decode(secret)[1:]
    assert len(seed) == 32
    for shown in (repr(signer), str(signer)):
        assert seed.hex() not in shown
        assert seed.hex().upper() not in shown
        assert repr(seed)[2:-1] not in shown
