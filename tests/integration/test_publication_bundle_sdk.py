"""The service's static bundle verifies with the SDK's offline bundle verifier.

A fake aggregation backed by the SDK's Tally serves valid actas of a small election and
its real results; the publication service cuts them, and ``verify_bundle`` then checks
every cut, the tiles, recounts every leaf from the entry bundles and recomputes every
cut's results from the bundle alone: also while the publisher is writing it, and never
for a bundle whose tiles, entries or checkpoint were altered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import shlex
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.pub_support import (
    FakeAggregation,
    PublisherFiles,
    make_publisher,
    publication_config,
    start_fake_aggregation,
    wait_for_first_cut,
)
from tests.write_path_support import small_election
from veritally import bounds
from veritally.publication.app import PublicationService, start_publication
from veritally_client import (
    BadProofError,
    BadSignatureError,
    Client,
    ClientConfig,
    MalformedDataError,
)
from veritally_client._bundle import verify_bundle
from veritally_client._cli import EXIT_OK, main
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._trustroot import TrustedRoot
from veritally_client.protocol import (
    encode_entry_bundle,
    parse_cut_leaf,
    parse_entry_bundle,
    results_summary_bytes,
    verify_summary,
)
from veritally_client.protocol.pb import log_pb2


async def test_bundle_of_real_cuts_verifies_offline_with_the_sdk(tmp_path: Path) -> None:
    election = small_election()
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(5)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    service = await start_publication(config)
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        for n in (7, 0, 11):
            fake.fake.add_valid(n)
            await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    now = dt.datetime.now(dt.UTC)
    pinned = TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(), now=now
    )
    report = verify_bundle(tmp_path / "bundle", trust_root=pinned, now=now)  # and summaries
    assert len(report.cuts) == 4
    # Every cut signs its results summary (docs/adr/0092): an immutable file named by its
    # digest, which latest names, the summary of the cut's own results.
    latest = json.loads((tmp_path / "bundle" / "latest").read_bytes())
    cut = log_pb2.SignedCut.FromString((tmp_path / "bundle" / latest["cut"]).read_bytes())
    record = parse_cut_leaf(cut.cut_leaf)
    assert latest["summary"] == f"results/{record.summary_sha256.hex()}"
    served = (tmp_path / "bundle" / latest["summary"]).read_bytes()
    assert verify_summary(served, record=record).acta_records == record.acta_records == 23
    assert served == results_summary_bytes(cut.results, party_ids=election.party_ids)
    assert len(served) < len(cut.results)


async def test_bundle_of_full_tiles_and_leaves_at_the_bound_verifies_within_a_bundle_limit(
    tmp_path: Path,
) -> None:
    election = small_election(casillas_per_section=70)  # 1,136 actas: several tiles
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(1100)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        await wait_for_first_cut(service)
        # Ten leaves at the bound publication logs (a large field the results do not
        # depend on): a bundle of them is far above the size of an ordinary one.
        fake.fake.add_valid(10)
        for i in range(len(fake.fake.leaves) - 10, len(fake.fake.leaves)):
            leaf = acta_pb2.LogLeaf.FromString(fake.fake.leaves[i])
            leaf.acta_record.acta.image_sha256 = bytes(bounds.MAX_LEAF_BYTES - 300)
            fake.fake.leaves[i] = leaf.SerializeToString(deterministic=True)
        await service.follower.cut_once()
        await service.follower.cut_once()  # a heartbeat over the large leaves
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    now = dt.datetime.now(dt.UTC)
    # The largest entry bundle the publisher can write: 256 leaves at the bound.
    small = ClientConfig(max_message_bytes=256 * (2 + bounds.MAX_LEAF_BYTES))
    report = verify_bundle(
        tmp_path / "bundle", trust_root=_pinned(publisher), config=small, now=now
    )
    assert len(report.cuts) == 3
    assert report.recount.tree_size == 1100 + 1 + 10 + 1 + 1


def _pinned(publisher: PublisherFiles) -> TrustedRoot:
    return TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
        now=dt.datetime.now(dt.UTC),
    )


@asynccontextmanager
async def _publishing(
    tmp_path: Path, actas: int
) -> AsyncIterator[tuple[FakeAggregation, PublicationService, PublisherFiles]]:
    """A publication service over a fake aggregation of a small election (1,136 actas),
    ``actas`` of them in its first cut."""
    fake = await start_fake_aggregation(small_election(casillas_per_section=70))
    fake.fake.add_valid(actas)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        await wait_for_first_cut(service, tmp_path / "bundle")
        yield fake.fake, service, publisher
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_bundle_read_mid_cut_verifies_the_cut_latest_names(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    async with _publishing(tmp_path, 5) as (fake, service, publisher):
        for n in (100, 50):
            fake.add_valid(n)
            await service.follower.cut_once()
        # The pointers of cut 3, as they are until the next cut moves them.
        pointers = {name: (bundle / name).read_bytes() for name in ("latest", "checkpoint")}
        fake.add_valid(200)  # cut 4 fills the first tile: cut 3's partial ones go
        await service.follower.cut_once()
    # Every file of cut 4 is written, its pointers are not yet: as a reader, or a mirror
    # copying the directory, sees the bundle in the middle of the cut.
    for name, data in pointers.items():
        (bundle / name).write_bytes(data)
    assert (bundle / "cuts/4.cut").is_file()
    assert not (bundle / "tile/0/000.p").exists()
    report = verify_bundle(bundle, trust_root=_pinned(publisher))
    assert report.latest.cut_number == 3
    assert report.recount.tree_size == 5 + 100 + 50 + 3


async def test_verify_bundle_cli_passes_while_the_publisher_writes_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    async with _publishing(tmp_path, 5) as (fake, service, publisher):
        root = str(publisher.trust_root_dir / "trust-root-v1.binpb")
        stop = threading.Event()
        codes: list[int] = []

        def verify_until_stopped() -> None:
            while not stop.is_set():
                codes.append(main(["--trust-root", root, "verify-bundle", str(bundle)]))

        reader = asyncio.create_task(asyncio.to_thread(verify_until_stopped))
        try:
            rng = random.Random(2026)
            # Cut (over partial and full tiles) until the reader has verified a dozen
            # times while at least 30 cuts were being written.
            for cuts in range(400):  # bounded
                if len(codes) >= 12 and cuts >= 30:
                    break
                fake.add_valid(min(rng.randrange(0, 12), fake.valid_left))
                await service.follower.cut_once()
                await asyncio.sleep(0.001)  # let the reader's thread run
        finally:
            stop.set()
            await reader
    err = capsys.readouterr().err
    assert set(codes) == {EXIT_OK}, err
    # It read while the bundle grew: it verified many different newest cuts.
    verified = set(re.findall(r"newest cut (\d+)", err))
    assert len(codes) >= 12
    assert len(verified) >= 4, verified


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


def _flip(at: int) -> Callable[[bytes], bytes]:
    return lambda data: data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _other_votes(data: bytes) -> bytes:
    entries = parse_entry_bundle(data, 256)
    leaf = acta_pb2.LogLeaf.FromString(entries[7])
    leaf.acta_record.acta.option_votes[0].votes += 1
    entries[7] = leaf.SerializeToString(deterministic=True)
    return encode_entry_bundle(entries)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A bundle of four cuts (sizes 6, 107, 158, 359) and its pinned trust root file."""
    tmp_path = tmp_path_factory.mktemp("published")

    async def publish() -> Path:
        async with _publishing(tmp_path, 5) as (fake, service, publisher):
            for n in (100, 50, 200):
                fake.add_valid(n)
                await service.follower.cut_once()
            return publisher.trust_root_dir / "trust-root-v1.binpb"

    return tmp_path / "bundle", asyncio.run(publish())


# Each a file of the bundle and what an attacker (or a broken mirror) does to it.
TAMPERED: dict[str, tuple[str, Callable[[bytes], bytes] | None, type[Exception]]] = {
    "full-tile": ("tile/0/000", _flip(32 * 9 + 4), BadProofError),
    "partial-tile": ("tile/0/001.p/103", _flip(3), BadProofError),
    "level-1-tile": ("tile/1/000.p/1", _flip(0), BadProofError),
    "full-tile-cut-short": ("tile/0/000", lambda d: d[:-32], MalformedDataError),
    "tile-missing": ("tile/0/001.p/103", None, MalformedDataError),
    "entry-of-other-votes": ("tile/entries/000", _other_votes, BadProofError),
    "entry-bundle-cut-short": ("tile/entries/000", lambda d: d[:-1], MalformedDataError),
    "entry-bundle-missing": ("tile/entries/001.p/103", None, MalformedDataError),
    "checkpoint-root-changed": ("checkpoint", _flip(40), BadSignatureError),
    "checkpoint-missing": ("checkpoint", None, MalformedDataError),
}


@pytest.mark.parametrize("case", TAMPERED, ids=str)
def test_rejects_bundle_whose_tiles_entries_or_checkpoint_were_tampered(
    published: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    original, root_file = published
    name, change, error = TAMPERED[case]
    bundle = tmp_path / "bundle"
    shutil.copytree(original, bundle)
    if change is None:
        (bundle / name).unlink()
    else:
        _rewrite(bundle / name, change)
    root = TrustedRoot.from_bytes(root_file.read_bytes(), now=dt.datetime.now(dt.UTC))
    with pytest.raises(error):
        verify_bundle(bundle, trust_root=root)


def test_rejects_bundle_whose_checkpoint_is_older_than_latest(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    original, root_file = published
    bundle = tmp_path / "bundle"
    shutil.copytree(original, bundle)
    (bundle / "checkpoint").write_bytes((bundle / "checkpoints/158").read_bytes())
    root = TrustedRoot.from_bytes(root_file.read_bytes(), now=dt.datetime.now(dt.UTC))
    with pytest.raises(MalformedDataError):
        verify_bundle(bundle, trust_root=root)


async def test_sdk_client_verifies_live_cuts_proofs_and_a_recount(tmp_path: Path) -> None:
    election = small_election()
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(6)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        pinned = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        client = Client(
            endpoint=f"127.0.0.1:{service.port}",
            trust_root=pinned,
            state_dir=tmp_path / "client-state",
            unsafe_plaintext=True,
        )
        try:
            # The SDK client is synchronous: run it off the loop that serves it.
            first = await asyncio.to_thread(client.latest)
            fake.fake.add_valid(9)
            await service.follower.cut_once()
            second = await asyncio.to_thread(client.latest)  # consistency-checked
            assert second.checkpoint.size > first.checkpoint.size
            wanted = acta_pb2.LogLeaf.FromString(fake.fake.leaves[3]).acta_record.acta_id
            proven = await asyncio.to_thread(client.prove_acta, wanted)
            assert proven.record.acta_id == wanted
            assert proven.leaf == fake.fake.leaves[3]
            report = await asyncio.to_thread(client.recount)
            assert report.tree_size >= second.checkpoint.size
            assert len(report.cuts) >= 2
        finally:
            client.close()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


# -- the commands docs/bundle-format.md shows -------------------------------------------

BUNDLE_DOC = REPO_ROOT / "docs" / "bundle-format.md"


def _doc_commands() -> list[list[str]]:
    """Each ``$ veritally-client ...`` line of the console blocks of bundle-format.md."""
    found: list[list[str]] = []
    text = BUNDLE_DOC.read_text(encoding="utf-8")
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            assert line.startswith("$ "), f"output shown but not checked: {line}"
            argv = shlex.split(line[2:])
            assert argv[0] == "veritally-client", line
            found.append(argv[1:])
    return found


def test_bundle_doc_shows_how_to_verify_a_bundle() -> None:
    assert any("verify-bundle" in argv for argv in _doc_commands())


@pytest.mark.parametrize("argv", _doc_commands(), ids=" ".join)
def test_bundle_doc_command_runs_on_a_bundle_the_publisher_wrote(
    published: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    bundle, root_file = published
    # The names the docs use: the bundle directory, and the trust root file the
    # publisher's trust-root command writes (version 1, pinned out of band).
    shutil.copytree(bundle, tmp_path / "bundle")
    shutil.copy(root_file, tmp_path / root_file.name)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_OK, capsys.readouterr().err
    assert "bundle verified: 4 cuts, 359 leaves, newest cut 4" in capsys.readouterr().err
