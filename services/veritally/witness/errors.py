"""Errors of the witness's own configuration and state (not of the requests it answers:
those are :class:`veritally.witness.protocol.RefusalError`)."""

from __future__ import annotations

from veritally.errors import ServiceError

__all__ = ["WitnessConfigError", "WitnessError", "WitnessStateError"]


class WitnessError(ServiceError):
    """The root of the witness's errors."""


class WitnessConfigError(WitnessError):
    """The key file or the list of witnessed logs cannot be used."""


class WitnessStateError(WitnessError):
    """The state directory cannot be used: another process holds it, or a record in it is
    corrupt (the witness refuses to start rather than forget what it cosigned)."""
