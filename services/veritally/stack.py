"""The whole stack (ingest, aggregation, publication, Envoy) on one machine, supervised.

:class:`Stack` is used by ``veritally up`` (:mod:`veritally.cli.up`), ``veritally demo``,
the end-to-end tests and the benchmarks::

    with Stack(StateDir(Path("state"))) as stack:      # starts, waits until healthy
        print(stack.endpoints.edge)
        stack.restart("publication")                    # drain, stop, start, wait
    # every process it started is drained and stopped here

What it runs, each as its own supervised process (``veritally.supervisor.Process`` for
the services, ``veritally.mesh.process.EnvoyProcess`` for Envoy):

* the three services, each launched from a typed configuration (:meth:`Stack.launch`,
  :mod:`veritally.launch`) as ``veritally serve``, listening with mutual TLS on a
  loopback port under its own ``service/<name>`` certificate; ``veritally serve`` with
  TLS admits only Envoy's identity (``service/envoy``, the mesh's peer check), so a
  party that dials a service port directly gets PERMISSION_DENIED (health checks
  excepted);
* service-to-service calls go through Envoy's mesh listener: aggregation follows ingest
  at ``mesh`` with the ``service/aggregation`` certificate, publication reads aggregation
  at ``mesh`` with ``service/publication``; Envoy's RBAC allows exactly those methods;
* with ``witnesses`` (``veritally up --witnesses N``), N witness processes
  (``veritally witness serve``, :mod:`veritally.localwitnesses`) on loopback, started
  before publication, which sends them every committed checkpoint (ADR 0091), and a
  trust root that requires k of them;
* the bundle's static origin (:mod:`veritally.publication.origin`, loopback, plain
  HTTP), which Envoy's public listener serves through its cache over HTTPS to mirrors
  and the public (no client certificate);
* Envoy, configured from :func:`veritally.mesh.envoy.default_topology` (validated with
  ``envoy --mode validate`` at every start), started after the services because its
  readiness includes the first round of health checks.

A CRL keeper (:class:`veritally.supervisor.CrlKeeper`) reissues the CA's CRL on a
schedule while the stack runs (Envoy refuses every new connection once the CRL's
nextUpdate has passed), and the stack refuses to start on a CRL that would expire before
it could be reissued.

A watchdog thread restarts a child that exits without being asked to (a crash, a
``kill -9``), at most :data:`MAX_RESTARTS` times per service within
:data:`RESTART_WINDOW_S`, waiting 1, 2, 4... seconds between attempts, and logs each.
Stopping drains: every service is sent SIGTERM at once, reports NOT_SERVING, waits
``drain_seconds`` so that Envoy's health checks take it out of rotation, lets calls in
flight finish, and exits; Envoy stops last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from veritally import keypolicy
from veritally.errors import ServiceError
from veritally.launch import (
    DEFAULT_INTERVAL_SECONDS,
    AggregationLaunch,
    ElectionSource,
    IngestLaunch,
    PublicationLaunch,
    ServiceLaunch,
)
from veritally.localwitnesses import (
    LocalWitness,
    check_policy,
    found_witnesses,
    newest_trust_root,
    prepare_witnesses,
    required_cosignatures,
)
from veritally.mesh.envoy import (
    DEFAULT_BASE_PORT,
    Endpoint,
    Limits,
    Topology,
    default_topology,
)
from veritally.mesh.process import EnvoyError, EnvoyProcess, free_port
from veritally.metrics.exposition import MetricsServer
from veritally.metrics.families import StackMetrics
from veritally.metrics.prometheus import AlertThresholds, write_prometheus_files
from veritally.pki import Pki
from veritally.rpc import TlsFiles
from veritally.rpc.streams import STREAM_LIMITS_ENV, StreamLimits
from veritally.state import StateDir
from veritally.supervisor import CrlKeeper, CrlSchedule, Process, ProcessError
from veritally_client import Client, ClientConfig, TlsCredentials, load_trust_root
from veritally_client.protocol.pb import publication_pb2, publication_pb2_grpc

log = logging.getLogger(__name__)

__all__ = [
    "SERVICES",
    "Endpoints",
    "Stack",
    "StackError",
]

SERVICES = ("ingest", "aggregation", "publication")
# The static origin of the public bundle listener, supervised like a service.
ORIGIN = "origin"
# Seconds the origin (or a witness) may take to listen (a Python process importing asyncio).
ORIGIN_START_TIMEOUT_S = 30.0
# Offset from the base port of local witness i's port (i = 1..9) in the fixed layout.
WITNESS_PORT_OFFSET = 30
# Restarts of one crashed child allowed within RESTART_WINDOW_S (seconds) before the
# watchdog gives up on it: a service that crashes at every start (a corrupt store, a
# missing key) should stop the stack loudly, not flap forever.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
# First wait before restarting a crashed child (seconds); doubles per recent restart.
RESTART_BACKOFF_S = 1.0
# How often the watchdog looks at the children (seconds).
WATCH_INTERVAL_S = 0.25
# A service process must answer SERVING within this (seconds): the national election's
# definition (160,000 casillas) loads in a few seconds; aggregation and publication
# also rebuild their state from their stores.
HEALTH_TIMEOUT_S = 120.0
# How long a fresh stack may take to make its first cut (seconds): one interval after
# publication starts, once aggregation answers through Envoy; margin for a loaded machine.
FIRST_CUT_TIMEOUT_S = 60.0


def _listens(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


class StackError(ServiceError, RuntimeError):
    """The stack could not start, or a child kept crashing."""


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where everything listens (``host:port``).

    Attributes:
        edge: Envoy's listener for capture centres, media and operators (gRPC, mTLS).
        mesh: Envoy's listener for service-to-service calls.
        rest: the read-only JSON view (HTTPS, mTLS).
        public: the static bundle (HTTPS, no client certificate), e.g. the endpoint
            ``https://<public>/`` of ``Client``; "" when the topology has none.
        admin: Envoy's admin interface (loopback, plain HTTP).
        services: service name -> its own port (mTLS; only Envoy gets through).
        metrics: service name (and ``stack``, the supervisor) -> its Prometheus
            ``/metrics`` (loopback, plain HTTP).
        witnesses: local witness name (``witness-1``...) -> its base URL (loopback,
            plain HTTP, c2sp.org/tlog-witness).
    """

    edge: str
    mesh: str
    rest: str
    public: str
    admin: str
    services: dict[str, str]
    metrics: dict[str, str] = field(default_factory=dict)
    witnesses: dict[str, str] = field(default_factory=dict)


# Offsets from the base port of each /metrics listener in the fixed layout (beside
# Envoy's +1..+5 and the services' +10..+12).
METRICS_OFFSETS = {"ingest": 20, "aggregation": 21, "publication": 22, "stack": 23}


def _metrics_endpoints(base_port: int | None) -> dict[str, Endpoint]:
    """Where each service and the supervisor serve ``/metrics``: loopback, at
    :data:`METRICS_OFFSETS` from ``base_port``, or on free ports (None or 0)."""
    return {
        name: Endpoint(host="127.0.0.1", port=base_port + offset if base_port else free_port())
        for name, offset in METRICS_OFFSETS.items()
    }


def _free_topology(topology: Topology) -> Topology:
    """``topology`` with every loopback endpoint on a port that was free just now."""

    def fresh() -> Endpoint:
        return Endpoint(host="127.0.0.1", port=free_port())

    return replace(
        topology,
        edge=fresh(),
        mesh=fresh(),
        rest=fresh(),
        public=fresh() if topology.public is not None else None,
        origin=fresh() if topology.origin is not None else None,
        admin=fresh(),
        services={name: [fresh()] for name in topology.services},
    )


class Stack:
    """The services and Envoy of one state directory, supervised.

    Not thread-safe: one owner calls start/stop/restart/kill; only the watchdog runs
    alongside (it takes the same lock).
    """

    def __init__(
        self,
        state: StateDir,
        *,
        base_port: int | None = DEFAULT_BASE_PORT,
        single_capture: bool = False,
        interval_s: float = DEFAULT_INTERVAL_SECONDS,
        drain_seconds: float | None = None,
        auto_restart: bool = True,
        limits: Limits | None = None,
        max_restarts: int = MAX_RESTARTS,
        restart_backoff_s: float = RESTART_BACKOFF_S,
        crl_schedule: CrlSchedule | None = CrlSchedule(),  # noqa: B008 - frozen, immutable
        stream_limits: StreamLimits | None = None,
        witnesses: int | None = None,
        witness_threshold: int | None = None,
    ) -> None:
        """Describe the stack; nothing starts until :meth:`start`.

        Args:
            state: the state directory; it must hold a PKI, the publisher key, a trust
                root and an election (see :class:`veritally.state.Bootstrap`).
            base_port: first port of the fixed single-machine layout (edge = base + 3,
                see :func:`default_topology`); None or 0 picks free ports (tests).
            single_capture: accept an acta on its first valid capture.
            interval_s: seconds between publication's cuts.
            drain_seconds: seconds a stopping service reports NOT_SERVING before it
                stops; default: Envoy's health interval × unhealthy threshold, so that
                Envoy has taken it out of rotation.
            auto_restart: restart children that exit unasked (the watchdog).
            limits: Envoy's rate and size limits (default: :class:`Limits`' defaults,
                documented in docs/mesh.md); tests pass small budgets.
            max_restarts: restarts of one crashed child within RESTART_WINDOW_S before
                the watchdog gives up on it.
            restart_backoff_s: first wait before a restart (seconds), doubled for each
                recent restart of the same child.
            crl_schedule: when the CRL is reissued (default: every 42 h, 7-day
                validity); None leaves the CRL alone (it then expires under the
                running stack; tests of that failure only).
            stream_limits: per-identity bounds on streaming calls in every service
                (default: :class:`veritally.rpc.streams.StreamLimits`' defaults, documented
                in docs/mesh.md); tests pass small ones.
            witnesses: local witnesses to run (:mod:`veritally.localwitnesses`): N makes
                N of them and, at :meth:`start`, a trust root that requires
                ``witness_threshold`` (default a majority) of their cosignatures; 0 a
                trust root without witnesses; None runs the local witnesses the newest
                trust root lists, if any.
            witness_threshold: k of the k-of-N policy (with ``witnesses``).

        Raises:
            veritally.pki.PkiError: the state directory has no usable PKI.
            veritally.localwitnesses.WitnessPolicyError: a witness count or threshold
                out of range.
        """
        self.state = state
        self.pki = Pki.load(state.pki)
        topology = default_topology(
            pki_dir=state.pki,
            trust_domain=self.pki.trust_domain,
            state_dir=state.root,
            base_port=base_port or DEFAULT_BASE_PORT,
        )
        if limits is not None:
            topology = replace(topology, limits=limits)
        self.topology = topology if base_port else _free_topology(topology)
        self.metrics_endpoints = _metrics_endpoints(base_port)
        self._metrics_server: MetricsServer | None = None
        health = self.topology.health
        self.drain_seconds = (
            drain_seconds
            if drain_seconds is not None
            else health.interval_s * health.unhealthy_threshold
        )
        self.single_capture = single_capture
        self.interval_s = interval_s
        self.auto_restart = auto_restart
        self.max_restarts = max_restarts
        self.restart_backoff_s = restart_backoff_s
        self.envoy: EnvoyProcess | None = None
        self.processes: dict[str, Process] = {}
        self.restarts: dict[str, list[float]] = {}
        self.failed: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.stream_limits = stream_limits
        if witnesses is not None or witness_threshold is not None:
            # Checked here, so that a bad policy stops a command before anything starts.
            check_policy(witnesses or 0, witness_threshold)
        self.witness_count = witnesses
        self.witness_threshold = witness_threshold
        self.witnesses: list[LocalWitness] = []
        self._witness_ports: dict[int, int] = {}
        self._base_port = base_port
        self.crl_keeper = (
            None if crl_schedule is None else CrlKeeper(state.pki, schedule=crl_schedule)
        )

    # -- what is where ------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        """Where everything listens."""
        t = self.topology
        return Endpoints(
            edge=str(t.edge),
            mesh=str(t.mesh),
            rest=str(t.rest),
            public="" if t.public is None else str(t.public),
            admin=str(t.admin),
            services={name: str(t.services[name][0]) for name in SERVICES},
            metrics={name: str(e) for name, e in self.metrics_endpoints.items()},
            witnesses={w.name: self.witness_url(w) for w in self.witnesses},
        )

    def witness_policy(self) -> str:
        """``k of n`` of the local witnesses the stack runs ("" without)."""
        if not self.witnesses:
            return ""
        return f"{required_cosignatures(self.state)} of {len(self.witnesses)}"

    def witness_url(self, witness: LocalWitness) -> str:
        """The base URL publication sends ``witness`` its checkpoints at."""
        return f"http://127.0.0.1:{self._witness_ports[witness.index]}"

    def tls(self, name: str) -> TlsFiles:
        """The certificate, key and CA of identity ``name`` (``cc-01``, ``outlet-02``,
        ``ops-01``, ``publication``...), for calling the edge.

        Raises:
            veritally.pki.PkiError: no such identity.
        """
        identity = self.pki.identity(name)
        return TlsFiles(cert=identity.cert, key=identity.key, ca=self.pki.ca_cert)

    def media_client(
        self, outlet: str, *, state_dir: Path, config: ClientConfig | None = None
    ) -> Client:
        """An SDK client of media outlet ``outlet`` through the edge, pinned to the
        trust root of :meth:`pinned_trust_root`, as a newsroom would hold it.

        Raises:
            veritally.pki.PkiError: no such identity.
        """
        tls = self.tls(outlet)
        return Client(
            endpoint=self.endpoints.edge,
            trust_root=load_trust_root(self.pinned_trust_root()),
            state_dir=state_dir,
            credentials=TlsCredentials.from_files(ca=tls.ca, cert=tls.cert, key=tls.key),
            config=config if config is not None else ClientConfig(),
        )

    def pinned_trust_root(self) -> Path:
        """The trust root file a newsroom should pin: the first version, or with local
        witnesses the newest one, which requires their cosignatures (a client pinned to
        an older version does not learn of the witness policy until it refreshes)."""
        if not self.witnesses:
            return self.state.trust_root_v1
        return newest_trust_root(self.state)

    def log_path(self, name: str) -> Path:
        """The log file of a service (or ``envoy``)."""
        if name == "envoy":
            return self.state.envoy / "envoy.log"
        return self.state.logs / f"{name}.log"

    # -- processes ----------------------------------------------------------------------

    def launch(self, name: str) -> ServiceLaunch:
        """The launch configuration of service ``name`` in this stack: its own port and
        certificate, mutual TLS that admits only Envoy, its peers reached through the
        mesh listener with its own certificate.

        Raises:
            KeyError: unknown service.
        """
        state = self.state
        own = self.tls(name)
        common: dict[str, Any] = {
            "db": state.store(name),
            "listen": str(self.topology.services[name][0]),
            "drain_seconds": self.drain_seconds,
            "tls": own,
            "metrics_listen": str(self.metrics_endpoints[name]),
        }
        mesh = str(self.topology.mesh)
        election = ElectionSource(definition_bytes=state.definition_bytes)
        if name == "ingest":
            return IngestLaunch(**common, election=election, single_capture=self.single_capture)
        if name == "aggregation":
            return AggregationLaunch(**common, election=election, ingest=mesh, ingest_tls=own)
        if name == "publication":
            return PublicationLaunch(
                **common,
                key_files=tuple(self.publisher_keys()),
                trust_root_dir=keypolicy.trust_root_dir(state),
                aggregation=mesh,
                aggregation_tls=own,
                interval_seconds=self.interval_s,
                bundle_dir=state.bundle,
                witnesses=tuple((w.key.key_string(), self.witness_url(w)) for w in self.witnesses),
            )
        raise KeyError(name)

    def _origin_process(self) -> Process:
        origin = self.topology.origin
        assert origin is not None  # only started when the topology has one
        return Process(
            name=ORIGIN,
            argv=[
                sys.executable,
                "-m",
                "veritally.cli",
                "--log-format=json",
                "origin",
                "--dir",
                str(self.state.bundle),
                "--listen",
                str(origin),
            ],
            log_path=self.log_path(ORIGIN),
        )

    def _start_listener(self, process: Process, host: str, port: int) -> None:
        """Start a child that has no gRPC health service and wait until it listens."""
        self.processes[process.name] = process
        process.start()
        deadline = time.monotonic() + ORIGIN_START_TIMEOUT_S
        while not _listens(host, port):
            if not process.alive():
                raise ProcessError(f"{process.name} exited early:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{process.name} does not listen on {host}:{port}")
            time.sleep(0.05)

    def _start_origin(self) -> None:
        origin = self.topology.origin
        assert origin is not None  # only started when the topology has one
        process = self._origin_process()
        self._start_listener(process, origin.host, origin.port)
        log.info("%s serving %s on %s (pid %d)", ORIGIN, self.state.bundle, origin, process.pid)

    def _prepare_witnesses(self) -> None:
        """Make the local witnesses and trust root agree with ``witnesses`` (or find the
        ones the trust root lists) and give each a port."""
        if self.witness_count is None:
            self.witnesses = found_witnesses(self.state)
        else:
            self.witnesses = prepare_witnesses(
                self.state, self.witness_count, self.witness_threshold
            )
        for w in self.witnesses:
            if w.index not in self._witness_ports:
                self._witness_ports[w.index] = (
                    self._base_port + WITNESS_PORT_OFFSET + w.index
                    if self._base_port
                    else free_port()
                )

    def _start_witness(self, name: str) -> None:
        witness = next(w for w in self.witnesses if w.name == name)
        port = self._witness_ports[witness.index]
        process = Process(
            name=name,
            argv=[
                sys.executable,
                "-m",
                "veritally.cli",
                "--log-format=json",
                "witness",
                "serve",
                "--state",
                str(witness.directory),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            log_path=self.log_path(name),
        )
        self._start_listener(process, "127.0.0.1", port)
        log.info(
            "%s (%s) serving on 127.0.0.1:%d (pid %d)", name, witness.key.name, port, process.pid
        )

    def _service_process(self, name: str) -> Process:
        launch = self.launch(name)
        return Process(
            name=name,
            argv=[sys.executable, "-m", "veritally.cli", "--log-format=json", *launch.argv()],
            log_path=self.log_path(name),
            health_target=launch.listen,
            # The health service is open to any certificate of our CA (the peer
            # interceptor exempts it); the supervisor checks as Envoy would.
            health_tls=self.tls("envoy"),
            env=(
                {}
                if self.stream_limits is None
                else {STREAM_LIMITS_ENV: self.stream_limits.to_env()}
            ),
        )

    def publisher_keys(self) -> list[Path]:
        """The key files publication signs with (:func:`veritally.keypolicy.publisher_keys`:
        those the newest trust root lists)."""
        return keypolicy.publisher_keys(self.state)

    def _start_service(self, name: str) -> None:
        if name == ORIGIN:
            self._start_origin()
            return
        if any(w.name == name for w in self.witnesses):
            self._start_witness(name)
            return
        process = self._service_process(name)
        self.processes[name] = process
        process.start()
        process.wait_healthy(HEALTH_TIMEOUT_S)
        log.info("%s serving on %s (pid %d)", name, process.health_target, process.pid)

    def start(self) -> None:
        """Render and validate Envoy's configuration, start the services, then Envoy,
        wait until all are healthy and publication has made its first cut (so that a
        media client's first call finds one), and start the watchdog.

        Raises:
            StackError: a child exited or was not healthy in time (its log tail is in
                the message); whatever was started is stopped again.
        """
        self.state.db.mkdir(parents=True, exist_ok=True)
        self.state.logs.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        try:
            if self.crl_keeper is not None:
                # Before anything starts: a CRL that expires before it can be reissued
                # would lock every party out (CrlError names it).
                self.crl_keeper.check_at_start()
                self.crl_keeper.start()
            envoy = EnvoyProcess.from_topology(self.topology, directory=self.state.envoy)
            self._start_metrics()
            self._prepare_witnesses()
            # Before publication, so that its first checkpoint is cosigned already.
            for witness in self.witnesses:
                self._start_service(witness.name)
            for name in SERVICES:
                self._start_service(name)
            if self.topology.origin is not None:
                self._start_service(ORIGIN)
            self.envoy = envoy
            envoy.start()
            envoy.wait_ready()
            self.wait_first_cut()
        except Exception as e:
            self.stop()
            raise StackError(f"the stack did not start: {e}") from e
        if self.auto_restart:
            self._watchdog = threading.Thread(
                target=self._watch, name="stack-watchdog", daemon=True
            )
            self._watchdog.start()

    def _start_metrics(self) -> None:
        """Serve the supervisor's own ``/metrics`` and write the Prometheus scrape
        configuration and alerting rules of this stack into the state directory."""
        pki = self.pki

        def certificates() -> list[tuple[str, Path]]:
            found = [("ca", pki.ca_cert)]
            return found + [
                (i.role, i.cert) for i in pki.identities() if not pki.is_revoked(i.name)
            ]

        if self._metrics_server is None:
            metrics = StackMetrics(
                self, certificates=certificates, crl=pki.crl, state_dir=self.state.root
            )
            self._metrics_server = MetricsServer(
                metrics.registry, listen=str(self.metrics_endpoints["stack"])
            )
        schedule = self.crl_keeper.schedule if self.crl_keeper is not None else CrlSchedule()
        left = schedule.validity - 2 * schedule.reissue_every
        write_prometheus_files(
            self.state.prometheus,
            services={name: str(self.metrics_endpoints[name]) for name in SERVICES},
            stack=str(self.metrics_endpoints["stack"]),
            envoy_admin=str(self.topology.admin),
            thresholds=AlertThresholds(
                crl_warning_s=int(left.total_seconds()),
                crl_page_s=int(schedule.reissue_every.total_seconds()),
            ),
        )

    def wait_first_cut(self, timeout_s: float = FIRST_CUT_TIMEOUT_S) -> None:
        """Wait until publication serves a cut, asked at its own port as Envoy would.

        Raises:
            StackError: no cut within ``timeout_s`` seconds (the publication log says why).
        """
        target = str(self.topology.services["publication"][0])
        deadline = time.monotonic() + timeout_s
        last = ""
        with grpc.secure_channel(target, self.tls("envoy").channel_credentials()) as channel:
            stub = publication_pb2_grpc.PublicationServiceStub(channel)
            while time.monotonic() < deadline:
                try:
                    stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=5)
                    return
                except grpc.RpcError as e:  # no cut yet: it cuts every interval
                    last = f"{e.code().name}: {e.details()}"
                time.sleep(min(0.1, self.interval_s))
        raise StackError(f"publication made no cut within {timeout_s:.0f} s ({last})")

    def stop(self) -> None:
        """Drain and stop every service at once (SIGTERM; SIGKILL after the drain plus a
        grace period), then stop Envoy. Safe to call twice."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        with self._lock:
            grace = self.drain_seconds + 15.0  # drain, then in-flight calls (5 s) + margin
            stoppers = [
                threading.Thread(target=p.stop, kwargs={"grace": grace}, name=f"stop-{n}")
                for n, p in self.processes.items()
            ]
            for t in stoppers:
                t.start()
            for t in stoppers:
                t.join()
            if self.envoy is not None:
                self.envoy.stop()
            if self.crl_keeper is not None:
                self.crl_keeper.stop()
            if self._metrics_server is not None:
                self._metrics_server.stop()
                self._metrics_server = None
            log.info("stack stopped")

    def restart(self, name: str) -> None:
        """Drain, stop and start one service (or ``envoy``) and wait until healthy.

        Raises:
            KeyError: unknown name.
            StackError: it did not come back.
        """
        with self._lock:
            try:
                if name == "envoy":
                    if self.envoy is None:
                        raise KeyError(name)
                    self.envoy.restart()
                    return
                self.processes[name].stop(grace=self.drain_seconds + 15.0)
                self._start_service(name)
            except (ProcessError, EnvoyError, OSError) as e:
                raise StackError(f"{name} did not restart: {e}") from e

    def kill(self, name: str) -> None:
        """SIGKILL one child, as a crash would; the watchdog restarts it.

        Raises:
            KeyError: unknown name.
        """
        with self._lock:
            if name == "envoy":
                if self.envoy is None or self.envoy.pid is None:
                    raise KeyError(name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.envoy.pid, signal.SIGKILL)
                return
            self.processes[name].kill()

    def pids(self) -> dict[str, int | None]:
        """The pid of every child (None when not running)."""
        out: dict[str, int | None] = {
            n: (p.pid if p.alive() else None) for n, p in self.processes.items()
        }
        out["envoy"] = self.envoy.pid if self.envoy is not None and self.envoy.running else None
        return out

    def healthy(self) -> bool:
        """Whether every child is running (services also SERVING)."""
        with self._lock:
            services = all(p.healthy() for p in self.processes.values())
            return services and self.envoy is not None and self.envoy.running

    def _dead(self) -> list[str]:
        dead = [n for n, p in self.processes.items() if not p.alive()]
        if self.envoy is not None and not self.envoy.running:
            dead.append("envoy")
        return [n for n in dead if n not in self.failed]

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            with self._lock:
                dead = self._dead()
            for name in dead:
                self._revive(name)

    def _revive(self, name: str) -> None:
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= self.max_restarts:
            self.failed[name] = f"crashed {len(recent) + 1} times in {RESTART_WINDOW_S:.0f} s"
            log.error("%s %s: giving up on it", name, self.failed[name])
            return
        popen = None if name == "envoy" else self.processes[name].popen
        delay = self.restart_backoff_s * 2 ** len(recent)
        log.warning(
            "%s exited unexpectedly (code %s); restart %d of %d in %.0f s",
            name,
            None if popen is None else popen.returncode,
            len(recent) + 1,
            self.max_restarts,
            delay,
        )
        # Wait without the lock, so that the owner can still restart, kill or stop.
        if self._stopping.wait(delay):
            return
        with self._lock:
            if self._stopping.is_set() or name not in self._dead():
                return  # stopping, or the owner restarted it meanwhile
            recent.append(time.monotonic())
            self.restarts[name] = recent
            try:
                if name == "envoy":
                    assert self.envoy is not None  # only listed when it exists
                    self.envoy.start()
                    self.envoy.wait_ready()
                else:
                    self._start_service(name)
                log.info("%s restarted", name)
            except Exception as e:  # any failure is retried by the next round
                log.error("%s did not restart: %s", name, e)

    # -- context manager ----------------------------------------------------------------

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
