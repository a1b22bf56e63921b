"""Regenerate the Python code for the contracts in ``proto/``.

The generated modules live in one private package of the SDK,
``veritally_client._gen``. protoc writes imports such as ``from veritally.v1 import
acta_pb2``, which would make ``veritally`` a top-level package and collide with the
server distribution of the same name, so the imports are rewritten to point inside
``veritally_client._gen``. The output is deterministic: running this twice leaves the
tree unchanged, and CI checks exactly that.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "clients" / "python" / "src" / "veritally_client" / "_gen"
PACKAGE = "veritally_client._gen"

_IMPORT_PATTERNS = (
    # from veritally.v1 import acta_pb2 as ...
    (re.compile(r"^from veritally\.v1 import ", re.M), f"from {PACKAGE}.veritally.v1 import "),
    # import veritally.v1.acta_pb2 (mypy-protobuf stubs)
    (re.compile(r"^import veritally\.v1\.", re.M), f"import {PACKAGE}.veritally.v1."),
    # references to that import in stub annotations
    (re.compile(r"(?<![\w.])veritally\.v1\.(\w+_pb2)"), f"{PACKAGE}.veritally.v1.\\1"),
)


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    for path in sorted(OUT.rglob("*.py*")):
        text = path.read_text()
        for pattern, replacement in _IMPORT_PATTERNS:
            text = pattern.sub(replacement, text)
        path.write_text(text)
    for directory in [OUT, *sorted(p for p in OUT.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text('"""Generated protobuf code. Do not edit."""\n')
    (OUT / "py.typed").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
