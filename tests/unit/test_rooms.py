"""The rooms of ``services/veritally`` import only what docs/architecture.md allows.

The table "The rooms of services/veritally" in docs/architecture.md names each room (a
top-level module or package of ``veritally``) and the rooms it may import. These tests
read that table, walk every import of every module (inside functions too) and fail on
an import the table does not allow, on a room the table does not name, and on a table
whose rooms import upwards (a room may only import rooms listed after it), so the
document and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "services" / "veritally"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
TABLE_HEADING = "## The rooms of `services/veritally`"

_CODE = re.compile(r"`([a-z_]+)`")


def _table() -> list[tuple[str, set[str]]]:
    """(room, rooms it may import) of each row, in the table's order."""
    text = ARCHITECTURE.read_text()
    section = text[text.index(TABLE_HEADING) :]
    section = section[: section.index("\n## ", len(TABLE_HEADING))]
    rows: list[tuple[str, set[str]]] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        room = _CODE.fullmatch(cells[0])
        assert room is not None, f"not a room name: {cells[0]}"
        rows.append((room.group(1), set(_CODE.findall(cells[2]))))
    return rows


def _room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_rooms(path: Path) -> set[tuple[int, str]]:
    """(line, room) of every ``veritally`` room the module at ``path`` imports."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.module and node.level == 0:
            if node.module == "veritally":  # from veritally import bounds, errors
                names = [f"veritally.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "veritally" and len(parts) > 1:
                found.add((node.lineno, parts[1]))
    return found


def _modules() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "_gen" not in p.parts and p.relative_to(PACKAGE).as_posix() != "__init__.py"
    )


def test_every_room_in_the_code_is_in_the_table_and_back() -> None:
    in_table = {room for room, _ in _table()}
    in_code = {_room_of(p) for p in _modules()}
    assert in_code == in_table


def test_the_table_only_lets_a_room_import_rooms_below_it() -> None:
    rows = _table()
    order = [room for room, _ in rows]
    upward = [
        f"{room} may import {other}, which is not below it"
        for i, (room, allowed) in enumerate(rows)
        for other in sorted(allowed)
        if other not in order[i + 1 :]
    ]
    assert not upward, "\n".join(upward)


def test_no_room_imports_a_room_the_table_does_not_allow() -> None:
    allowed = dict(_table())
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {room} imports {other}"
        for path in _modules()
        for room in [_room_of(path)]
        for line, other in sorted(_imported_rooms(path))
        if other != room and other not in allowed.get(room, set())
    ]
    assert not offenders, "\n".join(offenders)


def test_the_walk_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import veritally.pki\n"
        "from veritally import bounds, errors\n"
        "from veritally.rpc.status import bad_request\n"
        "def f():\n"
        "    from veritally.stack import Stack\n"
    )
    assert {room for _, room in _imported_rooms(sample)} == {
        "pki",
        "bounds",
        "errors",
        "rpc",
        "stack",
    }
