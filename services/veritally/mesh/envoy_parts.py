"""The Envoy structures the rendering is built from: TLS contexts, HTTP filters (RBAC,
per-identity rate limits, request buffering), routes, the HTTP connection manager,
listeners and upstream clusters.

Mechanism only: these builders take what to allow as arguments (RBAC policies, the
method of a route) and decide nothing about who may call what; that is the access
policy, :mod:`veritally.mesh.policy`, which :mod:`veritally.mesh.envoy` renders with
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from veritally.mesh.policy import (
    HEALTH_CHECK_PATH,
    INGEST_MAX_REQUEST_BYTES,
    READ_MAX_REQUEST_BYTES,
    SERVICE_FULL_NAMES,
    Method,
)
from veritally.mesh.topology import (
    CircuitBreaker,
    Endpoint,
    JsonDict,
    Limits,
    MeshTls,
    TokenBucket,
    Topology,
)
from veritally.pki import ROLE_CAPTURE, ROLE_MEDIA, ROLE_OPERATOR, ROLE_SERVICE

__all__ = [
    "EDGE",
    "MESH",
    "address",
    "buffer_filter",
    "circuit_breaker",
    "cluster_config",
    "cluster_name",
    "compressed_request_route",
    "connection_manager",
    "downstream_tls",
    "health_route",
    "listener_config",
    "local_rate_limit",
    "method_route",
    "rate_limit_filter",
    "rbac_filter",
    "render_ca_secret",
    "seconds",
    "upstream_tls",
]

# gRPC status of a compressed request: UNIMPLEMENTED is what gRPC itself answers for a
# message encoding the server does not support.
_GRPC_UNIMPLEMENTED = "12"


def seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def address(ep: Endpoint) -> JsonDict:
    return {"socket_address": {"address": ep.host, "port_value": ep.port}}


def _file(path: Path) -> JsonDict:
    return {"filename": str(path)}


_CA_SDS_NAME = "veritally_ca"


def _validation_context(tls: MeshTls) -> JsonDict:
    """The CA and CRL part of a downstream validation context."""
    ctx: JsonDict = {"trusted_ca": _file(tls.ca)}
    if tls.crl is not None:
        ctx["crl"] = _file(tls.crl)
        # Our CA is the trust anchor and issues every leaf: only leaves are revocable.
        ctx["only_verify_leaf_cert_crl"] = True
    return ctx


def render_ca_secret(tls: MeshTls) -> JsonDict:
    """The SDS resource file holding the CA and CRL (see :attr:`MeshTls.sds_file`)."""
    return {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": _CA_SDS_NAME,
                "validation_context": _validation_context(tls),
            }
        ]
    }


def _downstream_validation(tls: MeshTls, *, san_prefix: str) -> tuple[str, JsonDict]:
    sans = [{"san_type": "URI", "matcher": {"prefix": san_prefix}}]
    if tls.sds_file is None:
        return "validation_context", {
            **_validation_context(tls),
            "match_typed_subject_alt_names": sans,
        }
    # CA and CRL come from a file-based SDS resource. Envoy re-reads it, and the files it
    # names, whenever a file is renamed into the watched directory; `veritally pki
    # revoke` writes the new CRL that way, so a revocation applies to new connections
    # without a restart. The SAN rule stays here, per listener.
    watched = (tls.crl if tls.crl is not None else tls.ca).parent
    return "combined_validation_context", {
        "default_validation_context": {"match_typed_subject_alt_names": sans},
        "validation_context_sds_secret_config": {
            "name": _CA_SDS_NAME,
            "sds_config": {
                "path_config_source": {
                    "path": str(tls.sds_file),
                    "watched_directory": {"path": str(watched)},
                },
                "resource_api_version": "V3",
            },
        },
    }


def downstream_tls(tls: MeshTls, *, san_prefix: str, alpn: Sequence[str]) -> JsonDict:
    key, validation = _downstream_validation(tls, san_prefix=san_prefix)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": list(alpn),
                "tls_certificates": [
                    {"certificate_chain": _file(tls.cert), "private_key": _file(tls.key)}
                ],
                key: validation,
            },
        },
    }


def upstream_tls(tls: MeshTls, service: str) -> JsonDict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".UpstreamTlsContext",
            "sni": service,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {"certificate_chain": _file(tls.cert), "private_key": _file(tls.key)}
                ],
                # The service must prove it is THAT service, not just any holder of a
                # certificate from our CA.
                "validation_context": {
                    "trusted_ca": _file(tls.ca),
                    "match_typed_subject_alt_names": [
                        {
                            "san_type": "URI",
                            "matcher": {"exact": tls.spiffe(ROLE_SERVICE, service)},
                        }
                    ],
                },
            },
        },
    }


def _access_log(path: Path, listener: str) -> list[JsonDict]:
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3"
                ".FileAccessLog",
                "path": str(path),
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "listener": listener,
                        "peer": "%DOWNSTREAM_PEER_URI_SAN%",
                        "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
                        "method": "%REQ(:PATH)%",
                        "http_status": "%RESPONSE_CODE%",
                        "grpc_status": "%GRPC_STATUS(NUMBER)%",
                        "flags": "%RESPONSE_FLAGS%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "duration_ms": "%DURATION%",
                        "bytes_in": "%BYTES_RECEIVED%",
                        "bytes_out": "%BYTES_SENT%",
                        "upstream": "%UPSTREAM_HOST%",
                    },
                },
            },
        }
    ]


def _path_rule(path: str) -> JsonDict:
    return {"url_path": {"path": {"exact": path}}}


def rbac_filter(policies: Mapping[str, tuple[str, Sequence[str]]]) -> JsonDict:
    """An RBAC filter that ALLOWs ``policy -> (principal prefix, method paths)`` and
    denies everything else (PERMISSION_DENIED)."""
    rendered: JsonDict = {}
    for name, (principal, paths) in policies.items():
        rendered[name] = {
            "permissions": [{"or_rules": {"rules": [_path_rule(p) for p in paths]}}],
            "principals": [
                {
                    "authenticated": {
                        "principal_name": (
                            {"exact": principal}
                            if not principal.endswith("/")
                            else {"prefix": principal}
                        )
                    }
                }
            ],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": rendered},
        },
    }


def rate_limit_filter(tls: MeshTls, limits: Limits, stat_prefix: str) -> JsonDict:
    """One token bucket per verified identity, budget by role.

    The descriptor is built from the verified peer certificate only (CEL), never from a
    header: ``(role, <uri san>)``. The role entry selects the budget; the wildcard URI
    entry gives each identity its own bucket (up to ``max_identities``).
    """
    role_expr = " : ".join(
        [
            f"connection.uri_san_peer_certificate.startsWith('{tls.spiffe(role)}') ? '{role}'"
            for role in (ROLE_MEDIA, ROLE_CAPTURE, ROLE_OPERATOR, ROLE_SERVICE)
        ]
        + ["'other'"]
    )
    budgets = {
        ROLE_MEDIA: limits.media,
        ROLE_CAPTURE: limits.capture,
        ROLE_OPERATOR: limits.operator,
    }
    # Shared by every call (see Limits.total); the per-identity buckets below come on
    # top of it.
    config = local_rate_limit(stat_prefix, limits.total)
    config["typed_config"].update(
        {
            "rate_limited_as_resource_exhausted": True,
            "max_dynamic_descriptors": limits.max_identities * len(budgets),
            "descriptors": [
                {
                    "entries": [{"key": "role", "value": role}, {"key": "peer", "value": ""}],
                    "token_bucket": bucket.render(),
                }
                for role, bucket in budgets.items()
            ],
            "rate_limits": [
                {
                    "actions": [
                        {
                            "extension": {
                                "name": "envoy.rate_limit_descriptors.expr",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions"
                                    ".rate_limit_descriptors.expr.v3.Descriptor",
                                    "descriptor_key": "role",
                                    "text": role_expr,
                                },
                            }
                        },
                        {
                            "extension": {
                                "name": "envoy.rate_limit_descriptors.expr",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions"
                                    ".rate_limit_descriptors.expr.v3.Descriptor",
                                    "descriptor_key": "peer",
                                    "text": "connection.uri_san_peer_certificate",
                                },
                            }
                        },
                    ]
                }
            ],
        }
    )
    return config


def local_rate_limit(stat_prefix: str, total: TokenBucket) -> JsonDict:
    """Envoy's local rate limit filter, always enabled and enforced, with one bucket
    ``total`` for every request; callers add their descriptors to its typed config."""
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
            ".LocalRateLimit",
            "stat_prefix": stat_prefix,
            "token_bucket": total.render(),
            "filter_enabled": {
                "runtime_key": f"{stat_prefix}.enabled",
                "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            },
            "filter_enforced": {
                "runtime_key": f"{stat_prefix}.enforced",
                "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            },
        },
    }


def buffer_filter() -> JsonDict:
    # The largest size any route allows; each route narrows it (or disables buffering
    # for streams, whose messages the services bound themselves).
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": INGEST_MAX_REQUEST_BYTES,
        },
    }


_BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"


def method_route(
    method: Method, *, cluster: str, limits: Limits, path: str | None = None
) -> JsonDict:
    action: JsonDict = {"cluster": cluster}
    per_filter: JsonDict
    if method.streaming:
        # Streams live as long as the election night: no route timeout; the stream idle
        # timeout of the connection manager still closes dead ones.
        action["timeout"] = "0s"
        action["idle_timeout"] = seconds(limits.stream_idle_timeout_s)
        per_filter = {"@type": _BUFFER_PER_ROUTE, "disabled": True}
    else:
        action["timeout"] = seconds(limits.unary_timeout_s)
        per_filter = {
            "@type": _BUFFER_PER_ROUTE,
            "buffer": {"max_request_bytes": method.max_request_bytes},
        }
    if method.idempotent:
        action["retry_policy"] = {
            # Only when the service answered UNAVAILABLE as trailers-only (nothing was
            # sent yet) or the request never reached it: a read is safe to repeat.
            "retry_on": "unavailable,connect-failure,refused-stream,reset",
            "num_retries": 2,
            "per_try_timeout": seconds(max(1.0, limits.unary_timeout_s / 3)),
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host"
                        ".previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 3,
        }
    elif not method.streaming:
        # Writes are retried only when the request provably never reached a service
        # (no connection, or the stream refused before any processing).
        action["retry_policy"] = {"retry_on": "connect-failure,refused-stream", "num_retries": 2}
    return {
        "name": method.path,
        "match": {"path": path or method.path, "grpc": {}},
        "route": action,
        "typed_per_filter_config": {"envoy.filters.http.buffer": per_filter},
    }


def compressed_request_route() -> JsonDict:
    """First route of the gRPC listeners: a request whose ``grpc-encoding`` is anything
    but ``identity`` is answered UNIMPLEMENTED by Envoy itself, before any buffering.

    A compressed message is bounded by Envoy's buffer limit *before* inflation only: 65
    KiB of gzip inflate to 64 MiB in the service. Our clients never compress (actas are
    small); refusing compression keeps every size limit a limit on real bytes.
    """
    return {
        "name": "compressed-request",
        "match": {
            "prefix": "/",
            "headers": [
                {"name": "grpc-encoding", "present_match": True},
                {
                    "name": "grpc-encoding",
                    "string_match": {"exact": "identity"},
                    "invert_match": True,
                },
            ],
        },
        # A trailers-only gRPC answer: status and message in the response headers.
        "direct_response": {"status": 200},
        "response_headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in (
                ("content-type", "application/grpc"),
                ("grpc-status", _GRPC_UNIMPLEMENTED),
                ("grpc-message", "compressed requests are refused; send grpc-encoding identity"),
                ("grpc-accept-encoding", "identity"),
            )
        ],
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {"@type": _BUFFER_PER_ROUTE, "disabled": True}
        },
    }


def health_route(limits: Limits) -> JsonDict:
    return {
        "name": HEALTH_CHECK_PATH,
        "match": {"path": HEALTH_CHECK_PATH, "grpc": {}},
        "route": {
            "cluster": cluster_name("ingest", EDGE, streaming=False),
            "timeout": seconds(limits.unary_timeout_s),
        },
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {
                "@type": _BUFFER_PER_ROUTE,
                "buffer": {"max_request_bytes": READ_MAX_REQUEST_BYTES},
            }
        },
    }


def connection_manager(
    *,
    stat_prefix: str,
    topology: Topology,
    routes: list[JsonDict],
    filters: list[JsonDict],
    codec: str = "HTTP2",
) -> JsonDict:
    limits = topology.limits
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network"
            ".http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": codec,
            "use_remote_address": True,
            # Replace whatever x-forwarded-client-cert a client sent with the identity
            # Envoy verified, so services can trust the header.
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"uri": True},
            "stream_idle_timeout": seconds(limits.stream_idle_timeout_s),
            "common_http_protocol_options": {
                # Idle connections are closed after an hour (seconds).
                "idle_timeout": "3600s",
                # Every connection is drained (GOAWAY) after this long, so that a
                # certificate revoked while connected stops working within it: the
                # CRL is checked at the handshake only. gRPC clients reconnect on their
                # own (seconds).
                "max_connection_duration": seconds(limits.max_connection_duration_s),
                "headers_with_underscores_action": "REJECT_REQUEST",
            },
            "http2_protocol_options": {
                "max_concurrent_streams": limits.max_concurrent_streams,
                # 64 KiB per stream, 1 MiB per connection (bytes): flow control keeps a
                # slow reader from making Envoy buffer a lot.
                "initial_stream_window_size": 65536,
                "initial_connection_window_size": 1048576,
            },
            "access_log": _access_log(topology.access_log, stat_prefix),
            "local_reply_config": {
                "mappers": [
                    {
                        # The buffer filter refuses an oversized request with HTTP 413,
                        # which gRPC would read as UNKNOWN; a size limit is
                        # RESOURCE_EXHAUSTED (8) in gRPC's terms.
                        "filter": {
                            "status_code_filter": {
                                "comparison": {
                                    "op": "EQ",
                                    "value": {
                                        "default_value": 413,
                                        "runtime_key": f"{stat_prefix}.payload_too_large",
                                    },
                                }
                            }
                        },
                        "headers_to_add": [
                            {
                                "header": {"key": "grpc-status", "value": "8"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        ],
                    }
                ]
            },
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                *filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3"
                        ".Router"
                    },
                },
            ],
        },
    }


def listener_config(
    name: str,
    ep: Endpoint,
    hcm: JsonDict,
    transport: JsonDict,
    *,
    limits: Limits,
    max_connections: int,
) -> JsonDict:
    connection_limit = {
        # First in the chain: it counts a connection when it is accepted, before the
        # TLS handshake, and closes the one over the cap at once.
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network"
            ".connection_limit.v3.ConnectionLimit",
            "stat_prefix": f"{name}_connection_limit",
            "max_connections": max_connections,
        },
    }
    return {
        "name": name,
        "stat_prefix": name,
        "address": address(ep),
        # Bytes buffered per connection before reads pause (flow control), 1 MiB.
        "per_connection_buffer_limit_bytes": 1048576,
        "filter_chains": [
            {
                "filters": [connection_limit, hcm],
                "transport_socket": transport,
                # A connection that has not finished its TLS handshake by then is
                # closed: TCP connections that never start TLS cannot pile up.
                "transport_socket_connect_timeout": seconds(limits.tls_handshake_timeout_s),
            }
        ],
    }


# Upstream clusters: one per service, per traffic (edge: external parties; mesh: the
# services themselves) and per call kind (unary or stream), each with its own
# connection pool and circuit breaker, so that streams held open by one party cannot
# fill the breaker that unary calls or the followers' mesh streams need.
EDGE, MESH = "edge", "mesh"
# HTTP/2 flow-control windows towards the services (bytes): see cluster_config.
UPSTREAM_STREAM_WINDOW_BYTES = 65536
UPSTREAM_CONNECTION_WINDOW_BYTES = 1048576


def cluster_name(service: str, traffic: str, *, streaming: bool) -> str:
    return f"{service}_{traffic}_{'stream' if streaming else 'unary'}"


def circuit_breaker(limits: Limits, traffic: str, *, streaming: bool) -> CircuitBreaker:
    if traffic == EDGE:
        return limits.edge_stream if streaming else limits.edge_unary
    return limits.mesh_stream if streaming else limits.mesh_unary


def cluster_config(
    name: str,
    service: str,
    endpoints: Sequence[Endpoint],
    topology: Topology,
    breaker: CircuitBreaker,
) -> JsonDict:
    hc = topology.health
    return {
        "name": name,
        # STRICT_DNS: replicas may be host names in a multi-host deployment; each name
        # is re-resolved and every address it yields becomes a host.
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Detect a dead replica on an idle connection (seconds).
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                        # 64 KiB per stream, 1 MiB per connection (bytes), as downstream.
                        # With the 256 MiB defaults a service sends a slow reader's
                        # stream everything it owes; Envoy buffers it past its limit
                        # and then stops reading the whole upstream connection, which
                        # every other party's streams share. Small windows make the
                        # service wait on that stream alone (HTTP/2 flow control).
                        "initial_stream_window_size": UPSTREAM_STREAM_WINDOW_BYTES,
                        "initial_connection_window_size": UPSTREAM_CONNECTION_WINDOW_BYTES,
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": address(ep)}} for ep in endpoints]}
            ],
        },
        "transport_socket": upstream_tls(topology.tls, service),
        "health_checks": [
            {
                "timeout": seconds(hc.timeout_s),
                "interval": seconds(hc.interval_s),
                "no_traffic_interval": seconds(hc.no_traffic_interval_s),
                "unhealthy_threshold": hc.unhealthy_threshold,
                "healthy_threshold": hc.healthy_threshold,
                "grpc_health_check": {"service_name": SERVICE_FULL_NAMES[service]},
            }
        ],
        "outlier_detection": {
            # Eject a replica after 5 consecutive failures (UNAVAILABLE and resets
            # count), for 15 s doubling on each repeat; never more than half of them.
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 5,
            "interval": "5s",
            "base_ejection_time": "15s",
            "max_ejection_percent": 50,
        },
        # Bounds on what this cluster (one kind of traffic) asks of a service:
        # connections, queued requests, requests in flight, concurrent retries.
        "circuit_breakers": breaker.render(),
        # Below this share of healthy replicas Envoy would spread load over unhealthy
        # ones too; 0 means it never routes to a replica known to be down.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
    }
