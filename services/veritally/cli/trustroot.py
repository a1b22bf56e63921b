"""``veritally trust-root create|rotate``: the signed list of publisher keys.

* ``create --key K [--key K ...] --origin O --expires T --dir D [--witness VKEY ...
  --witness-threshold K]``: version 1, self-signed; with witnesses, every checkpoint needs
  K of their cosignatures (default: a majority).
* ``rotate --dir D --old-key K ... --key K ... --expires T [--witness VKEY ...
  --witness-threshold K | --no-witnesses]``: version n + 1, listing the new keys (and
  version n's witnesses unless others are given) and signed by the old and the new ones;
  refused unless it verifies as an update of version n.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from veritally.publication.errors import KeyFileError, TrustRootFileError
from veritally.publication.keys import load_passphrase, load_signer
from veritally.publication.trustroot import create_trust_root, rotate_trust_root
from veritally_client import MalformedDataError, TrustRootError
from veritally_client.protocol import CosignatureVerifier, Signer


def _expires(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("--expires needs a time zone, e.g. 2026-07-01T00:00:00Z")
    return value


def _witness(text: str) -> CosignatureVerifier:
    try:
        return CosignatureVerifier.from_key_string(text.strip())
    except MalformedDataError as e:
        raise argparse.ArgumentTypeError(f"not a witness vkey (type 0x04): {e}") from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``trust-root`` subcommands."""
    sub = parser.add_subparsers(dest="trust_root_command", required=True, metavar="SUBCOMMAND")
    create = sub.add_parser("create", help="create version 1 (self-signed)")
    create.add_argument("--origin", required=True, help="the log's checkpoint origin line")
    rotate = sub.add_parser("rotate", help="create version n+1, signed by old and new keys")
    rotate.add_argument(
        "--old-key", action="append", required=True, type=Path, help="a key of version n"
    )
    for p in (create, rotate):
        p.add_argument(
            "--key", action="append", required=True, type=Path, help="a publisher key file"
        )
        p.add_argument("--dir", required=True, type=Path, help="trust root directory")
        p.add_argument(
            "--expires", required=True, type=_expires, help="expiry, RFC 3339 (e.g. ...Z)"
        )
        p.add_argument("--threshold", type=int, default=1, help="signatures per checkpoint")
        p.add_argument("--passphrase-file", type=Path, help="passphrase of encrypted keys")
        p.add_argument(
            "--witness",
            action="append",
            type=_witness,
            help="a witness's vkey (its witness.vkey file's line; repeat for several)",
        )
        p.add_argument(
            "--witness-threshold",
            type=int,
            help="cosignatures required per checkpoint (default: a majority of --witness)",
        )
    rotate.add_argument(
        "--no-witnesses", action="store_true", help="version n+1 requires no cosignature"
    )


def _load(paths: list[Path], passphrase_file: Path | None) -> list[Signer]:
    passphrase = load_passphrase(passphrase_file) if passphrase_file else None
    return [load_signer(p, passphrase=passphrase) for p in paths]


def run(args: argparse.Namespace) -> int:
    """Create or rotate; returns the exit status."""
    now = dt.datetime.now(dt.UTC)
    witnesses: list[CosignatureVerifier] | None = args.witness
    if getattr(args, "no_witnesses", False):
        if witnesses:
            print("error: --no-witnesses with --witness", file=sys.stderr)
            return 1
        witnesses = []
    threshold: int | None = args.witness_threshold
    if threshold is None and witnesses is not None:
        threshold = len(witnesses) // 2 + 1 if witnesses else 0
    try:
        keys = _load(args.key, args.passphrase_file)
        if args.trust_root_command == "create":
            version = 1
            path = create_trust_root(
                args.dir,
                publishers=keys,
                origin=args.origin,
                threshold=args.threshold,
                expires=args.expires,
                now=now,
                witnesses=witnesses or (),
                witness_threshold=threshold or 0,
            )
        else:
            path, version = rotate_trust_root(
                args.dir,
                old=_load(args.old_key, args.passphrase_file),
                publishers=keys,
                threshold=args.threshold,
                expires=args.expires,
                now=now,
                witnesses=witnesses,
                witness_threshold=threshold,
            )
    except (KeyFileError, TrustRootFileError, TrustRootError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (version {version})")
    return 0
