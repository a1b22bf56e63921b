"""``veritally generate``: write a synthetic federal election night."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from veritally.election.generate import DEFAULT_CAPTURE_CENTRES, DEFAULT_CASILLAS, generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument(
        "--seed", type=int, required=True, help="random seed (same seed, same files)"
    )
    parser.add_argument(
        "--casillas",
        type=int,
        default=DEFAULT_CASILLAS,
        help=f"number of casillas; the rest scales with it (default {DEFAULT_CASILLAS})",
    )
    parser.add_argument(
        "--capture-centres",
        type=int,
        default=DEFAULT_CAPTURE_CENTRES,
        help="capture centres cc-01... the casillas are assigned to, by district; 0 assigns "
        f"none (default {DEFAULT_CAPTURE_CENTRES})",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help="a rehearsal (simulacro): its cuts are test data, refused by clients unless "
        "they allow test data",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    """Generate the election and print what was written.

    Raises:
        OSError: if the output cannot be written.
    """
    if args.casillas < 1:
        print("error: --casillas must be at least 1", file=sys.stderr)
        return 2
    if args.capture_centres < 0:
        print("error: --capture-centres must be at least 0", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = generate(
        seed=args.seed,
        casillas=args.casillas,
        out_dir=args.out,
        capture_centres=args.capture_centres,
        test=args.test,
    )
    elapsed = time.perf_counter() - started
    d = result.definition
    print(
        f"wrote {result.yaml_path.parent}: {len(d.states)} states, {len(d.districts)} districts, "
        f"{len(d.sections)} sections, {len(d.casillas)} casillas, {len(d.contests)} contests "
        f"in {len(d.races)} races, "
        f"{result.actas_written} actas ({result.actas_missing} never arrive) in {elapsed:.1f} s"
        + (", a rehearsal" if d.test else "")
    )
    return 0
