"""Project usage counted as Glance's unified-limits usage, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import insert

from glimpse.db.engine import Database, utcnow
from glimpse.db.models import images
from glimpse.services.usage import MiB, project_usage

MINE = "a" * 32
OTHER = "b" * 32


def _image(n: int, owner: str, status: str, size: int | None,
           deleted: bool = False) -> dict[str, object]:
    now = utcnow()
    return dict(id=f"00000000-0000-0000-0000-{n:012d}", name=f"i{n}", status=status,
                visibility="private", owner=owner, size=size, created_at=now,
                updated_at=now, deleted=deleted, min_disk=0, min_ram=0,
                protected=False, os_hidden=False)


def test_empty_project_uses_nothing(db: Database) -> None:
    usage = project_usage(db, MINE)
    assert list(usage) == ["image_size_total", "image_stage_total",
                           "image_count_total", "image_count_uploading"]
    assert all(u.usage == 0 and u.limit == -1 for u in usage.values())


def test_counts_only_the_callers_live_images(db: Database) -> None:
    with db.write() as s:
        s.execute(insert(images), [
            _image(1, MINE, "active", 3 * MiB),
            _image(2, MINE, "deactivated", 2 * MiB),
            _image(3, MINE, "queued", None),
            _image(4, MINE, "saving", None),
            _image(5, MINE, "importing", 5 * MiB),
            _image(6, MINE, "killed", 7 * MiB),
            _image(7, MINE, "deleted", 11 * MiB, deleted=True),
            _image(8, OTHER, "active", 13 * MiB),
        ])
    usage = project_usage(db, MINE, "1GB")
    assert usage["image_size_total"].usage == 5
    assert usage["image_size_total"].limit == 1024
    assert usage["image_stage_total"].usage == 5
    # active, deactivated, queued, saving, importing:
    assert usage["image_count_total"].usage == 5
    assert usage["image_count_uploading"].usage == 2  # saving, importing
    assert project_usage(db, OTHER)["image_size_total"].usage == 13
    assert project_usage(db, None)["image_count_total"].usage == 0
