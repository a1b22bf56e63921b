"""Submitting the actas of a CSV file through ingest's batch API (``veritally import``).

Rows are read with the election's column mapping (``veritally.election.load_acta_rows``)
and sent by the capture client (``veritally.capture``): actas in messages of ``batch``
actas, one ``SubmitActas`` stream per message, and the rows of expected actas that never
arrived (``actas.missing``, PREP's "sin acta") as one ``RecordMissingActa`` call each;
:class:`ImportSummary` counts the answers. The command line and its progress bar are
:mod:`veritally.cli.importer`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import IO

from veritally.capture import (
    Answer,
    Batcher,
    Capture,
    CaptureClient,
    CaptureConfig,
    CaptureCounters,
    Operator,
)
from veritally.election import ElectionFiles, MissingActa, load_acta_rows
from veritally.rpc import TlsFiles
from veritally_client.protocol.pb import ingest_pb2

__all__ = ["ImportSummary", "acta_files", "count_rows", "import_actas", "missing_request"]


def count_rows(path: Path, *, skip_lines: int = 0) -> int:
    """Data rows of a CSV file: its lines minus the ``skip_lines`` before the header and
    the header."""
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - skip_lines - 1)


def acta_files(election: ElectionFiles, actas_csv: Path | None) -> list[Path]:
    """The files an import reads: ``actas_csv``, or else every acta file the definition
    names (per-contest files in contest order)."""
    if actas_csv is not None:
        return [actas_csv]
    mapping = election.actas
    if mapping is None:
        return []
    if mapping.files:
        return [mapping.files[c] for c in election.index.contest_ids if c in mapping.files]
    return [mapping.file] if mapping.file is not None else []


class ImportSummary:
    """The answers to an import, counted as they arrive.

    Attributes:
        counters: streams and calls sent and retried (per status) by the capture client.
        status: outcome counts of the actas per status name (ACCEPTED, DUPLICATE,
            REJECTED...).
        rejected: rejections of actas per ``code field``.
        not_counted: actas accepted but not counted.
        missing: outcome counts of the missing actas' records per status name (ACCEPTED,
            logged and never counted; DUPLICATE, recorded before; REJECTED).
        missing_rejected: rejections of missing actas' records per ``code field``.
    """

    def __init__(self, outcomes: IO[str] | None = None) -> None:
        """Count answers; with ``outcomes``, also append each outcome there as a JSON line."""
        self.counters = CaptureCounters()
        self.status: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.not_counted = 0
        self.missing: Counter[str] = Counter()
        self.missing_rejected: Counter[str] = Counter()
        self._out = outcomes

    def add(self, outcomes: Iterable[ingest_pb2.ActaOutcome], *, missing: bool = False) -> None:
        """Count one answer's outcomes (and write them as JSON lines); ``missing`` for the
        answer to a missing acta's record."""
        status_of, rejected = (
            (self.missing, self.missing_rejected) if missing else (self.status, self.rejected)
        )
        lines = []
        for o in outcomes:
            status = ingest_pb2.OutcomeStatus.Name(o.status).removeprefix("OUTCOME_STATUS_")
            status_of[status] += 1
            if o.status == ingest_pb2.OUTCOME_STATUS_REJECTED:
                rejected[f"{o.code} {o.field}".strip()] += 1
            elif o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED and not o.counted and not missing:
                self.not_counted += 1
            if self._out is not None:
                lines.append(
                    json.dumps(
                        {
                            "acta_id": o.acta_id,
                            "status": status,
                            "revision": o.revision,
                            "sequence": o.sequence,
                            "code": o.code,
                            "field": o.field,
                            "missing": missing,
                        }
                    )
                )
        if self._out is not None and lines:
            self._out.write("\n".join(lines) + "\n")
            self._out.flush()

    @property
    def answered(self) -> int:
        """Outcomes received: one per row sent, acta or missing acta."""
        return sum(self.status.values()) + sum(self.missing.values())

    def as_dict(self) -> dict[str, object]:
        """The summary ``veritally import`` prints as JSON."""
        return {
            "answered": self.answered,
            "status": dict(self.status),
            "accepted_not_counted": self.not_counted,
            "rejected": dict(self.rejected),
            "missing": {"status": dict(self.missing), "rejected": dict(self.missing_rejected)},
            "retries": dict(self.counters.retries),
        }


def missing_request(missing: MissingActa) -> ingest_pb2.RecordMissingActaRequest:
    """The RecordMissingActa request of a missing acta's row."""
    return ingest_pb2.RecordMissingActaRequest(
        casilla_id=missing.casilla_id, contest_id=missing.contest_id, reason=missing.reason
    )


async def import_actas(
    *,
    election: ElectionFiles,
    actas_csv: Path | None,
    target: str,
    tls: TlsFiles | None,
    config: CaptureConfig,
    summary: ImportSummary,
    contest: str | None = None,
    centre: str | None = None,
    server_name: str | None = None,
    answered: Callable[[ImportSummary], None] = lambda summary: None,
) -> None:
    """Submit the actas of ``actas_csv`` to ``target`` as the holder of ``tls``, and
    record its rows of missing actas (``actas.missing``).

    Args:
        election: the loaded election whose mapping reads the file.
        actas_csv: the acta CSV; None for every acta file the definition names. A file
            named under ``actas.files`` holds the contest it is named for.
        target: ``host:port`` of ingest (or of the edge).
        tls: the operator's certificate (None: plaintext).
        config: batch size, streams in flight and retry budget.
        summary: counts the answers.
        contest: the contest every row of ``actas_csv`` counts, for a file that is not
            named under ``actas.files`` and has no contest column.
        centre: send only the rows (actas and missing actas) whose capture centre column
            names it.
        server_name: TLS name of ingest, if not the host.
        answered: called after each answer is counted.

    Raises:
        veritally.election.DefinitionError: the election or the actas cannot be read.
        ExceptionGroup: of veritally.capture.CaptureError, when a batch or a missing
            acta's record was refused with a status that is not retryable (and, for a
            record, not ingest's refusal of it) or beyond the retry budget.
    """

    async def messages() -> AsyncIterator[tuple[str, Capture]]:
        # One sender for the whole file (the operator of the certificate): key "".
        batcher = Batcher(config.batch)
        for row in load_acta_rows(election, actas_csv, contest=contest):
            if isinstance(row, MissingActa):
                if not centre or row.capture_centre_id == centre:
                    yield "", missing_request(row)
                continue
            if centre and row.provenance.capture_centre_id != centre:
                continue
            if (message := batcher.add("", row)) is not None:
                yield "", message
        for item in batcher.flush():
            yield item

    # One operator: the holder of the certificate (double capture is a second operator
    # importing the same file with her own).
    client = CaptureClient(
        target=target,
        operators={"": [Operator(tls=tls)]},
        config=config,
        server_name=server_name,
        counters=summary.counters,
    )

    def count(answer: Answer) -> None:
        summary.add(answer.outcomes, missing=answer.missing is not None)
        answered(summary)

    async with client:
        await client.run(messages(), count)
