"""veritally: ingest, aggregation and publication of signed preliminary election results."""

__version__ = "0.1.0"
