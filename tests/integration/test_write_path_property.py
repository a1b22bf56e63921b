"""Property: for random streams of submissions with duplicates, conflicting figures,
corrections, cross-checks and invalid actas, pushed through the real ingest engine and
store (SQLite in a temporary directory) and then through the real aggregation engine
(restarted part-way), the totals equal a brute-force recount of the accepted records."""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.write_path_support import (
    authority_operator,
    capture_operator,
    make_acta,
    small_election,
)
from veritally.aggregation.engine import AggregationEngine
from veritally.ingest.engine import IngestEngine
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, results_pb2

ELECTION = small_election(casillas_per_section=1)
# A few actas only (two casillas per state, one of them special), so that random streams
# hit the same acta often: duplicates, disagreements and corrections are then common.
CASILLAS = [
    next(c.id for c in ELECTION.casillas if c.state_id == s and c.is_special == special)
    for s in ELECTION.state_ids
    for special in (False, True)
]
CONTESTS = ELECTION.contest_ids

# One operation: (kind, casilla index, contest index, figures variant, operator, extra)
_ops = st.tuples(
    st.sampled_from(["submit", "submit", "submit", "invalid", "correct", "resolve"]),
    st.integers(0, len(CASILLAS) - 1),
    st.integers(0, len(CONTESTS) - 1),
    st.integers(0, 3),
    st.sampled_from(["op-1", "op-2", "op-3"]),
    st.integers(0, 2),
)


def _figures(casilla_id: str, contest_id: str, variant: int) -> acta_pb2.Acta:
    """A few fixed variants per acta so that duplicates and disagreements are frequent;
    variant 3 exceeds the vote limit (not counted), variant 2 has an illegible figure."""
    n = len(ELECTION.option_ids(contest_id))
    limit = ELECTION.casilla(casilla_id).vote_limit
    over = [limit // n + 1] * n
    votes = over if variant == 3 else [(variant + 1) * (i + 1) for i in range(n)]
    acta = make_acta(ELECTION, casilla_id, contest_id, votes, null=variant)
    if variant == 2:
        acta.option_votes[0].votes = 0
        acta.option_votes[0].mark = acta_pb2.FIELD_MARK_ILLEGIBLE
    return acta


def _invalid(casilla_id: str, contest_id: str, extra: int) -> acta_pb2.Acta:
    acta = _figures(casilla_id, contest_id, 0)
    if extra == 0:
        acta.casilla_id = "nowhere"
    elif extra == 1:
        acta.option_votes[0].option_id = "NOPE"
    else:
        acta.image_sha256 = b"short"
    return acta


def _brute_force(leaves: list[bytes]) -> dict[tuple[str, str], list[int]]:
    """(unit, contest) -> [votes per option..., unregistered, null, captured, counted,
    not counted by reason 1, 2, 3, 4, out of catalogue], from the latest revision of each
    acta. An acta of a casilla outside the catalogue belongs to no state: it counts only
    in the nation's out-of-catalogue figure."""
    latest: dict[str, acta_pb2.ActaRecord] = {}
    for leaf in leaves:
        record = acta_pb2.LogLeaf.FromString(leaf).acta_record
        latest[record.acta_id] = record
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 12)
    for record in latest.values():
        acta = record.acta
        if record.not_counted_reason == acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE:
            assert not record.counted
            totals[("", acta.contest_id)][11] += 1
            continue
        state = ELECTION.casilla(acta.casilla_id).state_id
        option_ids = ELECTION.option_ids(acta.contest_id)
        for unit in ("", state):
            row = totals[(unit, acta.contest_id)]
            row[5] += 1
            if record.counted:
                row[6] += 1
                for ov in acta.option_votes:
                    row[option_ids.index(ov.option_id)] += ov.votes
                row[3] += acta.unregistered_votes
                row[4] += acta.null_votes
            else:
                row[6 + record.not_counted_reason] += 1
    return totals


def _tallied(results: results_pb2.Results) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for unit in results.units:
        if unit.level not in (results_pb2.LEVEL_NATIONAL, results_pb2.LEVEL_STATE):
            continue
        for ct in unit.contests:
            row = [0] * 12
            for i, ot in enumerate(ct.options):
                row[i] = ot.votes
            row[3] = ct.unregistered_votes
            row[4] = ct.null_votes
            c = ct.completeness
            row[5] = c.actas_captured
            row[6] = c.actas_counted
            for nc in c.not_counted:
                row[6 + nc.reason] = nc.actas
            row[11] = c.actas_out_of_catalogue
            if row != [0] * 12:
                out[(unit.unit_id, ct.contest_id)] = row
    return out


async def _run(
    tmp: Path, ops: list[tuple[str, int, int, int, str, int]], double: bool, cuts: list[int]
) -> None:
    ingest = IngestEngine(election=ELECTION, db_path=tmp / "ingest.db", double_capture=double)
    outcomes: list[ingest_pb2.ActaOutcome] = []
    batch: list[acta_pb2.Acta] = []
    # Operators are told apart by their certificates: a batch is one caller's, so it is
    # sent whenever the operator changes.
    batch_operator = ""
    for step, (kind, ci, ki, variant, operator, extra) in enumerate(ops):
        casilla_id, contest_id = CASILLAS[ci], CONTESTS[ki]
        if kind in ("submit", "invalid"):
            acta = (
                _figures(casilla_id, contest_id, variant)
                if kind == "submit"
                else _invalid(casilla_id, contest_id, extra)
            )
            if batch and operator != batch_operator:
                outcomes += await ingest.submit(batch, submitter=capture_operator(batch_operator))
                batch = []
            batch_operator = operator
            batch.append(acta)
        if step in cuts or kind in ("correct", "resolve"):
            outcomes += await ingest.submit(batch, submitter=capture_operator(batch_operator))
            batch = []
        acta_id = f"{casilla_id}/{contest_id}"
        if kind == "correct":
            latest = ingest.store.leaves_of(acta_id)
            revision = latest[-1][0] if latest else 1
            # Dual control: the second operator's identical correction applies it.
            for approver in ("ops-01", "ops-02"):
                out = await ingest.correct(
                    _figures(casilla_id, contest_id, variant),
                    supersedes_revision=revision - extra % 2,
                    reason="property test",
                    submitter=authority_operator(approver),
                )
                outcomes.append(out)
        elif kind == "resolve":
            outcomes.append(
                await ingest.resolve(
                    acta_id,
                    capture_index=extra,
                    reason="property test",
                    submitter=authority_operator("ops-01"),
                )
            )
    outcomes += await ingest.submit(batch, submitter=capture_operator(batch_operator))

    leaves = [leaf async for _, page in ingest.records(0, follow=False) for leaf in page]
    # Log invariants: dense sequences, one ACCEPTED outcome per record.
    accepted = [o for o in outcomes if o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED]
    assert len(accepted) == len(leaves) == ingest.log_size
    for out in accepted:
        record = acta_pb2.LogLeaf.FromString(leaves[out.sequence]).acta_record
        assert (record.acta_id, record.revision, record.sequence) == (
            out.acta_id,
            out.revision,
            out.sequence,
        )
    # The store holds exactly what the engine decided: a fresh engine indexes the same.
    logged, pending = dict(ingest._logged), dict(ingest._pending)
    await ingest.close()
    reopened = IngestEngine(election=ELECTION, db_path=tmp / "ingest.db", double_capture=double)
    assert (reopened._logged, reopened._pending) == (logged, pending)
    await reopened.close()

    # Aggregation consumes in uneven pages, restarting half-way from its own store.
    half = len(leaves) // 2
    agg = AggregationEngine(election=ELECTION, db_path=tmp / "agg.db")
    for start in range(0, half, 7):
        await agg.consume(start, leaves[start : min(start + 7, half)])
    agg.close()
    agg = AggregationEngine(election=ELECTION, db_path=tmp / "agg.db")
    assert agg.position == half
    await agg.consume(max(0, half - 3), leaves[max(0, half - 3) :])  # overlapping page
    assert agg.position == len(leaves)
    assert _tallied(agg.tally.results()) == dict(_brute_force(leaves))
    agg.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=st.lists(_ops, min_size=4, max_size=60),
    double=st.booleans(),
    cuts=st.lists(st.integers(0, 59), max_size=6),
)
def test_aggregation_equals_brute_force_recount_of_accepted_records(
    ops: list[tuple[str, int, int, int, str, int]], double: bool, cuts: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), ops, double, cuts))


def test_brute_force_recount_sees_corrections() -> None:
    """The recount in this file is itself checked: a correction replaces the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        ops = [("submit", 0, 0, 0, "op-1", 0), ("correct", 0, 0, 1, "op-1", 0)]

        async def check() -> None:
            await _run(Path(tmp), ops, False, [])
            ingest = IngestEngine(election=ELECTION, db_path=Path(tmp) / "ingest.db")
            leaves = [leaf async for _, page in ingest.records(0, follow=False) for leaf in page]
            await ingest.close()
            totals = _brute_force(leaves)
            # variant 1 of PRES: votes 2, 4, 6 and null 1
            assert totals[("", "PRES")][:6] == [2, 4, 6, 0, 1, 1]
            assert len(leaves) == 2

        asyncio.run(check())
