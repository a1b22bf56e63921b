"""A small election and acta builders shared by the write-path tests (ingest and
aggregation). Everything is built in code so each test states what it depends on."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

from veritally import bounds
from veritally.ingest.store import IngestStore, Writes
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2

ActaPb = acta_pb2.Acta


def small_election(*, casillas_per_section: int = 2) -> ElectionIndex:
    """Two states, two districts each, two sections per district; per section
    ``casillas_per_section`` ordinary casillas (nominal list 100, 2 representatives) and,
    in the first section of each district, one special casilla (ballot limit 50).
    Contests: PRES with 3 options (one a coalition), SEN with 2."""
    pb = election_pb2.ElectionDefinition(id="test-2026", name="Test election")
    for pid in ("PA", "PB", "PC"):
        pb.parties.add(id=pid, name=f"Party {pid}")
    pres = pb.contests.add(id="PRES", name="President")
    pres.options.add(id="PA", name="A", party_ids=["PA"])
    pres.options.add(id="PB", name="B", party_ids=["PB"])
    pres.options.add(id="PB_PC", name="B+C", party_ids=["PB", "PC"])
    sen = pb.contests.add(id="SEN", name="Senate")
    sen.options.add(id="PA", name="A", party_ids=["PA"])
    sen.options.add(id="PC", name="C", party_ids=["PC"])
    for s in ("01", "02"):
        pb.states.add(id=s, name=f"State {s}")
        for d in (1, 2):
            did = f"{s}-{d:02d}"
            pb.districts.add(id=did, state_id=s, name=f"District {did}")
            for sec in (1, 2):
                sid = f"{did}-{sec:04d}"
                pb.sections.add(id=sid, district_id=did)
                for k in range(casillas_per_section):
                    pb.casillas.add(
                        id=f"{sid}-{'B' if k == 0 else 'C'}{k + 1}",
                        section_id=sid,
                        type=election_pb2.CASILLA_TYPE_BASICA
                        if k == 0
                        else election_pb2.CASILLA_TYPE_CONTIGUA,
                        nominal_list=100,
                        party_representatives=2,
                    )
                if sec == 1:
                    pb.casillas.add(
                        id=f"{sid}-S1",
                        section_id=sid,
                        type=election_pb2.CASILLA_TYPE_ESPECIAL,
                        ballot_limit=50,
                        party_representatives=2,
                    )
    return ElectionIndex.from_pb(pb)


def make_acta(
    election: ElectionIndex,
    casilla_id: str,
    contest_id: str,
    votes: list[int],
    *,
    unregistered: int = 0,
    null: int = 0,
    operator: str = "op-1",
) -> ActaPb:
    """An acta with ``votes`` in ballot order and a fixed image digest per acta."""
    option_ids = election.option_ids(contest_id)
    assert len(votes) == len(option_ids)
    acta = ActaPb(
        casilla_id=casilla_id,
        contest_id=contest_id,
        unregistered_votes=unregistered,
        null_votes=null,
        image_sha256=hashlib.sha256(f"{casilla_id}/{contest_id}".encode()).digest(),
    )
    for oid, v in zip(option_ids, votes, strict=True):
        acta.option_votes.add(option_id=oid, votes=v)
    acta.provenance.operator_id = operator
    acta.provenance.capture_centre_id = "centre-1"
    return acta


def random_acta(
    election: ElectionIndex, rng: random.Random, casilla_id: str, contest_id: str
) -> ActaPb:
    """A plausible acta: a total up to the casilla's limit, sometimes above it."""
    limit = election.casilla(casilla_id).vote_limit
    n = len(election.option_ids(contest_id))
    total_cap = limit + (5 if rng.random() < 0.1 else 0)
    parts = [rng.randint(0, max(1, total_cap // (n + 2))) for _ in range(n + 2)]
    return make_acta(
        election, casilla_id, contest_id, parts[:n], unregistered=parts[n], null=parts[n + 1]
    )


def all_actas(election: ElectionIndex, seed: int = 7) -> list[ActaPb]:
    """One random acta for every casilla and contest, in catalogue order."""
    rng = random.Random(seed)
    return [
        random_acta(election, rng, casilla.id, contest.id)
        for casilla in election.casillas
        for contest in election.contests
    ]


def padded(acta: ActaPb, size: int) -> ActaPb:
    """``acta`` grown to exactly ``size`` serialized bytes by lengthening its image
    digest (so that the size check, which comes first, is what decides)."""
    for _ in range(3):  # the digest's length prefix grows by a byte now and then
        grow = size - acta.ByteSize()
        acta.image_sha256 = b"\x00" * (len(acta.image_sha256) + grow)
    assert acta.ByteSize() == size, (acta.ByteSize(), size)
    return acta


def wide_election(*, options: int, casillas: int) -> ElectionIndex:
    """One contest of ``options`` options with ids of the longest allowed length, so that
    each acta (and its leaf) comes close to ``bounds.MAX_ACTA_BYTES``."""
    pb = election_pb2.ElectionDefinition(id="wide", name="Wide ballot")
    contest = pb.contests.add(id="WIDE", name="A very wide ballot")
    for i in range(options):
        pid = f"P{i:03d}".ljust(bounds.MAX_IDENTIFIER_CHARS, "x")
        pb.parties.add(id=pid, name=f"Party {i}")
        contest.options.add(id=pid, name=f"Option {i}", party_ids=[pid])
    pb.states.add(id="01", name="State 01")
    pb.districts.add(id="01-01", state_id="01", name="District 01-01")
    pb.sections.add(id="01-01-0001", district_id="01-01")
    for k in range(casillas):
        pb.casillas.add(
            id=f"01-01-0001-C{k:04d}",
            section_id="01-01-0001",
            type=election_pb2.CASILLA_TYPE_CONTIGUA,
            nominal_list=750,
        )
    return ElectionIndex.from_pb(pb)


def poison_ingest_log(
    db_path: Path, election: ElectionIndex, acta: ActaPb, *, sequence: int, size: int
) -> str:
    """Write into ingest's store (before ingest starts) an accepted record of ``acta``
    padded to at least ``size`` bytes, as a store accepted before acta sizes were bounded
    holds it: a record no stream page can carry. Returns its acta id."""
    acta_id = f"{acta.casilla_id}/{acta.contest_id}"
    padded = ActaPb()
    padded.CopyFrom(acta)
    padded.provenance.operator_id = "x" * size
    record = acta_pb2.ActaRecord(
        acta_id=acta_id, revision=1, acta=padded, counted=True, sequence=sequence
    )
    record.received_time.GetCurrentTime()
    leaf = acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)
    digest = hashlib.sha256(padded.SerializeToString(deterministic=True)).digest()
    store = IngestStore(db_path)
    try:
        store.commit(
            Writes(log=[(sequence, acta_id, 1, leaf)], actas=[(acta_id, 1, sequence, digest, 1, 0)])
        )
    finally:
        store.close()
    assert election.has_casilla(acta.casilla_id)
    return acta_id


# Identities as Envoy forwards them to ingest (x-forwarded-client-cert, SANITIZE_SET):
# ingest takes the capture centre and operator from these, never from the acta.
TEST_TRUST_DOMAIN = "veritally.test"


def capture_operator(operator: str, *, centre: str = "centre-1") -> str:
    """The SPIFFE ID of ``operator`` of capture centre ``centre``."""
    return f"spiffe://{TEST_TRUST_DOMAIN}/capture/{centre}/{operator}"


def authority_operator(name: str) -> str:
    """The SPIFFE ID of an operator of the authority (corrections, resolutions)."""
    return f"spiffe://{TEST_TRUST_DOMAIN}/operator/{name}"


def as_caller(spiffe_id: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``spiffe_id`` the way Envoy sets it for a verified client."""
    return (
        (
            "x-forwarded-client-cert",
            f"By=spiffe://{TEST_TRUST_DOMAIN}/service/ingest;Hash=ab;URI={spiffe_id}",
        ),
    )


def with_centres(election: ElectionIndex, centre_of: Callable[[str], str]) -> ElectionIndex:
    """``election`` with every casilla assigned to the capture centre ``centre_of(id)``."""
    pb = election_pb2.ElectionDefinition()
    pb.CopyFrom(election.pb)
    for casilla in pb.casillas:
        casilla.capture_centre_id = centre_of(casilla.id)
    return ElectionIndex.from_pb(pb)
