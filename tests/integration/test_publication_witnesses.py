"""Publication sends every committed checkpoint to three real ``veritally witness serve``
processes and serves the cut with their cosignatures; the SDK enforces the trust root's
2-of-3 policy. A split view (one key, two stores, two trees of one size) reaches a quorum
once at most, and the evidence proves the equivocation to anyone with the trust root."""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_witness_process import WAIT_S, WitnessProcess, start, veritally
from tests.pub_support import (
    PublisherFiles,
    RunningFake,
    make_publisher,
    publication_config,
    start_fake_aggregation,
    wait_for_first_cut,
)
from tests.witness_support import TestLog
from veritally.publication.app import PublicationService, start_publication
from veritally.publication.trustroot import build_body, trust_root_path
from veritally.publication.witnesses import WitnessEndpoint
from veritally_client import ClientConfig, InsufficientCosignaturesError
from veritally_client._state import ForkEvidence
from veritally_client._trustroot import TrustedRoot, sign_trust_root
from veritally_client._verify import CutVerifier, SignedCutBytes, VerifiedCut
from veritally_client.protocol import CosignatureVerifier
from veritally_client.protocol.pb import log_pb2

CONFIG = ClientConfig()


@dataclass
class Witnesses:
    states: list[Path]
    keys: list[CosignatureVerifier]
    processes: list[WitnessProcess]

    def endpoints(self) -> tuple[WitnessEndpoint, ...]:
        return tuple(
            WitnessEndpoint(key=k, url=f"http://127.0.0.1:{p.port}")
            for k, p in zip(self.keys, self.processes, strict=True)
        )


@pytest.fixture
def publisher(tmp_path: Path) -> PublisherFiles:
    return make_publisher(tmp_path)


@pytest.fixture
def witnesses(tmp_path: Path, publisher: PublisherFiles) -> Iterator[Witnesses]:
    states, keys, processes = [], [], []
    origin = publisher.signer.name
    for i in range(3):
        state = tmp_path / "witnesses" / f"w{i}"
        made = veritally("witness", "keygen", "--state", str(state), "--name", f"w{i}.example")
        assert made.returncode == 0, made.stderr
        added = veritally(
            "witness", "add-log", "--state", str(state), "--origin", origin,
            "--key", publisher.signer.verifier().key_string(),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        states.append(state)
        keys.append(CosignatureVerifier.from_key_string(made.stdout.strip()))
        processes.append(start(state))
    w = Witnesses(states, keys, processes)
    # Version 2 of the trust root lists them, 2 of 3 required, signed by the publisher.
    body = build_body(
        version=2,
        origin=origin,
        publishers=[publisher.signer],
        threshold=1,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        witnesses=keys,
        witness_threshold=2,
    )
    trust_root_path(publisher.trust_root_dir, 2).write_bytes(
        sign_trust_root(body, [publisher.signer])
    )
    yield w
    for p in w.processes:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
            p.popen.wait(timeout=WAIT_S)


@dataclass
class Running:
    fake: RunningFake
    service: PublicationService


@pytest.fixture
async def running(
    tmp_path: Path, publisher: PublisherFiles, witnesses: Witnesses
) -> AsyncIterator[Running]:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    config = dataclasses.replace(
        publication_config(tmp_path, publisher, fake.target), witnesses=witnesses.endpoints()
    )
    service = await start_publication(config)
    await wait_for_first_cut(service, tmp_path / "bundle")
    yield Running(fake, service)
    await service.stop(grace=0.1)
    await fake.stop()


def root_of(publisher: PublisherFiles) -> TrustedRoot:
    docs = [trust_root_path(publisher.trust_root_dir, v).read_bytes() for v in (1, 2)]
    return TrustedRoot.from_chain(docs, now=dt.datetime.now(dt.UTC))


def verify(root: TrustedRoot, cut: log_pb2.SignedCut) -> VerifiedCut:
    return CutVerifier(trust_root=root, config=CONFIG).verify_update(
        SignedCutBytes(
            checkpoint=cut.checkpoint,
            cut_leaf=cut.cut_leaf,
            inclusion_proof=tuple(cut.inclusion_proof),
            results=cut.results,
        ),
        trusted=None,
        consistency_proof=[],
        now=dt.datetime.now(dt.UTC),
    )


def cosigners(note: bytes) -> int:
    return note.count(b"\n\xe2\x80\x94 w")


async def next_cut(running: Running, root: TrustedRoot, *, cosigned: int) -> log_pb2.SignedCut:
    """Three more actas and a cut, served with ``cosigned`` cosignatures, verified."""
    running.fake.fake.add(3)
    await running.service.follower.cut_once()
    cut = running.service.engine.latest
    assert cut is not None
    assert cosigners(cut.checkpoint) == cosigned
    verify(root, cut)
    return cut


async def test_cuts_are_served_with_the_cosignatures_of_three_witnesses(
    running: Running, publisher: PublisherFiles, tmp_path: Path
) -> None:
    root = root_of(publisher)
    assert running.service.engine.latest is not None
    first = running.service.engine.latest
    assert cosigners(first.checkpoint) == 3
    verify(root, first)
    second = await next_cut(running, root, cosigned=3)
    # The bundle's checkpoint is the cosigned note.
    assert (tmp_path / "bundle" / "checkpoint").read_bytes() == second.checkpoint


async def test_a_witness_killed_mid_night_does_not_stop_cuts_and_refuses_forks_after_restart(
    running: Running, publisher: PublisherFiles, witnesses: Witnesses
) -> None:
    root = root_of(publisher)
    witnesses.processes[2].kill()
    await next_cut(running, root, cosigned=2)  # media keep verifying with the other two
    samples = running.service.metrics.registry.get_sample_value(
        "veritally_publication_witness_requests_total",
        {"witness": "w2.example", "outcome": "unreachable"},
    )
    assert samples == 1
    # Restarted from its state directory: it cosigns the next cut, which extends the one
    # it cosigned before the kill.
    witnesses.processes[2] = start(witnesses.states[2])
    collector = running.service.engine.witnesses
    assert collector is not None
    collector.witnesses = witnesses.endpoints()  # its new port
    back = await next_cut(running, root, cosigned=3)
    # It never cosigns a tree that does not extend what it cosigned before the kill.
    fork = TestLog(signer=publisher.signer, origin=publisher.signer.name)
    fork.grow(back_size(back), tag=b"forged")
    status, _, _ = witnesses.processes[2].post(fork.request(back_size(back)))
    assert status == 422


def back_size(cut: log_pb2.SignedCut) -> int:
    return int(cut.checkpoint.split(b"\n")[1])


async def test_split_view_reaches_a_quorum_once_and_the_evidence_proves_it(
    tmp_path: Path, publisher: PublisherFiles, witnesses: Witnesses
) -> None:
    root = root_of(publisher)
    # One key, two stores: outlet A is shown one tree, outlet B another of the same size.
    views = []
    for name in ("a", "b"):
        fake = await start_fake_aggregation()
        fake.fake.add(10, prefix=name.upper())
        directory = tmp_path / name
        directory.mkdir()
        config = dataclasses.replace(
            publication_config(directory, publisher, fake.target, bundle=False),
            witnesses=witnesses.endpoints(),
        )
        service = await start_publication(config)
        await wait_for_first_cut(service)
        views.append((fake, service))
    try:
        cut_a, cut_b = (s.engine.latest for _, s in views)
        assert cut_a is not None
        assert cut_b is not None
        assert back_size(cut_a) == back_size(cut_b)
        assert cut_a.checkpoint != cut_b.checkpoint
        verify(root, cut_a)  # outlet A: the view the witnesses saw first
        with pytest.raises(InsufficientCosignaturesError) as refused:
            verify(root, cut_b)  # outlet B: the witnesses refused to cosign it
        assert refused.value.valid == 0
    finally:
        for fake, service in views:
            await service.stop(grace=0.1)
            await fake.stop()
    # A third party with the trust root alone: outlet A's cosigned note and the note
    # outlet B refused are both signed by the publisher, for one size, with two roots.
    evidence = ForkEvidence(
        kind="same-size",
        origin=root.origin,
        first=cut_a.checkpoint,
        second=refused.value.note,
        consistency_proof=(),
    )
    CutVerifier(trust_root=root, config=CONFIG).verify_evidence(evidence)
    # Every witness kept the two notes too.
    for state in witnesses.states:
        assert len(list((state / "evidence").iterdir())) >= 1
