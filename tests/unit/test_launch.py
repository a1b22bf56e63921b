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
