"""Metadata definitions repository: the only module that reads and writes metadef rows.

Every function takes the caller's ``Connection`` in a transaction and never
commits; a unique constraint violated by a write surfaces as SQLAlchemy's
``IntegrityError`` (the service turns it into Duplicate, and the whole
transaction is rolled back). Objects, properties and tags are rows *of* a
namespace (its database ``id``), looked up by name within it; deleting a
namespace row deletes them and its resource type associations (``ON DELETE
CASCADE``).

Lists are ordered totally (keyset paging never skips or repeats a row):
namespaces by ``sort_key`` then ``created_at`` then ``id``; tags the same way;
objects and properties by name (the order Glance's unordered query gives on
its unique index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from glimpse.db import models
from glimpse.db.keyset import rows_after
from glimpse.domain.metadef import (
    PUBLIC,
    MetadefObject,
    MetadefProperty,
    MetadefTag,
    Namespace,
    ResourceType,
    ResourceTypeAssociation,
    required_from_text,
    required_to_text,
)
from glimpse.exceptions import NotFound

_ns = models.metadef_namespaces
_rt = models.metadef_resource_types
_assoc = models.metadef_namespace_resource_types
_objects = models.metadef_objects
_properties = models.metadef_properties
_tags = models.metadef_tags

# Sort keys of namespace and tag lists; nullable columns sort as '' / false.
NAMESPACE_SORT_KEYS: Final = frozenset({"namespace", "display_name", "description",
                                        "visibility", "protected", "owner", "created_at",
                                        "updated_at", "id"})
TAG_SORT_KEYS: Final = frozenset({"name", "created_at", "updated_at", "id"})


def _sortable(column: Any) -> Any:
    """A null-free, ordered expression of ``column`` (so keyset comparisons hold on
    both databases)."""
    if column.nullable:
        if isinstance(column.type, Boolean):     # as 0/1: keyset comparisons need an order
            return func.coalesce(cast(column, Integer), 0)
        if isinstance(column.type, DateTime):
            return func.coalesce(column, datetime(1970, 1, 1))
        return func.coalesce(column, "")
    return column


def _page(stmt: Any, table: Any, session: Connection, *, sort_key: str, sort_dir: str,
          limit: int | None, marker_id: int | None) -> Any:
    """``stmt`` ordered by ``sort_key, created_at, id`` in ``sort_dir``, starting
    after the row ``marker_id`` (which must exist), at most ``limit`` rows."""
    names = [sort_key] + [k for k in ("created_at", "id") if k != sort_key]
    keys = [_sortable(table.c[name]) for name in names]
    descending = sort_dir == "desc"
    if marker_id is not None:
        mark = session.execute(select(*keys).where(table.c.id == marker_id)).first()
        if mark is None:        # deleted since the caller found it (PostgreSQL)
            raise NotFound("The marker was deleted while the list was read.")
        stmt = stmt.where(rows_after(keys, list(mark), descending=descending))
    stmt = stmt.order_by(*[k.desc() if descending else k.asc() for k in keys])
    return stmt.limit(limit) if limit is not None else stmt


# --- namespaces ---------------------------------------------------------------------------

def _to_namespace(row: Any) -> Namespace:
    return Namespace(id=row.id, namespace=row.namespace, display_name=row.display_name,
                     description=row.description, visibility=row.visibility or "private",
                     protected=bool(row.protected), owner=row.owner,
                     created_at=row.created_at, updated_at=row.updated_at)


def _namespace_values(ns: Namespace) -> dict[str, Any]:
    return {"namespace": ns.namespace, "display_name": ns.display_name,
            "description": ns.description, "visibility": ns.visibility,
            "protected": ns.protected, "owner": ns.owner, "created_at": ns.created_at,
            "updated_at": ns.updated_at}


def add_namespace(session: Connection, ns: Namespace) -> int:
    """Insert ``ns``; sets and returns its ``id``."""
    result = session.execute(insert(_ns).values(**_namespace_values(ns)))
    key = result.inserted_primary_key
    assert key is not None
    ns.id = int(key[0])
    return ns.id


def get_namespace(session: Connection, name: str, *, for_update: bool = False,
                  ) -> Namespace | None:
    """The namespace named ``name`` (exact match), whoever owns it."""
    stmt = select(_ns).where(_ns.c.namespace == name)
    if for_update and session.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.execute(stmt).first()
    return None if row is None else _to_namespace(row)


def update_namespace(session: Connection, ns: Namespace) -> None:
    values = _namespace_values(ns)
    del values["created_at"]
    session.execute(update(_ns).where(_ns.c.id == ns.id).values(**values))


def delete_namespace(session: Connection, namespace_id: int) -> None:
    """Delete the namespace and, by cascade, everything in it."""
    session.execute(delete(_ns).where(_ns.c.id == namespace_id))


def list_namespaces(session: Connection, *, project_id: str | None, all_projects: bool,
                    visibility: str | None = None, resource_types: Sequence[str] | None = None,
                    sort_key: str = "created_at", sort_dir: str = "desc",
                    limit: int | None = None, marker_id: int | None = None,
                    ) -> list[Namespace]:
    """One page of the namespaces the caller may see: all (``all_projects``),
    else the public ones and ``project_id``'s. ``resource_types`` (not None):
    only namespaces associated with one of them. ``sort_key`` must be one of
    NAMESPACE_SORT_KEYS (the caller checks)."""
    stmt = select(_ns)
    if not all_projects:
        stmt = stmt.where(or_(_ns.c.visibility == PUBLIC, _ns.c.owner == project_id)
                          if project_id is not None else _ns.c.visibility == PUBLIC)
    if visibility is not None:
        stmt = stmt.where(_ns.c.visibility == visibility)
    if resource_types is not None:
        associated = (select(_assoc.c.namespace_id)
                      .join(_rt, _rt.c.id == _assoc.c.resource_type_id)
                      .where(_rt.c.name.in_(list(resource_types))))
        stmt = stmt.where(_ns.c.id.in_(associated))
    stmt = _page(stmt, _ns, session, sort_key=sort_key, sort_dir=sort_dir, limit=limit,
                 marker_id=marker_id)
    return [_to_namespace(row) for row in session.execute(stmt)]


# --- resource types and associations ------------------------------------------------------

def list_resource_types(session: Connection) -> list[ResourceType]:
    stmt = select(_rt).order_by(_rt.c.id)
    return [ResourceType(name=r.name, created_at=r.created_at, updated_at=r.updated_at)
            for r in session.execute(stmt)]


def resource_type_id(session: Connection, name: str) -> int | None:
    return session.execute(select(_rt.c.id).where(_rt.c.name == name)).scalar()


def ensure_resource_type(session: Connection, name: str, now: datetime) -> int:
    """The id of resource type ``name``, inserted unless it exists. Resource types
    are shared by every namespace: a concurrent transaction inserting the same
    name makes this one wait for it, then use its row (``ON CONFLICT DO
    NOTHING``), never fail on the unique name."""
    values = {"name": name, "protected": False, "created_at": now, "updated_at": now}
    # imported here: a SQLite process never loads the PostgreSQL dialect
    stmt: Any
    if session.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql
        stmt = postgresql.insert(_rt).values(**values).on_conflict_do_nothing(
            index_elements=["name"])
    else:
        from sqlalchemy.dialects import sqlite
        stmt = sqlite.insert(_rt).values(**values).on_conflict_do_nothing(
            index_elements=["name"])
    session.execute(stmt)
    type_id = resource_type_id(session, name)
    assert type_id is not None      # inserted, or committed by the other transaction
    return type_id


def list_associations(session: Connection, namespace_ids: Iterable[int],
                      ) -> dict[int, list[ResourceTypeAssociation]]:
    """Resource type associations of each namespace (in creation order)."""
    ids = list(namespace_ids)
    found: dict[int, list[ResourceTypeAssociation]] = {i: [] for i in ids}
    if not ids:
        return found
    stmt = (select(_assoc, _rt.c.name).join(_rt, _rt.c.id == _assoc.c.resource_type_id)
            .where(_assoc.c.namespace_id.in_(ids))
            .order_by(_assoc.c.created_at, _assoc.c.resource_type_id))
    for row in session.execute(stmt):
        found[row.namespace_id].append(ResourceTypeAssociation(
            name=row.name, prefix=row.prefix, properties_target=row.properties_target,
            created_at=row.created_at, updated_at=row.updated_at))
    return found


def add_association(session: Connection, namespace_id: int, type_id: int,
                    association: ResourceTypeAssociation) -> None:
    session.execute(insert(_assoc).values(
        namespace_id=namespace_id, resource_type_id=type_id, prefix=association.prefix,
        properties_target=association.properties_target, created_at=association.created_at,
        updated_at=association.updated_at))


def delete_association(session: Connection, namespace_id: int, type_id: int) -> bool:
    """Remove one association; False when there was none."""
    result = session.execute(delete(_assoc).where(_assoc.c.namespace_id == namespace_id,
                                                  _assoc.c.resource_type_id == type_id))
    return bool(getattr(result, "rowcount", 0))


# --- objects ------------------------------------------------------------------------------

def _to_object(row: Any) -> MetadefObject:
    return MetadefObject(name=row.name, description=row.description,
                         required=required_from_text(row.required),
                         properties=json.loads(row.json_schema or "{}"),
                         created_at=row.created_at, updated_at=row.updated_at)


def _object_values(obj: MetadefObject) -> dict[str, Any]:
    return {"name": obj.name, "description": obj.description,
            "required": required_to_text(obj.required),
            "json_schema": json.dumps(obj.properties or {}), "updated_at": obj.updated_at}


def list_objects(session: Connection, namespace_id: int) -> list[MetadefObject]:
    stmt = select(_objects).where(_objects.c.namespace_id == namespace_id).order_by(
        _objects.c.name)
    return [_to_object(row) for row in session.execute(stmt)]


def get_object(session: Connection, namespace_id: int, name: str) -> MetadefObject | None:
    row = session.execute(select(_objects).where(_objects.c.namespace_id == namespace_id,
                                                 _objects.c.name == name)).first()
    return None if row is None else _to_object(row)


def add_object(session: Connection, namespace_id: int, obj: MetadefObject) -> None:
    session.execute(insert(_objects).values(namespace_id=namespace_id,
                                            created_at=obj.created_at, **_object_values(obj)))


def update_object(session: Connection, namespace_id: int, old_name: str,
                  obj: MetadefObject) -> None:
    """Replace the object ``old_name`` with ``obj`` (which may carry a new name)."""
    session.execute(update(_objects).where(_objects.c.namespace_id == namespace_id,
                                           _objects.c.name == old_name)
                    .values(**_object_values(obj)))


# --- properties ---------------------------------------------------------------------------

def _to_property(row: Any) -> MetadefProperty:
    return MetadefProperty(name=row.name, schema=json.loads(row.json_schema),
                           created_at=row.created_at, updated_at=row.updated_at)


def list_properties(session: Connection, namespace_id: int) -> list[MetadefProperty]:
    stmt = select(_properties).where(_properties.c.namespace_id == namespace_id).order_by(
        _properties.c.name)
    return [_to_property(row) for row in session.execute(stmt)]


def get_property(session: Connection, namespace_id: int, name: str) -> MetadefProperty | None:
    row = session.execute(select(_properties).where(_properties.c.namespace_id == namespace_id,
                                                    _properties.c.name == name)).first()
    return None if row is None else _to_property(row)


def add_property(session: Connection, namespace_id: int, prop: MetadefProperty) -> None:
    session.execute(insert(_properties).values(
        namespace_id=namespace_id, name=prop.name, json_schema=json.dumps(prop.schema),
        created_at=prop.created_at, updated_at=prop.updated_at))


def update_property(session: Connection, namespace_id: int, old_name: str,
                    prop: MetadefProperty) -> None:
    session.execute(update(_properties).where(_properties.c.namespace_id == namespace_id,
                                              _properties.c.name == old_name)
                    .values(name=prop.name, json_schema=json.dumps(prop.schema),
                            updated_at=prop.updated_at))


# --- tags ---------------------------------------------------------------------------------

def _to_tag(row: Any) -> MetadefTag:
    return MetadefTag(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


def tag_id(session: Connection, namespace_id: int, name: str) -> int | None:
    return session.execute(select(_tags.c.id).where(_tags.c.namespace_id == namespace_id,
                                                    _tags.c.name == name)).scalar()


def get_tag(session: Connection, namespace_id: int, name: str) -> MetadefTag | None:
    row = session.execute(select(_tags).where(_tags.c.namespace_id == namespace_id,
                                              _tags.c.name == name)).first()
    return None if row is None else _to_tag(row)


def list_tags(session: Connection, namespace_id: int, *, sort_key: str = "created_at",
              sort_dir: str = "desc", limit: int | None = None,
              marker_id: int | None = None) -> list[MetadefTag]:
    """One page of the namespace's tags (``sort_key`` one of TAG_SORT_KEYS)."""
    stmt = _page(select(_tags).where(_tags.c.namespace_id == namespace_id), _tags, session,
                 sort_key=sort_key, sort_dir=sort_dir, limit=limit, marker_id=marker_id)
    return [_to_tag(row) for row in session.execute(stmt)]


def add_tags(session: Connection, namespace_id: int, tags: Sequence[MetadefTag]) -> None:
    """Insert tags in one statement, in order (their ids follow the order given)."""
    if tags:
        session.execute(insert(_tags), [
            {"namespace_id": namespace_id, "name": tag.name, "created_at": tag.created_at,
             "updated_at": tag.updated_at} for tag in tags])


def existing_tag_names(session: Connection, namespace_id: int,
                       names: Sequence[str]) -> set[str]:
    """Which of ``names`` the namespace has as tags (in chunks: any number of names)."""
    found: set[str] = set()
    for start in range(0, len(names), 500):
        chunk = list(names[start:start + 500])
        found.update(session.execute(select(_tags.c.name).where(
            _tags.c.namespace_id == namespace_id, _tags.c.name.in_(chunk))).scalars())
    return found


def rename_tag(session: Connection, namespace_id: int, old_name: str, tag: MetadefTag) -> None:
    session.execute(update(_tags).where(_tags.c.namespace_id == namespace_id,
                                        _tags.c.name == old_name)
                    .values(name=tag.name, updated_at=tag.updated_at))


# --- deleting what a namespace holds --------------------------------------------------------

_CONTENT: Final = {"objects": _objects, "properties": _properties, "tags": _tags}


def delete_named(session: Connection, kind: str, namespace_id: int, name: str) -> bool:
    """Delete one object, property or tag (``kind``); False when there was none."""
    table = _CONTENT[kind]
    result = session.execute(delete(table).where(table.c.namespace_id == namespace_id,
                                                 table.c.name == name))
    return bool(getattr(result, "rowcount", 0))


def delete_all(session: Connection, kind: str, namespace_id: int) -> int:
    """Delete every object, property or tag (``kind``) of the namespace; how many."""
    table = _CONTENT[kind]
    result = session.execute(delete(table).where(table.c.namespace_id == namespace_id))
    return int(getattr(result, "rowcount", 0) or 0)
