"""Publication's store on both backends, and its lease: with several publishers on one
database only the lease holder stores and signs, and a deposed one is fenced inside the
very transaction that would store its cut (docs/adr/0094-publication-lease.md).

Every test runs once on a SQLite file and once on a real PostgreSQL database
(tests/conftest.py's ``stores`` fixture).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import StoreLocations
from tests.pub_support import ORIGIN, ActaLog, results_blob
from veritally.publication.cutter import Cutter
from veritally.publication.errors import LeaseLostError, StoreIntegrityError
from veritally.publication.store import CutRow, PublicationStore
from veritally.storage import DbLocation, LeaseHolder
from veritally_client.protocol import (
    MemoryTree,
    Signer,
    leaf_hash,
    open_note,
    parse_checkpoint,
    verify_consistency,
    verify_inclusion,
)

SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))
#: Short enough to lapse within a test, long enough for a cut on a loaded machine.
LEASE_SECONDS = 1.0


def _clock() -> Callable[[], dt.datetime]:
    ticks = itertools.count()
    start = dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC)
    return lambda: start + dt.timedelta(seconds=2 * next(ticks))


class Publisher:
    """One publication process's store and cutter (a separate connection each)."""

    def __init__(self, location: DbLocation, name: str | None = None) -> None:
        lease = LeaseHolder(name, LEASE_SECONDS) if name else None
        self.store = PublicationStore(location, lease=lease)
        self.cutter = Cutter(store=self.store, signers=[SIGNER], origin=ORIGIN, clock=_clock())

    def cut(self, log: ActaLog, n: int) -> CutRow:
        """Cut the records it has not logged yet plus ``n`` new ones."""
        latest = self.store.latest_cut()
        have = latest.acta_records if latest else 0
        log.add(n)
        return self.cutter.make_cut(
            acta_leaves=log.leaves[have:],
            acta_records=len(log.leaves),
            results=results_blob(log.leaves),
        )


@pytest.fixture
def location(stores: StoreLocations) -> DbLocation:
    return stores.new("publication")


@pytest.fixture
def publishers(location: DbLocation) -> Iterator[Callable[[str | None], Publisher]]:
    opened: list[Publisher] = []

    def open_publisher(name: str | None) -> Publisher:
        opened.append(Publisher(location, name))
        return opened[-1]

    yield open_publisher
    for p in opened:
        p.store.close()


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every message any publisher of the test signs."""
    signed: list[bytes] = []
    real = Signer.sign

    def counting(self: Signer, message: bytes) -> bytes:
        signed.append(message)
        return real(self, message)

    monkeypatch.setattr(Signer, "sign", counting)
    return signed


def _wait_for_lapse() -> None:
    time.sleep(LEASE_SECONDS + 0.2)


# -- the store, the same on both backends --------------------------------------------


def test_stored_cuts_sign_the_reference_tree_and_reopen_as_stored(
    publishers: Callable[[str | None], Publisher], location: DbLocation
) -> None:
    publisher, log, ref = publishers(None), ActaLog(), MemoryTree()
    rows = []
    for n in (5, 0, 300, 1):
        before = len(log.leaves)
        row = publisher.cut(log, n)
        for leaf in log.leaves[before:]:
            ref.append(leaf)
        ref.append(row.cut_leaf)
        checkpoint = parse_checkpoint(open_note(row.checkpoint, [SIGNER.verifier()]).text)
        assert (checkpoint.size, checkpoint.root_hash) == (ref.size, ref.root())
        verify_inclusion(
            leaf_hash=leaf_hash(row.cut_leaf),
            index=ref.size - 1,
            size=ref.size,
            proof=row.proof,
            root=ref.root(),
        )
        rows.append(row)
    first, last = rows[0], rows[-1]
    verify_consistency(
        size1=first.tree_size,
        size2=last.tree_size,
        proof=publisher.store.consistency_proof(first.tree_size, last.tree_size),
        root1=ref.root(first.tree_size),
        root2=ref.root(),
    )
    reopened = PublicationStore(location)
    try:
        assert reopened.latest_cut() == last
        assert reopened.root() == ref.root()
        assert [leaf_hash(x) for x in reopened.leaves(0, ref.size)] == [
            ref.leaf_hash(i) for i in range(ref.size)
        ]
    finally:
        reopened.close()


def test_a_second_cut_for_a_signed_tree_size_is_refused_by_the_store(
    publishers: Callable[[str | None], Publisher],
) -> None:
    publisher, log = publishers(None), ActaLog()
    row = publisher.cut(log, 3)
    store = publisher.store
    with pytest.raises(StoreIntegrityError, match="exists"), store.transaction():
        store.put_cut(row)
    assert store.latest_cut() == row


def test_a_second_writer_without_the_lease_cannot_fork_the_log(
    publishers: Callable[[str | None], Publisher], signatures: list[bytes]
) -> None:
    # Two publishers on one database, neither configured with a lease (a mistake the
    # store must survive): the second one's view of the log is stale after the first
    # cuts, and its cut stops before anything is appended or signed.
    first, second, log = publishers(None), publishers(None), ActaLog()
    first.cut(log, 2)
    row = first.cut(log, 2)
    signed = len(signatures)
    with pytest.raises(StoreIntegrityError, match="another publisher writes"):
        second.cut(log, 1)
    assert len(signatures) == signed
    assert first.store.latest_cut() == row


# -- the lease -----------------------------------------------------------------------


def test_a_publisher_waits_while_another_holds_the_lease(
    publishers: Callable[[str | None], Publisher], signatures: list[bytes]
) -> None:
    active, standby, log = publishers("host-a"), publishers("host-b"), ActaLog()
    assert active.store.acquire_lease().held
    found = standby.store.acquire_lease()
    assert (found.held, found.holder, found.epoch) == (False, "host-a", 1)
    with pytest.raises(LeaseLostError, match="does not hold the lease"):
        standby.cut(log, 1)
    assert signatures == []
    # The holder renews with every cut, so the standby keeps waiting past one length.
    for _ in range(3):
        active.cut(log, 1)
        time.sleep(LEASE_SECONDS / 2)
        assert not standby.store.acquire_lease().held


def test_a_deposed_publisher_neither_signs_nor_stores_a_cut(
    publishers: Callable[[str | None], Publisher], signatures: list[bytes]
) -> None:
    # host-a stalls (a partition, a long pause) past its lease; host-b takes over and
    # cuts; host-a comes back believing it is the publisher.
    old, new, log = publishers("host-a"), publishers("host-b"), ActaLog()
    old.store.acquire_lease()
    old.cut(log, 4)
    _wait_for_lapse()
    taken = new.store.acquire_lease()
    assert (taken.held, taken.epoch) == (True, 2)
    row = new.cut(log, 3)
    signed = len(signatures)
    with pytest.raises(LeaseLostError, match="lost the lease of epoch 1"):
        old.cut(log, 5)
    assert len(signatures) == signed, "the deposed publisher signed a checkpoint"
    assert old.store.lease_epoch is None
    assert new.store.latest_cut() == row
    assert new.cut(log, 1).cut_number == row.cut_number + 1


def test_the_new_holder_continues_the_tree_its_predecessor_signed(
    publishers: Callable[[str | None], Publisher],
) -> None:
    old, new, log = publishers("host-a"), publishers("host-b"), ActaLog()
    old.store.acquire_lease()
    before = [old.cut(log, n) for n in (7, 0, 2)]
    old.store.release_lease()  # a clean stop: no wait for the lapse
    assert new.store.acquire_lease().held
    assert new.store.tree_size == before[-1].tree_size
    after = new.cut(log, 5)
    assert after.cut_number == before[-1].cut_number + 1
    reference = MemoryTree()
    for leaf in new.store.leaves(0, after.tree_size):
        reference.append(leaf)
    assert (
        reference.root()
        == parse_checkpoint(open_note(after.checkpoint, [SIGNER.verifier()]).text).root_hash
    )
    verify_consistency(
        size1=before[-1].tree_size,
        size2=after.tree_size,
        proof=new.store.consistency_proof(before[-1].tree_size, after.tree_size),
        root1=reference.root(before[-1].tree_size),
        root2=reference.root(),
    )


def test_a_lease_cannot_be_taken_while_its_holder_is_storing_a_cut(
    publishers: Callable[[str | None], Publisher],
) -> None:
    # The renewal inside the cut's transaction locks the lease until the commit: a
    # standby asking meanwhile waits, then finds the lease held. The lease is renewed
    # again at the commit, so it runs a whole length from there, not from the start.
    active, standby = publishers("host-a"), publishers("host-b")
    active.store.acquire_lease()
    inside, answer = threading.Event(), []

    def ask_when_inside() -> None:
        inside.wait(10)
        answer.append(standby.store.acquire_lease())

    asker = threading.Thread(target=ask_when_inside)
    asker.start()
    with active.store.transaction():
        inside.set()
        time.sleep(0.7 * LEASE_SECONDS)
    asker.join(10)
    assert answer
    assert (answer[0].held, answer[0].holder) == (False, "host-a")
    time.sleep(0.5 * LEASE_SECONDS)  # 1.2 lengths after the transaction began
    assert not standby.store.acquire_lease().held


def test_a_restarted_publisher_takes_its_own_lease_back_at_once(
    publishers: Callable[[str | None], Publisher],
) -> None:
    first, log = publishers("host-a"), ActaLog()
    first.store.acquire_lease()
    first.cut(log, 2)
    # The process died without releasing; its successor on the same host has its name.
    again = publishers("host-a")
    taken = again.store.acquire_lease()
    assert (taken.held, taken.epoch) == (True, 2)
    with pytest.raises(LeaseLostError):
        first.cut(log, 1)
    again.cut(log, 1)


@pytest.mark.parametrize(
    ("name", "seconds", "message"),
    [
        ("", 5.0, "lease holder"),
        ("host a", 5.0, "lease holder"),
        ("h" * 65, 5.0, "lease holder"),
        ("host-a", 0.0, "lease length"),
        ("host-a", 601.0, "lease length"),
    ],
)
def test_a_lease_holder_out_of_bounds_is_refused(name: str, seconds: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseHolder(name, seconds)


def test_a_holder_frozen_inside_a_cut_keeps_no_one_out_past_its_lease(
    postgres_url: DbLocation, signatures: list[bytes]
) -> None:
    # PostgreSQL only: there the holder's locks live in its session. A holder that
    # stops inside a cut's transaction (a stopped process, a partitioned host) holds
    # the log's and the lease's locks; the server ends its session after the lease's
    # length idle in the transaction, and the standby takes over.
    frozen, standby = Publisher(postgres_url, "host-a"), Publisher(postgres_url, "host-b")
    log = ActaLog()
    try:
        frozen.store.acquire_lease()
        frozen.cut(log, 3)
        inside, failure = threading.Event(), []

        def freeze_inside_a_cut() -> None:
            try:
                with frozen.store.transaction():
                    inside.set()
                    time.sleep(LEASE_SECONDS + 1.5)
                    frozen.store.append_leaves([b"late"], [leaf_hash(b"late")])
            except Exception as e:  # the session was ended under it
                failure.append(e)

        holder = threading.Thread(target=freeze_inside_a_cut)
        holder.start()
        inside.wait(10)
        started = time.monotonic()
        while not standby.store.acquire_lease().held:  # bounded below
            assert time.monotonic() - started < 10 * LEASE_SECONDS, "the standby never took over"
            time.sleep(0.1)
        holder.join(30)
        assert failure, "the frozen holder's transaction went through"
        assert standby.store.acquire_lease().held  # renewed: the join took a lease length
        signed = len(signatures)
        row = standby.cut(log, 1)
        assert row.cut_number == 2
        assert len(signatures) == signed + 1
        assert standby.store.leaves(0, row.tree_size)[-2] == log.leaves[-1]
    finally:
        frozen.store.close()
        standby.store.close()
