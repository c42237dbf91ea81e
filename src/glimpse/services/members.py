"""Image members (sharing an image with other projects), with Glance's rules.

Only ``shared`` images have members. The owner (or an admin) adds and removes
members; only the member project itself (or an admin) changes its status
(pending/accepted/rejected). The owner sees every member; a member sees only
its own membership. An image the caller may not see is NotFound. Each change
records ``image.member.create/update/delete`` in its transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.db.engine import utcnow
from glimpse.domain.image import Image
from glimpse.domain.member import MEMBER_STATUSES, PENDING, Member
from glimpse.exceptions import Duplicate, Forbidden, Invalid, NotFound, QuotaExceeded
from glimpse.notifications import catalogue, payloads
from glimpse.runtime import Runtime
from glimpse.services import access


def member_id_from_body(body: Any) -> str:
    """The ``member`` of a create body ``{"member": "<project>"}``; Invalid otherwise."""
    if not isinstance(body, dict):
        raise Invalid('Expected a member in the form: {"member": "image_id"}')
    if "member" not in body:
        raise Invalid("Member to be added not specified")
    member = body["member"]
    if not member:
        raise Invalid("Member can't be empty")
    if not isinstance(member, str):
        raise Invalid("Member must be a string (a project id)")
    if len(member) > 255:
        raise Invalid("Member is too long: a project id has at most 255 characters")
    return member


def status_from_body(body: Any) -> Any:
    """The ``status`` of an update body ``{"status": "..."}``; Invalid otherwise."""
    if not isinstance(body, dict):
        raise Invalid('Expected a status in the form: {"status": "status"}')
    if "status" not in body:
        raise Invalid("Status not specified")
    return body["status"]


def _lookup_image(session: Connection, ctx: RequestContext, image_id: str, *,
                  for_update: bool = False) -> Image:
    """The image, if the caller may see it (get_image); NotFound otherwise --
    before any member rule, so a caller without access learns nothing."""
    try:
        image = access.get_visible_image(session, ctx, image_id, for_update=for_update)
        access.authorize(ctx, access.GET_IMAGE, image)
    except (NotFound, Forbidden):
        raise NotFound(f"Image {image_id} not found.") from None
    return image


def _may_see_member(ctx: RequestContext, image: Image, member_id: str) -> bool:
    return ctx.is_admin or ctx.owns(image.owner) or member_id == ctx.project_id


def _lookup_member(session: Connection, ctx: RequestContext, image: Image,
                   member_id: str) -> Member:
    access.authorize(ctx, access.GET_MEMBER, image)
    member = images_repo.get_member(session, image.id, member_id)
    if member is None or not _may_see_member(ctx, image, member_id):
        raise NotFound(f"{member_id} not found in the member list of the image {image.id}.")
    return member


def create_member(runtime: Runtime, ctx: RequestContext, image_id: str,
                  member_id: str) -> Member:
    """Share the image with ``member_id`` (status pending); records image.member.create.

    Raises NotFound, Forbidden (not shared, not the owner), Duplicate (409),
    QuotaExceeded (413, ``image_member_quota``).
    """
    with runtime.db.write() as session:
        image = _lookup_image(session, ctx, image_id, for_update=True)
        if image.visibility != "shared":
            raise Forbidden(f"Not allowed to create members for image {image_id}.")
        access.authorize(ctx, access.ADD_MEMBER, image)
        if images_repo.get_member(session, image_id, member_id) is not None:
            raise Duplicate(f"Member {member_id} is duplicated for image {image_id}")
        maximum = runtime.conf.image_member_quota
        attempted = images_repo.count_members(session, image_id) + 1
        if maximum >= 0 and attempted > maximum:
            raise QuotaExceeded(
                f"Image member limit exceeded for image {image_id}: The limit has been "
                "exceeded on the number of allowed image members for this image. "
                f"Attempted: {attempted}, Maximum: {maximum}:")
        now = utcnow()
        member = Member(image_id=image_id, member_id=member_id, status=PENDING,
                        created_at=now, updated_at=now)
        try:
            images_repo.add_member(session, member)
        except IntegrityError:  # a concurrent add of the same member won the race
            raise Duplicate(f"Member {member_id} is duplicated for image {image_id}") from None
        runtime.notifier.record(session, catalogue.MEMBER_CREATE,
                                lambda: payloads.member(member))
        return member


def list_members(runtime: Runtime, ctx: RequestContext, image_id: str) -> list[Member]:
    """Members the caller may see: all for the owner/admin, else only its own."""
    with runtime.db.read() as session:
        image = _lookup_image(session, ctx, image_id)
        if image.visibility != "shared":
            raise Forbidden(f"Not allowed to list members for image {image_id}: "
                            "Only shared images have members.")
        access.authorize(ctx, access.GET_MEMBERS, image)
        return [m for m in images_repo.list_members(session, image_id)
                if _may_see_member(ctx, image, m.member_id)]


def get_member(runtime: Runtime, ctx: RequestContext, image_id: str, member_id: str) -> Member:
    """One membership; NotFound also when the caller may not see it (no leak)."""
    with runtime.db.read() as session:
        image = _lookup_image(session, ctx, image_id)
        if image.visibility != "shared":
            raise NotFound("Only shared images have members.")
        try:
            return _lookup_member(session, ctx, image, member_id)
        except Forbidden as error:
            raise NotFound(error.message) from None


def update_member(runtime: Runtime, ctx: RequestContext, image_id: str, member_id: str,
                  status: Any) -> Member:
    """Set a membership's status (only by that member, or an admin); records
    image.member.update. Raises NotFound, Forbidden, Invalid (bad status)."""
    with runtime.db.write() as session:
        image = _lookup_image(session, ctx, image_id, for_update=True)
        if image.visibility != "shared":
            raise Forbidden(f"Not allowed to update members for image {image_id}.")
        member = _lookup_member(session, ctx, image, member_id)
        access.authorize(ctx, access.MODIFY_MEMBER, image, member_id=member_id)
        if status not in MEMBER_STATUSES:
            raise Invalid('Incorrect request: Status must be "pending", "accepted" or '
                          '"rejected".')
        member.status = status
        member.updated_at = utcnow()
        images_repo.update_member(session, member)
        runtime.notifier.record(session, catalogue.MEMBER_UPDATE,
                                lambda: payloads.member(member))
        return member


def delete_member(runtime: Runtime, ctx: RequestContext, image_id: str, member_id: str) -> None:
    """Remove a membership (owner or admin); records image.member.delete (deleted true)."""
    with runtime.db.write() as session:
        image = _lookup_image(session, ctx, image_id, for_update=True)
        if image.visibility != "shared":
            raise Forbidden(f"Not allowed to delete members for image {image_id}.")
        member = _lookup_member(session, ctx, image, member_id)
        access.authorize(ctx, access.DELETE_MEMBER, image)
        images_repo.delete_member(session, image_id, member_id)
        member.deleted_at = utcnow()   # updated_at stays: Glance's payload keeps it
        runtime.notifier.record(session, catalogue.MEMBER_DELETE,
                                lambda: payloads.member(member))
