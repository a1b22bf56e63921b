"""A real nginx (Debian's /usr/sbin/nginx) on a free loopback port, for mirror tests.

:func:`mirror_server_block` is the nginx server block docs/operations.md shows for a
mirror of the bundle, taken from the document itself; :func:`running_nginx` serves it
(or any server block) from a configuration written into a test directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
# What the documented block names, replaced by a test's own port, files and directory.
DOC_PORT = "listen 443 ssl http2;"
DOC_CERT = "/etc/ssl/mirror.example.pem"
DOC_KEY = "/etc/ssl/mirror.example.key"
DOC_ROOT = "root /srv;"
DOC_ZONE = "limit_req_zone $binary_remote_addr zone=prep:10m rate=50r/s;"


def nginx_binary() -> str:
    """The nginx binary; skips the test where there is none (``make dev`` installs it)."""
    found = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if found is None:
        pytest.skip("nginx is not installed (make dev installs it as root)")
    return found


def mirror_server_block(*, port: int, cert: Path, key: Path, root: Path) -> str:
    """The mirror's server block of docs/operations.md, on ``127.0.0.1:port``, serving
    ``root`` (the bundle is ``root/prep``)."""
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Mirrors and CDNs of the bundle") :]
    start = section.index("```nginx\n") + len("```nginx\n")
    block = section[start : section.index("```\n", start)]
    for shown in (DOC_PORT, DOC_CERT, DOC_KEY, DOC_ROOT):
        assert shown in block, shown
    assert DOC_ZONE in section
    return (
        block.replace(DOC_PORT, f"listen 127.0.0.1:{port} ssl http2;")
        .replace(DOC_CERT, str(cert))
        .replace(DOC_KEY, str(key))
        .replace(DOC_ROOT, f"root {root};")
    )


def free_port() -> int:
    """A loopback port free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_nginx(directory: Path, server_block: str, *, port: int) -> Iterator[None]:
    """nginx with one server block (and the documented rate-limit zone) until the end
    of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's 0700
    # temporary directories; they stay the test's own user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""daemon off;
{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log {directory}/access.log;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  {DOC_ZONE}
{server_block}
}}
"""
    )
    child = subprocess.Popen(
        [nginx_binary(), "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if child.poll() is not None:
                err = (directory / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx exited with {child.returncode}: {err}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx does not listen on {port}")
            time.sleep(0.05)
        yield
    finally:
        child.terminate()
        child.wait(timeout=20)
