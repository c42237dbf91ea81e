"""List query parameters: Glance's parsing rules and messages."""

from __future__ import annotations

from datetime import datetime

import pytest

from glimpse.db.image_lists import AttrFilter
from glimpse.exceptions import Invalid
from glimpse.services.image_query import links, parse_list_params, split_in_list


def parse(query: str, **kw: int):  # type: ignore[no-untyped-def]
    from urllib.parse import parse_qsl

    return parse_list_params(parse_qsl(query, keep_blank_values=True), **kw)


def test_defaults() -> None:
    req = parse("")
    assert req.limit == 25 and req.member_status == "accepted" and req.visibility is None
    assert req.query.sort == [("created_at", "desc")]
    assert req.query.filters == [AttrFilter("os_hidden", "eq", False)]
    assert req.query.marker is None


def test_limit_is_capped_and_checked() -> None:
    assert parse("limit=5000", limit_max=1000).limit == 1000
    assert parse("limit=0").limit == 0
    with pytest.raises(Invalid, match=r"^limit param must be an integer$"):
        parse("limit=x")
    with pytest.raises(Invalid, match=r"^limit param must be positive$"):
        parse("limit=-1")


def test_filters() -> None:
    req = parse("name=in:a,%22b,c%22&status=queued&size_min=10&size_max=20&tag=x&tag=y"
                "&created_at=gte:2026-01-01T00:00:00Z&protected=true&os_hidden=true"
                "&owner=p1&hw_arch=x86_64&visibility=community&member_status=all")
    filters = req.query.filters
    assert AttrFilter("name", "in", ["a", "b,c"]) in filters
    assert AttrFilter("status", "eq", "queued") in filters
    assert AttrFilter("size", "gte", 10) in filters and AttrFilter("size", "lte", 20) in filters
    assert AttrFilter("created_at", "gte", datetime(2026, 1, 1)) in filters
    assert AttrFilter("protected", "eq", True) in filters
    assert AttrFilter("os_hidden", "eq", True) in filters
    assert AttrFilter("owner", "eq", "p1") in filters
    assert req.query.tags == ["x", "y"]
    assert req.query.properties == {"hw_arch": "x86_64"}
    assert (req.visibility, req.member_status) == ("community", "all")


def test_time_filter_with_offset_is_normalised_to_utc() -> None:
    req = parse("updated_at=lt:2026-01-01T02:00:00%2B02:00")
    assert AttrFilter("updated_at", "lt", datetime(2026, 1, 1)) in req.query.filters
    bare = parse("created_at=2026-01-01T00:00:00Z")
    assert AttrFilter("created_at", "eq", datetime(2026, 1, 1)) in bare.query.filters


@pytest.mark.parametrize(("query", "message"), [
    ("created_at=bogus:2020", "Unable to filter on a unknown operator."),
    ("created_at=gt:notadate", 'Bad "created_at" query filter format. Use ISO 8601 DateTime '
                               "notation."),
    ("name=gt:x", "Unable to filter by unknown operator 'gt'."),
    ("size_min=abc", "Unable to filter on a range with a non-numeric value."),
    ("os_hidden=maybe", "Invalid value 'maybe' for 'os_hidden' filter. Valid values are "
                        "'true' or 'false'."),
    ("protected=yes", "Invalid value 'yes' for 'protected' filter. Valid values are 'true' "
                      "or 'false'."),
    ("visibility=bad", "Invalid visibility value: bad"),
    ("member_status=bad", "Invalid status: bad"),
    ("changes-since=x", 'The "changes-since" filter is no longer available on v2.'),
    ("sort_key=name&sort=name", "Old and new sorting syntax cannot be combined"),
    ("sort_dir=up", "Invalid sort direction: up"),
    ("sort=name:up", "Invalid sort direction: up"),
    ("sort_key=foo", "Invalid sort key: foo. It must be one of the following: name, status, "
                     "container_format, disk_format, size, id, created_at, updated_at."),
    ("sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
     "Number of sort dirs does not match the number of sort keys"),
    ('name=in:a"b', 'Invalid filter value a"b. There is no comma before opening quotation '
                    "mark."),
    ('name=in:"ab', 'Invalid filter value "ab. The quote is not closed.'),
])
def test_bad_parameters(query: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse(query)
    assert caught.value.message == message


def test_sorting_syntaxes() -> None:
    assert parse("sort=name:asc,size").query.sort == [("name", "asc"), ("size", "desc")]
    assert parse("sort=name:asc,size").query.default_dir == "desc"
    assert parse("sort=name:asc").query.default_dir == "asc"
    classic = parse("sort_key=name&sort_key=size&sort_dir=asc")
    assert classic.query.sort == [("name", "asc"), ("size", "asc")]
    assert classic.query.default_dir == "asc"
    both = parse("sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc")
    assert both.query.sort == [("name", "asc"), ("size", "desc")]


def test_in_list_splitting() -> None:
    assert split_in_list('a,"b,c",d') == ["a", "b,c", "d"]
    assert split_in_list("x") == ["x"]


def test_links_keep_query_and_put_marker_last() -> None:
    params = [("limit", "1"), ("marker", "old"), ("sort", "name:asc")]
    assert links(params, "m2") == {
        "first": "/v2/images?limit=1&sort=name%3Aasc", "schema": "/v2/schemas/images",
        "next": "/v2/images?limit=1&sort=name%3Aasc&marker=m2"}
    assert links([], None) == {"first": "/v2/images", "schema": "/v2/schemas/images"}
