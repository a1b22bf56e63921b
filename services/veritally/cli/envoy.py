"""``veritally envoy``: render (and check) the Envoy configuration of a deployment.

    veritally envoy render --state state                   # single-machine layout
    veritally envoy render --state state \\
        --ingest 10.0.1.10:8450 --ingest 10.0.1.11:8450 \\
        --aggregation agg.internal:8451 --publication 10.0.3.10:8452 \\
        --edge 0.0.0.0:8443 --mesh 10.0.0.5:8444 --rest 0.0.0.0:8445
    veritally envoy validate state/envoy/envoy.yaml
    veritally envoy reference --out envoy       # the committed reference rendering

``render`` reads the PKI in ``STATE/pki`` (``veritally pki init --dir STATE/pki``) and
writes ``STATE/envoy/envoy.yaml``, the CA/CRL secret and the REST view's descriptor set
next to it, then runs ``envoy --mode validate`` on the result.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from veritally.mesh.envoy import (
    DEFAULT_BASE_PORT,
    Endpoint,
    EnvoyConfigError,
    default_topology,
    validate,
    write,
    write_reference,
)
from veritally.pki import Pki, PkiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``envoy`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="envoy_command", required=True, metavar="ACTION")
    render = sub.add_parser("render", help="write STATE/envoy/envoy.yaml and validate it")
    render.add_argument("--state", type=Path, required=True, help="the state directory")
    render.add_argument("--pki", type=Path, help="the PKI directory (default STATE/pki)")
    render.add_argument("--out", type=Path, help="output (default STATE/envoy/envoy.yaml)")
    render.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT, help="first port of the layout"
    )
    render.add_argument("--no-crl", action="store_true", help="render without the CRL")
    render.add_argument("--no-validate", action="store_true", help="skip envoy --mode validate")
    for name in ("edge", "mesh", "rest", "admin"):
        render.add_argument(f"--{name}", type=Endpoint.parse, help=f"{name} listener host:port")
    for service in ("ingest", "aggregation", "publication"):
        render.add_argument(
            f"--{service}",
            type=Endpoint.parse,
            action="append",
            metavar="HOST:PORT",
            help=f"a {service} replica (repeatable; default one on 127.0.0.1)",
        )
    check = sub.add_parser("validate", help="run envoy --mode validate on a file")
    check.add_argument("config", type=Path)
    reference = sub.add_parser(
        "reference", help="rewrite the committed reference rendering (envoy/ in the repo)"
    )
    reference.add_argument("--out", type=Path, required=True, help="directory (envoy/)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``envoy`` action; 0 on success, 1 on a reported error."""
    try:
        if args.envoy_command == "reference":
            for path in write_reference(args.out):
                print(f"wrote {path}")
            return 0
        if args.envoy_command == "validate":
            validate(args.config)
            print(f"{args.config}: valid")
            return 0
        pki_dir: Path = args.pki or args.state / "pki"
        pki = Pki.load(pki_dir)
        topology = default_topology(
            pki_dir=pki.root,
            trust_domain=pki.trust_domain,
            state_dir=args.state,
            with_crl=not args.no_crl,
            base_port=args.base_port,
        )
        services = dict(topology.services)
        for service in services:
            if getattr(args, service):
                services[service] = list(getattr(args, service))
        listeners = {
            name: getattr(args, name) or getattr(topology, name)
            for name in ("edge", "mesh", "rest", "admin")
        }
        topology = replace(topology, services=services, **listeners)
        out: Path = args.out or args.state / "envoy" / "envoy.yaml"
        write(topology, out)
        if not args.no_validate:
            validate(out)
        print(f"wrote {out}")
        return 0
    except (PkiError, EnvoyConfigError, ValueError, FileNotFoundError) as e:
        print(f"veritally envoy: {e}", file=sys.stderr)
        return 1
