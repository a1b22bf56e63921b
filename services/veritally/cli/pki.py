"""``veritally pki``: create the deployment's CA and identities, revoke a certificate.

    veritally pki init --dir state/pki --trust-domain veritally.example \\
        --media 3 --capture-centres 5 --capture-operators 2
    veritally pki issue-capture-operator --dir state/pki --centre cc-01 op-3
    veritally pki revoke --dir state/pki outlet-02
    veritally pki reissue-crl --dir state/pki
    veritally pki show --dir state/pki

A revocation rewrites the CRL (renamed into place); an Envoy rendered by ``veritally
envoy render`` watches it through a file-based SDS resource and refuses the certificate
on new connections at once (see docs/mesh.md). ``reissue-crl`` signs the CRL again with a
new nextUpdate (``veritally up`` does it on a schedule; see docs/operations.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from veritally.pki import CRL_VALIDITY, Pki, PkiError, ServiceSans, init_pki


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pki`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="create a CA and the certificates of every party")
    init.add_argument("--dir", type=Path, required=True, help="the PKI directory to create")
    init.add_argument("--trust-domain", default="veritally.example", help="SPIFFE trust domain")
    init.add_argument("--media", type=int, default=3, help="number of media outlets")
    init.add_argument("--capture-centres", type=int, default=3, help="number of capture centres")
    init.add_argument("--operators", type=int, default=1, help="number of operators")
    init.add_argument(
        "--capture-operators",
        type=int,
        default=2,
        help="operators per capture centre, each with its own certificate (cc-01/op-1...)",
    )
    init.add_argument(
        "--service-host",
        action="append",
        default=[],
        metavar="SERVICE=NAME",
        help="an extra DNS name or IP address Envoy uses to reach SERVICE (repeatable)",
    )
    operator = sub.add_parser(
        "issue-capture-operator", help="issue the certificate of one capture-centre operator"
    )
    operator.add_argument("--dir", type=Path, required=True, help="the PKI directory")
    operator.add_argument("--centre", required=True, help="the capture centre (cc-01...)")
    operator.add_argument("operator", help="the operator's name within the centre (op-3...)")
    revoke = sub.add_parser("revoke", help="put a certificate on the CRL")
    revoke.add_argument("--dir", type=Path, required=True, help="the PKI directory")
    revoke.add_argument("name", help="the identity to revoke (outlet-02, cc-01/op-1...)")
    reissue = sub.add_parser("reissue-crl", help="sign the CRL again with a new nextUpdate")
    reissue.add_argument("--dir", type=Path, required=True, help="the PKI directory")
    reissue.add_argument(
        "--validity-hours",
        type=float,
        default=CRL_VALIDITY.total_seconds() / 3600,
        help="hours until the new CRL's nextUpdate (default %(default)s)",
    )
    show = sub.add_parser("show", help="list the identities")
    show.add_argument("--dir", type=Path, required=True, help="the PKI directory")


def _service_sans(pairs: list[str]) -> dict[str, ServiceSans]:
    dns: dict[str, list[str]] = {}
    ips: dict[str, list[str]] = {}
    for pair in pairs:
        service, sep, host = pair.partition("=")
        if not sep or not service or not host:
            raise ValueError(f"--service-host expects SERVICE=NAME, got {pair!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns.setdefault(service, []).append(host)
        else:
            ips.setdefault(service, []).append(host)
    return {
        s: ServiceSans(
            dns_names=tuple(dns.get(s, ())),
            ip_addresses=tuple(dict.fromkeys(("127.0.0.1", *ips.get(s, ())))),
        )
        for s in {*dns, *ips}
    }


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``pki`` action; 0 on success, 1 on a reported error."""
    try:
        if args.pki_command == "init":
            pki = init_pki(
                args.dir,
                trust_domain=args.trust_domain,
                media=args.media,
                capture_centres=args.capture_centres,
                operators=args.operators,
                capture_operators=args.capture_operators,
                service_sans=_service_sans(args.service_host),
            )
            print(f"created {len(pki.identities())} identities in {pki.root}")
            return 0
        pki = Pki.load(args.dir)
        if args.pki_command == "issue-capture-operator":
            identity = pki.issue_capture_operator(centre=args.centre, operator=args.operator)
            print(f"issued {identity.spiffe_id}: {identity.cert}")
            return 0
        if args.pki_command == "revoke":
            identity = pki.revoke(args.name)
            print(f"revoked {identity.spiffe_id} (serial {identity.serial:x}); CRL: {pki.crl}")
            print(
                "an Envoy rendered by `veritally envoy render` reloads the CRL for new "
                "connections at once; open connections end within the edge's maximum "
                "connection duration (or restart Envoy to cut them now)"
            )
            return 0
        if args.pki_command == "reissue-crl":
            next_update = pki.reissue_crl(validity=dt.timedelta(hours=args.validity_hours))
            print(f"reissued {pki.crl}: nextUpdate {next_update.isoformat()}")
            return 0
        for identity in pki.identities():
            mark = " (revoked)" if pki.is_revoked(identity.name) else ""
            print(f"{identity.spiffe_id}  {identity.cert}{mark}")
        return 0
    except (PkiError, FileExistsError, ValueError) as e:
        print(f"veritally pki: {e}", file=sys.stderr)
        return 1
