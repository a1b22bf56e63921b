"""``veritally trust-root create|rotate``: the signed list of publisher keys.

* ``create --key K [--key K ...] --origin O --expires T --dir D``: version 1, self-signed.
* ``rotate --dir D --old-key K ... --key K ... --expires T``: version n + 1, listing the
  new keys and signed by the old and the new ones; refused unless it verifies as an
  update of version n.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from veritally.publication.errors import KeyFileError, TrustRootFileError
from veritally.publication.keys import load_passphrase, load_signer
from veritally.publication.trustroot import (
    build_body,
    load_trust_root_chain,
    write_trust_root,
)
from veritally_client import TrustRootError
from veritally_client.protocol import Signer, TrustedRoot, sign_trust_root


def _expires(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("--expires needs a time zone, e.g. 2026-07-01T00:00:00Z")
    return value


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


def _load(paths: list[Path], passphrase_file: Path | None) -> list[Signer]:
    passphrase = load_passphrase(passphrase_file) if passphrase_file else None
    return [load_signer(p, passphrase=passphrase) for p in paths]


def run(args: argparse.Namespace) -> int:
    """Create or rotate; returns the exit status."""
    now = dt.datetime.now(dt.UTC)
    try:
        keys = _load(args.key, args.passphrase_file)
        if args.trust_root_command == "create":
            body = build_body(
                version=1,
                origin=args.origin,
                publishers=keys,
                threshold=args.threshold,
                expires=args.expires,
            )
            signers = keys
            if any(args.dir.glob("trust-root-v*.binpb")):
                print(f"error: {args.dir} already has a trust root; rotate it", file=sys.stderr)
                return 1
        else:
            old_keys = _load(args.old_key, args.passphrase_file)
            _docs, current = load_trust_root_chain(args.dir, now=now)
            body = build_body(
                version=current.version + 1,
                origin=current.origin,
                publishers=keys,
                threshold=args.threshold,
                expires=args.expires,
            )
            signers = old_keys + [k for k in keys if k.key_id not in {o.key_id for o in old_keys}]
        # Verify before writing: never leave a document that clients would reject.
        data = sign_trust_root(body, signers)
        if body.version == 1:
            TrustedRoot.from_bytes(data, now=now)
        else:
            current.update(data, now=now)
        path = write_trust_root(args.dir, body.version, data)
    except (KeyFileError, TrustRootFileError, TrustRootError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (version {body.version})")
    return 0
