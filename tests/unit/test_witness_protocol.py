"""The witness's rules (c2sp.org/tlog-witness add-checkpoint), without sockets: the
request format, each refusal and its code, the record kept, and the spec's example body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.witness_support import ORIGIN, TestLog
from veritally.witness.errors import WitnessStateError
from veritally.witness.protocol import (
    MAX_PROOF_LINES,
    Code,
    RefusalError,
    WitnessedLog,
    parse_add_checkpoint,
)
from veritally.witness.server import Witness
from veritally.witness.store import MAX_EVIDENCE_FILES, StateStore, origin_hash
from veritally_client.protocol import (
    Checkpoint,
    CosignatureSigner,
    Signer,
    open_note,
    parse_checkpoint,
    sign_note,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "c2sp"


@pytest.fixture
def log() -> TestLog:
    return TestLog()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state") as opened:
        yield opened


def _witness(log: TestLog, store: StateStore) -> Witness:
    logs = {log.origin: WitnessedLog(origin=log.origin, keys=(log.signer.verifier(),))}
    return Witness(signer=CosignatureSigner.generate("witness.example/w1"), logs=logs, store=store)


def test_parses_the_spec_example_request_body() -> None:
    spec = json.loads((VECTORS / "c2sp-spec-examples.json").read_text("utf-8"))
    request = parse_add_checkpoint(spec["tlog_witness"]["request_body"].encode())
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert all(len(h) == 32 for h in request.proof)
    assert request.origin == "example.com/behind-the-sofa"
    assert request.note.count("\u2014 ".encode()) == 2


def test_cosigns_a_first_checkpoint_and_then_one_that_extends_it(
    log: TestLog, store: StateStore
) -> None:
    witness = _witness(log, store)
    log.grow(5)
    first = witness.add_checkpoint(log.request(0))
    assert first.status == 200
    text = log.text()
    assert witness.signer.verifier().verify_line(text, first.body.decode()).timestamp > 0
    log.grow(4)
    second = witness.add_checkpoint(log.request(5))
    assert second.status == 200
    assert store.records[ORIGIN].size == 9
    assert store.records[ORIGIN].root_hash == log.tree.root()


def _refusal(witness: Witness, body: bytes) -> tuple[int, bytes, str]:
    answer = witness.add_checkpoint(body)
    return answer.status, answer.body, answer.content_type


def _fork_after_cosigning(log: TestLog, store: StateStore, fork_size: int) -> Witness:
    """A witness that cosigned the log at size 5, then refused a fork of ``fork_size``
    leaves signed with the log's own key (the authority showing another history)."""
    witness = _witness(log, store)
    log.grow(5)
    assert witness.add_checkpoint(log.request(0)).status == 200
    fork = TestLog(signer=log.signer)
    fork.grow(fork_size, tag=b"forged")
    assert _refusal(witness, fork.request(5))[0] == 422
    return witness


@pytest.mark.parametrize("fork_size", [5, 9], ids=["same-size", "grown-from-another-history"])
def test_refuses_fork_of_the_cosigned_checkpoint_with_422(
    log: TestLog, store: StateStore, fork_size: int
) -> None:
    _fork_after_cosigning(log, store, fork_size)
    assert store.records[ORIGIN].root_hash == log.tree.root()


def test_answers_a_stale_old_size_with_409_and_the_size_cosigned(
    log: TestLog, store: StateStore
) -> None:
    witness = _witness(log, store)
    log.grow(5)
    assert witness.add_checkpoint(log.request(0)).status == 200
    log.grow(3)
    assert _refusal(witness, log.request(0)) == (409, b"5\n", "text/x.tlog.size")
    assert _refusal(witness, log.request(2)) == (409, b"5\n", "text/x.tlog.size")


def test_refuses_rollback_to_a_smaller_tree(log: TestLog, store: StateStore) -> None:
    witness = _witness(log, store)
    log.grow(8)
    assert witness.add_checkpoint(log.request(0)).status == 200
    older = TestLog(signer=log.signer)
    older.grow(5)
    # Old size 8 > the checkpoint's 5: malformed (400); old size 5: not what was cosigned.
    assert _refusal(witness, older.request(8, note=older.note()))[0] == 400
    assert _refusal(witness, older.request(5))[0] == 409


def test_refuses_unknown_log_with_404(log: TestLog, store: StateStore) -> None:
    other = TestLog(origin="other.example/log")
    other.grow(2)
    assert _refusal(_witness(log, store), other.request(0))[0] == 404


def test_refuses_checkpoint_signed_by_another_key_with_403(log: TestLog, store: StateStore) -> None:
    impostor = TestLog(signer=Signer.generate(ORIGIN))
    impostor.grow(3)
    assert _refusal(_witness(log, store), impostor.request(0))[0] == 403


def test_refuses_checkpoint_with_a_bad_signature_by_the_log_key_with_403(
    log: TestLog, store: StateStore
) -> None:
    log.grow(3)
    note = bytearray(log.note())
    note[-5] = ord("A") if note[-5] != ord("A") else ord("B")
    assert _refusal(_witness(log, store), log.request(0, note=bytes(note)))[0] == 403


def test_refuses_empty_tree_with_a_wrong_root_with_422(log: TestLog, store: StateStore) -> None:
    witness = _witness(log, store)
    assert witness.add_checkpoint(log.request(0)).status == 200  # size 0, the empty root
    wrong = Checkpoint(origin=ORIGIN, size=0, root_hash=b"\x01" * 32)
    note = sign_note(wrong.to_text(), [log.signer])
    assert _refusal(witness, b"old 0\n\n" + note)[0] == 422


def test_refuses_proof_lines_from_the_empty_tree_with_422(log: TestLog, store: StateStore) -> None:
    log.grow(4)
    body = log.request(0).replace(b"old 0\n", b"old 0\n" + b"A" * 43 + b"=\n", 1)
    assert _refusal(_witness(log, store), body)[0] == 422


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 5",
        b"old 05\n\nx\n",
        b"old -1\n\nx\n",
        b"old 18446744073709551616\n\nx\n",
        b"new 0\n\nx\n",
        b"old 1\nnot base64!\n\nx\n",
        b"old 1\nAAAA\n\nx\n",
        b"old 0\n\n\xff\xfe\n",
        b"old 1\n" + b"A" * 43 + b"=\n" * (MAX_PROOF_LINES + 1) + b"\nx\n",
    ],
    ids=[
        "empty",
        "no-empty-line",
        "leading-zero",
        "negative",
        "over-64-bits",
        "not-old",
        "proof-not-base64",
        "proof-not-32-bytes",
        "origin-not-utf8",
        "64-proof-lines",
    ],
)
def test_refuses_malformed_body_with_400(log: TestLog, store: StateStore, body: bytes) -> None:
    assert _refusal(_witness(log, store), body)[0] == 400


def test_refusal_codes_are_the_specs() -> None:
    with pytest.raises(RefusalError) as caught:
        parse_add_checkpoint(b"old x\n\n")
    assert caught.value.code is Code.MALFORMED


def test_cosigns_extension_lines_too(log: TestLog, store: StateStore) -> None:
    witness = _witness(log, store)
    log.grow(2)
    note = log.note(extensions="ext line\n")
    answer = witness.add_checkpoint(log.request(0, note=note))
    assert answer.status == 200
    text = TestLog.text_of(note)
    assert text.endswith("ext line\n")
    witness.signer.verifier().verify_line(text, answer.body.decode())


def test_concurrent_requests_never_roll_the_record_back(log: TestLog, store: StateStore) -> None:
    # The spec's race: A (size N) and B (size N+K) both checked, B persisted, then A.
    witness = _witness(log, store)
    log.grow(4)
    assert witness.add_checkpoint(log.request(0)).status == 200
    bodies = []
    for _ in range(8):
        log.grow(1)
        bodies.append(log.request(4))
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda b=b: statuses.append(witness.add_checkpoint(b).status))
        for b in bodies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Exactly one extension from size 4 wins; the others now conflict with it.
    assert sorted(statuses) == [200] + [409] * 7
    assert store.records[ORIGIN].size > 4


def test_records_survive_a_reopen_and_the_monitoring_answer_serves_the_latest(
    log: TestLog, tmp_path: Path
) -> None:
    state = tmp_path / "w"
    with StateStore(state) as store:
        witness = _witness(log, store)
        log.grow(3)
        line = witness.add_checkpoint(log.request(0)).body
    with StateStore(state) as again:
        assert again.records[ORIGIN].size == 3
        assert again.records[ORIGIN].note == log.note() + line
        served = _witness(log, again).latest(origin_hash(ORIGIN))
        assert (served.status, served.body) == (200, log.note() + line)
        assert _witness(log, again).latest("00" * 32).status == 404


def test_a_second_process_on_the_state_directory_is_refused(tmp_path: Path) -> None:
    with StateStore(tmp_path / "w"), pytest.raises(WitnessStateError):
        StateStore(tmp_path / "w").open()


def test_refuses_to_start_on_a_corrupt_record_rather_than_forget_it(
    log: TestLog, tmp_path: Path
) -> None:
    state = tmp_path / "w"
    with StateStore(state) as store:
        log.grow(3)
        assert _witness(log, store).add_checkpoint(log.request(0)).status == 200
    record = state / "logs" / f"{origin_hash(ORIGIN)}.json"
    record.write_text(record.read_text()[:20])
    with pytest.raises(WitnessStateError):
        StateStore(state).open()


def test_keeps_two_roots_signed_for_one_size_as_evidence_once(
    log: TestLog, store: StateStore
) -> None:
    witness = _fork_after_cosigning(log, store, 5)
    fork = TestLog(signer=log.signer)
    fork.grow(5, tag=b"forged")
    for _ in range(2):  # the same equivocation again adds no file
        assert _refusal(witness, fork.request(5))[0] == 422
    (evidence,) = (store.root / "evidence").glob("*.json")
    doc = json.loads(evidence.read_text())
    first, second = (
        parse_checkpoint(open_note(doc[k].encode(), [log.signer.verifier()]).text)
        for k in ("cosigned", "refused")
    )
    assert first.size == second.size == 5
    assert first.root_hash != second.root_hash
    assert evidence.name.startswith(origin_hash(ORIGIN))


def test_a_proof_that_fails_between_sizes_is_refused_but_is_no_evidence(
    log: TestLog, store: StateStore
) -> None:
    _fork_after_cosigning(log, store, 9)
    assert not list((store.root / "evidence").glob("*.json"))


def test_keeps_at_most_the_bound_of_evidence_files(log: TestLog, store: StateStore) -> None:
    for i in range(MAX_EVIDENCE_FILES + 3):
        store.put_evidence(ORIGIN, b"a %d\n" % i, b"b\n")
    assert len(list((store.root / "evidence").glob("*.json"))) == MAX_EVIDENCE_FILES
