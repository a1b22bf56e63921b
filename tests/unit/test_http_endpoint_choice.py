"""Which transport a Client endpoint gets, and the misuse it refuses (no sockets: httpx
connects lazily, on the first request)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, make_trust_root
from veritally_client import Client, TlsCredentials, Transport, TrustedRoot
from veritally_client._http import HttpLimits, HttpTransport


def _root() -> TrustedRoot:
    """A trust root valid now (the fake's expires a month after its own start)."""
    now = dt.datetime.now(dt.UTC)
    signers = FakePublisher().signers
    return TrustedRoot.from_bytes(
        make_trust_root(signers, expires=now + dt.timedelta(days=30)), now=now
    )


def test_bundle_urls_get_the_http_transport_which_is_a_transport(tmp_path: Path) -> None:
    root = _root()
    client = Client(
        endpoint="http://127.0.0.1:9/prep",
        trust_root=root,
        state_dir=tmp_path,
        unsafe_plaintext=True,
    )
    with client:
        transport = client._transport
        assert isinstance(transport, HttpTransport)
        assert isinstance(transport, Transport)
        assert transport.source.base_url == "http://127.0.0.1:9/prep/"


@pytest.mark.parametrize(
    ("endpoint", "kwargs", "message"),
    [
        ("http://mirror.example/", {}, "unsafe_plaintext=True"),
        ("https://mirror.example/", {"unsafe_plaintext": True}, "unsafe_plaintext=True"),
        (
            "https://mirror.example/",
            {"credentials": TlsCredentials(ca=b"", cert=b"", key=b"")},
            "no credentials",
        ),
    ],
)
def test_bundle_url_misuse_is_a_value_error(
    tmp_path: Path, endpoint: str, kwargs: dict[str, object], message: str
) -> None:
    root = _root()
    with pytest.raises(ValueError, match=message):
        Client(endpoint=endpoint, trust_root=root, state_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["ftp://mirror.example/", "https:///nohost", "https://mirror.example/?q=1"]
)
def test_not_a_bundle_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        HttpTransport.open(url) if url.startswith("https") else HttpTransport.unsafe_plaintext(url)


def test_http_limits_are_positive() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        HttpLimits(poll_interval=0)
