"""The steps of ``veritally demo`` that are not display: prepare the state directory for a
fresh night, capture it while a media client verifies every cut, recount it with the SDK
and summarise what was verified. Each step returns data or raises :class:`DemoError`
(or the SDK's VerificationError as itself); :mod:`veritally.cli.demo` shows them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from veritally.capture import CaptureError
from veritally.demo.media import MediaWatcher
from veritally.demo.replay import ActaPb, CaptureStats, replay
from veritally.errors import ServiceError
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import RecountReport, VerificationError, VerifiedCut
from veritally_client.protocol.pb import results_pb2

__all__ = [
    "CATCH_UP_TIMEOUT_S",
    "CONTEST",
    "DemoError",
    "NightOptions",
    "Recount",
    "capture_night",
    "check_watcher",
    "contest",
    "prepare_state",
    "recount_night",
    "summary",
]

# How long the end of the demo waits for publication to cut over every logged acta
# (seconds): a few cut intervals after the last acta, plus aggregation catching up.
CATCH_UP_TIMEOUT_S = 300.0
CONTEST = "PRES"  # the contest shown live and checked by the recount


class DemoError(ServiceError):
    """The demo could not verify the election night (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class NightOptions:
    """What ``veritally demo`` was asked to replay.

    Attributes:
        casillas: casillas of the synthetic election.
        seed: its seed.
        speed: replay pace relative to the actas' capture times (0: as fast as possible).
        single_capture: one capture per acta instead of two.
    """

    casillas: int
    seed: int
    speed: float
    single_capture: bool

    @property
    def double_capture(self) -> bool:
        """Whether two operators capture each acta."""
        return not self.single_capture


def prepare_state(state: StateDir, *, casillas: int, seed: int) -> list[str]:
    """Make ``state`` ready for a fresh election night.

    Keeps the PKI, signing key and trust root (media keep their pinned trust root across
    runs); keeps the election when it was generated with the same seed and size, else
    generates it again; wipes the stores, bundle, logs, the media client's state and
    the local witnesses' records (their keys stay).

    Returns:
        What was created, one line each.

    Raises:
        veritally.pki.PkiError: an existing PKI is inconsistent.
        OSError: files cannot be written.
    """
    bootstrap = Bootstrap(casillas=casillas, seed=seed)
    params = bootstrap.election_params()
    try:
        existing = json.loads(state.election_params.read_text())
    except (OSError, ValueError):
        existing = None  # not a generated election, or an older layout: generate again
    if existing != params and state.election.exists():
        shutil.rmtree(state.election)
    state.wipe_data()
    return bootstrap.ensure(state)


def contest(unit: results_pb2.UnitResults, contest_id: str) -> results_pb2.ContestTotals:
    """The totals of ``contest_id`` in ``unit``.

    Raises:
        LookupError: the results have no such contest.
    """
    for c in unit.contests:
        if c.contest_id == contest_id:
            return c
    raise LookupError(f"no contest {contest_id} in the results")


def check_watcher(watcher: MediaWatcher) -> None:
    """Re-raise what stopped the media client: a verification error as itself."""
    error = watcher.error
    if isinstance(error, VerificationError):
        raise error
    if error is not None:
        raise DemoError(f"media client: {error!r}") from error


def capture_night(
    stack: Stack,
    actas: Iterator[ActaPb],
    stats: CaptureStats,
    watcher: MediaWatcher,
    options: NightOptions,
    *,
    catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> VerifiedCut:
    """Replay ``actas`` through the edge, then wait until the (running) ``watcher`` has
    verified a cut covering every logged acta.

    Returns:
        That cut.

    Raises:
        DemoError: a batch could not be submitted, the media client failed, or no cut
            covered the logged actas in time.
        veritally_client.VerificationError: a cut did not verify.
    """
    try:
        asyncio.run(
            replay(
                stack,
                actas,
                stats,
                speed=options.speed,
                double_capture=options.double_capture,
            )
        )
    except* CaptureError as group:
        first = group.exceptions[0]
        raise DemoError(f"capture failed: {first!r}") from first
    check_watcher(watcher)
    target = len(stats.logged)
    watcher.finish(target)
    if not watcher.done.wait(catch_up_timeout_s):
        watcher.abort()
        raise DemoError(
            f"no cut covered the {target:,} logged actas within {catch_up_timeout_s:.0f} s"
        )
    check_watcher(watcher)
    seen = watcher.latest
    if seen is None:
        raise DemoError("the media client stopped without verifying any cut")
    return seen


@dataclass(frozen=True, kw_only=True)
class Recount:
    """The full recount of the night.

    Attributes:
        latest: the newest cut, verified before the recount.
        report: the SDK's recount of every leaf and every cut's results.
        recounted: the recounted national totals of :data:`CONTEST`.
        seconds: how long it took.
    """

    latest: VerifiedCut
    report: RecountReport
    recounted: results_pb2.ContestTotals
    seconds: float


def recount_night(
    watcher: MediaWatcher,
    target: int,
    *,
    on_latest: Callable[[VerifiedCut], None] = lambda cut: None,
    progress: Callable[[int, int], None] | None = None,
) -> Recount:
    """Verify the newest cut, then recount the whole log with the SDK (every leaf, the
    root, every cut's results) and check that it covers ``target`` acta records and
    that the recounted national totals are the signed ones.

    Args:
        watcher: the media client whose identity, trust root and state are used.
        target: acta records the recount must cover.
        on_latest: called with the newest cut before the recount starts.
        progress: called with (leaves done, leaves in all) during the recount.

    Raises:
        DemoError: the recount does not cover the log, or its totals differ.
        veritally_client.VerificationError: a leaf, proof or result did not verify.
    """
    t = time.monotonic()
    with watcher.client() as client:
        # Verify the newest cut first, so that the recount covers the whole log.
        latest = client.latest()
        on_latest(latest)
        report = client.recount(progress=progress)
    seconds = time.monotonic() - t
    recounted = contest(report.unit("national"), CONTEST)
    signed = contest(latest.national(), CONTEST)
    if report.tree_size != latest.tree_size or report.acta_records < target:
        raise DemoError(
            f"recount covers {report.tree_size} leaves and {report.acta_records} acta "
            f"records; expected {latest.tree_size} leaves and {target} acta records"
        )
    if recounted.SerializeToString(deterministic=True) != signed.SerializeToString(
        deterministic=True
    ):
        raise DemoError("the recounted national results differ from the signed ones")
    return Recount(latest=latest, report=report, recounted=recounted, seconds=seconds)


def summary(
    options: NightOptions,
    *,
    expected: int,
    stats: CaptureStats,
    watcher: MediaWatcher,
    recount: Recount,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """What ``STATE/demo-summary.json`` holds about a verified night."""
    latest, recounted = recount.latest, recount.recounted
    return {
        "verified": True,
        "casillas": options.casillas,
        "seed": options.seed,
        "double_capture": options.double_capture,
        "speed": options.speed,
        "actas_in_file": expected,
        "actas_sent": stats.actas,
        "captures_answered": sum(stats.status.values()),
        "outcomes": dict(stats.status),
        "actas_logged": len(stats.logged),
        "retries": stats.retries,
        "cuts_verified_live": watcher.verified,
        "final_cut": latest.cut_number,
        "tree_size": latest.tree_size,
        "acta_records": latest.acta_records,
        "national": {
            "contest": CONTEST,
            "options": {o.option_id: o.votes for o in recounted.options},
            "total_votes": recounted.total_votes,
            "actas_counted": recounted.completeness.actas_counted,
        },
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "captures_per_second": round(stats.rate(), 1),
    }
