"""Launch configurations and ``veritally serve``'s options are one thing: a configuration's
``argv()`` parses back (``veritally.cli.serve``) into an equal configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from veritally.cli import serve
from veritally.cli.main import build_parser
from veritally.launch import (
    AggregationLaunch,
    ElectionSource,
    IngestLaunch,
    LaunchError,
    PublicationLaunch,
    ServiceLaunch,
)
from veritally.rpc import TlsFiles
from veritally.serve import publication_config
from veritally_client.protocol import CosignatureSigner

WITNESSES = tuple(
    (CosignatureSigner(name=f"w{i}.example", seed=bytes([i + 1]) * 32).verifier().key_string(), url)
    for i, url in enumerate(["http://127.0.0.1:9001", "https://witness.example.org/prep"])
)

OWN = TlsFiles(cert=Path("/p/own.pem"), key=Path("/p/own.key"), ca=Path("/p/ca.pem"))
PEER = TlsFiles(cert=Path("/p/peer.pem"), key=Path("/p/peer.key"), ca=Path("/p/ca2.pem"))

LAUNCHES: list[ServiceLaunch] = [
    IngestLaunch(db=Path("/s/i.db"), election=ElectionSource(yaml=Path("/e/election.yaml"))),
    IngestLaunch(
        db=Path("/s/i.db"),
        listen="127.0.0.1:8450",
        tls=OWN,
        allowed_peers=("spiffe://td/service/envoy", "spiffe://td/ops/ops-01"),
        port_file=Path("/s/port"),
        drain_seconds=1.5,
        grace_seconds=0.25,
        metrics_listen="127.0.0.1:8460",
        election=ElectionSource(definition_bytes=Path("/e/definition.binpb")),
        single_capture=True,
    ),
    AggregationLaunch(
        db=Path("/s/a.db"),
        election=ElectionSource(definition_bytes=Path("/e/definition.binpb")),
        ingest="127.0.0.1:8444",
    ),
    AggregationLaunch(
        db=Path("/s/a.db"),
        tls=OWN,
        drain_seconds=2.0,
        election=ElectionSource(yaml=Path("/e/election.yaml")),
        ingest="mesh:8444",
        ingest_server_name="ingest",
        ingest_tls=PEER,
    ),
    PublicationLaunch(
        db=Path("/s/p.db"),
        key_files=(Path("/k/publisher.key"),),
        trust_root_dir=Path("/t"),
        aggregation="127.0.0.1:8451",
    ),
    PublicationLaunch(
        db=Path("/s/p.db"),
        listen="0.0.0.0:8452",
        tls=OWN,
        port_file=Path("/s/pport"),
        grace_seconds=7.0,
        metrics_listen="10.0.0.5:9102",
        key_files=(Path("/k/a.key"), Path("/k/b.key")),
        passphrase_file=Path("/k/pass"),
        trust_root_dir=Path("/t"),
        aggregation="mesh:8444",
        aggregation_server_name="aggregation",
        aggregation_tls=PEER,
        interval_seconds=0.2,
        origin="veritally.example/e1",
        bundle_dir=Path("/b"),
    ),
    PublicationLaunch(
        db=Path("/s/p.db"),
        key_files=(Path("/k/publisher.key"),),
        trust_root_dir=Path("/t"),
        aggregation="127.0.0.1:8451",
        witnesses=WITNESSES,
        witness_timeout_seconds=0.25,
    ),
]


@pytest.mark.parametrize("launch", LAUNCHES, ids=lambda x: f"{x.service}")
def test_argv_parses_back_into_the_same_launch(launch: ServiceLaunch) -> None:
    argv = launch.argv()
    assert argv[:2] == ["serve", launch.service]
    parsed = serve.launch_from_args(build_parser(argv).parse_args(argv))
    assert parsed == launch
    assert parsed.argv() == argv


def test_an_election_source_names_exactly_one_file() -> None:
    with pytest.raises(LaunchError):
        ElectionSource()
    with pytest.raises(LaunchError):
        ElectionSource(yaml=Path("a"), definition_bytes=Path("b"))


def test_allowed_peers_need_tls() -> None:
    with pytest.raises(LaunchError, match="--allow-peer needs"):
        IngestLaunch(
            db=Path("i.db"),
            election=ElectionSource(yaml=Path("e.yaml")),
            allowed_peers=("spiffe://td/service/envoy",),
        )


@pytest.mark.parametrize(
    ("witness", "match"),
    [
        (("w1+0000+not-a-key", "http://127.0.0.1:9001"), "not a cosignature/v1 verifier key"),
        ((WITNESSES[0][0], "file:///etc/passwd"), "must be http"),
        ((WITNESSES[0][0], "http://" + "a" * 3000), "at most 2048"),
    ],
)
def test_publication_refuses_a_witness_it_could_not_use(
    witness: tuple[str, str], match: str
) -> None:
    """A bad witness key or URL stops ``veritally serve publication`` at once, naming
    --witness, instead of a publisher that silently collects no cosignature."""
    with pytest.raises(LaunchError, match=f"--witness: .*{match}"):
        PublicationLaunch(
            db=Path("p.db"),
            key_files=(Path("k"),),
            trust_root_dir=Path("t"),
            aggregation="127.0.0.1:1",
            witnesses=(witness,),
        )


def test_publication_witness_timeout_is_bounded() -> None:
    with pytest.raises(LaunchError, match="--witness-timeout"):
        PublicationLaunch(
            db=Path("p.db"),
            key_files=(Path("k"),),
            trust_root_dir=Path("t"),
            aggregation="127.0.0.1:1",
            witness_timeout_seconds=0,
        )


def test_publication_config_sends_to_every_witness_of_the_command_line() -> None:
    launch = LAUNCHES[-1]
    assert isinstance(launch, PublicationLaunch)
    config = publication_config(launch)
    assert [(w.key.key_string(), w.url) for w in config.witnesses] == list(WITNESSES)
    assert config.witness_timeout_seconds == 0.25
