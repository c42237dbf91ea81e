"""Error bodies are negotiated as Glance's webob pages are."""

from __future__ import annotations

import json

import pytest

from glimpse import exceptions as exc
from glimpse.api.errors import error_response, status_for, wants_json


@pytest.mark.parametrize(("accept", "expected"), [
    ("", False),
    ("*/*", False),                                   # httpx/requests default: HTML
    ("application/json", True),                       # keystoneauth / openstacksdk
    ("text/html", False),
    ("application/json, */*", False),                 # tie with */* goes to HTML
    ("application/json, */*;q=0.5", True),
    ("text/html;q=0.5, application/json", True),
    ("application/json;q=0", False),
    ("application/json;q=bogus", False),
])
def test_wants_json(accept: str, expected: bool) -> None:
    assert wants_json(accept) is expected


def test_json_body_has_glance_shape() -> None:
    response = error_response(404, "No image found with ID x", accept="application/json")
    assert response.status_code == 404
    assert json.loads(bytes(response.body)) == {
        "message": "No image found with ID x", "code": "404 Not Found", "title": "Not Found"}


def test_html_body_escapes_the_message() -> None:
    response = error_response(400, "bad <script>", accept="*/*")
    body = bytes(response.body).decode()
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>400 Bad Request</h1>" in body and "bad &lt;script&gt;" in body


@pytest.mark.parametrize(("error", "status"), [
    (exc.Invalid("x"), 400), (exc.ReservedAttribute("x"), 403), (exc.Duplicate("x"), 409),
    (exc.QuotaExceeded("x"), 413), (exc.StorageFull("x"), 413),
    (exc.StoragePermissionDenied("x"), 503), (exc.StoreError("x"), 500),
    (exc.RangeNotSatisfiable("x", size=3), 416), (exc.GlimpseError("x"), 500),
])
def test_status_for_most_specific_class(error: exc.GlimpseError, status: int) -> None:
    assert status_for(error) == status
