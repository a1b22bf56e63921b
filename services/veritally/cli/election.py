"""``veritally election init CATALOGUE --id ID --out election.yaml``: a starter definition.

The states and districts of an election are in its casilla catalogue (PREP's files carry
``ID_ENTIDAD, ENTIDAD, ID_DISTRITO_FEDERAL, DISTRITO_FEDERAL`` on every row); typing 32
states and 300 districts into ``election.yaml`` by hand is where mistakes come from. This
command reads them out of the catalogue (``veritally.election.loader.catalogue_units``)
and writes an ``election.yaml`` with ``states``, ``districts`` and a ``casillas`` section
naming the catalogue, its columns filled in where the header has PREP's column names.
Parties, contests and the remaining columns are left for the operator, marked ``TODO``;
``veritally check`` then says what is still missing.

Exit status: 0 when the file was written, 1 when the catalogue cannot be read or the
output exists (``--force`` replaces it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from veritally.election.loader import (
    CatalogueUnits,
    CsvFormat,
    DefinitionError,
    catalogue_units,
)

# PREP's column names (INE, 2018-2024): used for the defaults and to fill in the casilla
# columns a catalogue with these names has.
PREP_STATE_ID = "{ID_ENTIDAD:0>2}"
PREP_STATE_NAME = "ENTIDAD"
PREP_DISTRICT_ID = "{ID_ENTIDAD:0>2}-{ID_DISTRITO_FEDERAL:0>2}"
PREP_DISTRICT_NAME = "DISTRITO_FEDERAL"
PREP_CASILLA_COLUMNS = {
    "casilla_id": "CLAVE_CASILLA",
    "type": "TIPO_CASILLA",
    "nominal_list": "LISTA_NOMINAL",
    "party_representatives": "REPRESENTANTES_PP_CI",
}
REQUIRED_CASILLA_COLUMNS = ("casilla_id", "section_id", "type", "nominal_list")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``election`` subcommands and their arguments."""
    sub = parser.add_subparsers(dest="election_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser(
        "init",
        help="write a starter election.yaml with the states and districts of a casilla catalogue",
        description="Write a starter election.yaml whose states and districts are those "
        "of a casilla catalogue CSV (column specs as in docs/election-format.md).",
    )
    init.add_argument("catalogue", type=Path, help="the casilla catalogue CSV")
    init.add_argument("--id", required=True, help="the election id, e.g. mx-2024-federal")
    init.add_argument("--name", default="", help="the election's display name")
    init.add_argument("--out", type=Path, required=True, help="the election.yaml to write")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.add_argument("--skip-lines", type=int, default=0, help="lines before the header row")
    init.add_argument("--delimiter", default=",", help="one character (default ',')")
    init.add_argument("--encoding", default="utf-8", help="e.g. latin-1 (default utf-8)")
    init.add_argument(
        "--state-id", default=PREP_STATE_ID, help=f"state id column spec ({PREP_STATE_ID})"
    )
    init.add_argument(
        "--state-name",
        default=PREP_STATE_NAME,
        help=f"state name column spec ({PREP_STATE_NAME}); '' for none",
    )
    init.add_argument(
        "--district-id",
        default=PREP_DISTRICT_ID,
        help=f"district id column spec, unique in the election ({PREP_DISTRICT_ID})",
    )
    init.add_argument(
        "--district-name",
        default=PREP_DISTRICT_NAME,
        help=f"district name column spec ({PREP_DISTRICT_NAME}); '' for none",
    )


def run(args: argparse.Namespace) -> int:
    """Read the catalogue and write the starter definition; exit status 0 or 1."""
    if args.skip_lines < 0 or len(args.delimiter) != 1:
        print("error: --skip-lines must be >= 0 and --delimiter one character", file=sys.stderr)
        return 1
    out: Path = args.out
    if out.exists() and not args.force:
        print(f"error: {out} exists (--force replaces it)", file=sys.stderr)
        return 1
    csv_format = CsvFormat(args.delimiter, args.encoding, args.skip_lines)
    try:
        units = catalogue_units(
            args.catalogue,
            csv_format=csv_format,
            state_id=args.state_id,
            district_id=args.district_id,
            state_name=args.state_name or None,
            district_name=args.district_name or None,
        )
    except DefinitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    catalogue = Path(os.path.relpath(args.catalogue.resolve(), out.resolve().parent))
    out.write_text(starter_yaml(args, units, catalogue, csv_format), encoding="utf-8")
    print(
        f"wrote {out}: {len(units.states)} states and {len(units.districts)} districts from "
        f"{units.casillas} casillas; add parties and contests (TODO), then run "
        f"`veritally check {out}`"
    )
    return 0


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(value, ensure_ascii=False)


def starter_yaml(
    args: argparse.Namespace, units: CatalogueUnits, catalogue: Path, csv_format: CsvFormat
) -> str:
    """The text of the starter ``election.yaml``."""
    lines = [
        f"# Starter election definition from {catalogue.name} (veritally election init):",
        f"# {len(units.states)} states and {len(units.districts)} districts read from "
        f"{units.casillas} casillas.",
        "# Still to do (docs/election-format.md): parties, contests, the casilla columns",
        "# marked TODO and, to read actas, an 'actas' section. Then: veritally check.",
        "format: veritally-election/1",
        f"id: {_q(args.id)}",
        f"name: {_q(args.name)}",
        "parties: []  # TODO: - {id: PAN, name: Partido Acción Nacional}",
        "contests: []  # TODO: - {id: PRES, name: Presidencia, options: [{id: PAN}, ...]}",
        "states:",
        *(f"  - {{id: {_q(sid)}, name: {_q(name or sid)}}}" for sid, name in units.states),
        "districts:",
        *(
            f"  - {{id: {_q(did)}, state: {_q(sid)}, name: {_q(name)}}}"
            for did, sid, name in units.districts
        ),
        "casillas:",
        f"  file: {_q(catalogue.as_posix())}",
    ]
    if csv_format.skip_lines:
        lines.append(f"  skip_lines: {csv_format.skip_lines}")
    if csv_format.delimiter != ",":
        lines.append(f"  delimiter: {_q(csv_format.delimiter)}")
    if csv_format.encoding != "utf-8":
        lines.append(f"  encoding: {_q(csv_format.encoding)}")
    lines += ["  columns:", *_casilla_columns(args, set(units.header))]
    lines += [
        "  types: {B: BASICA, C: CONTIGUA, E: EXTRAORDINARIA, S: ESPECIAL}",
        '  zero_values: ["-"]',
        "  # ballot_limits: {ESPECIAL: 1500}  # when the catalogue has no ballot_limit column",
    ]
    return "\n".join(lines) + "\n"


def _casilla_columns(args: argparse.Namespace, header: set[str]) -> list[str]:
    """The ``casillas.columns`` lines: the unit columns given, PREP's names where the
    header has them, a TODO line for every other required field."""
    columns = {"state_id": args.state_id, "district_id": args.district_id}
    columns |= {k: v for k, v in PREP_CASILLA_COLUMNS.items() if v in header}
    if "SECCION" in header and "{" in args.state_id:
        # INE numbers sections within a state: the state makes them unique.
        columns["section_id"] = f"{args.state_id}-{{SECCION:0>4}}"
    lines = [f"    {name}: {_q(spec)}" for name, spec in columns.items()]
    lines += [
        f"    # {name}: TODO (required)" for name in REQUIRED_CASILLA_COLUMNS if name not in columns
    ]
    return lines
