"""The base of absolute links: public_endpoint, the request, or a proxy's headers."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from glimpse.api.public_url import PublicUrl, forwarded_element

PROXY = "10.0.0.5"


def request(headers: dict[str, str] | None = None, *, client: str = PROXY,
            scheme: str = "http", host: str = "10.0.0.9:9292",
            root_path: str = "") -> Request:
    raw = [(b"host", host.encode())]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "scheme": scheme, "path": "/versions",
                    "root_path": root_path, "query_string": b"", "headers": raw,
                    "server": ("10.0.0.9", 9292), "client": (client, 40000)})


PARSE = PublicUrl(parse_proxy_headers=True)
BEHIND = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "image.example.com",
          "X-Forwarded-Prefix": "/image"}


def test_without_options_links_follow_the_request() -> None:
    assert PublicUrl().base(request()) == "http://10.0.0.9:9292"
    assert PublicUrl().base(request(host="images.example.org:8443", scheme="https",
                                    root_path="/mnt")) == "https://images.example.org:8443/mnt"
    # a proxy's headers are not believed unless the operator says so
    assert PublicUrl().base(request(BEHIND)) == "http://10.0.0.9:9292"


def test_public_endpoint_wins_over_everything() -> None:
    public = PublicUrl(endpoint="https://cloud.example.com/image/", parse_proxy_headers=True)
    assert public.base(request(BEHIND)) == "https://cloud.example.com/image"
    assert public.base(request()) == "https://cloud.example.com/image"


def test_x_forwarded_headers() -> None:
    assert PARSE.base(request(BEHIND)) == "https://image.example.com/image"
    assert PARSE.base(request({"X-Forwarded-Proto": "HTTPS"})) == "https://10.0.0.9:9292"
    assert PARSE.base(request({"X-Forwarded-Host": "[2001:db8::1]:8443"})) \
        == "http://[2001:db8::1]:8443"
    assert PARSE.base(request({"X-Forwarded-Prefix": "/image/"}, root_path="/mnt")) \
        == "http://10.0.0.9:9292/image/mnt"


def test_lists_of_proxies_count_by_their_first_entry() -> None:
    chained = {"X-Forwarded-Proto": "https, http",
               "X-Forwarded-Host": "image.example.com, lb.internal:8080"}
    assert PARSE.base(request(chained)) == "https://image.example.com"


def test_forwarded_wins_over_x_forwarded_for_proto_and_host() -> None:
    headers = {"Forwarded": 'for=192.0.2.60;proto=https;host="image.example.com:8443", '
                            "for=10.0.0.4;proto=http;host=lb",
               "X-Forwarded-Proto": "http", "X-Forwarded-Host": "ignored.example.com",
               "X-Forwarded-Prefix": "/image"}
    assert PARSE.base(request(headers)) == "https://image.example.com:8443/image"
    # an element without host keeps the request's host
    assert PARSE.base(request({"Forwarded": "proto=https"})) == "https://10.0.0.9:9292"


def test_forwarded_element_parsing() -> None:
    assert forwarded_element('For="[2001:db8::1]:4711";Proto=https, for=b') \
        == {"for": "[2001:db8::1]:4711", "proto": "https"}
    assert forwarded_element("junk;;=x;proto") == {}


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Proto": "ht tp"},
    {"X-Forwarded-Proto": "1http"},
    {"X-Forwarded-Host": "evil.example.com/path"},
    {"X-Forwarded-Host": "user@evil.example.com"},
    {"X-Forwarded-Host": "a b"},
    {"X-Forwarded-Prefix": "image"},
    {"X-Forwarded-Prefix": "/image?x=1"},
    {"Forwarded": 'host="evil.example.com/x";proto="h t"'},
])
def test_malformed_values_are_ignored(headers: dict[str, str]) -> None:
    assert PARSE.base(request(headers)) == "http://10.0.0.9:9292"


def test_trusted_proxies_limit_whose_headers_count() -> None:
    public = PublicUrl(parse_proxy_headers=True, trusted_proxies=frozenset({PROXY}))
    assert public.base(request(BEHIND)) == "https://image.example.com/image"
    assert public.base(request(BEHIND, client="192.0.2.7")) == "http://10.0.0.9:9292"
