"""Log lines for the operations room: plain text on a terminal, one JSON object per line
for machines (``veritally --log-format json``; ``veritally up`` runs its services so).

A JSON line holds ``time`` (UTC, milliseconds), ``level``, ``logger`` and ``message``, and
the fields of the event passed as ``extra={"event": {...}}`` (for a request: the caller's
``identity`` as authenticated, the ``method``, the gRPC ``code`` and ``ms``); an
exception adds ``error``. Nothing is parsed back from the message text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import Final

__all__ = ["FORMATS", "JsonFormatter", "configure", "event"]

#: The values of ``--log-format``.
FORMATS: Final = ("text", "json")
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields of a line that an event cannot replace.
_OWN: Final = frozenset({"time", "level", "logger", "message", "error"})


def event(**fields: object) -> dict[str, Mapping[str, object]]:
    """``extra=`` for a log call whose line carries ``fields``."""
    return {"event": fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "event", None)
        if isinstance(fields, Mapping):
            line.update({k: v for k, v in fields.items() if k not in _OWN})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(*, level: int, fmt: str) -> None:
    """Send every log record to stderr in ``fmt`` (one of :data:`FORMATS`).

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    # Replace only a handler of an earlier call: others (a test's capture) stay.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO stream
    """The stderr handler :func:`configure` installs (and replaces)."""
