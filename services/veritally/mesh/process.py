"""Run a real Envoy: start it on a rendered configuration, wait until it is ready, read
its stats, restart it (to pick up a new CRL), stop it.

The class is synchronous (it manages a child process and polls a loopback HTTP port);
asyncio callers run its blocking methods with ``asyncio.to_thread`` so that their own
gRPC servers keep answering Envoy's health checks meanwhile::

    with EnvoyProcess.from_topology(topology, directory=state / "envoy") as envoy:
        envoy.wait_ready()
        print(envoy.stats("listener.edge.ssl."))
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from veritally.errors import VeritallyError
from veritally.mesh.envoy import Endpoint, Topology, envoy_binary, validate, write

__all__ = ["EnvoyError", "EnvoyProcess", "free_port", "raise_open_files_limit"]

# How long Envoy gets to become ready, and to exit after SIGTERM (seconds). It is ready in
# well under a second here; the margin covers a loaded CI machine.
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05
# How much of Envoy's log an error message quotes (bytes).
_LOG_TAIL_BYTES = 4000


class EnvoyError(VeritallyError):
    """Envoy exited, or did not become ready in time; the message quotes its log."""


def raise_open_files_limit(needed: int) -> int:
    """Make sure processes started from here may open ``needed`` file descriptors.

    The soft RLIMIT_NOFILE of this process is raised to ``needed`` (never lowered) when
    the hard limit allows it; a child inherits it at fork. Envoy's overload manager
    caps downstream connections, but only below the limit the kernel enforces: with a
    lower limit, a flood of connections exhausts the descriptors first and Envoy can no
    longer accept anyone (nor open an upstream connection). Returns the soft limit now.

    Raises:
        EnvoyError: the hard limit is below ``needed``, so the caps cannot hold.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return soft
    if soft == resource.RLIM_INFINITY:
        return needed
    if hard != resource.RLIM_INFINITY and hard < needed:
        # A privileged process (CAP_SYS_RESOURCE) may raise its hard limit too, up to
        # the kernel's fs.nr_open; anyone else is told how to.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
        except (ValueError, OSError) as e:
            raise EnvoyError(
                f"Envoy needs {needed} open files (its connection caps plus headroom, "
                f"Limits.open_files_needed) but the hard RLIMIT_NOFILE is {hard} and "
                f"cannot be raised ({e}): raise it (ulimit -Hn, LimitNOFILE= in a systemd "
                "unit) or lower Limits.max_connections"
            ) from e
        return needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close).

    Another process may take it before it is used; on loopback in tests that race is
    rare and shows up as a clear bind error from Envoy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EnvoyProcess:
    """One Envoy process running a static configuration file."""

    def __init__(
        self,
        *,
        config: Path,
        admin: Endpoint,
        log_path: Path,
        concurrency: int = 1,
        log_level: str = "warning",
        drain_time_s: int = 1,
        open_files: int | None = None,
    ) -> None:
        """Describe the process; nothing starts until :meth:`start`.

        Args:
            config: the rendered YAML.
            admin: the admin address in that configuration (loopback).
            log_path: where Envoy writes its own log.
            concurrency: worker threads (1–2 on a small machine).
            log_level: Envoy's log level.
            drain_time_s: how long listeners drain on stop (seconds).
            open_files: the RLIMIT_NOFILE Envoy must run with (see
                :func:`raise_open_files_limit`); None leaves the inherited limit.
        """
        self.config = config
        self.admin = admin
        self.log_path = log_path
        self.concurrency = concurrency
        self.log_level = log_level
        self.drain_time_s = drain_time_s
        self.open_files = open_files
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_topology(
        cls, topology: Topology, *, directory: Path, concurrency: int = 1
    ) -> EnvoyProcess:
        """Render ``topology`` into ``directory/envoy.yaml`` (with the files it refers
        to), check it with ``envoy --mode validate``, and describe the process that runs
        it (logging to ``directory/envoy.log``). Nothing starts yet.

        Raises:
            EnvoyConfigError: Envoy refused the rendered configuration.
            FileNotFoundError: no Envoy binary.
        """
        config = write(topology, directory / "envoy.yaml")
        validate(config)
        return cls(
            config=config,
            admin=topology.admin,
            log_path=directory / "envoy.log",
            concurrency=concurrency,
            open_files=topology.limits.open_files_needed,
        )

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, while started."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start Envoy (returns at once; see :meth:`wait_ready`).

        Raises:
            RuntimeError: already started.
            FileNotFoundError: no Envoy binary.
            EnvoyError: the file-descriptor limit cannot be raised to ``open_files``,
                or Envoy did not get it.
        """
        if self.running:
            raise RuntimeError("envoy is already running")
        if self.open_files is not None:
            raise_open_files_limit(self.open_files)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(envoy_binary()),
            "-c",
            str(self.config),
            "--concurrency",
            str(self.concurrency),
            # Each process gets its own shared-memory base id, so that several Envoys
            # (tests in parallel, a restart while the old one exits) never collide.
            "--use-dynamic-base-id",
            "--log-level",
            self.log_level,
            "--log-path",
            str(self.log_path),
            "--drain-time-s",
            str(self.drain_time_s),
            "--parent-shutdown-time-s",
            str(self.drain_time_s + 1),
            # Access log lines reach the file within a second (Envoy's default is 10 s).
            "--file-flush-interval-msec",
            "1000",
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if self.open_files is not None:
            soft = self.open_files_limit()
            if soft is not None and soft != resource.RLIM_INFINITY and soft < self.open_files:
                self.stop()
                raise EnvoyError(f"envoy runs with {soft} open files, needs {self.open_files}")

    def open_files_limit(self) -> int | None:
        """The soft RLIMIT_NOFILE of the running Envoy (None when not running)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        try:
            soft, _ = resource.prlimit(self._proc.pid, resource.RLIMIT_NOFILE)
        except (ProcessLookupError, PermissionError):
            return None
        return soft

    def _log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no log)"
        return data[-_LOG_TAIL_BYTES:].decode(errors="replace")

    def _admin_get(self, path: str, *, timeout_s: float = 2.0) -> tuple[int, bytes]:
        url = f"http://{self.admin}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the admin ``/ready`` answers 200 (listeners up, clusters
        initialised, which includes the first round of health checks).

        Raises:
            EnvoyError: Envoy exited or was not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise EnvoyError(f"envoy exited (code {code}):\n{self._log_tail()}")
            try:
                status, _ = self._admin_get("/ready", timeout_s=1.0)
            except OSError:
                status = 0
            if status == 200:
                return
            time.sleep(_POLL_S)
        raise EnvoyError(f"envoy not ready after {timeout_s} s:\n{self._log_tail()}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges whose name starts with ``prefix``.

        Raises:
            EnvoyError: the admin interface did not answer.
        """
        try:
            status, body = self._admin_get("/stats?format=json")
        except OSError as e:
            raise EnvoyError(f"admin {self.admin} unreachable: {e}") from e
        if status != 200:
            raise EnvoyError(f"admin /stats answered {status}")
        out: dict[str, int] = {}
        for entry in json.loads(body).get("stats", []):
            name, value = entry.get("name"), entry.get("value")
            if isinstance(name, str) and isinstance(value, int) and name.startswith(prefix):
                out[name] = value
        return out

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit in time. Returns the exit code
        (None if it was never started)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start again on the same (re-read) configuration and files, e.g. after
        a revocation rewrote the CRL, then wait until ready.

        Raises:
            EnvoyError: the new process did not become ready.
        """
        self.stop()
        self.start()
        self.wait_ready(timeout_s)

    def __enter__(self) -> EnvoyProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
