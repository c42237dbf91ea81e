"""``auth_strategy = keystone``: Keystone tokens validated by keystonemiddleware.

keystonemiddleware's ``auth_token`` is a WSGI middleware. Wrapping the whole
ASGI app in a WSGI adapter would push every byte of image data through it
(it halves upload speed), so :class:`KeystoneAuthenticator` runs ``auth_token``
on the request *headers alone*: it builds a body-less WSGI environ, lets
``auth_token`` validate ``X-Auth-Token`` (and a service token, if any) and set
the identity headers (``X-Identity-Status``, ``X-Project-Id``, ``X-User-Id``,
``X-Roles``), and reads them back. Identity headers sent by the client are
stripped by ``auth_token`` first, so they cannot be spoofed.

Configuration is ``[keystone_authtoken]`` exactly as for Glance (options
registered by keystonemiddleware on the same ConfigOpts). ``authenticate``
blocks (HTTP to Keystone on a cache miss): call it from a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg


@dataclass(frozen=True)
class Identity:
    project_id: str | None
    user_id: str | None
    roles: frozenset[str]


@dataclass(frozen=True)
class Rejection:
    """auth_token's own answer (401 with WWW-Authenticate, or 503 when Keystone is down)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    message: str


_IDENTITY_KEY = "glimpse.identity"


def _inner_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The 'application' behind auth_token: records what auth_token established."""
    status = environ.get("HTTP_X_IDENTITY_STATUS")
    if status == "Confirmed":
        roles = frozenset(r.strip().lower() for r in environ.get("HTTP_X_ROLES", "").split(",")
                          if r.strip())
        environ[_IDENTITY_KEY] = Identity(
            project_id=environ.get("HTTP_X_PROJECT_ID") or None,
            user_id=environ.get("HTTP_X_USER_ID") or None, roles=roles)
    start_response("204 No Content", [])
    return [b""]


def build_environ(method: str, path: str, query: str, headers: Mapping[str, str],
                  server: tuple[str, int] | None = None, scheme: str = "http") -> dict[str, Any]:
    """A body-less WSGI environ carrying the request line and headers."""
    host, port = server or ("127.0.0.1", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
        "QUERY_STRING": query, "SERVER_NAME": host, "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue  # the body is not passed through auth_token
        environ["HTTP_" + key] = value
    return environ


class KeystoneAuthenticator:
    """Validates tokens with keystonemiddleware.auth_token (thread-safe)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        from keystonemiddleware import auth_token

        self._middleware = auth_token.AuthProtocol(
            _inner_app, {"oslo_config_config": conf, "oslo_config_project": "glimpse"})

    def authenticate(self, method: str, path: str, query: str,
                     headers: Mapping[str, str]) -> Identity | Rejection:
        """Identity from a valid token, or auth_token's rejection. Blocks."""
        environ = build_environ(method, path, query, headers)
        captured: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = tuple(response_headers)
            return lambda _data: None

        body = b"".join(self._middleware(environ, start_response))
        identity = environ.get(_IDENTITY_KEY)
        if isinstance(identity, Identity):
            return identity
        status = captured.get("status", 401)
        if status < 400:
            status = 401
        keep = tuple((k, v) for k, v in captured.get("headers", ())
                     if k.lower() == "www-authenticate")
        message = ("The request you have made requires authentication." if status == 401
                   else body.decode("utf-8", "replace")[:300] or "Authentication failed.")
        return Rejection(status=status, headers=keep, message=message)
