"""Render the Envoy configuration of a veritally deployment from a typed topology.

The topology is a multi-host deployment's: every service is a list of ``host:port``
endpoints (replicas) that Envoy dials over mutual TLS, external parties reach an edge
listener, and the services reach each other only through an internal mesh listener.
One function, :func:`render`, turns a :class:`Topology` into the bootstrap as plain
data; :func:`write` dumps it with PyYAML (and writes the REST view's descriptor set);
:func:`validate` runs ``envoy --mode validate`` on the result.

Three modules feed it, and this one assembles them listener by listener:

* :mod:`veritally.mesh.policy`, the access policy and the file to audit: who may call
  which method, the method table, the JSON view's routes, the budgets per role. This
  module adds no grant of its own: each listener's routes and RBAC are its grants.
* :mod:`veritally.mesh.topology`: the typed input (endpoints, TLS files, limits).
* :mod:`veritally.mesh.envoy_parts`: the Envoy structures (TLS contexts, filters,
  routes, connection manager, clusters), which decide nothing about who may call.

The public names of the first two that callers used to import from here are re-exported.

What the rendered configuration enforces, listener by listener:

1. **edge** (capture centres, media, operators; gRPC over HTTP/2 only):
   (a) mTLS: a client certificate from our CA, URI SAN under ``spiffe://<td>/``, not on
   the CRL; (b) a token bucket per verified identity, one budget per role, answering
   RESOURCE_EXHAUSTED; (c) RBAC by identity and exact gRPC method path, everything
   else PERMISSION_DENIED; (d) request size limits per unary method, and compressed
   requests (``grpc-encoding`` other than ``identity``) answered UNIMPLEMENTED by Envoy
   so that every limit is on real bytes; (e) the verified identity
   forwarded in ``x-forwarded-client-cert`` (a client-supplied one is replaced);
   (f) a JSON access log line per call.
2. **mesh** (service to service): mTLS restricted to ``spiffe://<td>/service/``; RBAC:
   only aggregation may follow ingest's log, only publication may read aggregation;
   compressed requests refused as on the edge.
3. **rest** (optional): the read-only JSON view of PublicationService through the
   gRPC-JSON transcoder, for media without gRPC; same mTLS, rate limits and RBAC; the
   transcoder holds any answer publication may send (:data:`REST_MAX_RESPONSE_BYTES`).
4. **clusters**: one per service, traffic (edge or mesh) and call kind (unary or
   stream), each with its own connection pool and circuit breaker; HTTP/2 with mTLS to
   every replica (Envoy presents ``service/envoy`` and checks the service's URI SAN),
   gRPC health checks, outlier detection; retries on UNAVAILABLE only for idempotent
   reads.
4b. **public** (optional): the static bundle over HTTPS for mirrors and the public:
   server TLS only (no client certificate), a token bucket per client IP address,
   Envoy's HTTP cache in front of a loopback static origin, GET and HEAD only
   (:mod:`veritally.mesh.envoy_public`).
5. **connections**: on every listener a cap (``connection_limit`` filter) and a TLS
   handshake timeout (``transport_socket_connect_timeout``); a global cap (overload
   manager) above their sum; Envoy's file-descriptor limit above that
   (:attr:`Limits.open_files_needed`, raised by ``veritally.mesh.process``).
6. **admin** on loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor as _descriptor
from google.protobuf import descriptor_pb2

from veritally.errors import ServiceError
from veritally.mesh import envoy_parts as parts
from veritally.mesh.envoy_parts import render_ca_secret
from veritally.mesh.envoy_public import origin_cluster, public_listener
from veritally.mesh.policy import (
    EDGE_GRANTS,
    HEALTH_CHECK_PATH,
    INGEST_MAX_REQUEST_BYTES,
    MESH_GRANTS,
    METHODS,
    READ_MAX_REQUEST_BYTES,
    REST_GRANTS,
    REST_ROUTES,
    SERVICE_FULL_NAMES,
    Grants,
    Method,
)
from veritally.mesh.topology import (
    DEFAULT_BASE_PORT,
    CircuitBreaker,
    Endpoint,
    HealthCheck,
    JsonDict,
    Limits,
    MeshTls,
    TokenBucket,
    Topology,
    default_topology,
    reference_topology,
)
from veritally.pki import ROLE_SERVICE
from veritally.rpc.channel import MAX_MESSAGE_BYTES
from veritally_client.protocol.pb import publication_pb2

__all__ = [
    "DEFAULT_BASE_PORT",
    "INGEST_MAX_REQUEST_BYTES",
    "METHODS",
    "READ_MAX_REQUEST_BYTES",
    "REST_MAX_RESPONSE_BYTES",
    "REST_ROUTES",
    "SERVICE_FULL_NAMES",
    "CircuitBreaker",
    "Endpoint",
    "EnvoyConfigError",
    "HealthCheck",
    "Limits",
    "MeshTls",
    "Method",
    "TokenBucket",
    "Topology",
    "build_descriptor_set",
    "default_topology",
    "envoy_binary",
    "reference_topology",
    "render",
    "render_ca_secret",
    "render_ca_secret_yaml",
    "render_yaml",
    "validate",
    "write",
    "write_reference",
]

# Largest gRPC answer the JSON view's transcoder holds to print it, in bytes. It holds a
# whole answer before printing it and answers HTTP 500 above its limit, which is by
# default the stream's buffer: 64 KiB on HTTP/2 (the flow-control window), 1 MiB on
# HTTP/1.1, where a national night's cut is ~470 KB and its named view ~1.9 MB. Publication
# never sends a message above its gRPC send limit (MAX_MESSAGE_BYTES), framed with a
# 5-byte prefix: with that limit every answer it may send is printed, and Envoy holds
# only what an answer really takes.
_GRPC_PREFIX_BYTES = 5
REST_MAX_RESPONSE_BYTES = MAX_MESSAGE_BYTES + _GRPC_PREFIX_BYTES

_BY_NAME = {(m.service, m.name): m for m in METHODS}
_BY_PATH = {m.path: m for m in METHODS}


def _upstream_clusters() -> list[tuple[str, str, bool]]:
    """(service, traffic, streaming) of every cluster a route uses, in a stable order."""
    keys: set[tuple[str, str, bool]] = {("ingest", parts.EDGE, False)}  # the health route
    for traffic, grants in ((parts.EDGE, EDGE_GRANTS), (parts.MESH, MESH_GRANTS)):
        for granted in grants.values():
            for path in granted:
                method = _BY_PATH.get(path)
                if method is not None:  # not the health check, routed to ingest above
                    keys.add((method.service, traffic, method.streaming))
    order = list(SERVICE_FULL_NAMES)
    return sorted(keys, key=lambda k: (order.index(k[0]), k[1], k[2]))


def _policies(tls: MeshTls, grants: Grants) -> dict[str, tuple[str, list[str]]]:
    """The RBAC policies of a listener: caller -> (its SPIFFE URI or prefix, the method
    paths it is granted)."""
    return {
        caller.policy: (tls.spiffe(caller.role, caller.name), list(paths))
        for caller, paths in grants.items()
    }


def _served(grants: Grants) -> set[str]:
    return {path for paths in grants.values() for path in paths}


def _edge_listener(topology: Topology) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    served = _served(EDGE_GRANTS)
    routes = [parts.compressed_request_route()]
    routes += [
        parts.method_route(
            m,
            cluster=parts.cluster_name(m.service, parts.EDGE, streaming=m.streaming),
            limits=limits,
        )
        for m in METHODS
        if m.path in served
    ]
    if HEALTH_CHECK_PATH in served:
        routes.append(parts.health_route(limits))
    policies = _policies(tls, EDGE_GRANTS)
    hcm = parts.connection_manager(
        stat_prefix="edge",
        topology=topology,
        routes=routes,
        filters=[
            # Rate limit first: a flood is cut by identity before anything else runs.
            parts.rate_limit_filter(tls, limits, "edge_rate_limit"),
            parts.rbac_filter(policies),
            parts.buffer_filter(),
        ],
    )
    transport = parts.downstream_tls(tls, san_prefix=f"spiffe://{tls.trust_domain}/", alpn=["h2"])
    return parts.listener_config(
        "edge",
        topology.edge,
        hcm,
        transport,
        limits=limits,
        max_connections=limits.edge_max_connections,
    )


def _mesh_listener(topology: Topology) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    served = _served(MESH_GRANTS)
    routes = [parts.compressed_request_route()]
    routes += [
        parts.method_route(
            m,
            cluster=parts.cluster_name(m.service, parts.MESH, streaming=m.streaming),
            limits=limits,
        )
        for m in METHODS
        if m.path in served
    ]
    policies = _policies(tls, MESH_GRANTS)
    hcm = parts.connection_manager(
        stat_prefix="mesh",
        topology=topology,
        routes=routes,
        filters=[parts.rbac_filter(policies), parts.buffer_filter()],
    )
    transport = parts.downstream_tls(tls, san_prefix=tls.spiffe(ROLE_SERVICE), alpn=["h2"])
    return parts.listener_config(
        "mesh",
        topology.mesh,
        hcm,
        transport,
        limits=limits,
        max_connections=limits.mesh_max_connections,
    )


def _rest_listener(topology: Topology, rest: Endpoint) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    assert topology.descriptor_set is not None  # checked in Topology.__post_init__
    methods = [_BY_NAME[("publication", n)] for n in REST_ROUTES]
    cluster = parts.cluster_name("publication", parts.EDGE, streaming=False)
    routes = [parts.method_route(m, cluster=cluster, limits=limits) for m in methods]
    for r in routes:
        # The transcoder turns the JSON GET into a gRPC call before routing; the match
        # on the gRPC content type would refuse the original request otherwise.
        r["match"].pop("grpc")
        r["route"].pop("retry_policy", None)
    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http"
            ".grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(topology.descriptor_set),
            "services": [SERVICE_FULL_NAMES["publication"]],
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "preserve_proto_field_names": True,
            },
            "request_validation_options": {
                # Only the mapped GETs exist on this listener.
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
            },
            "convert_grpc_status": True,
            # The JSON view's requests are reads (GETs without a body): bounded as reads
            # are on the edge.
            "max_request_body_size": READ_MAX_REQUEST_BYTES,
            "max_response_body_size": REST_MAX_RESPONSE_BYTES,
        },
    }
    policies = _policies(tls, REST_GRANTS)
    hcm = parts.connection_manager(
        stat_prefix="rest",
        topology=topology,
        routes=routes,
        codec="AUTO",
        filters=[
            parts.rate_limit_filter(tls, limits, "rest_rate_limit"),
            # After the transcoder, so that RBAC sees the gRPC method path.
            transcoder,
            parts.rbac_filter(policies),
        ],
    )
    transport = parts.downstream_tls(
        tls, san_prefix=f"spiffe://{tls.trust_domain}/", alpn=["h2", "http/1.1"]
    )
    return parts.listener_config(
        "rest", rest, hcm, transport, limits=limits, max_connections=limits.rest_max_connections
    )


def render(topology: Topology) -> JsonDict:
    """The Envoy bootstrap for ``topology``, as plain data (dump it with PyYAML).

    Pure: reads no files (the descriptor set is referenced by path).
    """
    listeners = [_edge_listener(topology), _mesh_listener(topology)]
    if topology.rest is not None:
        listeners.append(_rest_listener(topology, topology.rest))
    if topology.public is not None:
        listeners.append(public_listener(topology))
    clusters = [
        parts.cluster_config(
            parts.cluster_name(service, traffic, streaming=streaming),
            service,
            topology.services[service],
            topology,
            parts.circuit_breaker(topology.limits, traffic, streaming=streaming),
        )
        for service, traffic, streaming in _upstream_clusters()
    ]
    if topology.origin is not None:
        clusters.append(origin_cluster(topology))
    return {
        "node": {"id": "veritally-envoy", "cluster": "veritally"},
        "admin": {"address": parts.address(topology.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                        ".downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": topology.limits.max_connections,
                    },
                }
            ]
        },
    }


_HEADER = """\
# Envoy configuration of a veritally deployment, rendered by veritally.mesh.envoy.
# Do not edit: change the topology and render again (`veritally envoy render`).
"""


def render_yaml(topology: Topology) -> str:
    """:func:`render` as YAML text, keys in the order they were built."""
    body = yaml.safe_dump(render(topology), sort_keys=False, default_flow_style=False, width=100)
    return _HEADER + body


def render_ca_secret_yaml(tls: MeshTls) -> str:
    """:func:`render_ca_secret` as YAML text."""
    return _HEADER + yaml.safe_dump(render_ca_secret(tls), sort_keys=False)


def build_descriptor_set() -> bytes:
    """The protobuf descriptor set of PublicationService with its JSON GET mappings.

    The contracts in ``proto/`` carry no ``google.api.http`` annotations (the SDK would
    then need googleapis-common-protos at run time); the mapping is a mesh concern, so
    it lives here (:data:`REST_ROUTES`) and is added to the method options of a copy of
    the descriptors when the set is built. The result is deterministic.
    """
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: _descriptor.FileDescriptor) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    add(annotations_pb2.DESCRIPTOR)
    add(publication_pb2.DESCRIPTOR)
    publication = files[publication_pb2.DESCRIPTOR.name]
    publication.dependency.append(annotations_pb2.DESCRIPTOR.name)
    (service,) = [s for s in publication.service if s.name == "PublicationService"]
    for method in service.method:
        if method.name in REST_ROUTES:
            rule = http_pb2.HttpRule(get=REST_ROUTES[method.name])
            method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString(
        deterministic=True
    )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write(topology: Topology, path: Path) -> Path:
    """Write the YAML configuration to ``path``, atomically, with the files it refers
    to that we produce: the REST view's descriptor set and the CA/CRL SDS resource,
    when the topology has them. Returns ``path``."""
    if topology.rest is not None and topology.descriptor_set is not None:
        _atomic_write(topology.descriptor_set, build_descriptor_set())
    if topology.tls.sds_file is not None:
        _atomic_write(topology.tls.sds_file, render_ca_secret_yaml(topology.tls).encode())
    _atomic_write(path, render_yaml(topology).encode())
    return path


def write_reference(directory: Path) -> list[Path]:
    """Write the reference rendering (``envoy.yaml``, ``ca-secret.yaml``) into
    ``directory``; the descriptor set is produced by ``veritally envoy render``."""
    topology = reference_topology()
    assert topology.tls.sds_file is not None  # default_topology always sets it
    config = directory / "envoy.yaml"
    secret = directory / topology.tls.sds_file.name
    _atomic_write(config, render_yaml(topology).encode())
    _atomic_write(secret, render_ca_secret_yaml(topology.tls).encode())
    return [config, secret]


class EnvoyConfigError(ServiceError):
    """Envoy refused a configuration; the message holds Envoy's own output."""


def envoy_binary() -> Path:
    """The Envoy binary: the one in this virtualenv, else the one on PATH.

    Raises:
        FileNotFoundError: no Envoy binary.
    """
    candidate = Path(sys.prefix) / "bin" / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary in the virtualenv or on PATH")
    return Path(found)


def validate(path: Path, *, timeout_s: float = 60.0) -> str:
    """Run ``envoy --mode validate -c path``; returns Envoy's warnings (usually none).

    Raises:
        EnvoyConfigError: Envoy refused the configuration (its output in the message).
        FileNotFoundError: no Envoy binary.
    """
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyConfigError(
            f"envoy refused {path} (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout + result.stderr
