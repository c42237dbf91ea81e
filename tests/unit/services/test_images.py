"""Image create and update against a real SQLite runtime: saved, and one event each."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from glimpse.auth.context import RequestContext
from glimpse.domain.image import Image
from glimpse.runtime import Runtime
from glimpse.services import images as svc
from glimpse.services.image_patch import Change

CTX = RequestContext(project_id="0123456789abcdef0123456789abcdef", user_id="u",
                     roles=frozenset({"member", "reader"}))


def _events(rt: Runtime, event_type: str) -> list[str]:
    with rt.db.read() as session:
        return [row[0] for row in session.execute(
            text("SELECT envelope FROM outbox WHERE event_type = :t ORDER BY id"),
            {"t": event_type})]


def _replace(name: str, value: Any) -> Change:
    return Change("replace", (name,), value)


def _new_image(rt: Runtime) -> Image:
    return svc.create_image(rt, CTX, {"name": "a", "disk_format": "raw",
                                      "container_format": "bare", "p": "0"})


def test_update_saves_and_records_one_event(rt: Runtime) -> None:
    image = _new_image(rt)
    saved = svc.update_image(rt, CTX, image.id, [_replace("p", "1"), _replace("name", "b")])
    assert saved.properties == {"p": "1"} and saved.name == "b"
    assert saved.updated_at is not None and image.updated_at is not None
    assert saved.updated_at > image.updated_at
    assert svc.get_image(rt, CTX, image.id) == saved
    assert len(_events(rt, "image.update")) == 1


def test_create_records_the_image_as_created(rt: Runtime) -> None:
    image = _new_image(rt)
    events = _events(rt, "image.create")
    assert len(events) == 1
    payload = json.loads(events[0])["payload"]
    assert payload["id"] == image.id and payload["properties"] == {"p": "0"}


def test_a_duplicate_id_is_refused_without_an_event_even_after_delete(rt: Runtime) -> None:
    from glimpse.exceptions import Duplicate

    image = _new_image(rt)
    svc.delete_image(rt, CTX, image.id)
    with pytest.raises(Duplicate, match="already exists"):
        svc.create_image(rt, CTX, {"id": image.id, "name": "again"})
    assert len(_events(rt, "image.create")) == 1       # the first create's only
    with rt.db.read() as session:
        rows = session.execute(text("SELECT name, status FROM images WHERE id = :i"),
                               {"i": image.id}).all()
    assert [tuple(r) for r in rows] == [("a", "deleted")]


def test_an_empty_patch_writes_nothing(rt: Runtime) -> None:
    image = _new_image(rt)
    assert svc.update_image(rt, CTX, image.id, []) == image
    assert _events(rt, "image.update") == []
