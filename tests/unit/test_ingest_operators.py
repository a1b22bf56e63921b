"""Callers from their verified SPIFFE IDs, the casilla assignment and the reason rule of
``veritally.ingest.operators`` (pure; the flows are in test_ingest_service.py)."""

from __future__ import annotations

import pytest

from tests.write_path_support import small_election, with_centres
from veritally.ingest import operators
from veritally.ingest.operators import Caller, caller_from_spiffe_id
from veritally.reject import RejectCode

TD = "spiffe://veritally.test"


def test_capture_operator_identity_names_centre_and_operator() -> None:
    caller = caller_from_spiffe_id(f"{TD}/capture/cc-01/op-2")
    assert (caller.role, caller.centre, caller.operator) == ("capture", "cc-01", "op-2")
    assert caller.is_capture_operator
    assert not caller.is_operator


@pytest.mark.parametrize(
    "spiffe_id",
    [
        f"{TD}/capture/cc-01",  # a centre's certificate names no operator
        f"{TD}/capture/cc-01/",  # empty operator segment
        f"{TD}/capture/cc-01/op-1/extra",
        f"{TD}/capture/cc-01/" + "o" * 65,  # longer than any name the PKI issues
        f"{TD}/capture/cc-01/\u043ep-1",  # a Cyrillic "о": not a name the PKI issues
        f"{TD}/capture/cc-01/OP-1",
        f"{TD}/operator/ops-01",  # an authority operator is not a capture operator
        "",
        "capture/cc-01/op-1",  # not a SPIFFE ID
    ],
)
def test_identities_that_name_no_capture_operator_cannot_double_capture(spiffe_id: str) -> None:
    caller = caller_from_spiffe_id(spiffe_id)
    assert not caller.is_capture_operator
    refused = operators.check_capture_operator(caller)
    assert refused is not None
    assert (refused.code, refused.field) == (
        RejectCode.PERMISSION_DENIED,
        "provenance.operator_id",
    )


def test_authority_operator_identity() -> None:
    caller = caller_from_spiffe_id(f"{TD}/operator/ops-02")
    assert caller.is_operator
    assert caller.operator == "ops-02"
    assert operators.check_operator(caller, "a correction") is None
    refused = operators.check_operator(caller_from_spiffe_id(f"{TD}/capture/cc-01/op-1"), "x")
    assert refused is not None
    assert refused.code == RejectCode.PERMISSION_DENIED


def test_centre_capturing_a_casilla_assigned_to_another_is_refused_on_casilla_id() -> None:
    election = with_centres(small_election(), lambda cid: "cc-01")
    assigned = operators.assignments(election)
    casilla = election.casillas[0].id
    own = caller_from_spiffe_id(f"{TD}/capture/cc-01/op-1")
    other = caller_from_spiffe_id(f"{TD}/capture/cc-02/op-1")
    assert operators.check_assignment(assigned, casilla, own) is None
    refused = operators.check_assignment(assigned, casilla, other)
    assert refused is not None
    assert (refused.code, refused.field) == (RejectCode.PERMISSION_DENIED, "casilla_id")
    # No identity at all is refused too.
    assert operators.check_assignment(assigned, casilla, Caller(spiffe_id="")) is not None


def test_definition_without_assignments_lets_any_centre_capture() -> None:
    assigned = operators.assignments(small_election())
    assert assigned == {}
    caller = caller_from_spiffe_id(f"{TD}/capture/cc-09/op-1")
    assert operators.check_assignment(assigned, "01-01-0001-B1", caller) is None


@pytest.mark.parametrize("reason", ["", " \t\n", "x" * (operators.MAX_REASON_CHARS + 1)])
def test_rejects_missing_blank_or_oversized_reason(reason: str) -> None:
    refused = operators.check_reason(reason)
    assert refused is not None
    assert (refused.code, refused.field) == (RejectCode.INVALID_ARGUMENT, "reason")


def test_accepts_a_reason_up_to_the_limit() -> None:
    assert operators.check_reason("acta re-read: null votes 12, not 21") is None
    assert operators.check_reason("é" * operators.MAX_REASON_CHARS) is None


def test_the_same_operator_never_approves_her_own_correction() -> None:
    ana = f"{TD}/operator/ops-01"
    proposal = operators.Proposal(ana, 1, b"d" * 32, b"acta", "typo", "t")
    proposals = {ana: proposal}
    same = caller_from_spiffe_id(ana)
    ben = caller_from_spiffe_id(f"{TD}/operator/ops-02")
    assert (
        operators.matching_proposal(proposals, caller=same, supersedes_revision=1, digest=b"d" * 32)
        is None
    )
    assert (
        operators.matching_proposal(proposals, caller=ben, supersedes_revision=1, digest=b"d" * 32)
        == proposal
    )
    # Other figures, or another superseded revision, are another correction.
    assert (
        operators.matching_proposal(proposals, caller=ben, supersedes_revision=2, digest=b"d" * 32)
        is None
    )
    assert (
        operators.matching_proposal(proposals, caller=ben, supersedes_revision=1, digest=b"e" * 32)
        is None
    )
