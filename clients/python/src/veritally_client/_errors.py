"""The error tree of veritally-client.

One root, :class:`VeritallyError`, split by who is at fault:

* :class:`VerificationError` and its subclasses: the data received from the world is not
  what a trusted publisher signed (or is not well formed). Each failure has its own type;
  callers branch on types, never on message text.
* :class:`TransportError`: the publisher could not be reached or answered with an error.
  Retrying later may help; nothing was verified or trusted.
* :class:`TrustRootError`: the trust material itself is unusable (expired, badly signed).
* :class:`CredentialsError`: the client's own TLS files are unusable (unreadable, a key
  that is not the certificate's, a certificate out of its validity): a local mistake,
  found before connecting.
* :class:`StateDirectoryError`: the state directory given to a client cannot be used by
  it: it belongs to another publisher (:class:`StateMismatchError`) or another process
  uses it (:class:`StateInUseError`). A local mistake: use another state directory.
* :class:`UnknownIdError`: a state, district, contest, candidate or party asked for by id
  or name is not in the verified results or their election (also a :class:`LookupError`).

Caller bugs (a wrong argument type, a negative size) raise built-in exceptions instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: _verify imports this module
    from veritally_client._verify import VerifiedCut

__all__ = [
    "BadProofError",
    "BadSignatureError",
    "CredentialsError",
    "DigestMismatchError",
    "ForkError",
    "InsufficientCosignaturesError",
    "MalformedDataError",
    "RecountMismatchError",
    "RollbackError",
    "StaleCheckpointError",
    "StalledError",
    "StateDirectoryError",
    "StateInUseError",
    "StateMismatchError",
    "TransportError",
    "TrustRootError",
    "UnknownIdError",
    "UnknownKeyError",
    "VerificationError",
    "VeritallyError",
]


class VeritallyError(Exception):
    """Root of every error raised by veritally-client for data or conditions it met."""


class VerificationError(VeritallyError):
    """Something received does not verify. Nothing from it was trusted or persisted."""


class MalformedDataError(VerificationError):
    """Bytes that do not parse as the format they claim to be (note, proof, protobuf)."""


class BadSignatureError(VerificationError):
    """A signature by a trusted key does not verify over the signed bytes."""


class UnknownKeyError(VerificationError):
    """No signature on the note is by a trusted key (unknown signatures are ignored)."""


class DigestMismatchError(VerificationError):
    """Bytes do not hash to the digest that was signed for them (e.g. a results blob)."""


class BadProofError(VerificationError):
    """An inclusion or consistency proof does not lead to the signed root hash."""


class RollbackError(VerificationError):
    """A checkpoint or cut is older than one already verified (tree size or cut number)."""


class InsufficientCosignaturesError(VerificationError):
    """A checkpoint signed by the publisher lacks the cosignatures its trust root asks
    for: fewer than ``k`` of the listed witnesses validly cosigned it. Either the
    witnesses were not shown this tree (a split view: another outlet may be shown
    another one) or too many of them are down.

    Attributes:
        note: the exact signed note bytes refused (signed by the publisher's keys), kept
            by the client as evidence.
        valid: how many distinct listed witnesses validly cosigned it.
        required: the trust root's witness threshold.
    """

    def __init__(self, message: str, *, note: bytes, valid: int, required: int) -> None:
        super().__init__(message)
        self.note = note
        self.valid = valid
        self.required = required


class StaleCheckpointError(VerificationError):
    """A cut is older than the configured maximum age: the view may be frozen."""


class StalledError(VerificationError):
    """Signed cuts say ingest accepted records they do not cover, and for longer than the
    configured limit no cut covered a new one: the publisher heartbeats over a stuck
    pipeline (aggregation or publication cannot get past a record).

    The cut itself passed every other check; it is not persisted as trusted state.

    Attributes:
        cut: the verified cut that showed the stall (``cut.lag_records`` is its lag).
        since_cut: number of the first cut seen behind ingest at the same acta records.
        stalled_seconds: seconds between that cut's time and this cut's (signed times).
    """

    def __init__(
        self, message: str, *, cut: VerifiedCut, since_cut: int, stalled_seconds: float
    ) -> None:
        super().__init__(message)
        self.cut = cut
        self.since_cut = since_cut
        self.stalled_seconds = stalled_seconds


class RehearsalCutError(VerificationError):
    """A cut of a rehearsal (its signed results say ``test``) reached a client that was
    not told to accept test data (``ClientConfig.allow_test``): a simulacro's figures must
    never be taken for the election's."""


class AfterFinalCutError(VerificationError):
    """A cut signed after the night's final cut: the publisher closed the night (its
    signed results said ``final``) and then signed another cut."""


class RecountMismatchError(VerificationError):
    """Results recomputed from the logged actas differ from the results that were signed."""


class ForkError(VerificationError):
    """Two signed trees that cannot both be true: the publisher equivocated.

    Attributes:
        evidence: the two signed checkpoints (exact note bytes) that conflict, plus any
            proof bytes, as kept for export and to show others.
    """

    def __init__(self, message: str, *, evidence: tuple[bytes, bytes]) -> None:
        super().__init__(message)
        self.evidence = evidence


class TrustRootError(VeritallyError):
    """The trust root cannot be used: malformed, badly signed, expired or a bad update."""


class CredentialsError(VeritallyError):
    """The client's TLS material cannot work: a file that is not PEM of its kind, a key
    that does not belong to the certificate, or a certificate that has expired or is not
    valid yet. Found locally, before any connection."""


class StateDirectoryError(VeritallyError):
    """The client's state directory cannot be used by this client (nothing was read
    from the publisher, nothing in the directory was changed)."""


class StateMismatchError(StateDirectoryError):
    """The state directory holds the verified state of another publisher or trust root
    than the one this client pins (same origin line, other keys: another night, another
    stack). Its figures are not compared with this publisher's: use another directory."""


class StateInUseError(StateDirectoryError):
    """Another live client (in this or another process) holds the state directory: two
    clients writing one trusted state would overwrite each other's checks."""


class TransportError(VeritallyError):
    """The publisher could not be reached, or answered with an error status."""


class UnknownIdError(VeritallyError, LookupError):
    """A lookup that matches nothing: a unit, contest, race, candidate, party or option
    asked for by id (or, where names are accepted, by a name that matches none or more
    than one). Nothing is wrong with the verified data; the question was.

    A :class:`LookupError` too, so callers that caught that before keep working.

    Attributes:
        kind: what was looked up: ``"state"``, ``"district"``, ``"national"``,
            ``"contest"``, ``"race"``, ``"candidate"``, ``"party"`` or ``"option"``.
        key: what was given.
        valid: the ids that would have been found, in definition order.
    """

    def __init__(self, message: str, *, kind: str, key: str, valid: tuple[str, ...]) -> None:
        super().__init__(message)
        self.kind = kind
        self.key = key
        self.valid = valid
