"""Log lines: JSON objects with an event's fields, and the option that chooses them."""

from __future__ import annotations

import json
import logging
import sys

from veritally.cli.main import _command_in
from veritally.logs import JsonFormatter, event


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "veritally.requests", logging.INFO, __file__, 1, "a %s", ("b",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_holds_the_message_and_the_events_fields() -> None:
    line = json.loads(JsonFormatter().format(_record(**event(identity="spiffe://x", ms=1.5))))
    assert line["message"] == "a b"
    assert (line["level"], line["logger"]) == ("INFO", "veritally.requests")
    assert (line["identity"], line["ms"]) == ("spiffe://x", 1.5)
    assert line["time"].endswith("+00:00")


def test_an_event_cannot_replace_the_lines_own_fields() -> None:
    """A field named like the line's own (a caller-chosen value, say) never hides them."""
    line = json.loads(JsonFormatter().format(_record(**event(message="forged", level="DEBUG"))))
    assert (line["message"], line["level"]) == ("a b", "INFO")


def test_an_exception_is_one_field_of_one_line() -> None:
    record = _record()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["error"]


def test_the_command_is_found_after_an_options_value() -> None:
    assert _command_in(["--log-format", "json", "serve", "ingest"]) == "serve"
    assert _command_in(["--log-format=json", "up"]) == "up"
    assert _command_in(["-v", "demo"]) == "demo"
    assert _command_in(["--log-format"]) is None
