"""The root of the errors the veritally services raise.

Every error class defined under ``veritally`` derives from :class:`VeritallyError`, so a
caller (a command line, the supervisor, a test) can tell the services' own failures from
anything else with one ``except``. A class that also behaves as a standard error keeps it
as a second base (``class DefinitionError(VeritallyError, ValueError)``), so existing
``except ValueError`` handlers still catch it. tests/unit/test_errors.py holds every
module to this.
"""

from __future__ import annotations

__all__ = ["VeritallyError"]


class VeritallyError(Exception):
    """The root of every error the veritally services raise."""
