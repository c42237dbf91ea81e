"""db.purge against both databases: what deleted images leave behind, oldest first,
within the age and row limits, never a live image's rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from glimpse.db import images_repo, purge
from glimpse.db.engine import Database
from glimpse.db.models import image_members, image_properties, image_tags, images
from glimpse.domain.member import Member
from tests.unit.db.factories import T0, make

DAY = timedelta(days=1)
NOW = T0 + 100 * DAY


def add(db: Database, n: int, *, deleted_days_ago: int | None, props: int = 2) -> str:
    """Image ``n`` with ``props`` properties, 2 tags and 1 member; soft-deleted
    ``deleted_days_ago`` days before NOW (None: alive)."""
    image = make(n, tags={"a", "b"}, properties={f"p{i}": "v" for i in range(props)})
    with db.write() as s:
        images_repo.add(s, image)
        images_repo.add_member(s, Member(image.id, f"project-{n}", created_at=T0,
                                         updated_at=T0))
        if deleted_days_ago is not None:
            images_repo.soft_delete(s, image, when=NOW - deleted_days_ago * DAY)
    return image.id


def rows(db: Database, image_id: str) -> dict[str, int]:
    with db.read() as s:
        return {t.name: int(s.scalar(select(func.count()).select_from(t)
                                     .where(t.c.image_id == image_id)) or 0)
                for t in (image_properties, image_tags, image_members)}


def image_row_exists(db: Database, image_id: str) -> bool:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(images)
                        .where(images.c.id == image_id)) == 1


def test_children_of_images_deleted_before_the_moment_go_and_nothing_else(
        db: Database) -> None:
    old, recent, alive = (add(db, 1, deleted_days_ago=40), add(db, 2, deleted_days_ago=10),
                          add(db, 3, deleted_days_ago=None))
    counts = purge.purge_image_children(db, deleted_before=NOW - 30 * DAY, max_rows=-1)
    assert counts == {"image_properties": 2, "image_tags": 2, "image_members": 1}
    assert rows(db, old) == {"image_properties": 0, "image_tags": 0, "image_members": 0}
    full = {"image_properties": 2, "image_tags": 2, "image_members": 1}
    assert rows(db, recent) == rows(db, alive) == full
    # the image rows stay: their ids are still taken
    assert all(image_row_exists(db, i) for i in (old, recent, alive))


def test_max_rows_is_per_table_and_the_oldest_deletions_go_first(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(purge, "BATCH", 2)           # several batches per table
    older = add(db, 1, deleted_days_ago=50, props=3)
    old = add(db, 2, deleted_days_ago=40, props=3)
    before = NOW - 30 * DAY
    first = purge.purge_image_children(db, deleted_before=before, max_rows=4)
    assert first == {"image_properties": 4, "image_tags": 4, "image_members": 2}
    assert rows(db, older) == {"image_properties": 0, "image_tags": 0, "image_members": 0}
    assert rows(db, old) == {"image_properties": 2, "image_tags": 0, "image_members": 0}
    again = purge.purge_image_children(db, deleted_before=before, max_rows=4)
    assert again == {"image_properties": 2, "image_tags": 0, "image_members": 0}
    assert purge.purge_image_children(db, deleted_before=before, max_rows=-1) == {
        "image_properties": 0, "image_tags": 0, "image_members": 0}


def test_purging_the_images_table_takes_the_rows_and_what_is_left_of_them(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(purge, "BATCH", 2)
    gone = [add(db, n, deleted_days_ago=200 + n) for n in range(1, 6)]
    kept = add(db, 9, deleted_days_ago=100)
    alive = add(db, 10, deleted_days_ago=None)
    before = NOW - 180 * DAY
    assert purge.purge_images(db, deleted_before=before, max_rows=3) == 3
    # oldest first: images 5, 4, 3 were deleted longest ago
    assert [image_row_exists(db, i) for i in gone] == [True, True, False, False, False]
    assert rows(db, gone[4]) == {"image_properties": 0, "image_tags": 0, "image_members": 0}
    assert purge.purge_images(db, deleted_before=before, max_rows=-1) == 2
    assert not any(image_row_exists(db, i) for i in gone)
    assert image_row_exists(db, kept) and image_row_exists(db, alive)
    assert rows(db, kept)["image_properties"] == 2
    with db.read() as s:
        assert images_repo.get(s, alive) is not None


def test_max_rows_zero_deletes_nothing(db: Database) -> None:
    old = add(db, 1, deleted_days_ago=40)
    assert purge.purge_image_children(db, deleted_before=datetime.max, max_rows=0) == {
        "image_properties": 0, "image_tags": 0, "image_members": 0}
    assert purge.purge_images(db, deleted_before=datetime.max, max_rows=0) == 0
    assert image_row_exists(db, old) and rows(db, old)["image_tags"] == 2
