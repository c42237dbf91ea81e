"""CORS, as Glance's ``[cors]`` (oslo.middleware) offers it: a browser script from an
allowed origin, e.g. Horizon uploading image data straight to the image API
(``HORIZON_IMAGES_UPLOAD_MODE = 'direct'``), gets its preflight answered without
credentials and reads the responses; other origins get no CORS headers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.functional.test_auth_strategies import create_token

HORIZON = "https://horizon.example.com"


def preflight(http: httpx.Client, path: str, origin: str, method: str) -> httpx.Response:
    return http.options(path, headers={"Origin": origin,
                                       "Access-Control-Request-Method": method,
                                       "Access-Control-Request-Headers":
                                           "x-auth-token,content-type"})


def test_an_allowed_origin_uploads_from_the_browser(glimpse_server: Callable[..., Any],
                                                    tmp_path: Path) -> None:
    server = glimpse_server({"DEFAULT": {"auth_strategy": "token-file"},
                             "glimpse": {"token_file": str(tmp_path / "tokens.json")},
                             "cors": {"allowed_origin": HORIZON}})
    token = create_token(server, "alice", uuid.uuid4().hex, "member,reader")["token"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        as_alice = {"X-Auth-Token": token, "Origin": HORIZON}
        created = http.post("/v2/images", headers=as_alice,
                            json={"name": "direct", "disk_format": "raw",
                                  "container_format": "bare"})
        assert created.status_code == 201
        assert created.headers["Access-Control-Allow-Origin"] == HORIZON
        file_path = f"/v2/images/{created.json()['id']}/file"

        # the preflight carries no token, and is answered before authentication
        allowed = preflight(http, file_path, HORIZON, "PUT")
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == HORIZON
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
        assert allowed.headers["Access-Control-Max-Age"] == "3600"
        assert "PUT" in allowed.headers["Access-Control-Allow-Methods"]
        assert "x-auth-token" in allowed.headers["Access-Control-Allow-Headers"].lower()

        uploaded = http.put(file_path, content=b"d" * 4096,
                            headers={**as_alice, "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 204
        assert uploaded.headers["Access-Control-Allow-Origin"] == HORIZON
        exposed = uploaded.headers["Access-Control-Expose-Headers"].lower()
        assert "x-openstack-request-id" in exposed
        downloaded = http.get(file_path, headers=as_alice)
        assert downloaded.content == b"d" * 4096
        assert downloaded.headers["Access-Control-Allow-Origin"] == HORIZON

        # a refusal is readable by the script too
        denied = http.get("/v2/images", headers={"Origin": HORIZON})
        assert denied.status_code == 401
        assert denied.headers["Access-Control-Allow-Origin"] == HORIZON

        # another origin gets nothing a browser would accept
        elsewhere = "https://evil.example.com"
        refused = preflight(http, file_path, elsewhere, "PUT")
        assert refused.status_code == 400
        assert "Access-Control-Allow-Origin" not in refused.headers
        listed = http.get("/v2/images", headers={"X-Auth-Token": token, "Origin": elsewhere})
        assert listed.status_code == 200
        assert "Access-Control-Allow-Origin" not in listed.headers


def test_without_allowed_origins_there_are_no_cors_headers(
        glimpse_server: Callable[..., Any]) -> None:
    server = glimpse_server()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        listed = http.get("/v2/images", headers={"Origin": HORIZON})
        assert listed.status_code == 200
        assert "Access-Control-Allow-Origin" not in listed.headers
        assert preflight(http, "/v2/images", HORIZON, "POST").status_code == 405
