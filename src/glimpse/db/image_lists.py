"""Image lists: Glance's filters, sorting and marker paging, in SQL.

A page is one query for its rows, then one batched query for their tags and
properties (:func:`glimpse.db.images_repo.load_children`: no N+1). Visibility
is *not* decided here: ``glimpse.services.access`` hands the query its scope
as disjoint branches (:class:`ScopeBranch`). Like the rest of ``glimpse.db``,
nothing here commits: the caller's transaction decides.

A scope of one branch (an admin, a filter such as ``visibility=public``) is one
``SELECT ... ORDER BY ... LIMIT``. A scope of several (a project's default list:
its own images, others' public images, images shared with it) is ``SELECT ...
FROM (<branch> UNION ALL <branch> ...) ORDER BY ... LIMIT``, which each database
runs as a merge of the branches, reading each in order only as far as the page
needs: SQLite flattens it into a compound SELECT (only when no branch has a
LIMIT, and when the ORDER BY terms are result columns); PostgreSQL merges
(Merge Append) when each branch has the page's ORDER BY and LIMIT, which it
gets there (without them it sorted all 20,000 rows of a sequential scan). In the
default order (``created_at``, ``id``) each branch reads an index in that
order: ``(owner, deleted, created_at, id)``, ``(visibility, deleted,
created_at, id)``, or the caller's memberships (few, sorted). One predicate
OR-ing the branches made the database read every visible row and sort them for
each page: 70 ms for a page of 25 among 20,000 images of the caller's project,
and a full listing quadratic in the number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    and_,
    asc,
    bindparam,
    desc,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from glimpse.db import models
from glimpse.db.images_repo import GET_LIVE, IMAGE_COLUMNS, images_of, load_children
from glimpse.domain.image import KILLED, Image
from glimpse.exceptions import Invalid, NotFound

_images = models.images
_props = models.image_properties
_tags = models.image_tags
_members = models.image_members

# Keys a list may be sorted and filtered by (Glance's image columns).
SORT_KEYS: Final = frozenset({
    "name", "status", "container_format", "disk_format", "size", "id", "created_at",
    "updated_at", "visibility", "owner", "min_disk", "min_ram", "virtual_size",
    "protected", "os_hidden", "checksum", "os_hash_algo", "os_hash_value",
})
OPERATORS: Final = frozenset({"eq", "neq", "in", "gt", "gte", "lt", "lte"})


@dataclass(frozen=True)
class AttrFilter:
    """``<column> <op> <value>``; ``value`` is a list for ``in``. ``column`` in SORT_KEYS."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class ScopeBranch:
    """One of the disjoint parts of a list's scope: the images matching ``where``;
    with ``membership`` (a predicate on ``image_members``), only those with a
    member row matching it, read from that row (so the caller's memberships,
    not every shared image, drive the branch). Branches of one scope must not
    overlap: their rows are concatenated, not deduplicated."""

    where: ColumnElement[bool]
    membership: ColumnElement[bool] | None = None


@dataclass
class ImageQuery:
    """What ``list_images`` returns: rows in ``scope`` matching every filter.

    ``scope`` is the visibility scope from ``services.access.list_scope`` (None:
    every image) and ``scope_params`` the values of its bound parameters.
    ``sort`` is ``[(key, "asc"|"desc"), ...]``; ``created_at`` and ``id`` are
    appended in ``default_dir`` (as Glance) so that the order is total and
    marker paging is exact. NULLs sort as the type's empty value.
    ``marker`` is the id of the last image of the previous page; it must exist
    (not deleted) or ``list_images`` raises NotFound.
    """

    scope: tuple[ScopeBranch, ...] | None = None
    scope_params: dict[str, Any] = field(default_factory=dict)
    filters: list[AttrFilter] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("created_at", "desc")])
    default_dir: str = "desc"
    limit: int | None = None
    marker: str | None = None



_DEFAULTS: Final[dict[str, Any]] = {"name": "", "disk_format": "", "container_format": "",
                                    "owner": "", "checksum": "", "os_hash_algo": "",
                                    "os_hash_value": "", "size": 0, "virtual_size": 0}


def _sort_expr(key: str) -> ColumnElement[Any]:
    """The column, NULLs read as the type's empty value so both databases order alike
    and marker comparisons never meet a NULL (as Glance's paginate query). The
    empty value is written into the SQL, not bound: only then does the expression
    match an index on it (``models.NAME_ORDER``: sorts by name)."""
    column = _images.c[key]
    if key in _DEFAULTS:
        return func.coalesce(column, literal_column(repr(_DEFAULTS[key])))
    return column


def _filter_clause(f: AttrFilter, name: str) -> ColumnElement[bool]:
    """``f`` as SQL whose value is the bound parameter ``name`` (a list for ``in``)."""
    if f.column not in SORT_KEYS:
        raise Invalid(f"Unknown filter {f.column!r}")
    column = _images.c[f.column]
    if f.op == "in":
        return column.in_(bindparam(name, expanding=True))
    value = bindparam(name, type_=column.type)
    if f.op == "eq":
        return column == value
    if f.op == "neq":
        return or_(column != value, column.is_(None))
    if f.op == "gt":
        return column > value
    if f.op == "gte":
        return column >= value
    if f.op == "lt":
        return column < value
    if f.op == "lte":
        return column <= value
    raise Invalid(f"Unable to filter by unknown operator '{f.op}'.")


def _marker_clause(sort: Sequence[tuple[str, str]]) -> ColumnElement[bool]:
    """Rows strictly after the marker row (values bound as ``m0``, ``m1``, ...) in
    ``sort`` order (lexicographic, as Glance's paginate query). The first key's
    bound is repeated on its own (implied by the rest), so that an index on it
    seeks to the marker instead of walking the rows before it."""
    first_key, first_dir = sort[0]
    first = _sort_expr(first_key)
    bound = bindparam("m0", type_=_images.c[first_key].type)
    criteria = []
    for i, (key, direction) in enumerate(sort):
        parts: list[ColumnElement[bool]] = []
        for j, (prev_key, _) in enumerate(sort[:i]):
            parts.append(_sort_expr(prev_key) == bindparam(f"m{j}",
                                                           type_=_images.c[prev_key].type))
        expr, value = _sort_expr(key), bindparam(f"m{i}", type_=_images.c[key].type)
        parts.append(expr < value if direction == "desc" else expr > value)
        criteria.append(and_(*parts))
    return and_(first <= bound if first_dir == "desc" else first >= bound, or_(*criteria))


def _marker_value(key: str, marker_row: Any) -> Any:
    value = getattr(marker_row, key)
    return _DEFAULTS.get(key) if value is None else value


def _full_sort(query: ImageQuery) -> list[tuple[str, str]]:
    sort = list(query.sort) or [("created_at", query.default_dir)]
    for key, _ in sort:
        if key not in SORT_KEYS:
            raise Invalid(f"Invalid sort key: {key}")
    keys = {k for k, _ in sort}
    for key in ("created_at", "id"):
        if key not in keys:
            sort.append((key, query.default_dir))
    return sort


_Shape = tuple[Any, ...]


def _shape(query: ImageQuery, sort: list[tuple[str, str]], dialect: str) -> _Shape:
    """What determines the SQL of a list (values excluded): the cache key."""
    scope = None if query.scope is None else id(query.scope)
    return (dialect, scope, tuple((f.column, f.op) for f in query.filters), len(query.properties),
            len(query.tags), tuple(sort), query.marker is not None, query.limit is not None)


_STATEMENTS: dict[_Shape, tuple[Select[Any], tuple[ScopeBranch, ...] | None]] = {}
_MAX_STATEMENTS: Final = 512
_EVERY_IMAGE: Final = ScopeBranch(true())


def _list_statement(query: ImageQuery, sort: list[tuple[str, str]],
                    dialect: str) -> Select[Any]:
    """The list's SELECT for ``dialect`` with every value a bound parameter, built
    once per shape.

    Building SQLAlchemy expressions and their cache keys costs more than running
    the query; lists of one shape (the common case: the default list) reuse the
    statement object. The cache keeps a reference to ``query.scope`` so that
    the ``id()`` in the shape stays unique (``access.list_scope`` returns one
    object per scope kind anyway).
    """
    shape = _shape(query, sort, dialect)
    cached = _STATEMENTS.get(shape)
    if cached is not None:
        return cached[0]
    branches = query.scope if query.scope is not None else (_EVERY_IMAGE,)
    order = [_direction(d)(_sort_expr(k)) for k, d in sort]
    page_limit = bindparam("page_limit", type_=Integer())
    if len(branches) == 1:
        stmt = _matching(branches[0], query, sort, IMAGE_COLUMNS).order_by(*order)
    else:
        # the union of the branches, their sort values as s0, s1, ..., sorted
        keys = [_sort_expr(key).label(f"s{i}") for i, (key, _) in enumerate(sort)]
        parts = []
        for branch in branches:
            part = _matching(branch, query, sort, [*IMAGE_COLUMNS, *keys])
            if dialect == "postgresql" and query.limit is not None:
                part = select(part.order_by(*order).limit(page_limit).subquery())
            parts.append(part)
        merged = union_all(*parts).subquery("branches")
        # the sort values are selected too: SQLite flattens the union into a
        # compound SELECT (a merge) only when the ORDER BY terms are result columns
        ordered = [merged.c[f"s{i}"] for i in range(len(sort))]
        stmt = select(*[merged.c[column.name] for column in IMAGE_COLUMNS], *ordered).order_by(
            *[_direction(d)(key) for key, (_, d) in zip(ordered, sort, strict=True)])
    if query.limit is not None:
        stmt = stmt.limit(page_limit)
    if len(_STATEMENTS) >= _MAX_STATEMENTS:
        _STATEMENTS.clear()
    _STATEMENTS[shape] = (stmt, query.scope)
    return stmt


def _direction(direction: str) -> Any:
    return desc if direction == "desc" else asc


def _matching(branch: ScopeBranch, query: ImageQuery, sort: list[tuple[str, str]],
              columns: Sequence[Any]) -> Select[Any]:
    """``columns`` of the images of ``branch`` that pass the query's filters and
    come after its marker, in no order."""
    source: Any = _images
    if branch.membership is not None:
        source = _members.join(_images, and_(_images.c.id == _members.c.image_id,
                                             branch.membership))
    stmt = select(*columns).select_from(source).where(
        _images.c.deleted == false(), _images.c.status != KILLED, branch.where)
    for i, f in enumerate(query.filters):
        stmt = stmt.where(_filter_clause(f, f"f{i}"))
    for i in range(len(query.properties)):
        stmt = stmt.where(exists().where(_props.c.image_id == _images.c.id,
                                         _props.c.name == bindparam(f"pn{i}"),
                                         _props.c.value == bindparam(f"pv{i}")))
    for i in range(len(query.tags)):
        stmt = stmt.where(exists().where(_tags.c.image_id == _images.c.id,
                                         _tags.c.value == bindparam(f"t{i}")))
    if query.marker is not None:
        stmt = stmt.where(_marker_clause(sort))
    return stmt


def _in_range(column: str, value: Any) -> Any:
    """A filter operand of an integer ``column`` clamped to what the column holds
    (BigInteger 64 bits, Integer 32): a bound beyond it selects the same rows, and
    the database would refuse the number itself. Other values as they are."""
    column_type = _images.c[column].type
    if isinstance(value, bool) or not isinstance(value, int) or not isinstance(
            column_type, Integer):
        return value
    bound = 2 ** (63 if isinstance(column_type, BigInteger) else 31)
    return min(max(value, -bound), bound - 1)


def _list_params(query: ImageQuery, sort: list[tuple[str, str]],
                 marker_row: Any) -> dict[str, Any]:
    params: dict[str, Any] = dict(query.scope_params)
    for i, f in enumerate(query.filters):
        params[f"f{i}"] = list(f.value) if f.op == "in" else _in_range(f.column, f.value)
    for i, (name, value) in enumerate(query.properties.items()):
        params[f"pn{i}"], params[f"pv{i}"] = name, value
    for i, tag in enumerate(query.tags):
        params[f"t{i}"] = tag
    if marker_row is not None:
        for i, (key, _) in enumerate(sort):
            params[f"m{i}"] = _marker_value(key, marker_row)
    if query.limit is not None:
        params["page_limit"] = query.limit
    return params


def list_images(session: Connection, query: ImageQuery) -> list[Image]:
    """One page of images (with tags and properties), in ``query.sort`` order.

    Raises Invalid for an unknown sort or filter key, NotFound when the marker
    image does not exist (the API answers 400 for both, as Glance).
    """
    sort = _full_sort(query)
    marker_row = None
    if query.marker is not None:
        found = images_of(session, GET_LIVE, {"id": query.marker})
        if not found:
            raise NotFound(f"No image found with ID {query.marker}")
        marker_row = found[0]
    stmt = _list_statement(query, sort, session.dialect.name)
    images = images_of(session, stmt, _list_params(query, sort, marker_row))
    load_children(session, images)
    return images

