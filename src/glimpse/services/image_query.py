"""Parsing ``GET /v2/images`` query parameters into a repository query (Glance's rules).

Pure: no I/O. :func:`parse_list_params` takes the query string as a list of
``(name, value)`` pairs (repeatable ``tag``, ``sort_key``, ``sort_dir``) and
returns a :class:`ListRequest`, or raises Invalid with Glance's message for the
first bad parameter. What is accepted, as Glance 33:

- ``limit`` (integer >= 0, capped at ``api_limit_max``), ``marker`` (image id);
- ``member_status`` (pending, accepted, rejected, all; default accepted);
- ``visibility`` (public, private, shared, community, all);
- ``tag`` repeatable: images carrying every listed tag;
- ``sort_key``/``sort_dir`` (repeatable) or ``sort=k1:asc,k2`` (not both);
  keys: name, status, container_format, disk_format, size, id, created_at, updated_at;
- ``name``, ``id``, ``status``, ``container_format``, ``disk_format``: equality or
  ``in:a,b,"c,d"`` (``eq:`` accepted);
- ``created_at``/``updated_at``: ``[op:]ISO8601`` with op in gt, gte, lt, lte, eq, neq;
- ``size_min``/``size_max`` (and ``virtual_size``/``min_disk``/``min_ram``);
- ``protected``, ``os_hidden`` (true/false; ``os_hidden`` defaults to false);
- ``owner``, ``checksum``, ``os_hash_value``, ...: image columns, equality;
- any other name: an extra property that must equal the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from glimpse.db.image_lists import AttrFilter, ImageQuery
from glimpse.exceptions import Invalid

SORT_KEYS: Final = ("name", "status", "container_format", "disk_format", "size", "id",
                    "created_at", "updated_at")
MEMBER_STATUSES: Final = ("pending", "accepted", "rejected", "all")
VISIBILITIES: Final = ("community", "public", "private", "shared", "all")
_IN_COLUMNS: Final = frozenset({"name", "id", "status", "container_format", "disk_format"})
_TIME_COLUMNS: Final = frozenset({"created_at", "updated_at"})
_TIME_OPS: Final = frozenset({"gt", "gte", "lt", "lte", "eq", "neq"})
_RANGE_COLUMNS: Final = frozenset({"size", "virtual_size", "min_disk", "min_ram"})
_INT_COLUMNS: Final = frozenset({"size", "virtual_size", "min_disk", "min_ram"})
_BOOL_COLUMNS: Final = frozenset({"protected", "os_hidden"})
_EQ_COLUMNS: Final = frozenset({"owner", "checksum", "os_hash_algo", "os_hash_value"})
# Parameters that are not filters (or that Glance ignores as filters).
_IGNORED: Final = frozenset({"deleted"})


@dataclass
class ListRequest:
    """A parsed list request; ``query.scope`` is filled in by the service."""

    query: ImageQuery
    visibility: str | None = None
    member_status: str = "accepted"
    limit: int = 25
    params: list[tuple[str, str]] = field(default_factory=list)


def _parse_limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise Invalid("limit param must be an integer") from None
    if limit < 0:
        raise Invalid("limit param must be positive")
    return limit


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise Invalid(f"Invalid sort key: {key}. It must be one of the following: "
                      f"{', '.join(SORT_KEYS)}.")
    return key


def _sort_dir(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise Invalid(f"Invalid sort direction: {direction}")
    return direction


def parse_sort(params: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str]:
    """``(sort, default_dir)`` from ``sort`` or ``sort_key``/``sort_dir`` (Glance's rules)."""
    names = [k for k, _ in params]
    keys: list[str] = []
    dirs: list[str] = []
    if "sort" in names:
        if "sort_key" in names or "sort_dir" in names:
            raise Invalid("Old and new sorting syntax cannot be combined")
        text = [v for k, v in params if k == "sort"][-1]
        for part in text.strip().split(","):
            key, _sep, direction = part.partition(":")
            keys.append(_sort_key(key.strip()))
            dirs.append(_sort_dir(direction.strip() or "desc"))
        # Glance: with one key, its direction also orders the created_at/id tie-breakers.
        return list(zip(keys, dirs, strict=True)), dirs[0] if len(dirs) == 1 else "desc"
    keys = [_sort_key(v.strip()) for k, v in params if k == "sort_key"]
    dirs = [_sort_dir(v.strip()) for k, v in params if k == "sort_dir"]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise Invalid("Number of sort dirs does not match the number of sort keys")
    keys = keys or ["created_at"]
    if not dirs:
        dirs = ["desc"]
    default_dir = dirs[0] if len(dirs) == 1 else "desc"
    if len(dirs) == 1:
        dirs = dirs * len(keys)
    return list(zip(keys, dirs, strict=True)), default_dir


def validate_quotes(value: str) -> None:
    """Glance's check of double quotes in an ``in:`` list."""
    open_quote = True
    for i, char in enumerate(value):
        if char != '"' or (i and value[i - 1] == "\\"):
            continue
        if open_quote:
            if i and value[i - 1] != ",":
                raise Invalid(f"Invalid filter value {value}. There is no comma before "
                              "opening quotation mark.")
        elif i + 1 != len(value) and value[i + 1] != ",":
            raise Invalid(f"Invalid filter value {value}. There is no comma after "
                          "closing quotation mark.")
        open_quote = not open_quote
    if not open_quote:
        raise Invalid(f"Invalid filter value {value}. The quote is not closed.")


_IN_ITEM = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)",?|([^,]+),?|,')


def split_in_list(value: str) -> list[str]:
    """``a,"b,c",d`` -> ``["a", "b,c", "d"]`` (the API working group's rule, as Glance)."""
    validate_quotes(value)
    return [m.group(1) or m.group(2) or "" for m in _IN_ITEM.finditer(value)]


def parse_time(text: str, key: str) -> datetime:
    """ISO 8601 -> naive UTC datetime; Invalid with Glance's message otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise Invalid(f'Bad "{key}" query filter format. Use ISO 8601 DateTime notation.') \
            from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def split_op(expression: str) -> tuple[str, str]:
    """``gt:2020-01-01`` -> ``("gt", "2020-01-01")``; a bare ISO time or value -> ``eq``."""
    left, sep, right = expression.partition(":")
    if not sep:
        return "eq", left
    try:
        datetime.fromisoformat(expression.replace("z", "Z"))
        return "eq", expression
    except ValueError:
        return left, right


def _bool_filter(key: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise Invalid(f"Invalid value '{value}' for '{key}' filter. "
                      "Valid values are 'true' or 'false'.")
    return value == "true"


def _int(value: str, message: str) -> int:
    """``value`` as an integer (any size: images_repo clamps it to its column's
    range), Invalid(``message``) if it is not one."""
    try:
        return int(value)
    except ValueError:
        raise Invalid(message) from None


def parse_list_params(params: list[tuple[str, str]], *, limit_default: int = 25,
                      limit_max: int = 1000) -> ListRequest:
    """Parse the query string of ``GET /v2/images``. Raises Invalid (HTTP 400)."""
    single: dict[str, str] = {}
    tags: list[str] = []
    for key, value in params:
        if key == "tag":
            tags.append(value.strip())
        elif key not in ("sort", "sort_key", "sort_dir"):
            single[key] = value   # the last value wins, as webob's MultiDict
    limit = limit_default
    if "limit" in single:
        limit = _parse_limit(single.pop("limit"))
    limit = min(limit, limit_max)
    marker = single.pop("marker", None)
    member_status = single.pop("member_status", "accepted")
    if member_status not in MEMBER_STATUSES:
        raise Invalid(f"Invalid status: {member_status}")
    visibility = single.pop("visibility", None) or None
    if visibility is not None and visibility not in VISIBILITIES:
        raise Invalid(f"Invalid visibility value: {visibility}")
    if single.get("changes-since"):
        raise Invalid('The "changes-since" filter is no longer available on v2.')
    single.pop("changes-since", None)
    sort, default_dir = parse_sort(params)

    filters: list[AttrFilter] = [
        AttrFilter("os_hidden", "eq", _bool_filter("os_hidden",
                                                   single.pop("os_hidden", "false").lower()))]
    properties: dict[str, str] = {}
    for key, value in single.items():
        filters_or_props(key, value, filters, properties)
    query = ImageQuery(filters=filters, properties=properties, tags=tags, sort=sort,
                       default_dir=default_dir, limit=limit, marker=marker)
    return ListRequest(query=query, visibility=visibility, member_status=member_status,
                       limit=limit, params=params)


def filters_or_props(key: str, value: str, filters: list[AttrFilter],
                     properties: dict[str, str]) -> None:
    """Turn one query parameter into a column filter or a property filter."""
    if key in _IGNORED:
        return
    if key.endswith(("_min", "_max")) and key[:-4] in _RANGE_COLUMNS:
        number = _int(value, "Unable to filter on a range with a non-numeric value.")
        filters.append(AttrFilter(key[:-4], "gte" if key.endswith("_min") else "lte", number))
    elif key in _TIME_COLUMNS:
        op, text = split_op(value)
        if op not in _TIME_OPS:
            raise Invalid("Unable to filter on a unknown operator.")
        filters.append(AttrFilter(key, op, parse_time(text, key)))
    elif key in _IN_COLUMNS:
        op, text = split_op(value)
        if op == "in":
            filters.append(AttrFilter(key, "in", split_in_list(text)))
        elif op == "eq":
            filters.append(AttrFilter(key, "eq", text))
        else:
            raise Invalid(f"Unable to filter by unknown operator '{op}'.")
    elif key in _BOOL_COLUMNS:
        filters.append(AttrFilter(key, "eq", _bool_filter(key, value)))
    elif key in _INT_COLUMNS:
        filters.append(AttrFilter(key, "eq", _int(value, f"Invalid value for '{key}' filter: "
                                                         f"{value!r} is not an integer.")))
    elif key in _EQ_COLUMNS:
        filters.append(AttrFilter(key, "eq", value))
    else:
        properties[key] = value


def links(params: list[tuple[str, str]], next_marker: str | None) -> dict[str, Any]:
    """``first``/``next``/``schema`` as Glance builds them (query kept, marker last)."""
    from urllib.parse import urlencode

    kept = [(k, v) for k, v in params if k != "marker"]
    first = "/v2/images" + (f"?{urlencode(kept)}" if kept else "")
    result: dict[str, Any] = {"first": first, "schema": "/v2/schemas/images"}
    if next_marker is not None:
        result["next"] = "/v2/images?" + urlencode([*kept, ("marker", next_marker)])
    return result
