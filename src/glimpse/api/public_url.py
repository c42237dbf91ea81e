"""The URL clients reach the API at, for the absolute links we send.

Version documents (``GET /``, ``/versions``, ``/v2``) and the ``Location`` of a
created image or task are absolute. keystoneauth (openstacksdk, the
``openstack`` CLI, glanceclient with a session) takes the version document's
``self`` link as the endpoint for every later request, so behind a reverse
proxy that terminates TLS, rewrites ``Host`` or mounts the API under a path,
links built from the request as it reached us would send clients around the
proxy, or nowhere. Glance's two remedies, with Glance's option names:

* ``[DEFAULT] public_endpoint``: links start with this URL, whatever the request.
* ``[oslo_middleware] enable_proxy_headers_parsing``: links follow what the proxy
  says of the original request, as oslo.middleware's ``HTTPProxyToWSGI`` reads
  it: RFC 7239 ``Forwarded`` (``proto`` and ``host`` of its first element) when
  present, else ``X-Forwarded-Proto`` and ``X-Forwarded-Host``; and
  ``X-Forwarded-Prefix`` goes before the path. Unlike oslo.middleware, a value
  that lists several proxies' entries counts by its first (the client's side),
  quoted values are unquoted, and a malformed value is ignored. When
  ``[DEFAULT] trusted_proxies`` is set, only those peers' headers are believed,
  so a client that reaches the server directly cannot choose the links sent
  back (and cached) for its requests.

Client addresses are not taken from these headers: ``image.send``'s
``destination_ip`` keeps its own rule (``trusted_proxies`` and ``X-Forwarded-For``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# host, [v6] or host:port: no path, query, user info or white space
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]:,;\"]+)(:\d{1,5})?")
_PREFIX = re.compile(r"/[^\s?#\"]*")


def _first(value: str | None) -> str | None:
    """The first entry of a comma-separated header value, unquoted; None if empty."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip().strip('"').strip()
    return first or None


def forwarded_element(header: str) -> dict[str, str]:
    """The parameters of the first element of an RFC 7239 ``Forwarded`` header,
    names lower-cased and values unquoted (``for=a;proto=https, for=b`` ->
    ``{"for": "a", "proto": "https"}``)."""
    element: dict[str, str] = {}
    for pair in header.split(",", 1)[0].split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip():
            element[name.strip().lower()] = value.strip().strip('"')
    return element


@dataclass(frozen=True)
class PublicUrl:
    """How absolute links are built: see the module's docstring."""

    endpoint: str | None = None
    parse_proxy_headers: bool = False
    trusted_proxies: frozenset[str] = frozenset()

    def base(self, request: Request) -> str:
        """``scheme://host[:port][/prefix]`` without a trailing slash."""
        if self.endpoint:
            return self.endpoint.rstrip("/")
        parts = urlsplit(str(request.base_url))
        scheme, host, path = parts.scheme, parts.netloc, parts.path
        if self.parse_proxy_headers and self._believed(request):
            headers = request.headers
            forwarded = headers.get("forwarded")
            if forwarded:
                element = forwarded_element(forwarded)
                proto, fhost = element.get("proto"), element.get("host")
            else:
                proto = _first(headers.get("x-forwarded-proto"))
                fhost = _first(headers.get("x-forwarded-host"))
            prefix = _first(headers.get("x-forwarded-prefix"))
            if proto and _SCHEME.fullmatch(proto):
                scheme = proto.lower()
            if fhost and _HOST.fullmatch(fhost):
                host = fhost
            if prefix and _PREFIX.fullmatch(prefix):
                path = prefix.rstrip("/") + path
        return f"{scheme}://{host}{path}".rstrip("/")

    def _believed(self, request: Request) -> bool:
        if not self.trusted_proxies:
            return True
        client = request.client
        return client is not None and client.host in self.trusted_proxies


def public_base_url(request: Request) -> str:
    """The base of absolute links for ``request``, by the app's :class:`PublicUrl`
    (``app.state.public_url``; the request's own URL in an app without one)."""
    public: PublicUrl | None = getattr(request.app.state, "public_url", None)
    return (public or PublicUrl()).base(request)
