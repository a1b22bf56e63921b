"""A small federal night, signed by the in-memory publisher, for the export tests.

``tests.races_support.federal_pb`` (a presidency, a senate per state, deputies per
district, coalitions, an independent, a special casilla) with records of every kind PREP
publishes: counted actas with their own counts, a correction, a figure marked illegible,
an acta not counted (over the nominal list), an expected acta recorded missing (sin
acta) and, if asked, an acta of a casilla outside the catalogue.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.races_support import federal_pb
from tests.unit.sdk_fake import FakePublisher
from veritally_client import Client, ClientConfig, VerifiedCut
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2

__all__ = ["FederalPublisher", "federal_election", "night", "verified_cut"]

R = acta_pb2
CONFIG = ClientConfig(max_checkpoint_age=300.0, allow_test=True)


def federal_election(*, test: bool = False) -> ElectionIndex:
    """The federal-shaped election of ``tests.races_support``, a rehearsal if ``test``."""
    pb = federal_pb()
    pb.test = test
    return ElectionIndex.from_pb(pb)


@dataclass
class FederalPublisher(FakePublisher):
    """The fake publisher over an election with races: each acta carries its race's
    ballot, and only expected actas are captured."""

    election: ElectionIndex = field(default_factory=federal_election)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._pending = list(self.election.acta_ids())

    def _record(self, aid: str, revision: int) -> acta_pb2.ActaRecord:
        casilla_id, contest_id = aid.rsplit("/", 1)
        race = self.election.race_of(casilla_id, contest_id)
        assert race is not None
        acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
        for oid in race.option_ids:
            acta.option_votes.add(option_id=oid, votes=self._rng.randrange(0, 60))
        acta.unregistered_votes = self._rng.randrange(0, 3)
        acta.null_votes = self._rng.randrange(0, 5)
        acta.image_sha256 = hashlib.sha256(f"{aid}#{revision}".encode()).digest()
        total = sum(o.votes for o in acta.option_votes) + acta.unregistered_votes
        total += acta.null_votes
        acta.counts.leftover_ballots = self._rng.randrange(0, 100)
        acta.counts.voters = total
        acta.counts.total_votes_written = total
        acta.provenance.captured_time.FromDatetime(self.now)
        record = acta_pb2.ActaRecord(
            acta_id=aid,
            revision=revision,
            acta=acta,
            counted=True,
            sequence=self.tally.acta_records,
        )
        record.received_time.FromDatetime(self.now)
        return record

    def not_counted(self, reason: acta_pb2.NotCountedReason.ValueType) -> str:
        """Capture the next expected acta as not counted for ``reason`` (a missing acta
        carries no figures)."""
        aid = self._pending.pop(0)
        record = self._record(aid, 1)
        record.counted = False
        record.not_counted_reason = reason
        if reason in MISSING:
            record.acta.ClearField("option_votes")
            record.acta.ClearField("counts")
            record.acta.unregistered_votes = 0
            record.acta.null_votes = 0
            record.acta.ClearField("image_sha256")
        self._append_record(record)
        return aid

    def illegible(self) -> str:
        """Capture the next expected acta, counted, with its first figure illegible."""
        aid = self._pending.pop(0)
        record = self._record(aid, 1)
        first = record.acta.option_votes[0]
        first.votes = 0
        first.mark = acta_pb2.FIELD_MARK_ILLEGIBLE
        self._append_record(record)
        return aid

    def outside(self, casilla_id: str = "99-9999-B", contest_id: str = "PRES") -> str:
        """Log an acta of a casilla that is not in the catalogue."""
        aid = f"{casilla_id}/{contest_id}"
        acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
        for oid in self.election.option_ids(contest_id):
            acta.option_votes.add(option_id=oid, votes=7)
        record = acta_pb2.ActaRecord(
            acta_id=aid,
            revision=1,
            acta=acta,
            counted=False,
            not_counted_reason=R.NOT_COUNTED_REASON_OUT_OF_CATALOGUE,
            sequence=self.tally.acta_records,
        )
        self._append_record(record)
        return aid


MISSING = frozenset(
    {
        R.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
        R.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
        R.NOT_COUNTED_REASON_NO_ENVELOPE,
        R.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
    }
)


def night(*, test: bool = False, outside: bool = True, final: bool = False) -> FederalPublisher:
    """Two cuts of the federal night: 9 actas, then the rest of every kind."""
    pub = FederalPublisher(election=federal_election(test=test))
    pub.add_actas(9)
    pub.make_cut()
    first = pub.add_actas(1)[0]
    pub.correct(first)
    pub.illegible()
    pub.not_counted(R.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST)
    pub.not_counted(R.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED)
    if outside:
        pub.outside()
    pub.add_actas(2)
    pub.make_cut(final=final)
    return pub


def verified_cut(pub: FakePublisher, state_dir: Path, number: int | None = None) -> VerifiedCut:
    """The newest (or ``number``) cut of ``pub``, verified by a real client."""
    config = CONFIG if pub.election.is_test else dataclasses.replace(CONFIG, allow_test=False)
    with Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=config, clock=lambda: pub.now
    ) as client:
        cut = client.latest()
        return cut if number is None else client.cut(number)
