"""oslo.messaging transport URLs (``rabbit://u:p@h1:5672,u:p@h2/vhost``) as broker hosts."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from glimpse.exceptions import ConfigError

_SCHEMES = ("rabbit", "amqp", "kombu", "pyamqp")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class BrokerHost:
    hostname: str
    port: int
    userid: str
    password: str
    virtual_host: str
    ssl: bool = False

    def describe(self) -> str:
        """``host:port/vhost`` (never the password)."""
        return f"{self.hostname}:{self.port}/{self.virtual_host}"


def parse_transport_url(url: str) -> list[BrokerHost]:
    """oslo.messaging transport URL -> broker hosts. Raises ConfigError when malformed.

    ``rabbit://user:pass@h1:5672,user:pass@h2/vhost?ssl=1``: user and password
    are percent-decoded; a host without credentials uses the previous host's
    (or guest/guest); the port defaults to 5672 and the vhost to ``/``.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"Invalid transport_url: {exc}") from exc
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"Invalid transport_url: scheme {parts.scheme!r} is not supported "
                          f"(use rabbit:// or amqp://)")
    if not parts.netloc:
        raise ConfigError("Invalid transport_url: no broker host")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    query = parse_qs(parts.query)
    ssl = any(v.lower() in _TRUE for v in query.get("ssl", []))
    user, password = "guest", "guest"
    hosts: list[BrokerHost] = []
    for item in parts.netloc.split(","):
        if not item:
            continue
        if "@" in item:
            creds, item = item.rsplit("@", 1)
            user_part, _, pass_part = creds.partition(":")
            user, password = unquote(user_part), unquote(pass_part)
        host, port = _split_host_port(item, url)
        hosts.append(BrokerHost(host, port, user, password, vhost, ssl))
    if not hosts:
        raise ConfigError("Invalid transport_url: no broker host")
    return hosts


def _split_host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):                       # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    try:
        port = int(port_text) if port_text else 5672
    except ValueError as exc:
        raise ConfigError(f"Invalid transport_url: bad port {port_text!r}") from exc
    if not host or not 0 < port < 65536:
        raise ConfigError("Invalid transport_url: bad broker host")
    return host, port
