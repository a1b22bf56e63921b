"""Closing a night as an operator does: ``veritally close`` against the stack's edge."""

from __future__ import annotations

import subprocess
import sys

from veritally.stack import Stack

__all__ = ["close_night"]


def close_night(stack: Stack, who: str, *, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``veritally close`` with the certificate of ``who`` (an operator, or anyone a
    test expects to be refused); the caller checks the exit status."""
    tls = stack.tls(who)
    return subprocess.run(
        [
            *(sys.executable, "-m", "veritally.cli", "close", "--target", stack.endpoints.edge),
            *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
