"""Who may change the log: callers from their verified identity, the casilla-to-centre
assignment, and the rules of dual control. Pure: no IO, no gRPC calls.

Ingest is reached only through Envoy (its peer check admits Envoy's certificate alone),
and Envoy sets ``x-forwarded-client-cert`` with SANITIZE_SET from the certificate it
verified. So the SPIFFE ID in that header is the caller's, and everything here is
derived from it, never from a field of the message
(docs/adr/0034-operator-identity-from-certificates.md):

1. a capture operator is ``spiffe://<td>/capture/<centre>/<operator>``; a centre's
   certificate without an operator segment (``capture/<centre>``) names no operator and
   cannot take part in double capture; an operator (admin) is
   ``spiffe://<td>/operator/<name>``;
2. ingest writes the centre and the operator into ``provenance`` (a value the client
   put there is overwritten: the content digest excludes the provenance, so the client
   loses nothing but the ability to lie);
3. a casilla assigned to a centre in the catalogue (``Casilla.capture_centre_id``) is
   captured by that centre only: any other caller is refused PERMISSION_DENIED on
   ``casilla_id`` before anything else is looked at, so a foreign centre learns nothing
   about the acta and stores nothing;
4. double capture compares whole SPIFFE IDs: the same certificate twice never confirms;
5. a correction needs two distinct operators submitting the same figures over the same
   revision; its reason is mandatory and bounded (:func:`check_reason`); so is a
   cross-check resolution's, which one operator may make (it only chooses among
   captures that distinct operators made).

Names inside certificates are validated when ``veritally pki`` issues them (short
lowercase ASCII path segments), so two operators cannot look alike. A certificate from
another issuer of the trust domain is held to the same rule here
(``veritally.pki.is_valid_name``): an ID with any other segment is a caller of no role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from veritally import bounds
from veritally.pki import is_valid_name
from veritally.reject import RejectCode, Rejection
from veritally_client.protocol import ElectionIndex

ROLE_CAPTURE = "capture"
ROLE_OPERATOR = "operator"
_SCHEME = "spiffe://"

# Longest reason of a correction or a resolution: one bound for every reason ingest takes.
MAX_REASON_CHARS = bounds.MAX_REASON_CHARS
# Longest prefix of an identity or a casilla id quoted in an error message (characters).
_QUOTE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified identity of a caller.

    Attributes:
        spiffe_id: the full SPIFFE ID, or ``""`` when no identity reached ingest.
        role: ``capture``, ``operator``, another role, or ``""`` when unrecognised.
        centre: the capture centre (capture role only).
        operator: the operator's name: within its centre for the capture role, the
            operator's own name for the operator role; ``""`` when the identity names
            none.
    """

    spiffe_id: str
    role: str = ""
    centre: str = ""
    operator: str = ""

    @property
    def is_capture_operator(self) -> bool:
        """A capture centre's operator (may take part in double capture)."""
        return self.role == ROLE_CAPTURE and bool(self.operator)

    @property
    def is_operator(self) -> bool:
        """An operator of the authority (may correct and resolve)."""
        return self.role == ROLE_OPERATOR and bool(self.operator)


def _quote(value: str) -> str:
    return repr(value[:_QUOTE_CHARS]) + ("..." if len(value) > _QUOTE_CHARS else "")


def caller_from_spiffe_id(spiffe_id: str) -> Caller:
    """Parse a verified SPIFFE ID; an ID of an unknown shape is a caller of no role."""
    if not spiffe_id.startswith(_SCHEME):
        return Caller(spiffe_id=spiffe_id)
    segments = spiffe_id[len(_SCHEME) :].split("/")
    if len(segments) < 3 or not all(is_valid_name(s) for s in segments[1:]):
        return Caller(spiffe_id=spiffe_id)
    role, names = segments[1], segments[2:]
    if role == ROLE_CAPTURE and len(names) in (1, 2):
        return Caller(
            spiffe_id=spiffe_id,
            role=role,
            centre=names[0],
            operator=names[1] if len(names) == 2 else "",
        )
    if role == ROLE_OPERATOR and len(names) == 1:
        return Caller(spiffe_id=spiffe_id, role=role, operator=names[0])
    return Caller(spiffe_id=spiffe_id, role=role if len(names) == 1 else "")


def assignments(election: ElectionIndex) -> Mapping[str, str]:
    """``casilla_id -> capture centre`` of every assigned casilla of the catalogue."""
    return {c.id: c.capture_centre_id for c in election.pb.casillas if c.capture_centre_id}


def check_assignment(
    assigned: Mapping[str, str], casilla_id: str, caller: Caller
) -> Rejection | None:
    """PERMISSION_DENIED on ``casilla_id`` unless ``caller`` is the centre the casilla is
    assigned to (a casilla with no assignment may be captured by any centre)."""
    centre = assigned.get(casilla_id)
    if centre is None or (caller.role == ROLE_CAPTURE and caller.centre == centre):
        return None
    who = f"capture centre {_quote(caller.centre)}" if caller.centre else _quote(caller.spiffe_id)
    return Rejection(
        RejectCode.PERMISSION_DENIED,
        "casilla_id",
        f"casilla {_quote(casilla_id)} is assigned to another capture centre; "
        f"{who} may not capture it",
    )


def check_capture_operator(caller: Caller) -> Rejection | None:
    """PERMISSION_DENIED on ``provenance.operator_id`` unless the caller's certificate
    names a capture operator (double capture counts operators by certificate)."""
    if caller.is_capture_operator:
        return None
    return Rejection(
        RejectCode.PERMISSION_DENIED,
        "provenance.operator_id",
        f"double capture needs an operator's certificate "
        f"(spiffe://<td>/capture/<centre>/<operator>); {_quote(caller.spiffe_id or 'no identity')}"
        " names no operator",
    )


def check_operator(caller: Caller, action: str) -> Rejection | None:
    """PERMISSION_DENIED unless the caller is an authenticated operator."""
    if caller.is_operator:
        return None
    return Rejection(
        RejectCode.PERMISSION_DENIED,
        "",
        f"{action} needs an operator's certificate (spiffe://<td>/operator/<name>); "
        f"caller is {_quote(caller.spiffe_id or 'unidentified')}",
    )


def check_reason(reason: str) -> Rejection | None:
    """INVALID_ARGUMENT on ``reason`` unless it has something other than white space and
    meets :func:`bounds.reason_problem` (printable, at most :data:`MAX_REASON_CHARS`)."""
    if not reason.strip():
        return Rejection(
            RejectCode.INVALID_ARGUMENT, "reason", "a reason is required (it is logged)"
        )
    problem = bounds.reason_problem(reason)
    if problem is not None:
        return Rejection(RejectCode.INVALID_ARGUMENT, "reason", f"reason: {problem}")
    return None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A correction recorded by one operator, waiting for a second one.

    Attributes:
        operator: the SPIFFE ID of the operator who proposed it.
        supersedes_revision: the revision it corrects.
        digest: the content digest of the corrected acta.
        acta: the corrected acta, serialized deterministically (what is logged).
        reason: the proposer's reason (logged with the correction).
        time: when it was recorded (ISO 8601).
    """

    operator: str
    supersedes_revision: int
    digest: bytes
    acta: bytes
    reason: str
    time: str


def matching_proposal(
    proposals: Mapping[str, Proposal], *, caller: Caller, supersedes_revision: int, digest: bytes
) -> Proposal | None:
    """The proposal of ANOTHER operator for the same figures over the same revision: the
    one that ``caller`` approves by submitting the same correction."""
    for proposal in proposals.values():
        if (
            proposal.operator != caller.spiffe_id
            and proposal.supersedes_revision == supersedes_revision
            and proposal.digest == digest
        ):
            return proposal
    return None
