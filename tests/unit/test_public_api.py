"""The SDK's public surface is small and declared."""

from __future__ import annotations

import ast
from pathlib import Path

import veritally_client

SDK_DIR = Path(veritally_client.__file__).resolve().parent


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(veritally_client) if not name.startswith("_")}
    # Importing the protocol layer (ADR 0055) binds the subpackage on its parent; it is a
    # public module of its own, not a name of the client's API.
    public.discard("protocol")
    assert set(veritally_client.__all__) == public


def test_implementation_modules_are_private() -> None:
    modules = [p.stem for p in SDK_DIR.glob("*.py") if p.stem != "__init__"]
    assert modules, "the SDK has implementation modules"
    assert all(name.startswith("_") for name in modules), modules


def test_sdk_never_imports_the_services() -> None:
    offenders = []
    for path in SDK_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "veritally"]
    assert not offenders
