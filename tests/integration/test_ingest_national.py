"""A generated national election (~160,000 casillas, 3 contests, ~470,000 actas) imported
through the batch API (``veritally import`` into ``veritally serve ingest``, followed by
``veritally serve aggregation``): the national and state totals served by aggregation
equal an independent recount of the CSV, done here with the csv module and PREP's rules
written out simply. Takes a few minutes: marked slow."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from veritally.rpc import aio_channel
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    aggregation_pb2,
    aggregation_pb2_grpc,
    results_pb2,
)

VERITALLY = [sys.executable, "-m", "veritally.cli"]
SEED = 1
# The national size; VERITALLY_NATIONAL_CASILLAS sizes it down for a quick local run.
CASILLAS = int(os.environ.get("VERITALLY_NATIONAL_CASILLAS", "160000"))
# Upper bounds, in seconds: a service to start (it loads the whole catalogue), the import,
# and aggregation catching up with the log.
START_S = 120.0
IMPORT_S = 600.0
CATCH_UP_S = 300.0
MARKS = {"Ilegible": "illegible", "Sin dato": "blank"}

# (unit, contest) -> {option id: votes, for every option on the ballot of some race of
# the unit} and the tail figures under the keys of TAIL.
Totals = dict[tuple[str, str], dict[str, int]]
TAIL = (
    "#unregistered",
    "#null",
    "#captured",
    "#counted",
    "#exceeds_list",
    "#exceeds_ballots",
    "#all_illegible",
    "#all_blank",
)
NOT_ON_BALLOT = "-"  # the cell of an option that is not on the ballot of the row's race


def _recount(election_dir: Path) -> tuple[Totals, int, int]:
    """(unit, contest) -> votes per option (the options on the ballot of any race in the
    unit, read from the rows: a ``-`` cell is a box the race's ballot does not have),
    unregistered, null, captured, counted, not counted: exceeds the list, exceeds the
    ballots, all illegible, all blank; and the number of acta rows and of rows PREP's
    rules reject outright."""
    definition = yaml.safe_load((election_dir / "election.yaml").read_text(encoding="utf-8"))
    options = {c["id"]: [o["id"] for o in c["options"]] for c in definition["contests"]}
    limits: dict[str, tuple[str, int, bool]] = {}
    with (election_dir / "casillas.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):

            def number(column: str, row: dict[str, str] = row) -> int:
                value = row[column].strip()
                return 0 if value in ("", "-") else int(value)

            if row["TIPO_CASILLA"] == "S":
                limit = number("BOLETAS")
            else:
                limit = number("LISTA_NOMINAL") + number("REPRESENTANTES")
            limits[row["CLAVE_CASILLA"]] = (row["ID_ENTIDAD"], limit, row["TIPO_CASILLA"] == "S")
    totals: Totals = defaultdict(lambda: dict.fromkeys(TAIL, 0))
    rows = rejected = 0
    with (election_dir / "actas.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows += 1
            contest = row["CONTIENDA"]
            if row["CLAVE_CASILLA"] not in limits or contest not in options:
                rejected += 1
                continue
            state, limit, special = limits[row["CLAVE_CASILLA"]]
            ballot = [o for o in options[contest] if row[o].strip() != NOT_ON_BALLOT]
            columns = [*ballot, "NO_REGISTRADOS", "NULOS"]
            keys = [*ballot, "#unregistered", "#null"]
            cells = [row[c].strip() for c in columns]
            marks = [MARKS.get(c) for c in cells]
            figures = [0 if m else int(c) for c, m in zip(cells, marks, strict=True)]
            for unit in ("", state):
                t = totals[(unit, contest)]
                for option in ballot:
                    t.setdefault(option, 0)
                t["#captured"] += 1
                if all(m == "illegible" for m in marks):
                    t["#all_illegible"] += 1
                elif all(m == "blank" for m in marks):
                    t["#all_blank"] += 1
                elif sum(figures) > limit:
                    t["#exceeds_ballots" if special else "#exceeds_list"] += 1
                else:
                    t["#counted"] += 1
                    for key, v in zip(keys, figures, strict=True):
                        t[key] += v
    return dict(totals), rows, rejected


def _served(results: results_pb2.Results) -> Totals:
    reason_key = {
        acta_pb2.NotCountedReason.Value("NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST"): "#exceeds_list",
        acta_pb2.NotCountedReason.Value("NOT_COUNTED_REASON_EXCEEDS_BALLOTS"): "#exceeds_ballots",
        acta_pb2.NotCountedReason.Value("NOT_COUNTED_REASON_ALL_ILLEGIBLE"): "#all_illegible",
        acta_pb2.NotCountedReason.Value("NOT_COUNTED_REASON_ALL_BLANK"): "#all_blank",
    }
    out: Totals = {}
    for unit in results.units:
        if unit.level not in (results_pb2.LEVEL_NATIONAL, results_pb2.LEVEL_STATE):
            continue
        for ct in unit.contests:
            entry = dict.fromkeys(TAIL, 0)
            entry.update({o.option_id: o.votes for o in ct.options})
            entry["#unregistered"] = ct.unregistered_votes
            entry["#null"] = ct.null_votes
            c = ct.completeness
            entry["#captured"] = c.actas_captured
            entry["#counted"] = c.actas_counted
            for nc in c.not_counted:
                entry[reason_key[nc.reason]] = nc.actas
            if c.actas_captured:
                out[(unit.unit_id, ct.contest_id)] = entry
    return out


def _serve(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen([*VERITALLY, "serve", *argv], stdout=f, stderr=subprocess.STDOUT)


def _port(path: Path, child: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_S
    while not path.exists():
        assert child.poll() is None, "service exited"
        assert time.monotonic() < deadline, "service did not start"
        time.sleep(0.1)
    return int(path.read_text())


async def _blob(port: int) -> aggregation_pb2.GetResultsBlobResponse:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        response: aggregation_pb2.GetResultsBlobResponse = await (
            aggregation_pb2_grpc.AggregationServiceStub(channel).GetResultsBlob(
                aggregation_pb2.GetResultsBlobRequest()
            )
        )
        return response


@pytest.mark.slow
def test_national_import_totals_equal_an_independent_recount_of_the_csv(
    tmp_path: Path,
) -> None:
    election = tmp_path / "election"
    subprocess.run(
        [
            *VERITALLY,
            "generate",
            *("--seed", str(SEED), "--casillas", str(CASILLAS), "--out", str(election)),
            # One client without a capture operator's certificate imports everything:
            # the definition assigns no casilla to a centre (assignments are tested in
            # test_ingest_service.py and through Envoy in tests/e2e/test_stack.py).
            *("--capture-centres", "0"),
        ],
        check=True,
        capture_output=True,
    )
    yaml_path = str(election / "election.yaml")
    common = ["--election", yaml_path, "--listen", "127.0.0.1:0"]
    ingest = _serve(
        [
            *("ingest", *common, "--db", str(tmp_path / "ingest.db"), "--single-capture"),
            *("--port-file", str(tmp_path / "ingest.port")),
        ],
        tmp_path / "ingest.log",
    )
    aggregation: subprocess.Popen[bytes] | None = None
    try:
        ingest_port = _port(tmp_path / "ingest.port", ingest)
        aggregation = _serve(
            [
                *("aggregation", *common, "--db", str(tmp_path / "agg.db")),
                *("--ingest", f"127.0.0.1:{ingest_port}"),
                *("--port-file", str(tmp_path / "agg.port")),
            ],
            tmp_path / "agg.log",
        )
        agg_port = _port(tmp_path / "agg.port", aggregation)
        started = time.monotonic()
        result = subprocess.run(
            [
                *(*VERITALLY, "import", str(election / "actas.csv"), "--election", yaml_path),
                *("--target", f"127.0.0.1:{ingest_port}", "--quiet"),
            ],
            capture_output=True,
            timeout=IMPORT_S,
            check=False,
        )
        import_seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout)
        expected, rows, rejected = _recount(election)
        assert summary["answered"] == rows
        assert sum(summary["rejected"].values()) == rejected
        accepted = summary["status"]["ACCEPTED"]
        assert accepted == rows - rejected

        deadline = time.monotonic() + CATCH_UP_S
        blob = asyncio.run(_blob(agg_port))
        while blob.acta_records < accepted and time.monotonic() < deadline:
            time.sleep(1.0)
            blob = asyncio.run(_blob(agg_port))
        assert blob.acta_records == accepted
        served = _served(results_pb2.Results.FromString(blob.results))
        assert served == expected
        assert {unit for unit, _ in served} == {"", *(f"{i:02d}" for i in range(1, 33))}
        print(f"\nimported {rows} actas in {import_seconds:.1f} s")
    finally:
        for child in (aggregation, ingest):
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait(timeout=60)
