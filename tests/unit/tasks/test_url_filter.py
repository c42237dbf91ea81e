"""Import URL filtering: Glance's allowed/disallowed lists plus the SSRF address checks."""

from __future__ import annotations

import socket
from unittest import mock

import pytest

from glimpse.tasks.url_filter import FilterRules, URLRefused, check_address, check_url, resolve

DEFAULT = FilterRules()
LOCAL = FilterRules(allowed_hosts=("127.0.0.1",), allowed_ports=(8000,))


def test_public_http_url_passes_default_rules() -> None:
    target = check_url("http://images.example.com/a.qcow2", DEFAULT)
    assert (target.scheme, target.host, target.port) == ("http", "images.example.com", 80)
    assert check_url("https://images.example.com/x", DEFAULT).port == 443


@pytest.mark.parametrize("url", [
    "ftp://images.example.com/x",          # scheme not allowed
    "file:///etc/passwd",
    "http://images.example.com:8080/x",    # port not in allowed_ports
    "http:///nohost",
    "http://127.0.0.1/x",                  # loopback literal
    "http://10.1.2.3/x",                   # private
    "http://169.254.169.254/latest/",      # link-local (cloud metadata)
    "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x",         # v4-mapped loopback
    "http://0.0.0.0/x",
    "",
    None,
    42,
    "http://images.example.com:99999/x",   # invalid port
])
def test_refused_by_default(url: object) -> None:
    with pytest.raises(URLRefused, match="does not pass filtering"):
        check_url(url, DEFAULT)


def test_allowed_hosts_is_exclusive_and_admits_listed_internal_address() -> None:
    assert check_url("http://127.0.0.1:8000/f", LOCAL).host == "127.0.0.1"
    with pytest.raises(URLRefused):
        check_url("http://images.example.com:8000/f", LOCAL)
    with pytest.raises(URLRefused):
        check_url("http://127.0.0.2:8000/f", LOCAL)
    with pytest.raises(URLRefused):
        check_url("http://127.0.0.1:8001/f", LOCAL)


def test_cidr_entries() -> None:
    rules = FilterRules(allowed_hosts=("10.0.0.0/8",), allowed_ports=())
    assert check_url("http://10.9.8.7:1234/x", rules).port == 1234
    with pytest.raises(URLRefused):
        check_url("http://11.0.0.1/x", rules)


def test_disallowed_lists_apply_only_without_allowed_lists() -> None:
    rules = FilterRules(allowed_schemes=(), disallowed_schemes=("https",), allowed_ports=(),
                        disallowed_ports=(22,), disallowed_hosts=("bad.example.com",))
    assert check_url("http://good.example.com:8080/x", rules).port == 8080
    for url in ("https://good.example.com/x", "http://good.example.com:22/x",
                "http://bad.example.com/x"):
        with pytest.raises(URLRefused):
            check_url(url, rules)
    both = FilterRules(allowed_hosts=("bad.example.com",), disallowed_hosts=("bad.example.com",))
    assert check_url("http://bad.example.com/x", both).host == "bad.example.com"


def test_resolved_address_is_checked_not_just_the_name() -> None:
    target = check_url("http://innocent.example.com/x", DEFAULT)
    fake = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
    with mock.patch("socket.getaddrinfo", return_value=fake), \
            pytest.raises(URLRefused, match=r"127\.0\.0\.1 is internal"):
        resolve(target, DEFAULT)
    with mock.patch("socket.getaddrinfo", return_value=fake[:1]):
        assert resolve(target, DEFAULT) == ["93.184.216.34"]


def test_name_allowed_but_resolving_inside_is_refused() -> None:
    rules = FilterRules(allowed_hosts=("localhost",), allowed_ports=(8000,))
    target = check_url("http://localhost:8000/x", rules)
    with pytest.raises(URLRefused, match="internal"):
        resolve(target, rules)


def test_disallowed_address() -> None:
    rules = FilterRules(disallowed_hosts=("93.184.216.0/24",))
    with pytest.raises(URLRefused, match="disallowed"):
        check_address("93.184.216.34", rules)
    check_address("93.184.217.34", rules)
