"""The SDK reads a mirror of the bundle over HTTP and verifies exactly what it verifies
over gRPC.

A real nginx serves the bundle with the server block docs/operations.md shows (TLS,
HTTP/2, immutable names, ``latest`` and ``checkpoint`` revalidated), and the client reads
it with ``Client(endpoint="https://.../prep/")``. A faithful copy verifies (cuts, proofs,
a recount, a watch); a copy that tampers with the results, a tile or a checkpoint, rolls
``latest`` back or stops in time gives its typed error; a bundle that the publisher is
writing, or that a mirror is copying in the documented order, verifies while it is read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.nginx_support import OPERATIONS_DOC, free_port, mirror_server_block, running_nginx
from tests.pub_support import (
    make_publisher,
    publication_config,
    start_fake_aggregation,
    wait_for_first_cut,
)
from tests.unit.sdk_fake import FakePublisher, make_trust_root, with_two_cuts, write_bundle
from tests.write_path_support import small_election
from veritally.pki import init_pki
from veritally.publication.app import start_publication
from veritally_client import (
    BadProofError,
    BadSignatureError,
    Client,
    ClientConfig,
    DigestMismatchError,
    MalformedDataError,
    RollbackError,
    StaleCheckpointError,
    TransportError,
)
from veritally_client._cli import EXIT_OK, main
from veritally_client._gen.veritally.v1 import acta_pb2, log_pb2
from veritally_client._http import HttpLimits, HttpTransport
from veritally_client._trustroot import TrustedRoot


@dataclass
class Mirror:
    """A bundle of a fake publisher served by nginx over TLS."""

    publisher: FakePublisher
    bundle: Path
    url: str
    ca: bytes
    access_log: Path

    def publish(self, actas: int = 3) -> None:
        """A new cut, copied into the served bundle with the rsync commands of
        docs/operations.md (``latest`` and ``checkpoint`` last)."""
        self.publisher.step(actas)
        staging = self.bundle.with_name("staging")
        write_bundle(self.publisher, staging)
        rsync_as_documented(staging, self.bundle)

    def trust_root(self) -> TrustedRoot:
        """The publisher's trust root, valid for a month from now (real clock)."""
        now = dt.datetime.now(dt.UTC)
        document = make_trust_root(self.publisher.signers, expires=now + dt.timedelta(days=30))
        return TrustedRoot.from_bytes(document, now=now)

    def client(self, state: Path) -> Client:
        return Client(
            endpoint=self.url,
            trust_root=self.trust_root(),
            state_dir=state,
            http_ca=self.ca,
        )

    def transport(self) -> HttpTransport:
        return HttpTransport.open(self.url, ca=self.ca, limits=HttpLimits(poll_interval=0.1))


def rsync_as_documented(origin: Path, mirror: Path) -> None:
    """Run the mirror copy commands docs/operations.md shows, from ``origin`` (there
    ``origin:/srv/bundle``) into ``mirror`` (there ``/srv/prep``)."""
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Mirrors and CDNs of the bundle") :]
    start = section.index("```sh\n") + len("```sh\n")
    lines = section[start : section.index("```\n", start)].splitlines()
    assert [line.split()[0] for line in lines] == ["rsync", "rsync"]
    for line in lines:
        line = line.replace("origin:/srv/bundle", str(origin)).replace("/srv/prep", str(mirror))
        subprocess.run(shlex.split(line), check=True, timeout=60)


def _serve(tmp_path: Path, root: Path) -> tuple[str, bytes, str, int]:
    """(URL, CA, nginx server block, port) of a TLS mirror of ``root/prep``."""
    pki = init_pki(tmp_path / "pki", trust_domain="veritally.example", media=0, capture_centres=0)
    server = pki.identity("envoy")  # DNS localhost, IP 127.0.0.1
    port = free_port()
    return (
        f"https://127.0.0.1:{port}/prep/",
        pki.ca_cert.read_bytes(),
        mirror_server_block(port=port, cert=server.cert, key=server.key, root=root),
        port,
    )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "srv"
    bundle = root / "prep"
    # Recent cut times: the client checks freshness against the real clock.
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    publisher = with_two_cuts(FakePublisher(now=start))
    write_bundle(publisher, bundle)
    url, ca, block, port = _serve(tmp_path, root)
    with running_nginx(tmp_path / "nginx", block, port=port):
        yield Mirror(publisher, bundle, url, ca, tmp_path / "nginx" / "access.log")


def _cut_file(mirror: Mirror, number: int) -> tuple[Path, log_pb2.SignedCut]:
    path = mirror.bundle / "cuts" / f"{number}.cut"
    return path, log_pb2.SignedCut.FromString(path.read_bytes())


# -- a faithful copy ------------------------------------------------------------------------


def test_faithful_nginx_mirror_verifies_cuts_proofs_and_a_recount(
    mirror: Mirror, tmp_path: Path
) -> None:
    with mirror.client(tmp_path / "state") as client:
        first = client.latest()
        assert (first.cut_number, first.acta_records) == (2, 7)
        mirror.publish(4)
        second = client.latest()  # consistency from tree 9 to 14, computed from tiles
        assert (second.cut_number, second.tree_size, second.acta_records) == (3, 14, 11)
        first_acta = acta_pb2.LogLeaf.FromString(mirror.publisher.leaves[0]).acta_record
        proven = client.prove_acta(first_acta.acta_id)  # found in the entry bundles
        assert (proven.leaf_index, proven.tree_size) == (0, 14)
        report = client.recount()
        assert (report.tree_size, report.acta_records, len(report.cuts)) == (14, 11, 3)
    log = mirror.access_log.read_text()
    assert "GET /prep/latest HTTP/2.0" in log  # HTTP/2, one connection reused


def test_unchanged_bundle_costs_a_304_of_latest_and_immutable_files_are_read_once(
    mirror: Mirror, tmp_path: Path
) -> None:
    transport = mirror.transport()
    client = Client.from_transport(
        transport, trust_root=mirror.trust_root(), state_dir=tmp_path / "state"
    )
    with client:
        client.latest()
        sent = transport.source.requests
        for _ in range(3):
            again = client.latest()
            # The same tree again: its checkpoint alone, checked, results held (ADR 0089).
            assert (again.cut_number, again.results_changed) == (2, False)
        assert transport.source.requests == sent + 3  # `latest` only
        assert transport.source.not_modified == 3
    lines = mirror.access_log.read_text().splitlines()
    assert sum("/prep/cuts/2.cut" in line for line in lines) == 1
    assert sum('"GET /prep/latest HTTP/2.0" 304' in line for line in lines) == 3


def test_watch_over_http_yields_each_new_cut_of_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    transport = mirror.transport()
    with Client.from_transport(
        transport, trust_root=mirror.trust_root(), state_dir=tmp_path / "state"
    ) as client:
        cuts = client.watch()
        assert next(cuts).cut_number == 2
        threading.Timer(0.3, mirror.publish).start()
        assert next(cuts).cut_number == 3


# -- tampered copies ------------------------------------------------------------------------


def test_rejects_mirror_that_tampers_with_the_results(mirror: Mirror, tmp_path: Path) -> None:
    path, cut = _cut_file(mirror, 2)
    cut.results = cut.results[:-1] + bytes([cut.results[-1] ^ 1])
    path.write_bytes(cut.SerializeToString())
    with mirror.client(tmp_path / "state") as client:
        with pytest.raises(DigestMismatchError):
            client.latest()
        assert client.trusted_state is None


def test_rejects_mirror_that_tampers_with_a_tile(mirror: Mirror, tmp_path: Path) -> None:
    with mirror.client(tmp_path / "state") as client:
        client.latest()
        mirror.publish(4)  # tree 14: its edge tile is tile/0/000.p/14
        tile = mirror.bundle / "tile" / "0" / "000.p" / "14"
        data = bytearray(tile.read_bytes())
        data[40] ^= 1
        tile.write_bytes(bytes(data))
        with pytest.raises(BadProofError):
            client.latest()
        assert client.trusted_state is not None
        assert client.trusted_state.cut_number == 2


def test_rejects_mirror_that_tampers_with_a_checkpoint(mirror: Mirror, tmp_path: Path) -> None:
    path, cut = _cut_file(mirror, 2)
    origin, size, root, rest = cut.checkpoint.split(b"\n", 3)
    cut.checkpoint = b"\n".join([origin, size, root[::-1], rest])  # another root
    path.write_bytes(cut.SerializeToString())
    with mirror.client(tmp_path / "state") as client, pytest.raises(BadSignatureError):
        client.latest()


def test_rejects_mirror_that_rolls_latest_back(mirror: Mirror, tmp_path: Path) -> None:
    with mirror.client(tmp_path / "state") as client:
        mirror.publish()
        assert client.latest().cut_number == 3
        latest = json.loads((mirror.bundle / "latest").read_text())
        latest.update(cut_number=2, cut="cuts/2.cut")
        (mirror.bundle / "latest").write_text(json.dumps(latest))
        # nginx's ETag is the modification second and the length: make it another one,
        # as a mirror that rolls back a second or more later has.
        later = time.time() + 2
        os.utime(mirror.bundle / "latest", (later, later))
        with pytest.raises(RollbackError):
            client.latest()


def test_rejects_mirror_frozen_in_time(mirror: Mirror, tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC)]
    config = ClientConfig(max_checkpoint_age=600)
    with Client.from_transport(
        mirror.transport(),
        trust_root=mirror.trust_root(),
        state_dir=tmp_path / "state",
        config=config,
        clock=lambda: now[0],
    ) as client:
        client.latest()
        now[0] += dt.timedelta(minutes=15)  # the mirror still serves cut 2
        with pytest.raises(StaleCheckpointError):
            client.latest()


def test_mirror_that_lacks_the_cut_latest_names_is_a_transport_error(
    mirror: Mirror, tmp_path: Path
) -> None:
    """A copy made in name order (``latest`` before ``cuts/``): retried, never trusted."""
    mirror.publish()
    (mirror.bundle / "cuts" / "3.cut").unlink()
    with mirror.client(tmp_path / "state") as client:
        with pytest.raises(TransportError, match="NOT_FOUND"):
            client.latest()
        assert client.trusted_state is None


def test_rejects_response_larger_than_its_bound_before_reading_it(
    mirror: Mirror, tmp_path: Path
) -> None:
    (mirror.bundle / "latest").write_bytes(b" " * (65 * 1024))
    transport = mirror.transport()
    with pytest.raises(MalformedDataError, match="more than the 65536 allowed"):
        transport.get_latest_cut()
    transport.close()


# -- a bundle being written or copied while it is read -------------------------------------


def _copy_in_documented_order(origin: Path, mirror: Path) -> None:
    """One pass of the documented mirror copy: new names first, then ``checkpoint``,
    then ``latest``, each through a temporary name."""

    def put(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    for dirpath, _, files in os.walk(origin):
        for name in files:
            src = Path(dirpath) / name
            rel = src.relative_to(origin)
            if str(rel) in ("latest", "checkpoint") or name.endswith(".tmp"):
                continue
            dst = mirror / rel
            if not dst.exists():
                try:
                    put(src, dst)
                except FileNotFoundError:
                    continue  # a partial tile the origin removed meanwhile
    for name in ("checkpoint", "latest"):
        put(origin / name, mirror / name)


@pytest.mark.parametrize("served", ["written", "mirrored"])
async def test_bundle_being_written_or_mirrored_while_read_verifies(
    tmp_path: Path, served: str
) -> None:
    root = tmp_path / "srv"
    origin = tmp_path / "origin"
    fake = await start_fake_aggregation(small_election(casillas_per_section=70))
    fake.fake.add_valid(300)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target, interval=0.1)
    config = dataclasses.replace(
        config, bundle_dir=origin if served == "mirrored" else root / "prep"
    )
    service = await start_publication(config)
    url, ca, block, port = _serve(tmp_path, root)
    stop = threading.Event()

    def copier() -> None:
        while not stop.is_set():
            _copy_in_documented_order(origin, root / "prep")

    def read() -> set[int]:
        pinned = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        seen: set[int] = set()
        deadline = time.monotonic() + 4
        with Client(
            endpoint=url, trust_root=pinned, state_dir=tmp_path / "state", http_ca=ca
        ) as client:
            while time.monotonic() < deadline:
                seen.add(client.latest().cut_number)
                # A reader polling fast, within the rate limit of the documented mirror
                # (50 GETs/s; a latest() of a new cut is a few GETs).
                time.sleep(0.2)
            assert client.recount().tree_size > 0
        return seen

    copy = threading.Thread(target=copier)
    try:
        await wait_for_first_cut(service, origin if served == "mirrored" else root / "prep")
        if served == "mirrored":
            _copy_in_documented_order(origin, root / "prep")
            copy.start()
        with running_nginx(tmp_path / "nginx", block, port=port):
            reader = asyncio.create_task(asyncio.to_thread(read))
            while not reader.done():  # new actas into every few cuts, partial tiles going
                fake.fake.add_valid(min(37, fake.fake.valid_left))
                await asyncio.sleep(0.15)
            seen = await reader
    finally:
        stop.set()
        if copy.is_alive():
            copy.join()
        await service.stop(grace=0.1)
        await fake.stop()
    assert len(seen) >= 3, seen


def test_docs_http_example_reads_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    section = text[text.index("## HTTP endpoints") :]
    start = section.index("```python\n") + len("```python\n")
    namespace: dict[str, object] = {}
    exec(section[start : section.index("```\n", start)], namespace)  # noqa: S102 - the docs' code
    now = dt.datetime.now(dt.UTC)
    pinned = tmp_path / "trust-root.binpb"
    pinned.write_bytes(
        make_trust_root(mirror.publisher.signers, expires=now + dt.timedelta(days=30))
    )
    read_mirror = namespace["read_mirror"]
    assert read_mirror(mirror.url, pinned, tmp_path / "state", mirror.ca) == 2  # type: ignore[operator]


def test_docs_command_reads_the_mirror(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    section = text[text.index("## HTTP endpoints") :]
    start = section.index("```sh\n") + len("```sh\n")
    (line,) = section[start : section.index("```\n", start)].splitlines()
    now = dt.datetime.now(dt.UTC)
    pinned = tmp_path / "trust-root-v1.binpb"
    pinned.write_bytes(
        make_trust_root(mirror.publisher.signers, expires=now + dt.timedelta(days=30))
    )
    (tmp_path / "ca.pem").write_bytes(mirror.ca)
    line = line.replace("https://mirror.example/prep/", mirror.url)
    line = line.replace("trust-root-v1.binpb", str(pinned)).replace(
        "ca.pem", str(tmp_path / "ca.pem")
    )
    argv = shlex.split(line)
    assert argv[0] == "veritally-client"
    code = main([*argv[1:3], "--state-dir", str(tmp_path / "state"), *argv[3:]])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert out.startswith("cut 2 · "), out
    assert "· verified" in out.splitlines()[0]


def test_http_transport_reads_a_replay_of_the_bundle(mirror: Mirror, tmp_path: Path) -> None:
    """``veritally-client replay`` serves the bundle layout as it stood at each cut: the
    HTTP transport reads it like any mirror (freshness widened: the recording's cut times
    are its own)."""
    now = dt.datetime.now(dt.UTC)
    pinned = tmp_path / "trust-root-v1.binpb"
    pinned.write_bytes(
        make_trust_root(mirror.publisher.signers, expires=now + dt.timedelta(days=30))
    )
    mirror.publish()  # cuts 1..3 in the recording
    cli = Path(sys.executable).parent / "veritally-client"
    argv = [str(cli), "--trust-root", str(pinned), "replay", str(mirror.bundle)]
    argv += ["--from-cut", "3", "--hold", "60", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("replay: serving "):
            line = proc.stdout.readline()
            assert line, "the replay exited before serving"
        url = line.split()[2]
        with Client.from_transport(
            HttpTransport.unsafe_plaintext(url),
            trust_root=mirror.trust_root(),
            state_dir=tmp_path / "state",
            config=ClientConfig(max_checkpoint_age=7 * 24 * 3600),
        ) as client:
            assert client.latest().cut_number == 3
            assert client.recount().tree_size == client.latest().tree_size
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
