"""The headers-only bridge to keystonemiddleware, and token extraction."""

from __future__ import annotations

from typing import Any

from glimpse.api.auth import presented_token
from glimpse.api.keystone_auth import Identity, _inner_app, build_environ


def test_environ_carries_headers_but_no_body() -> None:
    environ = build_environ("PUT", "/v2/images/x/file", "a=1",
                            {"x-auth-token": "tok", "content-type": "application/octet-stream",
                             "content-length": "10", "x-roles": "admin"})
    assert environ["HTTP_X_AUTH_TOKEN"] == "tok"
    assert environ["REQUEST_METHOD"] == "PUT" and environ["QUERY_STRING"] == "a=1"
    assert "CONTENT_LENGTH" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["wsgi.input"].read() == b""


def _run_inner(environ: dict[str, Any]) -> Any:
    seen: list[str] = []
    _inner_app(environ, lambda status, headers: seen.append(status))
    assert seen == ["204 No Content"]
    return environ.get("glimpse.identity")


def test_identity_only_from_a_confirmed_token() -> None:
    confirmed = {"HTTP_X_IDENTITY_STATUS": "Confirmed", "HTTP_X_PROJECT_ID": "p1",
                 "HTTP_X_USER_ID": "u1", "HTTP_X_ROLES": "Member, reader"}
    invalid = {**confirmed, "HTTP_X_IDENTITY_STATUS": "Invalid"}
    assert _run_inner(confirmed) == Identity("p1", "u1", frozenset({"member", "reader"}))
    assert _run_inner(invalid) is None
    assert _run_inner({"HTTP_X_PROJECT_ID": "p1", "HTTP_X_ROLES": "admin"}) is None


def test_presented_token() -> None:
    assert presented_token({"x-auth-token": " abc "}) == "abc"
    assert presented_token({"authorization": "Bearer xyz"}) == "xyz"
    assert presented_token({"authorization": "Basic Zm9vOmJhcg=="}) is None
    assert presented_token({}) is None
