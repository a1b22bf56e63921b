"""A small origin for the static bundle: serves a bundle directory over HTTP/1.1 on
loopback, marking every file but ``latest`` and ``checkpoint`` immutable (their names fix
their content, docs/bundle-format.md), so that an HTTP cache in front of it (Envoy's
cache filter in ``bench.stack_bench``, or any CDN) keeps them.

Run: ``python -m bench.bundle_origin DIR PORT`` (until SIGTERM).
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class BundleHandler(SimpleHTTPRequestHandler):
    """Static files with the bundle's caching rules."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a cache in front expects

    def end_headers(self) -> None:
        """Add Cache-Control before the blank line."""
        if self.path.rstrip("/").endswith(("/latest", "/checkpoint")):
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the benchmark counts, it does not log."""


def main(argv: list[str]) -> int:
    """Serve ``argv[0]`` on 127.0.0.1:``argv[1]`` until SIGTERM."""
    directory, port = argv[0], int(argv[1])
    handler = functools.partial(BundleHandler, directory=directory)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
