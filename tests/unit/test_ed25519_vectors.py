"""RFC 8032 §7.1 and Wycheproof Ed25519 vectors, run through our wrapper (_signing).

Nothing here calls PyNaCl directly: the point is that :class:`Signer` and
:class:`Verifier` keep libsodium's verdicts (including its rejection of malleable
signatures with S >= L and non-canonical encodings) and detach signatures correctly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import VECTORS_DIR
from veritally_client._errors import BadSignatureError
from veritally_client._signing import Signer, Verifier

ED = VECTORS_DIR / "ed25519"
RFC8032: list[dict[str, Any]] = json.loads((ED / "rfc8032-ed25519-section7.1.json").read_text())[
    "vectors"
]
_WYCHEPROOF = json.loads((ED / "wycheproof-ed25519_test.json").read_text())
WYCHEPROOF: list[tuple[str, dict[str, Any]]] = [
    (group["publicKey"]["pk"], test)
    for group in _WYCHEPROOF["testGroups"]
    for test in group["tests"]
]


def test_all_wycheproof_tests_are_loaded() -> None:
    assert len(WYCHEPROOF) == _WYCHEPROOF["numberOfTests"] == 151


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_sign_and_verify_through_wrapper(vector: dict[str, Any]) -> None:
    signer = Signer.from_seed("rfc8032", bytes.fromhex(vector["secret_key_hex"]))
    message = bytes.fromhex(vector["message_hex"])
    signature = signer.sign(message)
    # Detached: exactly the 64 signature bytes, never signature || message.
    assert signature == bytes.fromhex(vector["signature_hex"])
    verifier = signer.verifier()
    assert verifier.public_key == bytes.fromhex(vector["public_key_hex"])
    verifier.verify(message, signature)
    with pytest.raises(BadSignatureError):
        verifier.verify(message + b"\x00", signature)


@pytest.mark.parametrize(
    ("public_key_hex", "test"), WYCHEPROOF, ids=[str(t["tcId"]) for _, t in WYCHEPROOF]
)
def test_wycheproof_verdict_through_wrapper(public_key_hex: str, test: dict[str, Any]) -> None:
    verifier = Verifier(name="wycheproof", public_key=bytes.fromhex(public_key_hex))
    message = bytes.fromhex(test["msg"])
    signature = bytes.fromhex(test["sig"])
    assert test["result"] in ("valid", "invalid")
    if test["result"] == "valid":
        verifier.verify(message, signature)
    else:
        with pytest.raises(BadSignatureError):
            verifier.verify(message, signature)


def test_rejects_combined_signature_and_message_blob() -> None:
    signer = Signer.from_seed("k", bytes(32))
    blob = signer.sign(b"hello") + b"hello"  # what PyNaCl's sign() would return
    with pytest.raises(BadSignatureError):
        signer.verifier().verify(b"hello", blob)
