"""The JSON view of a federal night through the real stack, read with curl.

A generated federal night (1,000 casillas, 333 races: the national night's shape and its
results' size) goes in through Envoy in three stages and is closed by an operator, so
its cuts carry growing, then final, figures. For every cut of the night a media outlet
GETs ``/v1/cuts/<n>/view`` from the REST listener over HTTP/2 with its certificate, as
curl does, and the SDK verifies the signed bytes that JSON carries (through a transport
that reads the cuts from the JSON view and the proofs over gRPC): every name, vote,
share and completeness figure of the JSON equals the SDK's verified named results of the
same cut, and ``/v1/cuts/<n>`` answers the same signed cut. Every answer is above what
the transcoder held before it had a limit of its own (64 KiB on HTTP/2, 1 MiB on
HTTP/1.1), where each one was answered HTTP 500.
The curl commands of the docs run against the same night.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests.conftest import REPO_ROOT
from tests.http_support import CurlAnswer, curl_get
from tests.night_support import close_night
from tests.view_support import json_race, sdk_race
from veritally.election import load_actas, load_election
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import (
    Client,
    ClientConfig,
    TlsCredentials,
    Transport,
    TransportError,
    VerifiedCut,
    load_trust_root,
)
from veritally_client._transport import GrpcTransport
from veritally_client.protocol.pb import (
    acta_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    log_pb2,
    publication_pb2,
    results_pb2,
)

pytestmark = [pytest.mark.e2e]

CASILLAS = 1_000  # ~2,950 actas; the results of 333 races are a national night's size
SEED = 4
STAGES = 3
INTERVAL_S = 1.0
CALL_TIMEOUT_S = 30.0
WAIT_S = 90.0
BATCH = 250
CONFIG = ClientConfig(max_checkpoint_age=300.0)
# What the transcoder held before it had a limit: the HTTP/2 stream's window and the
# HTTP/1.1 connection's buffer (bytes of the gRPC answer).
OLD_HTTP2_LIMIT = 64 * 1024
OLD_HTTP1_LIMIT = 1024 * 1024
LEVELS = {"LEVEL_NATIONAL": "national", "LEVEL_STATE": "state", "LEVEL_DISTRICT": "district"}


@dataclass
class Night:
    stack: Stack
    final_cut: int

    def get(self, path: str, *, who: str = "outlet-01", http: str = "2") -> CurlAnswer:
        tls = self.stack.tls(who)
        url = f"https://{self.stack.endpoints.rest}{path}"
        return curl_get(url, ca=tls.ca, cert=tls.cert, key=tls.key, http=http)

    def json(self, path: str) -> dict[str, Any]:
        answer = self.get(path)
        assert (answer.status, answer.http_version) == (200, "2"), answer.body[:300]
        document: dict[str, Any] = json.loads(answer.body)
        return document


def _submit(stack: Stack, who: str, actas: list[acta_pb2.Acta]) -> int:
    tls = stack.tls(who)
    with grpc.secure_channel(stack.endpoints.edge, tls.channel_credentials()) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        accepted = 0
        for start in range(0, len(actas), BATCH):
            request = ingest_pb2.SubmitActasRequest(actas=actas[start : start + BATCH])
            response = stub.SubmitActas(iter([request]), timeout=CALL_TIMEOUT_S)
            accepted += sum(
                o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED for o in response.outcomes
            )
    return accepted


def _wait_for(stack: Stack, state_dir: Path, done: Callable[[VerifiedCut], bool]) -> VerifiedCut:
    deadline = time.monotonic() + WAIT_S
    with stack.media_client("outlet-02", state_dir=state_dir, config=CONFIG) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(TransportError):
                cut = client.latest()
                if done(cut):
                    return cut
            time.sleep(0.2)
    raise AssertionError("the expected cut did not come")


def _covering(records: int) -> Callable[[VerifiedCut], bool]:
    return lambda cut: cut.acta_records == records


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    state = StateDir(tmp_path_factory.mktemp("json-view"))
    Bootstrap(casillas=CASILLAS, seed=SEED).ensure(state)
    waits = tmp_path_factory.mktemp("waits")
    with Stack(
        state, base_port=None, drain_seconds=0.5, interval_s=INTERVAL_S, single_capture=True
    ) as stack:
        actas = list(load_actas(load_election(state.election_yaml), state.actas_csv))
        accepted = 0
        for stage in range(STAGES):
            by_centre: dict[str, list[acta_pb2.Acta]] = defaultdict(list)
            for acta in actas[stage::STAGES]:
                by_centre[acta.provenance.capture_centre_id].append(acta)
            for centre, mine in sorted(by_centre.items()):
                accepted += _submit(stack, f"{centre}/op-1", mine)
            _wait_for(stack, waits / str(stage), _covering(accepted))
        closed = close_night(stack, "ops-01", timeout_s=WAIT_S)
        assert closed.returncode == 0, closed.stderr
        final = _wait_for(stack, waits / "final", lambda c: c.final)
        assert final.acta_records == accepted == len(actas)
        yield Night(stack=stack, final_cut=final.cut_number)


@dataclass
class JsonViewTransport:
    """The SDK's port to the publisher, with every signed cut taken from the JSON view
    (the base64 fields of its ``cut``) and the rest (proofs, definition, trust root) over
    gRPC: the SDK then verifies exactly the bytes a reader of the JSON holds."""

    night: Night
    grpc: GrpcTransport
    documents: dict[int, dict[str, Any]] = field(default_factory=dict)

    def _cut(self, path: str) -> log_pb2.SignedCut:
        document = self.night.json(path)
        self.documents[int(document["view"]["cut_number"])] = document
        return json_format.ParseDict(document["cut"], log_pb2.SignedCut())

    def get_latest_cut(self) -> log_pb2.SignedCut:
        return self._cut("/v1/cuts/latest/view")

    def get_latest_cut_since(self, verified_tree_size: int) -> publication_pb2.GetLatestCutResponse:
        # The JSON view serves whole cuts only: always correct (see Transport).
        return publication_pb2.GetLatestCutResponse(cut=self.get_latest_cut())

    def get_cut(self, cut_number: int) -> log_pb2.SignedCut:
        return self._cut(f"/v1/cuts/{cut_number}/view")

    def watch_cuts(
        self, after_cut_number: int, *, idle_timeout: float
    ) -> Iterator[log_pb2.SignedCut]:
        return self.grpc.watch_cuts(after_cut_number, idle_timeout=idle_timeout)

    def get_consistency_proof(self, from_size: int, to_size: int) -> list[bytes]:
        return self.grpc.get_consistency_proof(from_size, to_size)

    def get_inclusion_proof(
        self, acta_id: str, revision: int, tree_size: int
    ) -> tuple[bytes, log_pb2.InclusionProof]:
        return self.grpc.get_inclusion_proof(acta_id, revision, tree_size)

    def get_leaves(self, start: int, count: int) -> list[bytes]:
        return self.grpc.get_leaves(start, count)

    def get_trust_root(self, version: int) -> bytes:
        return self.grpc.get_trust_root(version)

    def get_election_definition(self) -> bytes:
        return self.grpc.get_election_definition()

    def close(self) -> None:
        self.grpc.close()


@contextlib.contextmanager
def _reader(night: Night, state_dir: Path) -> Iterator[tuple[Client, JsonViewTransport]]:
    tls = night.stack.tls("outlet-01")
    grpc_transport = GrpcTransport.open(
        night.stack.endpoints.edge,
        credentials=TlsCredentials.from_files(ca=tls.ca, cert=tls.cert, key=tls.key),
        timeout=CONFIG.rpc_timeout,
        max_message_bytes=CONFIG.max_message_bytes,
    )
    transport = JsonViewTransport(night, grpc_transport)
    assert isinstance(transport, Transport)
    root = load_trust_root(night.stack.state.trust_root_v1)
    with Client.from_transport(
        transport, trust_root=root, state_dir=state_dir, config=CONFIG
    ) as client:
        yield client, transport


def _check_view(view: dict[str, Any], cut: VerifiedCut) -> int:
    """The JSON view of a cut against the SDK's verified named results of the same cut.
    Returns the number of contests compared."""
    assert int(view["cut_number"]) == cut.cut_number
    assert view["cut_time"] == cut.cut_record.cut_time
    assert int(view["acta_records"]) == cut.acta_records
    assert (view["final"], view["test"]) == (cut.final, cut.test)
    assert view["definition_sha256"] == cut.definition_sha256.hex()
    assert view["election_id"] == cut.election.election_id
    assert [(u["level"], u["unit_id"]) for u in view["units"]] == [
        (results_pb2.Level.Name(u.level), u.unit_id) for u in cut.results.units
    ]
    compared = 0
    for unit in view["units"]:
        level = LEVELS[unit["level"]]
        if level == "national":
            named = cut.nation()
        elif level == "state":
            named = cut.state(unit["unit_id"])
        else:
            named = cut.district(unit["unit_id"])
        assert unit["name"] == named.unit.name
        for contest in unit["contests"]:
            race = named.race(contest["contest_id"])
            assert json_race(contest) == sdk_race(race), (unit["unit_id"], contest["contest_id"])
            compared += 1
    return compared


def test_every_cut_of_the_night_is_named_json_whose_signed_bytes_verify_to_its_figures(
    night: Night, tmp_path: Path
) -> None:
    with _reader(night, tmp_path) as (client, transport):
        latest = client.latest()
        assert latest.final
        assert latest.cut_number == night.final_cut
        numbers = range(1, night.final_cut + 1)
        cuts = {n: client.cut(n) for n in numbers}
        assert sorted(transport.documents) == list(numbers)
        counted = [cuts[n].acta_records for n in numbers]
        assert counted == sorted(counted)
        assert len(set(counted)) > STAGES  # the stages, each seen by at least one cut
        for n in numbers:
            document = transport.documents[n]
            assert _check_view(document["view"], cuts[n]) >= 333 + 32 + 1
            # The signed bytes the JSON carries are the verified cut's, and the cut alone
            # (the route that answered HTTP 500 for every cut) is the same.
            assert base64.b64decode(document["cut"]["results"]) == cuts[n].results_bytes
            assert night.json(f"/v1/cuts/{n}") == {"cut": document["cut"]}
            # Every answer is above the transcoder's former limits: its signed cut alone
            # over the HTTP/2 stream's 64 KiB, the whole answer over HTTP/1.1's 1 MiB.
            answer = json_format.ParseDict(document, publication_pb2.GetCutViewResponse())
            assert answer.cut.ByteSize() > OLD_HTTP2_LIMIT
            assert answer.ByteSize() > OLD_HTTP1_LIMIT
    # The night's last cut says so.
    final = transport.documents[night.final_cut]["view"]
    assert final["final"] is True
    assert [u["name"] for u in final["units"][:2]] == ["National", "Aguascalientes"]


def test_the_view_answers_over_http_1_1_the_same_json(night: Night) -> None:
    path = f"/v1/cuts/{night.final_cut}/view"
    over_1_1 = night.get(path, http="1.1")
    assert (over_1_1.status, over_1_1.http_version) == (200, "1.1")
    assert json.loads(over_1_1.body) == night.json(path)


def test_the_view_refuses_what_it_cannot_answer_with_http_statuses(night: Night) -> None:
    assert night.get(f"/v1/cuts/{night.final_cut + 1000}/view").status == 404
    assert night.get("/v1/cuts/0/view").status == 400
    assert night.get("/v1/cuts/latest/view?level=1").status == 400  # unknown parameter
    for who in ("cc-01", "ops-01"):
        assert night.get("/v1/cuts/latest/view", who=who).status == 403


# -- the commands the docs show ------------------------------------------------------

DOCS = (REPO_ROOT / "docs" / "mesh.md", REPO_ROOT / "docs" / "operations.md")
DOC_PORT = "127.0.0.1:8445"


def _doc_curl_commands() -> list[tuple[str, str, str]]:
    """(doc, command, the JSON shown as its answer or "") of every curl of the REST view
    the docs show: a console or sh block (``\\`` continues a line), and the json block
    after it when that is the next block and no heading comes between."""
    found: list[tuple[str, str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        blocks = list(re.finditer(r"```(\w*)\n(.*?)```", text, re.S))
        for i, block in enumerate(blocks):
            if block.group(1) not in ("console", "sh"):
                continue
            answer = ""
            if i + 1 < len(blocks) and blocks[i + 1].group(1) == "json":
                between = text[block.end() : blocks[i + 1].start()]
                if not re.search(r"^#", between, re.M):
                    answer = blocks[i + 1].group(2)
            for line in block.group(2).replace("\\\n", " ").splitlines():
                command = line.removeprefix("$ ").strip()
                if command.startswith("curl ") and DOC_PORT in command:
                    found.append((doc.name, command, answer))
    return found


def _fits(shown: object, actual: object, where: str = "") -> None:
    """Every key the docs show is in the answer, with a value of the same kind (lists:
    each element shown against the answer's element at the same place)."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for key, value in shown.items():
            assert key in actual, f"{where}.{key} is shown but not answered"
            _fits(value, actual[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list), where
        assert len(actual) >= len(shown), where
        for i, (s, a) in enumerate(zip(shown, actual, strict=False)):
            _fits(s, a, f"{where}[{i}]")
    else:
        assert type(shown) is type(actual), f"{where}: {shown!r} shown, {actual!r} answered"


def test_the_docs_show_the_view_and_its_answer() -> None:
    commands = _doc_curl_commands()
    shown = [c for _, c, _ in commands]
    assert any(c.endswith("/v1/cuts/latest/view") for c in shown)
    assert any(answer for _, c, answer in commands if c.endswith("/view"))
    assert {doc for doc, _, _ in commands} == {d.name for d in DOCS}


DOC_CURLS = _doc_curl_commands()


@pytest.mark.parametrize(
    ("doc", "command", "answer"),
    DOC_CURLS,
    ids=[f"{doc}:{command.rsplit(DOC_PORT, 1)[-1]}" for doc, command, _ in DOC_CURLS],
)
def test_each_curl_of_the_docs_answers_as_shown(
    night: Night, doc: str, command: str, answer: str
) -> None:
    state = str(night.stack.state.root)
    argv = [
        arg.replace(DOC_PORT, night.stack.endpoints.rest).replace("state/", f"{state}/")
        for arg in shlex.split(command)
    ]
    done = subprocess.run(argv, capture_output=True, timeout=CALL_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert "cut" in document or "trust_root" in document
    if answer:
        _fits(json.loads(answer), document)
