"""PREP's own CSV layout: one file per contest, as the electoral authority publishes it,
from a verified cut and its verified acta records.

Each contest's file (``<CONTEST>.csv``, UTF-8, comma-separated, ``\\n`` line ends):

1. line 1, the cut: ``FECHA_HORA_CORTE`` and the cut time (UTC), then labelled fields
   ``CORTE`` (the cut number), ``SHA256_RESULTADOS`` (the SHA-256 of the signed results),
   ``ELECCION``, ``CONTIENDA``, ``SIMULACRO`` (``SI`` for a rehearsal) and ``FINAL``;
2. line 2, the header of section A (PREP's completeness header, :data:`SUMMARY_COLUMNS`)
   and line 3 its values for the nation, from the signed results;
3. line 4, the header of section B, and from line 5 one row per acta of the contest in
   the cut (its last revision): catalogue actas in catalogue order, then actas of
   casillas outside the catalogue by acta id.

A reader skips 3 lines and reads section B by its header (the project's loader:
``skip_lines: 3``). The field descriptions are in :func:`leeme_text` (``LEEME.txt``).

Section B needs the acta records themselves, which the signed results do not hold:
:func:`verified_acta_records` recounts the log's leaves up to the cut against the cut's
signed root and every cut's signed results (``Recounter``), and returns the records only
if everything matched. The writers check that the records are as many as the cut covers.
Everything written depends only on the cut, the definition and the records: the same cut
exports to the same bytes for everyone.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from veritally_client._cut import format_cut_time
from veritally_client._election import CasillaInfo, ElectionIndex
from veritally_client._errors import MalformedDataError
from veritally_client._export import check_election, percent_text
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2
from veritally_client._leaf import parse_leaf
from veritally_client._recount import Recounter
from veritally_client._verify import VerifiedCut

if TYPE_CHECKING:
    from veritally_client._client import Client

__all__ = [
    "LEEME_NAME",
    "RECORD_COLUMNS_AFTER_OPTIONS",
    "RECORD_COLUMNS_BEFORE_OPTIONS",
    "SUMMARY_COLUMNS",
    "fetch_acta_records",
    "leeme_text",
    "observation",
    "record_columns",
    "verified_acta_records",
    "write_prep_csv",
    "write_prep_files",
]

ActaRecordPb = acta_pb2.ActaRecord

#: Section A: PREP's completeness header, in PREP's order.
SUMMARY_COLUMNS: Final = (
    "ACTAS_ESPERADAS",
    "ACTAS_REGISTRADAS",
    "ACTAS_FUERA_DE_CATALOGO",
    "ACTAS_CAPTURADAS",
    "PORCENTAJE_ACTAS_CAPTURADAS",
    "ACTAS_CONTABILIZADAS",
    "PORCENTAJE_ACTAS_CONTABILIZADAS",
    "PORCENTAJE_ACTAS_CON_INCONSISTENCIAS",
    "ACTAS_NO_CONTABILIZADAS",
    "LISTA_NOMINAL_ACTAS_CONTABILIZADAS",
    "TOTAL_VOTOS_C_CS",
    "TOTAL_VOTOS_S_CS",
    "PORCENTAJE_PARTICIPACION_CIUDADANA",
)
#: Section B, before the option columns (one per option of the contest, by its id).
RECORD_COLUMNS_BEFORE_OPTIONS: Final = (
    "CLAVE_CASILLA",
    "CLAVE_ACTA",
    "ID_ENTIDAD",
    "ENTIDAD",
    "ID_DISTRITO_FEDERAL",
    "DISTRITO_FEDERAL",
    "SECCION",
    "ID_CASILLA",
    "TIPO_CASILLA",
)
#: Section B, after the option columns.
RECORD_COLUMNS_AFTER_OPTIONS: Final = (
    "NO_REGISTRADAS",
    "NULOS",
    "TOTAL_VOTOS_CALCULADO",
    "LISTA_NOMINAL",
    "BOLETAS_SOBRANTES",
    "PERSONAS_VOTARON",
    "REPRESENTANTES_PP_CI",
    "TOTAL_VOTOS_SACADOS",
    "TOTAL_VOTOS_ASENTADO",
    "OBSERVACIONES",
    "CONTABILIZADA",
    "REVISION",
    "SHA",
    "FECHA_HORA_ACOPIO",
    "FECHA_HORA_CAPTURA",
    "FECHA_HORA_REGISTRO",
    "ORIGEN",
    "DIGITALIZACION",
    "SIMULACRO",
)
LEEME_NAME: Final = "LEEME.txt"

# What PREP writes for a figure that is not a number.
_ILLEGIBLE: Final = "Ilegible"
_BLANK: Final = "Sin dato"
_NOT_APPLICABLE: Final = "-"  # not on the acta's ballot, no acta, no figure captured

_REASON_WORDS: Final[Mapping[int, str]] = {
    acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED: "",
    acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST: "Excede lista nominal",
    acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE: "Todos los campos ilegibles",
    acta_pb2.NOT_COUNTED_REASON_ALL_BLANK: "Todos los campos vacíos",
    acta_pb2.NOT_COUNTED_REASON_EXCEEDS_BALLOTS: "Excede boletas recibidas",
    acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE: "Fuera de catálogo",
    acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED: "Sin acta por paquete no entregado",
    acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED: "Sin acta por casilla no instalada",
    acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE: "Sin acta por paquete entregado sin sobre PREP",
    acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY: (
        "Sin acta por contingencia en urna electrónica"
    ),
}
assert set(_REASON_WORDS) == set(acta_pb2.NotCountedReason.values())
_MISSING: Final = frozenset(
    {
        acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
        acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
        acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE,
        acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
    }
)
_TYPE_LETTERS: Final[Mapping[int, str]] = {
    election_pb2.CASILLA_TYPE_BASICA: "B",
    election_pb2.CASILLA_TYPE_CONTIGUA: "C",
    election_pb2.CASILLA_TYPE_EXTRAORDINARIA: "E",
    election_pb2.CASILLA_TYPE_ESPECIAL: "S",
}
_ORIGINS: Final[Mapping[int, str]] = {
    acta_pb2.ACTA_ORIGIN_CASILLA: "CASILLA",
    acta_pb2.ACTA_ORIGIN_CATD: "CATD",
}
_DIGITISATIONS: Final[Mapping[int, str]] = {
    acta_pb2.DIGITISATION_METHOD_SCANNER: "ESCANER",
    acta_pb2.DIGITISATION_METHOD_MOBILE: "MOVIL",
}


def observation(reason: acta_pb2.NotCountedReason.ValueType) -> str:
    """PREP's words for why an acta is not counted ("" for a counted acta)."""
    return _REASON_WORDS[reason]


def record_columns(election: ElectionIndex, contest_id: str) -> tuple[str, ...]:
    """The header of section B for a contest.

    Raises:
        LookupError: if there is no such contest.
    """
    return (
        *RECORD_COLUMNS_BEFORE_OPTIONS,
        *election.option_ids(contest_id),
        *RECORD_COLUMNS_AFTER_OPTIONS,
    )


# -- the records ------------------------------------------------------------------------


def verified_acta_records(
    cut: VerifiedCut, *, election: ElectionIndex, pages: Iterable[Sequence[bytes]]
) -> list[acta_pb2.ActaRecord]:
    """The acta records of a cut, from the log's leaves, checked against what was signed.

    Args:
        cut: the verified cut.
        election: its definition (checked against the digest in the signed results).
        pages: the first ``cut.tree_size`` leaves of the log, in order, in pages.

    Returns:
        Every acta record the cut covers, in log order.

    Raises:
        ValueError: if ``election`` is not the cut's definition.
        BadProofError: the leaves do not hash to the cut's signed root.
        RecountMismatchError: a cut's signed results differ from its recomputed ones.
        MalformedDataError: a leaf is malformed, or there are more or fewer leaves.
    """
    check_election(cut, election)
    recounter = Recounter(election=election, tree_size=cut.tree_size, root_hash=cut.root_hash)
    leaves: list[bytes] = []
    for page in pages:
        recounter.feed(list(page))
        leaves.extend(page)
    recounter.finish()  # the root, every cut's results, then the records are trusted
    records = []
    for leaf in leaves:
        parsed = parse_leaf(leaf)
        if parsed.WhichOneof("kind") == "acta_record":
            records.append(parsed.acta_record)
    return records


def fetch_acta_records(client: Client, cut: VerifiedCut) -> list[acta_pb2.ActaRecord]:
    """Download the leaves of ``cut``'s tree through ``client`` and verify them
    (:func:`verified_acta_records`).

    Raises:
        TransportError: if the publisher cannot be reached.
        MalformedDataError: if the publisher serves a page of the wrong size.
        VerificationError: as :func:`verified_acta_records`.
    """
    # The client's own transport and page limit: the leaves are checked here, against the
    # cut's signed root, exactly as ``Client.recount`` checks the trusted tree's.
    transport = client._transport  # same package; no unverified leaf leaks
    page = client._config.max_leaves_per_page
    election = client.election()

    def pages() -> Iterable[list[bytes]]:
        start = 0
        while start < cut.tree_size:
            want = min(page, cut.tree_size - start)
            leaves = transport.get_leaves(start, want)
            if not leaves or len(leaves) > want:
                raise MalformedDataError(f"asked for {want} leaves from {start}, got {len(leaves)}")
            yield leaves
            start += len(leaves)

    return verified_acta_records(cut, election=election, pages=pages())


# -- writing ----------------------------------------------------------------------------


def _latest(records: Iterable[acta_pb2.ActaRecord]) -> dict[str, acta_pb2.ActaRecord]:
    latest: dict[str, acta_pb2.ActaRecord] = {}
    for record in records:
        latest[record.acta_id] = record
    return latest


def _time(ts: Timestamp, present: bool) -> str:
    if not present:
        return ""
    return format_cut_time(ts.ToDatetime(tzinfo=dt.UTC))


def _figure(votes: int, mark: int) -> str:
    if mark == acta_pb2.FIELD_MARK_ILLEGIBLE:
        return _ILLEGIBLE
    if mark == acta_pb2.FIELD_MARK_BLANK:
        return _BLANK
    return str(votes)


def _count(counts: acta_pb2.ActaCounts, name: str) -> str:
    return str(getattr(counts, name)) if counts.HasField(name) else _NOT_APPLICABLE  # type: ignore[arg-type]


class _Places:
    """State and district names, and each casilla's number within its section and type."""

    def __init__(self, election: ElectionIndex) -> None:
        pb = election.pb
        self.states = {s.id: s.name for s in pb.states}
        self.districts = {d.id: d.name for d in pb.districts}
        self.number: dict[str, int] = {}
        seen: dict[tuple[str, int], int] = {}
        for casilla in election.casillas:
            key = (casilla.section_id, casilla.type)
            seen[key] = seen.get(key, 0) + 1
            self.number[casilla.id] = seen[key]


def _row(
    record: acta_pb2.ActaRecord,
    casilla: CasillaInfo | None,
    option_ids: Sequence[str],
    places: _Places,
    test: bool,
) -> list[str]:
    acta = record.acta
    missing = record.not_counted_reason in _MISSING
    if casilla is None:
        where = [_NOT_APPLICABLE] * 7
    else:
        where = [
            casilla.state_id,
            places.states.get(casilla.state_id, ""),
            casilla.district_id,
            places.districts.get(casilla.district_id, ""),
            casilla.section_id,
            str(places.number[casilla.id]),
            _TYPE_LETTERS.get(casilla.type, ""),
        ]
    figures = {o.option_id: _figure(o.votes, o.mark) for o in acta.option_votes}
    if missing:
        votes = [_NOT_APPLICABLE] * (len(option_ids) + 3)
    else:
        total = sum(o.votes for o in acta.option_votes) + acta.unregistered_votes
        total += acta.null_votes
        votes = [
            *(figures.get(o, _NOT_APPLICABLE) for o in option_ids),
            _figure(acta.unregistered_votes, acta.unregistered_mark),
            _figure(acta.null_votes, acta.null_mark),
            str(total),
        ]
    if casilla is None or casilla.type == election_pb2.CASILLA_TYPE_ESPECIAL:
        nominal = _NOT_APPLICABLE  # special casillas have no nominal list
    else:
        nominal = str(casilla.nominal_list)
    counts = acta.counts
    prov = acta.provenance
    return [
        acta.casilla_id,
        record.acta_id,
        *where,
        *votes,
        nominal,
        _count(counts, "leftover_ballots"),
        _count(counts, "voters"),
        _count(counts, "representatives_voted"),
        _count(counts, "ballots_taken_out"),
        _count(counts, "total_votes_written"),
        observation(record.not_counted_reason),
        "1" if record.counted else "0",
        str(record.revision),
        acta.image_sha256.hex(),
        _time(prov.received_at_centre_time, prov.HasField("received_at_centre_time")),
        _time(prov.captured_time, prov.HasField("captured_time")),
        _time(record.received_time, record.HasField("received_time")),
        _ORIGINS.get(prov.origin, ""),
        _DIGITISATIONS.get(prov.digitisation, ""),
        "1" if test else "0",
    ]


def _summary(cut: VerifiedCut, contest_id: str) -> list[str]:
    national = cut.national()
    found = [c for c in national.contests if c.contest_id == contest_id]
    c = found[0].completeness if found else results_pb2.Completeness()
    return [
        str(c.actas_expected),
        str(c.actas_registered),
        str(c.actas_out_of_catalogue),
        str(c.actas_captured),
        percent_text(c.captured_percent_e4),
        str(c.actas_counted),
        percent_text(c.counted_percent_e4),
        percent_text(c.inconsistent_percent_e4),
        str(c.actas_not_counted),
        str(c.nominal_list_counted),
        str(c.total_votes_with_special),
        str(c.total_votes_without_special),
        percent_text(c.turnout_percent_e4),
    ]


def _cut_line(cut: VerifiedCut, contest_id: str) -> list[str]:
    return [
        "FECHA_HORA_CORTE",
        cut.cut_record.cut_time,
        "CORTE",
        str(cut.cut_number),
        "SHA256_RESULTADOS",
        cut.cut_record.results_sha256.hex(),
        "ELECCION",
        cut.results.election_id,
        "CONTIENDA",
        contest_id,
        "SIMULACRO",
        "SI" if cut.test else "NO",
        "FINAL",
        "SI" if cut.final else "NO",
    ]


def _check_records(cut: VerifiedCut, records: Sequence[acta_pb2.ActaRecord]) -> None:
    if len(records) != cut.acta_records:
        raise ValueError(
            f"records: {len(records)} acta records given, the cut covers {cut.acta_records}"
        )


def write_prep_csv(
    cut: VerifiedCut,
    out: TextIO,
    *,
    election: ElectionIndex,
    contest_id: str,
    records: Sequence[acta_pb2.ActaRecord],
) -> int:
    """Write the PREP file of one contest; returns the number of section B rows.

    Args:
        cut: the verified cut.
        out: a text stream (open files with ``newline=""``).
        election: the cut's definition.
        contest_id: the contest.
        records: the cut's acta records, in log order (:func:`verified_acta_records`).

    Raises:
        ValueError: if ``election`` is not the cut's definition or the records are not as
            many as the cut covers.
        LookupError: if there is no such contest.
    """
    check_election(cut, election)
    _check_records(cut, records)
    contest = election.contest(contest_id)
    option_ids = contest.option_ids
    places = _Places(election)
    latest = _latest(r for r in records if r.acta.contest_id == contest_id)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_cut_line(cut, contest_id))
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerow(_summary(cut, contest_id))
    writer.writerow(record_columns(election, contest_id))
    n = 0
    catalogue = election.casilla_map()
    for casilla in election.casillas:
        record = latest.pop(f"{casilla.id}/{contest_id}", None)
        if record is not None:
            writer.writerow(_row(record, casilla, option_ids, places, cut.test))
            n += 1
    for acta_id in sorted(latest):
        record = latest[acta_id]
        writer.writerow(
            _row(record, catalogue.get(record.acta.casilla_id), option_ids, places, cut.test)
        )
        n += 1
    return n


def write_prep_files(
    cut: VerifiedCut,
    directory: Path,
    *,
    election: ElectionIndex,
    records: Sequence[acta_pb2.ActaRecord],
    contest_ids: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<CONTEST>.csv`` for each contest (all by default) and ``LEEME.txt``.

    The directory is created if needed; files in it of the same names are replaced.

    Raises:
        ValueError: as :func:`write_prep_csv`.
        LookupError: if a contest id is unknown.
        OSError: if the files cannot be written.
    """
    check_election(cut, election)
    _check_records(cut, records)
    ids = list(contest_ids) if contest_ids is not None else list(election.contest_ids)
    for cid in ids:
        election.contest(cid)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for cid in ids:
        path = directory / f"{cid}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            write_prep_csv(cut, out, election=election, contest_id=cid, records=records)
        written.append(path)
    leeme = directory / LEEME_NAME
    leeme.write_bytes(leeme_text(election, ids).encode("utf-8"))
    written.append(leeme)
    return written


def leeme_text(election: ElectionIndex, contest_ids: Sequence[str] | None = None) -> str:
    """The field description of the PREP files (``LEEME.txt``), in Spanish as PREP's.

    Raises:
        LookupError: if a contest id is unknown.
    """
    ids = list(contest_ids) if contest_ids is not None else list(election.contest_ids)
    lines = [
        f"Resultados preliminares verificados: {election.name} ({election.election_id})",
        "",
        "Un archivo por contienda, <CONTIENDA>.csv: UTF-8, separado por comas.",
        "",
        "Renglón 1, el corte: FECHA_HORA_CORTE (UTC, RFC 3339), CORTE (número del corte),",
        "SHA256_RESULTADOS (SHA-256 de los resultados firmados del corte), ELECCION,",
        "CONTIENDA, SIMULACRO (SI: datos de un simulacro, no de la elección) y FINAL",
        "(SI: el último corte de la noche).",
        "",
        "Renglones 2 y 3, sección A: encabezado y valores nacionales de la contienda.",
        "  ACTAS_ESPERADAS: actas que se esperan de las casillas del catálogo.",
        "  ACTAS_REGISTRADAS: actas con registro (capturadas o registradas sin acta).",
        "  ACTAS_FUERA_DE_CATALOGO: actas de casillas que no están en el catálogo.",
        "  ACTAS_CAPTURADAS: actas registradas con sus cifras.",
        "  PORCENTAJE_ACTAS_CAPTURADAS: ACTAS_CAPTURADAS / ACTAS_ESPERADAS.",
        "  ACTAS_CONTABILIZADAS: actas que cuentan en los totales.",
        "  PORCENTAJE_ACTAS_CONTABILIZADAS: ACTAS_CONTABILIZADAS / ACTAS_ESPERADAS.",
        "  PORCENTAJE_ACTAS_CON_INCONSISTENCIAS: actas con inconsistencias / ACTAS_ESPERADAS.",
        "  ACTAS_NO_CONTABILIZADAS: ACTAS_REGISTRADAS - ACTAS_CONTABILIZADAS.",
        "  LISTA_NOMINAL_ACTAS_CONTABILIZADAS: lista nominal de las casillas contabilizadas.",
        "  TOTAL_VOTOS_C_CS: votos de las actas contabilizadas, con casillas especiales.",
        "  TOTAL_VOTOS_S_CS: votos de las actas contabilizadas, sin casillas especiales.",
        "  PORCENTAJE_PARTICIPACION_CIUDADANA: TOTAL_VOTOS_S_CS / LISTA_NOMINAL_ACTAS_",
        "    CONTABILIZADAS (en el corte final, TOTAL_VOTOS_C_CS / la misma lista).",
        "  Los porcentajes llevan cuatro decimales, truncados, como se firmaron.",
        "",
        "Renglón 4, encabezado de la sección B; desde el renglón 5, un renglón por acta",
        "(su última revisión en el corte): las del catálogo en su orden, luego las de",
        "casillas fuera de catálogo por CLAVE_ACTA.",
        "  CLAVE_CASILLA: clave de la casilla. CLAVE_ACTA: <CLAVE_CASILLA>/<CONTIENDA>.",
        "  ID_ENTIDAD, ENTIDAD: clave y nombre de la entidad.",
        "  ID_DISTRITO_FEDERAL, DISTRITO_FEDERAL: clave y nombre del distrito.",
        "  SECCION: clave de la sección. ID_CASILLA: número de la casilla en su sección",
        "    y tipo. TIPO_CASILLA: B básica, C contigua, E extraordinaria, S especial.",
        "  Una columna por opción de la contienda (partido o combinación), con los votos;",
        f"    '{_ILLEGIBLE}': cifra ilegible; '{_BLANK}': cifra vacía; '{_NOT_APPLICABLE}':",
        "    la opción no está en la boleta de la casilla, o no hay acta.",
        "  NO_REGISTRADAS: votos por candidaturas no registradas. NULOS: votos nulos.",
        "  TOTAL_VOTOS_CALCULADO: suma de las cifras del acta.",
        f"  LISTA_NOMINAL: lista nominal de la casilla ('{_NOT_APPLICABLE}' en especiales).",
        "  BOLETAS_SOBRANTES, PERSONAS_VOTARON, REPRESENTANTES_PP_CI, TOTAL_VOTOS_SACADOS,",
        "    TOTAL_VOTOS_ASENTADO: los conteos escritos en el acta, si se capturaron.",
        "  OBSERVACIONES: por qué el acta no se contabiliza (vacío si se contabiliza):",
        *(f"    {words}" for words in _REASON_WORDS.values() if words),
        "  CONTABILIZADA: 1 si el acta cuenta en los totales, 0 si no.",
        "  REVISION: 1 para la primera captura, 2, 3 ... para cada corrección.",
        "  SHA: SHA-256 de la imagen del acta.",
        "  FECHA_HORA_ACOPIO, FECHA_HORA_CAPTURA: acopio y captura (UTC).",
        "  FECHA_HORA_REGISTRO: cuando se registró en la bitácora (UTC).",
        "  ORIGEN: CASILLA o CATD. DIGITALIZACION: ESCANER o MOVIL.",
        "  SIMULACRO: 1 si son datos de un simulacro.",
        "",
        "Opciones por contienda:",
    ]
    for cid in ids:
        contest = election.contest(cid)
        names = {o.id: o.name for o in election.pb.contests[contest.index].options}
        lines.append(f"  {cid} ({contest.name}):")
        for oid in contest.option_ids:
            parties = " + ".join(contest.option_parties[oid]) or "candidatura independiente"
            lines.append(f"    {oid}: {names[oid]} ({parties})")
    return "\n".join(lines) + "\n"
