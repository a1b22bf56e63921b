"""C2SP signed notes and tlog-checkpoints.

Includes a known-answer test from golang.org/x/mod/sumdb/note's package documentation
(so notes from other C2SP implementations verify with ours), and a from-scratch verifier
written here from the text of c2sp.org/signed-note and c2sp.org/tlog-checkpoint with
plain hashlib + PyNaCl, which checks one of our checkpoints without our helpers.
"""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest

from veritally_client._checkpoint import Checkpoint, parse_checkpoint
from veritally_client._errors import BadSignatureError, MalformedDataError, UnknownKeyError
from veritally_client._merkle import MemoryTree
from veritally_client._note import MAX_SIGNATURES, open_note, sign_note
from veritally_client._signing import Signer, Verifier

# golang.org/x/mod/sumdb/note package documentation (key pair and signed note).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZ"
    + "InNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()


def _checkpoint_note(signer: Signer, size: int = 5) -> tuple[Checkpoint, bytes]:
    tree = MemoryTree()
    for i in range(size):
        tree.append(b"leaf %d" % i)
    cp = Checkpoint(origin="veritally.example/test", size=size, root_hash=tree.root())
    return cp, sign_note(cp.to_text(), [signer])


def test_go_reference_note_signs_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, [Signer.from_private_key_string(GO_SKEY)]) == GO_NOTE


def test_go_reference_note_opens() -> None:
    verified = open_note(GO_NOTE, [Verifier.from_key_string(GO_VKEY)])
    assert verified.text == GO_TEXT


def _from_scratch_open(note: bytes, vkey: str) -> str:
    """Verify a note per c2sp.org/signed-note, without any veritally code.

    Spec text: "a text ending in newline, followed by a blank line, followed by one or
    more signature lines of this form: em dash (U+2014), space, key name, space,
    base64-encoded signature, newline"; "the text is separated from the signatures by
    the last empty line"; key id = SHA-256(name || 0x0A || 0x01 || pubkey)[:4].
    """
    name, key_id_hex, key_b64 = vkey.split("+", 2)
    raw_key = base64.b64decode(key_b64)
    assert raw_key[0] == 1
    public = raw_key[1:]
    assert hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4].hex() == key_id_hex
    cut = note.rindex(b"\n\n")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    verified = False
    for line in sigs.decode().splitlines():
        dash, sig_name, sig_b64 = line.split(" ")
        assert dash == "\u2014"
        raw = base64.b64decode(sig_b64)
        if sig_name != name or raw[:4].hex() != key_id_hex:
            continue  # unknown key: ignore
        nacl.signing.VerifyKey(public).verify(text, raw[4:])
        verified = True
    assert verified
    return text.decode()


def test_our_checkpoint_verifies_with_from_scratch_verifier() -> None:
    signer = Signer.generate("veritally.example/test")
    cp, note = _checkpoint_note(signer)
    text = _from_scratch_open(note, signer.verifier().key_string())
    # tlog-checkpoint: origin, decimal size without leading zeroes, base64 root; nothing else.
    origin, size, root, tail = text.split("\n")
    assert (origin, size, tail) == (cp.origin, "5", "")
    assert base64.b64decode(root) == cp.root_hash


def test_from_scratch_verifier_rejects_a_tampered_checkpoint() -> None:
    signer = Signer.generate("veritally.example/test")
    _cp, note = _checkpoint_note(signer)
    tampered = note.replace(b"\n5\n", b"\n6\n", 1)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        _from_scratch_open(tampered, signer.verifier().key_string())


def test_checkpoint_roundtrips_through_note() -> None:
    signer = Signer.generate("log")
    cp, note = _checkpoint_note(signer, size=17)
    assert parse_checkpoint(open_note(note, [signer.verifier()]).text) == cp


def test_ignores_signatures_by_unknown_keys() -> None:
    ours, other = Signer.generate("log"), Signer.generate("witness")
    note = sign_note("hello\n", [other, ours])
    assert open_note(note, [ours.verifier()]).verifiers == (ours.verifier(),)


def test_ignores_signature_sharing_only_the_name_with_a_known_key() -> None:
    ours, impostor = Signer.generate("log"), Signer.generate("log")
    note = sign_note("hello\n", [impostor, ours])
    assert open_note(note, [ours.verifier()]).text == "hello\n"


def test_rejects_note_signed_only_by_unknown_keys() -> None:
    note = sign_note("hello\n", [Signer.generate("other")])
    with pytest.raises(UnknownKeyError):
        open_note(note, [Signer.generate("log").verifier()])


def test_rejects_bad_signature_by_a_known_key() -> None:
    signer = Signer.generate("log")
    note = bytearray(sign_note("hello\n", [signer]))
    note[0:1] = b"j"  # change the text, keep the signature
    with pytest.raises(BadSignatureError):
        open_note(bytes(note), [signer.verifier()])


def test_rejects_second_byte_form_of_a_trusted_signature_padding_bits_set() -> None:
    """Base64 that differs only in its unused padding bits decodes to the same signature:
    a note must not have two byte forms that both verify."""
    signer = Signer.generate("log")
    note = sign_note("hello\n", [signer])
    assert note.endswith(b"=\n")  # 68 bytes of key id and signature: two padding bits
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(note[-3:-2])
    assert last & 0b11 == 0
    other = note[:-3] + alphabet[last | 1 : (last | 1) + 1] + note[-2:]
    assert base64.b64decode(other.split(b" ")[-1]) == base64.b64decode(note.split(b" ")[-1])
    with pytest.raises(MalformedDataError, match="canonical"):
        open_note(other, [signer.verifier()])
    open_note(note, [signer.verifier()])


def test_rejects_note_below_threshold() -> None:
    a, b = Signer.generate("a"), Signer.generate("b")
    note = sign_note("hello\n", [a])
    with pytest.raises(UnknownKeyError):
        open_note(note, [a.verifier(), b.verifier()], threshold=2)
    both = sign_note("hello\n", [a, b])
    assert len(open_note(both, [a.verifier(), b.verifier()], threshold=2).verifiers) == 2


def test_text_may_contain_blank_lines() -> None:
    signer = Signer.generate("log")
    note = sign_note("a\n\nb\n", [signer])
    assert open_note(note, [signer.verifier()]).text == "a\n\nb\n"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace(b"\n\n", b"\n", 1),  # no blank line
        lambda n: n[:-1],  # signature line without newline
        lambda n: n.replace("\u2014".encode(), b"-", 1),  # hyphen instead of em dash
        lambda n: n.replace(b"hello", b"hel\x01o"),  # control character
        lambda n: n + b"\xff\n",  # invalid UTF-8
        lambda n: n.replace(b" ", b"  ", 1),  # empty key name
        lambda n: n + "\u2014 log AAAA\n".encode(),  # signature shorter than 5 bytes
        lambda n: n + "\u2014 log !!!!\n".encode(),  # not base64
        lambda n: n + "\u2014 log\n".encode(),  # no signature
    ],
)
def test_rejects_malformed_notes(mutate: object) -> None:
    signer = Signer.generate("log")
    note = sign_note("hello\n", [signer])
    assert callable(mutate)
    with pytest.raises(MalformedDataError):
        open_note(mutate(note), [signer.verifier()])


def test_rejects_more_than_max_signatures() -> None:
    signer = Signer.generate("log")
    note = sign_note("hello\n", [signer])
    extra = "\u2014 other AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n".encode() * MAX_SIGNATURES
    with pytest.raises(MalformedDataError):
        open_note(note + extra, [signer.verifier()])


@pytest.mark.parametrize(
    "text",
    [
        "log\n5\n" + base64.b64encode(bytes(32)).decode() + "\nextension\n",  # extension line
        "log\n05\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
        "log\n-5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "log\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",  # short root
        "log\n5\n" + base64.b64encode(bytes(32)).decode(),  # no final newline
        "\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",  # empty origin
        "log\n5\n",
    ],
)
def test_rejects_malformed_checkpoints(text: str) -> None:
    with pytest.raises(MalformedDataError):
        parse_checkpoint(text)


def test_third_party_extension_lines_accepted_only_when_asked() -> None:
    root = base64.b64encode(bytes(32)).decode()
    cp = parse_checkpoint(
        f"other.example/log\n5\n{root}\nsome extension\n", allow_extension_lines=True
    )
    assert cp.size == 5
