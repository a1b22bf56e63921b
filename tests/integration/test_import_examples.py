"""``veritally import`` of the files in ``docs/examples/`` into a real ingest
(``veritally serve ingest`` on 127.0.0.1, no Envoy): the documented per-contest layout
(``actas.files``) is read file by file, each file as the contest it is named for; every
acta the loader reads is accepted by ingest and logged with the acta's own counts; each
"sin acta" row is sent as a missing acta's record; an acta without an image digest is
read by the loader and refused by ingest alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from veritally.election import MissingActa, load_acta_rows, load_actas, load_election
from veritally.rpc import aio_channel
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

VERITALLY = [sys.executable, "-m", "veritally.cli"]
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SMALL = EXAMPLES / "small-election" / "election.yaml"
# Upper bounds, in seconds: ingest to start (a small catalogue) and an import to finish.
START_S = 60.0
IMPORT_S = 120.0


@dataclass
class Ingest:
    """A running ``veritally serve ingest`` and its address."""

    target: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def ingest(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Ingest]:
    election: Path = getattr(request, "param", SMALL)
    port_file = tmp_path / "ingest.port"
    with (tmp_path / "ingest.log").open("ab") as log:
        process = subprocess.Popen(
            [
                *(*VERITALLY, "serve", "ingest", "--election", str(election)),
                *("--db", str(tmp_path / "ingest.db"), "--listen", "127.0.0.1:0"),
                *("--port-file", str(port_file), "--single-capture"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_S
        while not port_file.exists():
            assert process.poll() is None, (tmp_path / "ingest.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "ingest did not start"
            time.sleep(0.1)
        yield Ingest(f"127.0.0.1:{int(port_file.read_text())}", process)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _import(*args: str, outcomes: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``veritally import ARGS --quiet --outcomes FILE``: (result, acta ids answered,
    those of missing actas' records left out)."""
    result = subprocess.run(
        [*VERITALLY, "import", *args, "--quiet", "--outcomes", str(outcomes)],
        capture_output=True,
        text=True,
        timeout=IMPORT_S,
        check=False,
    )
    answered = []
    if outcomes.exists():
        lines = [json.loads(line) for line in outcomes.read_text().splitlines()]
        answered = [line["acta_id"] for line in lines if not line["missing"]]
    return result, answered


def test_import_of_the_example_reads_every_per_contest_file_and_ingest_accepts_each_acta(
    ingest: Ingest, tmp_path: Path
) -> None:
    expected = [f"{a.casilla_id}/{a.contest_id}" for a in load_actas(SMALL)]
    result, answered = _import(
        "--election", str(SMALL), "--target", ingest.target, outcomes=tmp_path / "out.jsonl"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == {"ACCEPTED": len(expected)}
    assert sorted(answered) == sorted(expected)
    assert {a.rpartition("/")[2] for a in answered} == {"PRES", "SEN", "DIP"}


def test_import_of_one_per_contest_file_reads_it_as_the_contest_it_is_named_for(
    ingest: Ingest, tmp_path: Path
) -> None:
    files = load_election(SMALL)
    senate = [a for a in load_actas(files) if a.contest_id == "SEN"]
    csv_path = SMALL.parent / "actas_sen.csv"
    result, answered = _import(
        str(csv_path),
        *("--election", str(SMALL), "--target", ingest.target),
        outcomes=tmp_path / "out.jsonl",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["status"] == {"ACCEPTED": len(senate)}
    assert sorted(answered) == sorted(f"{a.casilla_id}/SEN" for a in senate)


PREP = EXAMPLES / "prep-2024" / "election.yaml"


async def _logged_actas(target: str) -> dict[str, acta_pb2.Acta]:
    """Every acta in ingest's log, by acta id."""
    async with aio_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        leaves = [
            acta_pb2.LogLeaf.FromString(leaf)
            async for page in stub.StreamRecords(ingest_pb2.StreamRecordsRequest())
            for leaf in page.leaves
        ]
    return {leaf.acta_record.acta_id: leaf.acta_record.acta for leaf in leaves}


@pytest.mark.parametrize("ingest", [PREP], indirect=True)
def test_import_of_the_prep_example_logs_each_acta_with_its_own_counts(
    ingest: Ingest, tmp_path: Path
) -> None:
    expected = {f"{a.casilla_id}/{a.contest_id}": a for a in load_actas(PREP)}
    missing = [r for r in load_acta_rows(PREP) if isinstance(r, MissingActa)]
    assert len(missing) == 5  # the example's "sin acta" rows
    result, answered = _import(
        "--election", str(PREP), "--target", ingest.target, outcomes=tmp_path / "out.jsonl"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == {"ACCEPTED": len(expected)}
    assert sorted(answered) == sorted(expected)
    # Each "sin acta" row went to RecordMissingActa. Without Envoy the import carries no
    # capture centre's certificate, so ingest refuses every record: counted as rejected,
    # and the import goes on (through the edge they are logged: tests/e2e).
    assert summary["answered"] == len(expected) + len(missing)
    assert summary["missing"] == {
        "status": {"REJECTED": len(missing)},
        "rejected": {"PERMISSION_DENIED": len(missing)},
    }
    logged = asyncio.run(_logged_actas(ingest.target))
    assert logged.keys() == expected.keys()
    for acta_id, acta in expected.items():
        assert logged[acta_id].counts == acta.counts
        assert logged[acta_id].option_votes == acta.option_votes
    # The file's own counts reached the log: leftover ballots, voters, the written total.
    first = logged["010101B0100/PRES"].counts
    assert (first.leftover_ballots, first.voters, first.total_votes_written) == (249, 363, 363)
    # A count the file writes as "-" is absent, not 0.
    assert not logged["010101C0100/SEN"].counts.HasField("leftover_ballots")


def test_import_of_actas_without_an_image_digest_has_ingest_refuse_only_those(
    ingest: Ingest, tmp_path: Path
) -> None:
    copy = tmp_path / "example"
    shutil.copytree(SMALL.parent, copy)
    sen = copy / "actas_sen.csv"
    lines = sen.read_text(encoding="utf-8").splitlines(keepends=True)
    digest = lines[2].split(",")[13]
    assert len(digest) == 64  # the SHA column of the first acta row
    lines[2] = lines[2].replace(digest, "")
    sen.write_text("".join(lines), encoding="utf-8")
    expected = list(load_actas(copy / "election.yaml", sen))
    result, _ = _import(
        str(sen),
        *("--election", str(copy / "election.yaml"), "--target", ingest.target),
        outcomes=tmp_path / "out.jsonl",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == {"ACCEPTED": len(expected) - 1, "REJECTED": 1}
    assert summary["rejected"] == {"INVALID_ARGUMENT image_sha256": 1}
