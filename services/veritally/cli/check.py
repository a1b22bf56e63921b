"""``veritally check``: load an election definition (and its actas) and report."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from veritally.election.loader import DefinitionError, MissingActa, load_acta_rows, load_election
from veritally_client.protocol.pb import acta_pb2, election_pb2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument("path", type=Path, help="the election.yaml file")
    parser.add_argument(
        "--actas",
        action="store_true",
        help="also read every acta file named in the definition's 'actas' section",
    )


def run(args: argparse.Namespace) -> int:
    """Load the definition, print a summary or the error; exit status 0 or 1."""
    try:
        files = load_election(args.path)
        index = files.index
        types = Counter(c.type for c in index.casillas)
        print(f"election {index.election_id!r}: {index.name}")
        print(f"  sha256     {index.definition_sha256.hex()}")
        print(f"  parties    {len(index.party_ids)}")
        print(
            f"  contests   {len(index.contests)} "
            f"({', '.join(f'{c.id}: {len(c.option_ids)} options' for c in index.contests)})"
        )
        print(f"  states     {len(index.state_ids)}")
        print(f"  districts  {len(index.district_ids)}")
        print(f"  sections   {len(index.section_ids)}")
        print(
            f"  casillas   {len(index.casillas)} ("
            + ", ".join(
                f"{election_pb2.CasillaType.Name(t).removeprefix('CASILLA_TYPE_')}: {n}"
                for t, n in sorted(types.items())
            )
            + ")"
        )
        print(f"  actas expected {index.actas_expected()}")
        if args.actas:
            read: Counter[str] = Counter()
            missing: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            undigested = outside = 0
            for acta in load_acta_rows(files):
                if isinstance(acta, MissingActa):
                    missing[acta.contest_id] += 1
                    reasons[acta_pb2.NotCountedReason.Name(acta.reason)] += 1
                    continue
                read[acta.contest_id] += 1
                undigested += not acta.image_sha256
                outside += not index.has_casilla(acta.casilla_id)
            per_contest = ", ".join(f"{k}: {v}" for k, v in sorted(read.items()))
            print(f"  actas read {sum(read.values())} ({per_contest})")
            if undigested:
                # The loader reads a row without a digest; ingest refuses the acta
                # (INVALID_ARGUMENT image_sha256), as PREP publishes one for every acta.
                print(
                    f"  actas without an image digest {undigested} "
                    "(ingest refuses them: image_sha256)"
                )
            if outside:
                print(
                    f"  actas of casillas outside the catalogue {outside} "
                    "(ingest logs them, never counted)"
                )
            if missing:
                # Rows actas.missing recognises: import records them with RecordMissingActa.
                per_contest = ", ".join(f"{k}: {v}" for k, v in sorted(missing.items()))
                by_reason = ", ".join(
                    f"{k.removeprefix('NOT_COUNTED_REASON_')}: {v}"
                    for k, v in sorted(reasons.items())
                )
                print(
                    f"  actas missing {sum(missing.values())} ({per_contest}; {by_reason}) "
                    "(import records them, never counted)"
                )
    except DefinitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
