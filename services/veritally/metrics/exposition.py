"""The ``/metrics`` listener of a process, and the expiry gauges of its TLS material.

Each service (and the supervisor of ``veritally up``) serves its own registry over plain
HTTP on a loopback or internal port of its own, never on a listener Envoy exposes: the
figures say how far the night has gone and which certificates expire when, which is for
the operations room. The listener is prometheus-client's threaded WSGI server; the
collectors it runs only read figures (integers, a dict copied at once under the GIL),
so the service's event loop never waits for a scrape.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from cryptography import x509
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from veritally.mesh.topology import Endpoint
from veritally.pki import PkiError, crl_next_update

__all__ = [
    "CERTIFICATE_EXPIRY",
    "CRL_EXPIRY",
    "ExpiryCollector",
    "MetricsServer",
    "certificate_not_after",
]

CERTIFICATE_EXPIRY = "veritally_certificate_expiry_timestamp_seconds"
CRL_EXPIRY = "veritally_crl_expiry_timestamp_seconds"


class MetricsServer:
    """``GET /metrics`` of one registry on ``listen`` (``host:port``; port 0: any free
    one), in a daemon thread, until :meth:`stop`.

    Raises:
        ValueError: ``listen`` is not ``host:port``.
        OSError: the address cannot be bound.
    """

    def __init__(self, registry: CollectorRegistry, *, listen: str) -> None:
        endpoint = Endpoint.parse(listen)
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(
            endpoint.port, addr=endpoint.host, registry=registry
        )
        self.host = endpoint.host
        self.port: int = self._server.server_port

    @property
    def address(self) -> str:
        """``host:port`` it listens on."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def certificate_not_after(path: Path) -> dt.datetime:
    """The notAfter of the PEM certificate at ``path`` (UTC).

    Raises:
        PkiError: the file is missing or not a PEM certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot read the certificate {path}: {e}") from e
    return cert.not_valid_after_utc


class ExpiryCollector(Collector):
    """The earliest notAfter of the certificates of each role, and the CRL's nextUpdate,
    read from the files at every scrape (a reissued file shows at once).

    Args:
        certificates: called at each scrape; ``(role, certificate file)`` pairs. The
            label is the role only (``service``, ``media``, ``capture``, ``operator``,
            ``ca``): one series per role however many parties a PKI holds.
        crl: the CRL file, or None for no CRL gauge.
    """

    def __init__(
        self,
        certificates: Callable[[], Iterable[tuple[str, Path]]],
        *,
        crl: Path | None = None,
    ) -> None:
        self._certificates = certificates
        self._crl = crl
        # path -> (mtime_ns, notAfter): thousands of operator certificates are parsed
        # once, not at every scrape.
        self._cache: dict[Path, tuple[int, float]] = {}

    def _not_after(self, path: Path) -> float | None:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            value = certificate_not_after(path).timestamp()
        except PkiError:
            return None
        self._cache[path] = (mtime, value)
        return value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges (a file that cannot be read is left out, and so alerts as absent)."""
        earliest: dict[str, float] = {}
        for role, path in self._certificates():
            value = self._not_after(path)
            if value is not None:
                earliest[role] = min(value, earliest.get(role, value))
        certs = GaugeMetricFamily(
            CERTIFICATE_EXPIRY,
            "Earliest notAfter of the certificates of a role (Unix time).",
            labels=["role"],
        )
        for role in sorted(earliest):
            certs.add_metric([role], earliest[role])
        yield certs
        if self._crl is not None:
            try:
                next_update = crl_next_update(self._crl).timestamp()
            except PkiError:
                return
            yield GaugeMetricFamily(
                CRL_EXPIRY,
                "nextUpdate of the CA's CRL: Envoy refuses every connection after it (Unix time).",
                value=next_update,
            )
