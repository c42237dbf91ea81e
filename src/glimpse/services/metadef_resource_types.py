"""Metadata definition resource types and a namespace's associations with them.

One transaction each, with Glance's rules and texts (see
:mod:`glimpse.services.metadefs`): a resource type is created by the first
association that names it; an association is removed only from a namespace
that is not protected. No notification is recorded.
"""

from __future__ import annotations

from typing import Any

from glimpse.auth.context import RequestContext
from glimpse.db import metadefs_repo as repo
from glimpse.db.engine import utcnow
from glimpse.domain.metadef import ResourceType, ResourceTypeAssociation
from glimpse.exceptions import Forbidden, NotFound
from glimpse.runtime import Runtime
from glimpse.services.metadefs import assert_namespace_id, associate, enforce, lookup


def list_resource_types(runtime: Runtime, ctx: RequestContext) -> list[ResourceType]:
    """Every resource type known (created by the associations made so far)."""
    enforce(ctx, "list_metadef_resource_types")
    with runtime.db.read() as session:
        return repo.list_resource_types(session)


def list_associations(runtime: Runtime, ctx: RequestContext,
                      name: str) -> list[ResourceTypeAssociation]:
    with runtime.db.read() as session:
        ns = lookup(session, ctx, name, "list_metadef_resource_types")
        ns_id = assert_namespace_id(ns)
        return repo.list_associations(session, [ns_id])[ns_id]


def create_association(runtime: Runtime, ctx: RequestContext, name: str,
                       body: dict[str, Any]) -> ResourceTypeAssociation:
    """Associate a resource type (a schema-valid body: ``name``, optional
    ``prefix`` and ``properties_target``) with a namespace."""
    now = utcnow()
    association = ResourceTypeAssociation(
        name=body["name"], prefix=body.get("prefix"),
        properties_target=body.get("properties_target"), created_at=now, updated_at=now)
    with runtime.db.write() as session:
        ns = lookup(session, ctx, name, "add_metadef_resource_type_association",
                    for_update=True)
        associate(session, ns, association, now)
    return association


def delete_association(runtime: Runtime, ctx: RequestContext, name: str,
                       type_name: str) -> None:
    """Remove a resource type association (not from a protected namespace)."""
    with runtime.db.write() as session:
        ns = lookup(session, ctx, name, "remove_metadef_resource_type_association",
                    for_update=True)
        type_id = repo.resource_type_id(session, type_name)
        ns_id = assert_namespace_id(ns)
        if type_id is None or type_name not in {
                a.name for a in repo.list_associations(session, [ns_id])[ns_id]}:
            raise NotFound(f"Failed to find resource type {type_name} to delete")
        if ns.protected:
            raise Forbidden(f"Metadata definition resource-type-association {type_name} is "
                            "protected and cannot be deleted.")
        repo.delete_association(session, ns_id, type_id)
