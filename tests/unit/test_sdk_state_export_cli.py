"""Trusted state files, exports, config limits and the CLI's offline paths and exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.sdk_fake import FakePublisher, make_trust_root, write_bundle
from veritally_client import Client, ClientConfig, MalformedDataError
from veritally_client._cli import (
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    EXIT_VERIFICATION,
    build_parser,
    main,
)
from veritally_client._export import CSV_COLUMNS, percent_text, to_json, write_csv
from veritally_client._state import ForkEvidence, StateStore, TrustedState, decode_evidence


@pytest.fixture
def pub() -> FakePublisher:
    p = FakePublisher()
    p.step(4)
    p.correct(p.add_actas(3)[0])
    p.make_cut()
    return p


def verified(pub: FakePublisher, tmp_path: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=tmp_path, clock=lambda: pub.now
    )


# -- state -------------------------------------------------------------------------------


def test_state_round_trips_and_is_replaced_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path, origin="o.example/log")
    assert store.load() is None
    a = TrustedState(
        origin="o.example/log",
        checkpoint=b"note a\n",
        tree_size=3,
        root_hash=b"\x01" * 32,
        cut_number=1,
        definition_sha256=b"\x02" * 32,
    )
    store.save(a)
    assert store.load() == a
    b = TrustedState(
        origin="o.example/log",
        checkpoint=b"note b\n",
        tree_size=9,
        root_hash=b"\x03" * 32,
        cut_number=2,
        definition_sha256=b"\x02" * 32,
    )
    store.save(b)
    assert store.load() == b
    assert sorted(p.name for p in store.directory.iterdir()) == ["lock", "state.json"]  # no temp


def test_corrupt_state_file_is_malformed_data(tmp_path: Path) -> None:
    store = StateStore(tmp_path, origin="o.example/log")
    (store.directory / "state.json").write_text("{not json")
    with pytest.raises(MalformedDataError):
        store.load()


def test_state_of_another_origin_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path, origin="a.example/log")
    state = TrustedState(
        origin="a.example/log",
        checkpoint=b"n\n",
        tree_size=1,
        root_hash=b"\x01" * 32,
        cut_number=1,
        definition_sha256=b"\x02" * 32,
    )
    store.save(state)
    # Someone copies the file over another origin's state.
    other = StateStore(tmp_path, origin="b.example/log")
    (other.directory / "state.json").write_bytes((store.directory / "state.json").read_bytes())
    with pytest.raises(MalformedDataError):
        other.load()


def test_evidence_is_kept_once_and_exported(tmp_path: Path) -> None:
    store = StateStore(tmp_path, origin="o.example/log")
    item = ForkEvidence(kind="same-size", origin="o.example/log", first=b"a\n", second=b"b\n")
    store.record_evidence(item)
    store.record_evidence(item)
    assert decode_evidence(store.export_evidence()) == [item]


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["max_checkpoint_age", "max_message_bytes", "max_results_bytes", "max_leaves_per_page"],
)
def test_config_refuses_limits_that_disable_a_check(field: str) -> None:
    zero: dict[str, Any] = {field: 0}
    with pytest.raises(ValueError, match=field):
        ClientConfig(**zero)


def test_client_requires_credentials_or_explicit_unsafe_plaintext(
    pub: FakePublisher, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unsafe_plaintext"):
        Client(endpoint="127.0.0.1:1", trust_root=pub.trust_root(), state_dir=tmp_path)


# -- export ------------------------------------------------------------------------------


def test_csv_has_one_row_per_unit_contest_and_option(pub: FakePublisher, tmp_path: Path) -> None:
    cut = verified(pub, tmp_path).latest()
    out = io.StringIO()
    n = write_csv(cut, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    per_unit = sum(len(pub.election.option_ids(c)) + 2 for c in pub.election.contest_ids)
    assert n == len(rows) == len(cut.results.units) * per_unit
    for unit in cut.results.units:
        for contest in unit.contests:
            mine = [
                r
                for r in rows
                if r["unit_id"] == unit.unit_id and r["contest_id"] == contest.contest_id
            ]
            assert sum(int(r["votes"]) for r in mine) == contest.total_votes
            assert {r["counted_percent"] for r in mine} == {
                percent_text(contest.completeness.counted_percent_e4)
            }
    assert {r["cut_number"] for r in rows} == {str(cut.cut_number)}


def test_percent_text_is_exact_and_truncated() -> None:
    assert percent_text(931234) == "93.1234"
    assert percent_text(1_000_000) == "100.0000"
    assert percent_text(5) == "0.0005"


def test_json_export_carries_the_verified_checkpoint(pub: FakePublisher, tmp_path: Path) -> None:
    cut = verified(pub, tmp_path).latest()
    doc = json.loads(json.dumps(to_json(cut)))
    assert doc["cut"]["checkpoint"] == cut.note.decode()
    assert doc["units"][0]["level"] == "national"
    national = cut.national()
    assert doc["units"][0]["contests"][0]["total_votes"] == national.contests[0].total_votes


# -- CLI (offline paths; the networked ones run in tests/integration) --------------------


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "4", "5"):
        assert f"\n  {code}  " in text


def test_cli_usage_error_without_trust_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERITALLY_TRUST_ROOT", raising=False)
    assert main(["--endpoint", "127.0.0.1:1", "--unsafe-plaintext", "latest"]) == EXIT_USAGE


def test_cli_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["frobnicate"])
    assert info.value.code == EXIT_USAGE


def test_cli_verify_bundle_ok_and_tampered(
    pub: FakePublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_bundle(pub, tmp_path / "b")
    root = tmp_path / "root.pb"
    # The CLI checks expiry against the real clock.
    root.write_bytes(make_trust_root(pub.signers, expires=pub.now.replace(year=2100)))
    args = ["--trust-root", str(root), "verify-bundle", str(tmp_path / "b")]
    assert main(args) == EXIT_OK
    captured = capsys.readouterr()
    assert "cut 2" in captured.out
    assert "bundle verified" in captured.err
    cut_file = tmp_path / "b" / "cuts" / "2.cut"
    data = bytearray(cut_file.read_bytes())
    data[-1] ^= 1  # inside the results blob
    cut_file.write_bytes(bytes(data))
    assert main(args) == EXIT_VERIFICATION


def test_cli_unreachable_publisher_is_a_transport_failure(
    pub: FakePublisher, tmp_path: Path
) -> None:
    root = tmp_path / "root.pb"
    # Far in the future expiry so that the trust root loads now.
    root.write_bytes(make_trust_root(pub.signers, expires=pub.now.replace(year=2100)))
    code = main(
        [
            "--endpoint",
            "127.0.0.1:9",  # discard port: nothing listens
            "--unsafe-plaintext",
            "--trust-root",
            str(root),
            "--state-dir",
            str(tmp_path / "s"),
            "latest",
        ]
    )
    assert code == EXIT_TRANSPORT
