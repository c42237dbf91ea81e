"""The image repository against both databases: round trips, members, and the
SQLite driver path (reads through sqlite3 equal reads through SQLAlchemy)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from glimpse.auth.context import RequestContext
from glimpse.db import image_lists, migrate, sqlite_direct
from glimpse.db import images_repo as repo
from glimpse.db.engine import Database
from glimpse.db.image_lists import AttrFilter, ImageQuery
from glimpse.domain.image import Image
from glimpse.domain.member import Member
from glimpse.exceptions import Duplicate, NotFound
from glimpse.services import access
from tests.unit.db.factories import T0, make, seed


def test_round_trip_with_tags_and_properties(db: Database) -> None:
    img = make(1, tags={"a", "b"}, properties={"k": "v", "x": "y"}, size=10,
               disk_format="raw", protected=True)
    with db.write() as s:
        repo.add(s, img)
    with db.read() as s:
        got = repo.get(s, img.id)
    assert got == img

    got.tags = {"b", "c"}
    got.properties = {"k": "v2", "new": "n"}
    got.name = None
    with db.write() as s:
        repo.update(s, got)
    with db.read() as s:
        again = repo.get(s, img.id, for_update=False)
    assert again is not None
    assert again.tags == {"b", "c"}
    assert again.properties == {"k": "v2", "new": "n"}
    assert again.name is None


def test_null_property_values_round_trip_and_are_not_tags(db: Database) -> None:
    """The schema lets kernel_id/ramdisk_id be null (migration 0004): stored as
    NULL, read back as None, never mistaken for a tag (tags and properties are
    read in one query)."""
    img = make(1, tags={"t"}, properties={"kernel_id": None, "k": "v"})
    with db.write() as s:
        repo.add(s, img)
    with db.read() as s:
        got = repo.get(s, img.id)
        listed = image_lists.list_images(s, ImageQuery(limit=10))
    assert got is not None
    assert (got.tags, got.properties) == ({"t"}, {"kernel_id": None, "k": "v"})
    assert [(i.tags, i.properties) for i in listed] == [(got.tags, got.properties)]

    got.properties = {"kernel_id": "0b1c5f2e-9a65-4b6e-8f44-2c2a2ab1e3a1", "ramdisk_id": None}
    with db.write() as s:
        repo.update(s, got)
    with db.read() as s:
        again = repo.get(s, img.id)
    assert again is not None and again.properties == got.properties


def test_update_against_a_snapshot(db: Database) -> None:
    img = make(1, tags={"a", "b"}, properties={"k": "v", "x": "y"})
    with db.write() as s:
        repo.add(s, img)
    with db.write() as s:
        loaded = repo.get(s, img.id, for_update=True)
        assert loaded is not None
        before = loaded.copy()
        loaded.tags = {"b", "c"}
        loaded.properties = {"k": "v2", "z": "1"}
        repo.update(s, loaded, before=before)
    with db.read() as s:
        again = repo.get(s, img.id)
    assert again is not None
    assert (again.tags, again.properties) == ({"b", "c"}, {"k": "v2", "z": "1"})


def test_get_for_update_and_deleted(db: Database) -> None:
    img = make(1, size=5)
    with db.write() as s:
        repo.add(s, img)
    with db.write() as s:
        locked = repo.get(s, img.id, for_update=True)
        assert locked is not None
        repo.soft_delete(s, locked, when=T0 + timedelta(days=1))
    with db.read() as s:
        assert repo.get(s, img.id) is None
        dead = repo.get(s, img.id, include_deleted=True)
        assert dead is not None and dead.status == "deleted"
        assert dead.deleted_at == T0 + timedelta(days=1)
        assert repo.exists_any(s, img.id)
        assert repo.usage(s, "p1") == 0


def test_update_unknown_image_is_not_found(db: Database) -> None:
    with db.write() as s, pytest.raises(NotFound):
        repo.update(s, make(9))


def test_usage_sums_live_images_of_project(db: Database) -> None:
    with db.write() as s:
        repo.add(s, make(1, size=100))
        repo.add(s, make(2, size=50))
        repo.add(s, make(3, size=7, owner="p2"))
        repo.add(s, make(4, size=None))
    with db.read() as s:
        assert repo.usage(s, "p1") == 150
        assert repo.usage(s, "p1", exclude_image_id=make(1).id) == 50
        assert repo.usage(s, "nobody") == 0


def test_data_records_and_images_located_under_a_directory(db: Database) -> None:
    """The store check's two reads. ``_`` and ``%`` in the directory are literal."""
    under, beside = "file:///data/img_a%/", "file:///data/imgXa%/"
    with db.write() as s:
        repo.add(s, make(1, status="active", size=5, location=under + make(1).id))
        repo.add(s, make(2, status="active", size=6, location=beside + make(2).id))
        repo.add(s, make(3, status="deleted", size=7, location=under + make(3).id))
        repo.add(s, make(4, status="queued"))
    with db.read() as s:
        assert list(repo.located_under(s, under)) == [
            (make(1).id, "active", 5, under + make(1).id)]
        records = repo.data_records(s, [make(n).id for n in (1, 3, 4, 9)])
    assert records == {make(1).id: ("active", False, 5, under + make(1).id),
                       make(3).id: ("deleted", True, 7, under + make(3).id),
                       make(4).id: ("queued", False, None, None)}


def test_members_crud(db: Database) -> None:
    with db.write() as s:
        repo.add(s, make(1, visibility="shared"))
        repo.add_member(s, Member(make(1).id, "p2", created_at=T0, updated_at=T0))
        repo.add_member(s, Member(make(1).id, "p3", created_at=T0 + timedelta(1),
                                  updated_at=T0))
    image_id = make(1).id
    with db.write() as s:
        m = repo.get_member(s, image_id, "p2")
        assert m is not None and m.status == "pending"
        m.status = "accepted"
        m.updated_at = T0 + timedelta(hours=1)
        repo.update_member(s, m)
    with db.read() as s:
        assert [(m.member_id, m.status) for m in repo.list_members(s, image_id)] == [
            ("p2", "accepted"), ("p3", "pending")]
        assert repo.count_members(s, image_id) == 2
        assert repo.member_status_of(s, [image_id], "p3") == {image_id: "pending"}
    with db.write() as s:
        repo.delete_member(s, image_id, "p2")
    with db.read() as s:
        assert repo.get_member(s, image_id, "p2") is None


def test_sqlite_driver_reads_equal_sqlalchemy_reads(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite reads run as compiled text on the driver connection: same images, same
    types (datetimes, booleans), whatever the filters, than through SQLAlchemy."""
    database = Database(f"sqlite:///{tmp_path}/raw.sqlite")
    migrate.upgrade(database.engine)
    seed(database)
    with database.write() as s:
        repo.add(s, make(9, protected=True, os_hidden=True, deleted_at=T0, status="active",
                         visibility="public", tags={"a", "b"}, properties={"p": "q"}))
    ctx = RequestContext(project_id="p2", user_id="u", roles=frozenset({"member"}))
    queries = [
        ImageQuery(),
        ImageQuery(limit=3, marker=make(5).id),
        ImageQuery(filters=[AttrFilter("created_at", "gt", T0 + timedelta(seconds=3)),
                            AttrFilter("protected", "eq", False)]),
        ImageQuery(filters=[AttrFilter("disk_format", "in", ["raw", "qcow2"])],
                   properties={"mod3": "1"}, tags=["odd"]),
        ImageQuery(sort=[("name", "asc"), ("size", "desc")], default_dir="asc",
                   scope=access.list_scope(ctx), scope_params=access.scope_params(ctx)),
    ]

    def reads() -> list[object]:
        with database.read() as s:
            got: list[object] = [repo.get(s, make(9).id), repo.get(s, make(1).id),
                                 repo.get(s, "nope"), repo.exists_any(s, make(2).id),
                                 repo.exists_any(s, "nope")]
            got += [image_lists.list_images(s, q) for q in queries]
        return got

    fast = reads()
    monkeypatch.setattr(sqlite_direct, "sqlite_connection", lambda session: None)
    slow = reads()
    assert fast == slow
    image = fast[0]
    assert isinstance(image, Image)
    assert image.protected is True and image.created_at == make(9).created_at
    assert image.deleted_at == T0 and image.tags == {"a", "b"}
    database.dispose()


def test_reads_in_a_write_transaction_equal_reads_in_a_read_transaction(db: Database) -> None:
    seed(db)
    with db.write() as s:
        repo.add(s, make(9, visibility="shared"))
        repo.add_member(s, Member(make(9).id, "p2", created_at=T0, updated_at=T0))
    ctx = RequestContext(project_id="p2", user_id="u", roles=frozenset({"member"}))

    def reads(session: Connection) -> list[object]:
        return [repo.get(session, make(3).id), repo.exists_any(session, make(4).id),
                access.get_visible_image(session, ctx, make(9).id),
                image_lists.list_images(session, ImageQuery(limit=4, marker=make(6).id)),
                repo.get_member(session, make(9).id, "p2")]

    with db.read() as connection:
        in_read = reads(connection)
    with db.write() as connection:
        in_write = reads(connection)
    assert in_read == in_write
    assert in_read[0] is not None and in_read[1] is True


def test_duplicate_insert_raises_duplicate_and_keeps_the_first(db: Database) -> None:
    with db.write() as s:
        repo.add(s, make(1))
    with pytest.raises(Duplicate, match="already exists"), db.write() as s:
        repo.add(s, make(1, name="again"))
    with db.read() as s:
        found = repo.get(s, make(1).id)
    assert found is not None and found.name == "img1"


def test_update_writes_columns_tags_and_properties(db: Database) -> None:
    with db.write() as s:
        repo.add(s, make(1, tags={"a", "b"}, properties={"x": "1", "y": "2"}))
    changed = make(1, name="new", protected=True, tags={"b", "c"},
                   properties={"y": "3", "z": "4"}, updated_at=T0 + timedelta(days=1))
    with db.write() as s:
        before = repo.get(s, make(1).id, for_update=True)
        repo.update(s, changed, before=before)
    with db.read() as s:
        assert repo.get(s, make(1).id) == changed
    with pytest.raises(NotFound), db.write() as s:
        repo.update(s, make(2))
