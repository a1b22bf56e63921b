"""The witness policy of a trust root: k of n listed witnesses must cosign a checkpoint.

A checkpoint note carries the publisher's signatures and, as further signature lines,
the cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``) that witnesses returned
to the publisher. Counting them (:func:`count_cosignatures`), on a note whose publisher
signatures already verified:

1. a line whose name and key id are no listed witness's is ignored (signed-note: other
   keys' lines are none of ours), whatever its length or type;
2. a listed witness's line that does not verify (forged, truncated, another message) is
   not counted, and neither refuses the note: cosignatures are gathered from third
   parties and appended by the publisher, so a broken one must neither veto a cut that
   has its quorum nor help one that has not (docs/adr/0091);
3. each listed witness counts once, however many valid lines it has (its newest
   timestamp is kept);
4. fewer than ``k`` witnesses is :class:`InsufficientCosignaturesError`
   (:func:`require_quorum`).

Freshness (:func:`witnessed_time`): the ``k``-th newest valid timestamp is the time by
which at least ``k`` witnesses vouched that this was the newest tree they had seen; the
verifier bounds its age like the cut time's. A timestamp further in the future than the
allowed clock skew is not counted (a witness with a broken clock vouches for nothing), so
it cannot push the ``k``-th newest time forward.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from veritally_client._cosignature import Cosignature, CosignatureVerifier
from veritally_client._errors import (
    BadSignatureError,
    InsufficientCosignaturesError,
    MalformedDataError,
    UnknownKeyError,
)
from veritally_client._note import VerifiedNote

__all__ = ["Witnessed", "count_cosignatures", "require_quorum", "witnessed_time"]


@dataclass(frozen=True)
class Witnessed:
    """The valid cosignatures of one note, one per distinct listed witness.

    Attributes:
        cosignatures: in the order of the trust root's witness list.
    """

    cosignatures: tuple[Cosignature, ...] = ()

    @property
    def timestamps(self) -> tuple[int, ...]:
        """Their timestamps, newest first."""
        return tuple(sorted((c.timestamp for c in self.cosignatures), reverse=True))


def count_cosignatures(note: VerifiedNote, witnesses: Sequence[CosignatureVerifier]) -> Witnessed:
    """Steps 1-3: the listed witnesses that validly cosigned ``note``'s text."""
    if not witnesses:
        return Witnessed()
    by_name: dict[str, list[CosignatureVerifier]] = {}
    for w in witnesses:
        by_name.setdefault(w.name, []).append(w)
    best: dict[CosignatureVerifier, Cosignature] = {}
    for line in note.signature_lines:
        # open_note checked each line's shape: an em dash, a space, a valid name, a space.
        name = line[2:].partition(" ")[0]
        for witness in by_name.get(name, ()):
            try:
                cosignature = witness.verify_line(note.text, line)
            except UnknownKeyError:
                continue  # (1) same name, another key
            except (BadSignatureError, MalformedDataError):
                continue  # (2) a listed witness's line that does not verify: not counted
            # (3) once per witness, its newest valid timestamp
            held = best.get(witness)
            if held is None or cosignature.timestamp > held.timestamp:
                best[witness] = cosignature
    return Witnessed(tuple(best[w] for w in witnesses if w in best))


def require_quorum(witnessed: Witnessed, *, threshold: int, note: bytes, size: int) -> None:
    """Step 4: at least ``threshold`` distinct listed witnesses cosigned.

    Raises:
        InsufficientCosignaturesError: if fewer did.
    """
    valid = len(witnessed.cosignatures)
    if valid < threshold:
        raise InsufficientCosignaturesError(
            f"the checkpoint of tree size {size} is cosigned by {valid} of the trust "
            f"root's witnesses, {threshold} required",
            note=bytes(note),
            valid=valid,
            required=threshold,
        )


def witnessed_time(
    witnessed: Witnessed, *, threshold: int, now: dt.datetime, max_skew: float
) -> tuple[dt.datetime | None, int]:
    """The ``threshold``-th newest cosignature time not in the future beyond
    ``max_skew`` seconds, and how many cosignatures were too far in the future.

    Returns:
        (the time, or None if fewer than ``threshold`` timestamps are usable or the
        threshold is 0; the number of timestamps refused as in the future).
    """
    limit = now.timestamp() + max_skew
    usable = [t for t in witnessed.timestamps if t <= limit]
    future = len(witnessed.timestamps) - len(usable)
    if threshold < 1 or len(usable) < threshold:
        return None, future
    return dt.datetime.fromtimestamp(usable[threshold - 1], dt.UTC), future
