"""Capture progress per state, read from the newest cut of the stack's own bundle.

The operations room follows the night state by state: how many of each state's expected
actas were captured and counted, per contest, as PREP's header row shows them
(ACTAS_ESPERADAS, ACTAS_CAPTURADAS, ACTAS_CONTABILIZADAS). Those figures are in the
signed results of the newest cut; reading them from the bundle that publication writes
costs ingest's hot path nothing and shows exactly what the media are being served.

Every read is bounded; a bundle that is missing, being created or unreadable gives
:class:`ProgressUnavailableError` with the reason, and the console shows it in place of the
figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from veritally.errors import ServiceError
from veritally_client.protocol.pb import election_pb2, log_pb2, results_pb2

__all__ = ["ContestProgress", "ProgressUnavailableError", "StateProgress", "read_progress"]

# Largest files read back (bytes): `latest` is a few hundred bytes; a national cut with
# its results about 0.5 MiB; the definition of a federal election a few MiB.
MAX_POINTER_BYTES = 64 * 1024
MAX_CUT_BYTES = 64 * 1024 * 1024
MAX_DEFINITION_BYTES = 64 * 1024 * 1024
_PERCENT_E4 = 10_000


class ProgressUnavailableError(ServiceError):
    """The bundle has no readable newest cut yet (the message says why)."""


@dataclass(frozen=True)
class ContestProgress:
    """One contest's actas in one state (PREP's header figures)."""

    expected: int
    captured: int
    counted: int
    captured_percent: float  # PREP's 4-decimal truncated percentage


@dataclass(frozen=True)
class StateProgress:
    """A state's progress per contest, in the definition's contest order."""

    id: str
    name: str
    contests: dict[str, ContestProgress]

    def to_json(self) -> dict[str, Any]:
        """JSON values (``veritally status --json``)."""
        return {
            "id": self.id,
            "name": self.name,
            "contests": {
                c: {
                    "expected": p.expected,
                    "captured": p.captured,
                    "counted": p.counted,
                    "captured_percent": p.captured_percent,
                }
                for c, p in self.contests.items()
            },
        }


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ProgressUnavailableError(f"cannot read {path.name}: {e.strerror or e}") from None
    if len(data) > limit:
        raise ProgressUnavailableError(f"{path.name} is larger than {limit} bytes")
    return data


def read_progress(bundle: Path) -> tuple[int, list[StateProgress]]:
    """The newest cut's number and every state's progress, in definition order.

    Raises:
        ProgressUnavailableError: no cut yet, or a file is missing, too large or malformed.
    """
    try:
        pointer = json.loads(_read(bundle / "latest", MAX_POINTER_BYTES))
        cut_number = int(pointer["cut_number"])
        cut_path = bundle / f"cuts/{cut_number}.cut"
        definition_path = bundle / str(pointer["election_definition"])
    except (ValueError, KeyError, TypeError) as e:
        raise ProgressUnavailableError(f"latest is malformed: {type(e).__name__}") from None
    if definition_path.resolve().parent != (bundle / "election").resolve():
        raise ProgressUnavailableError("latest names a definition outside the bundle")
    try:
        cut = log_pb2.SignedCut.FromString(_read(cut_path, MAX_CUT_BYTES))
        results = results_pb2.Results.FromString(cut.results)
        definition = election_pb2.ElectionDefinition.FromString(
            _read(definition_path, MAX_DEFINITION_BYTES)
        )
    except DecodeError:
        raise ProgressUnavailableError(
            f"cut {cut_number} or the definition does not parse"
        ) from None
    names = {s.id: s.name for s in definition.states}
    by_state = {u.unit_id: u for u in results.units if u.level == results_pb2.LEVEL_STATE}
    progress = []
    for state_id, name in names.items():
        unit = by_state.get(state_id)
        contests = {}
        for totals in unit.contests if unit is not None else ():
            c = totals.completeness
            contests[totals.contest_id] = ContestProgress(
                expected=c.actas_expected,
                captured=c.actas_captured,
                counted=c.actas_counted,
                captured_percent=c.captured_percent_e4 / _PERCENT_E4,
            )
        progress.append(StateProgress(id=state_id, name=name, contests=contests))
    return cut_number, progress
