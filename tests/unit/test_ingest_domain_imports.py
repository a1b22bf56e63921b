"""Ingest's domain (the engine, PREP's rules, operator checks, bounds, leaves) imports no
gRPC: it decides in ``veritally.reject`` terms, and the servicer alone maps them to
statuses (``veritally.rpc.status``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import veritally.ingest

INGEST_DIR = Path(veritally.ingest.__file__).resolve().parent
DOMAIN_MODULES = ("engine", "rules", "operators", "bounds", "leaf")


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names, as written)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def _grpc_imports(path: Path) -> list[str]:
    return sorted(m for m in _imported_modules(path) if m.split(".")[0].startswith("grpc"))


@pytest.mark.parametrize("name", DOMAIN_MODULES)
def test_ingest_domain_module_imports_no_grpc(name: str) -> None:
    path = INGEST_DIR / f"{name}.py"
    assert path.is_file(), path
    assert _grpc_imports(path) == []


def test_the_walk_sees_a_grpc_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import grpc\nfrom grpc_status import rpc_status\ndef f():\n    import grpc.aio\n"
    )
    assert _grpc_imports(sample) == ["grpc", "grpc.aio", "grpc_status"]
