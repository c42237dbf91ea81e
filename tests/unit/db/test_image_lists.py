"""Image lists against both databases: order, paging, filters, and Glance's
visibility rules for lists."""

from __future__ import annotations

import uuid
from datetime import timedelta

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


