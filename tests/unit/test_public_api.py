"""The SDK's public surface is small and declared."""

from __future__ import annotations

import ast
from pathlib import Path

import veritally_client

SDK_DIR = Path(veritally_client.__file__).resolve().parent


def test_all_lists_exactly_the_public_names() -> None:
    # The names are bound on first use (PEP 562): every one of __all__ resolves, and
    # nothing public is bound that __all__ does not list.
    lazy = set(veritally_client._LAZY)
    assert set(veritally_client.__all__) == lazy
    for name in veritally_client.__all__:
        assert getattr(veritally_client, name) is not None
    public = {name for name in vars(veritally_client) if not name.startswith("_")}
    # Importing the protocol layer (ADR 0055) binds the subpackage on its parent; it is a
    # public module of its own, not a name of the client's API.
    public.discard("protocol")
    assert public <= set(veritally_client.__all__)
    assert lazy <= set(dir(veritally_client))  # what help() and completion list


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


def test_results_with_names_are_public_frozen_dataclasses() -> None:
    import dataclasses

    for name in (
        "CandidateResult",
        "Completeness",
        "OptionResult",
        "PartyResult",
        "RaceResult",
        "Unit",
        "UnitResult",
    ):
        cls = getattr(veritally_client, name)
        assert name in veritally_client.__all__
        assert isinstance(cls, type)
        assert dataclasses.is_dataclass(cls), name
        assert getattr(cls, "__dataclass_params__").frozen, name  # noqa: B009


def test_unknown_id_error_is_in_the_error_tree_and_a_lookup_error() -> None:
    error = veritally_client.UnknownIdError
    assert "UnknownIdError" in veritally_client.__all__
    assert issubclass(error, veritally_client.VeritallyError)
    assert issubclass(error, LookupError)
    assert not issubclass(error, veritally_client.VerificationError)
