"""``veritally-client replay``: a bundle the real publication service recorded, served by
the real command over HTTP and read as a mirror reads it, at two moments of the night.

At each moment the files served form a bundle that ``verify-bundle`` accepts, naming the
cut of that moment; a later cut's files are 404 before it; ``latest`` and ``checkpoint``
revalidate with their ETag; a path out of the bundle is refused. A recording that does
not verify is never served. The server's bounds (connections, request heads, slow and
idle clients, bodies, methods) are checked on a real socket with small limits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.pub_support import make_publisher, publication_config, start_fake_aggregation
from tests.write_path_support import small_election
from veritally.publication.app import start_publication
from veritally_client._cli import EXIT_USAGE, main
from veritally_client._replay import Recording, ServeLimits, replay
from veritally_client._trustroot import TrustedRoot
from veritally_client.protocol import parse_cut_leaf, tiles_between
from veritally_client.protocol.pb import log_pb2

CLI = Path(sys.executable).parent / "veritally-client"
WAIT_S = 30.0  # bound on every wait for the replay to say something (s)
# The recorded night: acta records added before each cut, and the signed time since the
# cut before. Cut 2 ends inside the first tile, cut 3 fills it; cut 3 comes 10 minutes
# after cut 2 (10 s of a replay at speed 60), cut 4 a minute after cut 3.
NIGHT = [(5, 0), (100, 1), (200, 10), (30, 1)]
SIZES = [6, 107, 308, 339]  # each cut's tree: the acta records and the cut records so far


@dataclass(frozen=True)
class Recorded:
    bundle: Path
    trust_root: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The bundle of a night the real publication service cut, on a clock the test sets."""
    tmp = tmp_path_factory.mktemp("night")
    asyncio.run(_record(tmp))
    return Recorded(bundle=tmp / "bundle", trust_root=tmp / "trust-root" / "trust-root-v1.binpb")


async def _record(tmp: Path) -> None:
    now = [dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)]
    fake = await start_fake_aggregation(small_election(casillas_per_section=70))
    publisher = make_publisher(tmp)
    fake.fake.add_valid(NIGHT[0][0])
    service = await start_publication(
        publication_config(tmp, publisher, fake.target), clock=lambda: now[0]
    )
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if (tmp / "bundle" / "latest").exists():
                break
            await asyncio.sleep(0.01)
        for actas, minutes in NIGHT[1:]:
            now[0] += dt.timedelta(minutes=minutes)
            fake.fake.add_valid(actas)
            await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    assert json.loads((tmp / "bundle" / "latest").read_bytes())["tree_size"] == SIZES[-1]


class Replay:
    """The real ``veritally-client replay`` process and the lines it prints."""

    def __init__(self, argv: list[str], *, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(CLI), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, start: str) -> str:
        """The first line (from here on) that starts with ``start``."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line {start!r}; printed: {self.seen}")
            self.seen.append(line)
            if line.startswith(start):
                return line

    def url(self) -> str:
        return self.until("replay: serving ").split()[2]

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=WAIT_S)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=WAIT_S)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def replays() -> Iterator[list[Replay]]:
    started: list[Replay] = []
    yield started
    for r in started:
        r.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    # Only the replay's own http:// URL, on loopback, is ever opened.
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _mirror(url: str, into: Path) -> int:
    """Copy the bundle at ``url`` into ``into`` as a mirror does, from what ``latest``
    and the cut files name; returns the cut number ``latest`` named."""
    status, raw, _ = _get(url + "latest")
    assert status == 200
    latest = json.loads(raw)
    names = ["checkpoint", latest["election_definition"]]
    names += [f"trust-root/v{v}.binpb" for v in range(1, latest["trust_root_versions"] + 1)]
    for n in range(1, latest["cut_number"] + 1):
        status, data, _ = _get(f"{url}cuts/{n}.cut")
        assert status == 200, n
        (into / "cuts").mkdir(parents=True, exist_ok=True)
        (into / "cuts" / f"{n}.cut").write_bytes(data)
        cut = log_pb2.SignedCut.FromString(data)
        size = int(cut.checkpoint.split(b"\n")[1])  # the note's second line
        names += [f"checkpoints/{size}"]
        names += [f"results/{parse_cut_leaf(cut.cut_leaf).results_sha256.hex()}"]
        # Partial tiles go once their full tile exists: a reader then takes the full one.
        names += [f"{ref.path}|{ref.full_path}" for ref in tiles_between(0, size)]
    for name in dict.fromkeys(names):
        for path in name.split("|"):
            status, data, _ = _get(url + path)
            if status == 200:
                (into / path).parent.mkdir(parents=True, exist_ok=True)
                (into / path).write_bytes(data)
                break
        else:
            raise AssertionError(f"{name} is not served")
    (into / "latest").write_bytes(raw)
    # The copy is of one moment only if the moment did not change while it was made.
    assert _get(url + "latest")[1] == raw, "the replay moved on during the copy"
    return int(latest["cut_number"])


def _verify_bundle(recorded: Recorded, directory: Path) -> str:
    done = subprocess.run(
        [str(CLI), "--trust-root", str(recorded.trust_root), "verify-bundle", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _raw_status(url: str, target: str) -> int:
    """The status of ``GET target`` sent as is (urllib would normalize the dots)."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_replay_serves_each_moment_as_a_bundle_that_verifies(
    recorded: Recorded, replays: list[Replay], tmp_path: Path
) -> None:
    r = Replay(
        [
            "--trust-root",
            str(recorded.trust_root),
            "replay",
            str(recorded.bundle),
            "--speed",
            "60",
            "--from-cut",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--hold",
            "4",
        ]
    )
    replays.append(r)
    url = r.url()
    assert r.until("cut ").startswith("cut 2 live  ")
    assert f"tree size {SIZES[1]}" in r.seen[-1]
    # Moment A: cut 2 (10 s before cut 3 at speed 60).
    _, _, headers = _get(url + "latest")
    assert headers["Cache-Control"] == "no-cache"
    etag = headers["ETag"]
    assert _get(url + "latest", {"If-None-Match": etag})[0] == 304
    _, _, headers = _get(url + "checkpoint")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert _get(url + "checkpoint", {"If-None-Match": headers["ETag"]})[0] == 304
    assert _get(url + "cuts/3.cut")[0] == 404  # cut 3 before its moment
    assert _get(url + "tile/0/000")[0] == 404  # the full tile cut 3 writes
    status, _, headers = _get(url + "tile/0/000.p/6")  # cut 1's partial tile
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for target in ("/../publisher.key", "/cuts/../../publisher.key", "/%2e%2e/publisher.key"):
        assert _raw_status(url, target) == 400, target
    assert _mirror(url, tmp_path / "a") == 2
    assert "newest cut 2" in _verify_bundle(recorded, tmp_path / "a")

    # Moment B: cut 4.
    assert r.until("cut 4 live").split()[1] == "4"
    status, latest_b, headers = _get(url + "latest", {"If-None-Match": etag})
    assert status == 200
    assert json.loads(latest_b)["cut_number"] == 4
    assert headers["ETag"] != etag
    assert _get(url + "tile/0/000")[0] == 200
    assert _get(url + "tile/0/000.p/6")[0] == 404  # gone once the full tile came
    assert _mirror(url, tmp_path / "b") == 4
    assert "newest cut 4" in _verify_bundle(recorded, tmp_path / "b")

    code, err = r.wait()
    assert code == 0, err
    assert [line.split("  ")[0] for line in r.seen if line.startswith("cut ")] == [
        "cut 2 live",
        "cut 3 live",
        "cut 4 live",
    ]
    assert r.until("replay: done").startswith("replay: done")


def test_replay_refuses_a_tampered_recording_and_serves_nothing(
    recorded: Recorded, replays: list[Replay], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(recorded.bundle, bundle)
    tile = bundle / "tile" / "entries" / "000"
    data = bytearray(tile.read_bytes())
    data[100] ^= 1
    tile.write_bytes(bytes(data))
    r = Replay(["--trust-root", str(recorded.trust_root), "replay", str(bundle)])
    replays.append(r)
    code, err = r.wait()
    assert code == 1
    assert "VERIFICATION FAILED" in err
    assert not [line for line in r.seen + list(r.lines.queue) if line and "serving" in line]


def test_replay_refuses_bad_arguments_with_exit_2(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra, message in (
        (["--speed", "0"], "--speed"),
        (["--from-cut", "9"], "--from-cut"),
        (["--listen", "localhost"], "--listen"),
        (["--hold", "-1"], "--hold"),
    ):
        argv = ["--trust-root", str(recorded.trust_root), "replay", str(recorded.bundle)]
        assert main([*argv, *extra]) == EXIT_USAGE, extra
        assert message in capsys.readouterr().err


# -- the server's bounds, on a real socket -------------------------------------------------


@pytest.fixture
def small_server(recorded: Recorded) -> Iterator[tuple[str, int]]:
    """The replay in this process, with two connections and a one-second head limit."""
    root = TrustedRoot.from_bytes(recorded.trust_root.read_bytes(), now=dt.datetime.now(dt.UTC))
    recording = Recording.open(recorded.bundle, trust_root=root)
    urls: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    limits = ServeLimits(max_connections=2, max_head_bytes=2048, head_seconds=1.0)
    thread = threading.Thread(
        target=replay,
        args=(recording,),
        kwargs={
            "listen": ("127.0.0.1", 0),
            "speed": 1.0,
            "hold": 600.0,
            "on_serving": urls.put,
            "limits": limits,
            "stop": stop,
        },
    )
    thread.start()
    try:
        url = urls.get(timeout=WAIT_S)
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        yield host, int(port)
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
    assert not thread.is_alive()


def _exchange(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_slow_client_trickling_its_request_is_disconnected(small_server: tuple[str, int]) -> None:
    with socket.create_connection(small_server, timeout=10) as s:
        s.sendall(b"GET /latest HTTP/1.1\r\n")  # and never the rest
        started = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < 5


def test_idle_keep_alive_connection_is_closed(small_server: tuple[str, int]) -> None:
    with socket.create_connection(small_server, timeout=10) as s:
        s.sendall(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        while s.recv(65536):  # the rest of the answer, then the close
            pass
        assert time.monotonic() - started < 5


def test_connection_flood_beyond_the_limit_is_answered_503(
    small_server: tuple[str, int],
) -> None:
    held = [socket.create_connection(small_server, timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)  # both are being served (waiting for their heads)
        answer = _exchange(small_server, b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for s in held:
            s.close()


def test_oversized_request_head_is_refused_431(small_server: tuple[str, int]) -> None:
    head = b"GET /latest HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4096 + b"\r\n\r\n"
    assert _exchange(small_server, head).startswith(b"HTTP/1.1 431 ")


def test_request_with_a_body_or_another_method_is_refused(
    small_server: tuple[str, int],
) -> None:
    body = b"GET /latest HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    assert _exchange(small_server, body).startswith(b"HTTP/1.1 400 ")
    post = b"POST /latest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    answer = _exchange(small_server, post)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD" in answer


def test_head_gives_the_length_without_the_body(small_server: tuple[str, int]) -> None:
    host, port = small_server
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("HEAD", "/latest")
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) > 100
        assert resp.read() == b""
        conn.request("GET", "/latest")  # the same connection, kept alive
        assert json.loads(conn.getresponse().read())["cut_number"] == 1
    finally:
        conn.close()


# -- the commands docs/sdk.md and the client README show -----------------------------------

SDK_DOC = REPO_ROOT / "docs" / "sdk.md"
CLIENT_README = REPO_ROOT / "clients" / "python" / "README.md"
DOC_PORT = "8088"  # the port the docs show; the test serves on a free one instead


def _doc_lines() -> list[str]:
    """The commands of docs/sdk.md's replay section, then the README's replay line."""
    section = SDK_DOC.read_text(encoding="utf-8").split("## Rehearsing with a replay", 1)[1]
    block: str = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[0]
    lines = block.splitlines()
    readme = CLIENT_README.read_text(encoding="utf-8").split("## The command", 1)[1]
    lines += [line for line in readme.splitlines() if " replay " in line]
    return lines


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_docs_replay_commands_run_as_written(
    recorded: Recorded, replays: list[Replay], tmp_path: Path
) -> None:
    # Where the docs' paths point: `make demo`'s state directory, and the README's.
    (tmp_path / "state" / "trust-root").mkdir(parents=True)
    shutil.copy(recorded.trust_root, tmp_path / "state" / "trust-root")
    shutil.copytree(recorded.bundle, tmp_path / "state" / "bundle")
    shutil.copytree(recorded.bundle, tmp_path / "bundle")
    port = _free_port()
    lines = _doc_lines()
    assert len(lines) == 5, lines
    replay_lines = [line for line in lines if line.startswith("veritally-client ")]
    curl_lines = [line for line in lines if line.startswith("curl ")]
    assert len(replay_lines) == 3
    assert len(curl_lines) == 2
    for line in replay_lines:
        assert f"127.0.0.1:{DOC_PORT}" in line
        words = shlex.split(line.split("#", 1)[0].replace(DOC_PORT, port))
        words = [str(recorded.trust_root) if w == "FILE" else w for w in words]
        r = Replay(words[1:], cwd=tmp_path)
        replays.append(r)
        first = int(words[words.index("--from-cut") + 1]) if "--from-cut" in words else 1
        assert r.until("cut ").startswith(f"cut {first} live  ")
        if "--loop" in words:
            r.until("replay: round 2 from cut 2")
            assert r.until("cut ").startswith("cut 2 live  ")
        if line == replay_lines[0]:
            for curl in curl_lines:
                done = subprocess.run(
                    shlex.split(curl.replace(DOC_PORT, port)),
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                )
                if "/latest" in curl:
                    assert json.loads(done.stdout)["cut_number"] in (1, 2)
                else:
                    head = done.stdout.splitlines()
                    assert head[0].strip() == "HTTP/1.1 200 OK"
                    assert "Cache-Control: no-cache" in [h.strip() for h in head]
                    assert any(h.startswith("ETag: ") for h in head)
        r.proc.send_signal(signal.SIGINT)
        code, err = r.wait()
        assert code == 130, err
