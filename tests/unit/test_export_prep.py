"""PREP's own CSV layout from a verified cut: the cut line, section A (PREP's header),
section B (one row per acta from the verified log), the LEEME, the rehearsal mark, the
same bytes for everyone, and a round trip through the project's own acta loader."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from pathlib import Path

import pytest

from tests.unit.export_fake import FederalPublisher, night, verified_cut
from veritally.election.generate import generate
from veritally.election.loader import MissingActa, load_acta_rows, load_actas, load_election
from veritally_client import BadProofError, VerifiedCut
from veritally_client._export import percent_text
from veritally_client._export_prep import (
    RECORD_COLUMNS_AFTER_OPTIONS,
    RECORD_COLUMNS_BEFORE_OPTIONS,
    SUMMARY_COLUMNS,
    leeme_text,
    observation,
    record_columns,
    verified_acta_records,
    write_prep_csv,
    write_prep_files,
)
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._tally import Tally

R = acta_pb2


def _pages(pub: FederalPublisher, cut: VerifiedCut, size: int = 4) -> list[list[bytes]]:
    leaves = pub.leaves[: cut.tree_size]
    return [leaves[i : i + size] for i in range(0, len(leaves), size)]


def _records(pub: FederalPublisher, cut: VerifiedCut) -> list[acta_pb2.ActaRecord]:
    return verified_acta_records(cut, election=pub.election, pages=_pages(pub, cut))


def _export(pub: FederalPublisher, cut: VerifiedCut, contest_id: str) -> list[list[str]]:
    out = io.StringIO()
    write_prep_csv(
        cut, out, election=pub.election, contest_id=contest_id, records=_records(pub, cut)
    )
    return list(csv.reader(io.StringIO(out.getvalue())))


def _section_b(lines: list[list[str]]) -> list[dict[str, str]]:
    header = lines[3]
    return [dict(zip(header, row, strict=True)) for row in lines[4:]]


def test_file_opens_with_the_cut_line_and_prep_header_of_the_nation(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    lines = _export(pub, cut, "PRES")
    line = dict(zip(lines[0][::2], lines[0][1::2], strict=True))
    assert line == {
        "FECHA_HORA_CORTE": cut.cut_record.cut_time,
        "CORTE": "2",
        "SHA256_RESULTADOS": cut.cut_record.results_sha256.hex(),
        "ELECCION": "mx-mini",
        "CONTIENDA": "PRES",
        "SIMULACRO": "NO",
        "FINAL": "NO",
    }
    assert tuple(lines[1]) == SUMMARY_COLUMNS
    summary = dict(zip(lines[1], lines[2], strict=True))
    c = next(k for k in cut.national().contests if k.contest_id == "PRES").completeness
    assert summary == {
        "ACTAS_ESPERADAS": str(c.actas_expected),
        "ACTAS_REGISTRADAS": str(c.actas_registered),
        "ACTAS_FUERA_DE_CATALOGO": "1",
        "ACTAS_CAPTURADAS": str(c.actas_captured),
        "PORCENTAJE_ACTAS_CAPTURADAS": percent_text(c.captured_percent_e4),
        "ACTAS_CONTABILIZADAS": str(c.actas_counted),
        "PORCENTAJE_ACTAS_CONTABILIZADAS": percent_text(c.counted_percent_e4),
        "PORCENTAJE_ACTAS_CON_INCONSISTENCIAS": percent_text(c.inconsistent_percent_e4),
        "ACTAS_NO_CONTABILIZADAS": str(c.actas_not_counted),
        "LISTA_NOMINAL_ACTAS_CONTABILIZADAS": str(c.nominal_list_counted),
        "TOTAL_VOTOS_C_CS": str(c.total_votes_with_special),
        "TOTAL_VOTOS_S_CS": str(c.total_votes_without_special),
        "PORCENTAJE_PARTICIPACION_CIUDADANA": percent_text(c.turnout_percent_e4),
    }
    assert tuple(lines[3]) == record_columns(pub.election, "PRES")


def test_section_b_has_one_row_per_acta_in_prep_words(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    records = _records(pub, cut)
    corrected_id = next(r.acta_id for r in records if r.revision == 2)
    contest_id = corrected_id.rsplit("/", 1)[1]
    rows = {r["CLAVE_ACTA"]: r for r in _section_b(_export(pub, cut, contest_id))}
    mine = [r for r in records if r.acta.contest_id == contest_id]
    assert set(rows) == {r.acta_id for r in mine}  # the last revision of each, once
    corrected = rows[corrected_id]
    assert corrected["REVISION"] == "2"
    assert (corrected["ID_ENTIDAD"], corrected["ENTIDAD"]) == ("01", "Uno")
    assert (corrected["ID_DISTRITO_FEDERAL"], corrected["DISTRITO_FEDERAL"]) == ("01-02", "d2")
    assert (corrected["SECCION"], corrected["ID_CASILLA"], corrected["TIPO_CASILLA"]) == (
        "01-0002",
        "1",
        "B",
    )
    assert corrected["LISTA_NOMINAL"] == "300"
    last = [r for r in mine if r.acta_id == corrected_id][-1]
    assert corrected["SHA"] == last.acta.image_sha256.hex()
    figures = [int(corrected[o.option_id]) for o in last.acta.option_votes]
    figures += [int(corrected["NO_REGISTRADAS"]), int(corrected["NULOS"])]
    assert figures == [o.votes for o in last.acta.option_votes] + [
        last.acta.unregistered_votes,
        last.acta.null_votes,
    ]
    assert corrected["TOTAL_VOTOS_CALCULADO"] == str(sum(figures))
    assert corrected["PERSONAS_VOTARON"] == str(last.acta.counts.voters)
    assert corrected["TOTAL_VOTOS_SACADOS"] == "-"  # not captured
    assert (corrected["OBSERVACIONES"], corrected["CONTABILIZADA"]) == ("", "1")

    pres = _section_b(_export(pub, cut, "PRES"))
    special = next(r for r in pres if r["TIPO_CASILLA"] == "S")
    assert special["LISTA_NOMINAL"] == "-"
    assert pres[-1]["CLAVE_ACTA"] == "99-9999-B/PRES"  # after the catalogue's actas
    outside = pres[-1]
    assert outside["OBSERVACIONES"] == "Fuera de catálogo"
    assert (outside["CONTABILIZADA"], outside["ID_ENTIDAD"]) == ("0", "-")
    exceeds = [r for r in pres if r["OBSERVACIONES"] == "Excede lista nominal"]
    assert [r["CONTABILIZADA"] for r in exceeds] == ["0"]


def test_missing_acta_illegible_figure_and_options_off_the_ballot(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    sen = _section_b(_export(pub, cut, "SEN"))
    missing = next(r for r in sen if r["OBSERVACIONES"].startswith("Sin acta"))
    assert missing["OBSERVACIONES"] == "Sin acta por paquete no entregado"
    assert {missing[o] for o in pub.election.option_ids("SEN")} == {"-"}
    assert (missing["NULOS"], missing["TOTAL_VOTOS_CALCULADO"], missing["SHA"]) == ("-", "-", "")
    # SEN-02 has no PAN_PRI on its ballot.
    state_two = [r for r in sen if r["ID_ENTIDAD"] == "02" and r["CONTABILIZADA"] == "1"]
    assert state_two
    assert {r["PAN_PRI"] for r in state_two} == {"-"}
    assert all(r["PAN"].isdigit() for r in state_two)
    dip = _section_b(_export(pub, cut, "DIP"))
    assert [r for r in dip if "Ilegible" in r.values()]


def test_rehearsal_files_say_so_on_the_cut_line_and_in_every_row(tmp_path: Path) -> None:
    pub = night(test=True)
    cut = verified_cut(pub, tmp_path)
    lines = _export(pub, cut, "DIP")
    assert lines[0][lines[0].index("SIMULACRO") + 1] == "SI"
    assert {r["SIMULACRO"] for r in _section_b(lines)} == {"1"}
    real = night()
    lines = _export(real, verified_cut(real, tmp_path / "real"), "DIP")
    assert {r["SIMULACRO"] for r in _section_b(lines)} == {"0"}


def test_two_clients_export_the_same_files_byte_for_byte(tmp_path: Path) -> None:
    pub = night(test=True)
    digests = []
    for name in ("a", "b"):
        cut = verified_cut(pub, tmp_path / f"state-{name}")
        written = write_prep_files(
            cut, tmp_path / f"out-{name}", election=pub.election, records=_records(pub, cut)
        )
        assert [p.name for p in written] == ["PRES.csv", "SEN.csv", "DIP.csv", "LEEME.txt"]
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in written])
    assert digests[0] == digests[1]


def test_leeme_describes_every_column_and_every_observation() -> None:
    election = night().election
    text = leeme_text(election)
    for column in (*SUMMARY_COLUMNS, *RECORD_COLUMNS_BEFORE_OPTIONS, *RECORD_COLUMNS_AFTER_OPTIONS):
        assert column in text
    for reason in R.NotCountedReason.values():
        assert observation(reason) in text
    assert "CI_01: CI_01 (candidatura independiente)" in text


def test_records_from_a_tampered_leaf_are_refused(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    pages = _pages(pub, cut)
    leaf = bytearray(pages[1][0])
    leaf[-1] ^= 1
    pages[1][0] = bytes(leaf)
    with pytest.raises(BadProofError):
        verified_acta_records(cut, election=pub.election, pages=pages)


def test_records_of_another_cut_are_refused(tmp_path: Path) -> None:
    pub = night()
    first = verified_cut(pub, tmp_path, number=1)
    latest = verified_cut(pub, tmp_path)
    records = _records(pub, latest)
    with pytest.raises(ValueError, match="records"):
        write_prep_csv(
            first, io.StringIO(), election=pub.election, contest_id="PRES", records=records
        )


# -- round trip through the project's loader ----------------------------------------------

MAPPING = """\
format: veritally-election/1
id: mx-mini
name: Mini federal
parties: [{id: PAN}, {id: PRI}, {id: MORENA}, {id: PT}, {id: MC}]
contests:
  - id: PRES
    options: &ballot
      - {id: PAN}
      - {id: PRI}
      - {id: MORENA}
      - {id: PT}
      - {id: MC}
      - {id: PAN_PRI, parties: [PAN, PRI]}
      - {id: MORENA_PT, parties: [MORENA, PT]}
  - {id: SEN, options: *ballot}
  - {id: DIP, options: *ballot}
states: [{id: "01", name: Uno}, {id: "02", name: Dos}]
districts:
  - {id: "01-01", state: "01"}
  - {id: "01-02", state: "01"}
  - {id: "02-01", state: "02"}
casillas:
  file: catalogue.csv
  columns:
    casilla_id: CASILLA
    section_id: SECCION
    district_id: DISTRITO
    type: TIPO
    nominal_list: LISTA_NOMINAL
    ballot_limit: BOLETAS
actas:
  files: {PRES: PRES.csv, SEN: SEN.csv, DIP: DIP.csv}
  skip_lines: 3
  columns:
    casilla_id: CLAVE_CASILLA
    unregistered_votes: NO_REGISTRADAS
    null_votes: NULOS
    image_sha256: SHA
    captured_time: FECHA_HORA_CAPTURA
  marks: {illegible: [Ilegible], blank: [Sin dato, "-"]}
"""

REASONS = {observation(v): v for v in R.NotCountedReason.values()}
MISSING = {
    R.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
    R.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
    R.NOT_COUNTED_REASON_NO_ENVELOPE,
    R.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
}


def _catalogue(pub: FederalPublisher, path: Path) -> None:
    letters = {1: "B", 2: "C", 3: "E", 4: "S"}
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["CASILLA", "SECCION", "DISTRITO", "TIPO", "LISTA_NOMINAL", "BOLETAS"])
        for c in pub.election.casillas:
            row = [c.id, c.section_id, c.district_id, letters[c.type], c.nominal_list]
            writer.writerow([*row, c.ballot_limit])


def test_prep_files_load_back_through_the_loader_to_the_signed_results(tmp_path: Path) -> None:
    # The loader refuses casillas outside its catalogue, so this night has none.
    pub = night(outside=False, final=True)
    cut = verified_cut(pub, tmp_path / "state")
    out = tmp_path / "prep"
    write_prep_files(cut, out, election=pub.election, records=_records(pub, cut))
    (out / "election.yaml").write_text(MAPPING, encoding="utf-8")
    _catalogue(pub, out / "catalogue.csv")
    # The YAML format has no races yet: its mapping is read with the cut's own definition.
    files = dataclasses.replace(load_election(out / "election.yaml"), index=pub.election)
    actas = list(load_actas(files))
    rows = []
    for contest_id in pub.election.contest_ids:
        with (out / f"{contest_id}.csv").open(encoding="utf-8", newline="") as handle:
            rows += _section_b(list(csv.reader(handle)))
    assert len(actas) == len(rows) == cut.acta_records - 1  # one acta was corrected
    tally = Tally(pub.election)
    for sequence, (acta, row) in enumerate(zip(actas, rows, strict=True)):
        reason = REASONS[row["OBSERVACIONES"]]
        race = pub.election.race_of(acta.casilla_id, acta.contest_id)
        assert race is not None
        # The loader reads a column for every option of the contest; the acta carries
        # those of its race ("-" in the others), or none when there is no acta.
        kept = [o for o in acta.option_votes if o.option_id in race.option_ids]
        del acta.option_votes[:]
        if reason in MISSING:
            acta = acta_pb2.Acta(casilla_id=acta.casilla_id, contest_id=acta.contest_id)
        else:
            acta.option_votes.extend(kept)
        tally.apply(
            acta_pb2.ActaRecord(
                acta_id=row["CLAVE_ACTA"],
                revision=1,
                acta=acta,
                counted=row["CONTABILIZADA"] == "1",
                not_counted_reason=reason,
                sequence=sequence,
            )
        )
    # Every unit's totals as signed; only the count of records differs (the files hold
    # the last revision of the corrected acta, the log both).
    recounted = tally.results(final=cut.final)
    assert list(recounted.units) == list(cut.results.units)
    assert recounted.acta_records == cut.acta_records - 1


PREP_ACTAS = """\
actas:
  files: {PRES: PRES.csv, SEN: SEN.csv, DIP: DIP.csv}
  skip_lines: 3
  outside_catalogue: accept
  columns:
    casilla_id: CLAVE_CASILLA
    unregistered_votes: NO_REGISTRADAS
    null_votes: NULOS
    image_sha256: SHA
    captured_time: FECHA_HORA_CAPTURA
    leftover_ballots: BOLETAS_SOBRANTES
    voters: PERSONAS_VOTARON
    representatives_voted: REPRESENTANTES_PP_CI
    ballots_taken_out: TOTAL_VOTOS_SACADOS
    total_votes_written: TOTAL_VOTOS_ASENTADO
  marks: {illegible: [Ilegible], blank: [Sin dato, "-"]}
  missing:
    column: OBSERVACIONES
    reasons:
      Sin acta por paquete no entregado: PACKAGE_NOT_DELIVERED
      Sin acta por casilla no instalada: CASILLA_NOT_INSTALLED
      Sin acta por paquete entregado sin sobre PREP: NO_ENVELOPE
      Sin acta por contingencia en urna electrónica: E_BALLOT_BOX_CONTINGENCY
"""


def test_prep_files_of_the_generated_federal_night_load_back_with_its_own_definition(
    tmp_path: Path,
) -> None:
    """The generator's 333-race definition, unchanged but for its actas: mapping, reads
    PREP's files back: the same definition digest, every acta of every race (the one
    outside the catalogue too), the "sin acta" row as a missing acta with its reason
    (``actas.missing`` with the export's texts), and, recounted, the signed results unit
    by unit."""
    generated = tmp_path / "generated"
    generate(seed=5, casillas=400, out_dir=generated)  # every district has a casilla
    definition = (generated / "election.yaml").read_text(encoding="utf-8")
    index = load_election(generated / "election.yaml").index
    assert len(index.races) == 333
    pub = FederalPublisher(election=index)
    pub.add_actas(40)
    pub.make_cut()
    pub.correct(pub.add_actas(1)[0])
    pub.not_counted(R.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST)
    pub.not_counted(R.NOT_COUNTED_REASON_NO_ENVELOPE)
    pub.outside(casilla_id="99-0999-B1", contest_id="SEN")
    pub.add_actas(200)
    pub.make_cut(final=True)
    cut = verified_cut(pub, tmp_path / "state")
    out = tmp_path / "prep"
    write_prep_files(cut, out, election=index, records=_records(pub, cut))
    for name in ("casillas.csv",):
        (out / name).write_bytes((generated / name).read_bytes())
    mapping = definition[: definition.index("\nactas:\n") + 1] + PREP_ACTAS
    (out / "election.yaml").write_text(mapping, encoding="utf-8")

    files = load_election(out / "election.yaml")
    assert files.index.definition_sha256 == index.definition_sha256
    loaded = list(load_acta_rows(files))
    rows = []
    for contest_id in index.contest_ids:
        with (out / f"{contest_id}.csv").open(encoding="utf-8", newline="") as handle:
            rows += _section_b(list(csv.reader(handle)))
    assert len(loaded) == len(rows) == cut.acta_records - 1  # one acta was corrected
    assert [i.reason for i in loaded if isinstance(i, MissingActa)] == [
        R.NOT_COUNTED_REASON_NO_ENVELOPE
    ]
    tally = Tally(index)
    for sequence, (item, row) in enumerate(zip(loaded, rows, strict=True)):
        assert f"{item.casilla_id}/{item.contest_id}" == row["CLAVE_ACTA"]
        reason = REASONS[row["OBSERVACIONES"]]
        if isinstance(item, MissingActa):
            # A "sin acta" row (actas.missing): the missing acta with the row's reason,
            # which ingest records with no figures.
            assert item.reason == reason
            acta = acta_pb2.Acta(casilla_id=item.casilla_id, contest_id=item.contest_id)
        else:
            assert reason not in MISSING
            acta = item
        tally.apply(
            acta_pb2.ActaRecord(
                acta_id=row["CLAVE_ACTA"],
                revision=1,
                acta=acta,
                counted=row["CONTABILIZADA"] == "1",
                not_counted_reason=reason,
                sequence=sequence,
            )
        )
    recounted = tally.results(final=cut.final)
    assert list(recounted.units) == list(cut.results.units)
    assert recounted.units[0].contests[1].completeness.actas_out_of_catalogue == 1
