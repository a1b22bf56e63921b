"""``veritally up``: create what is missing in the state directory, run the whole stack
(:class:`veritally.stack.Stack`) until Ctrl-C or SIGTERM, then drain and stop it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from veritally.election.generate import DEFAULT_CASILLAS
from veritally.launch import DEFAULT_INTERVAL_SECONDS
from veritally.localwitnesses import MAX_LOCAL_WITNESSES, WitnessPolicyError
from veritally.mesh.envoy import DEFAULT_BASE_PORT
from veritally.pki import PkiError
from veritally.stack import SERVICES, Stack, StackError
from veritally.state import DEFAULT_SEED, Bootstrap, StateDir

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "add_witness_arguments", "bootstrap_from_args", "describe", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``veritally up``."""
    parser.add_argument("--state", type=Path, default=Path("state"), help="state directory")
    parser.add_argument(
        "--init",
        action="store_true",
        help="only create what is missing in the state directory, then exit",
    )
    parser.add_argument(
        "--casillas",
        type=int,
        default=None,
        help="casillas of the synthetic election created when none exists (default national)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of that election")
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"first port of the layout (default {DEFAULT_BASE_PORT}: edge +3, mesh +4, ...; "
        "0: free ports, printed at start)",
    )
    parser.add_argument(
        "--single-capture",
        action="store_true",
        help="accept each acta on its first valid capture (default: double capture)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between publication's cuts",
    )
    add_witness_arguments(parser)


def add_witness_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--witnesses N`` and ``--witness-threshold K`` (``up`` and ``demo``)."""
    parser.add_argument(
        "--witnesses",
        type=int,
        default=None,
        metavar="N",
        help=f"run N local witnesses (0 to {MAX_LOCAL_WITNESSES}) and require their "
        "cosignatures in a new trust root version; 0 drops the requirement (default: "
        "run the local witnesses the trust root lists, if any)",
    )
    parser.add_argument(
        "--witness-threshold",
        type=int,
        default=None,
        metavar="K",
        help="cosignatures required of the N witnesses (default: a majority, 2 of 3)",
    )


def bootstrap_from_args(args: argparse.Namespace) -> Bootstrap:
    """The :class:`Bootstrap` named by ``--casillas`` and ``--seed``."""
    return Bootstrap(
        casillas=args.casillas or DEFAULT_CASILLAS,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
    )


def describe(stack: Stack) -> list[tuple[str, str]]:
    """What an operator needs to know about a running stack, as (what, where) rows."""
    e = stack.endpoints
    state = stack.state
    pki = stack.pki
    rows = [
        ("edge (gRPC, mTLS)", e.edge),
        ("REST view (HTTPS, mTLS)", f"https://{e.rest}/v1/cuts/latest"),
        ("REST view, results named", f"https://{e.rest}/v1/cuts/latest/view"),
        ("bundle (HTTPS, no client certificate)", f"https://{e.public}/latest"),
        ("Envoy admin (loopback)", f"http://{e.admin}/"),
        ("mesh (services only)", e.mesh),
    ]
    rows += [(f"{name} (only Envoy may call)", e.services[name]) for name in SERVICES]
    rows += [
        (f"{name} metrics (loopback)", f"http://{e.metrics[name]}/metrics") for name in e.metrics
    ]
    if stack.witnesses:
        rows.append(
            (
                "witness policy",
                f"{stack.witness_policy()} cosignatures (trust root {stack.pinned_trust_root()})",
            )
        )
    rows += [
        (f"{w.name} (tlog-witness, loopback)", f"{e.witnesses[w.name]}  {w.directory}")
        for w in stack.witnesses
    ]
    rows += [
        ("Prometheus configuration", str(state.prometheus / "prometheus.yml")),
        ("operations console", f"veritally status --state {state.root}"),
    ]
    rows += [
        ("CA certificate", str(pki.ca_cert)),
        ("media certificates", ", ".join(i.name for i in pki.identities("media"))),
        ("capture-centre certificates", ", ".join(i.name for i in pki.identities("capture"))),
        ("operator certificates", ", ".join(i.name for i in pki.identities("operator"))),
        ("certificate files", f"{state.pki}/<role>/<name>.pem and .key"),
        ("trust root (pin this)", str(stack.pinned_trust_root())),
        ("static bundle", str(state.bundle)),
        ("logs", f"{state.logs}/<service>.log, {state.envoy}/envoy.log, access.log"),
        ("stores", str(state.db)),
    ]
    return rows


def _print_table(stack: Stack) -> None:
    table = Table(title=f"veritally is up ({stack.state.root})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    for what, where in describe(stack):
        table.add_row(what, where)
    Console(stderr=True).print(table)
    print("Ctrl-C (or SIGTERM) drains and stops everything.", file=sys.stderr)


def _supervise(stack: Stack, stopping: threading.Event) -> int:
    try:
        stack.start()
    except StackError as e:  # e.g. a CRL that expires before it can be reissued
        log.error("%s", e)
        return 1
    try:
        _print_table(stack)
        while not stopping.wait(1.0):
            if stack.failed:
                log.error("giving up: %s", stack.failed)
                return 1
        log.info("signal received: draining (%.0f s) and stopping", stack.drain_seconds)
        return 0
    finally:
        stack.stop()


def run(args: argparse.Namespace) -> int:
    """Create what is missing, start the stack, wait for Ctrl-C/SIGTERM, drain, stop."""
    state = StateDir(args.state)
    try:
        for line in bootstrap_from_args(args).ensure(state):
            log.info("created %s", line)
    except (PkiError, OSError, ValueError) as e:
        log.error("cannot prepare %s: %s", state.root, e)
        return 1
    if args.init:
        return 0
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    try:
        stack = Stack(
            state,
            base_port=args.base_port,
            single_capture=args.single_capture,
            interval_s=args.interval,
            witnesses=args.witnesses,
            witness_threshold=args.witness_threshold,
        )
    except WitnessPolicyError as e:
        log.error("%s", e)
        return 2
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _supervise(stack, stopping)
    finally:
        # Also when the stack did not start: the caller's handlers come back.
        for s, handler in previous.items():
            signal.signal(s, handler)
