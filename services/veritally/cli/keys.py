"""``veritally keys generate --name N --out FILE [--passphrase-file F]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from veritally.publication.errors import KeyFileError
from veritally.publication.keys import load_passphrase, write_key_files
from veritally_client.protocol import Signer, is_valid_key_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``keys`` subcommands."""
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    gen = sub.add_parser("generate", help="generate an Ed25519 signing key")
    gen.add_argument(
        "--name",
        required=True,
        help="signed-note key name; by convention the log's origin (e.g. veritally.example/e1)",
    )
    gen.add_argument("--out", required=True, type=Path, help="private key file (mode 0600)")
    gen.add_argument(
        "--passphrase-file",
        type=Path,
        help="encrypt the key with the passphrase in this file (scrypt + ChaCha20-Poly1305)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the key; print the verifier key string. Returns the exit status."""
    if not is_valid_key_name(args.name):
        print(f"error: invalid key name {args.name!r} (no spaces or '+')", file=sys.stderr)
        return 2
    try:
        passphrase = load_passphrase(args.passphrase_file) if args.passphrase_file else None
        signer = Signer.generate(args.name)
        pub = write_key_files(signer, args.out, passphrase=passphrase)
    except (KeyFileError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} and {pub}")
    print(signer.verifier().key_string())
    return 0
