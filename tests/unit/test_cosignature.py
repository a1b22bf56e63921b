"""cosignature/v1 (c2sp.org/tlog-cosignature) and signed-note key strings.

Checked against the worked examples of the C2SP specifications and the Go reference's
test constants (tests/vectors/c2sp, provenance in tests/vectors/README.md), and against a
verifier and a signer written here from the specification text alone (hashlib, struct
and PyNaCl, none of veritally's code).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from veritally_client import (
    BadSignatureError,
    MalformedDataError,
    UnknownKeyError,
)
from veritally_client.protocol import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    MemoryTree,
    Signer,
    Verifier,
    cosigned_message,
    is_valid_key_name,
    open_note,
    parse_cosignature_line,
    sign_note,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "c2sp"
SPEC: dict[str, Any] = json.loads((VECTORS / "c2sp-spec-examples.json").read_text("utf-8"))
GO: dict[str, Any] = json.loads(
    (VECTORS / "transparency-dev-formats-cosignature.json").read_text("utf-8")
)
EM = "\u2014"


def _text_of(note: str) -> str:
    return note[: note.rindex("\n\n") + 1]


def _checkpoint_text(size: int = 7) -> str:
    tree = MemoryTree()
    for i in range(size):
        tree.append(b"acta %d" % i)
    return Checkpoint(origin="veritally.example/e1", size=size, root_hash=tree.root()).to_text()


# -- the specifications' own examples --------------------------------------------------


def test_signed_note_spec_vkey_verifies_the_spec_note() -> None:
    example = SPEC["signed_note"]
    verifier = Verifier.from_key_string(example["vkey"])
    assert verifier.key_string() == example["vkey"]
    assert open_note(example["note"].encode(), [verifier]).text == example["text"]


def test_cosignature_spec_example_line_frames_key_id_timestamp_and_signature() -> None:
    example = SPEC["tlog_cosignature"]
    line = example["note"].splitlines()[-1]
    cosignature = parse_cosignature_line(line)
    assert cosignature.name == example["cosigner"] == "witness.example.com/w1"
    assert cosignature.key_id.hex() == "8d66cf3f"
    # The time of the spec's signed-message example, "time 1679315147".
    assert cosignature.timestamp == 1679315147
    assert len(cosignature.signature) == 64
    assert cosignature.line() == line + "\n"


def test_cosigned_message_is_byte_for_byte_the_spec_example() -> None:
    example = SPEC["tlog_cosignature"]
    text = _text_of(example["note"])
    assert cosigned_message(text, 1679315147) == example["signed_message"].encode()


def test_cosigned_spec_checkpoint_is_a_well_formed_note_for_a_verifier_of_other_keys() -> None:
    # Neither of its two signatures is by a key we know: the note is not malformed, it is
    # signed by no trusted key.
    with pytest.raises(UnknownKeyError):
        open_note(SPEC["tlog_cosignature"]["note"].encode(), [Signer.generate("x").verifier()])


def test_witness_spec_example_response_has_lines_with_timestamps_the_spec_forbids() -> None:
    # The example response of tlog-witness is placeholder bytes of a cosignature's length
    # (76): two of its lines decode to timestamps above 2**63 - 1, which tlog-cosignature
    # forbids, so they are refused as malformed; the third parses.
    lines = SPEC["tlog_witness"]["response_body"].splitlines()
    assert len(lines) == 3
    assert all(line.startswith(EM + " ") for line in lines)
    for line in lines[:2]:
        with pytest.raises(MalformedDataError):
            parse_cosignature_line(line)
    third = parse_cosignature_line(lines[2])
    assert (third.name, third.key_id.hex()) == ("witness.example/w2", "016ba2f1")


# -- the Go reference's constants ------------------------------------------------------


def test_key_id_of_a_cosignature_vkey_is_the_one_go_computed() -> None:
    for case in GO["valid_cosignature_vkeys"]:
        verifier = CosignatureVerifier.from_key_string(case["vkey"])
        assert verifier.key_string() == case["vkey"]
    name, hex_id, _ = GO["valid_cosignature_vkeys"][0]["vkey"].split("+", 2)
    public = CosignatureVerifier.from_key_string(GO["valid_cosignature_vkeys"][0]["vkey"])
    want = hashlib.sha256(name.encode() + b"\n\x04" + public.public_key).digest()[:4]
    assert want.hex() == hex_id == public.key_id.hex()


def test_a_plain_ed25519_vkey_is_not_taken_as_a_cosigner_key() -> None:
    # Go converts a type-0x01 vkey into a cosigner key; we take only type 0x04, so a
    # log's key can never be configured as a witness's by mistake (docs/adr/0090).
    vkey = GO["valid_ed25519_vkeys"][0]["vkey"]
    assert Verifier.from_key_string(vkey).key_string() == vkey
    with pytest.raises(MalformedDataError):
        CosignatureVerifier.from_key_string(vkey)


@pytest.mark.parametrize("case", GO["invalid_vkeys"], ids=lambda c: c["desc"])
def test_rejects_the_vkeys_go_rejects(case: dict[str, str]) -> None:
    for parse in (Verifier.from_key_string, CosignatureVerifier.from_key_string):
        with pytest.raises(MalformedDataError):
            parse(case["vkey"])


def test_reads_the_timestamp_go_reads_and_refuses_a_signature_that_is_not_a_cosignature() -> None:
    works, wrong_type = GO["cosignature_timestamps"]
    assert parse_cosignature_line(f"{EM} w {works['signature']}").timestamp == 1727964367
    with pytest.raises(MalformedDataError):
        parse_cosignature_line(f"{EM} w {wrong_type['signature']}")


# -- from the specification text alone -------------------------------------------------


def _from_scratch_verify(text: str, line: str, vkey: str) -> int:
    """Verify a cosignature line per c2sp.org/tlog-cosignature and signed-note.

    Spec text: the vkey is "<key name>+hex(32-bit key ID)+base64(signature type ||
    public key)" with type 0x04; the line is "— <key name> base64(32-bit key ID ||
    signature)"; "The key ID for Ed25519 cosignatures MUST be computed as SHA-256(<name>
    || "\\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]"; the signature is a
    timestamped_signature "struct { u64 timestamp; opaque ed25519_signature[64]; }" with
    "the timestamp encoded in big-endian order"; "The signed message MUST be two newline
    (U+000A) terminated lines (one header line and one timestamp line) followed by the
    whole note body", the header "cosignature/v1", the timestamp line "time", a space
    and the timestamp "as an ASCII decimal with no leading zeroes".
    """
    name, key_hex, key_b64 = vkey.split("+", 2)  # base64 may contain "+"
    key = base64.b64decode(key_b64)
    assert key[0] == 0x04
    assert len(key) == 33
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == key_hex
    dash, line_name, sig_b64 = line.rstrip("\n").split(" ")
    assert dash == "\u2014"
    assert line_name == name
    blob = base64.b64decode(sig_b64)
    assert blob[:4].hex() == key_hex
    assert len(blob) == 4 + 8 + 64
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + text.encode()
    nacl.signing.VerifyKey(key[1:]).verify(message, blob[12:])  # raises if bad
    return int(timestamp)


def _from_scratch_sign(text: str, name: str, seed: bytes, timestamp: int) -> tuple[str, str]:
    """A vkey and a cosignature line made from the specification text (see above)."""
    signing = nacl.signing.SigningKey(seed)
    key = b"\x04" + bytes(signing.verify_key)
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    vkey = f"{name}+{key_id.hex()}+{base64.b64encode(key).decode()}"
    message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
    blob = key_id + struct.pack(">Q", timestamp) + signing.sign(message).signature
    return vkey, f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def test_from_scratch_verifier_accepts_our_cosignature() -> None:
    signer = CosignatureSigner.generate("witness.example.org/w1")
    text = _checkpoint_text()
    line = signer.cosign(text, timestamp=1_764_000_000).line()
    assert _from_scratch_verify(text, line, signer.verifier().key_string()) == 1_764_000_000


def test_our_verifier_accepts_a_from_scratch_cosignature() -> None:
    text = _checkpoint_text()
    vkey, line = _from_scratch_sign(text, "witness.example.org/w2", b"\x07" * 32, 1_700_000_001)
    cosignature = CosignatureVerifier.from_key_string(vkey).verify_line(text, line)
    assert cosignature.timestamp == 1_700_000_001
    # Ed25519 is deterministic: our signer writes the very same line.
    ours = CosignatureSigner(name="witness.example.org/w2", seed=b"\x07" * 32)
    assert ours.cosign(text, timestamp=1_700_000_001).line() == line


def test_cosignature_and_log_signature_verify_in_one_note() -> None:
    log = Signer.generate("veritally.example/e1")
    witness = CosignatureSigner.generate("witness.example.org/w1")
    text = _checkpoint_text()
    note = sign_note(text, [log]) + witness.cosign(text, timestamp=5).line().encode()
    # The log's key ignores the cosignature (another key id), and the other way round.
    assert open_note(note, [log.verifier()]).text == text
    lines = note.decode().splitlines()
    assert witness.verifier().verify_line(text, lines[-1]).timestamp == 5
    with pytest.raises(UnknownKeyError):
        witness.verifier().verify_line(text, lines[-2] + "\n")


# -- attacks ---------------------------------------------------------------------------


def test_rejects_cosignature_moved_to_another_checkpoint() -> None:
    signer = CosignatureSigner.generate("w")
    line = signer.cosign(_checkpoint_text(7), timestamp=9).line()
    with pytest.raises(BadSignatureError):
        signer.verifier().verify_line(_checkpoint_text(8), line)


def test_rejects_cosignature_with_a_rewritten_timestamp() -> None:
    signer = CosignatureSigner.generate("w")
    text = _checkpoint_text()
    cosignature = signer.cosign(text, timestamp=1_700_000_000)
    later = type(cosignature)(
        name=cosignature.name,
        key_id=cosignature.key_id,
        timestamp=1_800_000_000,
        signature=cosignature.signature,
    )
    with pytest.raises(BadSignatureError):
        signer.verifier().verify_line(text, later.line())


def test_rejects_plain_note_signature_passed_off_as_cosignature_by_the_same_key() -> None:
    # The same Ed25519 key signing the bare checkpoint (type 0x01) is not a cosignature:
    # other key id (so not this cosigner's line at all), other length, other message.
    seed = b"\x01" * 32
    text = _checkpoint_text()
    plain = sign_note(text, [Signer(name="w", seed=seed)]).decode().splitlines()[-1]
    with pytest.raises(UnknownKeyError):
        CosignatureSigner(name="w", seed=seed).verifier().verify_line(text, plain)


def test_refuses_small_order_key_signature_that_go_ed25519_accepts() -> None:
    # Public key A = the identity point, R = the identity, S = 0: [S]B = R + [k]A holds
    # for every message, so Go's crypto/ed25519 (which does not check for small-order
    # points) accepts it. libsodium refuses small-order keys and R; so do we.
    identity = b"\x01" + b"\x00" * 31
    verifier = CosignatureVerifier(name="w", public_key=identity)
    text = _checkpoint_text()
    forged = struct.pack(">Q", 1_700_000_000) + identity + b"\x00" * 32
    with pytest.raises(BadSignatureError):
        verifier.verify(text.encode(), forged)


def test_rejects_timestamp_above_two_to_the_63_minus_one() -> None:
    blob = b"\x00" * 4 + struct.pack(">Q", 2**63) + b"\x00" * 64
    with pytest.raises(MalformedDataError):
        parse_cosignature_line(f"{EM} w {base64.b64encode(blob).decode()}")


def test_a_witness_never_cosigns_without_a_time() -> None:
    with pytest.raises(ValueError, match="timestamp above zero"):
        CosignatureSigner.generate("w").cosign(_checkpoint_text(), timestamp=0)


# -- key strings and names: signed-note's rules, typed errors ---------------------------


@pytest.mark.parametrize(
    "text",
    [
        "w+00000000+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7é",  # non-ASCII base64
        "w+0000000é+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # non-ASCII key id
        "w\u00a0x+00000000+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # NBSP in name
        "w\u3000x+00000000+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # ideographic space
        "w\tx+00000000+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # tab
        "+00000000+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # empty name
        "w+D3FF073F+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h",  # uppercase hex
        "w+d3ff073f+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7i",  # another key than its id says
        "w+d3ff073f+BGBkqEuc0UmZbOLUaW9tORPZmmO3LMp/CQh7QOHvmF7h\n",  # trailing newline
        "w+d3ff073f+",
        "w",
        "",
    ],
)
def test_bad_key_string_is_malformed_data_never_a_bare_value_error(text: str) -> None:
    for parse in (
        Verifier.from_key_string,
        CosignatureVerifier.from_key_string,
        Signer.from_private_key_string,
        CosignatureSigner.from_private_key_string,
    ):
        candidate = text if "from_key_string" in parse.__qualname__ else "PRIVATE+KEY+" + text
        with pytest.raises(MalformedDataError):
            parse(candidate)


def test_private_key_string_roundtrips_and_checks_its_key_id() -> None:
    signer = CosignatureSigner.generate("witness.example.org/w1")
    text = signer.private_key_string()
    assert text.startswith(
        "PRIVATE+KEY+witness.example.org/w1+" + signer.key_id.hex() + "+B"
    )  # 0x04...
    again = CosignatureSigner.from_private_key_string(text)
    assert again.verifier() == signer.verifier()
    name, _, b64 = text.removeprefix("PRIVATE+KEY+").split("+", 2)
    with pytest.raises(MalformedDataError):
        CosignatureSigner.from_private_key_string(f"PRIVATE+KEY+{name}+00000000+{b64}")
    assert signer.private_key_string().split("+", 4)[4] not in repr(signer)


@pytest.mark.parametrize(
    "name",
    ["w\x7f", "w\x80", "w\x9f", "testigo.mx/señal", "證人/1", "w=1/a?b#c"],
    ids=["del", "c1-80", "c1-9f", "latin", "cjk", "punctuation"],
)
def test_unusual_but_valid_key_names_are_valid(name: str) -> None:
    # signed-note forbids only Unicode spaces and '+'; ASCII controls cannot be in a note.
    assert is_valid_key_name(name)
    signer = CosignatureSigner.generate(name)
    assert CosignatureVerifier.from_key_string(signer.verifier().key_string()).name == name


def test_foreign_cosigner_with_an_unusual_name_does_not_make_the_note_malformed() -> None:
    log = Signer.generate("veritally.example/e1")
    text = _checkpoint_text()
    assert not is_valid_key_name("otro\x85testigo")  # NEL is a Unicode space
    valid_foreign = CosignatureSigner.generate("otro\x9ftestigo/ñ\x7f")
    line = valid_foreign.cosign(text, timestamp=3).line()
    note = sign_note(text, [log]) + line.encode()
    assert open_note(note, [log.verifier()]).text == text
