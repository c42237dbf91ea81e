"""Parsing JSON request bodies: what is refused, with which message, at any depth."""

from __future__ import annotations

import pytest

from glimpse.api.request_io import MAX_JSON_DEPTH, parse_json
from glimpse.exceptions import Invalid


def nested(depth: int, leaf: str = '"x"', kind: str = "list") -> bytes:
    """``leaf`` inside ``depth`` levels of lists or objects."""
    if kind == "list":
        return ("[" * depth + leaf + "]" * depth).encode()
    return ('{"k":' * depth + leaf + "}" * depth).encode()


@pytest.mark.parametrize("kind", ["list", "object"])
def test_nesting_up_to_the_limit_parses(kind: str) -> None:
    value = parse_json(nested(MAX_JSON_DEPTH, kind=kind))
    for _ in range(MAX_JSON_DEPTH):
        value = value[0] if kind == "list" else value["k"]
    assert value == "x"


@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 400, 1000])
def test_deeper_nesting_is_invalid_not_a_crash(kind: str, depth: int) -> None:
    """orjson itself accepts up to 1,024 levels; what reads the value afterwards
    (validation, error texts) is recursive, so deeper bodies stop here."""
    with pytest.raises(Invalid, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        parse_json(nested(depth, kind=kind))


@pytest.mark.parametrize("body", [
    b'{"name": "a\\u0000b"}',
    b'{"a\\u0000": 1}',
    nested(MAX_JSON_DEPTH, '"\\u0000"'),
    nested(MAX_JSON_DEPTH - 1, '{"\\u0000": 1}', kind="object"),
])
def test_nul_anywhere_is_refused(body: bytes) -> None:
    with pytest.raises(Invalid, match="contains a NUL character"):
        parse_json(body)


def test_a_nul_deeper_than_the_limit_is_refused_for_its_depth() -> None:
    with pytest.raises(Invalid, match="nests deeper"):
        parse_json(nested(400, '"\\u0000"'))


@pytest.mark.parametrize("body", [b"{", b'{"a": NaN}', b'"\\ud800"', b"\xff", b"[1,]"])
def test_malformed_json_is_refused(body: bytes) -> None:
    with pytest.raises(Invalid, match="Malformed JSON"):
        parse_json(body)


def test_a_byte_order_mark_is_allowed() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": ["b", {"c": null}]}') == {"a": ["b", {"c": None}]}
