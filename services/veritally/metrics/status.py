"""The operations room's figures (``veritally status``), read back from the services'
``/metrics``.

:func:`scrape` fetches the text of each job of a stack's ``prometheus.yml`` (the IO);
:func:`status_from` turns those texts into a :class:`Status` (pure). Lags are computed
here from the live figures of each service: aggregation's behind ingest's log now, and
publication's newest cut behind it, which is what the room wants to see (the alerts use
the services' own lag gauges, see :mod:`veritally.metrics.families`).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from veritally.errors import ServiceError
from veritally.metrics.exposition import CERTIFICATE_EXPIRY, CRL_EXPIRY

__all__ = [
    "MAX_SCRAPE_BYTES",
    "SCRAPE_TIMEOUT_S",
    "ScrapeError",
    "Status",
    "scrape",
    "status_from",
]

# Largest /metrics answer read from one job (bytes): ours are a few KiB, Envoy's admin
# some hundreds; anything larger is not a veritally endpoint.
MAX_SCRAPE_BYTES = 4 * 1024 * 1024
# Seconds to wait for one job's answer: loopback, a few milliseconds when healthy.
SCRAPE_TIMEOUT_S = 2.0
STATUS_JOBS = ("ingest", "aggregation", "publication", "stack")


class ScrapeError(ServiceError):
    """A job's /metrics could not be read or parsed (the message says which and why)."""


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """sample name -> ``(labels, value)`` of each sample of a Prometheus text answer.

    Raises:
        ScrapeError: the text is not the Prometheus exposition format.
    """
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    except ValueError as e:
        raise ScrapeError(f"not Prometheus text: {e}") from e
    return samples


def _fetch(target: str, timeout_s: float) -> str:
    url = f"http://{target}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            body: bytes = answer.read(MAX_SCRAPE_BYTES + 1)
    except (urllib.error.URLError, OSError) as e:
        raise ScrapeError(f"{url}: {e}") from e
    if len(body) > MAX_SCRAPE_BYTES:
        raise ScrapeError(f"{url}: answer larger than {MAX_SCRAPE_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def scrape(
    targets: Mapping[str, str], *, timeout_s: float = SCRAPE_TIMEOUT_S
) -> dict[str, Samples | ScrapeError]:
    """Each job's parsed samples (all jobs at once), or why it could not be read."""

    def one(target: str) -> Samples | ScrapeError:
        try:
            return parse(_fetch(target, timeout_s))
        except ScrapeError as e:
            return e

    jobs = [job for job in STATUS_JOBS if job in targets]
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
        answers = list(pool.map(lambda job: one(targets[job]), jobs))
    return dict(zip(jobs, answers, strict=True))


@dataclass(frozen=True, kw_only=True)
class Status:
    """What the operations room watches, at one moment.

    Attributes:
        up: job -> whether its /metrics answered.
        errors: job -> why it did not.
        received: actas received by ingest (this process's life).
        captures: outcome state -> actas (accepted, duplicate, rejected,
            awaiting_second_capture, cross_check...).
        pending: ``awaiting_second_capture`` and ``cross_check`` -> actas waiting now.
        rejected: reject code -> actas.
        conflicts: actas refused because they differ from the logged revision.
        log_records: records in ingest's log.
        aggregation_position: records aggregation counted.
        aggregation_lag: ``log_records - aggregation_position``.
        last_cut: number of publication's newest cut.
        last_cut_age_s: seconds since its cut time.
        cut_records: acta records it covers.
        publication_lag: ``log_records - cut_records``.
        final: whether it is the night's final cut.
        certificates_expiry: role -> earliest notAfter (Unix time).
        crl_expiry: the CRL's nextUpdate (Unix time).
        progress_cut: the cut whose results ``states`` come from (read from the
            bundle, :mod:`veritally.metrics.progress`), or None.
        states: capture progress per state and contest (``StateProgress.to_json``).
        states_error: why ``states`` could not be read, if so.
    """

    up: dict[str, bool]
    errors: dict[str, str] = field(default_factory=dict)
    received: int | None = None
    captures: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    conflicts: int | None = None
    log_records: int | None = None
    aggregation_position: int | None = None
    aggregation_lag: int | None = None
    last_cut: int | None = None
    last_cut_age_s: float | None = None
    cut_records: int | None = None
    publication_lag: int | None = None
    final: bool | None = None
    certificates_expiry: dict[str, float] = field(default_factory=dict)
    crl_expiry: float | None = None
    progress_cut: int | None = None
    states: list[dict[str, Any]] = field(default_factory=list)
    states_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON values (``veritally status --json``)."""
        return asdict(self)


def _one(samples: Samples | None, name: str) -> float | None:
    if samples is None or not samples.get(name):
        return None
    return samples[name][0][1]


def _by(samples: Samples | None, name: str, label: str) -> dict[str, int]:
    if samples is None:
        return {}
    return {labels[label]: int(v) for labels, v in samples.get(name, [])}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(0, a - b)


def status_from(scrapes: Mapping[str, Samples | ScrapeError]) -> Status:
    """The figures of one round of :func:`scrape`."""
    got = {job: s for job, s in scrapes.items() if not isinstance(s, ScrapeError)}
    ingest, aggregation = got.get("ingest"), got.get("aggregation")
    publication, stack = got.get("publication"), got.get("stack")
    log_records = _int(_one(ingest, "veritally_ingest_log_records"))
    position = _int(_one(aggregation, "veritally_aggregation_position_records"))
    cut_records = _int(_one(publication, "veritally_publication_acta_records"))
    # Reject codes no acta had are left out; every outcome state is kept (0 included),
    # but the catch-all "other" only when an acta had it.
    rejected = {
        k: v for k, v in _by(ingest, "veritally_ingest_actas_rejected_total", "reason").items() if v
    }
    final = _one(publication, "veritally_publication_final")
    certificates: dict[str, float] = {}
    for source in (stack, ingest, aggregation, publication):
        for labels, value in (source or {}).get(CERTIFICATE_EXPIRY, []):
            role = labels["role"]
            certificates[role] = min(value, certificates.get(role, value))
    captures = _by(ingest, "veritally_ingest_actas_total", "state")
    return Status(
        up={job: job in got for job in scrapes},
        errors={job: str(s) for job, s in scrapes.items() if isinstance(s, ScrapeError)},
        received=_int(_one(ingest, "veritally_ingest_actas_received_total")),
        captures={k: v for k, v in captures.items() if v or k != "other"},
        pending=_by(ingest, "veritally_ingest_captures_pending", "state"),
        rejected=rejected,
        conflicts=rejected.get("ALREADY_EXISTS", 0) if ingest is not None else None,
        log_records=log_records,
        aggregation_position=position,
        aggregation_lag=_minus(log_records, position),
        last_cut=_int(_one(publication, "veritally_publication_last_cut_number")),
        last_cut_age_s=_one(publication, "veritally_publication_last_cut_age_seconds"),
        cut_records=cut_records,
        publication_lag=_minus(log_records, cut_records),
        final=None if final is None else bool(final),
        certificates_expiry=certificates,
        crl_expiry=_one(stack, CRL_EXPIRY),
    )
