"""The rendered Envoy configuration: Envoy accepts every variant, and it says what the
mesh promises (who may call what, per-identity budgets, loopback admin, no retried
writes, streams without timeouts).

`envoy --mode validate` runs as a subprocess (no sockets are opened)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from tests.conftest import REPO_ROOT
from veritally.mesh.envoy import (
    METHODS,
    READ_MAX_REQUEST_BYTES,
    REST_MAX_RESPONSE_BYTES,
    REST_ROUTES,
    CircuitBreaker,
    Endpoint,
    EnvoyConfigError,
    Limits,
    MeshTls,
    TokenBucket,
    Topology,
    build_descriptor_set,
    default_topology,
    reference_topology,
    render,
    render_ca_secret_yaml,
    render_yaml,
    validate,
    write,
)
from veritally.mesh.envoy_public import ORIGIN_CLUSTER
from veritally.pki import Pki, init_pki
from veritally.rpc import MAX_MESSAGE_BYTES

TD = "veritally.example"
SPIFFE = f"spiffe://{TD}"

# What the e2e isolation tests run with: caps small enough to reach in a test.
SMALL_LIMITS = Limits(
    tls_handshake_timeout_s=0.5,
    max_connections=400,
    edge_max_connections=200,
    rest_max_connections=50,
    mesh_max_connections=50,
    public_max_connections=50,
    edge_stream=CircuitBreaker(
        max_connections=4, max_pending_requests=8, max_requests=16, max_retries=0
    ),
)

MEDIA_READS = {
    f"/veritally.v1.PublicationService/{m}"
    for m in (
        "GetLatestCut",
        "GetCut",
        "WatchCuts",
        "GetActaInclusionProof",
        "GetConsistencyProof",
        "GetLeaves",
        "GetTrustRoot",
        "GetElectionDefinition",
    )
}
# Reads of the JSON view alone: gRPC clients name the results with the SDK.
JSON_VIEW_READS = {
    f"/veritally.v1.PublicationService/{m}" for m in ("GetLatestCutView", "GetCutView")
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki"), trust_domain=TD, media=2, capture_centres=2)


@pytest.fixture(scope="module")
def topology(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Topology:
    state = tmp_path_factory.mktemp("state")
    return default_topology(pki_dir=pki.root, trust_domain=TD, state_dir=state)


@pytest.fixture(scope="module")
def config(topology: Topology) -> dict[str, Any]:
    return render(topology)


def _listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    listeners: list[dict[str, Any]] = config["static_resources"]["listeners"]
    (listener,) = [x for x in listeners if x["name"] == name]
    return listener


def _network_filter(config: dict[str, Any], listener: str, name: str) -> dict[str, Any]:
    filters = _listener(config, listener)["filter_chains"][0]["filters"]
    (found,) = [f for f in filters if f["name"] == name]
    typed: dict[str, Any] = found["typed_config"]
    return typed


def _hcm(config: dict[str, Any], name: str) -> dict[str, Any]:
    return _network_filter(config, name, "envoy.filters.network.http_connection_manager")


def _filter(config: dict[str, Any], listener: str, name: str) -> dict[str, Any]:
    (found,) = [f for f in _hcm(config, listener)["http_filters"] if f["name"] == name]
    typed: dict[str, Any] = found["typed_config"]
    return typed


def _policies(config: dict[str, Any], listener: str) -> dict[str, tuple[dict[str, str], set[str]]]:
    """policy -> (principal matcher, allowed paths)."""
    rules = _filter(config, listener, "envoy.filters.http.rbac")["rules"]
    assert rules["action"] == "ALLOW"
    out = {}
    for name, policy in rules["policies"].items():
        (principal,) = policy["principals"]
        (permission,) = policy["permissions"]
        paths = {r["url_path"]["path"]["exact"] for r in permission["or_rules"]["rules"]}
        out[name] = (principal["authenticated"]["principal_name"], paths)
    return out


def _routes(config: dict[str, Any], listener: str) -> dict[str, dict[str, Any]]:
    """The routes of one listener's methods, by path (not the compressed-request one)."""
    (vhost,) = _hcm(config, listener)["route_config"]["virtual_hosts"]
    return {r["match"]["path"]: r for r in vhost["routes"] if "path" in r["match"]}


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services' clusters (the public listener's static origin is tested apart)."""
    clusters = config["static_resources"]["clusters"]
    return {c["name"]: c for c in clusters if c["name"] != ORIGIN_CLUSTER}


# --------------------------------------------------------------------------------------
# Envoy accepts every variant we render


def _variants(pki: Pki, state: Path) -> Iterator[tuple[str, Topology]]:
    base = default_topology(pki_dir=pki.root, trust_domain=TD, state_dir=state)
    yield "default (CRL through SDS)", base
    yield "static CRL", dataclasses.replace(base, tls=MeshTls.from_pki(pki))
    yield "no CRL", dataclasses.replace(base, tls=MeshTls.from_pki(pki, with_crl=False))
    yield "no REST view", dataclasses.replace(base, rest=None)
    yield (
        "several replicas, host names",
        dataclasses.replace(
            base,
            services={
                "ingest": [Endpoint(host="localhost", port=9001), Endpoint.parse("127.0.0.1:9002")],
                "aggregation": [Endpoint.parse("127.0.0.1:9011")] * 1,
                "publication": [Endpoint.parse(f"127.0.0.1:{p}") for p in (9021, 9022, 9023)],
            },
            limits=Limits(media=TokenBucket(burst=10, per_second=1)),
        ),
    )
    yield "small isolation limits", dataclasses.replace(base, limits=SMALL_LIMITS)


@pytest.mark.parametrize(
    "variant",
    [
        "default (CRL through SDS)",
        "static CRL",
        "no CRL",
        "no REST view",
        "several replicas, host names",
        "small isolation limits",
    ],
)
def test_every_rendered_variant_passes_envoy_validate(
    variant: str, pki: Pki, tmp_path: Path
) -> None:
    topology = dict(_variants(pki, tmp_path))[variant]
    warnings = validate(write(topology, tmp_path / "envoy.yaml"))
    # Nothing deprecated: what 1.40 warns about, a later Envoy refuses.
    assert "deprecated" not in warnings.lower()


def test_validate_reports_envoy_refusal(topology: Topology, tmp_path: Path) -> None:
    broken = dataclasses.replace(
        topology, tls=dataclasses.replace(topology.tls, cert=tmp_path / "missing.pem")
    )
    with pytest.raises(EnvoyConfigError, match=r"missing\.pem"):
        validate(write(broken, tmp_path / "envoy.yaml"))


def test_reference_rendering_is_up_to_date() -> None:
    topology = reference_topology()
    assert topology.tls.sds_file is not None
    assert (REPO_ROOT / "envoy" / "envoy.yaml").read_text() == render_yaml(topology), (
        "envoy/envoy.yaml is stale: run `veritally envoy reference --out envoy`"
    )
    assert (REPO_ROOT / "envoy" / "ca-secret.yaml").read_text() == render_ca_secret_yaml(
        topology.tls
    )


def test_rendering_is_deterministic(topology: Topology) -> None:
    assert render_yaml(topology) == render_yaml(topology)
    assert build_descriptor_set() == build_descriptor_set()


def test_rendered_yaml_round_trips(topology: Topology) -> None:
    assert yaml.safe_load(render_yaml(topology)) == render(topology)


# --------------------------------------------------------------------------------------
# mTLS


@pytest.mark.parametrize(
    ("listener", "prefix"),
    [("edge", f"{SPIFFE}/"), ("mesh", f"{SPIFFE}/service/"), ("rest", f"{SPIFFE}/")],
)
def test_listeners_require_client_certificate_in_trust_domain(
    config: dict[str, Any], listener: str, prefix: str
) -> None:
    tls = _listener(config, listener)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    combined = tls["common_tls_context"]["combined_validation_context"]
    sans = combined["default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"prefix": prefix}}]
    assert "validation_context_sds_secret_config" in combined


def test_static_crl_is_checked_for_leaves(pki: Pki, topology: Topology) -> None:
    config = render(dataclasses.replace(topology, tls=MeshTls.from_pki(pki)))
    tls = _listener(config, "edge")["filter_chains"][0]["transport_socket"]["typed_config"]
    ctx = tls["common_tls_context"]["validation_context"]
    assert ctx["crl"] == {"filename": str(pki.crl)}
    assert ctx["only_verify_leaf_cert_crl"] is True


def test_ca_secret_carries_ca_and_crl(pki: Pki, topology: Topology) -> None:
    secret = yaml.safe_load(render_ca_secret_yaml(topology.tls))["resources"][0]
    assert secret["validation_context"]["trusted_ca"] == {"filename": str(pki.ca_cert)}
    assert secret["validation_context"]["crl"] == {"filename": str(pki.crl)}


def test_upstream_tls_checks_each_service_identity(config: dict[str, Any]) -> None:
    for name, cluster in _clusters(config).items():
        service = name.split("_")[0]  # <service>_<edge|mesh>_<unary|stream>
        ctx = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert ctx["validation_context"]["match_typed_subject_alt_names"] == [
            {"san_type": "URI", "matcher": {"exact": f"{SPIFFE}/service/{service}"}}
        ]
        assert ctx["tls_certificates"][0]["certificate_chain"]["filename"].endswith("envoy.pem")


def test_forwarded_client_cert_is_sanitised(config: dict[str, Any]) -> None:
    for listener in ("edge", "mesh", "rest"):
        hcm = _hcm(config, listener)
        assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
        assert hcm["set_current_client_cert_details"] == {"uri": True}


# --------------------------------------------------------------------------------------
# RBAC


def test_edge_rbac_confines_each_role(config: dict[str, Any]) -> None:
    policies = _policies(config, "edge")
    assert set(policies) == {"capture", "media", "operator"}
    assert policies["capture"] == (
        {"prefix": f"{SPIFFE}/capture/"},
        {
            "/veritally.v1.IngestService/SubmitActa",
            "/veritally.v1.IngestService/SubmitActas",
            "/veritally.v1.IngestService/RecordMissingActa",
        },
    )
    assert policies["media"] == ({"prefix": f"{SPIFFE}/media/"}, MEDIA_READS)
    assert policies["operator"] == (
        {"prefix": f"{SPIFFE}/operator/"},
        {
            "/veritally.v1.IngestService/CorrectActa",
            "/veritally.v1.IngestService/ListCrossChecks",
            "/veritally.v1.IngestService/ResolveCrossCheck",
            "/veritally.v1.IngestService/CloseNight",
            "/grpc.health.v1.Health/Check",
        },
    )


def test_edge_never_exposes_service_to_service_methods(config: dict[str, Any]) -> None:
    allowed = set().union(*(paths for _, paths in _policies(config, "edge").values()))
    routed = set(_routes(config, "edge"))
    for path in allowed | routed:
        assert not path.startswith("/veritally.v1.AggregationService/")
        assert path != "/veritally.v1.IngestService/StreamRecords"


def test_mesh_rbac_lets_each_service_call_only_its_upstream(config: dict[str, Any]) -> None:
    policies = _policies(config, "mesh")
    assert policies == {
        "service-aggregation": (
            {"exact": f"{SPIFFE}/service/aggregation"},
            {"/veritally.v1.IngestService/StreamRecords"},
        ),
        "service-publication": (
            {"exact": f"{SPIFFE}/service/publication"},
            {
                "/veritally.v1.AggregationService/GetResultsBlob",
                "/veritally.v1.AggregationService/StreamAggregatedRecords",
                "/veritally.v1.AggregationService/GetDefinition",
            },
        ),
    }


def test_rest_view_is_read_only_for_media(config: dict[str, Any]) -> None:
    policies = _policies(config, "rest")
    assert list(policies) == ["media"]
    assert policies["media"][1] == {f"/veritally.v1.PublicationService/{m}" for m in REST_ROUTES}
    assert policies["media"][1] <= MEDIA_READS | JSON_VIEW_READS


def test_rbac_runs_after_the_transcoder_on_rest(config: dict[str, Any]) -> None:
    names = [f["name"] for f in _hcm(config, "rest")["http_filters"]]
    assert names.index("envoy.filters.http.grpc_json_transcoder") < names.index(
        "envoy.filters.http.rbac"
    )


# --------------------------------------------------------------------------------------
# rate and size limits


def test_rate_limit_is_per_verified_identity_with_a_budget_per_role(
    config: dict[str, Any], topology: Topology
) -> None:
    for listener in ("edge", "rest"):
        rl = _filter(config, listener, "envoy.filters.http.local_ratelimit")
        assert rl["rate_limited_as_resource_exhausted"] is True
        assert rl["max_dynamic_descriptors"] > 0
        budgets = {d["entries"][0]["value"]: d["token_bucket"] for d in rl["descriptors"]}
        limits = topology.limits
        assert budgets == {
            "media": limits.media.render(),
            "capture": limits.capture.render(),
            "operator": limits.operator.render(),
        }
        for d in rl["descriptors"]:
            assert d["entries"][1] == {"key": "peer", "value": ""}  # one bucket per peer
        (limit,) = rl["rate_limits"]
        texts = [a["extension"]["typed_config"]["text"] for a in limit["actions"]]
        # Built from the verified certificate only, never from a header.
        assert texts[1] == "connection.uri_san_peer_certificate"
        assert "connection.uri_san_peer_certificate" in texts[0]
        assert all("request.headers" not in t for t in texts)


def test_request_size_limits_per_route(config: dict[str, Any]) -> None:
    routes = _routes(config, "edge")

    def limit(path: str) -> Any:
        return routes[path]["typed_per_filter_config"]["envoy.filters.http.buffer"]

    assert (
        limit("/veritally.v1.IngestService/SubmitActa")["buffer"]["max_request_bytes"] == 64 << 10
    )
    assert (
        limit("/veritally.v1.PublicationService/GetLatestCut")["buffer"]["max_request_bytes"]
        == 64 << 10
    )
    assert limit("/veritally.v1.IngestService/SubmitActas") == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "disabled": True,
    }


def test_compressed_requests_are_refused_before_any_route_on_edge_and_mesh(
    config: dict[str, Any],
) -> None:
    # A gzip bomb is ~1000x smaller than what it inflates to: Envoy's size limits only
    # mean something if nothing is compressed.
    for listener in ("edge", "mesh"):
        (vhost,) = _hcm(config, listener)["route_config"]["virtual_hosts"]
        first = vhost["routes"][0]
        assert first["match"]["prefix"] == "/"
        assert first["match"]["headers"] == [
            {"name": "grpc-encoding", "present_match": True},
            {"name": "grpc-encoding", "string_match": {"exact": "identity"}, "invert_match": True},
        ]
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in first["response_headers_to_add"]
        }
        assert headers["grpc-status"] == "12"  # UNIMPLEMENTED
        assert headers["content-type"] == "application/grpc"
        assert first["direct_response"] == {"status": 200}
        # Answered at the headers: nothing of the body is buffered.
        assert first["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is True
        # Every other route is a method's (or the health check's).
        assert all("path" in r["match"] for r in vhost["routes"][1:])


# --------------------------------------------------------------------------------------
# routes, clusters, admin


def test_streams_have_no_route_timeout(config: dict[str, Any]) -> None:
    streaming = {m.path for m in METHODS if m.streaming}
    for listener in ("edge", "mesh"):
        routes = _routes(config, listener)
        # Both branches below must run on each listener, or the loop proves nothing.
        assert set(routes) & streaming, listener
        assert set(routes) - streaming, listener
        for path, route in routes.items():
            if path in streaming:
                assert route["route"]["timeout"] == "0s"
            else:
                assert route["route"]["timeout"] != "0s"


def test_only_idempotent_reads_retry_on_unavailable(config: dict[str, Any]) -> None:
    by_path = {m.path: m for m in METHODS}
    idempotent = {m.path for m in METHODS if m.idempotent}
    for listener in ("edge", "mesh"):
        routes = _routes(config, listener)
        # Both branches below must run on each listener, or the loop proves nothing.
        assert set(routes) & idempotent, listener
        assert set(routes) - idempotent, listener
        for path, route in routes.items():
            retry_on = route["route"].get("retry_policy", {}).get("retry_on", "")
            if path in by_path and by_path[path].idempotent:
                assert "unavailable" in retry_on.split(",")
            else:
                assert "unavailable" not in retry_on.split(","), path
    submit = _routes(config, "edge")["/veritally.v1.IngestService/SubmitActa"]["route"]
    assert set(submit["retry_policy"]["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
    }


def test_clusters_health_check_and_eject(config: dict[str, Any]) -> None:
    clusters = _clusters(config)
    assert {name.split("_")[0] for name in clusters} == {"ingest", "aggregation", "publication"}
    for name, cluster in clusters.items():
        (hc,) = cluster["health_checks"]
        assert hc["grpc_health_check"]["service_name"].endswith(
            {"ingest": "IngestService", "aggregation": "AggregationService"}.get(
                name.split("_")[0], "PublicationService"
            )
        )
        assert "no_traffic_interval" in hc
        assert cluster["outlier_detection"]["consecutive_5xx"] > 0
        assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] > 0
        http2 = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]["explicit_http_config"]
        assert "http2_protocol_options" in http2


def test_several_replicas_become_endpoints(pki: Pki, tmp_path: Path) -> None:
    topology = dict(_variants(pki, tmp_path))["several replicas, host names"]
    cluster = _clusters(render(topology))["publication_edge_unary"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [9021, 9022, 9023]


def test_admin_listens_on_loopback(config: dict[str, Any]) -> None:
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "envoy.internal"])  # noqa: S104 - the address under test
def test_refuses_admin_off_loopback(topology: Topology, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        dataclasses.replace(topology, admin=Endpoint(host=host, port=9901))


def test_refuses_topology_without_a_service(topology: Topology) -> None:
    with pytest.raises(ValueError, match="ingest"):
        dataclasses.replace(topology, services={**topology.services, "ingest": []})


def test_refuses_topology_with_an_unknown_service(topology: Topology) -> None:
    extra = {**topology.services, "tally": [Endpoint.parse("127.0.0.1:9999")]}
    with pytest.raises(ValueError, match="tally"):
        dataclasses.replace(topology, services=extra)


# --------------------------------------------------------------------------------------
# REST view descriptor


def test_descriptor_set_maps_json_gets(topology: Topology) -> None:
    from google.api import annotations_pb2  # type: ignore[import-untyped]  # no py.typed

    files = descriptor_pb2.FileDescriptorSet.FromString(build_descriptor_set()).file
    names = [f.name for f in files]
    assert "google/api/annotations.proto" in names
    # Dependencies come before the files that import them.
    assert names.index("google/api/annotations.proto") < names.index(
        "veritally/v1/publication.proto"
    )
    (publication,) = [f for f in files if f.name == "veritally/v1/publication.proto"]
    (service,) = publication.service
    rules = {
        m.name: m.options.Extensions[annotations_pb2.http].get
        for m in service.method
        if m.options.HasExtension(annotations_pb2.http)
    }
    assert rules == dict(REST_ROUTES)
    transcoder = _filter(render(topology), "rest", "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str(topology.descriptor_set)
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True


def test_json_view_transcodes_every_answer_publication_may_send(config: dict[str, Any]) -> None:
    # Unset, the transcoder's limit is the stream's buffer (64 KiB on HTTP/2), and every
    # cut of a federal night was answered HTTP 500. Publication sends nothing above its
    # gRPC send limit; the transcoder holds that much and its 5-byte gRPC prefix.
    transcoder = _filter(config, "rest", "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["max_response_body_size"] == REST_MAX_RESPONSE_BYTES
    assert REST_MAX_RESPONSE_BYTES == MAX_MESSAGE_BYTES + 5
    # Requests are bodiless GETs, bounded as every read is on the edge.
    assert transcoder["max_request_body_size"] == READ_MAX_REQUEST_BYTES


def test_cli_render_writes_a_valid_configuration(pki: Pki, tmp_path: Path) -> None:
    from veritally.cli.main import main

    state = tmp_path / "state"
    args = ["envoy", "render", "--state", str(state), "--pki", str(pki.root)]
    replicas = ["--ingest", "127.0.0.1:9001", "--ingest", "127.0.0.1:9002"]
    assert main([*args, *replicas]) == 0  # includes envoy --mode validate
    config = yaml.safe_load((state / "envoy" / "envoy.yaml").read_text())
    ingest = _clusters(config)["ingest_edge_unary"]["load_assignment"]["endpoints"][0][
        "lb_endpoints"
    ]
    assert len(ingest) == 2
    assert (state / "envoy" / "ca-secret.yaml").is_file()
    assert (state / "envoy" / "publication.binpb").is_file()
    assert main([*args, "--admin", "10.0.0.1:9901"]) == 1


# --------------------------------------------------------------------------------------
# isolation: clusters, breakers, connection caps


def _route_clusters(config: dict[str, Any], listener: str) -> dict[str, str]:
    return {path: r["route"]["cluster"] for path, r in _routes(config, listener).items()}


def test_flood_of_watch_streams_cannot_fill_the_breaker_of_reads_or_mesh_streams(
    config: dict[str, Any], topology: Topology
) -> None:
    by_path = {m.path: m for m in METHODS}
    used: dict[str, set[tuple[str, bool]]] = {}
    for listener, traffic in (("edge", "edge"), ("rest", "edge"), ("mesh", "mesh")):
        for path, cluster in _route_clusters(config, listener).items():
            method = by_path.get(path)
            streaming = method.streaming if method is not None else False  # health: unary
            service = method.service if method is not None else "ingest"
            assert cluster == f"{service}_{traffic}_{'stream' if streaming else 'unary'}", path
            used.setdefault(cluster, set()).add((traffic, streaming))
    # No cluster carries two kinds of traffic, and every kind has its own breaker.
    assert all(len(kinds) == 1 for kinds in used.values()), used
    clusters = _clusters(config)
    assert set(used) == set(clusters)
    watch = _route_clusters(config, "edge")["/veritally.v1.PublicationService/WatchCuts"]
    latest = _route_clusters(config, "edge")["/veritally.v1.PublicationService/GetLatestCut"]
    follow = _route_clusters(config, "mesh")["/veritally.v1.IngestService/StreamRecords"]
    submit = _route_clusters(config, "edge")["/veritally.v1.IngestService/SubmitActas"]
    assert len({watch, latest, follow, submit}) == 4
    limits = topology.limits
    expected = {
        ("edge", False): limits.edge_unary,
        ("edge", True): limits.edge_stream,
        ("mesh", False): limits.mesh_unary,
        ("mesh", True): limits.mesh_stream,
    }
    for name, rendered in clusters.items():
        ((traffic, streaming),) = used[name]
        assert rendered["circuit_breakers"] == expected[(traffic, streaming)].render(), name


@pytest.mark.parametrize(
    ("listener", "cap"),
    [
        ("edge", "edge_max_connections"),
        ("mesh", "mesh_max_connections"),
        ("rest", "rest_max_connections"),
    ],
)
def test_connections_that_never_start_tls_are_timed_out_and_capped_on_every_listener(
    config: dict[str, Any], topology: Topology, listener: str, cap: str
) -> None:
    (chain,) = _listener(config, listener)["filter_chains"]
    assert chain["transport_socket_connect_timeout"] == "10s"
    first = chain["filters"][0]
    assert first["name"] == "envoy.filters.network.connection_limit"
    assert first["typed_config"]["max_connections"] == getattr(topology.limits, cap)


def test_global_connection_cap_sits_above_the_listener_caps_and_below_the_fd_limit(
    config: dict[str, Any], topology: Topology
) -> None:
    limits = topology.limits
    (monitor,) = config["overload_manager"]["resource_monitors"]
    cap = monitor["typed_config"]["max_active_downstream_connections"]
    assert cap == limits.max_connections
    listeners = limits.edge_max_connections + limits.mesh_max_connections
    assert listeners + limits.rest_max_connections <= cap
    assert limits.open_files_needed > cap


def test_limits_refuse_listener_caps_that_add_up_above_the_global_cap() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=1000, edge_max_connections=900, mesh_max_connections=200)
    with pytest.raises(ValueError, match="positive"):
        Limits(tls_handshake_timeout_s=0)
    with pytest.raises(ValueError, match="positive"):
        CircuitBreaker(max_connections=1, max_pending_requests=1, max_requests=0, max_retries=0)


def test_envoy_is_not_started_when_its_fd_limit_cannot_cover_its_caps(
    topology: Topology, tmp_path: Path
) -> None:
    import resource

    from veritally.mesh.process import EnvoyError, EnvoyProcess

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard RLIMIT_NOFILE to exceed")
    # Even a privileged process cannot raise its hard limit past the kernel's fs.nr_open.
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    envoy = EnvoyProcess(
        config=tmp_path / "envoy.yaml",
        admin=topology.admin,
        log_path=tmp_path / "envoy.log",
        open_files=max(hard, nr_open) + 1,
    )
    with pytest.raises(EnvoyError, match=r"hard RLIMIT_NOFILE"):
        envoy.start()
    assert not envoy.running


def test_slow_reader_cannot_pause_the_upstream_connection_others_share(
    config: dict[str, Any],
) -> None:
    # Every cluster bounds what one stream may have in flight towards Envoy, so a party
    # that stops reading makes its service wait, not Envoy pause the shared connection.
    for name, cluster in _clusters(config).items():
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]["explicit_http_config"]["http2_protocol_options"]
        assert options["initial_stream_window_size"] == 65536, name
        assert options["initial_connection_window_size"] == 1048576, name
