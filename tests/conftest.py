"""Shared test configuration. Paths resolve from this file, never the working directory."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
VECTORS_DIR = TESTS_DIR / "vectors"
