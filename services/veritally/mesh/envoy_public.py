"""The public bundle listener: the static bundle over HTTPS for mirrors and the public.

What it renders (listener ``public``, cluster ``bundle_origin``):

1. server TLS with Envoy's certificate, **no client certificate** asked: nothing read
   here needs trust (readers verify every byte, docs/bundle-format.md), and mirrors,
   CDNs and the public have no certificate of our CA; ALPN h2 and http/1.1;
2. a token bucket per client IP address (the ``remote_address`` descriptor: the TCP
   peer, since Envoy trusts no ``X-Forwarded-For`` here), answering 429, under one bucket
   for the whole listener (:attr:`Limits.public_per_ip`, :attr:`Limits.public_total`);
3. Envoy's HTTP cache in front of the origin: it keeps what the origin marks
   ``immutable`` and revalidates ``latest`` and ``checkpoint`` (``no-cache``) with the
   origin's ETag, so the origin is asked once per file and per cut;
4. GET and HEAD only (anything else 405), a connection cap, a TLS handshake timeout and
   the connection manager's idle and duration bounds, as on every listener; the access
   log keeps only answers of 400 and above;
5. the origin, :mod:`veritally.publication.origin`, a static file server on loopback
   (plain HTTP/1.1: the same host only), with its own circuit breaker.

Responses larger than the listener's 1 MiB connection buffer (entry bundles of large
leaves) are served but not cached: a cached file is held in memory, and an ordinary
entry bundle is about 100 KiB.
"""

from __future__ import annotations

from veritally.mesh import envoy_parts as parts
from veritally.mesh.topology import CircuitBreaker, JsonDict, Topology

__all__ = ["ORIGIN_CLUSTER", "origin_cluster", "public_listener"]

ORIGIN_CLUSTER = "bundle_origin"
# Client addresses with a bucket of their own at once (LRU beyond): a national night's
# distinct readers of this listener, not the public at large (which reads CDNs).
_MAX_ADDRESSES = 100_000
# Seconds to answer a GET: the origin reads a file of at most ~17 MiB from disk.
_ROUTE_TIMEOUT_S = 30
# What Envoy asks of the origin at once (counts): one process on loopback.
_ORIGIN_BREAKER = CircuitBreaker(
    max_connections=64, max_pending_requests=1024, max_requests=1024, max_retries=0
)


def _server_tls(topology: Topology) -> JsonDict:
    tls = topology.tls
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            # (1) the public and mirrors have no certificate of ours, and need none
            "require_client_certificate": False,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
            },
        },
    }


def _rate_limit(topology: Topology) -> JsonDict:
    limits = topology.limits
    # (2) every GET of the listener, then one bucket per client address
    config = parts.local_rate_limit("public_rate_limit", limits.public_total)
    config["typed_config"].update(
        {
            "max_dynamic_descriptors": _MAX_ADDRESSES,
            "descriptors": [
                {
                    "entries": [{"key": "remote_address", "value": ""}],
                    "token_bucket": limits.public_per_ip.render(),
                }
            ],
            "rate_limits": [{"actions": [{"remote_address": {}}]}],
        }
    )
    return config


def _cache() -> JsonDict:
    # (3) HTTP caching by the origin's Cache-Control and ETag
    return {
        "name": "envoy.filters.http.cache",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.cache"
                ".simple_http_cache.v3.SimpleHttpCacheConfig"
            },
        },
    }


def _routes() -> list[JsonDict]:
    reads = {
        "name": ":method",
        "string_match": {"safe_regex": {"regex": "GET|HEAD"}},
    }
    return [
        {
            "match": {"prefix": "/", "headers": [reads]},
            "route": {"cluster": ORIGIN_CLUSTER, "timeout": f"{_ROUTE_TIMEOUT_S}s"},
        },
        # (4) nothing but reads
        {"match": {"prefix": "/"}, "direct_response": {"status": 405}},
    ]


def public_listener(topology: Topology) -> JsonDict:
    """The ``public`` listener (see the module doc).

    Raises:
        ValueError: the topology has no public listener.
    """
    if topology.public is None:
        raise ValueError("the topology has no public listener")
    hcm = parts.connection_manager(
        stat_prefix="public",
        topology=topology,
        routes=_routes(),
        codec="AUTO",
        # Rate limit first: a flood is cut by address before the cache is looked up.
        filters=[_rate_limit(topology), _cache()],
    )
    for access_log in hcm["typed_config"]["access_log"]:
        # Only refusals and failures (429 floods, 404 scans, 405, 5xx): a GET of a public
        # file identifies nobody, thousands a second would fill the disk, and logging
        # each cost ~7% of Envoy's CPU per GET in an A/B run (317 vs 296 ms per 1,000).
        access_log["filter"] = {
            "status_code_filter": {
                "comparison": {
                    "op": "GE",
                    "value": {"default_value": 400, "runtime_key": "public.access_log_min_status"},
                }
            }
        }
    return parts.listener_config(
        "public",
        topology.public,
        hcm,
        _server_tls(topology),
        limits=topology.limits,
        max_connections=topology.limits.public_max_connections,
    )


def origin_cluster(topology: Topology) -> JsonDict:
    """The cluster of the static origin (plain HTTP/1.1 on loopback).

    Raises:
        ValueError: the topology has no origin.
    """
    if topology.origin is None:
        raise ValueError("the topology has no bundle origin")
    return {
        "name": ORIGIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ORIGIN_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": parts.address(topology.origin)}}]}
            ],
        },
        # (5) what the listener may ask of the origin at once
        "circuit_breakers": _ORIGIN_BREAKER.render(),
    }
