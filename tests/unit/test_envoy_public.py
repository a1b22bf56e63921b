"""The public bundle listener as rendered: server TLS without client certificates, a
token bucket per client address, Envoy's cache in front of a loopback origin, reads only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from veritally.mesh.envoy import Endpoint, Topology, default_topology, render, validate, write
from veritally.mesh.envoy_public import ORIGIN_CLUSTER
from veritally.pki import init_pki

TD = "veritally.example"


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return default_topology(pki_dir=tmp_path / "pki", trust_domain=TD, state_dir=tmp_path)


def _public(topology: Topology) -> tuple[dict[str, Any], dict[str, Any]]:
    listeners = render(topology)["static_resources"]["listeners"]
    (listener,) = [x for x in listeners if x["name"] == "public"]
    chain = listener["filter_chains"][0]
    (hcm,) = [f for f in chain["filters"] if f["name"].endswith("http_connection_manager")]
    return chain, hcm["typed_config"]


def test_public_listener_asks_no_client_certificate(topology: Topology) -> None:
    chain, _ = _public(topology)
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is False
    context = tls["common_tls_context"]
    assert "validation_context" not in context
    assert "combined_validation_context" not in context
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    assert chain["transport_socket_connect_timeout"]  # handshakes are bounded


def test_flood_from_one_address_meets_its_own_bucket_keyed_on_the_tcp_peer(
    topology: Topology,
) -> None:
    _, hcm = _public(topology)
    (limit,) = [f for f in hcm["http_filters"] if f["name"].endswith("local_ratelimit")]
    config = limit["typed_config"]
    # The peer address Envoy saw, never a header the client sets.
    assert config["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    (descriptor,) = config["descriptors"]
    assert descriptor["entries"] == [{"key": "remote_address", "value": ""}]
    per_ip = topology.limits.public_per_ip
    assert descriptor["token_bucket"]["max_tokens"] == per_ip.burst
    assert config["token_bucket"]["max_tokens"] == topology.limits.public_total.burst
    assert hcm["use_remote_address"] is True
    assert "xff_num_trusted_hops" not in hcm
    # The rate limit runs before the cache: a flood of cached files is cut too.
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index(limit["name"]) < names.index("envoy.filters.http.cache")


def test_public_listener_serves_reads_only_from_its_origin(topology: Topology) -> None:
    _, hcm = _public(topology)
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    reads, other = vhost["routes"]
    assert reads["route"]["cluster"] == ORIGIN_CLUSTER
    assert reads["match"]["headers"][0]["string_match"]["safe_regex"]["regex"] == "GET|HEAD"
    assert other["direct_response"]["status"] == 405
    clusters = render(topology)["static_resources"]["clusters"]
    (origin,) = [c for c in clusters if c["name"] == ORIGIN_CLUSTER]
    (endpoint,) = origin["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": topology.origin.port}  # type: ignore[union-attr]


def test_origin_off_loopback_or_without_listener_is_refused(topology: Topology) -> None:
    with pytest.raises(ValueError, match="loopback"):
        dataclasses.replace(topology, origin=Endpoint(host="10.0.0.5", port=8080))
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(topology, origin=None)


def test_topology_without_public_listener_renders_none_and_validates(
    topology: Topology, tmp_path: Path
) -> None:
    init_pki(tmp_path / "pki", trust_domain=TD, media=1, capture_centres=1)  # files to validate
    bare = dataclasses.replace(topology, public=None, origin=None)
    config = render(bare)
    names = {x["name"] for x in config["static_resources"]["listeners"]}
    assert "public" not in names
    assert ORIGIN_CLUSTER not in {c["name"] for c in config["static_resources"]["clusters"]}
    validate(write(bare, tmp_path / "envoy.yaml"))


def test_public_access_log_keeps_refusals_and_failures_only(topology: Topology) -> None:
    _, hcm = _public(topology)
    (log,) = hcm["access_log"]
    comparison = log["filter"]["status_code_filter"]["comparison"]
    assert (comparison["op"], comparison["value"]["default_value"]) == ("GE", 400)
