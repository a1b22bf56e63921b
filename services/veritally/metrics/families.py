"""What each service exports to Prometheus.

Names carry the ``veritally_`` prefix and their unit (``_seconds``, ``_total``,
``_bytes``, ``_records``). Labels take values from small fixed sets only: an outcome
``state`` (the proto's outcome statuses), a reject ``reason`` (the reject codes), a
``role``, a ``service``; never an acta id or a party's identity, which a caller could
multiply into as many series as it likes.

Two kinds of figure:

* events, counted where they happen in batches: ingest adds one ``inc(n)`` per state
  for each batch of actas it answers (not one per acta), publication observes one
  duration per cut, ingest one per group commit;
* levels, read at scrape time from what the services already keep (log size, position,
  the newest cut and the ingest figure signed into it, open streams): a collector that
  reads them costs nothing between scrapes.

The services reach these classes through their app; the figures they read are named by
small protocols here, so this room imports no service.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from veritally.metrics.exposition import ExpiryCollector
from veritally.reject import RejectCode
from veritally_client.protocol import ingest_records_of, parse_cut_leaf, parse_cut_time
from veritally_client.protocol.pb import ingest_pb2

__all__ = [
    "OUTCOME_STATES",
    "AggregationMetrics",
    "IngestMetrics",
    "PublicationMetrics",
    "ServiceMetrics",
    "StackMetrics",
]

# Outcome status -> the ``state`` label of veritally_ingest_actas_total.
OUTCOME_STATES: Mapping[int, str] = {
    ingest_pb2.OUTCOME_STATUS_ACCEPTED: "accepted",
    ingest_pb2.OUTCOME_STATUS_DUPLICATE: "duplicate",
    ingest_pb2.OUTCOME_STATUS_REJECTED: "rejected",
    ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_CAPTURE: "awaiting_second_capture",
    ingest_pb2.OUTCOME_STATUS_CROSS_CHECK: "cross_check",
    ingest_pb2.OUTCOME_STATUS_AWAITING_SECOND_APPROVAL: "awaiting_second_approval",
}
_OTHER = "other"
_REJECTED = ingest_pb2.OUTCOME_STATUS_REJECTED
# Store commits take milliseconds (one fsync per group); cuts up to seconds on a
# national log. Buckets in seconds.
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_CUT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Streams(Protocol):
    """Open streaming calls per caller (``veritally.rpc.streams``)."""

    @property
    def open(self) -> Mapping[str, int]: ...


class ServiceMetrics:
    """A service's own registry: its process (CPU, memory, open files), its open
    streams, its certificate's expiry, and what the subclass adds.

    Attributes:
        registry: what its ``/metrics`` answers.
        service: ``ingest``, ``aggregation`` or ``publication``.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._certificates: list[tuple[str, Path]] = []
        self.registry.register(ExpiryCollector(lambda: list(self._certificates)))

    def watch_certificate(self, path: Path, *, role: str = "service") -> None:
        """Export the notAfter of the certificate at ``path`` (read at each scrape)."""
        self._certificates.append((role, path))

    def watch_streams(self, streams: _Streams) -> None:
        """Export the streaming calls open on this service and the callers holding them."""
        self.registry.register(_StreamCollector(streams))


class _StreamCollector(Collector):
    def __init__(self, streams: _Streams) -> None:
        self._streams = streams

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = dict(self._streams.open)  # one copy: the event loop changes it
        yield GaugeMetricFamily(
            "veritally_grpc_streams_open", "Streaming calls open.", value=sum(held.values())
        )
        yield GaugeMetricFamily(
            "veritally_grpc_stream_callers", "Callers holding a stream.", value=len(held)
        )


class _IngestFigures(Protocol):
    @property
    def log_size(self) -> int: ...

    def pending_captures(self) -> tuple[int, int]: ...

    @property
    def night_closed(self) -> object | None: ...


class IngestMetrics(ServiceMetrics):
    """Ingest's figures: actas received, their outcomes by state, rejections by reason,
    captures awaiting a second capture or a cross-check, the log's size, store commits."""

    def __init__(self) -> None:
        super().__init__("ingest")
        r = self.registry
        self._received = Counter(
            "veritally_ingest_actas_received",
            "Actas received in submissions (each acta of each batch once).",
            registry=r,
        )
        states = Counter(
            "veritally_ingest_actas",
            "Outcomes of submitted actas by state.",
            ["state"],
            registry=r,
        )
        # Children bound once: a batch then costs one dict lookup and inc per state.
        self._states = {status: states.labels(name) for status, name in OUTCOME_STATES.items()}
        self._other_state = states.labels(_OTHER)
        reasons = Counter(
            "veritally_ingest_actas_rejected",
            "Rejected actas by reject code.",
            ["reason"],
            registry=r,
        )
        self._reasons = {code.name: reasons.labels(code.name) for code in RejectCode}
        self._other_reason = reasons.labels(_OTHER)
        self.commit_seconds = Histogram(
            "veritally_ingest_store_commit_seconds",
            "Group commits of the acta log to the store (one fsync each).",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )

    def count(self, received: int, outcomes: Sequence[ingest_pb2.ActaOutcome]) -> None:
        """Count one answered batch: ``received`` actas and their outcomes."""
        self._received.inc(received)
        states = Tally(o.status for o in outcomes)
        for status, n in states.items():
            self._states.get(status, self._other_state).inc(n)
        if states[_REJECTED]:
            for code, n in Tally(o.code for o in outcomes if o.status == _REJECTED).items():
                self._reasons.get(code, self._other_reason).inc(n)

    def watch(self, engine: _IngestFigures) -> None:
        """Export the engine's log size, pending captures and whether the night closed."""
        self.registry.register(_IngestCollector(engine))


class _IngestCollector(Collector):
    def __init__(self, engine: _IngestFigures) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self._engine
        yield GaugeMetricFamily(
            "veritally_ingest_log_records",
            "Records in the acta log (committed).",
            value=engine.log_size,
        )
        awaiting, cross_check = engine.pending_captures()
        pending = GaugeMetricFamily(
            "veritally_ingest_captures_pending",
            "Actas with captures not yet logged: awaiting a second capture, or in the "
            "cross-check queue (captures disagree, an operator decides).",
            labels=["state"],
        )
        pending.add_metric(["awaiting_second_capture"], awaiting)
        pending.add_metric(["cross_check"], cross_check)
        yield pending
        yield GaugeMetricFamily(
            "veritally_ingest_night_closed",
            "1 once the night is closed.",
            value=int(engine.night_closed is not None),
        )


class _AggregationFigures(Protocol):
    @property
    def position(self) -> int: ...

    @property
    def ingest_records(self) -> int: ...

    @property
    def stuck_at(self) -> int | None: ...


class AggregationMetrics(ServiceMetrics):
    """Aggregation's position in ingest's log and how far behind it is."""

    def __init__(self) -> None:
        super().__init__("aggregation")
        self.commit_seconds = Histogram(
            "veritally_aggregation_store_commit_seconds",
            "Pages of ingest's log appended to aggregation's store (one fsync each).",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )

    def watch(self, engine: _AggregationFigures) -> None:
        """Export the engine's position, ingest's size as heard, and the lag."""
        self.registry.register(_AggregationCollector(engine))


class _AggregationCollector(Collector):
    def __init__(self, engine: _AggregationFigures) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self._engine
        position, ingest = engine.position, engine.ingest_records
        yield GaugeMetricFamily(
            "veritally_aggregation_position_records", "Records counted.", value=position
        )
        yield GaugeMetricFamily(
            "veritally_aggregation_ingest_records",
            "Records in ingest's log as ingest last reported on its stream.",
            value=ingest,
        )
        yield GaugeMetricFamily(
            "veritally_aggregation_lag_records",
            "Records ingest logged that aggregation has not counted yet.",
            value=max(0, ingest - position),
        )
        yield GaugeMetricFamily(
            "veritally_aggregation_stuck",
            "1 while the follower cannot count the record at its position.",
            value=int(engine.stuck_at is not None),
        )


class _Cut(Protocol):
    @property
    def cut_number(self) -> int: ...

    @property
    def tree_size(self) -> int: ...

    @property
    def acta_records(self) -> int: ...

    @property
    def cut_time(self) -> str: ...

    @property
    def cut_leaf(self) -> bytes: ...


class _PublicationFigures(Protocol):
    @property
    def latest_cut_row(self) -> _Cut | None: ...

    @property
    def final(self) -> bool: ...


class PublicationMetrics(ServiceMetrics):
    """Publication's cuts: the newest one (number, time, log size, records covered, the
    ingest figure signed into it and the lag), cut durations and skipped intervals."""

    def __init__(self, *, interval_seconds: float) -> None:
        super().__init__("publication")
        r = self.registry
        self.cut_seconds = Histogram(
            "veritally_publication_cut_duration_seconds",
            "Cuts made: results and records read from aggregation, signed, stored.",
            buckets=_CUT_BUCKETS,
            registry=r,
        )
        self.cut_failures = Counter(
            "veritally_publication_cut_failures",
            "Intervals in which no cut was made (aggregation unreachable, bad data).",
            registry=r,
        )
        self.witness_requests = Counter(
            "veritally_publication_witness_requests",
            "Checkpoints sent to each witness, by outcome (cosigned, refused, unreachable).",
            ["witness", "outcome"],
            registry=r,
        )
        Gauge(
            "veritally_publication_interval_seconds",
            "Seconds between cuts (heartbeat included).",
            registry=r,
        ).set(interval_seconds)

    def observe_witness(self, witness: str, outcome: str) -> None:
        """One checkpoint sent to a witness: ``cosigned``, ``refused`` (a 4xx answer or
        cosignatures that do not verify) or ``unreachable`` (timeout, connection, 5xx)."""
        self.witness_requests.labels(witness=witness, outcome=outcome).inc()

    def observe_cut(self, seconds: float | None) -> None:
        """One interval: the cut's duration, or None when no cut was made."""
        if seconds is None:
            self.cut_failures.inc()
        else:
            self.cut_seconds.observe(seconds)

    def watch(self, engine: _PublicationFigures) -> None:
        """Export the engine's newest cut."""
        self.registry.register(_PublicationCollector(engine))


class _PublicationCollector(Collector):
    def __init__(self, engine: _PublicationFigures) -> None:
        self._engine = engine
        # cut number -> (cut time, ingest records signed in it): parsed once per cut.
        self._parsed: tuple[int, float, int] | None = None

    def _cut_figures(self, cut: _Cut) -> tuple[float, int]:
        if self._parsed is None or self._parsed[0] != cut.cut_number:
            when = parse_cut_time(cut.cut_time).timestamp()
            ingest = ingest_records_of(parse_cut_leaf(cut.cut_leaf))
            self._parsed = (cut.cut_number, when, max(ingest or 0, cut.acta_records))
        return self._parsed[1], self._parsed[2]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cut = self._engine.latest_cut_row
        if cut is None:
            return  # no cut yet: the age alert fires on the absent series
        when, ingest = self._cut_figures(cut)
        figures = [
            ("last_cut_number", "Number of the newest cut.", cut.cut_number),
            ("last_cut_timestamp_seconds", "Cut time of the newest cut (Unix time).", when),
            (
                "last_cut_age_seconds",
                "Seconds since the newest cut's time.",
                max(0.0, time.time() - when),
            ),
            ("log_leaves", "Leaves of the log as the newest cut signs it.", cut.tree_size),
            ("acta_records", "Acta records the newest cut covers.", cut.acta_records),
            (
                "ingest_records",
                "Records ingest had accepted, as signed into the newest cut.",
                ingest,
            ),
            (
                "lag_records",
                "Records ingest had accepted that the newest cut does not cover.",
                ingest - cut.acta_records,
            ),
            ("final", "1 once the newest cut is the final one.", int(self._engine.final)),
        ]
        for name, doc, value in figures:
            yield GaugeMetricFamily(f"veritally_publication_{name}", doc, value=value)


class _StackFigures(Protocol):
    @property
    def restarts(self) -> Mapping[str, list[float]]: ...

    def pids(self) -> Mapping[str, int | None]: ...


class StackMetrics:
    """What the supervisor of ``veritally up`` exports: children running and restarted,
    every certificate's and the CRL's expiry, and the free space of the state directory.

    Attributes:
        registry: what its ``/metrics`` answers.
    """

    def __init__(
        self,
        stack: _StackFigures,
        *,
        certificates: Callable[[], Iterable[tuple[str, Path]]],
        crl: Path,
        state_dir: Path,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ExpiryCollector(certificates, crl=crl))
        self.registry.register(_StackCollector(stack, state_dir))


class _StackCollector(Collector):
    def __init__(self, stack: _StackFigures, state_dir: Path) -> None:
        self._stack = stack
        self._state_dir = state_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "veritally_stack_child_up", "1 while the child process runs.", labels=["service"]
        )
        for name, pid in sorted(self._stack.pids().items()):
            up.add_metric([name], int(pid is not None))
        yield up
        restarts = GaugeMetricFamily(
            "veritally_stack_restarts",
            "Restarts of a crashed child within the restart window.",
            labels=["service"],
        )
        for name, times in sorted(dict(self._stack.restarts).items()):
            restarts.add_metric([name], len(times))
        yield restarts
        try:
            usage = shutil.disk_usage(self._state_dir)
        except OSError:
            return
        yield GaugeMetricFamily(
            "veritally_state_disk_free_bytes",
            "Bytes free on the state directory's file system (stores, bundle, logs).",
            value=usage.free,
        )
        yield GaugeMetricFamily(
            "veritally_state_disk_size_bytes",
            "Size of the state directory's file system.",
            value=usage.total,
        )
