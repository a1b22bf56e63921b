"""The mesh's access policy: who may call which method, and how much of it.

This file is what a security reviewer audits. It holds no Envoy structure:
:mod:`veritally.mesh.envoy` renders it into RBAC filters (exact method paths, verified
certificate URIs), routes and rate-limit budgets, and refuses everything else with
PERMISSION_DENIED. ``tests/unit/test_access_policy.py`` holds it to the contracts: every
RPC of every ``veritally.v1`` service, of gRPC health and of reflection is granted here
to a named caller or denied in :data:`DENIED` with a reason, nothing here names a method
the contracts lack, and the rendered RBAC allows exactly these grants.

Callers are classes of verified identity, named by the URI SAN of their certificate
under ``spiffe://<td>/`` (ADR 0040):

* ``capture/<centre>`` and ``capture/<centre>/<operator>``: a capture centre and each of
  its operators (ingest takes both from the certificate, never from the acta);
* ``media/<outlet>``: an accredited media outlet;
* ``operator/<name>``: an operator of the electoral authority (corrections, cross
  checks); the authority's health probe runs under this identity too;
* ``service/<name>``: a veritally service calling another through the mesh listener.

What is policy, and lives here: the methods and what each is (a stream; safe to
repeat, so that Envoy may retry it; the largest request it accepts), the grants on each
listener, the JSON view's routes, and the default budget of calls per identity of each
role. What is mechanism, and lives in :class:`veritally.mesh.envoy.Limits`: the total
budget, connection caps, circuit breakers, timeouts and windows, which size the
deployment rather than say who may do what. A deployment may override the budgets
through ``Limits`` as well (the e2e tests do, to reach them).

Behind the mesh each service accepts only ``service/envoy`` (``--allow-peer`` in
``veritally serve``, :mod:`veritally.rpc.peer`), so these grants are the only way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veritally.pki import ROLE_CAPTURE, ROLE_MEDIA, ROLE_OPERATOR, ROLE_SERVICE

__all__ = [
    "AGGREGATION",
    "BUDGETS",
    "CAPTURE",
    "DENIED",
    "EDGE_GRANTS",
    "HEALTH",
    "HEALTH_CHECK_PATH",
    "INGEST",
    "INGEST_MAX_REQUEST_BYTES",
    "MEDIA",
    "MESH_GRANTS",
    "METHODS",
    "OPERATOR",
    "PUBLICATION",
    "READ_MAX_REQUEST_BYTES",
    "REFLECTION",
    "REST_GRANTS",
    "REST_ROUTES",
    "SERVICE_AGGREGATION",
    "SERVICE_FULL_NAMES",
    "SERVICE_PUBLICATION",
    "Budget",
    "Caller",
    "Grants",
    "Method",
    "grants_table",
]

SERVICE_FULL_NAMES: Mapping[str, str] = {
    "ingest": "veritally.v1.IngestService",
    "aggregation": "veritally.v1.AggregationService",
    "publication": "veritally.v1.PublicationService",
}

# Method path prefixes (``/<package>.<Service>/``), so that every grant below reads as the
# exact ``:path`` RBAC matches and the access log shows.
INGEST = f"/{SERVICE_FULL_NAMES['ingest']}/"
AGGREGATION = f"/{SERVICE_FULL_NAMES['aggregation']}/"
PUBLICATION = f"/{SERVICE_FULL_NAMES['publication']}/"
HEALTH = "/grpc.health.v1.Health/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"
HEALTH_CHECK_PATH = HEALTH + "Check"

# Request size limits, in bytes, enforced by Envoy before a request reaches a service.
# They apply to unary calls only (the buffer filter holds the whole request); streams
# (SubmitActas) are bounded per message by the service's own receive limit. Requests are
# never compressed (Envoy refuses them), so these are the real sizes.
# SubmitActa and CorrectActa carry one acta (at most bounds.MAX_ACTA_BYTES, 16 KiB) and
# a reason (at most ~4 KiB): 64 KiB leaves room and lets ingest name a too-big acta
# with INVALID_ARGUMENT. Reads carry a few integers: 64 KiB is generous.
INGEST_MAX_REQUEST_BYTES = 64 * 1024
READ_MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Method:
    """One gRPC method as the mesh sees it.

    Attributes:
        service: ``ingest``, ``aggregation`` or ``publication``.
        name: the method name.
        streaming: a streaming call (route timeout 0, no buffering).
        idempotent: safe to retry on UNAVAILABLE (reads only; never a write).
        max_request_bytes: largest unary request Envoy forwards (bytes).
    """

    service: str
    name: str
    streaming: bool = False
    idempotent: bool = False
    max_request_bytes: int = READ_MAX_REQUEST_BYTES

    @property
    def path(self) -> str:
        """The HTTP/2 ``:path`` of the call, ``/veritally.v1.Service/Method``."""
        return f"/{SERVICE_FULL_NAMES[self.service]}/{self.name}"


def _m(service: str, name: str, **kw: Any) -> Method:
    return Method(service=service, name=name, **kw)


# Every method the mesh routes, and what it is. A method absent from here is never
# routed: RBAC refuses it with PERMISSION_DENIED before routing.
METHODS: tuple[Method, ...] = (
    _m("ingest", "SubmitActa", max_request_bytes=INGEST_MAX_REQUEST_BYTES),
    _m("ingest", "SubmitActas", streaming=True),
    _m("ingest", "CorrectActa", max_request_bytes=INGEST_MAX_REQUEST_BYTES),
    _m("ingest", "ListCrossChecks", idempotent=True),
    _m("ingest", "ResolveCrossCheck"),
    _m("ingest", "StreamRecords", streaming=True),
    _m("ingest", "CloseNight"),
    _m("ingest", "RecordMissingActa"),
    _m("aggregation", "GetResults", idempotent=True),
    _m("aggregation", "GetResultsBlob", idempotent=True),
    _m("aggregation", "GetDefinition", idempotent=True),
    _m("aggregation", "StreamAggregatedRecords", streaming=True),
    _m("publication", "GetLatestCut", idempotent=True),
    _m("publication", "GetCut", idempotent=True),
    _m("publication", "WatchCuts", streaming=True),
    _m("publication", "GetActaInclusionProof", idempotent=True),
    _m("publication", "GetConsistencyProof", idempotent=True),
    _m("publication", "GetLeaves", idempotent=True),
    _m("publication", "GetTrustRoot", idempotent=True),
    _m("publication", "GetElectionDefinition", idempotent=True),
    _m("publication", "GetLatestCutView", idempotent=True),
    _m("publication", "GetCutView", idempotent=True),
)


@dataclass(frozen=True, kw_only=True)
class Caller:
    """A class of verified identity: the certificates whose URI SAN is
    ``spiffe://<td>/<role>/`` followed by anything (``name`` None) or exactly
    ``spiffe://<td>/<role>/<name>``.

    Attributes:
        policy: the name of its RBAC policy in the rendered configuration.
        role: the role segment of the URI (:mod:`veritally.pki`).
        name: the one identity of the role this caller is; None for all of them.
        shown: how the identities read below ``spiffe://<td>/`` (for the docs).
    """

    policy: str
    role: str
    name: str | None = None
    shown: str

    @property
    def identity(self) -> str:
        """The URI below ``spiffe://<td>/``: ``capture/`` (a prefix) or
        ``service/aggregation`` (exact)."""
        return f"{self.role}/" if self.name is None else f"{self.role}/{self.name}"


CAPTURE = Caller(policy=ROLE_CAPTURE, role=ROLE_CAPTURE, shown="capture/<centre>[/<operator>]")
MEDIA = Caller(policy=ROLE_MEDIA, role=ROLE_MEDIA, shown="media/<outlet>")
OPERATOR = Caller(policy=ROLE_OPERATOR, role=ROLE_OPERATOR, shown="operator/<name>")
SERVICE_AGGREGATION = Caller(
    policy="service-aggregation",
    role=ROLE_SERVICE,
    name="aggregation",
    shown="service/aggregation",
)
SERVICE_PUBLICATION = Caller(
    policy="service-publication",
    role=ROLE_SERVICE,
    name="publication",
    shown="service/publication",
)

Grants = Mapping[Caller, Mapping[str, str]]

# The edge listener (external parties, gRPC): caller -> method path -> why it may call it.
EDGE_GRANTS: Grants = {
    CAPTURE: {
        INGEST + "SubmitActa": "a centre sends each acta its operators capture",
        INGEST + "SubmitActas": "the same in bulk over one stream (catch-up, imports)",
        INGEST + "RecordMissingActa": "a centre records an expected acta that will not arrive",
    },
    MEDIA: {
        PUBLICATION + "GetLatestCut": "the signed result an outlet shows",
        PUBLICATION + "GetCut": "an earlier cut, to check history or fill a gap",
        PUBLICATION + "WatchCuts": "each new cut as it is signed, without polling",
        PUBLICATION + "GetActaInclusionProof": "proof that an acta is counted in a cut",
        PUBLICATION + "GetConsistencyProof": "proof that a cut extends an earlier one",
        PUBLICATION + "GetLeaves": "the log's records, to recompute a cut's results",
        PUBLICATION + "GetTrustRoot": "the signing keys and checkpoint origin",
        PUBLICATION + "GetElectionDefinition": "the contests and geography the tally is over",
    },
    OPERATOR: {
        INGEST + "CorrectActa": "the authority corrects an acta (a new revision)",
        INGEST + "ListCrossChecks": "the authority reviews double-capture disagreements",
        INGEST + "ResolveCrossCheck": "the authority settles one of them",
        INGEST + "CloseNight": "the authority closes the night: the next cut is the final one",
        # Routed to ingest, the operator's service.
        HEALTH_CHECK_PATH: "the authority's probe that the mesh answers",
    },
}

# The internal mesh listener (services only, gRPC): caller -> method path -> why.
MESH_GRANTS: Grants = {
    SERVICE_AGGREGATION: {
        INGEST + "StreamRecords": "aggregation follows ingest's acta log",
    },
    SERVICE_PUBLICATION: {
        AGGREGATION + "GetResultsBlob": "the results publication signs into each cut",
        AGGREGATION + "StreamAggregatedRecords": "the records each cut appends to the log",
        AGGREGATION + "GetDefinition": "the election definition publication serves",
    },
}

# The read-only JSON view (ADR 0043), for media without gRPC: method -> GET path
# template (google.api.http), and who may call it.
REST_ROUTES: Mapping[str, str] = {
    "GetLatestCut": "/v1/cuts/latest",
    "GetCut": "/v1/cuts/{cut_number}",
    "GetLatestCutView": "/v1/cuts/latest/view",
    "GetCutView": "/v1/cuts/{cut_number}/view",
    "GetTrustRoot": "/v1/trust-root",
}
REST_GRANTS: Grants = {
    MEDIA: {
        PUBLICATION + "GetLatestCut": "the latest signed cut as JSON",
        PUBLICATION + "GetCut": "an earlier cut as JSON",
        PUBLICATION + "GetLatestCutView": "the latest signed cut with its results named",
        PUBLICATION + "GetCutView": "an earlier cut with its results named",
        PUBLICATION + "GetTrustRoot": "the keys that verify them",
    },
}

# Methods the services answer that no caller is granted, on any listener (RBAC
# refuses them with PERMISSION_DENIED): method path -> why nobody needs it.
DENIED: Mapping[str, str] = {
    AGGREGATION + "GetResults": "unsigned aggregates; results leave only inside a signed cut",
    HEALTH + "List": "Envoy checks each service's health itself; Check is enough outside",
    HEALTH + "Watch": "a held stream for what Check answers; Envoy checks health itself",
    REFLECTION + "ServerReflectionInfo": "the contracts are published in proto/, not probed",
}


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Calls one identity may make through a listener: ``burst`` at once, refilled by
    ``per_second`` each second (a stream counts once, when it is opened)."""

    burst: int
    per_second: int


# The default budget of each identity, by role (Envoy answers RESOURCE_EXHAUSTED past
# it). Services have none: they reach only the mesh listener, which is not rate limited.
BUDGETS: Mapping[str, Budget] = {
    # An SDK polls the latest cut every few seconds and fetches proofs for what it
    # shows; a few hundred calls a second is far above honest use and cheap to serve.
    ROLE_MEDIA: Budget(burst=400, per_second=200),
    # A centre submits actas as they are scanned, a few a second at peak; bulk loads
    # use the SubmitActas stream.
    ROLE_CAPTURE: Budget(burst=100, per_second=50),
    # Interactive use.
    ROLE_OPERATOR: Budget(burst=20, per_second=10),
}


def _short(path: str) -> str:
    """``/veritally.v1.IngestService/SubmitActa`` -> ``IngestService/SubmitActa``."""
    service, _, method = path.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}"


def grants_table() -> str:
    """The grants as the Markdown table of docs/mesh.md ("Identities and roles"), one
    row per caller, so that the doc is held to this file by a test."""
    callers = [*EDGE_GRANTS, *(c for c in MESH_GRANTS if c not in EDGE_GRANTS)]
    lines = [
        "| Identity (`spiffe://<td>/...`) | Edge: may call | JSON view | Mesh: may call "
        "| Budget (per identity) |",
        "|---|---|---|---|---|",
    ]
    for caller in callers:
        cells = [
            ", ".join(f"`{_short(p)}`" for p in grants.get(caller, {})) or "—"
            for grants in (EDGE_GRANTS, REST_GRANTS, MESH_GRANTS)
        ]
        budget = BUDGETS.get(caller.role) if caller.name is None else None
        cells.append(f"{budget.burst} burst, {budget.per_second}/s" if budget else "—")
        lines.append(f"| `{caller.shown}` | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
