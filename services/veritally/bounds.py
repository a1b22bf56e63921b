"""The size and shape bounds of everything a client sends, in one place (ADR 0046).

What a client sends is checked against these bounds before any rule of PREP is applied
(``rules.validate`` step 0), so that nothing unbounded is stored, logged, published or
echoed in an error message:

1. the serialized acta is at most :data:`MAX_ACTA_BYTES`;
2. no message of the acta's tree carries fields this version does not know (an unknown
   field would be logged and published as opaque bytes nobody validated);
3. every identifier is short printable ASCII from a small set (:func:`identifier_problem`),
   so that look-alikes (a Cyrillic ``о`` in ``op-1``) are refused, not told apart
   (option ids where the contest is looked up, see :func:`acta_problem`);
4. every enum holds a value the proto defines;
5. every timestamp is within the range of ``google.protobuf.Timestamp`` (years 1 to 9999,
   nanos in [0, 1e9)).

:func:`identifier_problem` is the one rule for identifiers: the election definition
loader and the callers naming operators use it too. :func:`clip` is how any text a
client sent appears in an error message: repr-quoted and cut to a few dozen characters.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from google.protobuf import unknown_fields
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from veritally_client.protocol.pb import acta_pb2

ActaPb = acta_pb2.Acta

# Largest serialized acta, in bytes. An acta of the biggest federal contest (a few dozen
# options, a 32-byte image digest, a provenance) is a few hundred bytes; 16 KiB leaves a
# 30x margin for any real ballot and keeps a batch of MAX_ACTAS_PER_MESSAGE actas, a
# leaf page and a bundle page small enough to read back in one message.
MAX_ACTA_BYTES: Final = 16 * 1024
# Largest leaf of the log, in bytes: an ActaRecord wrapping an acta of at most
# MAX_ACTA_BYTES plus its acta id (two identifiers), revision, receive time, counting
# decision and sequence (well under 1 KiB together). Readers size their pages with it;
# publication logs no longer leaf, so every leaf fits a tlog-tiles entry bundle (whose
# entries have 16-bit lengths: 64 KiB at most).
MAX_LEAF_BYTES: Final = 32 * 1024
# Actas in one SubmitActas message: each message is one transaction; a bigger batch
# gains nothing (the fsync is already amortised at a few hundred: clients send 500) and
# holds the writer. With actas of at most MAX_ACTA_BYTES this sizes the message.
MAX_ACTAS_PER_MESSAGE: Final = 1_000
# Actas in one SubmitActas stream: its response carries one outcome per acta (~50 B),
# so this keeps the response at a few MiB, well under the message size limit.
MAX_ACTAS_PER_STREAM: Final = 100_000
# Longest identifier (casilla, contest, option, capture centre, operator), in characters.
# PREP's longest ids (a casilla key such as ``01-0001-0001-C12``) are under 20.
MAX_IDENTIFIER_CHARS: Final = 64
# Longest reason of a correction or a cross-check decision, in characters: a sentence or
# two written by an operator, stored in the audit table.
MAX_REASON_CHARS: Final = 1_000
# How many characters of a client's text an error message quotes. A huge trailer
# (the status message) resets the HTTP/2 connection Envoy shares with every other client.
ECHO_CHARS: Final = 40

# Identifiers: ASCII letters, digits and ``. _ - :``, starting with a letter or a digit.
# No ``/`` (it separates casilla and contest in an acta id), no spaces, no look-alikes.
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_IDENTIFIER_RULE: Final = (
    f"1 to {MAX_IDENTIFIER_CHARS} ASCII letters, digits or . _ - : "
    "(starting with a letter or digit)"
)
# Range of google.protobuf.Timestamp seconds: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59Z (the spec's bounds; beyond them no RFC 3339 text exists). No
# plausibility window is applied: the centre's clock is the centre's statement, ingest
# stamps its own receive time on every record.
MIN_TIMESTAMP_SECONDS: Final = -62_135_596_800
MAX_TIMESTAMP_SECONDS: Final = 253_402_300_799
_NANOS_PER_SECOND: Final = 1_000_000_000


def clip(text: str | bytes) -> str:
    """``text`` as an error message may quote it: repr-quoted, at most ~ECHO_CHARS long."""
    if len(text) <= ECHO_CHARS:
        return repr(text)
    return f"{text[:ECHO_CHARS]!r}... ({len(text)} long)"


def identifier_problem(value: str, *, required: bool = True) -> str | None:
    """What is wrong with ``value`` as an identifier, or None when it is one.

    Args:
        value: the identifier as received.
        required: whether an empty value is a problem (optional fields may be empty).

    Returns:
        A message that quotes ``value`` clipped (never unbounded), or None.
    """
    if not value:
        return "is empty" if required else None
    if len(value) > MAX_IDENTIFIER_CHARS or _IDENTIFIER.fullmatch(value) is None:
        return f"must be {_IDENTIFIER_RULE}, found {clip(value)}"
    return None


def is_identifier(value: str) -> bool:
    """Whether ``value`` is a valid (non-empty) identifier."""
    return identifier_problem(value) is None


def acta_id_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an acta id ``<casilla_id>/<contest_id>``."""
    casilla, sep, contest = value.partition("/")
    if not sep or not is_identifier(casilla) or not is_identifier(contest):
        return f"must be <casilla_id>/<contest_id> of two identifiers, found {clip(value)}"
    return None


def reason_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an operator's reason (free text, any script, but
    printable and at most MAX_REASON_CHARS characters), or None."""
    if len(value) > MAX_REASON_CHARS:
        return f"at most {MAX_REASON_CHARS} characters, found {len(value)}"
    if not value.replace("\n", " ").isprintable():
        return "must be printable text (no control characters)"
    return None


def unknown_field_path(message: Message, path: str = "") -> str | None:
    """Path of the first message in ``message``'s tree carrying unknown fields, or None.

    ``""`` stands for ``message`` itself; nested messages are named like
    ``option_votes[2]`` or ``provenance.captured_time``.
    """
    if len(unknown_fields.UnknownFieldSet(message)):
        return path
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        name = f"{path}.{fd.name}" if path else fd.name
        if fd.is_repeated:
            for i, item in enumerate(value):
                found = unknown_field_path(item, f"{name}[{i}]")
                if found is not None:
                    return found
        else:
            found = unknown_field_path(value, name)
            if found is not None:
                return found
    return None


def timestamp_problem(ts: Timestamp) -> str | None:
    """What is wrong with ``ts`` as a Timestamp (out of the spec's range), or None."""
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        return (
            f"seconds must be within 0001-01-01 and 9999-12-31 "
            f"([{MIN_TIMESTAMP_SECONDS}, {MAX_TIMESTAMP_SECONDS}]), found {ts.seconds}"
        )
    if not 0 <= ts.nanos < _NANOS_PER_SECOND:
        return f"nanos must be within [0, {_NANOS_PER_SECOND}), found {ts.nanos}"
    return None


_ORIGINS: Final = frozenset(acta_pb2.ActaOrigin.values())
_METHODS: Final = frozenset(acta_pb2.DigitisationMethod.values())
_ProvenanceTime = Literal["received_at_centre_time", "digitised_time", "captured_time"]
_PROVENANCE_TIMES: Final[tuple[_ProvenanceTime, ...]] = (
    "received_at_centre_time",
    "digitised_time",
    "captured_time",
)


def acta_problem(acta: ActaPb) -> tuple[str, str] | None:
    """``(field path, message)`` of the first bound ``acta`` breaks, or None.

    Marks are checked with the figures (``rules.validate`` step 4); everything else a
    client can make unbounded or undefined is checked here, in the order of the module
    docstring.
    """
    # (1) size
    size = acta.ByteSize()
    if size > MAX_ACTA_BYTES:
        return "acta", f"an acta is at most {MAX_ACTA_BYTES} bytes serialized, found {size}"
    # (2) unknown fields anywhere: detected on a copy without them (~2 us, in C), and
    # only then located by walking the tree (~5 us in Python)
    known = ActaPb()
    known.CopyFrom(acta)
    known.DiscardUnknownFields()
    if known.ByteSize() != size:
        where = unknown_field_path(acta) or "acta"
        return where, "carries fields unknown to this version of the protocol"
    # (3) identifiers
    for name in ("casilla_id", "contest_id"):
        problem = identifier_problem(getattr(acta, name))
        if problem is not None:
            return name, problem
    # Option ids are checked where they are looked up in the contest
    # (rules.validate step 3): one in the contest is an identifier (the loader checks
    # them), one that is not gets this rule's message. Checking each here would cost
    # half a microsecond per option of every acta for nothing.
    if acta.HasField("provenance"):
        prov = acta.provenance
        for name in ("capture_centre_id", "operator_id"):
            problem = identifier_problem(getattr(prov, name), required=False)
            if problem is not None:
                return f"provenance.{name}", problem
        # (4) enums
        if prov.origin not in _ORIGINS:
            return "provenance.origin", f"unknown origin {prov.origin}"
        if prov.digitisation not in _METHODS:
            return "provenance.digitisation", f"unknown digitisation method {prov.digitisation}"
        # (5) timestamps
        for name in _PROVENANCE_TIMES:
            if prov.HasField(name):
                problem = timestamp_problem(getattr(prov, name))
                if problem is not None:
                    return f"provenance.{name}", problem
    return None


def request_problem(request: Message) -> tuple[str, str] | None:
    """``(field path, message)`` when the request message itself carries unknown fields
    (those inside an acta are the acta's bounds, :func:`acta_problem`), or None."""
    if len(unknown_fields.UnknownFieldSet(request)):
        return "request", "carries fields unknown to this version of the protocol"
    return None
