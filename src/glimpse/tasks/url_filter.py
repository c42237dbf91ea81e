"""Which URLs an import may download from (Glance's ``[import_filtering_opts]``).

Two checks, both pure functions of their arguments:

* :func:`check_url` - the URL as written: scheme, host name and port against the
  allowed/disallowed lists. As in Glance, when an allowed list is set the
  matching disallowed list is ignored. Used by the API to answer 400 at once.
* :func:`check_address` - one *resolved* IP address. Loopback, link-local,
  private, multicast, reserved and unspecified addresses are refused (server-side
  request forgery) unless the operator lists that address (or a CIDR holding it)
  in ``allowed_hosts``; addresses in ``disallowed_hosts`` are refused too.

:func:`resolve` turns a host name into addresses with ``getaddrinfo`` and checks
every one of them; the fetcher then connects to exactly one of those checked
addresses, so a name cannot resolve to something else between check and use.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from glimpse.exceptions import Invalid

DEFAULT_PORTS = {"http": 80, "https": 443}


class URLRefused(Invalid):
    """The URL may not be used as an import source."""


@dataclass(frozen=True)
class FilterRules:
    """The six ``[import_filtering_opts]`` lists."""

    allowed_schemes: tuple[str, ...] = ("http", "https")
    disallowed_schemes: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    disallowed_hosts: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = (80, 443)
    disallowed_ports: tuple[int, ...] = ()

    @classmethod
    def from_conf(cls, group: Any) -> FilterRules:
        """From ``conf.import_filtering_opts``."""
        def strs(name: str) -> tuple[str, ...]:
            values = (str(v).strip().lower() for v in getattr(group, name) or ())
            return tuple(v for v in values if v)

        return cls(allowed_schemes=strs("allowed_schemes"),
                   disallowed_schemes=strs("disallowed_schemes"),
                   allowed_hosts=strs("allowed_hosts"),
                   disallowed_hosts=strs("disallowed_hosts"),
                   allowed_ports=tuple(int(p) for p in group.allowed_ports or ()),
                   disallowed_ports=tuple(int(p) for p in group.disallowed_ports or ()))


@dataclass(frozen=True)
class Target:
    """A URL that passed :func:`check_url`."""

    url: str
    scheme: str
    host: str          # lower-cased; IPv6 without brackets
    port: int
    parts: SplitResult


def _in_list(host: str, entries: Sequence[str]) -> bool:
    """``host`` (a name or an address) equals an entry, or is an address inside a
    CIDR entry."""
    if host in entries:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in entries:
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        else:
            try:
                if ipaddress.ip_address(entry) == address:
                    return True
            except ValueError:
                continue
    return False


def check_url(url: object, rules: FilterRules, *, what: str = "URI") -> Target:
    """Check ``url`` as written. Raises URLRefused (an Invalid: HTTP 400) naming the URL."""
    refused = URLRefused(f"{what} does not pass filtering: {url}")
    if not isinstance(url, str) or not url:
        raise refused
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refused from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host or scheme not in DEFAULT_PORTS:
        raise refused
    if rules.allowed_schemes:
        if scheme not in rules.allowed_schemes:
            raise refused
    elif scheme in rules.disallowed_schemes:
        raise refused
    if rules.allowed_hosts:
        if not _in_list(host, rules.allowed_hosts):
            raise refused
    elif _in_list(host, rules.disallowed_hosts):
        raise refused
    effective_port = port if port is not None else DEFAULT_PORTS[scheme]
    if rules.allowed_ports:
        if effective_port not in rules.allowed_ports:
            raise refused
    elif effective_port in rules.disallowed_ports:
        raise refused
    if _is_address(host):
        check_address(host, rules, url=url, what=what)
    return Target(url=url, scheme=scheme, host=host, port=effective_port, parts=parts)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_address(address: str, rules: FilterRules, *, url: str = "", what: str = "URI") -> None:
    """Refuse a resolved address that is internal (unless explicitly allowed) or disallowed."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = str(ip)
    explicitly_allowed = bool(rules.allowed_hosts) and _in_list(text, rules.allowed_hosts)
    if not rules.allowed_hosts and _in_list(text, rules.disallowed_hosts):
        raise URLRefused(f"{what} does not pass filtering: {url or text} "
                         f"(address {text} is disallowed)")
    internal = (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)
    if internal and not explicitly_allowed:
        raise URLRefused(f"{what} does not pass filtering: {url or text} "
                         f"(address {text} is internal and not in allowed_hosts)")


def resolve(target: Target, rules: FilterRules) -> list[str]:
    """Resolve ``target.host`` and check every address; return them (at least one).

    Raises URLRefused if any address is refused (a name that also points inside
    is not used at all), or :class:`socket.gaierror` when the name does not resolve.
    Blocks for as long as the resolver does.
    """
    if _is_address(target.host):
        check_address(target.host, rules, url=target.url)
        return [target.host]
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        check_address(address, rules, url=target.url)
    return addresses
