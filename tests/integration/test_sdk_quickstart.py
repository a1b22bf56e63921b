"""The README's newsroom quickstart, run exactly as written against a real publication
server over mutual TLS."""

from __future__ import annotations

import asyncio
import io
import re
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.sdk_fakes.stack import sdk_stack

README = REPO_ROOT / "clients" / "python" / "README.md"


def quickstart_block() -> str:
    """The first python code block of the README's Quickstart section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the Quickstart section has a python block"
    return match.group(1)


def test_quickstart_block_is_self_contained() -> None:
    code = quickstart_block()
    compile(code, str(README), "exec")
    assert "client.latest()" in code


async def test_readme_quickstart_prints_a_verified_national_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sdk_stack(tmp_path, tls=True, actas=8) as stack:
        assert stack.tls_files is not None
        ca, cert, key = stack.tls_files
        port = stack.endpoint.rsplit(":", 1)[1]
        # "localhost" is a DNS SAN of the service certificate, so no name override.
        monkeypatch.setenv("VERITALLY_ENDPOINT", f"localhost:{port}")
        monkeypatch.setenv("VERITALLY_TRUST_ROOT", str(stack.trust_root_file))
        monkeypatch.setenv("VERITALLY_STATE_DIR", str(tmp_path / "newsroom-state"))
        monkeypatch.setenv("VERITALLY_CA", str(ca))
        monkeypatch.setenv("VERITALLY_CERT", str(cert))
        monkeypatch.setenv("VERITALLY_KEY", str(key))
        code = compile(quickstart_block(), str(README), "exec")
        out = io.StringIO()

        def run() -> None:
            with redirect_stdout(out):
                exec(code, {"__name__": "__quickstart__"})  # noqa: S102  # the README's own code

        await asyncio.to_thread(run)
        latest = stack.service.engine.latest_number
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"cut {latest} PRES", f"cut {latest} SEN"]
    national = stack.aggregation.source.tally.results().units[0]
    expected = {o.option_id: o.votes for o in national.contests[0].options}
    assert lines[0] == f"cut {latest} PRES: {expected}"


def test_top_level_readme_opens_with_the_same_quickstart() -> None:
    top = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = top.split("## Newsroom quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the top-level README shows the quickstart"
    assert match.group(1) == quickstart_block()


def test_top_level_readme_names_every_dependency_of_the_sdk() -> None:
    """The quickstart's sentence on what a newsroom installs lists every requirement of
    clients/python/pyproject.toml, the optional ones included, so it never promises less
    than pip installs."""
    project = tomllib.loads((REPO_ROOT / "clients" / "python" / "pyproject.toml").read_text())
    requirements = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        requirements.extend(extra)
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in requirements}
    top = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    sentence = top.split("## Newsroom quickstart", 1)[1].split("```", 1)[0]
    shown = {w.lower() for w in re.findall(r"[A-Za-z][\w-]*", sentence)}
    assert names <= shown, f"the README does not name {sorted(names - shown)}"
