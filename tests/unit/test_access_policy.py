"""The mesh's access policy (veritally.mesh.policy) held to the contracts: every RPC a
service answers is granted to a named caller or deliberately denied, the policy names
no method the contracts lack, the rendered RBAC is exactly the policy, and the docs'
table of identities and roles is the policy's own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import veritally_client._gen.veritally.v1 as contracts
from tests.conftest import REPO_ROOT
from veritally.mesh import policy
from veritally.mesh.envoy import reference_topology, render
from veritally.mesh.policy import (
    BUDGETS,
    DENIED,
    EDGE_GRANTS,
    MESH_GRANTS,
    METHODS,
    REST_GRANTS,
    REST_ROUTES,
    SERVICE_FULL_NAMES,
    Grants,
)

LISTENER_GRANTS: Mapping[str, Grants] = {
    "edge": EDGE_GRANTS,
    "mesh": MESH_GRANTS,
    "rest": REST_GRANTS,
}


def _contract_files() -> Iterator[FileDescriptor]:
    """Every compiled ``proto/veritally/v1/*.proto``, then the gRPC health and reflection
    services every veritally server also answers (veritally.rpc.ServiceServer)."""
    for info in pkgutil.iter_modules(contracts.__path__):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(f"{contracts.__name__}.{info.name}").DESCRIPTOR
    yield health_pb2.DESCRIPTOR
    yield reflection_pb2.DESCRIPTOR


def _rpcs() -> dict[str, MethodDescriptor]:
    """Method path (``/<package>.<Service>/<Method>``) -> its descriptor."""
    return {
        f"/{service.full_name}/{method.name}": method
        for fd in _contract_files()
        for service in fd.services_by_name.values()
        for method in service.methods
    }


def _granted(grants: Grants) -> set[str]:
    return {path for paths in grants.values() for path in paths}


ALL_GRANTED = set().union(*(_granted(g) for g in LISTENER_GRANTS.values()))


def test_contracts_are_found() -> None:
    # The walk above sees the three veritally services and the two gRPC ones: a
    # broken walk must not make the checks below pass vacuously.
    services = {path.strip("/").split("/")[0] for path in _rpcs()}
    assert services == {
        *SERVICE_FULL_NAMES.values(),
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_every_rpc_is_granted_to_a_named_caller_or_deliberately_denied() -> None:
    # A new RPC in proto/ that nobody decided about fails here, before it ships
    # unreachable or, worse, reachable by accident.
    undecided = sorted(set(_rpcs()) - ALL_GRANTED - set(DENIED))
    assert not undecided, f"neither granted nor denied in veritally.mesh.policy: {undecided}"


def test_policy_names_no_method_the_contracts_lack() -> None:
    # A typo in a grant would be an RBAC rule that matches nothing, and a renamed RPC a
    # grant that silently stopped working.
    named = ALL_GRANTED | set(DENIED) | {m.path for m in METHODS}
    unknown = sorted(named - set(_rpcs()))
    assert not unknown, f"not an RPC of any contract: {unknown}"


def test_no_method_is_both_granted_and_denied() -> None:
    assert not ALL_GRANTED & set(DENIED)


def test_every_grant_and_denial_has_a_reason() -> None:
    reasons = [*DENIED.values()]
    reasons += [
        r for grants in LISTENER_GRANTS.values() for g in grants.values() for r in g.values()
    ]
    assert all(r.strip() for r in reasons)


def test_method_table_covers_every_veritally_rpc_and_its_streaming_kind() -> None:
    # Envoy routes a stream without timeout or buffering and a unary call with both; a
    # method whose kind the table gets wrong would be cut off or held whole in memory.
    veritally = {p: m for p, m in _rpcs().items() if p.startswith("/veritally.v1.")}
    table = {m.path: m for m in METHODS}
    assert set(table) == set(veritally)
    for path, method in table.items():
        descriptor = veritally[path]
        assert method.streaming == (descriptor.client_streaming or descriptor.server_streaming)


def test_only_reads_are_idempotent() -> None:
    # Envoy retries idempotent methods on UNAVAILABLE; a write among them could be
    # applied twice.
    for m in METHODS:
        if m.idempotent:
            assert m.name.startswith(("Get", "List")), m.path
            assert not m.streaming, m.path


def test_every_rate_limited_caller_has_a_budget() -> None:
    # The edge and the JSON view give each identity of a role a budget; a role granted
    # there without one would be bounded only by the listener's total.
    for grants in (EDGE_GRANTS, REST_GRANTS):
        for caller in grants:
            assert caller.role in BUDGETS, caller.policy


def test_json_view_grants_are_exactly_its_routes() -> None:
    assert _granted(REST_GRANTS) == {
        f"/{SERVICE_FULL_NAMES['publication']}/{name}" for name in REST_ROUTES
    }


def _rbac(listener: dict[str, Any]) -> dict[str, tuple[object, set[str]]]:
    """policy name -> (principal matcher, method paths) of a rendered listener."""
    (chain,) = listener["filter_chains"]
    hcm = chain["filters"][-1]["typed_config"]
    (rbac,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
    return {
        name: (
            p["principals"][0]["authenticated"]["principal_name"],
            {r["url_path"]["path"]["exact"] for r in p["permissions"][0]["or_rules"]["rules"]},
        )
        for name, p in rbac["typed_config"]["rules"]["policies"].items()
    }


def _routed(listener: dict[str, Any]) -> set[str]:
    (chain,) = listener["filter_chains"]
    hcm = chain["filters"][-1]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return {r["name"] for r in routes if r["name"].startswith("/")}


@pytest.mark.parametrize("name", sorted(LISTENER_GRANTS))
def test_rendered_rbac_allows_exactly_the_policy(name: str) -> None:
    topology = reference_topology()
    listeners = {lst["name"]: lst for lst in render(topology)["static_resources"]["listeners"]}
    listener = listeners[name]
    base = f"spiffe://{topology.tls.trust_domain}/"
    expected = {
        caller.policy: (
            {"prefix": base + caller.identity}
            if caller.name is None
            else {"exact": base + caller.identity},
            set(paths),
        )
        for caller, paths in LISTENER_GRANTS[name].items()
    }
    assert _rbac(listener) == expected
    # Nothing is routed that is not granted, and nothing denied is routed.
    assert _routed(listener) == _granted(LISTENER_GRANTS[name])
    assert not _routed(listener) & set(DENIED)


def test_docs_table_of_identities_and_roles_is_the_policys() -> None:
    doc = (REPO_ROOT / "docs" / "mesh.md").read_text()
    assert policy.grants_table() in doc
    # The prose lists the denied methods by their short names.
    for path in DENIED:
        service, method = path.strip("/").split("/")
        assert f"`{service.rsplit('.', 1)[-1]}/{method}`" in doc, path


def test_policy_reads_alone() -> None:
    # The policy imports nothing but the standard library and the role names of
    # veritally.pki, so a reviewer reads it without the renderer (and the renderer
    # cannot grow grants the policy does not show).
    tree = ast.parse((REPO_ROOT / "services" / "veritally" / "mesh" / "policy.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"__future__", "collections.abc", "dataclasses", "typing", "veritally.pki"}
