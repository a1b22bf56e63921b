"""The Prometheus configuration of a stack: ``prometheus.yml`` (what to scrape) and
``rules.yml`` (the alerts of the night), rendered by our code with PyYAML.

``veritally up`` writes both into ``<state>/prometheus/``, so that an operator runs::

    prometheus --config.file=state/prometheus/prometheus.yml

Jobs: ``ingest``, ``aggregation``, ``publication`` (each service's own ``/metrics``),
``stack`` (the supervisor: children, restarts, certificate and CRL expiry, disk) and
``envoy`` (the admin listener's ``/stats/prometheus``, loopback only). Every alert has a
``severity`` (``page``: act now, the night is affected; ``warning``: act within the
hour) and a ``runbook`` annotation: the section of docs/operations.md that says what to
do. The rules are checked with ``promtool test rules`` (tests/prometheus/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_NAME",
    "JOBS",
    "RULES_NAME",
    "RUNBOOK_PAGE",
    "AlertThresholds",
    "render_rules",
    "render_scrape_config",
    "rules",
    "scrape_targets",
    "write_prometheus_files",
]

JOBS = ("ingest", "aggregation", "publication", "stack", "envoy")
# Each alert has a heading of its own name in the runbook section of this page.
RUNBOOK_PAGE = "docs/operations.md"
CONFIG_NAME = "prometheus.yml"
RULES_NAME = "rules.yml"
_DAY_S = 86_400


@dataclass(frozen=True, kw_only=True)
class AlertThresholds:
    """The limits the alerts fire at.

    Attributes:
        cut_age_intervals: the newest cut is older than this many cut intervals (the
            SDK's freshness check refuses a cut a few intervals old, so media are
            about to see failures).
        aggregation_lag_records: records ingest logged and aggregation has not counted
            (a national night commits a few thousand per second at its peak).
        reject_ratio: rejected / received actas over 5 minutes (an honest night
            rejects well under 1 %: mistyped figures and a few late duplicates).
        cross_check_actas: actas waiting for an operator to settle their captures.
        certificate_days: days before a certificate's notAfter (time to reissue and
            deploy it by day).
        crl_warning_s: seconds before the CRL's nextUpdate: two reissues missed
            (:class:`veritally.supervisor.CrlSchedule`, validity − 2 × reissue period).
        crl_page_s: seconds before the CRL's nextUpdate: less than one reissue period
            left, Envoy will lock everyone out.
        disk_free_ratio: free / size of the state directory's file system.
        restarts: restarts of one child within the supervisor's restart window.
    """

    cut_age_intervals: int = 5
    aggregation_lag_records: int = 10_000
    reject_ratio: float = 0.05
    cross_check_actas: int = 20
    certificate_days: int = 7
    crl_warning_s: int = 302_400  # 3.5 days of the default 7-day CRL
    crl_page_s: int = 151_200  # 42 h, one default reissue period
    disk_free_ratio: float = 0.10
    restarts: int = 3


def _alert(name: str, expr: str, *, for_: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "runbook": f"{RUNBOOK_PAGE}#{name.lower()}"},
    }


def rules(thresholds: AlertThresholds = AlertThresholds()) -> dict[str, Any]:
    """The alerting rules as a Prometheus rule file's structure."""
    t = thresholds
    alerts = [
        _alert(
            "VeritallyTargetDown",
            'up{job=~"ingest|aggregation|publication|stack|envoy"} == 0',
            for_="1m",
            severity="page",
            summary="{{ $labels.job }} does not answer its metrics scrape",
        ),
        _alert(
            "VeritallyNoCut",
            'absent(veritally_publication_last_cut_number) and on() up{job="publication"} == 1',
            for_="2m",
            severity="page",
            summary="publication runs but has made no cut",
        ),
        _alert(
            "VeritallyCutStale",
            "(time() - veritally_publication_last_cut_timestamp_seconds"
            f" > {t.cut_age_intervals} * veritally_publication_interval_seconds)"
            " and on(job, instance) veritally_publication_final == 0",
            for_="30s",
            severity="page",
            summary="the newest cut is {{ $value | humanizeDuration }} old",
        ),
        _alert(
            "VeritallyCutFailures",
            "increase(veritally_publication_cut_failures_total[5m]) >= 3",
            for_="0s",
            severity="warning",
            summary="publication skipped {{ $value }} cuts in 5 minutes",
        ),
        _alert(
            "VeritallyAggregationStalled",
            "veritally_aggregation_lag_records > 0"
            " and changes(veritally_aggregation_position_records[2m]) == 0",
            for_="1m",
            severity="page",
            summary="aggregation counts nothing while {{ $value }} records wait",
        ),
        _alert(
            "VeritallyAggregationLagHigh",
            f"veritally_aggregation_lag_records > {t.aggregation_lag_records}",
            for_="2m",
            severity="warning",
            summary="aggregation is {{ $value }} records behind ingest",
        ),
        _alert(
            "VeritallyPublicationStalled",
            "veritally_publication_lag_records > 0"
            " and changes(veritally_publication_acta_records[2m]) == 0",
            for_="1m",
            severity="page",
            summary="cuts cover no new record while {{ $value }} accepted records wait",
        ),
        _alert(
            "VeritallyRejectRateHigh",
            "sum(rate(veritally_ingest_actas_rejected_total[5m]))"
            f" / sum(rate(veritally_ingest_actas_received_total[5m])) > {t.reject_ratio}",
            for_="5m",
            severity="warning",
            summary="{{ $value | humanizePercentage }} of received actas are rejected",
        ),
        _alert(
            "VeritallyCrossCheckQueue",
            f'veritally_ingest_captures_pending{{state="cross_check"}} > {t.cross_check_actas}',
            for_="10m",
            severity="warning",
            summary="{{ $value }} actas wait for an operator's cross-check",
        ),
        _alert(
            "VeritallyCertificateExpiresSoon",
            "veritally_certificate_expiry_timestamp_seconds - time()"
            f" < {t.certificate_days * _DAY_S}",
            for_="0s",
            severity="warning",
            summary="a {{ $labels.role }} certificate expires in {{ $value | humanizeDuration }}",
        ),
        _alert(
            "VeritallyCrlExpiresSoon",
            f"veritally_crl_expiry_timestamp_seconds - time() < {t.crl_warning_s}",
            for_="0s",
            severity="warning",
            summary="the CRL has not been reissued: {{ $value | humanizeDuration }} left",
        ),
        _alert(
            "VeritallyCrlAboutToExpire",
            f"veritally_crl_expiry_timestamp_seconds - time() < {t.crl_page_s}",
            for_="0s",
            severity="page",
            summary="Envoy refuses every connection in {{ $value | humanizeDuration }}",
        ),
        _alert(
            "VeritallyDiskLow",
            f"veritally_state_disk_free_bytes / veritally_state_disk_size_bytes"
            f" < {t.disk_free_ratio}",
            for_="5m",
            severity="warning",
            summary="{{ $value | humanizePercentage }} of the state directory's disk is free",
        ),
        _alert(
            "VeritallyChildRestarting",
            f"veritally_stack_restarts >= {t.restarts}",
            for_="0s",
            severity="warning",
            summary="{{ $labels.service }} crashed and restarted {{ $value }} times",
        ),
        _alert(
            "VeritallyEnvoyUpstreamUnhealthy",
            "envoy_cluster_membership_healthy == 0",
            for_="1m",
            severity="page",
            summary="Envoy has no healthy replica in {{ $labels.envoy_cluster_name }}",
        ),
    ]
    return {"groups": [{"name": "veritally-night", "rules": alerts}]}


def render_rules(thresholds: AlertThresholds = AlertThresholds()) -> str:
    """``rules.yml``."""
    return _dump(rules(thresholds))


def render_scrape_config(
    *,
    services: Mapping[str, str],
    stack: str,
    envoy_admin: str,
    scrape_interval_s: int = 5,
    rules_file: str = RULES_NAME,
) -> str:
    """``prometheus.yml``: each service's ``/metrics`` at ``services[name]``
    (``host:port``), the supervisor's at ``stack``, Envoy's ``/stats/prometheus`` at
    ``envoy_admin``; ``rules_file`` relative to the configuration's directory.

    Raises:
        ValueError: a service of :data:`JOBS` without an address.
    """
    missing = [job for job in JOBS[:3] if job not in services]
    if missing:
        raise ValueError(f"no metrics address for {missing}")
    interval = f"{scrape_interval_s}s"

    def job(name: str, target: str, path: str = "/metrics") -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": path,
            "static_configs": [{"targets": [target]}],
        }

    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rules_file],
        "scrape_configs": [
            *(job(name, services[name]) for name in JOBS[:3]),
            job("stack", stack),
            job("envoy", envoy_admin, "/stats/prometheus"),
        ],
    }
    return _dump(config)


def scrape_targets(config_text: str) -> dict[str, str]:
    """job name -> ``host:port`` of a ``prometheus.yml`` this module rendered.

    Raises:
        ValueError: the text is not such a configuration.
    """
    try:
        config = yaml.safe_load(config_text)
        return {
            job["job_name"]: job["static_configs"][0]["targets"][0]
            for job in config["scrape_configs"]
        }
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"not a scrape configuration rendered by veritally: {e}") from e


def write_prometheus_files(
    directory: Path,
    *,
    services: Mapping[str, str],
    stack: str,
    envoy_admin: str,
    thresholds: AlertThresholds = AlertThresholds(),
) -> Path:
    """Write ``prometheus.yml`` and ``rules.yml`` into ``directory``; returns the path
    of ``prometheus.yml``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RULES_NAME).write_text(render_rules(thresholds))
    config = directory / CONFIG_NAME
    config.write_text(render_scrape_config(services=services, stack=stack, envoy_admin=envoy_admin))
    return config


def _dump(data: Mapping[str, Any]) -> str:
    header = "# Rendered by veritally (veritally.metrics.prometheus); do not edit.\n"
    return header + yaml.safe_dump(dict(data), sort_keys=False, width=100)
