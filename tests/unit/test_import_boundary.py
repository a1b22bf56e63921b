"""Code outside the SDK reaches it only through ``veritally_client`` and its protocol layer.

The authority's services, the benchmarks and the scripts import ``veritally_client`` (the
verifying client) and ``veritally_client.protocol`` (the low-level signed formats, ADR
0055); a rename inside the SDK's private modules must not be able to break them silently.
Tests under tests/ may import the SDK's internals: they test them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import veritally_client
import veritally_client.protocol
import veritally_client.protocol.pb
from tests.conftest import REPO_ROOT

#: Trees of code outside the SDK that must keep to its public names.
OUTSIDE_THE_SDK = ("services", "bench", "scripts")

#: (file relative to the repository, private module) still allowed, each with its reason.
ALLOWED_PRIVATE_IMPORTS: dict[tuple[str, str], str] = {
    ("bench/sdk.py", "veritally_client._verify"): (
        "times CutVerifier.verify_update alone, a stage the public Client does not expose"
    ),
    ("bench/sdk.py", "veritally_client._state"): (
        "builds the TrustedState the timed CutVerifier.verify_update compares against"
    ),
    ("bench/sdk.py", "veritally_client._recount"): (
        "times the Recounter's stages (hash, parse, apply) apart, which Client.recount hides"
    ),
}

SDK_DIR = Path(veritally_client.__file__).resolve().parent


def _private_sdk_imports(path: Path) -> list[tuple[int, str]]:
    """The (line, module) of every import of a ``veritally_client._*`` module in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif node.module and node.level == 0:
            modules = [node.module]
            if node.module == "veritally_client":
                # ``from veritally_client import _tally`` reaches a private module too.
                modules += [f"veritally_client.{a.name}" for a in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "veritally_client" and any(p.startswith("_") for p in parts[1:]):
                found.append((node.lineno, module))
    return sorted(found)


def test_services_bench_and_scripts_import_no_private_sdk_module() -> None:
    offenders: list[str] = []
    used: set[tuple[str, str]] = set()
    for tree in OUTSIDE_THE_SDK:
        for path in sorted((REPO_ROOT / tree).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            for line, module in _private_sdk_imports(path):
                top = ".".join(module.split(".")[:2])
                if (relative, top) in ALLOWED_PRIVATE_IMPORTS:
                    used.add((relative, top))
                else:
                    offenders.append(f"{relative}:{line}: imports {module}")
    assert not offenders, "use veritally_client or veritally_client.protocol:\n" + "\n".join(
        offenders
    )
    # An entry nobody needs any more is removed, so that the list only shrinks.
    assert used == set(ALLOWED_PRIVATE_IMPORTS), set(ALLOWED_PRIVATE_IMPORTS) - used


def test_the_walk_sees_a_private_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import veritally_client\n"
        "from veritally_client.protocol import Tally\n"
        "def f() -> None:\n"
        "    from veritally_client._tally import Tally\n"
        "import veritally_client._gen.veritally.v1.acta_pb2\n"
        "from veritally_client import _merkle\n"
    )
    assert _private_sdk_imports(sample) == [
        (4, "veritally_client._tally"),
        (5, "veritally_client._gen.veritally.v1.acta_pb2"),
        (6, "veritally_client._merkle"),
    ]


def test_protocol_all_names_only_what_exists() -> None:
    for module in (veritally_client.protocol, veritally_client.protocol.pb):
        assert module.__all__, module.__name__
        assert len(set(module.__all__)) == len(module.__all__), module.__name__
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, (module.__name__, missing)
        public = {n for n in vars(module) if not n.startswith("_") and n != "annotations"}
        assert public == set(module.__all__), (module.__name__, public ^ set(module.__all__))


def test_the_only_public_modules_of_the_sdk_are_the_protocol_layer() -> None:
    public = sorted(
        path.relative_to(SDK_DIR).with_suffix("").as_posix()
        for path in SDK_DIR.rglob("*.py")
        if not any(part.startswith("_") for part in path.relative_to(SDK_DIR).parts)
    )
    assert public == ["protocol/pb"], public
    assert (SDK_DIR / "protocol" / "__init__.py").is_file()


#: Each signed byte format, the one SDK module that writes and reads it, and the names the
#: protocol layer gives its writers and readers (docs/adr/0055, "one module per signed
#: format").
SIGNED_FORMATS: dict[str, tuple[str, ...]] = {
    "veritally_client._leaf": (
        "serialize_acta",
        "encode_timestamp",
        "leaf_bytes",
        "varint",
        "parse_leaf",
        "parse_leaf_view",
        "LeafView",
    ),
    "veritally_client._cut": (
        "cut_leaf_bytes",
        "format_cut_time",
        "parse_cut_leaf",
        "parse_cut_time",
        "ingest_records_of",
    ),
    "veritally_client._checkpoint": ("Checkpoint", "parse_checkpoint"),
    "veritally_client._note": ("sign_note", "open_note", "VerifiedNote"),
}


def test_each_signed_format_is_written_and_read_by_one_module() -> None:
    protocol = veritally_client.protocol
    for module, names in SIGNED_FORMATS.items():
        assert set(names) <= set(protocol.__all__), (module, set(names) - set(protocol.__all__))
        homes = {n: getattr(protocol, n).__module__ for n in names}
        assert set(homes.values()) == {module}, homes
