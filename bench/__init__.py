"""Benchmarks of veritally. ``python -m bench`` (``make bench``) runs them all."""
