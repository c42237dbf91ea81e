"""The metadefs repository on SQLite and PostgreSQL: round trips, Glance's unique
constraints, the cascade from a namespace, and keyset paging."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from glimpse.db import metadefs_repo as repo
from glimpse.db import models
from glimpse.db.engine import Database
from glimpse.domain.metadef import (
    MetadefObject,
    MetadefProperty,
    MetadefTag,
    Namespace,
    ResourceTypeAssociation,
)
from glimpse.exceptions import NotFound

T0 = datetime(2026, 1, 1)


def _ns(name: str, *, owner: str = "p1", visibility: str = "private", minutes: int = 0,
        display_name: str | None = None) -> Namespace:
    at = T0 + timedelta(minutes=minutes)
    return Namespace(namespace=name, owner=owner, visibility=visibility,
                     display_name=display_name, created_at=at, updated_at=at)


def test_a_namespace_and_what_it_holds_round_trip(db: Database) -> None:
    obj = MetadefObject(name="o", description="d", required=["a", "b"],
                        properties={"a": {"type": "string", "title": "A"}},
                        created_at=T0, updated_at=T0)
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n1", display_name="N"))
        repo.add_object(s, ns_id, obj)
        repo.add_property(s, ns_id, MetadefProperty(name="p", schema={"name": "p", "type": "x"},
                                                    created_at=T0, updated_at=T0))
        repo.add_tags(s, ns_id, [MetadefTag(name="t", created_at=T0, updated_at=T0)])
        type_id = repo.ensure_resource_type(s, "OS::Glance::Image", T0)
        repo.add_association(s, ns_id, type_id, ResourceTypeAssociation(
            name="OS::Glance::Image", prefix="hw_", created_at=T0, updated_at=T0))
    with db.read() as s:
        ns = repo.get_namespace(s, "n1")
        assert ns is not None and (ns.id, ns.display_name, ns.protected) == (ns_id, "N", False)
        assert repo.get_namespace(s, "N1") is None                # names are exact
        assert repo.list_objects(s, ns_id) == [obj]
        assert repo.get_property(s, ns_id, "p") == MetadefProperty(
            name="p", schema={"name": "p", "type": "x"}, created_at=T0, updated_at=T0)
        assert [t.name for t in repo.list_tags(s, ns_id)] == ["t"]
        [association] = repo.list_associations(s, [ns_id])[ns_id]
        assert (association.name, association.prefix) == ("OS::Glance::Image", "hw_")
        assert [t.name for t in repo.list_resource_types(s)] == ["OS::Glance::Image"]


def test_names_are_unique_as_in_glance(db: Database) -> None:
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n1"))
        other = repo.add_namespace(s, _ns("n2"))
        repo.add_tags(s, ns_id, [MetadefTag(name="t", created_at=T0, updated_at=T0)])
        repo.add_tags(s, other, [MetadefTag(name="t", created_at=T0, updated_at=T0)])
        repo.add_object(s, ns_id, MetadefObject(name="o", created_at=T0, updated_at=T0))
        type_id = repo.ensure_resource_type(s, "R", T0)
    with db.write() as s:               # shared by every namespace: found, not duplicated
        assert repo.ensure_resource_type(s, "R", T0) == type_id
    attempts = [
        lambda s: repo.add_namespace(s, _ns("n1")),
        lambda s: repo.add_tags(s, ns_id, [MetadefTag(name="t", created_at=T0)]),
        lambda s: repo.add_object(s, ns_id, MetadefObject(name="o", created_at=T0)),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError), db.write() as s:
            attempt(s)


def test_deleting_a_namespace_deletes_what_it_holds(db: Database) -> None:
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n1"))
        kept = repo.add_namespace(s, _ns("n2"))
        type_id = repo.ensure_resource_type(s, "R", T0)
        for target in (ns_id, kept):
            repo.add_object(s, target, MetadefObject(name="o", created_at=T0))
            repo.add_property(s, target, MetadefProperty(name="p", schema={}, created_at=T0))
            repo.add_tags(s, target, [MetadefTag(name="t", created_at=T0)])
            repo.add_association(s, target, type_id, ResourceTypeAssociation(
                name="R", created_at=T0))
    with db.write() as s:
        repo.delete_namespace(s, ns_id)
    with db.read() as s:
        for table in (models.metadef_objects, models.metadef_properties, models.metadef_tags,
                      models.metadef_namespace_resource_types):
            ids = set(s.execute(select(table.c.namespace_id)).scalars())
            assert ids == {kept}, table.name
        # the resource type itself stays: other namespaces may use it
        assert s.execute(select(func.count()).select_from(models.metadef_resource_types)
                         ).scalar() == 1


def test_namespace_pages_follow_a_total_order_with_null_sort_keys(db: Database) -> None:
    """Paging by a nullable column (display_name) neither skips nor repeats a
    namespace, and the list scope hides other projects' private namespaces."""
    with db.write() as s:
        for i in range(7):
            repo.add_namespace(s, _ns(f"n{i}", minutes=i % 3,
                                      display_name=None if i % 2 else f"d{i % 3}"))
        repo.add_namespace(s, _ns("theirs", owner="p2"))
        repo.add_namespace(s, _ns("open", owner="p2", visibility="public", minutes=9))
    for sort_dir in ("asc", "desc"):
        with db.read() as s:
            whole = [n.namespace for n in repo.list_namespaces(
                s, project_id="p1", all_projects=False, sort_key="display_name",
                sort_dir=sort_dir)]
            assert sorted(whole) == sorted([f"n{i}" for i in range(7)] + ["open"])
            paged: list[str] = []
            marker = None
            while True:
                page = repo.list_namespaces(s, project_id="p1", all_projects=False,
                                            sort_key="display_name", sort_dir=sort_dir,
                                            limit=3, marker_id=marker)
                paged += [n.namespace for n in page]
                if len(page) < 3:
                    break
                marker = page[-1].id
        assert paged == whole
    with db.read() as s:
        everything = repo.list_namespaces(s, project_id=None, all_projects=True)
        public_only = repo.list_namespaces(s, project_id=None, all_projects=False)
    assert len(everything) == 9 and [n.namespace for n in public_only] == ["open"]


def test_lists_filter_by_visibility_and_resource_type(db: Database) -> None:
    with db.write() as s:
        a = repo.add_namespace(s, _ns("a", visibility="public"))
        repo.add_namespace(s, _ns("b", minutes=1))
        type_id = repo.ensure_resource_type(s, "R", T0)
        repo.add_association(s, a, type_id, ResourceTypeAssociation(name="R", created_at=T0))
    with db.read() as s:
        def names(**kw: object) -> list[str]:
            return [n.namespace for n in repo.list_namespaces(
                s, project_id="p1", all_projects=False, **kw)]  # type: ignore[arg-type]
        assert names() == ["b", "a"]                        # created_at desc by default
        assert names(visibility="private") == ["b"]
        assert names(resource_types=["R", "S"]) == ["a"]
        assert names(resource_types=[""]) == []


def test_tags_page_and_content_is_deleted_by_kind(db: Database) -> None:
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n"))
        repo.add_tags(s, ns_id, [MetadefTag(name=n, created_at=T0, updated_at=T0)
                                 for n in "cab"])
        repo.add_object(s, ns_id, MetadefObject(name="o", created_at=T0))
    with db.read() as s:
        assert [t.name for t in repo.list_tags(s, ns_id)] == ["b", "a", "c"]   # id desc
        by_name = repo.list_tags(s, ns_id, sort_key="name", sort_dir="asc", limit=2,
                                 marker_id=repo.tag_id(s, ns_id, "a"))
        assert [t.name for t in by_name] == ["b", "c"]
    with db.write() as s:
        assert repo.delete_named(s, "tags", ns_id, "a") is True
        assert repo.delete_named(s, "tags", ns_id, "a") is False
        assert repo.delete_all(s, "tags", ns_id) == 2
    with db.read() as s:
        assert repo.list_tags(s, ns_id) == []
        assert [o.name for o in repo.list_objects(s, ns_id)] == ["o"]


def test_a_resource_type_two_transactions_add_at_once_is_one_row(db: Database) -> None:
    """The second waits for the first and uses its row (no unique-name failure):
    two requests associating the same new resource type with two namespaces."""
    first_inserted, second_done = threading.Event(), threading.Event()
    ids: dict[str, int] = {}

    def first() -> None:
        with db.write() as s:
            ids["first"] = repo.ensure_resource_type(s, "New::Type", T0)
            first_inserted.set()
            second_done.wait(1.0)       # the second is blocked meanwhile: it cannot finish
    thread = threading.Thread(target=first)
    thread.start()
    assert first_inserted.wait(10)
    with db.write() as s:
        ids["second"] = repo.ensure_resource_type(s, "New::Type", T0)
    second_done.set()
    thread.join(10)
    assert ids["first"] == ids["second"]
    with db.read() as s:
        assert [t.name for t in repo.list_resource_types(s)] == ["New::Type"]


def test_a_marker_deleted_before_its_page_is_read_is_not_found(db: Database) -> None:
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n"))
        repo.add_tags(s, ns_id, [MetadefTag(name="t", created_at=T0, updated_at=T0)])
        gone_tag = repo.tag_id(s, ns_id, "t")
        gone_ns = repo.add_namespace(s, _ns("gone"))
        repo.delete_named(s, "tags", ns_id, "t")
        repo.delete_namespace(s, gone_ns)
    with db.read() as s:
        with pytest.raises(NotFound, match="marker was deleted"):
            repo.list_tags(s, ns_id, marker_id=gone_tag)
        with pytest.raises(NotFound, match="marker was deleted"):
            repo.list_namespaces(s, project_id=None, all_projects=True, marker_id=gone_ns)


def test_many_tags_go_in_at_once_and_are_found_in_chunks(db: Database) -> None:
    names = [f"tag-{i:05d}" for i in range(1200)]
    with db.write() as s:
        ns_id = repo.add_namespace(s, _ns("n"))
        repo.add_tags(s, ns_id, [MetadefTag(name=n, created_at=T0, updated_at=T0)
                                 for n in names])
    with db.read() as s:
        assert [t.name for t in repo.list_tags(s, ns_id, sort_key="id", sort_dir="asc")
                ] == names                                  # ids follow the order given
        asked = ["nope", *names[::7], "tag-99999"]
        assert repo.existing_tag_names(s, ns_id, asked) == set(names[::7])
