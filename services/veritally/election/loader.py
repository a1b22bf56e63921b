"""Load an election definition (YAML + casilla CSV) and acta CSVs through a column mapping.

The formats are documented in docs/election-format.md and the design is recorded in
docs/adr/0010-election-format-and-column-mapping.md and (for real acta files: constants,
sums, actas outside the catalogue, "sin acta" rows) docs/adr/0083-loading-real-acta-files.md.
In short: ``election.yaml`` holds the parties, contests, states and districts, and two
mappings: ``casillas:`` names the casilla catalogue CSV and says which column (or
template over columns) gives each field, and ``actas:`` does the same for acta CSVs.
Sections are derived from the catalogue rows. A row of an acta file is an acta, or, when
``actas.missing`` recognises its observation, an expected acta that never arrived
(:class:`MissingActa`).

Every error is a :class:`DefinitionError` (a ``ValueError``) carrying the file, the line
and the field it is about, so that an operator can fix the data without reading code.
"""

from __future__ import annotations

import csv
import operator
import string
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias

import yaml

from veritally.bounds import identifier_problem
from veritally.election import races
from veritally.errors import ServiceError
from veritally.pki import is_valid_name
from veritally_client import MalformedDataError
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import acta_pb2, election_pb2

__all__ = [
    "ActaFileError",
    "ActaMapping",
    "CatalogueUnits",
    "CsvFormat",
    "DefinitionError",
    "ElectionFiles",
    "MissingActa",
    "MissingMapping",
    "catalogue_units",
    "load_acta_rows",
    "load_actas",
    "load_definition",
    "load_election",
]

FORMAT: Final = "veritally-election/1"

CASILLA_TYPES: Final[Mapping[str, election_pb2.CasillaType.ValueType]] = {
    "BASICA": election_pb2.CASILLA_TYPE_BASICA,
    "CONTIGUA": election_pb2.CASILLA_TYPE_CONTIGUA,
    "EXTRAORDINARIA": election_pb2.CASILLA_TYPE_EXTRAORDINARIA,
    "ESPECIAL": election_pb2.CASILLA_TYPE_ESPECIAL,
}
ORIGINS: Final[Mapping[str, acta_pb2.ActaOrigin.ValueType]] = {
    "CASILLA": acta_pb2.ACTA_ORIGIN_CASILLA,
    "CATD": acta_pb2.ACTA_ORIGIN_CATD,
}
DIGITISATIONS: Final[Mapping[str, acta_pb2.DigitisationMethod.ValueType]] = {
    "SCANNER": acta_pb2.DIGITISATION_METHOD_SCANNER,
    "MOBILE": acta_pb2.DIGITISATION_METHOD_MOBILE,
}

# Casilla catalogue fields: (required, numeric).
CASILLA_FIELDS: Final = {
    "casilla_id": (True, False),
    "section_id": (True, False),
    "district_id": (True, False),
    "state_id": (False, False),
    "type": (True, False),
    "nominal_list": (True, True),
    "party_representatives": (False, True),
    "ballot_limit": (False, True),
    # The capture centre that captures the casilla (a certificate name, e.g. "cc-01");
    # when mapped, every casilla must have one.
    "capture_centre": (False, False),
}
# Acta fields other than the per-option columns: required?
ACTA_FIELDS: Final = {
    "casilla_id": True,
    "contest_id": False,  # required when one file holds every contest
    "unregistered_votes": True,
    "null_votes": True,
    "image_sha256": False,
    "capture_centre": False,
    "operator": False,
    "origin": False,
    "digitisation": False,
    "received_at_centre_time": False,
    "digitised_time": False,
    "captured_time": False,
    # The acta's own counts (ActaCounts), each absent when not mapped or not legible.
    "leftover_ballots": False,
    "voters": False,
    "representatives_voted": False,
    "ballots_taken_out": False,
    "total_votes_written": False,
}
# The ActaCounts fields, in message order.
ACTA_COUNTS: Final = (
    "leftover_ballots",
    "voters",
    "representatives_voted",
    "ballots_taken_out",
    "total_votes_written",
)
# Acta fields that hold a number and may be mapped to a sum of columns.
ACTA_SUMS: Final = frozenset({"unregistered_votes", "null_votes", *ACTA_COUNTS})
# Figures larger than this cannot be on a paper tally sheet; it also keeps every sum far
# inside uint64. Unit: votes.
MAX_FIGURE: Final = 10**9
# What a figure's cell holds when the acta has no figure there: PREP writes "-" (off the
# ballot, or no acta at all), other files leave the cell empty.
NO_FIGURE: Final = frozenset({"", "-"})
# PREP's reasons for an expected acta that never arrived ("sin acta"), by the names
# ``actas.missing.reasons`` gives them: the NotCountedReason values ingest records with
# RecordMissingActa (veritally.ingest.rules.MISSING_REASONS; a test holds the two equal).
MISSING_REASONS: Final[Mapping[str, acta_pb2.NotCountedReason.ValueType]] = {
    "PACKAGE_NOT_DELIVERED": acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
    "CASILLA_NOT_INSTALLED": acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
    "NO_ENVELOPE": acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE,
    "E_BALLOT_BOX_CONTINGENCY": acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
}
# The text PREP opens every "sin acta" observation with; a cell starting with it that is
# not a mapped reason is an error, not an acta (``actas.missing.prefix``).
MISSING_PREFIX: Final = "Sin acta"
# How much of a cell an error message quotes, in characters: PREP's longest observation
# (under 50) whole, a runaway cell not.
QUOTED_CELL_CHARS: Final = 100


class DefinitionError(ServiceError, ValueError):
    """An election definition or acta file is not valid.

    Attributes:
        file: the file at fault (as given or resolved).
        line: 1-based line in that file, or None when the whole file is at fault.
        field: the field (YAML key path or mapped CSV field) at fault, or None.
    """

    def __init__(
        self, message: str, *, file: str | Path, line: int | None = None, field: str | None = None
    ) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.reason = message
        where = self.file if line is None else f"{self.file}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ActaFileError(DefinitionError):
    """An acta CSV row cannot be read with the election's mapping."""


# -- YAML with line numbers ------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line it started on."""

    line: int = 0


class _Loader(yaml.SafeLoader):
    """Safe YAML loader whose mappings carry their line numbers."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    mapping = _Map(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Yaml:
    """Typed access to the YAML document with errors that point at it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, node: Any, fieldname: str, message: str) -> DefinitionError:
        line = node.line if isinstance(node, _Map) else None
        return DefinitionError(message, file=self.path, line=line, field=fieldname)

    def mapping(self, node: Any, key: str, where: str, *, required: bool = True) -> _Map:
        value = node.get(key) if isinstance(node, dict) else None
        if value is None and not required:
            empty = _Map()
            empty.line = node.line if isinstance(node, _Map) else 0
            return empty
        if not isinstance(value, _Map):
            raise self.error(node, _join(where, key), "must be a mapping")
        return value

    def seq(self, node: _Map, key: str, where: str, *, required: bool = True) -> list[Any]:
        value = node.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self.error(node, _join(where, key), "must be a list")
        return value

    def text(
        self, node: _Map, key: str, where: str, *, required: bool = True, default: str = ""
    ) -> str:
        value = node.get(key)
        if value is None:
            if required:
                raise self.error(node, _join(where, key), "is missing")
            return default
        if not isinstance(value, str):
            raise self.error(
                node, _join(where, key), f"must be a string (quote it), found {value!r}"
            )
        return value

    def ident(self, node: Any, key: str, where: str) -> str:
        if not isinstance(node, _Map):
            raise self.error(node, where, "must be a mapping")
        value = self.text(node, key, where)
        # The identifier rule ingest applies to what clients send: an id the loader
        # accepts is one an acta can name.
        problem = identifier_problem(value)
        if problem is not None:
            raise self.error(node, _join(where, key), problem)
        return value

    def count(self, node: _Map, key: str, where: str, default: int) -> int:
        value = node.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error(node, _join(where, key), f"must be a non-negative integer: {value!r}")
        return value

    def str_map(self, node: _Map, key: str, where: str) -> dict[str, str]:
        value = self.mapping(node, key, where, required=False)
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.error(
                    value, _join(where, f"{key}.{k}"), "keys and values must be strings"
                )
            out[k] = v
        return out

    def str_list(self, node: _Map, key: str, where: str, default: Sequence[str]) -> list[str]:
        value = node.get(key)
        if value is None:
            return list(default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(node, _join(where, key), "must be a list of strings")
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _cell(text: str) -> str:
    """A cell as an error message quotes it: repr-quoted, at most QUOTED_CELL_CHARS of it."""
    if len(text) <= QUOTED_CELL_CHARS:
        return repr(text)
    return f"{text[:QUOTED_CELL_CHARS]!r}... ({len(text)} characters)"


# -- CSV column mapping ----------------------------------------------------------------

Getter = Callable[[list[str]], str]


@dataclass(frozen=True)
class Const:
    """A constant in a column mapping (``{const: PRES}``): the same value on every row,
    for a field the file has no column for."""

    value: str


@dataclass(frozen=True)
class Sum:
    """A figure that is the sum of several columns (``{sum: [NULOS_A, NULOS_B]}``)."""

    parts: tuple[str, ...]


# What a mapping may say for a field: a column name, a template over columns, a constant,
# or (for acta figures and counts only) a sum of columns or templates.
ColumnSpec: TypeAlias = str | Const | Sum
SPEC_FORMS: Final = "a column name, a template, {const: VALUE} or {sum: [COLUMN, ...]}"


def _column_specs(
    doc: _Yaml, node: _Map, key: str, where: str, *, sums: Container[str] = ()
) -> dict[str, ColumnSpec]:
    """The field -> column spec mapping at ``node[key]``; ``{sum: ...}`` only for the
    fields in ``sums``."""
    value = doc.mapping(node, key, where, required=False)
    out: dict[str, ColumnSpec] = {}
    for name, spec in value.items():
        path = _join(where, f"{key}.{name}")
        if not isinstance(name, str):
            raise doc.error(value, path, "keys must be strings (quote them)")
        out[name] = _column_spec(doc, value, path, spec, sum_allowed=name in sums)
    return out


def _column_spec(
    doc: _Yaml, parent: _Map, path: str, spec: Any, *, sum_allowed: bool
) -> ColumnSpec:
    if isinstance(spec, str):
        return spec
    where = spec if isinstance(spec, _Map) else parent
    if not isinstance(spec, _Map) or len(spec) != 1:
        raise doc.error(where, path, f"must be {SPEC_FORMS}, found {spec!r}")
    ((form, value),) = spec.items()
    if form == "const":
        if not isinstance(value, str):
            raise doc.error(where, path, f"a constant must be a string (quote it): {value!r}")
        return Const(value)
    if form == "sum":
        if not sum_allowed:
            raise doc.error(where, path, "a sum is allowed only for acta figures and counts")
        if not value or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise doc.error(where, path, "a sum must list column names or templates")
        return Sum(tuple(value))
    raise doc.error(where, path, f"must be {SPEC_FORMS}, found {{{form}: ...}}")


@dataclass(frozen=True)
class CsvFormat:
    """How to read one CSV file: dialect and lines before the header row."""

    delimiter: str = ","
    encoding: str = "utf-8"
    # Lines before the header row (INE's PREP files open with a few lines of metadata).
    skip_lines: int = 0


def _read_csv_format(doc: _Yaml, node: _Map, where: str) -> CsvFormat:
    delimiter = doc.text(node, "delimiter", where, required=False, default=",")
    if len(delimiter) != 1:
        raise doc.error(node, _join(where, "delimiter"), "must be one character")
    encoding = doc.text(node, "encoding", where, required=False, default="utf-8")
    return CsvFormat(delimiter, encoding, doc.count(node, "skip_lines", where, 0))


def _compile_column(
    spec: str, header: Mapping[str, int], *, file: Path, line: int, fieldname: str
) -> Getter:
    """A getter for a mapped field: a column name, or a template like ``{A}-{B:0>4}``."""
    if "{" not in spec:
        idx = header.get(spec)
        if idx is None:
            raise DefinitionError(
                f"column {spec!r} is not in the header", file=file, line=line, field=fieldname
            )
        getter: Getter = operator.itemgetter(idx)
        return getter
    parts: list[str] = []
    indexes: list[int] = []
    try:
        parsed = list(string.Formatter().parse(spec))
    except ValueError as e:
        raise DefinitionError(
            f"bad template {spec!r}: {e}", file=file, line=line, field=fieldname
        ) from e
    for literal, name, fmt, conv in parsed:
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if conv:
            raise DefinitionError(
                f"template {spec!r} may not use !{conv}", file=file, line=line, field=fieldname
            )
        idx = header.get(name)
        if idx is None:
            raise DefinitionError(
                f"column {name!r} of template {spec!r} is not in the header",
                file=file,
                line=line,
                field=fieldname,
            )
        parts.append(f"{{{len(indexes)}:{fmt}}}" if fmt else f"{{{len(indexes)}}}")
        indexes.append(idx)
    positional = "".join(parts)
    try:
        positional.format(*([""] * len(indexes)))
    except ValueError as e:
        raise DefinitionError(
            f"bad template {spec!r}: {e}", file=file, line=line, field=fieldname
        ) from e
    return lambda row: positional.format(*[row[i] for i in indexes])


def _compile_spec(
    spec: str | Const, header: Mapping[str, int], *, file: Path, line: int, fieldname: str
) -> Getter:
    """A getter for a column name, a template or a constant."""
    if isinstance(spec, Const):
        value = spec.value
        return lambda row: value
    return _compile_column(spec, header, file=file, line=line, fieldname=fieldname)


def _open_csv(
    path: Path, fmt: CsvFormat, *, error: type[DefinitionError]
) -> tuple[Iterator[list[str]], dict[str, int], int, Callable[[], None]]:
    """Open a CSV: (row iterator, header name -> index, header line number, close)."""
    try:
        handle = path.open(encoding=fmt.encoding, newline="")
    except OSError as e:
        raise error(f"cannot open: {e.strerror}", file=path) from e
    try:
        for _ in range(fmt.skip_lines):
            handle.readline()
        reader = csv.reader(handle, delimiter=fmt.delimiter)
        header_row = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as e:
        handle.close()
        raise error(f"unreadable: {e}", file=path, line=fmt.skip_lines + 1) from e
    if header_row is None:
        handle.close()
        raise error("no header row", file=path, line=fmt.skip_lines + 1)
    header = {name.strip(): i for i, name in enumerate(header_row)}
    return reader, header, fmt.skip_lines + 1, handle.close


def _rows(
    reader: Iterator[list[str]], path: Path, first_line: int, *, error: type[DefinitionError]
) -> Iterator[tuple[int, list[str]]]:
    """Rows with their line numbers (one physical line per row; blank rows skipped)."""
    line = first_line
    try:
        for row in reader:
            line += 1
            if row:
                yield line, row
    except (UnicodeDecodeError, csv.Error) as e:
        raise error(f"unreadable: {e}", file=path, line=line + 1) from e


def _number(value: str, *, file: Path, line: int, fieldname: str, zero: frozenset[str]) -> int:
    text = value.strip()
    if text in zero:
        return 0
    if not text.isdigit():
        raise DefinitionError(
            f"not a non-negative integer: {value!r}", file=file, line=line, field=fieldname
        )
    number = int(text)
    if number > MAX_FIGURE:
        raise DefinitionError(
            f"{number} exceeds the limit of {MAX_FIGURE}", file=file, line=line, field=fieldname
        )
    return number


# -- the definition --------------------------------------------------------------------


@dataclass(frozen=True)
class MissingMapping:
    """Which acta rows are expected actas that never arrived (``actas.missing``).

    Attributes:
        column: the column (or template) of the cell holding PREP's observation.
        reasons: the cell's text, as the file writes it (stripped) -> the reason.
        prefix: a cell that starts with it (in any case) and is not a key of
            ``reasons`` is refused, so that a reason the mapping lacks is never read as
            an acta.
    """

    column: str
    reasons: Mapping[str, acta_pb2.NotCountedReason.ValueType]
    prefix: str = MISSING_PREFIX


@dataclass(frozen=True, kw_only=True)
class MissingActa:
    """A row of an expected acta that never arrived (PREP's "sin acta"), which
    ``veritally import`` records with ingest's RecordMissingActa.

    Attributes:
        casilla_id: a casilla of the catalogue.
        contest_id: a contest the casilla has an acta of.
        reason: one of :data:`MISSING_REASONS`.
        capture_centre_id: the row's capture centre column ("" when not mapped): what
            ``veritally import --centre`` selects rows by.
        line: the row's line in its file.

    Raises:
        ValueError: ``reason`` is not one of :data:`MISSING_REASONS` (at construction).
    """

    casilla_id: str
    contest_id: str
    reason: acta_pb2.NotCountedReason.ValueType
    capture_centre_id: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        if self.reason not in MISSING_REASONS.values():
            raise ValueError(f"{self.reason} is not a reason for a missing acta")

    @property
    def acta_id(self) -> str:
        """``<casilla_id>/<contest_id>``, the id of the acta that is missing."""
        return f"{self.casilla_id}/{self.contest_id}"


@dataclass(frozen=True)
class ActaMapping:
    """How acta CSV rows map onto :class:`Acta` messages (the ``actas:`` section)."""

    yaml_path: Path
    csv_format: CsvFormat
    # contest id -> file, when each contest has its own file; else one ``file``.
    files: Mapping[str, Path]
    file: Path | None
    columns: Mapping[str, ColumnSpec]
    option_columns: Mapping[str, ColumnSpec]  # option id -> column spec
    contest_values: Mapping[str, str]  # value in the contest column -> contest id
    illegible: frozenset[str]
    blank: frozenset[str]
    origins: Mapping[str, acta_pb2.ActaOrigin.ValueType]
    digitisations: Mapping[str, acta_pb2.DigitisationMethod.ValueType]
    time_format: str | None  # strptime format; None means ISO 8601
    tz: timezone
    # Whether a row of a casilla the catalogue does not hold is read (as an acta that
    # ingest logs as out of the catalogue) instead of refused.
    outside_catalogue: bool = False
    # Which rows are expected actas that never arrived; None: every row is an acta.
    missing: MissingMapping | None = None

    def contest_of_file(self, path: Path) -> str | None:
        """The contest a file is named for under ``files``, or None if it is not named."""
        for contest_id, named in self.files.items():
            if _same_file(named, path):
                return contest_id
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # either does not exist: compare the paths as written
        return a.resolve() == b.resolve()


@dataclass(frozen=True)
class ElectionFiles:
    """A loaded election: the validated index and the acta mapping from its YAML."""

    path: Path
    index: ElectionIndex
    actas: ActaMapping | None = field(default=None)


def load_definition(path: str | Path) -> ElectionIndex:
    """Load ``election.yaml`` and the casilla catalogue it names.

    Raises:
        DefinitionError: naming the file, line and field at fault.
    """
    return load_election(path).index


def load_election(path: str | Path) -> ElectionFiles:
    """Load an election definition and its acta mapping.

    Raises:
        DefinitionError: naming the file, line and field at fault.
    """
    yaml_path = Path(path)
    try:
        text = yaml_path.read_text(encoding="utf-8")
    except OSError as e:
        raise DefinitionError(f"cannot read: {e.strerror}", file=yaml_path) from e
    except UnicodeDecodeError as e:
        raise DefinitionError(f"not UTF-8: {e}", file=yaml_path) from e
    try:
        root = yaml.load(text, Loader=_Loader)  # noqa: S506  # _Loader is a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DefinitionError(f"not valid YAML: {e}", file=yaml_path, line=line) from e
    doc = _Yaml(yaml_path)
    if not isinstance(root, _Map):
        raise DefinitionError("the document must be a mapping", file=yaml_path)
    fmt = doc.text(root, "format", "", required=False, default=FORMAT)
    if fmt != FORMAT:
        raise doc.error(root, "format", f"unsupported format {fmt!r}, expected {FORMAT!r}")

    pb = election_pb2.ElectionDefinition(
        id=doc.ident(root, "id", ""), name=doc.text(root, "name", "", required=False)
    )
    # parties
    parties: set[str] = set()
    for i, node in enumerate(doc.seq(root, "parties", "")):
        where = f"parties[{i}]"
        pid = doc.ident(node, "id", where)
        if pid in parties:
            raise doc.error(node, f"{where}.id", f"duplicate party id {pid!r}")
        parties.add(pid)
        pb.parties.add(
            id=pid,
            name=doc.text(node, "name", where, required=False, default=pid),
            abbreviation=doc.text(node, "abbreviation", where, required=False),
        )
    # contests and options
    contest_ids: set[str] = set()
    all_options: set[str] = set()
    for i, node in enumerate(doc.seq(root, "contests", "")):
        where = f"contests[{i}]"
        cid = doc.ident(node, "id", where)
        if cid in contest_ids:
            raise doc.error(node, f"{where}.id", f"duplicate contest id {cid!r}")
        contest_ids.add(cid)
        contest = pb.contests.add(
            id=cid,
            name=doc.text(node, "name", where, required=False, default=cid),
            scope=races.read_scope(doc, node, where),
        )
        options = doc.seq(node, "options", where, required=False)
        if not options:
            raise doc.error(node, f"{where}.options", f"contest {cid!r} has no vote options")
        seen: set[str] = set()
        for j, onode in enumerate(options):
            owhere = f"{where}.options[{j}]"
            oid = doc.ident(onode, "id", owhere)
            if oid in seen:
                raise doc.error(onode, f"{owhere}.id", f"duplicate option id {oid!r} in {cid!r}")
            seen.add(oid)
            # An empty list is an independent candidacy's option (it stands for no party).
            party_ids = doc.str_list(onode, "parties", owhere, default=[oid])
            for pid in party_ids:
                if pid not in parties:
                    raise doc.error(onode, f"{owhere}.parties", f"unknown party {pid!r}")
            contest.options.add(
                id=oid,
                name=doc.text(onode, "name", owhere, required=False, default=oid),
                party_ids=party_ids,
            )
        all_options |= seen
    # states and districts
    states: set[str] = set()
    for i, node in enumerate(doc.seq(root, "states", "")):
        where = f"states[{i}]"
        sid = doc.ident(node, "id", where)
        if sid in states:
            raise doc.error(node, f"{where}.id", f"duplicate state id {sid!r}")
        states.add(sid)
        pb.states.add(id=sid, name=doc.text(node, "name", where, required=False, default=sid))
    district_state: dict[str, str] = {}
    for i, node in enumerate(doc.seq(root, "districts", "")):
        where = f"districts[{i}]"
        did = doc.ident(node, "id", where)
        if did in district_state:
            raise doc.error(node, f"{where}.id", f"duplicate district id {did!r}")
        state_id = doc.text(node, "state", where)
        if state_id not in states:
            raise doc.error(node, f"{where}.state", f"unknown state {state_id!r}")
        district_state[did] = state_id
        pb.districts.add(
            id=did, state_id=state_id, name=doc.text(node, "name", where, required=False)
        )

    # coalitions, races and candidates, ballots, the rehearsal flag and the close
    locations = races.Locations()
    coalitions = races.read_coalitions(doc, root, pb, locations)
    races.read_races(doc, root, pb, coalitions, locations)
    races.read_ballots(doc, root, pb, [c.id for c in pb.contests], CASILLA_TYPES)
    pb.test = races.read_test(doc, root)
    races.read_close_time(doc, root, pb)

    _load_casillas(doc, root, pb, district_state)
    actas = _read_acta_mapping(doc, root, set(contest_ids), all_options)
    try:
        index = ElectionIndex.from_pb(pb)
    except MalformedDataError as e:
        # The model's rules are the SDK's (one copy of them); point at the YAML key.
        node, fieldname, message = races.locate(locations, str(e))
        line = node.line if isinstance(node, _Map) else None
        raise DefinitionError(message, file=yaml_path, line=line, field=fieldname) from e
    return ElectionFiles(path=yaml_path, index=index, actas=actas)


def _load_casillas(
    doc: _Yaml,
    root: _Map,
    pb: election_pb2.ElectionDefinition,
    district_state: Mapping[str, str],
) -> None:
    node = doc.mapping(root, "casillas", "")
    csv_path = doc.path.parent / doc.text(node, "file", "casillas")
    fmt = _read_csv_format(doc, node, "casillas")
    columns = _casilla_columns(doc, node)
    types = _casilla_types(doc, node)
    limits = _ballot_limits(doc, node)
    zero = frozenset(doc.str_list(node, "zero_values", "casillas", default=()))
    reader, header, header_line, close = _open_csv(csv_path, fmt, error=DefinitionError)
    try:
        getters = {
            key: _compile_spec(spec, header, file=csv_path, line=header_line, fieldname=key)
            for key, spec in columns.items()
            if not isinstance(spec, Sum)  # refused by _casilla_columns
        }
        rows = _CasillaRows(
            pb=pb,
            path=csv_path,
            getters=getters,
            types=types,
            default_limits=limits,
            zero=zero,
            district_state=district_state,
            width=len(header),
        )
        for line, row in _rows(reader, csv_path, header_line, error=DefinitionError):
            rows.add(line, row)
    finally:
        close()


@dataclass(frozen=True)
class CatalogueUnits:
    """The states and districts a casilla catalogue names (``veritally election init``).

    Attributes:
        states: ``(id, name)`` in order of first appearance.
        districts: ``(id, state id, name)`` in order of first appearance.
        casillas: data rows read.
        header: the catalogue's column names.
    """

    states: tuple[tuple[str, str], ...]
    districts: tuple[tuple[str, str, str], ...]
    casillas: int
    header: tuple[str, ...]


def catalogue_units(
    path: str | Path,
    *,
    csv_format: CsvFormat,
    state_id: str,
    district_id: str,
    state_name: str | None = None,
    district_name: str | None = None,
) -> CatalogueUnits:
    """Read the states and districts out of a casilla catalogue CSV.

    Args:
        path: the catalogue.
        csv_format: its delimiter, encoding and preamble.
        state_id: column spec (a column or template) of each row's state id.
        district_id: column spec of each row's district id (unique in the election,
            e.g. ``"{ID_ENTIDAD:0>2}-{ID_DISTRITO_FEDERAL:0>2}"``).
        state_name: column spec of the state's name, or None for none.
        district_name: column spec of the district's name, or None for none.

    Raises:
        DefinitionError: naming the line and field of a missing column, an id that is
            not a valid id, a district in two states, or a unit named two ways.
    """
    csv_path = Path(path)
    reader, header, header_line, close = _open_csv(csv_path, csv_format, error=DefinitionError)
    specs = {
        "state_id": state_id,
        "district_id": district_id,
        "state_name": state_name,
        "district_name": district_name,
    }
    try:
        getters = {
            name: _compile_column(spec, header, file=csv_path, line=header_line, fieldname=name)
            for name, spec in specs.items()
            if spec is not None
        }
        states: dict[str, str] = {}
        districts: dict[str, tuple[str, str]] = {}
        rows = 0

        def read(row: list[str], line: int, name: str) -> str:
            getter = getters.get(name)
            value = getter(row).strip() if getter is not None else ""
            if name.endswith("_id") and (problem := identifier_problem(value)) is not None:
                raise DefinitionError(problem, file=csv_path, line=line, field=name)
            return value

        def same(uid: str, before: str, now: str, line: int, name: str) -> None:
            if before != now:
                raise DefinitionError(
                    f"{uid!r} has {name} {before!r} on an earlier line, here {now!r}",
                    file=csv_path,
                    line=line,
                    field=name,
                )

        for line, row in _rows(reader, csv_path, header_line, error=DefinitionError):
            if len(row) < len(header):
                raise DefinitionError(
                    f"{len(row)} columns, the header has {len(header)}", file=csv_path, line=line
                )
            rows += 1
            sid, did = read(row, line, "state_id"), read(row, line, "district_id")
            sname, dname = read(row, line, "state_name"), read(row, line, "district_name")
            same(sid, states.setdefault(sid, sname), sname, line, "state_name")
            first_state, first_name = districts.setdefault(did, (sid, dname))
            same(did, first_state, sid, line, "state_id")
            same(did, first_name, dname, line, "district_name")
    finally:
        close()
    return CatalogueUnits(
        states=tuple(states.items()),
        districts=tuple((did, sid, name) for did, (sid, name) in districts.items()),
        casillas=rows,
        header=tuple(header),
    )


def _casilla_columns(doc: _Yaml, node: _Map) -> dict[str, ColumnSpec]:
    """The ``casillas.columns`` mapping, every required field mapped, no unknown one."""
    columns = _column_specs(doc, node, "columns", "casillas")
    for key in columns:
        if key not in CASILLA_FIELDS:
            raise doc.error(node, f"casillas.columns.{key}", "unknown field")
    for key, (required, _) in CASILLA_FIELDS.items():
        if required and key not in columns:
            raise doc.error(node, f"casillas.columns.{key}", "is missing")
    return columns


def _casilla_types(doc: _Yaml, node: _Map) -> dict[str, election_pb2.CasillaType.ValueType]:
    """The ``casillas.types`` mapping of the file's type codes (PREP's B, C, E, S by
    default) onto casilla types."""
    type_values = doc.str_map(node, "types", "casillas") or {
        "B": "BASICA",
        "C": "CONTIGUA",
        "E": "EXTRAORDINARIA",
        "S": "ESPECIAL",
    }
    types: dict[str, election_pb2.CasillaType.ValueType] = {}
    for value, name in type_values.items():
        if name not in CASILLA_TYPES:
            raise doc.error(
                node, f"casillas.types.{value}", f"{name!r} is not one of {sorted(CASILLA_TYPES)}"
            )
        types[value] = CASILLA_TYPES[name]
    return types


def _ballot_limits(doc: _Yaml, node: _Map) -> dict[election_pb2.CasillaType.ValueType, int]:
    """The ``casillas.ballot_limits`` mapping: casilla type -> the ballot limit of a casilla
    of that type whose row gives none (PREP gives every special casilla the same number
    of ballots, and its catalogue does not publish it)."""
    value = doc.mapping(node, "ballot_limits", "casillas", required=False)
    limits: dict[election_pb2.CasillaType.ValueType, int] = {}
    for name, limit in value.items():
        path = f"casillas.ballot_limits.{name}"
        if name not in CASILLA_TYPES:
            raise doc.error(value, path, f"{name!r} is not one of {sorted(CASILLA_TYPES)}")
        if name != "ESPECIAL":
            # Other casillas are limited by their nominal list and representatives.
            raise doc.error(value, path, "only special casillas (ESPECIAL) have a ballot limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_FIGURE:
            raise doc.error(
                value, path, f"must be a whole number of ballots in [1, {MAX_FIGURE}]: {limit!r}"
            )
        limits[CASILLA_TYPES[name]] = limit
    return limits


class _CasillaRows:
    """Checks the rows of the casilla catalogue one by one and adds each casilla (and the
    sections it names) to the definition."""

    def __init__(
        self,
        *,
        pb: election_pb2.ElectionDefinition,
        path: Path,
        getters: Mapping[str, Getter],
        types: Mapping[str, election_pb2.CasillaType.ValueType],
        default_limits: Mapping[election_pb2.CasillaType.ValueType, int],
        zero: frozenset[str],
        district_state: Mapping[str, str],
        width: int,
    ) -> None:
        self.pb = pb
        self.path = path
        self.getters = getters
        self.types = types
        self.default_limits = default_limits
        self.zero = zero
        self.district_state = district_state
        self.width = width
        self.numeric = [k for k, (_, is_num) in CASILLA_FIELDS.items() if is_num and k in getters]
        self.zero_limit = zero | {""}
        self.section_district: dict[str, str] = {}
        self.casilla_ids: set[str] = set()

    def _error(self, reason: str, line: int, field: str | None = None) -> DefinitionError:
        return DefinitionError(reason, file=self.path, line=line, field=field)

    def add(self, line: int, row: list[str]) -> None:
        """Check one row and add its casilla.

        Raises:
            DefinitionError: naming the line and the field at fault.
        """
        if len(row) < self.width:
            raise self._error(f"{len(row)} columns, the header has {self.width}", line)
        cid = self._casilla_id(line, row)
        sid = self._section(line, row)
        raw_type = self.getters["type"](row).strip()
        ctype = self.types.get(raw_type)
        if ctype is None:
            raise self._error(
                f"unknown casilla type {raw_type!r}, expected one of {sorted(self.types)}",
                line,
                "type",
            )
        nums = {
            k: _number(
                self.getters[k](row),
                file=self.path,
                line=line,
                fieldname=k,
                # An empty ballot limit is none given: the type's default, if any, applies.
                zero=self.zero_limit if k == "ballot_limit" else self.zero,
            )
            for k in self.numeric
        }
        nominal = nums.get("nominal_list", 0)
        # A limit on the row overrides the type's default (casillas.ballot_limits).
        limit = nums.get("ballot_limit", 0) or self.default_limits.get(ctype, 0)
        self._check_lists(line, ctype, nominal, limit)
        self.pb.casillas.add(
            id=cid,
            section_id=sid,
            type=ctype,
            nominal_list=nominal,
            party_representatives=nums.get("party_representatives", 0),
            ballot_limit=limit,
            capture_centre_id=self._centre(line, row),
        )

    def _casilla_id(self, line: int, row: list[str]) -> str:
        cid = self.getters["casilla_id"](row).strip()
        problem = identifier_problem(cid)
        if problem is not None:
            raise self._error(problem, line, "casilla_id")
        if cid in self.casilla_ids:
            raise self._error(f"duplicate casilla id {cid!r}", line, "casilla_id")
        self.casilla_ids.add(cid)
        return cid

    def _section(self, line: int, row: list[str]) -> str:
        """The row's section, in the row's district and state (added when first seen)."""
        did = self.getters["district_id"](row).strip()
        state_id = self.district_state.get(did)
        if state_id is None:
            raise self._error(f"unknown district {did!r}", line, "district_id")
        get_state = self.getters.get("state_id")
        if get_state is not None and get_state(row).strip() != state_id:
            raise self._error(
                f"state {get_state(row)!r} is not the state {state_id!r} of district {did!r}",
                line,
                "state_id",
            )
        sid = self.getters["section_id"](row).strip()
        if not sid:
            raise self._error("is empty", line, "section_id")
        known = self.section_district.get(sid)
        if known is None:
            self.section_district[sid] = did
            self.pb.sections.add(id=sid, district_id=did)
        elif known != did:
            raise self._error(
                f"section {sid!r} is in district {known!r} on an earlier line, not {did!r}",
                line,
                "section_id",
            )
        return sid

    def _check_lists(
        self, line: int, ctype: election_pb2.CasillaType.ValueType, nominal: int, limit: int
    ) -> None:
        """A special casilla has a ballot limit and no nominal list; any other, a list."""
        if ctype == election_pb2.CASILLA_TYPE_ESPECIAL:
            if nominal:
                raise self._error(
                    f"a special casilla has no nominal list, found {nominal}",
                    line,
                    "nominal_list",
                )
            if not limit:
                raise self._error(
                    "a special casilla needs a ballot limit (a column, or "
                    "casillas.ballot_limits.ESPECIAL)",
                    line,
                    "ballot_limit",
                )
        elif not nominal:
            raise self._error("a non-special casilla needs a nominal list", line, "nominal_list")

    def _centre(self, line: int, row: list[str]) -> str:
        get_centre = self.getters.get("capture_centre")
        if get_centre is None:
            return ""
        centre = get_centre(row).strip()
        if not is_valid_name(centre):
            raise self._error(
                f"capture centre {centre[:80]!r} is not a certificate name (1 to 64 "
                "lowercase ASCII letters, digits, '-' or '_')",
                line,
                "capture_centre",
            )
        return centre


def _read_acta_mapping(
    doc: _Yaml, root: _Map, contest_ids: set[str], option_ids: set[str]
) -> ActaMapping | None:
    if root.get("actas") is None:
        return None
    node = doc.mapping(root, "actas", "")
    base = doc.path.parent
    files_spec = doc.str_map(node, "files", "actas")
    single = doc.text(node, "file", "actas", required=False)
    if files_spec and single:
        raise doc.error(node, "actas.files", "give either 'file' or 'files', not both")
    for cid in files_spec:
        if cid not in contest_ids:
            raise doc.error(node, f"actas.files.{cid}", f"unknown contest {cid!r}")
    columns = _column_specs(doc, node, "columns", "actas", sums=ACTA_SUMS)
    for key in columns:
        if key not in ACTA_FIELDS:
            raise doc.error(node, f"actas.columns.{key}", "unknown field")
    for key, required in ACTA_FIELDS.items():
        if required and key not in columns:
            raise doc.error(node, f"actas.columns.{key}", "is missing")
    if not files_spec and "contest_id" not in columns:
        raise doc.error(
            node, "actas.columns.contest_id", "is needed when one file holds every contest"
        )
    option_columns = _column_specs(doc, node, "options", "actas", sums=option_ids)
    for oid in option_columns:
        if oid not in option_ids:
            raise doc.error(node, f"actas.options.{oid}", f"no contest has an option {oid!r}")
    contest_values = doc.str_map(node, "contests", "actas")
    for value, cid in contest_values.items():
        if cid not in contest_ids:
            raise doc.error(node, f"actas.contests.{value}", f"unknown contest {cid!r}")
    marks = doc.mapping(node, "marks", "actas", required=False)
    illegible = frozenset(doc.str_list(marks, "illegible", "actas.marks", default=["Ilegible"]))
    blank = frozenset(doc.str_list(marks, "blank", "actas.marks", default=["Sin dato"]))
    if illegible & blank:
        raise doc.error(marks, "actas.marks", "a value cannot mean both illegible and blank")
    origins: dict[str, acta_pb2.ActaOrigin.ValueType] = {}
    for value, name in (doc.str_map(node, "origins", "actas") or {k: k for k in ORIGINS}).items():
        if name not in ORIGINS:
            raise doc.error(node, f"actas.origins.{value}", f"{name!r} not in {sorted(ORIGINS)}")
        origins[value] = ORIGINS[name]
    digitisations: dict[str, acta_pb2.DigitisationMethod.ValueType] = {}
    dig_spec = doc.str_map(node, "digitisations", "actas") or {k: k for k in DIGITISATIONS}
    for value, name in dig_spec.items():
        if name not in DIGITISATIONS:
            raise doc.error(
                node, f"actas.digitisations.{value}", f"{name!r} not in {sorted(DIGITISATIONS)}"
            )
        digitisations[value] = DIGITISATIONS[name]
    time_format = doc.text(node, "time_format", "actas", required=False) or None
    tz_text = doc.text(node, "timezone", "actas", required=False, default="+00:00")
    try:
        offset = datetime.strptime(tz_text, "%z").utcoffset()
    except ValueError as e:
        raise doc.error(node, "actas.timezone", f"not a UTC offset like -06:00: {tz_text!r}") from e
    assert offset is not None  # %z always yields an aware datetime
    outside = doc.text(node, "outside_catalogue", "actas", required=False, default="refuse")
    if outside not in ("refuse", "accept"):
        raise doc.error(
            node, "actas.outside_catalogue", f"must be 'refuse' or 'accept', found {outside!r}"
        )
    return ActaMapping(
        yaml_path=doc.path,
        csv_format=_read_csv_format(doc, node, "actas"),
        files={cid: base / p for cid, p in files_spec.items()},
        file=base / single if single else None,
        columns=columns,
        option_columns=option_columns,
        contest_values=contest_values,
        illegible=illegible,
        blank=blank,
        origins=origins,
        digitisations=digitisations,
        time_format=time_format,
        tz=timezone(offset),
        outside_catalogue=outside == "accept",
        missing=_read_missing(doc, node),
    )


def _read_missing(doc: _Yaml, node: _Map) -> MissingMapping | None:
    """The ``actas.missing`` mapping: the column of PREP's observation and its texts for
    each reason an acta never arrived."""
    if node.get("missing") is None:
        return None
    where = "actas.missing"
    spec = doc.mapping(node, "missing", "actas")
    for key in spec:
        if key not in ("column", "reasons", "prefix"):
            raise doc.error(spec, f"{where}.{key}", "unknown key (column, reasons, prefix)")
    column = doc.text(spec, "column", where)
    if not column.strip():
        raise doc.error(spec, f"{where}.column", "is empty")
    prefix = doc.text(spec, "prefix", where, required=False, default=MISSING_PREFIX)
    if not prefix.strip():
        raise doc.error(spec, f"{where}.prefix", "is empty: every observation would start with it")
    texts = doc.str_map(spec, "reasons", where)
    if not texts:
        raise doc.error(spec, f"{where}.reasons", "lists no reason")
    reasons: dict[str, acta_pb2.NotCountedReason.ValueType] = {}
    for text, name in texts.items():
        path = f"{where}.reasons.{text}"
        if not text.strip():
            raise doc.error(
                spec, path, "an empty text would make every row without an observation missing"
            )
        if name not in MISSING_REASONS:
            raise doc.error(spec, path, f"{name!r} is not one of {sorted(MISSING_REASONS)}")
        reasons[text.strip()] = MISSING_REASONS[name]
    return MissingMapping(column=column, reasons=reasons, prefix=prefix.strip())


# -- actas -----------------------------------------------------------------------------


def load_actas(
    election: str | Path | ElectionFiles,
    csv_path: str | Path | None = None,
    *,
    contest: str | None = None,
) -> Iterator[acta_pb2.Acta]:
    """Read actas from CSV with the election's ``actas:`` mapping, in file order.

    The rows ``actas.missing`` recognises as expected actas that never arrived are not
    actas and are left out; :func:`load_acta_rows` yields them too.

    Args:
        election: the ``election.yaml`` path, or an already loaded :class:`ElectionFiles`.
        csv_path: the acta file to read; by default the file(s) named in the mapping,
            per-contest files in contest order. A file named under ``actas.files`` is read
            as the contest it is named for; any other holds the contest of ``contest``,
            or else of each row's ``contest_id`` column.
        contest: the contest every row of ``csv_path`` counts (overrides the mapping).

    Yields:
        One ``Acta`` per row. Figures marked illegible or blank are 0 with their mark.

    Raises:
        DefinitionError: if the definition cannot be loaded, has no ``actas:`` section,
            or ``contest`` is not one of its contests.
        ActaFileError: naming the file, line and field of a row that cannot be read.
    """
    for row in load_acta_rows(election, csv_path, contest=contest):
        if isinstance(row, acta_pb2.Acta):
            yield row


def load_acta_rows(
    election: str | Path | ElectionFiles,
    csv_path: str | Path | None = None,
    *,
    contest: str | None = None,
) -> Iterator[acta_pb2.Acta | MissingActa]:
    """Read every row of the acta files, in file order: an acta, or an expected acta
    that never arrived (a row ``actas.missing`` recognises).

    Args:
        election: as for :func:`load_actas`.
        csv_path: as for :func:`load_actas`.
        contest: as for :func:`load_actas`.

    Yields:
        One ``Acta`` or :class:`MissingActa` per row.

    Raises:
        DefinitionError: as for :func:`load_actas`.
        ActaFileError: naming the file, line and field of a row that cannot be read,
            among them a missing acta's row that holds a figure (the figure's field) and
            an observation that starts like a missing acta's but is none of the mapped
            reasons (``missing.reasons``).
    """
    files = election if isinstance(election, ElectionFiles) else load_election(election)
    mapping = files.actas
    if mapping is None:
        raise DefinitionError("has no 'actas' section", file=files.path, field="actas")
    if contest is not None and contest not in files.index.contest_ids:
        raise DefinitionError(
            f"unknown contest {contest!r} (contests: {', '.join(files.index.contest_ids)})",
            file=files.path,
            field="contest_id",
        )
    if csv_path is not None:
        path = Path(csv_path)
        fixed = contest if contest is not None else mapping.contest_of_file(path)
        yield from _read_acta_file(files.index, mapping, path, fixed)
    elif contest is not None:
        raise ValueError("a contest is given only with the file that holds it")
    elif mapping.files:
        for contest_id in files.index.contest_ids:
            named = mapping.files.get(contest_id)
            if named is not None:
                yield from _read_acta_file(files.index, mapping, named, contest_id)
    elif mapping.file is not None:
        yield from _read_acta_file(files.index, mapping, mapping.file, None)
    else:
        raise DefinitionError(
            "names no acta file and none was given", file=files.path, field="actas.file"
        )


def _read_acta_file(
    index: ElectionIndex, mapping: ActaMapping, path: Path, fixed_contest: str | None
) -> Iterator[acta_pb2.Acta | MissingActa]:
    reader, header, header_line, close = _open_csv(path, mapping.csv_format, error=ActaFileError)
    try:
        rows = _ActaRows(index, mapping, path, fixed_contest, header, header_line)
        for line, row in _rows(reader, path, header_line, error=ActaFileError):
            yield rows.read(line, row)
    finally:
        close()


class _Race(Protocol):
    """What the acta reader needs of a race (the index's ``RaceInfo``)."""

    @property
    def id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def contest_id(self) -> str: ...
    @property
    def option_ids(self) -> tuple[str, ...]: ...


# (option id, its getters: one for a column or template, several for a sum)
_OptionGetters: TypeAlias = list[tuple[str, tuple[Getter, ...]]]
Figure: TypeAlias = tuple[int, acta_pb2.FieldMark.ValueType]


class _ActaRows:
    """The columns of one acta file compiled once, and each row turned into an acta."""

    def __init__(
        self,
        index: ElectionIndex,
        mapping: ActaMapping,
        path: Path,
        fixed_contest: str | None,
        header: Mapping[str, int],
        header_line: int,
    ) -> None:
        """Compile the mapped columns against the file's header.

        Raises:
            ActaFileError: a mapped column the header lacks, or no contest column.
        """
        self.path = path
        self.mapping = mapping
        self.fixed_contest = fixed_contest
        self.width = len(header)
        self.header_line = header_line

        def compile_(spec: ColumnSpec, fieldname: str) -> tuple[Getter, ...]:
            parts = spec.parts if isinstance(spec, Sum) else (spec,)
            try:
                return tuple(
                    _compile_spec(p, header, file=path, line=header_line, fieldname=fieldname)
                    for p in parts
                )
            except DefinitionError as e:
                raise ActaFileError(e.reason, file=path, line=header_line, field=fieldname) from e

        getters = {k: compile_(spec, k) for k, spec in mapping.columns.items()}
        if fixed_contest is None and "contest_id" not in getters:
            raise ActaFileError(
                "no contest column is mapped and the file is not named under 'actas.files': "
                "say which contest it holds",
                file=path,
                line=header_line,
                field="contest_id",
            )
        # Per contest this file can hold: its position, and each option's getters (None
        # for a column the header lacks). A column that every race of the contest needs
        # must be in the header; one that only some races have is needed only by the rows
        # of those races.
        contests = [fixed_contest] if fixed_contest else list(index.contest_ids)
        self.contest_index = {cid: index.contest(cid).index for cid in contests}
        self.option_getters: dict[str, dict[str, tuple[Getter, ...] | None]] = {}
        for cid in contests:
            contest = index.contest(cid)
            compiled: dict[str, tuple[Getter, ...] | None] = {}
            for oid in contest.option_ids:
                spec = mapping.option_columns.get(oid, oid)
                try:
                    compiled[oid] = compile_(spec, f"options.{oid}")
                except ActaFileError:
                    if all(oid in race.option_index for race in contest.races):
                        raise
                    compiled[oid] = None
            self.option_getters[cid] = compiled
        # Per race (by its index among the election's races): its ballot's getters, built
        # on first use.
        self.race_getters: dict[int, _OptionGetters] = {}
        self.casillas = index.casilla_map()
        # One attribute per column: a row is read by a handful of lookups, no dict.
        self.get_casilla = getters["casilla_id"][0]
        self.get_contest = getters["contest_id"][0] if fixed_contest is None else None
        self.get_unregistered = getters["unregistered_votes"]
        self.get_null = getters["null_votes"]
        self.get_sha = getters["image_sha256"][0] if "image_sha256" in getters else None
        self.get_centre = getters["capture_centre"][0] if "capture_centre" in getters else None
        self.get_operator = getters["operator"][0] if "operator" in getters else None
        self.get_origin = getters["origin"][0] if "origin" in getters else None
        self.get_digitisation = getters["digitisation"][0] if "digitisation" in getters else None
        self.time_getters = [
            (name, getters[name][0])
            for name in ("received_at_centre_time", "digitised_time", "captured_time")
            if name in getters
        ]
        self.count_getters = [(name, getters[name]) for name in ACTA_COUNTS if name in getters]
        self.missing = mapping.missing
        self.get_missing = (
            compile_(mapping.missing.column, "missing.column")[0]
            if mapping.missing is not None
            else None
        )
        # Fields mapped to a constant: the same cell on every row, no figure of the row's
        # own (a missing acta's row may hold them; unregistered_votes: {const: "0"}).
        self.constant_fields = frozenset(
            {name for name, spec in mapping.columns.items() if isinstance(spec, Const)}
            | {
                f"options.{o}"
                for o, spec in mapping.option_columns.items()
                if isinstance(spec, Const)
            }
        )

    def _error(self, reason: str, line: int, field: str | None = None) -> ActaFileError:
        return ActaFileError(reason, file=self.path, line=line, field=field)

    def _race_options(self, race: _Race, line: int) -> _OptionGetters:
        """The getters of a race's ballot, in ballot order (compiled on first use)."""
        compiled = self.option_getters[race.contest_id]
        options: _OptionGetters = []
        for oid in race.option_ids:
            getter = compiled[oid]
            if getter is None:
                spec = self.mapping.option_columns.get(oid, oid)
                raise self._error(
                    f"column(s) {spec!r} of option {oid!r} of race {race.id!r} are not in "
                    f"the header (line {self.header_line})",
                    line,
                    f"options.{oid}",
                )
            options.append((oid, getter))
        self.race_getters[race.index] = options
        return options

    def _outside_options(self, contest_id: str, row: list[str]) -> _OptionGetters:
        """The getters of a contest's options whose columns are in the header and whose
        cells are neither empty nor ``-`` (off the ballot), for a row of a casilla
        outside the catalogue."""
        options: _OptionGetters = []
        for oid, getters in self.option_getters[contest_id].items():
            if getters is not None and any(g(row).strip() not in NO_FIGURE for g in getters):
                options.append((oid, getters))
        return options

    def read(self, line: int, row: list[str]) -> acta_pb2.Acta | MissingActa:
        """The acta of one row, or the missing acta it records.

        Raises:
            ActaFileError: naming the line and the field at fault.
        """
        if len(row) < self.width:
            raise self._error(f"{len(row)} columns, the header has {self.width}", line)
        casilla_id = self.get_casilla(row).strip()
        casilla = self.casillas.get(casilla_id)
        reason = self._missing_reason(line, row) if self.get_missing is not None else None
        if casilla is None and reason is not None:
            # Ingest records a missing acta only of a casilla it expects one of.
            raise self._error(
                f"casilla {_cell(casilla_id)} is not in the catalogue: no acta of it is expected, "
                "so none can be missing",
                line,
                "casilla_id",
            )
        if casilla is None and not (self.mapping.outside_catalogue and casilla_id):
            raise self._error(f"unknown casilla {casilla_id!r}", line, "casilla_id")
        if self.get_contest is not None:
            raw = self.get_contest(row).strip()
            contest_id = self.mapping.contest_values.get(raw, raw)
        else:
            contest_id = self.fixed_contest or ""
        position = self.contest_index.get(contest_id)
        if position is None:
            raise self._error(f"unknown contest {contest_id!r}", line, "contest_id")
        if casilla is None:
            # Out of the catalogue (actas.outside_catalogue: accept): no race tells the
            # ballot, so the options are the contest's whose cells hold a figure.
            options = self._outside_options(contest_id, row)
        else:
            race = casilla.races[position]
            if race is None:
                raise self._error(
                    f"casilla {casilla_id!r} has no acta of contest {contest_id!r}: its type "
                    "does not receive the contest or no race of the contest contains it",
                    line,
                    "contest_id",
                )
            options = self.race_getters.get(race.index) or self._race_options(race, line)
            if reason is not None:
                self._check_no_figures(options, line, row)
                return MissingActa(
                    casilla_id=casilla_id,
                    contest_id=contest_id,
                    reason=reason,
                    capture_centre_id=(
                        self.get_centre(row).strip() if self.get_centre is not None else ""
                    ),
                    line=line,
                )
        acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
        add = acta.option_votes.add
        for oid, getters in options:
            if len(getters) == 1:
                value = getters[0](row)
                # Fast path for the common case: a plain figure of at most 9 digits.
                if value.isdigit() and len(value) < 10:
                    add(option_id=oid, votes=int(value))
                    continue
                votes, mark = self._figure(value, line, f"options.{oid}")
            else:
                votes, mark = self._sum(row, getters, line, f"options.{oid}")
            add(option_id=oid, votes=votes, mark=mark)
        unregistered, null = self.get_unregistered, self.get_null
        acta.unregistered_votes, acta.unregistered_mark = (
            self._figure(unregistered[0](row), line, "unregistered_votes")
            if len(unregistered) == 1
            else self._sum(row, unregistered, line, "unregistered_votes")
        )
        acta.null_votes, acta.null_mark = (
            self._figure(null[0](row), line, "null_votes")
            if len(null) == 1
            else self._sum(row, null, line, "null_votes")
        )
        if self.get_sha is not None:
            self._image(acta, self.get_sha(row).strip(), line)
        for name, getters in self.count_getters:
            count = self._count(row, getters, line, name)
            if count is not None:
                setattr(acta.counts, name, count)
        self._provenance(acta.provenance, line, row)
        return acta

    def _missing_reason(
        self, line: int, row: list[str]
    ) -> acta_pb2.NotCountedReason.ValueType | None:
        """The reason the row's observation gives for an acta that never arrived, or
        None for a row that is an acta (no ``actas.missing``, or another observation).

        Raises:
            ActaFileError: on ``missing.reasons`` for an observation that starts with the
                prefix but is not a mapped reason: read as an acta, it would be one with
                every figure blank.
        """
        if self.get_missing is None or self.missing is None:
            return None
        text = self.get_missing(row).strip()
        reason = self.missing.reasons.get(text)
        if reason is None and text.casefold().startswith(self.missing.prefix.casefold()):
            raise self._error(
                f"column {self.missing.column!r} holds {_cell(text)}, which starts with "
                f"{self.missing.prefix!r} but is not a text of actas.missing.reasons: add it "
                "there with its reason",
                line,
                "missing.reasons",
            )
        return reason

    def _check_no_figures(self, options: _OptionGetters, line: int, row: list[str]) -> None:
        """A missing acta's row has no figures: every figure and count cell of its race is
        empty or ``-`` (a field mapped to a constant is not the row's).

        Raises:
            ActaFileError: naming the first field that holds something else.
        """
        cells: list[tuple[str, tuple[Getter, ...]]] = [(f"options.{oid}", g) for oid, g in options]
        cells += [
            ("unregistered_votes", self.get_unregistered),
            ("null_votes", self.get_null),
            *self.count_getters,
        ]
        for fieldname, getters in cells:
            if fieldname in self.constant_fields:
                continue
            for getter in getters:
                value = getter(row).strip()
                if value not in NO_FIGURE:
                    raise self._error(
                        f"the row records a missing acta but holds a figure, {_cell(value)}: "
                        "an acta that never arrived has none (empty or '-')",
                        line,
                        fieldname,
                    )

    def _sum(
        self, row: list[str], getters: tuple[Getter, ...], line: int, fieldname: str
    ) -> Figure:
        """A figure read from one column, or the sum of several. The sum is known only
        when every part is: a part marked illegible makes it illegible, else a part
        marked blank makes it blank, and a marked figure carries 0 votes."""
        if len(getters) == 1:
            return self._figure(getters[0](row), line, fieldname)
        total = 0
        marks = set()
        for getter in getters:
            votes, mark = self._figure(getter(row), line, fieldname)
            total += votes
            if mark:
                marks.add(mark)
        if acta_pb2.FIELD_MARK_ILLEGIBLE in marks:
            return 0, acta_pb2.FIELD_MARK_ILLEGIBLE
        if marks:
            return 0, acta_pb2.FIELD_MARK_BLANK
        if total > MAX_FIGURE:
            raise self._error(f"{total} exceeds the limit of {MAX_FIGURE}", line, fieldname)
        return total, acta_pb2.FIELD_MARK_UNSPECIFIED

    def _count(
        self, row: list[str], getters: tuple[Getter, ...], line: int, fieldname: str
    ) -> int | None:
        """One of the acta's own counts: None (absent) when a cell is empty or marked
        illegible or blank, since ActaCounts has no marks."""
        total = 0
        for getter in getters:
            value = getter(row)
            if not value.strip():
                return None
            votes, mark = self._figure(value, line, fieldname)
            if mark:
                return None
            total += votes
        if total > MAX_FIGURE:
            raise self._error(f"{total} exceeds the limit of {MAX_FIGURE}", line, fieldname)
        return total

    def _figure(self, value: str, line: int, fieldname: str) -> Figure:
        """A vote count, or the mark (illegible, blank) the file writes instead."""
        text = value.strip()
        if text in self.mapping.illegible or value in self.mapping.illegible:
            return 0, acta_pb2.FIELD_MARK_ILLEGIBLE
        if text in self.mapping.blank or value in self.mapping.blank:
            return 0, acta_pb2.FIELD_MARK_BLANK
        if not text.isdigit():
            raise self._error(f"not a vote count or a mark: {value!r}", line, fieldname)
        number = int(text)
        if number > MAX_FIGURE:
            raise self._error(f"{number} exceeds the limit of {MAX_FIGURE}", line, fieldname)
        return number, acta_pb2.FIELD_MARK_UNSPECIFIED

    def _image(self, acta: acta_pb2.Acta, text: str, line: int) -> None:
        if not text:
            return
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = b""
        if len(digest) != 32:  # SHA-256: 32 bytes
            raise self._error(f"not a hex SHA-256: {text!r}", line, "image_sha256")
        acta.image_sha256 = digest

    def _provenance(self, prov: acta_pb2.Provenance, line: int, row: list[str]) -> None:
        if self.get_centre is not None:
            prov.capture_centre_id = self.get_centre(row).strip()
        if self.get_operator is not None:
            prov.operator_id = self.get_operator(row).strip()
        if self.get_origin is not None and (text := self.get_origin(row).strip()):
            origin = self.mapping.origins.get(text)
            if origin is None:
                raise self._error(f"unknown origin {text!r}", line, "origin")
            prov.origin = origin
        if self.get_digitisation is not None and (text := self.get_digitisation(row).strip()):
            method = self.mapping.digitisations.get(text)
            if method is None:
                raise self._error(f"unknown digitisation {text!r}", line, "digitisation")
            prov.digitisation = method
        for name, getter in self.time_getters:
            text = getter(row).strip()
            if text:
                seconds, nanos = _parse_time(text, self.mapping, self.path, line, name)
                ts = getattr(prov, name)
                ts.seconds = seconds
                ts.nanos = nanos


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_time(
    text: str, mapping: ActaMapping, path: Path, line: int, fieldname: str
) -> tuple[int, int]:
    try:
        if mapping.time_format is None:
            dt = datetime.fromisoformat(text)
        else:
            dt = datetime.strptime(text, mapping.time_format)  # zone applied below when naive
    except ValueError as e:
        raise ActaFileError(f"not a time: {text!r}", file=path, line=line, field=fieldname) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=mapping.tz)
    delta: timedelta = dt - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds, delta.microseconds * 1000
