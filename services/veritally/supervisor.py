"""Supervised child processes: start, wait until healthy, drain and stop; and the CRL
kept fresh while they run.

Used by :mod:`veritally.stack` (``veritally up``, the demo, the end-to-end tests), which
runs the real services as separate processes (each its own store and port), exactly as a
deployment does. A process is healthy when its gRPC health service answers SERVING.

Envoy refuses every new connection once the CRL's nextUpdate has passed, so a stack that
runs longer than a CRL's validity needs the CRL reissued: :class:`CrlKeeper` does it on
a schedule (:class:`CrlSchedule`), refuses to let a stack start on a CRL that would
expire before it could be reissued, and logs an ERROR with the time left when reissuing
keeps failing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veritally.errors import VeritallyError
from veritally.pki import CRL_VALIDITY, Pki, PkiError, crl_next_update, layout
from veritally.rpc import TlsFiles

log = logging.getLogger(__name__)

# How often the CRL keeper looks at the CRL at most (seconds): far below any reissue
# period, cheap (one small file read), and short enough that a stop is prompt.
CRL_CHECK_MAX_INTERVAL_S = 60.0


class ProcessError(VeritallyError, RuntimeError):
    """A supervised process exited early or never became healthy."""


@dataclass
class Process:
    """One supervised child process.

    Attributes:
        name: short name used in messages and for the log file.
        argv: the command.
        log_path: file receiving the child's stdout and stderr.
        health_target: ``host:port`` of its gRPC health service, if it has one.
        health_tls: client certificate to present to that health service.
        health_server_name: TLS name to expect from it.
        env: extra environment variables.
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    health_target: str | None = None
    health_tls: TlsFiles | None = None
    health_server_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child, appending its output to ``log_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the children
            )

    @property
    def pid(self) -> int:
        """The child's pid."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether the child's health service answers SERVING."""
        if self.health_target is None:
            return self.alive()
        options: list[tuple[str, str]] = []
        if self.health_tls is None:
            channel = grpc.insecure_channel(self.health_target)
        else:
            if self.health_server_name:
                options.append(("grpc.ssl_target_name_override", self.health_server_name))
            channel = grpc.secure_channel(
                self.health_target, self.health_tls.channel_credentials(), options=options
            )
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until healthy.

        Raises:
            ProcessError: the child exited, or was not healthy within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(f"{self.name} exited early:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise ProcessError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, *, grace: float = 10.0) -> int | None:
        """SIGTERM (the services drain on it), then SIGKILL after ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; used by the reliability tests."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


# ------------------------------------------------------------------------------------
# the CRL


class CrlError(VeritallyError, RuntimeError):
    """The CRL on disk would expire before it can be reissued (the stack must not start)."""


@dataclass(frozen=True, kw_only=True)
class CrlSchedule:
    """When the stack reissues the CRL, and when it alarms or refuses to start.

    Attributes:
        validity: nextUpdate of each reissued CRL, from the moment it is signed.
        reissue_every: a CRL is reissued once it is this old (it has ``validity -
            reissue_every`` left); default a quarter of the validity (42 h of 7 days),
            so three reissues in a row can fail before anything bites.

    Derived thresholds (see :func:`assess_crl`): an ERROR alarm when less than
    ``validity - 2 × reissue_every`` is left (two reissues missed: 3.5 days of 7), and a
    refusal to start when less than one ``reissue_every`` is left and reissuing fails.

    Raises:
        ValueError: a non-positive validity, or a period not below half the validity
            (the alarm would come after the CRL expired).
    """

    validity: dt.timedelta = CRL_VALIDITY
    reissue_every: dt.timedelta = CRL_VALIDITY / 4

    def __post_init__(self) -> None:
        if self.validity <= dt.timedelta(0) or self.reissue_every <= dt.timedelta(0):
            raise ValueError("CRL validity and reissue period must be positive")
        if self.reissue_every * 2 >= self.validity:
            raise ValueError(
                f"reissue_every ({self.reissue_every}) must be below half the validity "
                f"({self.validity})"
            )

    @property
    def alarm_below(self) -> dt.timedelta:
        """Time left under which every check logs an ERROR (two reissues missed)."""
        return self.validity - 2 * self.reissue_every

    @property
    def refuse_below(self) -> dt.timedelta:
        """Time left under which the stack refuses to start unless it can reissue."""
        return self.reissue_every

    @property
    def check_interval_s(self) -> float:
        """Seconds between two looks at the CRL (four per period, at most a minute)."""
        return min(CRL_CHECK_MAX_INTERVAL_S, self.reissue_every.total_seconds() / 4)


@dataclass(frozen=True, kw_only=True)
class CrlAssessment:
    """What a CRL's nextUpdate means now (pure; see :func:`assess_crl`).

    Attributes:
        left: time until nextUpdate (negative once expired).
        due: it is time to reissue.
        alarm: close enough to expiry to log an ERROR.
        refuse: too close to start a stack on it.
    """

    left: dt.timedelta
    due: bool
    alarm: bool
    refuse: bool


def assess_crl(
    *, next_update: dt.datetime, now: dt.datetime, schedule: CrlSchedule
) -> CrlAssessment:
    """Decide from the CRL's nextUpdate alone, so that the decision survives restarts
    and a CRL rewritten by a revocation (fresh again) is simply not due.

    Raises:
        ValueError: a naive datetime.
    """
    if next_update.tzinfo is None or now.tzinfo is None:
        raise ValueError("next_update and now must be timezone-aware")
    left = next_update - now
    return CrlAssessment(
        left=left,
        due=left <= schedule.validity - schedule.reissue_every,
        alarm=left < schedule.alarm_below,
        refuse=left < schedule.refuse_below,
    )


def _describe(left: dt.timedelta) -> str:
    seconds = int(left.total_seconds())
    text = str(dt.timedelta(seconds=abs(seconds)))
    return f"in {text}" if seconds >= 0 else f"{text} ago"


class CrlKeeper:
    """Reissues the CRL of a PKI directory on a :class:`CrlSchedule`, in a thread.

    Each reissue is signed by the CA in the directory and renamed into place
    (:meth:`veritally.pki.Pki.reissue_crl`), which Envoy's file-based SDS picks up for
    new handshakes without a restart (ADR 0041).
    """

    def __init__(
        self,
        pki_root: Path,
        *,
        schedule: CrlSchedule,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """Describe the keeper; nothing runs until :meth:`check_at_start`/:meth:`start`."""
        self.pki_root = Path(pki_root)
        self.schedule = schedule
        self.clock = clock
        self.reissued = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def crl_path(self) -> Path:
        """The CRL file Envoy reads."""
        return layout(self.pki_root).crl

    def _next_update(self) -> dt.datetime | None:
        try:
            return crl_next_update(self.crl_path)
        except PkiError as e:
            log.error("%s", e)
            return None

    def _reissue(self) -> dt.datetime:
        # Loaded again each time: the manifest may have new revocations.
        next_update = Pki.load(self.pki_root).reissue_crl(validity=self.schedule.validity)
        self.reissued += 1
        log.info("CRL reissued: nextUpdate %s", next_update.isoformat())
        return next_update

    def check(self) -> CrlAssessment:
        """One round: reissue when due; log an ERROR with the time left when close to
        expiry (whether or not the reissue worked). Returns the state after the round."""
        next_update = self._next_update()
        failure = ""
        if (
            next_update is None
            or assess_crl(next_update=next_update, now=self.clock(), schedule=self.schedule).due
        ):
            try:
                next_update = self._reissue()
            except (PkiError, OSError, ValueError) as e:
                failure = f"reissuing it failed: {e}"
        if next_update is None:
            # No readable CRL and none could be written: as bad as an expired one.
            log.error("CRL %s unreadable and not reissued (%s)", self.crl_path, failure)
            return CrlAssessment(left=-self.schedule.validity, due=True, alarm=True, refuse=True)
        state = assess_crl(next_update=next_update, now=self.clock(), schedule=self.schedule)
        if state.alarm:
            log.error(
                "CRL %s expires %s (nextUpdate %s): after that Envoy refuses every new "
                "connection; %s",
                self.crl_path,
                _describe(state.left),
                next_update.isoformat(),
                failure or "reissue it (veritally pki reissue-crl) and check the CA key",
            )
        elif failure:
            log.warning("CRL %s expires %s; %s", self.crl_path, _describe(state.left), failure)
        return state

    def check_at_start(self) -> CrlAssessment:
        """:meth:`check` once, before anything starts.

        Raises:
            CrlError: the CRL expires within one reissue period (or already has) and
                could not be reissued: a stack started on it would lock everyone out.
        """
        state = self.check()
        if state.refuse:
            raise CrlError(
                f"the CRL {self.crl_path} expires {_describe(state.left)} and could not be "
                f"reissued (it must outlast one reissue period, {self.schedule.reissue_every}); "
                "Envoy would refuse every new connection. Reissue it where the CA key is "
                "(veritally pki reissue-crl) and start again"
            )
        return state

    def start(self) -> None:
        """Check every :attr:`CrlSchedule.check_interval_s` in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="crl-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.schedule.check_interval_s):
            try:
                self.check()
            except Exception:  # the thread must keep running; the failure is logged
                log.exception("CRL check failed")

    def stop(self) -> None:
        """Stop the thread (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
