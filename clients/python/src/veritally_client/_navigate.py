"""Navigation of verified results by geographic level and unit.

Levels are named by plain strings (``"national"``, ``"state"``, ``"district"``,
``"section"``, ``"casilla"``) in the public API; the wire enum stays inside.
The signed results blob holds the national, state and district levels; sections and
casillas are computed from the proven acta records by a recount.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from veritally_client._errors import UnknownIdError
from veritally_client._gen.veritally.v1 import results_pb2

__all__ = [
    "BLOB_LEVELS",
    "LEVELS",
    "find_unit",
    "level_name",
    "level_value",
    "units_at",
    "unknown_id",
]

#: Public level names and their wire values, from the top down.
LEVELS: Final[dict[str, results_pb2.Level.ValueType]] = {
    "national": results_pb2.LEVEL_NATIONAL,
    "state": results_pb2.LEVEL_STATE,
    "district": results_pb2.LEVEL_DISTRICT,
    "section": results_pb2.LEVEL_SECTION,
    "casilla": results_pb2.LEVEL_CASILLA,
}
#: The levels a signed results blob holds.
BLOB_LEVELS: Final = ("national", "state", "district")
_NAMES: Final = {v: k for k, v in LEVELS.items()}
# Valid ids named in an error message; the error's ``valid`` attribute has them all.
_IDS_SHOWN: Final = 40


def unknown_id(kind: str, key: str, valid: Iterable[str], *, why: str = "") -> UnknownIdError:
    """The error for a lookup of ``key`` among ``valid`` that failed (``why``: instead of
    "no <kind> <key>", when the key exists but does not fit, or is ambiguous)."""
    ids = tuple(valid)
    shown = ", ".join(repr(i) for i in ids[:_IDS_SHOWN]) or "none"
    if len(ids) > _IDS_SHOWN:
        shown += f", ... ({len(ids)} in all)"
    what = why or f"no {kind} {key!r}"
    return UnknownIdError(f"{what} (valid {kind} ids: {shown})", kind=kind, key=key, valid=ids)


def level_value(level: str) -> results_pb2.Level.ValueType:
    """The wire value of a level name.

    Raises:
        ValueError: if the name is not a level.
    """
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown level {level!r}; one of {', '.join(LEVELS)}") from None


def level_name(value: results_pb2.Level.ValueType) -> str:
    """The public name of a wire level value ("unspecified" if not set or unknown)."""
    return _NAMES.get(value, "unspecified")


def units_at(results: results_pb2.Results, level: str) -> Iterator[results_pb2.UnitResults]:
    """The units of the blob at ``level``, in blob order.

    Raises:
        ValueError: if the level is unknown.
    """
    value = level_value(level)
    return (u for u in results.units if u.level == value)


def find_unit(
    results: results_pb2.Results, level: str, unit_id: str = ""
) -> results_pb2.UnitResults:
    """One unit of a results blob.

    Raises:
        ValueError: if the level is unknown or not held in a results blob.
        UnknownIdError: (a LookupError) if the blob has no such unit; it lists the ids of
            the level's units.
    """
    if level not in BLOB_LEVELS:
        if level in LEVELS:
            raise ValueError(f"{level} results are not in the signed blob; recount to compute them")
        level_value(level)  # raises the unknown-level error
    for unit in units_at(results, level):
        if unit.unit_id == unit_id:
            return unit
    raise unknown_id(
        level,
        unit_id,
        (u.unit_id for u in units_at(results, level)),
        why=f"no {level} unit {unit_id!r} in the results",
    )
