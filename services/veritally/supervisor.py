"""Supervised child processes: start, wait until healthy, drain and stop.

Used by :mod:`veritally.stack` (``veritally up``, the demo, the end-to-end tests), which
runs the real services as separate processes (each its own store and port), exactly as a
deployment does. A process is healthy when its gRPC health service answers SERVING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veritally._grpc import TlsFiles


class ProcessError(RuntimeError):
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
