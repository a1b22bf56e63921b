"""Abuse through Envoy while well-behaved clients work: one outlet flooding, oversized
requests, many idle connections, all at once against the real stack (three services
behind a real Envoy with mTLS). What the well-behaved outlet and capture centre see must
not change: every one of their calls answered OK, and every acta they submitted logged.

Then, each alone for a few seconds, one capture centre's gzip flood (requests that would
inflate to 60 MB) and stuffing flood (disagreeing captures of the same few actas): the
well-behaved clients still succeed, the gzip requests never do, and ingest stores at most
its caps of the stuffed actas.

A short run (a few seconds); ``make soak`` runs the long one and reports the figures in
docs/RELIABILITY.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.abuse import STUFFING_ACTAS, AbuseReport, FloodPhase, run_abuse
from veritally.election import load_actas, load_election
from veritally.ingest.engine import MAX_CONFLICTS_PER_ACTA
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir

pytestmark = [pytest.mark.e2e]

CASILLAS = 200  # ~600 actas; the polite centre (one of 4) submits ~120 of its ~150
SECONDS = 6.0  # length of the abuse run
FLOOD_SECONDS = 3.0  # length of each capture centre's flood after it (gzip, stuffing)
IDLE = 300  # idle mTLS connections held open during the run
POLITE_RATE = 10.0  # calls/s of each well-behaved client
# Small per-outlet budget so that the flood is refused almost at once; the total bucket
# keeps its default, far above the flood a single Python process can send.
MEDIA_BUCKET = TokenBucket(burst=20, per_second=10)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AbuseReport]:
    state = StateDir(tmp_path_factory.mktemp("abuse"))
    Bootstrap(casillas=CASILLAS, seed=11).ensure(state)
    actas = list(load_actas(load_election(state.election_yaml), state.actas_csv))
    with Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        single_capture=True,
        limits=Limits(media=MEDIA_BUCKET),
    ) as stack:
        yield run_abuse(
            stack,
            seconds=SECONDS,
            actas=actas,
            idle=IDLE,
            polite_rate=POLITE_RATE,
            gzip_seconds=FLOOD_SECONDS,
            stuffing_seconds=FLOOD_SECONDS,
        )


def test_flooding_outlet_is_refused_with_resource_exhausted(report: AbuseReport) -> None:
    assert report.flood.codes["RESOURCE_EXHAUSTED"] > 0
    # Its own budget (burst + refills over the run) bounds what got through.
    assert report.flood.codes["OK"] <= MEDIA_BUCKET.burst + MEDIA_BUCKET.per_second * (
        int(report.seconds) + 2
    )


def test_oversized_requests_are_refused_and_never_succeed(report: AbuseReport) -> None:
    assert report.oversized.calls > 0
    assert report.oversized.codes["OK"] == 0
    assert set(report.oversized.codes) <= {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}


def test_idle_connections_are_accepted_and_held(report: AbuseReport) -> None:
    assert report.idle_failed == 0
    assert report.idle_opened == IDLE


def test_well_behaved_outlet_sees_every_read_succeed_during_the_abuse(report: AbuseReport) -> None:
    assert report.polite_reads.calls > 0
    assert report.polite_reads.success_rate == 1.0, report.polite_reads.codes


def test_well_behaved_capture_centre_sees_every_submission_succeed(report: AbuseReport) -> None:
    assert report.polite_submits.calls > 0
    assert report.polite_submits.success_rate == 1.0, report.polite_submits.codes


def _phase(report: AbuseReport, name: str) -> FloodPhase:
    [phase] = [p for p in report.phases if p.name == name]
    return phase


@pytest.mark.parametrize("flood", ["gzip", "stuffing"])
def test_well_behaved_clients_succeed_during_a_capture_centres_flood(
    report: AbuseReport, flood: str
) -> None:
    phase = _phase(report, flood)
    assert phase.attacker.calls > 0
    for stats in (phase.polite_reads, phase.polite_submits):
        assert stats.calls > 0
        assert stats.success_rate == 1.0, stats.codes


def test_gzip_requests_are_refused_unimplemented(report: AbuseReport) -> None:
    assert set(_phase(report, "gzip").attacker.codes) == {"UNIMPLEMENTED"}


def test_stuffing_is_refused_past_the_first_capture_and_stores_at_most_the_caps(
    report: AbuseReport,
) -> None:
    phase = _phase(report, "stuffing")
    assert phase.attacker.codes["OK"] <= STUFFING_ACTAS  # the first capture of each
    assert phase.attacker.codes["ALREADY_EXISTS"] > MAX_CONFLICTS_PER_ACTA
    assert phase.stored["log_records"] <= STUFFING_ACTAS
    assert phase.stored["conflicts_kept"] <= STUFFING_ACTAS * MAX_CONFLICTS_PER_ACTA
