"""Any corruption of a served cut is rejected with a typed verification error (never a
crash, never acceptance), and never changes the persisted state."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.sdk_fake import FakePublisher
from veritally_client import Client, ClientConfig, VerificationError
from veritally_client._gen.veritally.v1 import log_pb2

PUB = FakePublisher()
PUB.step(5)
PUB.step(4)
GOOD = PUB.cuts[-1]
FIELDS = ("checkpoint", "cut_leaf", "results", "inclusion_proof")


def _corrupt(field: str, index: int, position: int, xor: int, truncate: bool) -> log_pb2.SignedCut:
    cut = log_pb2.SignedCut()
    cut.CopyFrom(GOOD)
    if field == "inclusion_proof":
        index %= len(cut.inclusion_proof)
        data = bytearray(cut.inclusion_proof[index])
    else:
        data = bytearray(getattr(cut, field))
    position %= len(data)
    if truncate:
        del data[position:]
    else:
        data[position] ^= xor
    if field == "inclusion_proof":
        cut.inclusion_proof[index] = bytes(data)
    else:
        setattr(cut, field, bytes(data))
    return cut


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    index=st.integers(min_value=0, max_value=63),
    position=st.integers(min_value=0, max_value=1 << 20),
    xor=st.integers(min_value=1, max_value=255),
    truncate=st.booleans(),
    with_state=st.booleans(),
)
def test_any_corrupted_cut_is_rejected_with_a_typed_error(
    field: str, index: int, position: int, xor: int, truncate: bool, with_state: bool
) -> None:
    bad = _corrupt(field, index, position, xor, truncate)
    with tempfile.TemporaryDirectory() as tmp:
        client = Client.from_transport(
            PUB,
            trust_root=PUB.trust_root(),
            state_dir=Path(tmp),
            config=ClientConfig(),
            clock=lambda: PUB.now,
        )
        before = None
        if with_state:  # the consistency path from an earlier verified cut
            PUB.latest_override = PUB.cuts[0]
            client.latest()
            before = client.trusted_state
        PUB.latest_override = bad
        try:
            with pytest.raises(VerificationError):
                client.latest()
        finally:
            PUB.latest_override = None
        assert client.trusted_state == before


@settings(max_examples=100, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=63),
    position=st.integers(min_value=0, max_value=31),
    xor=st.integers(min_value=1, max_value=255),
    drop=st.booleans(),
)
def test_any_corrupted_consistency_proof_is_rejected(
    index: int, position: int, xor: int, drop: bool
) -> None:
    def corrupted(a: int, b: int) -> list[bytes]:
        proof = PUB.tree.consistency_proof(a, b)
        i = index % len(proof)
        if drop:
            del proof[i]
        else:
            h = bytearray(proof[i])
            h[position] ^= xor
            proof[i] = bytes(h)
        return proof

    with tempfile.TemporaryDirectory() as tmp:
        client = Client.from_transport(
            PUB,
            trust_root=PUB.trust_root(),
            state_dir=Path(tmp),
            config=ClientConfig(),
            clock=lambda: PUB.now,
        )
        PUB.latest_override = PUB.cuts[0]
        try:
            client.latest()
            before = client.trusted_state
            PUB.latest_override = None
            PUB.consistency_override = corrupted
            with pytest.raises(VerificationError):
                client.latest()
        finally:
            PUB.latest_override = None
            PUB.consistency_override = None
        assert client.trusted_state == before
