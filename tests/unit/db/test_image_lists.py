"""Image lists against both databases: order, paging, filters, and Glance's
visibility rules for lists."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from glimpse.auth.context import RequestContext
from glimpse.db import image_lists
from glimpse.db import images_repo as repo
from glimpse.db.engine import Database
from glimpse.db.image_lists import AttrFilter, ImageQuery
from glimpse.domain.member import Member
from glimpse.exceptions import Invalid, NotFound
from glimpse.services import access
from tests.unit.db.factories import T0, ctx, ids, make, seed


def test_default_order_and_marker_paging(db: Database) -> None:
    seed(db)
    with db.read() as s:
        assert ids(image_lists.list_images(s, ImageQuery())) == [7, 6, 5, 4, 3, 2, 1]
        page1 = image_lists.list_images(s, ImageQuery(limit=3))
        page2 = image_lists.list_images(s, ImageQuery(limit=3, marker=page1[-1].id))
        page3 = image_lists.list_images(s, ImageQuery(limit=3, marker=page2[-1].id))
    assert ids(page1) == [7, 6, 5] and ids(page2) == [4, 3, 2] and ids(page3) == [1]


def test_multi_key_sort_with_nulls_and_paging(db: Database) -> None:
    with db.write() as s:
        for n, name in enumerate(["b", None, "a", "b", None, "a"], start=1):
            repo.add(s, make(n, name=name))
    sort = [("name", "asc"), ("id", "desc")]
    with db.read() as s:
        full = ids(image_lists.list_images(s, ImageQuery(sort=sort, default_dir="asc")))
        assert full == [5, 2, 6, 3, 4, 1]
        seen: list[int] = []
        marker = None
        while True:
            page = image_lists.list_images(s, ImageQuery(sort=sort, limit=2, marker=marker))
            if not page:
                break
            seen += ids(page)
            marker = page[-1].id
    assert seen == full


def test_filters_tags_properties(db: Database) -> None:
    seed(db)
    with db.read() as s:
        q = ImageQuery(tags=["even"])
        assert ids(image_lists.list_images(s, q)) == [6, 4, 2]
        q = ImageQuery(properties={"mod3": "1"})
        assert ids(image_lists.list_images(s, q)) == [7, 4, 1]
        q = ImageQuery(filters=[AttrFilter("size", "gte", 30), AttrFilter("size", "lte", 50),
                                AttrFilter("disk_format", "in", ["raw"])])
        assert ids(image_lists.list_images(s, q)) == [5, 4]
        q = ImageQuery(filters=[AttrFilter("created_at", "lt", T0 + timedelta(seconds=3))])
        assert ids(image_lists.list_images(s, q)) == [2, 1]
        q = ImageQuery(filters=[AttrFilter("name", "neq", "img1")], tags=["odd"])
        assert ids(image_lists.list_images(s, q)) == [7, 5, 3]


def test_bad_sort_key_and_marker(db: Database) -> None:
    seed(db)
    with db.read() as s:
        with pytest.raises(Invalid):
            image_lists.list_images(s, ImageQuery(sort=[("location", "asc")]))
        with pytest.raises(NotFound):
            image_lists.list_images(s, ImageQuery(marker=str(uuid.uuid4())))


def test_list_loads_children_in_batches(db: Database) -> None:
    seed(db)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.read() as s:
            if db.dialect == "sqlite":   # reads run on the driver connection there
                s.connection.driver_connection.set_trace_callback(statements.append)
            images = image_lists.list_images(s, ImageQuery())
            if db.dialect == "sqlite":
                s.connection.driver_connection.set_trace_callback(None)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(images) == 7 and all(i.properties for i in images)
    selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2  # the rows, then their tags and properties in one query


def test_list_scope_follows_glance_rules(db: Database) -> None:
    with db.write() as s:
        repo.add(s, make(1, visibility="private"))
        repo.add(s, make(2, visibility="public", owner="p9"))
        repo.add(s, make(3, visibility="community", owner="p9"))
        repo.add(s, make(4, visibility="shared", owner="p9"))
        repo.add(s, make(5, visibility="shared", owner="p9"))
        repo.add(s, make(6, visibility="private", owner="p9"))
        repo.add(s, make(7, visibility="community"))
        repo.add_member(s, Member(make(4).id, "p1", status="accepted", created_at=T0,
                                  updated_at=T0))
        repo.add_member(s, Member(make(5).id, "p1", status="pending", created_at=T0,
                                  updated_at=T0))

    def listed(c: RequestContext, **kw: str) -> list[int]:
        with db.read() as s:
            query = ImageQuery(scope=access.list_scope(c, **kw),
                               scope_params=access.scope_params(c))
            return sorted(ids(image_lists.list_images(s, query)))

    p1 = ctx("p1")
    assert listed(p1) == [1, 2, 4, 7]
    assert listed(p1, visibility="community") == [3, 7]
    assert listed(p1, member_status="pending") == [1, 2, 5, 7]
    assert listed(p1, member_status="all") == [1, 2, 4, 5, 7]
    assert listed(p1, visibility="shared", member_status="all") == [4, 5]
    assert listed(p1, visibility="all") == [1, 2, 3, 4, 7]
    assert listed(ctx("p5")) == [2]
    assert listed(ctx("p5", "admin")) == [1, 2, 4, 5, 6]  # others' community: only when asked
    assert listed(ctx("p5", "admin"), visibility="all") == [1, 2, 3, 4, 5, 6, 7]

    with db.read() as s:
        for n in (1, 2, 3, 4, 5, 7):
            assert access.get_visible_image(s, p1, make(n).id).id == make(n).id
        with pytest.raises(NotFound):
            access.get_visible_image(s, p1, make(6).id)
        with pytest.raises(NotFound):
            access.get_visible_image(s, ctx("p5"), make(4).id)


    assert listed(p1, visibility="public") == [2]
    assert listed(p1, visibility="private") == [1]
    assert listed(ctx(None)) == [2]
    assert listed(ctx(None), visibility="all") == [2, 3, 7]
    assert listed(ctx(None), visibility="shared") == []


def _mixed_scope(db: Database) -> list[int]:
    """Images whose creation times interleave the branches of p1's list: its own
    (any visibility), others' public (one without an owner), others' shared with
    p1 as accepted member; and others' images p1 must not get. Returns the
    images p1 gets, newest first."""
    kinds = [{}, {"visibility": "public", "owner": "p9"}, {"visibility": "shared"},
             {"visibility": "shared", "owner": "p9"}, {"visibility": "public", "owner": None},
             {"visibility": "private", "owner": "p9"}, {"visibility": "shared", "owner": "p8"},
             {"visibility": "community", "owner": "p9"}, {"visibility": "community"}]
    hidden = {5, 6, 7}    # others' private, shared without membership, community
    expected = []
    with db.write() as s:
        for n in range(1, 46):
            kind = kinds[n % len(kinds)]
            # names repeat and some are NULL, for the sort by name
            repo.add(s, make(n, name=None if n % 4 == 0 else f"n{n % 3}", **kind))
            if kind.get("owner") == "p9" and kind["visibility"] == "shared":
                repo.add_member(s, Member(make(n).id, "p1", status="accepted",
                                          created_at=T0, updated_at=T0))
            if kind.get("owner") == "p8":
                repo.add_member(s, Member(make(n).id, "p1", status="pending",
                                          created_at=T0, updated_at=T0))
            if n % len(kinds) not in hidden:
                expected.append(n)
    return expected[::-1]


@pytest.mark.parametrize("sort", [[], [("name", "asc")], [("visibility", "desc"),
                                                            ("size", "asc")]])
def test_pages_of_a_scope_of_several_branches_cover_it_in_order(
        db: Database, sort: list[tuple[str, str]]) -> None:
    """A project's default list is the union of several branches, each cut to a
    page; paging through it by marker gives every image once, in the list's order."""
    expected = _mixed_scope(db)
    p1 = ctx("p1")

    def page(limit: int | None, marker: str | None = None) -> list[int]:
        query = ImageQuery(scope=access.list_scope(p1), scope_params=access.scope_params(p1),
                           sort=list(sort) or [("created_at", "desc")], limit=limit,
                           marker=marker)
        with db.read() as s:
            return ids(image_lists.list_images(s, query))

    full = page(None)
    assert sorted(full) == sorted(expected)
    if not sort:
        assert full == expected
    for limit in (1, 4, 7):
        seen: list[int] = []
        while chunk := page(limit, make(seen[-1]).id if seen else None):
            assert len(chunk) <= limit
            seen += chunk
        assert seen == full


def _sqlite_steps(db: Database, query: ImageQuery) -> int:
    """SQLite VM steps (in tens) of listing ``query``'s page."""
    count = 0

    def step() -> int:
        nonlocal count
        count += 1
        return 0

    with db.read() as s:
        raw = s.connection.driver_connection
        raw.set_progress_handler(step, 10)
        try:
            assert len(image_lists.list_images(s, query)) == query.limit
        finally:
            raw.set_progress_handler(None, 0)
    return count


def _postgresql_rows(db: Database, query: ImageQuery) -> int:
    """Rows PostgreSQL's plan for ``query``'s page read from ``images`` (EXPLAIN
    ANALYZE of the statement the list ran, with its parameters)."""
    ran: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        ran.append((args[2], args[3]))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.read() as s:
            assert len(image_lists.list_images(s, query)) == query.limit
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    statement, parameters = next(r for r in ran if "ORDER BY" in r[0])
    with db.read() as s:
        plan = s.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                 parameters).scalar_one()

    def rows(node: dict[str, Any]) -> int:
        own = (node["Actual Rows"] * node["Actual Loops"]
               if node.get("Relation Name") == "images" else 0)
        return own + sum(rows(child) for child in node.get("Plans", []))

    return rows(plan[0]["Plan"])


@pytest.mark.parametrize(("sort", "direction"), [([("created_at", "desc")], "desc"),
                                                ([("name", "asc")], "asc")])
def test_a_page_costs_the_same_among_ten_times_as_many_images(
        db: Database, sort: list[tuple[str, str]], direction: str) -> None:
    """The first and a later page of a project's list, among 300 and then 3,000 of
    its images, cost about the same: SQLite VM steps, rows PostgreSQL reads
    (reading every visible row and sorting them cost ~10x as much). In the
    default order and sorted by name (``glance image-list``'s default). Other
    projects' images make the average project small, as in a cloud: what lures
    a planner into reading them all."""
    p1 = ctx("p1")
    cost = _sqlite_steps if db.dialect == "sqlite" else _postgresql_rows

    def page(marker: int | None) -> ImageQuery:
        return ImageQuery(scope=access.list_scope(p1), scope_params=access.scope_params(p1),
                          sort=list(sort), default_dir=direction, limit=20,
                          marker=None if marker is None else make(marker).id)

    def add(first: int, last: int) -> None:
        with db.write() as s:
            for n in range(first, last + 1):
                repo.add(s, make(n, visibility="public" if n % 50 == 0 else "shared"))
                repo.add(s, make(100_000 + n, owner=f"p{100 + n % 500}", visibility="private"))
        if db.dialect == "sqlite":
            db.refresh_statistics()
        else:
            with db.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE images")

    add(1, 300)
    small = cost(db, page(None)), cost(db, page(150))
    add(301, 3000)
    large = cost(db, page(None)), cost(db, page(1500))
    assert large[0] < 2 * small[0] and large[1] < 2 * small[1], (small, large)
