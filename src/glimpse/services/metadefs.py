"""Metadata definition namespaces, and the lookups and policy checks every metadef service uses.

Each operation is one function and one transaction: it looks the namespace up,
checks Glance's metadef policy rules (:func:`enforce`), changes what it must
and returns domain objects; nothing is half-written (a failure rolls the whole
transaction back, e.g. a namespace created with a duplicate nested object).

Visibility: a private namespace is seen only by its owner's project and by
admins; a namespace the caller may not see is NotFound, never Forbidden.
Writes are admin-only by default (``metadef_admin``); readers of any project
may read public namespaces. A protected namespace, and what it holds, cannot be
deleted (Forbidden) until an update clears ``protected``.

Notifications: Glance emits ``metadef_namespace.*``, ``metadef_object.*``,
``metadef_property.*``, ``metadef_tag.*`` and ``metadef_resource_type.*``
events, but Glimpse's notification contract (NOTIFICATIONS.md) does not list
them, so no metadef operation records any notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.db import metadefs_repo as repo
from glimpse.db.engine import utcnow
from glimpse.domain import metadef
from glimpse.domain.metadef import (
    MetadefObject,
    MetadefTag,
    Namespace,
    ResourceTypeAssociation,
)
from glimpse.exceptions import Duplicate, Forbidden, Invalid, NotFound
from glimpse.runtime import Runtime

GET_NAMESPACE: Final = "get_metadef_namespace"


@dataclass
class NamespaceDetail:
    """A namespace with what it holds (only the parts asked for are filled)."""

    namespace: Namespace
    associations: list[ResourceTypeAssociation] = field(default_factory=list)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: list[MetadefObject] = field(default_factory=list)
    tags: list[MetadefTag] = field(default_factory=list)


@dataclass
class NamespacePage:
    namespaces: list[NamespaceDetail]
    next_marker: str | None


# --- policy and lookups (shared with services.metadef_contents) ---------------------------

def _target(ctx: RequestContext, ns: Namespace | None) -> dict[str, Any]:
    """Glance's MetadefAPIPolicy target: the namespace's owner and visibility, or
    the caller's project when there is no namespace."""
    if ns is not None:
        return {"project_id": ns.owner, "visibility": ns.visibility}
    return {"project_id": ctx.project_id} if ctx.project_id is not None else {}


def _active() -> policy.Policy:
    active = policy.installed()
    if active is None:
        raise RuntimeError("no policy installed")
    return active


def allowed(ctx: RequestContext, rule: str, ns: Namespace | None = None) -> bool:
    return _active().check(ctx, rule, _target(ctx, ns))


def enforce(ctx: RequestContext, *rules: str, ns: Namespace | None = None) -> None:
    """Check each rule on ``ns`` (or on the caller's project). A denial is
    Forbidden, or NotFound when the caller may not even see the target
    (``get_metadef_namespace``), as Glance hides what one cannot see."""
    for rule in rules:
        if allowed(ctx, rule, ns):
            continue
        if rule == GET_NAMESPACE or not allowed(ctx, GET_NAMESPACE, ns):
            raise NotFound("The resource could not be found.")
        raise Forbidden(f"You are not authorized to complete {rule} action.")


def visible(ctx: RequestContext, ns: Namespace) -> bool:
    return metadef.is_visible(ns, project_id=ctx.project_id, is_admin=ctx.is_admin)


def lookup(session: Connection, ctx: RequestContext, name: str, *rules: str,
           for_update: bool = False) -> Namespace:
    """The namespace ``name`` if the caller may see it ("Namespace X not found"
    otherwise, as Glance answers for what a namespace holds), after ``rules``."""
    ns = repo.get_namespace(session, name, for_update=for_update)
    if ns is None or not visible(ctx, ns):
        raise NotFound(f"Namespace {name} not found")
    enforce(ctx, *rules, ns=ns)
    return ns


def require_deletable(ns: Namespace) -> None:
    if ns.protected:
        raise Forbidden(f"Metadata definition namespace {ns.namespace} is protected and "
                        "cannot be deleted.")


def assert_namespace_id(ns: Namespace) -> int:
    if ns.id is None:  # pragma: no cover - namespaces read from the database have one
        raise RuntimeError("namespace without id")
    return ns.id


# --- namespaces ---------------------------------------------------------------------------

def _namespace_fields(ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
    """A namespace's own fields from a create or update body. Only an admin may
    name another project as the owner (whatever a relaxed policy lets through),
    as for images: Forbidden otherwise."""
    owner = body.get("owner") or ctx.project_id
    if owner is None:
        raise Invalid("Couldn't create metadata namespace: an owner is required when the "
                      "request has no project.")
    if owner != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"You are not permitted to create namespace owned by '{owner}'.")
    metadef.check_addressable("a namespace", body["namespace"])
    return {"namespace": body["namespace"], "display_name": body.get("display_name"),
            "description": body.get("description"),
            "visibility": body.get("visibility") or metadef.PRIVATE,
            "protected": bool(body.get("protected") or False), "owner": owner}


NAME_LENGTH: Final = 80


def _name(kind: str, item: dict[str, Any], key: str = "name", *,
          required: bool = True) -> Any:
    """``item[key]`` of a nested part of a create body (the namespace schema
    leaves these unbounded and optional; the columns are 80 characters and the
    names mandatory). Invalid otherwise."""
    value = item.get(key)
    if value is None:
        if required:
            raise Invalid(f"Invalid input for field/attribute {key} of {kind}. Value: 'None'. "
                          "Mandatory field missing.")
        return None
    if len(value) > NAME_LENGTH:
        raise Invalid(f"The {key} of {kind} '{value[:NAME_LENGTH]}...' is longer than "
                      f"{NAME_LENGTH} characters.")
    if key == "name":
        metadef.check_addressable(kind, value)
    return value


def create_namespace(runtime: Runtime, ctx: RequestContext,
                     body: dict[str, Any]) -> NamespaceDetail:
    """Create a namespace (a schema-valid body) with its optional
    ``resource_type_associations``, ``properties``, ``objects`` and ``tags``, all
    in one transaction. The detail returned echoes the nested parts as given
    (normalized). Raises Forbidden, Invalid, Duplicate (409)."""
    rules = ["add_metadef_namespace"]
    for key, rule in (("resource_type_associations", "add_metadef_resource_type_association"),
                      ("objects", "add_metadef_object"), ("properties", "add_metadef_property"),
                      ("tags", "add_metadef_tag")):
        if body.get(key):
            rules.append(rule)
    enforce(ctx, *rules)
    now = utcnow()
    ns = Namespace(**_namespace_fields(ctx, body), created_at=now, updated_at=now)
    properties = metadef.normalize_properties(body.get("properties"))
    for prop_name in properties:
        _name("a property", {"name": prop_name})
    objects = [object_from_body(o, now) for o in body.get("objects") or []]
    for obj in objects:
        _name("an object", {"name": obj.name})
    tags = [MetadefTag(name=_name("a tag", t), created_at=now, updated_at=now)
            for t in body.get("tags") or []]
    associations = [ResourceTypeAssociation(
        name=_name("a resource type association", a),
        prefix=_name("a resource type association", a, "prefix", required=False),
        properties_target=_name("a resource type association", a, "properties_target",
                                required=False),
        created_at=now, updated_at=now) for a in body.get("resource_type_associations") or []]
    with runtime.db.write() as session:
        if repo.get_namespace(session, ns.namespace) is not None:
            raise _duplicate_namespace(ns.namespace)
        try:
            ns_id = repo.add_namespace(session, ns)
        except IntegrityError:
            raise _duplicate_namespace(ns.namespace) from None
        for association in associations:
            associate(session, ns, association, now)
        for obj in objects:
            if repo.get_object(session, ns_id, obj.name) is not None:
                raise duplicate_object(obj.name, ns.namespace)
            repo.add_object(session, ns_id, obj)
        for tag in tags:
            if repo.tag_id(session, ns_id, tag.name) is not None:
                raise duplicate_tag(tag.name, ns.namespace)
            repo.add_tags(session, ns_id, [tag])
        for name, schema in properties.items():
            repo.add_property(session, ns_id, metadef.MetadefProperty(
                name=name, schema=schema, created_at=now, updated_at=now))
    return NamespaceDetail(namespace=ns, associations=associations, properties=properties,
                           objects=objects, tags=tags)


def object_from_body(body: dict[str, Any], now: Any) -> MetadefObject:
    """An object from a schema-valid body; ``required``/``properties`` stay None
    when not given (the create answer echoes only what was given)."""
    if body.get("name") is None:
        raise Invalid("Invalid input for field/attribute name of an object. Value: 'None'. "
                      "Mandatory field missing.")
    metadef.check_addressable("an object", body["name"])
    required = body.get("required")
    if required is not None and not all(isinstance(r, str) for r in required):
        raise Invalid("Invalid input for field/attribute required. Expected strings")
    properties = body.get("properties")
    return MetadefObject(
        name=body["name"], description=body.get("description"), required=required,
        properties=None if properties is None else metadef.normalize_properties(properties),
        created_at=now, updated_at=now)


def _duplicate_namespace(name: str) -> Duplicate:
    return Duplicate(f"The metadata definition namespace={name} already exists.")


def duplicate_object(name: str, namespace: str) -> Duplicate:
    return Duplicate(f"A metadata definition object with name={name} already exists in "
                     f"namespace={namespace}.")


def duplicate_tag(name: str, namespace: str) -> Duplicate:
    # Glance adds "(Please note that metadata tag names are case insensitive)",
    # true of its MySQL collation only; here, as on PostgreSQL, case counts
    return Duplicate(f"A metadata tag with name={name} already exists in namespace="
                     f"{namespace}.")


def list_namespaces(runtime: Runtime, ctx: RequestContext, *, limit: int,
                    marker: str | None = None, sort_key: str = "created_at",
                    sort_dir: str = "desc", visibility: str | None = None,
                    resource_types: Sequence[str] | None = None) -> NamespacePage:
    """One page of the namespaces the caller may see, each with its resource type
    associations; ``resource_types`` (not None): only those associated with one
    of them. An unknown (or invisible) marker is NotFound, as Glance."""
    if sort_key not in repo.NAMESPACE_SORT_KEYS:
        raise Invalid(f"Invalid sort key: {sort_key}")
    enforce(ctx, "get_metadef_namespaces", "list_metadef_resource_types")
    with runtime.db.read() as session:
        marker_id = None
        if marker is not None:
            mark = repo.get_namespace(session, marker)
            if mark is None or not visible(ctx, mark):
                raise NotFound(f"Metadata definition namespace={marker} was not found.")
            marker_id = mark.id
        found = repo.list_namespaces(
            session, project_id=ctx.project_id, all_projects=ctx.is_admin,
            visibility=visibility, resource_types=resource_types, sort_key=sort_key,
            sort_dir=sort_dir, limit=limit, marker_id=marker_id)
        shown = [ns for ns in found if allowed(ctx, GET_NAMESPACE, ns)]
        associations = repo.list_associations(session, [assert_namespace_id(ns) for ns in shown])
    page = [NamespaceDetail(namespace=ns, associations=associations[assert_namespace_id(ns)])
            for ns in shown]
    next_marker = shown[-1].namespace if shown and len(shown) == limit else None
    return NamespacePage(namespaces=page, next_marker=next_marker)


def get_namespace(runtime: Runtime, ctx: RequestContext, name: str,
                  resource_type: str | None = None) -> NamespaceDetail:
    """A namespace with everything it holds. With ``resource_type``, property
    names (the namespace's and its objects', and objects' ``required``) carry the
    prefix of that resource type's association, as Glance shows them."""
    with runtime.db.read() as session:
        ns = repo.get_namespace(session, name)
        if ns is None or not visible(ctx, ns):    # one answer: existence is not told
            raise NotFound(f"Metadata definition namespace={name} was not found.")
        enforce(ctx, GET_NAMESPACE, "list_metadef_resource_types", "get_metadef_objects",
                "get_metadef_properties", "get_metadef_tags", ns=ns)
        ns_id = assert_namespace_id(ns)
        associations = repo.list_associations(session, [ns_id])[ns_id]
        properties = {p.name: p.schema for p in repo.list_properties(session, ns_id)}
        objects = repo.list_objects(session, ns_id)
        tags = repo.list_tags(session, ns_id)
    prefix = metadef.prefix_for(associations, resource_type) if resource_type else None
    return NamespaceDetail(namespace=ns, associations=associations,
                           properties=metadef.prefixed_properties(properties, prefix),
                           objects=[metadef.prefixed_object(o, prefix) for o in objects],
                           tags=tags)


def update_namespace(runtime: Runtime, ctx: RequestContext, name: str,
                     body: dict[str, Any]) -> Namespace:
    """Replace a namespace's own fields (a schema-valid body; what it leaves out
    takes its create default: private, unprotected, the caller's project).
    Raises NotFound, Forbidden, Duplicate (renamed onto another namespace)."""
    with runtime.db.write() as session:
        ns = lookup(session, ctx, name, "modify_metadef_namespace", for_update=True)
        fields = _namespace_fields(ctx, body)
        renamed = fields["namespace"] != ns.namespace
        for key, value in fields.items():
            setattr(ns, key, value)
        ns.updated_at = utcnow()
        if renamed and repo.get_namespace(session, ns.namespace) is not None:
            raise _duplicate_rename(ns.namespace)
        try:
            repo.update_namespace(session, ns)
        except IntegrityError:
            raise _duplicate_rename(ns.namespace) from None
        return ns


def _duplicate_rename(name: str) -> Duplicate:
    return Duplicate("Invalid update. It would result in a duplicate metadata definition "
                     f"namespace with the same name of {name}")


def delete_namespace(runtime: Runtime, ctx: RequestContext, name: str) -> None:
    """Delete a namespace and everything in it. Raises NotFound, Forbidden
    (policy, or the namespace is protected)."""
    with runtime.db.write() as session:
        ns = lookup(session, ctx, name, "delete_metadef_namespace", for_update=True)
        require_deletable(ns)
        repo.delete_namespace(session, assert_namespace_id(ns))


def delete_namespace_content(runtime: Runtime, ctx: RequestContext, name: str,
                             kind: str) -> None:
    """Delete all ``kind`` ("objects", "properties" or "tags") of a namespace.
    Glance asks for the right to delete the namespace itself (and, for tags,
    ``delete_metadef_tags``), and refuses it on a protected namespace."""
    rules = ["delete_metadef_namespace"] + (["delete_metadef_tags"] if kind == "tags" else [])
    with runtime.db.write() as session:
        ns = lookup(session, ctx, name, *rules, for_update=True)
        require_deletable(ns)
        repo.delete_all(session, kind, assert_namespace_id(ns))


# --- resource type associations (the routes' services: services.metadef_resource_types) --

def associate(session: Connection, ns: Namespace, association: ResourceTypeAssociation,
               now: Any) -> None:
    """Associate ``association.name`` (created if new, by whichever of two
    concurrent requests comes first) with ``ns``; Duplicate when it already is."""
    metadef.check_addressable("a resource type", association.name)
    ns_id = assert_namespace_id(ns)
    type_id = repo.resource_type_id(session, association.name)
    if type_id is None:
        type_id = repo.ensure_resource_type(session, association.name, now)
    elif association.name in {a.name for a in repo.list_associations(session, [ns_id])[ns_id]}:
        raise _duplicate_association(association.name, ns.namespace)
    try:
        repo.add_association(session, ns_id, type_id, association)
    except IntegrityError:
        raise _duplicate_association(association.name, ns.namespace) from None


def _duplicate_association(type_name: str, namespace: str) -> Duplicate:
    return Duplicate(f"The metadata definition resource-type association of resource-type="
                     f"{type_name} to namespace={namespace} already exists.")


def association_prefix(session: Connection, ns: Namespace, type_name: str) -> str | None:
    """The prefix of ``ns``'s association with ``type_name``; NotFound (Glance's
    texts) when the resource type or the association does not exist."""
    if repo.resource_type_id(session, type_name) is None:
        raise NotFound(f"The metadata definition resource-type with name={type_name}, was "
                       "not found.")
    ns_id = assert_namespace_id(ns)
    for association in repo.list_associations(session, [ns_id])[ns_id]:
        if association.name == type_name:
            return association.prefix
    raise NotFound(f"The metadata definition resource-type association of resource-type="
                   f"{type_name} to namespace={ns.namespace}, was not found.")
