"""The web UI's files at / and /ui/<name>: content types, revalidation by ETag, nothing outside edgectl/ui/."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from importlib import resources

import pytest

from edgectl.http_api import HttpApi
from edgectl.metrics import ControllerMetrics
from edgectl.static_files import StaticFiles, asset_name, not_modified
from edgectl.views import services_view
from netmodel.fabric import build_state
from tests.unit.edgectl.fixtures import example_spec


@pytest.fixture
def api() -> Iterator[tuple[str, int]]:
    state = build_state(example_spec())
    api = HttpApi("127.0.0.1", 0, lambda: state, ControllerMetrics(), {"/api/v1/services": services_view})
    api.start()
    yield api.address
    api.stop()


def request(
    address: tuple[str, int], path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """The path sent exactly as given (http.client does not normalise ``..`` or escapes)."""
    connection = http.client.HTTPConnection(*address, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/ui/", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/ui/index.html", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/ui/app.js", "text/javascript; charset=utf-8", b"EventSource"),
        ("/ui/style.css", "text/css; charset=utf-8", b"data-state"),
    ],
)
def test_ui_files_are_served_with_their_content_type(
    api: tuple[str, int], path: str, content_type: str, marker: bytes
) -> None:
    status, body, headers = request(api, path)
    assert status == 200
    assert headers["content-type"] == content_type
    assert marker in body
    assert headers["content-length"] == str(len(body))
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in headers["content-security-policy"]


def test_the_served_files_are_the_packaged_ones(api: tuple[str, int]) -> None:
    packaged = resources.files("edgectl.ui").joinpath("app.js").read_bytes()
    assert request(api, "/ui/app.js")[1] == packaged


def test_a_browser_revalidates_with_the_etag_and_gets_a_304_without_a_body(api: tuple[str, int]) -> None:
    _, body, headers = request(api, "/ui/app.js")
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, again, headers304 = request(api, "/ui/app.js", headers={"If-None-Match": etag})
    assert status == 304 and again == b""
    assert "content-length" not in headers304 and headers304["etag"] == etag
    status, fresh, _ = request(api, "/ui/app.js", headers={"If-None-Match": '"something-else"'})
    assert status == 200 and fresh == body


def test_head_has_the_headers_and_no_body(api: tuple[str, int]) -> None:
    status, body, headers = request(api, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../pyproject.toml",
        "/ui/..%2f..%2fpyproject.toml",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/../../etc/passwd",
        "/ui/..",
        "/ui/.hidden.js",
        "/ui//etc/passwd",
        "/ui/sub/app.js",
        "/ui/__init__.py",
        "/ui/app.js%00.css",
        "/ui/..\\app.js",
        "/../edgectl/ui/app.js",
    ],
)
def test_nothing_outside_the_ui_directory_is_reachable(api: tuple[str, int], path: str) -> None:
    status, body, headers = request(api, path)
    assert status == 404, body
    assert headers["content-type"] == "application/json"


def test_a_missing_ui_file_is_404_and_other_methods_405(api: tuple[str, int]) -> None:
    assert request(api, "/ui/nothing.js")[0] == 404
    assert request(api, "/index.html")[0] == 404  # only / and /ui/<name>
    status, _, headers = request(api, "/", method="POST")
    assert status == 405 and "GET" in headers["allow"]


def test_api_routes_are_unchanged_beside_the_ui(api: tuple[str, int]) -> None:
    status, body, headers = request(api, "/api/v1/services")
    assert status == 200 and headers["content-type"] == "application/json"
    assert b'"max_latency_ms": 5' in body and b'"name": "web"' in body


def test_asset_names_are_exact_file_names_of_known_types() -> None:
    assert asset_name("/") == "index.html"
    assert asset_name("/ui/app.js") == "app.js"
    for path in ("/ui/../x.js", "/ui/a/b.js", "/ui/x.py", "/ui/x", "/api/v1/x", "/ui/.x.js", "/ui/a..js"):
        assert asset_name(path) is None, path


def test_files_of_another_package_directory_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    files = StaticFiles()
    first = files.get("/ui/style.css")
    assert first is not None
    monkeypatch.setattr(files, "_load", lambda _name: pytest.fail("read again"))
    assert files.get("/ui/style.css") is first


def test_if_none_match_forms() -> None:
    assert not_modified('"a", W/"b"', '"b"')
    assert not_modified("*", '"x"')
    assert not not_modified(None, '"x"') and not not_modified('"y"', '"x"')
