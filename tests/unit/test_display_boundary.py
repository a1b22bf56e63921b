"""Display at the edge (CONVENTIONS §19): argparse and rich live in ``veritally.cli``.

Every module of ``services/veritally`` (generated code excepted) is read as a syntax tree:

* only modules under ``veritally/cli/`` may import argparse or rich;
* no module imports or calls ``importlib``: commands and services are imported by name,
  statically, so that a type checker and a reader see every dependency;
* an import inside a function body needs a comment saying why, on the line before it or
  on its own line (a ``# type:`` or ``# noqa`` marker alone is not a reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "services" / "veritally"
CLI = PACKAGE / "cli"
DISPLAY_MODULES = ("argparse", "rich")

# A comment that is only a tool's marker says nothing about why.
_MARKER = re.compile(r"#\s*(type:|noqa|pragma)[^#]*$")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_gen" not in p.parts)


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module] if node.module and node.level == 0 else []


def _has_reason(line: str) -> bool:
    _, hash_, comment = line.partition("#")
    return bool(hash_) and not _MARKER.fullmatch("#" + comment) and bool(comment.strip())


def _in_function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: dict[int, ast.Import | ast.ImportFrom] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    found[id(inner)] = inner
    return sorted(found.values(), key=lambda n: n.lineno)


def test_only_the_cli_package_imports_argparse_or_rich() -> None:
    offenders = []
    for path in _modules():
        if path.is_relative_to(CLI):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for module in _imported(node):
                    if module.split(".")[0] in DISPLAY_MODULES:
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {module}")
    assert not offenders, "argparse/rich outside veritally/cli/:\n" + "\n".join(offenders)


def test_no_module_uses_importlib() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                uses = any(m.split(".")[0] == "importlib" for m in _imported(node))
            elif isinstance(node, ast.Name):
                uses = node.id in ("importlib", "__import__")
            else:
                continue
            if uses:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, "importlib used at:\n" + "\n".join(offenders)


def _unexplained(path: Path) -> list[str]:
    """The in-function imports of ``path`` without a reason, as ``file:line: import``."""
    relative = path.relative_to(PACKAGE).as_posix()
    lines = path.read_text().splitlines()
    offenders = []
    for node in _in_function_imports(ast.parse("\n".join(lines), filename=str(path))):
        before = lines[node.lineno - 2] if node.lineno >= 2 else ""
        own = lines[node.lineno - 1]
        explained = before.strip().startswith("#") and _has_reason(before)
        if not explained and not _has_reason(own):
            offenders.append(f"{relative}:{node.lineno}: {own.strip()}")
    return offenders


def test_every_import_in_a_function_says_why() -> None:
    offenders = [line for path in _modules() for line in _unexplained(path)]
    assert not offenders, "imports inside functions without a reason:\n" + "\n".join(offenders)
