"""Each service's domain module imports neither gRPC nor the rooms built around it.

The shape (CONVENTIONS 16): a pure domain module (``engine``), its store, a servicer that
maps the domain's outcomes to status codes, a follower that reads the upstream service
over gRPC, and an app that wires them. A gRPC import in an engine means a status code or
a channel crept into the domain; an import of the servicer, follower or app turns the
layering upside down.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: The domain modules held to the shape, relative to the repository.
ENGINES = (
    "services/veritally/ingest/engine.py",
    "services/veritally/ingest/rules.py",
    "services/veritally/ingest/operators.py",
    "services/veritally/bounds.py",
    "services/veritally/publication/engine.py",
    "services/veritally/publication/view.py",
    "services/veritally/aggregation/engine.py",
)

#: Rooms a domain module may not import: gRPC and the service's own adapters.
_ADAPTERS = ("servicer", "follower", "app", "service")


def _imports(path: Path) -> list[tuple[int, str]]:
    """The (line, module) of every absolute import in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _forbidden(module: str, package: str) -> bool:
    parts = module.split(".")
    if parts[0] == "grpc" or parts[0].startswith("grpc_"):
        return True
    if any(p.endswith("_grpc") for p in parts):  # the generated stubs
        return True
    if parts[:2] == ["veritally", "rpc"]:  # the shared gRPC plumbing
        return True
    return module.startswith(f"{package}.") and parts[2] in _ADAPTERS


@pytest.mark.parametrize("relative", ENGINES)
def test_a_domain_module_imports_no_grpc_and_no_adapter(relative: str) -> None:
    path = REPO_ROOT / relative
    package = "veritally." + path.parent.name
    offenders = [
        f"{relative}:{line}: imports {module}"
        for line, module in _imports(path)
        if _forbidden(module, package)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_walk_sees_grpc_and_adapter_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import grpc\n"
        "from grpc_status import rpc_status\n"
        "from veritally.rpc import TlsFiles\n"
        "from veritally_client.protocol.pb import aggregation_pb2_grpc\n"
        "from veritally.publication.servicer import SERVICE_NAME\n"
        "from veritally.publication.store import CutRow\n"
    )
    flagged = [m for _, m in _imports(sample) if _forbidden(m, "veritally.publication")]
    assert flagged == [
        "grpc",
        "grpc_status",
        "grpc_status.rpc_status",
        "veritally.rpc",
        "veritally.rpc.TlsFiles",
        "veritally_client.protocol.pb.aggregation_pb2_grpc",
        "veritally.publication.servicer",
        "veritally.publication.servicer.SERVICE_NAME",
    ]
