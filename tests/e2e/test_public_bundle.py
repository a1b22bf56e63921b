"""The stack's public bundle listener: the static bundle over HTTPS through Envoy, read
without a client certificate, as mirrors and the public read it.

The SDK verifies the stack's cuts from it (``Client(endpoint="https://.../")``); the
files carry the bundle's caching rules (immutable names cached by Envoy, ``latest``
revalidated with its ETag); only reads are served; a flood from one address meets that
address's own token bucket (HTTP 429).
"""

from __future__ import annotations

import re
import shlex
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import Client, ClientConfig, load_trust_root

pytestmark = [pytest.mark.e2e]

CASILLAS = 50
# A small per-address budget so that a flood is quick to provoke (GETs).
PER_IP = TokenBucket(burst=80, per_second=20)
WAIT_S = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("stack"))
    Bootstrap(casillas=CASILLAS, seed=3).ensure(state)
    with Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        limits=Limits(public_per_ip=PER_IP),
    ) as running:
        yield running


def _http(stack: Stack) -> httpx.Client:
    """An HTTP/2 client that trusts the stack's CA and has no certificate of its own."""
    context = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
    return httpx.Client(http2=True, verify=context, base_url=f"https://{stack.endpoints.public}")


def _client(stack: Stack, state: Path) -> Client:
    return Client(
        endpoint=f"https://{stack.endpoints.public}/",
        trust_root=load_trust_root(stack.state.trust_root_v1),
        state_dir=state,
        http_ca=stack.pki.ca_cert.read_bytes(),
        config=ClientConfig(max_checkpoint_age=120),
    )


def test_sdk_verifies_the_stacks_cuts_from_the_public_listener_without_a_certificate(
    stack: Stack, tmp_path: Path
) -> None:
    with _client(stack, tmp_path / "state") as client:
        first = client.latest()
        deadline = time.monotonic() + WAIT_S
        while (newer := client.latest()).cut_number == first.cut_number:
            assert time.monotonic() < deadline, "no new cut on the public listener"
            time.sleep(0.5)
        # A consistency proof from the tiles the listener served, to a newer signed tree.
        assert newer.tree_size > first.tree_size
        assert client.recount().tree_size == newer.tree_size


def test_public_files_carry_the_bundles_caching_rules_and_envoy_caches_them(
    stack: Stack,
) -> None:
    with _http(stack) as http:
        latest = http.get("/latest")
        assert latest.status_code == 200
        assert latest.http_version == "HTTP/2"
        assert latest.headers["cache-control"] == "no-cache"
        again = http.get("/latest", headers={"If-None-Match": latest.headers["etag"]})
        assert again.status_code in (200, 304)  # 200 only if a cut came in between
        cut = latest.json()["cut"]
        first = http.get(f"/{cut}")
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        second = http.get(f"/{cut}")
        assert second.content == first.content
        assert "age" in second.headers  # served from Envoy's cache, not the origin


def test_public_listener_serves_reads_only_and_nothing_outside_the_bundle(stack: Stack) -> None:
    with _http(stack) as http:
        assert http.post("/latest", content=b"x").status_code == 405
        assert http.delete("/latest").status_code == 405
        assert http.get("/../state/pki/ca/ca.key").status_code == 404
        assert http.get("/cuts/").status_code == 404


def test_docs_curl_of_the_public_listener_needs_no_client_certificate(stack: Stack) -> None:
    text = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index("## The public bundle listener") :]
    start = section.index("```sh\n") + len("```sh\n")
    (line,) = section[start : section.index("```\n", start)].splitlines()
    command = line.split("#")[0]
    command = command.replace("state/pki/ca/ca.pem", str(stack.pki.ca_cert))
    command = command.replace("127.0.0.1:8446", stack.endpoints.public)
    done = subprocess.run(shlex.split(command), capture_output=True, timeout=30, check=True)
    head = done.stdout.decode().lower()
    assert head.startswith("http/2 200")
    assert "cache-control: no-cache" in head
    assert "etag: " in head


def test_flood_from_one_address_is_answered_429_by_its_own_bucket(stack: Stack) -> None:
    # h2load: 400 GETs, 50 at once on one HTTP/2 connection from one address.
    done = subprocess.run(
        [
            "h2load",
            "-n",
            "400",
            "-c",
            "1",
            "-m",
            "50",
            f"https://{stack.endpoints.public}/checkpoint",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx", done.stdout)
    assert codes is not None, done.stdout
    ok, _, limited = (int(g) for g in codes.groups())
    assert ok + limited == 400
    assert PER_IP.burst // 2 <= ok < 400
    time.sleep(PER_IP.burst / PER_IP.per_second)  # the bucket refills
