"""The ``veritally-client`` command: gRPC's own logging off, then the CLI.

gRPC's C core prints TLS and connection failures to stderr as its own log lines (with
source file names), at the verbosity it reads from ``GRPC_VERBOSITY`` when it loads. The
CLI says what went wrong in plain words instead, so it sets ``GRPC_VERBOSITY=NONE``
before anything loads gRPC, unless the environment already asks for a level
(``GRPC_VERBOSITY=ERROR veritally-client ...`` shows gRPC's lines again).
"""

from __future__ import annotations

import os
import sys


def run() -> None:
    """Entry point of the console script."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from veritally_client._cli import main

    sys.exit(main())
