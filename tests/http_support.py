"""Plain HTTPS GETs as a newsroom makes them: curl with a client certificate.

curl negotiates HTTP/2 with Envoy's REST listener (ALPN ``h2``), as most HTTP clients
do; the transcoder's limits differ between HTTP/2 and HTTP/1.1 (the stream's window or
the connection's buffer), so the tests ask for each explicitly.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CurlAnswer", "curl_get"]


@dataclass(frozen=True)
class CurlAnswer:
    """What curl got: the HTTP status, the protocol version used and the body."""

    status: int
    http_version: str  # "2" or "1.1"
    body: bytes


def curl_get(
    url: str, *, ca: Path, cert: Path, key: Path, http: str = "2", timeout_s: float = 30.0
) -> CurlAnswer:
    """GET ``url`` with curl over mutual TLS, HTTP/2 (``http="2"``) or HTTP/1.1.

    Raises:
        AssertionError: if curl is missing or could not make the request at all.
    """
    curl = shutil.which("curl")
    assert curl is not None, "the REST view's tests run curl, as its docs show"
    version = {"2": "--http2", "1.1": "--http1.1"}[http]
    done = subprocess.run(
        [
            *(curl, "--silent", "--show-error", version, "--max-time", str(timeout_s)),
            *("--cacert", str(ca), "--cert", str(cert), "--key", str(key)),
            *("--write-out", "%{stderr}%{http_code} %{http_version}"),
            url,
        ],
        capture_output=True,
        timeout=timeout_s + 10,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    status, _, used = done.stderr.decode().splitlines()[-1].partition(" ")
    return CurlAnswer(status=int(status), http_version=used, body=done.stdout)
