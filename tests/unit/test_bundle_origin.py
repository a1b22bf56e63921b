"""The static origin's answers: the bundle's caching rules, strong ETags that change
with every replaced ``latest``, 304 on a match, and nothing outside the bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from veritally.publication.origin import IMMUTABLE, MUTABLE, Origin


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    bundle = tmp_path / "bundle"
    (bundle / "cuts").mkdir(parents=True)
    (bundle / "cuts" / "1.cut").write_bytes(b"cut one")
    (bundle / "latest").write_text('{"cut_number": 1}')
    (tmp_path / "secret").write_text("not published")
    (bundle / "escape").symlink_to(tmp_path / "secret")
    (bundle / ".latest.tmp").write_text("half written")
    return Origin(bundle)


def _headers(answer: object) -> dict[str, str]:
    return dict(answer.headers)  # type: ignore[attr-defined]


def test_immutable_names_and_latest_have_their_cache_control(origin: Origin) -> None:
    cut = origin.answer("GET", "/cuts/1.cut", None)
    assert (cut.status, cut.body) == (200, b"cut one")
    assert _headers(cut)["Cache-Control"] == IMMUTABLE
    latest = origin.answer("GET", "/latest", None)
    assert _headers(latest)["Cache-Control"] == MUTABLE == "no-cache"
    assert _headers(latest)["Content-Type"] == "application/json"


def test_replaced_latest_has_a_new_etag_even_within_the_same_second(origin: Origin) -> None:
    first = _headers(origin.answer("GET", "/latest", None))["ETag"]
    assert origin.answer("GET", "/latest", first).status == 304
    tmp = origin.root / ".new"
    tmp.write_text('{"cut_number": 2}')  # same length, as publication renames it over
    os.replace(tmp, origin.root / "latest")
    second = origin.answer("GET", "/latest", first)
    assert second.status == 200
    assert _headers(second)["ETag"] != first


@pytest.mark.parametrize(
    "target", ["/escape", "/../secret", "/cuts/../../secret", "/.latest.tmp", "/cuts", "/", "x"]
)
def test_path_traversal_symlinks_and_temporary_files_are_not_served(
    origin: Origin, target: str
) -> None:
    assert origin.answer("GET", target, None).status == 404


def test_only_reads_are_answered(origin: Origin) -> None:
    answer = origin.answer("DELETE", "/latest", None)
    assert answer.status == 405
    assert origin.answer("HEAD", "/latest", None).body == b""
