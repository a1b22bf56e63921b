"""The attacks of issue 10, the defence against each and the tests that hold it.

:data:`ATTACKS` is rendered by :func:`bench.soak.write_doc` as the "Attacks and
defences" table of docs/RELIABILITY.md; tests/unit/test_reliability_table.py checks that
every test it names exists, so the table cannot drift from the suite. A row's measured
figure comes from the soak's figures where a flood measures it (``measured``), otherwise
it is the fact its tests assert (``asserted``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Figures = Mapping[str, Any]


@dataclass(frozen=True)
class Attack:
    """One row of the table.

    Attributes:
        attack: what one identity (or a restored disk) did.
        defence: the mechanism that now holds, in a few words.
        tests: ``path::test name`` of each test that holds it.
        asserted: what those tests assert (the figure when no flood measures it).
        measured: the figure from the soak's figures, or None when that part did not
            run (then ``asserted`` stands alone).
    """

    attack: str
    defence: str
    tests: tuple[str, ...]
    asserted: str
    measured: Callable[[Figures], str | None] | None = None

    def figure(self, figures: Figures) -> str:
        """The measured figure if the soak measured one, then what the tests assert."""
        got = self.measured(figures) if self.measured is not None else None
        return f"{got}; the tests: {self.asserted}" if got else self.asserted


def _polite(stats: Mapping[str, Any]) -> str:
    return f"{stats['success_rate']:.2%}, p99 {stats['p99_ms']} ms"


def _phase(figures: Figures, name: str) -> Mapping[str, Any] | None:
    phases = (figures.get("abuse") or {}).get("phases") or {}
    part = phases.get(name)
    return part if isinstance(part, Mapping) else None


def _gzip(figures: Figures) -> str | None:
    part = _phase(figures, "gzip")
    if part is None:
        return None
    return (
        f"soak: {part['attacker']['calls']} requests of 60 MiB inflated in "
        f"{part.get('seconds', '?')} s, "
        f"{part['attacker']['codes']}; polite reads {_polite(part['polite_reads'])}, "
        f"submits {_polite(part['polite_submits'])}; ingest peak RSS "
        f"{part['rss_kib_peak'] / 1024:.0f} MiB (from {part['rss_kib_before'] / 1024:.0f})"
    )


def _stuffing(figures: Figures) -> str | None:
    part = _phase(figures, "stuffing")
    if part is None:
        return None
    stored = part.get("stored") or {}
    return (
        f"soak: {part['attacker']['calls']} disagreeing captures of 5 actas in "
        f"{part.get('seconds', '?')} s, "
        f"{stored.get('conflicts_kept', '?')} conflicts kept "
        f"({stored.get('conflict_bytes', 0):,} bytes), the rest counted; store "
        f"{(part['store_bytes_after'] - part['store_bytes_before']) / 1024:+,.0f} KiB with "
        f"the polite centre's actas; ingest peak RSS {part['rss_kib_peak'] / 1024:.0f} MiB "
        f"(from {part['rss_kib_before'] / 1024:.0f}); polite reads "
        f"{_polite(part['polite_reads'])}, submits {_polite(part['polite_submits'])}"
    )


def _isolation(figures: Figures, key: str) -> Mapping[str, Any] | None:
    part = (figures.get("isolation") or {}).get(key)
    return part if isinstance(part, Mapping) else None


def _watch_flood(figures: Figures) -> str | None:
    part = _isolation(figures, "streams")
    if part is None:
        return None
    flood = part["flood"]
    return (
        f"soak: {flood.get('attempted', '?')} streams tried, {flood.get('held', 0)} held; "
        f"other outlets' reads {_polite(part['polite_reads'])}, new WatchCuts "
        f"{_polite(part['polite_watches'])}"
    )


def _silent(figures: Figures) -> str | None:
    part = _isolation(figures, "silent_submits")
    if part is None:
        return None
    return (
        f"soak: {part['flood'].get('attempted', '?')} silent streams; another centre "
        f"{_polite(part['polite_submits'])}, its actas in a cut "
        f"{part['polite_actas_published_s']} s after the flood"
    )


def _tcp(figures: Figures) -> str | None:
    part = _isolation(figures, "connections")
    if part is None:
        return None
    flood = part["flood"]
    fresh = part["polite_new_connections"]["success_rate"]
    return (
        f"soak: {flood.get('opened', 0):,} connections opened, at most "
        f"{flood.get('max open', 0):,} open; open connections "
        f"{_polite(part['polite_reads'])}, new connections {fresh:.2%}"
        + (" (goal missed: the edge's cap is shared by every source)" if fresh < 1 else "")
    )


def _forks(figures: Figures) -> str | None:
    crash = figures.get("crash")
    if not crash:
        return None
    return (
        f"soak (crash): {crash['sizes_signed_twice_with_different_roots']} of "
        f"{crash['signed_sizes_checked']} tree sizes signed with two roots over "
        f"{crash['rounds']} SIGKILLs"
    )


_INGEST = "tests/integration/test_ingest_service.py::"
_BOUNDS = "tests/unit/test_ingest_bounds.py::"
_ISOLATION = "tests/e2e/test_isolation.py::"
_PUB_LEASE = "tests/integration/test_publication_lease.py::"
_PUB_FAILOVER = "tests/integration/test_publication_failover.py::"
_PUB_STORE = "tests/integration/test_publication_store_checks.py::"

ATTACKS: tuple[Attack, ...] = (
    Attack(
        "Poison acta: ~64 MiB (65 KiB gzip), captured twice, freezes publication",
        "acta at most 16 KiB (`bounds.MAX_ACTA_BYTES`, also after the centre's identity "
        "is stamped); Envoy's 64 KiB unary limit; ingest's receive limit per message",
        (
            "tests/e2e/test_stack.py::"
            "test_poison_acta_through_the_edge_is_refused_and_the_night_goes_on",
            "tests/integration/test_aggregation_service.py::"
            "test_poison_acta_sent_twice_is_refused_and_the_night_goes_on",
            _BOUNDS + "test_rejects_an_acta_above_the_max_acta_size",
        ),
        "64 MiB refused twice (RESOURCE_EXHAUSTED plain, UNIMPLEMENTED gzip, unary and "
        "stream); 1 MiB refused INVALID_ARGUMENT naming `acta`; the next actas captured, "
        "published and verified",
    ),
    Attack(
        "Unbounded `operator_id` (3.9 MB) and casilla id (50 KB echoed in an error)",
        "identifiers ASCII, at most 64 characters, no confusables "
        "(`bounds.MAX_IDENTIFIER_CHARS`); errors never echo unbounded input",
        (
            _INGEST + "test_rejects_a_50_kb_casilla_id_without_echoing_it_in_the_error",
            _BOUNDS + "test_rejects_a_huge_casilla_id_without_echoing_it",
            _BOUNDS + "test_rejects_an_identifier_one_character_too_long",
            _BOUNDS + "test_rejects_confusable_or_non_ascii_identifiers",
        ),
        "INVALID_ARGUMENT naming `acta` / `casilla_id`, the error under the echo limit, "
        "nothing logged",
    ),
    Attack(
        "Unbounded messages on the `SubmitActas` stream (Envoy's limit is for unary calls)",
        "ingest's receive limit per message (`ingest.app.MAX_RECEIVE_BYTES`), on the "
        "decompressed size",
        (
            _INGEST + "test_a_submit_actas_message_above_the_receive_limit_is_refused_unparsed",
            "tests/integration/test_fuzz_ingest_api.py::"
            "test_each_message_of_a_submit_actas_stream_is_bounded_after_decompression",
        ),
        "RESOURCE_EXHAUSTED unparsed, the earlier message of the stream kept, the service goes on",
    ),
    Attack(
        "Unknown fields in a request or deep in an acta",
        "unknown fields rejected at every level of the acta and the request",
        (
            _INGEST + "test_rejects_unknown_fields_in_the_request_and_deep_in_the_acta",
            _BOUNDS + "test_rejects_unknown_fields_at_the_top_of_the_acta",
            _BOUNDS + "test_rejects_unknown_fields_nested_in_an_option_or_a_timestamp",
        ),
        "INVALID_ARGUMENT naming `request` / `provenance`, nothing logged",
    ),
    Attack(
        "Timestamps 2^62 s or with negative nanos; enum values such as 99",
        "timestamps within RFC 3339's range (`bounds.MAX_TIMESTAMP_SECONDS`), nanos in "
        "[0, 1e9); only defined enum values",
        (
            _INGEST + "test_batch_outcomes_reject_out_of_range_timestamps_and_undefined_enums",
            _BOUNDS + "test_rejects_timestamps_out_of_the_timestamp_range",
            _BOUNDS + "test_rejects_undefined_enum_values",
        ),
        "each REJECTED INVALID_ARGUMENT naming its field; the valid acta of the same "
        "batch accepted",
    ),
    Attack(
        "Gzip inflation: requests inflating to 60 MB each at 2 % of a centre's budget "
        "(polite p50 4 ms → 1.5 s, ingest RSS 1.7 GB)",
        "Envoy answers any `grpc-encoding` but identity UNIMPLEMENTED before buffering, "
        "on edge and mesh; services' receive limits apply after decompression",
        (
            "tests/unit/test_envoy_render.py::"
            "test_compressed_requests_are_refused_before_any_route_on_edge_and_mesh",
            "tests/e2e/test_mesh.py::"
            "test_gzip_request_is_refused_at_envoy_and_a_normal_one_still_works",
            "tests/integration/test_fuzz_ingest_api.py::"
            "test_gzip_request_inflating_past_the_limit_is_refused_without_allocating_it",
            "tests/e2e/test_abuse.py::test_gzip_requests_are_refused_unimplemented",
        ),
        "UNIMPLEMENTED at Envoy, never reaching ingest; a service reached directly "
        "refuses it RESOURCE_EXHAUSTED without its peak RSS growing by the inflated size",
        _gzip,
    ),
    Attack(
        "Unbounded captures and conflicts per acta (+20 MB per 20 requests)",
        "at most 3 pending captures (`engine.MAX_PENDING_CAPTURES`) and 10 kept "
        "conflicts per acta (`engine.MAX_CONFLICTS_PER_ACTA`), later ones only counted",
        (
            _INGEST + "test_a_fourth_disagreeing_capture_is_refused_and_not_stored",
            _INGEST + "test_conflicts_beyond_the_cap_are_refused_and_counted_not_stored",
            "tests/e2e/test_abuse.py::"
            "test_stuffing_is_refused_past_the_first_capture_and_stores_at_most_the_caps",
        ),
        "a fourth disagreeing capture FAILED_PRECONDITION, not stored; conflicts past 10 "
        "ALREADY_EXISTS and counted, also across a restart",
        _stuffing,
    ),
    Attack(
        "The CRL's 7-day nextUpdate: every new connection refused after a week",
        "`supervisor.CrlKeeper` reissues it on a schedule under the running Envoy (SDS), "
        "alarms after two missed reissues, refuses to start when it cannot",
        (
            "tests/e2e/test_crl_lifecycle.py::"
            "test_crl_is_replaced_before_it_bites_and_new_connections_keep_working",
            "tests/e2e/test_crl_lifecycle.py::test_stack_starts_on_an_expired_crl_by_reissuing_it",
            "tests/e2e/test_crl_lifecycle.py::"
            "test_expired_crl_refuses_every_new_connection_without_reissue",
            "tests/unit/test_crl_schedule.py::"
            "test_refuses_to_start_on_an_expiring_crl_that_cannot_be_reissued",
        ),
        "new connections all OK over three CRL lifetimes, the same Envoy process; without "
        "reissue an expired CRL refuses them (so the test can fail)",
    ),
    Attack(
        'One certificate as two operators ("A"/"B", `op-1`/Cyrillic `оp-1`) passes '
        "double capture alone",
        "operator from the certificate's SPIFFE ID (`capture/<centre>/<operator>`), "
        "compared by SPIFFE ID; names short lowercase ASCII",
        (
            _INGEST + "test_one_certificate_sending_as_two_operators_cannot_pass_double_capture",
            _INGEST + "test_confusable_operator_id_cannot_stand_for_a_second_operator",
            "tests/e2e/test_stack.py::"
            "test_one_certificate_sending_as_two_operators_cannot_pass_double_capture",
        ),
        "nothing logged; the honest second operator gets CROSS_CHECK (not ALREADY_EXISTS), "
        "the provenance names the certificates' operators",
    ),
    Attack(
        "Any centre captures any casilla in the country",
        "casilla-to-centre assignment in the catalogue, enforced by ingest",
        (
            _INGEST + "test_centre_cannot_capture_a_casilla_assigned_to_another_centre",
            "tests/e2e/test_stack.py::"
            "test_centre_cannot_capture_a_casilla_assigned_to_another_centre",
            "tests/unit/test_ingest_operators.py::"
            "test_centre_capturing_a_casilla_assigned_to_another_is_refused_on_casilla_id",
        ),
        "REJECTED PERMISSION_DENIED on `casilla_id`",
    ),
    Attack(
        "One operator alone corrects any acta, with an empty reason",
        "dual control: logged only when a second, distinct operator submits the same "
        "correction; a reason is mandatory (at most 1,000 characters)",
        (
            _INGEST + "test_one_operator_alone_cannot_correct_an_acta",
            _INGEST + "test_correction_without_a_reason_is_refused",
            "tests/e2e/test_stack.py::test_one_operators_correction_waits_for_a_second_operator",
            "tests/unit/test_ingest_operators.py::"
            "test_the_same_operator_never_approves_her_own_correction",
        ),
        "AWAITING_SECOND_APPROVAL until a second operator sends the same one (her "
        "retries store nothing more); no reason: refused",
    ),
    Attack(
        "4,300 `WatchCuts` streams of one outlet fill publication's shared breaker",
        "per-identity stream cap in the services (`veritally.rpc.streams`, 8); separate Envoy "
        "clusters and breakers for edge streams, edge unary calls and the mesh",
        (
            _ISOLATION + "test_flood_of_watch_streams_does_not_starve_other_outlets",
            _ISOLATION + "test_full_edge_stream_breaker_leaves_reads_and_mesh_streams_alone",
            "tests/unit/test_envoy_render.py::"
            "test_flood_of_watch_streams_cannot_fill_the_breaker_of_reads_or_mesh_streams",
        ),
        "streams past the cap RESOURCE_EXHAUSTED; other outlets and the mesh streams at 100 %",
        _watch_flood,
    ),
    Attack(
        "One outlet's streams that stop reading stall every other outlet's new WatchCuts "
        "(found by the stream flood: 10 s without a first cut)",
        "small HTTP/2 flow-control windows towards the services (64 KiB per stream, 1 MiB "
        "per connection): a service waits on the slow stream alone instead of Envoy "
        "buffering it and pausing the upstream connection every party shares",
        (
            "tests/e2e/test_slow_reader.py::"
            "test_slow_reading_outlet_does_not_stall_other_outlets_streams",
            "tests/unit/test_envoy_render.py::"
            "test_slow_reader_cannot_pause_the_upstream_connection_others_share",
        ),
        "8 streams holding the first cut of 40 owed: another outlet's new WatchCuts all get "
        "their first cut within 5 s (before: DEADLINE_EXCEEDED)",
        _watch_flood,
    ),
    Attack(
        "Silent `SubmitActas` streams of two centres block every centre and aggregation",
        "per-identity stream cap, an idle bound (no message for a while ends the stream) "
        "and a lifetime; mesh streams in their own cluster",
        (
            "tests/integration/test_stream_limits.py::"
            "test_silent_submit_streams_of_one_centre_do_not_block_another_centre_or_the_follower",
            "tests/integration/test_stream_limits.py::"
            "test_silent_submit_stream_is_ended_after_the_idle_bound_and_its_slot_freed",
            _ISOLATION + "test_silent_submit_streams_do_not_stop_another_centre_nor_aggregation",
        ),
        "another centre's submissions and the follower go on; a silent stream ends at the "
        "idle bound and frees its slot",
        _silent,
    ),
    Attack(
        "20,700 TCP connections that never start TLS hold Envoy at its fd limit",
        "TLS handshake timeout (`transport_socket_connect_timeout`, 10 s), a connection "
        "cap on every listener under a global one, Envoy's fd limit raised above them",
        (
            _ISOLATION
            + "test_tcp_connections_that_never_start_tls_are_closed_and_others_still_connect",
            _ISOLATION
            + "test_connections_beyond_the_edge_cap_are_closed_at_once_and_the_mesh_is_untouched",
            _ISOLATION + "test_envoy_runs_with_an_fd_limit_above_its_connection_caps",
            "tests/unit/test_envoy_render.py::"
            "test_connections_that_never_start_tls_are_timed_out_and_capped_on_every_listener",
        ),
        "closed after the handshake timeout; another client gets in while they are held",
        _tcp,
    ),
    Attack(
        "A restored (older) publication database signs the same tree sizes again with other roots",
        "fork guard: at start and before each signature publication checks it is not "
        "behind any checkpoint of its bundle, and refuses to sign",
        (
            _PUB_STORE + "test_restored_older_database_refuses_to_sign_and_no_size_gets_two_roots",
            _PUB_STORE
            + "test_serve_publication_refuses_to_start_on_a_restored_database_and_says_why",
            _PUB_STORE
            + "test_second_publisher_on_a_copied_database_cannot_sign_a_size_the_other_published",
            "tests/unit/test_pub_fork_guard.py::"
            "test_refuses_to_start_on_a_store_behind_a_published_checkpoint",
        ),
        "ForkRefusedError; the bundle's signed roots unchanged, one root per size",
        _forks,
    ),
    Attack(
        "A deposed, partitioned or paused publisher on the shared database signs or stores "
        "a cut after another took over",
        "the publication lease: renewed in the cut's own transaction before signing (zero "
        "rows: LeaseLostError, rolled back), a frozen holder's session ended by the "
        "database after the lease length",
        (
            _PUB_LEASE + "test_a_deposed_publisher_neither_signs_nor_stores_a_cut",
            _PUB_LEASE + "test_a_holder_frozen_inside_a_cut_keeps_no_one_out_past_its_lease",
            _PUB_LEASE + "test_a_second_writer_without_the_lease_cannot_fork_the_log",
            _PUB_FAILOVER + "test_a_publisher_paused_past_its_lease_is_deposed_and_signs_nothing",
            _PUB_FAILOVER + "test_killing_the_active_publisher_hands_the_log_to_the_standby",
        ),
        "no signature after the lease is lost; exit status 75; every stored cut extends the "
        "one before",
    ),
    Attack(
        "A tampered leaf or results blob in publication's store, a forged capture in ingest's",
        "stores checked, not trusted: leaves hash to the stored tree nodes, results to "
        "their digests, capture bytes to their digests",
        (
            _PUB_STORE + "test_leaf_tampered_in_the_store_is_refused_not_served",
            _PUB_STORE + "test_results_blob_tampered_in_the_store_is_refused_not_served",
            "tests/integration/test_ingest_store_checks.py::"
            "test_forged_capture_in_the_store_is_never_logged",
        ),
        "DATA_LOSS, not served, its bundle page not published; a tampered results blob "
        "stops the next start; a forged capture raises CaptureIntegrityError, nothing "
        "logged",
    ),
    Attack(
        "A frozen pipeline that heartbeats: cuts over old records look healthy",
        "signed `ingest_records` in every cut record; the SDK's `StalledError` on a "
        "growing lag; aggregation and publication alarm when stuck on a record",
        (
            "tests/integration/test_liveness_pipeline.py::"
            "test_heartbeats_over_a_poison_record_show_a_growing_lag_and_the_sdk_reports_a_stall",
            "tests/unit/test_sdk_liveness.py::"
            "test_heartbeat_over_a_frozen_pipeline_is_reported_as_stalled",
            "tests/integration/test_aggregation_service.py::"
            "test_a_record_too_large_to_stream_alarms_with_its_position_instead_of_idling",
            "tests/integration/test_publication_service.py::"
            "test_heartbeats_over_a_stuck_aggregation_sign_the_lag_and_alarm_every_interval",
        ),
        "the signed lag grows with every heartbeat and the SDK raises StalledError; "
        "aggregation alarms with the stuck record's position, publication every interval "
        "with the lag",
    ),
)


def table_lines(figures: Figures, *, previous: str = "") -> list[str]:
    """The "Attacks and defences" section of docs/RELIABILITY.md.

    Args:
        figures: the soak's figures by part.
        previous: the section as an earlier run wrote it; a row whose part is not in
            ``figures`` keeps the measured figure it had there (``--only PART``
            without bench/out/soak.json keeps the other parts' figures too).
    """
    lines = [
        "## Attacks and defences",
        "",
        "The attacks of issue 10, one a row: the defence, the tests that hold it and the "
        "figure, from the floods above where one measures it (then also what the tests "
        "assert), otherwise what the tests assert.",
        "",
        "| Attack | Defence | Tests | Figure |",
        "|---|---|---|---|",
    ]
    earlier = previous_figures(previous)
    for a in ATTACKS:
        tests = "<br>".join(f"`{t}`" for t in a.tests)
        figure = a.figure(figures)
        if figure == a.asserted and a.measured is not None:
            figure = earlier.get(a.attack, figure)
        lines.append(f"| {a.attack} | {a.defence} | {tests} | {figure} |")
    return [*lines, ""]


def previous_figures(section: str) -> dict[str, str]:
    """The figure of each attack in a section :func:`table_lines` wrote, by attack."""
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and line.endswith(" |") and len(cells) == 4:
            out[cells[0][2:]] = cells[3][:-2]
    return out
