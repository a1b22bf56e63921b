"""The replay's core (veritally_client._replay), without sockets: the signed clock scaled
to the wall clock, and the bundle as it stood at each moment of a recorded night, partial
tiles included, read through :meth:`Recording.respond` as an HTTP mirror reads it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, write_bundle
from veritally_client._bundle import verify_bundle
from veritally_client._replay import MAX_SPEED, Recording, schedule
from veritally_client.protocol import TILE_WIDTH, tiles_between

T0 = dt.datetime(2026, 6, 2, 20, 0, tzinfo=dt.UTC)


def _at(*minutes: float) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=m) for m in minutes]


# -- the clock -----------------------------------------------------------------------------


def test_an_hour_of_the_night_plays_in_a_minute_at_speed_60() -> None:
    assert schedule(_at(0, 5, 65, 125), from_cut=1, speed=60) == [0.0, 5.0, 65.0, 125.0]


def test_the_replay_starts_at_from_cut_with_its_cut_live_at_once() -> None:
    assert schedule(_at(0, 5, 65, 125), from_cut=3, speed=60) == [0.0, 60.0]
    assert schedule(_at(0, 5, 65, 125), from_cut=4, speed=0.5) == [0.0]


def test_slow_motion_stretches_the_gaps() -> None:
    assert schedule(_at(0, 1, 3), from_cut=1, speed=0.5) == [0.0, 120.0, 360.0]


def test_a_cut_time_that_goes_back_goes_live_right_after_the_cut_before() -> None:
    assert schedule(_at(0, 10, 4, 20), from_cut=1, speed=60) == [0.0, 10.0, 10.0, 20.0]


@pytest.mark.parametrize("speed", [0.0, -1.0, MAX_SPEED * 2, float("nan")])
def test_speed_outside_its_bounds_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="--speed"):
        schedule(_at(0, 1), from_cut=1, speed=speed)


@pytest.mark.parametrize("from_cut", [0, 3, -1])
def test_from_cut_outside_the_recording_is_refused(from_cut: int) -> None:
    with pytest.raises(ValueError, match="--from-cut"):
        schedule(_at(0, 1), from_cut=from_cut, speed=1)


# -- the bundle at each moment -------------------------------------------------------------


#: The tree sizes of the night's cuts: inside, at and past the first level-0 tile, and
#: giving the level-1 tile the widths 1 and 2.
SIZES = [7, 150, 256, 300, 515, 530]


def _night() -> FakePublisher:
    """A publisher whose cuts have the tree sizes of :data:`SIZES` (the acta records
    after the first six are corrections of one acta)."""
    pub = FakePublisher()
    aid = pub.add_actas(6)[0]
    pub.make_cut()
    for size in SIZES[1:]:
        while pub.tree.size < size - 1:
            pub.correct(aid)
        pub.make_cut()
    assert pub.tree.size == SIZES[-1]
    return pub


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakePublisher, Recording]:
    pub = _night()
    root = tmp_path_factory.mktemp("recorded") / "bundle"
    write_bundle(pub, root)
    return pub, Recording.open(root, trust_root=pub.trust_root())


def _tile_names() -> list[str]:
    """Every tile and entry bundle name of every tree of the night."""
    refs = [ref for size in SIZES for ref in tiles_between(0, size)]
    return sorted({ref.path for ref in refs} | {ref.full_path for ref in refs})


def _mirror(recording: Recording, moment: int, into: Path) -> dict[str, bytes]:
    """What a mirror copies at ``moment``: every name a reader may ask for, kept if 200."""
    names = ["latest", "checkpoint", "election/definition.binpb", "trust-root/v1.binpb"]
    names += [f"cuts/{n}.cut" for n in range(1, len(SIZES) + 1)]
    names += [f"checkpoints/{s}" for s in SIZES]
    names += [f"results/{c.results_sha256}" for c in recording.cuts]
    names += _tile_names()
    served: dict[str, bytes] = {}
    for name in names:
        reply = recording.respond(f"/{name}", moment=moment)
        assert reply.status in (200, 404), (name, reply.status, reply.body)
        if reply.status == 200:
            served[name] = reply.body
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            (into / name).write_bytes(reply.body)
    return served


@pytest.mark.parametrize("moment", range(len(SIZES)))
def test_each_moment_is_a_bundle_that_verifies_naming_its_cut(
    night: tuple[FakePublisher, Recording], moment: int, tmp_path: Path
) -> None:
    pub, recording = night
    served = _mirror(recording, moment, tmp_path)
    report = verify_bundle(tmp_path, trust_root=pub.trust_root())
    assert report.latest.cut_number == moment + 1
    assert report.recount.tree_size == SIZES[moment]
    assert json.loads(served["latest"])["tree_size"] == SIZES[moment]
    assert served["checkpoint"] == served[f"checkpoints/{SIZES[moment]}"]
    # Nothing of a later cut is there before its moment.
    later = range(moment + 2, len(SIZES) + 1)
    assert not {f"cuts/{n}.cut" for n in later} & served.keys()
    assert not {f"checkpoints/{SIZES[n - 1]}" for n in later} & served.keys()


@pytest.mark.parametrize("moment", range(len(SIZES)))
def test_served_tiles_are_the_tiles_of_the_tree_at_the_moment(
    night: tuple[FakePublisher, Recording], moment: int, tmp_path: Path
) -> None:
    pub, recording = night
    served = _mirror(recording, moment, tmp_path)
    size = SIZES[moment]
    for name, body in served.items():
        if not name.startswith("tile/"):
            continue
        level_name, rest = name.split("/")[1], name.split("/", 2)[2]
        index = int(rest.split(".p/")[0])
        width = int(rest.split(".p/")[1]) if ".p/" in rest else TILE_WIDTH
        if level_name == "entries":
            expected = b"".join(
                len(leaf).to_bytes(2, "big") + leaf
                for leaf in pub.leaves[index * TILE_WIDTH : index * TILE_WIDTH + width]
            )
        else:
            span = TILE_WIDTH ** int(level_name)  # leaves under each hash
            first = index * TILE_WIDTH
            expected = b"".join(
                pub.tree.subtree_hash(i * span, (i + 1) * span) for i in range(first, first + width)
            )
            assert (first + width) * span <= size  # only hashes of the tree at the moment
        assert body == expected, name


def test_partial_tiles_are_those_of_published_sizes_until_their_full_tile(
    night: tuple[FakePublisher, Recording],
) -> None:
    _, recording = night

    def status(name: str, moment: int) -> int:
        return recording.respond(f"/{name}", moment=moment).status

    # Cut 2 (150 leaves): its own partial tiles and cut 1's (7) are there; no others.
    assert status("tile/0/000.p/150", 1) == 200
    assert status("tile/entries/000.p/7", 1) == 200
    assert status("tile/0/000.p/8", 1) == 404  # no published tree ended there
    assert status("tile/0/000.p/151", 1) == 404  # past the tree of the moment
    assert status("tile/0/000", 1) == 404
    # Cut 3 (256) fills the tile: its partial tiles went, the full one came.
    assert status("tile/0/000", 2) == 200
    assert status("tile/0/000.p/150", 2) == 404
    assert status("tile/entries/000.p/7", 2) == 404
    assert status("tile/1/000.p/1", 2) == 200
    # The level-1 tile grows to 2 hashes at cut 5 (515); width 1 stays, being partial.
    assert status("tile/1/000.p/2", 3) == 404
    assert status("tile/1/000.p/2", 4) == 200
    assert status("tile/1/000.p/1", 5) == 200


def test_latest_and_checkpoint_change_etag_with_the_moment_and_the_rest_is_immutable(
    night: tuple[FakePublisher, Recording],
) -> None:
    _, recording = night
    first = recording.respond("/latest", moment=0)
    again = recording.respond("/latest", moment=0)
    later = recording.respond("/latest", moment=1)
    assert first.etag == again.etag != later.etag
    assert first.cache_control == "no-cache"
    assert first.etag == '"' + hashlib.sha256(first.body).hexdigest()[:32] + '"'
    checkpoint = recording.respond("/checkpoint", moment=0)
    assert checkpoint.content_type == "text/plain; charset=utf-8"
    assert checkpoint.cache_control == "no-cache"
    assert checkpoint.etag
    tile = recording.respond("/tile/0/000.p/7", moment=0)
    assert tile.cache_control == "public, max-age=31536000, immutable"
    assert tile.etag is None
    assert recording.respond("/cuts/2.cut", moment=0).cache_control == "no-store"


@pytest.mark.parametrize(
    "target",
    [
        "/../publisher.key",
        "/cuts/../latest",
        "/cuts/./1.cut",
        "/%2e%2e/latest",
        "/cuts%2f1.cut",
        "/cuts//1.cut",
        "/trust-root/v1.binpb/..",
        "/tile/0/x000/000",  # not the spec's name of tile 0
        "/tile/0/000.p/256",
        "/tile/64/000",
        "http://example.org/latest",
        "/latest\\..",
    ],
)
def test_path_traversal_and_names_outside_the_bundle_are_refused(
    night: tuple[FakePublisher, Recording], target: str
) -> None:
    _, recording = night
    reply = recording.respond(target, moment=5)
    assert reply.status in (400, 404), target


def test_names_the_bundle_never_has_are_404(night: tuple[FakePublisher, Recording]) -> None:
    _, recording = night
    for target in ("/", "/cuts/0.cut", "/cuts/7.cut", "/trust-root/v2.binpb", "/leaves/0.binpb"):
        assert recording.respond(target, moment=5).status == 404, target
    assert recording.respond("/latest?t=123", moment=5).status == 200
