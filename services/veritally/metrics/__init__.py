"""Prometheus metrics of the services and the stack, the scrape configuration and alerting
rules rendered for them, and the figures ``veritally status`` reads back.

* :mod:`veritally.metrics.families`: what each service exports (``veritally_`` names with
  units, bounded labels), counted in batches or read at scrape time from figures the
  services already keep;
* :mod:`veritally.metrics.exposition`: the loopback ``/metrics`` listener and the
  certificate and CRL expiry gauges;
* :mod:`veritally.metrics.prometheus`: ``prometheus.yml`` and ``rules.yml`` for a stack;
* :mod:`veritally.metrics.status`: the operations room's figures from scraped text.
"""
