"""What a metadata definition namespace holds: objects, property definitions, tags.

Each function is one transaction: the namespace is looked up (a namespace the
caller may not see answers "Namespace X not found"), Glance's metadef policy
rule is checked on it, then the change is made. Bodies arrive schema-valid
(the API checks them against Glance's JSON Schemas); property definitions are
normalized here as Glance normalizes them (:mod:`glimpse.domain.metadef`).
Nothing in a protected namespace can be deleted (Forbidden). Duplicated names
are Duplicate (409). No notification is recorded (see
:mod:`glimpse.services.metadefs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from glimpse.auth.context import RequestContext
from glimpse.db import metadefs_repo as repo
from glimpse.db.engine import utcnow
from glimpse.domain import metadef
from glimpse.domain.metadef import MetadefObject, MetadefProperty, MetadefTag
from glimpse.exceptions import Duplicate, Forbidden, Invalid, NotFound
from glimpse.runtime import Runtime
from glimpse.services.metadefs import (
    NAME_LENGTH,
    assert_namespace_id,
    association_prefix,
    duplicate_object,
    duplicate_tag,
    enforce,
    lookup,
    object_from_body,
)

# --- objects ------------------------------------------------------------------------------


def _write_unique(taken: bool, duplicate: Duplicate, write: Callable[[], object]) -> None:
    """Raise ``duplicate`` when the row's name is already ``taken`` in its namespace,
    else ``write()`` it; a writer that took the name meanwhile (the unique
    constraint's IntegrityError) gets the same ``duplicate``."""
    if taken:
        raise duplicate
    try:
        write()
    except IntegrityError:
        raise duplicate from None


def _no_object(name: str) -> NotFound:
    return NotFound(f"Could not find metadata object {name}")


def list_objects(runtime: Runtime, ctx: RequestContext, namespace: str) -> list[MetadefObject]:
    """Every object of the namespace, by name (Glance does not page them)."""
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_objects")
        return repo.list_objects(session, assert_namespace_id(ns))


def get_object(runtime: Runtime, ctx: RequestContext, namespace: str,
               name: str) -> MetadefObject:
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_object")
        found = repo.get_object(session, assert_namespace_id(ns), name)
        if found is None:
            raise _no_object(name)
        return found


def create_object(runtime: Runtime, ctx: RequestContext, namespace: str,
                  body: dict[str, Any]) -> MetadefObject:
    """Add an object (a schema-valid body). Raises NotFound, Forbidden, Invalid,
    Duplicate."""
    obj = object_from_body(body, utcnow())
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "add_metadef_object", for_update=True)
        ns_id = assert_namespace_id(ns)
        _write_unique(repo.get_object(session, ns_id, obj.name) is not None,
                      duplicate_object(obj.name, ns.namespace),
                      lambda: repo.add_object(session, ns_id, obj))
    return obj


def update_object(runtime: Runtime, ctx: RequestContext, namespace: str, name: str,
                  body: dict[str, Any]) -> MetadefObject:
    """Replace the object ``name`` with the body (which may rename it); what the
    body leaves out is cleared. Raises NotFound, Forbidden, Invalid, Duplicate."""
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "modify_metadef_object", for_update=True)
        ns_id = assert_namespace_id(ns)
        old = repo.get_object(session, ns_id, name)
        if old is None:
            raise _no_object(name)
        obj = object_from_body(body, utcnow())
        obj.created_at = old.created_at
        _write_unique(
            obj.name != name and repo.get_object(session, ns_id, obj.name) is not None,
            Duplicate("Invalid update. It would result in a duplicate metadata definition "
                      f"object with the same name={obj.name} in namespace={ns.namespace}."),
            lambda: repo.update_object(session, ns_id, name, obj))
        return obj


def delete_object(runtime: Runtime, ctx: RequestContext, namespace: str, name: str) -> None:
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "delete_metadef_object", for_update=True)
        ns_id = assert_namespace_id(ns)
        if repo.get_object(session, ns_id, name) is None:
            raise _no_object(name)
        if ns.protected:
            raise Forbidden(f"Metadata definition object {name} is protected and cannot be "
                            "deleted.")
        repo.delete_named(session, "objects", ns_id, name)


# --- properties ---------------------------------------------------------------------------

def _no_property(name: str) -> NotFound:
    return NotFound(f"Could not find property {name}")


def list_properties(runtime: Runtime, ctx: RequestContext,
                    namespace: str) -> dict[str, dict[str, Any]]:
    """``{name: definition}`` of the namespace's properties, by name."""
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_properties")
        return {p.name: p.schema for p in repo.list_properties(session, assert_namespace_id(ns))}


def get_property(runtime: Runtime, ctx: RequestContext, namespace: str, name: str,
                 resource_type: str | None = None) -> MetadefProperty:
    """One property. With ``resource_type``, ``name`` is the prefixed name the
    namespace's association with that resource type gives it (NotFound when
    it does not carry that prefix, or there is no such association)."""
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_property")
        if resource_type:
            enforce(ctx, "get_metadef_resource_type", ns=ns)
            prefix = association_prefix(session, ns, resource_type)
            unprefixed = metadef.unprefixed_name(name, prefix)
            if unprefixed is None:
                raise NotFound(f"Property {name} does not start with the expected resource "
                               f"type association prefix of '{prefix}'.")
            name = unprefixed
        found = repo.get_property(session, assert_namespace_id(ns), name)
        if found is None:
            raise _no_property(name)
        return found


def create_property(runtime: Runtime, ctx: RequestContext, namespace: str,
                    body: dict[str, Any]) -> MetadefProperty:
    """Add a property definition (a schema-valid body with its ``name``)."""
    now = utcnow()
    metadef.check_addressable("a property", body["name"])
    prop = MetadefProperty(name=body["name"], schema=metadef.normalize_property(body),
                           created_at=now, updated_at=now)
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "add_metadef_property", for_update=True)
        ns_id = assert_namespace_id(ns)
        _write_unique(repo.get_property(session, ns_id, prop.name) is not None,
                      Duplicate(f"A metadata definition property with name={prop.name} "
                                f"already exists in namespace={ns.namespace}."),
                      lambda: repo.add_property(session, ns_id, prop))
    return prop


def update_property(runtime: Runtime, ctx: RequestContext, namespace: str, name: str,
                    body: dict[str, Any]) -> MetadefProperty:
    """Replace the property ``name`` with the body's definition (may rename it)."""
    now = utcnow()
    metadef.check_addressable("a property", body["name"])
    prop = MetadefProperty(name=body["name"], schema=metadef.normalize_property(body),
                           updated_at=now)
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "modify_metadef_property", for_update=True)
        ns_id = assert_namespace_id(ns)
        old = repo.get_property(session, ns_id, name)
        if old is None:
            raise _no_property(name)
        prop.created_at = old.created_at
        _write_unique(
            prop.name != name and repo.get_property(session, ns_id, prop.name) is not None,
            Duplicate("Invalid update. It would result in a duplicate metadata definition "
                      f"property with the same name={prop.name} in "
                      f"namespace={ns.namespace}."),
            lambda: repo.update_property(session, ns_id, name, prop))
    return prop


def delete_property(runtime: Runtime, ctx: RequestContext, namespace: str, name: str) -> None:
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "remove_metadef_property", for_update=True)
        ns_id = assert_namespace_id(ns)
        if repo.get_property(session, ns_id, name) is None:
            raise _no_property(name)
        if ns.protected:
            raise Forbidden(f"Metadata definition property {name} is protected and cannot "
                            "be deleted.")
        repo.delete_named(session, "properties", ns_id, name)


# --- tags ---------------------------------------------------------------------------------

def _no_tag(name: str) -> NotFound:
    return NotFound(f"Could not find metadata tag {name}")


def list_tags(runtime: Runtime, ctx: RequestContext, namespace: str, *,
              sort_key: str = "created_at", sort_dir: str = "desc", limit: int | None = None,
              marker: str | None = None) -> list[MetadefTag]:
    """One page of the namespace's tags; ``marker`` is a tag name (NotFound when
    there is no such tag)."""
    if sort_key not in repo.TAG_SORT_KEYS:
        raise Invalid(f"Invalid sort key: {sort_key}")
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_tags")
        ns_id = assert_namespace_id(ns)
        marker_id = None
        if marker is not None:
            marker_id = repo.tag_id(session, ns_id, marker)
            if marker_id is None:
                raise _no_tag(marker)
        return repo.list_tags(session, ns_id, sort_key=sort_key, sort_dir=sort_dir,
                              limit=limit, marker_id=marker_id)


def get_tag(runtime: Runtime, ctx: RequestContext, namespace: str, name: str) -> MetadefTag:
    with runtime.db.read() as session:
        ns = lookup(session, ctx, namespace, "get_metadef_tag")
        found = repo.get_tag(session, assert_namespace_id(ns), name)
        if found is None:
            raise _no_tag(name)
        return found


def create_tag(runtime: Runtime, ctx: RequestContext, namespace: str, name: str) -> MetadefTag:
    metadef.check_addressable("a tag", name)
    now = utcnow()
    tag = MetadefTag(name=name, created_at=now, updated_at=now)
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "add_metadef_tag", for_update=True)
        ns_id = assert_namespace_id(ns)
        _write_unique(repo.tag_id(session, ns_id, name) is not None,
                      duplicate_tag(name, ns.namespace),
                      lambda: repo.add_tags(session, ns_id, [tag]))
    return tag


def create_tags(runtime: Runtime, ctx: RequestContext, namespace: str, names: list[str], *,
                append: bool) -> list[MetadefTag]:
    """Add several tags at once. Without ``append`` they replace the namespace's
    tags (an empty list changes nothing, as Glance); a name given twice, or
    already there when appending, is Duplicate and nothing changes."""
    now = utcnow()
    for name in names:      # the list schema leaves them unbounded; the column is not
        if len(name) > NAME_LENGTH:
            raise Invalid(f"The name of a tag '{name[:NAME_LENGTH]}...' is longer than "
                          f"{NAME_LENGTH} characters.")
        metadef.check_addressable("a tag", name)
    tags = [MetadefTag(name=name, created_at=now, updated_at=now) for name in names]
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "add_metadef_tags", for_update=True)
        if not tags:
            return []
        ns_id = assert_namespace_id(ns)
        if not append:
            repo.delete_all(session, "tags", ns_id)
        there = repo.existing_tag_names(session, ns_id, names) if append else set()
        seen: set[str] = set()
        for tag in tags:
            if tag.name in seen or tag.name in there:
                raise duplicate_tag(tag.name, ns.namespace)
            seen.add(tag.name)
        try:
            repo.add_tags(session, ns_id, tags)
        except IntegrityError:
            raise Duplicate(f"A metadata tag in namespace={ns.namespace} already "
                            "exists.") from None
    return tags


def update_tag(runtime: Runtime, ctx: RequestContext, namespace: str, name: str,
               new_name: str) -> MetadefTag:
    metadef.check_addressable("a tag", new_name)
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "modify_metadef_tag", for_update=True)
        ns_id = assert_namespace_id(ns)
        tag = repo.get_tag(session, ns_id, name)
        if tag is None:
            raise _no_tag(name)
        taken = new_name != name and repo.tag_id(session, ns_id, new_name) is not None
        tag.name, tag.updated_at = new_name, utcnow()
        _write_unique(taken, duplicate_tag(new_name, ns.namespace),
                      lambda: repo.rename_tag(session, ns_id, name, tag))
        return tag


def delete_tag(runtime: Runtime, ctx: RequestContext, namespace: str, name: str) -> None:
    with runtime.db.write() as session:
        ns = lookup(session, ctx, namespace, "delete_metadef_tag", for_update=True)
        ns_id = assert_namespace_id(ns)
        if repo.tag_id(session, ns_id, name) is None:
            raise _no_tag(name)
        if ns.protected:
            raise Forbidden(f"Metadata definition tag {name} is protected and cannot be "
                            "deleted.")
        repo.delete_named(session, "tags", ns_id, name)
