"""Who may see and do what with an image: Glance's default rules, in one place.

Every service (images, members, data path, tasks) goes through this module:

- :func:`get_visible_image` loads an image the caller may *see*, else raises
  NotFound — never Forbidden, so nobody learns that someone else's image exists.
- :func:`authorize` checks one action, named like Glance's policy rules
  (``modify_image``, ``download_image``, ...), on an image the caller can see;
  it raises Forbidden. The rules are Glance's secure-RBAC defaults written in
  code; the identity/policy work will later put oslo.policy behind this function
  without changing its callers.
- :func:`list_scope` is the scope of image lists (Glance's list rules), in SQL.

Visibility (as Glance): admin sees every image; the owner sees its own;
``public`` and ``community`` images are visible to all; ``shared`` images to the
owner and to projects that are members (any member status); ``private`` to the
owner only. Lists are narrower: community images of others appear only when
``visibility=community`` (or ``all``) is asked, and shared images of others only
when the caller's membership has the asked ``member_status`` (default accepted).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from sqlalchemy import and_, bindparam, false, or_, true
from sqlalchemy.engine import Connection

from glimpse.auth.context import RequestContext
from glimpse.db import images_repo, models
from glimpse.db.image_lists import ScopeBranch
from glimpse.domain.image import Image
from glimpse.exceptions import Forbidden, NotFound

_images = models.images
_members = models.image_members

# Glance's policy rule names this module answers.
GET_IMAGE: Final = "get_image"
GET_IMAGES: Final = "get_images"
ADD_IMAGE: Final = "add_image"
MODIFY_IMAGE: Final = "modify_image"
DELETE_IMAGE: Final = "delete_image"
PUBLICIZE_IMAGE: Final = "publicize_image"
COMMUNITIZE_IMAGE: Final = "communitize_image"
ADD_MEMBER: Final = "add_member"
GET_MEMBER: Final = "get_member"
GET_MEMBERS: Final = "get_members"
MODIFY_MEMBER: Final = "modify_member"
DELETE_MEMBER: Final = "delete_member"
DEACTIVATE: Final = "deactivate"
REACTIVATE: Final = "reactivate"
UPLOAD_IMAGE: Final = "upload_image"
DOWNLOAD_IMAGE: Final = "download_image"

# Actions a project member (not only an admin) may do on images its project owns.
_OWNER_WRITE_RULES: Final = frozenset({
    MODIFY_IMAGE, DELETE_IMAGE, COMMUNITIZE_IMAGE, ADD_MEMBER, DELETE_MEMBER, DEACTIVATE,
    REACTIVATE, UPLOAD_IMAGE,
})
_READ_RULES: Final = frozenset({GET_IMAGE, GET_IMAGES, DOWNLOAD_IMAGE, GET_MEMBER, GET_MEMBERS})


def not_found(image_id: str) -> NotFound:
    """The one message for "no such image" and "not yours to see" (Glance's text)."""
    return NotFound(f"No image found with ID {image_id}")


def can_see(ctx: RequestContext, image: Image, member_status: str | None) -> bool:
    """Whether ``image`` is visible to ``ctx``; ``member_status`` is the caller's
    membership status on the image (None: not a member)."""
    if ctx.is_admin or ctx.owns(image.owner):
        return True
    if image.visibility in ("public", "community"):
        return True
    return image.visibility == "shared" and member_status is not None


def member_status(session: Connection, ctx: RequestContext, image: Image) -> str | None:
    """The caller's membership status on ``image`` (None when not a member)."""
    if ctx.project_id is None:
        return None
    member = images_repo.get_member(session, image.id, ctx.project_id)
    return None if member is None else member.status


def get_visible_image(session: Connection, ctx: RequestContext, image_id: str, *,
                      for_update: bool = False) -> Image:
    """The image, if it exists, is not deleted and ``ctx`` may see it; else NotFound.

    ``for_update`` locks the row for the rest of the write transaction (use it
    before changing the image). Raises only NotFound.
    """
    image = images_repo.get(session, image_id, for_update=for_update)
    if image is None:
        raise not_found(image_id)
    if ctx.is_admin or ctx.owns(image.owner) or image.visibility in ("public", "community"):
        return image
    if image.visibility == "shared" and member_status(session, ctx, image) is not None:
        return image
    raise not_found(image_id)


def authorize(ctx: RequestContext, rule: str, image: Image | None = None, *,
              member_id: str | None = None) -> None:
    """Raise Forbidden unless ``ctx`` may do ``rule`` (a Glance policy name).

    ``image`` must already be one the caller can see (see ``get_visible_image``);
    for ``add_image`` pass the image about to be created (its ``owner`` counts).
    ``member_id`` is the membership concerned by ``modify_member``.
    Glance's defaults: admins may do everything; readers only read; members
    write images their project owns; only admins publicize; only the member
    project itself changes its membership status.
    With an oslo.policy enforcer installed (the API does it), the operator's
    policy file decides instead (glimpse.auth.policy: same defaults).
    """
    from glimpse.auth import policy as _policy

    if _policy.installed() is not None:
        _policy.authorize(ctx, rule, image, member_id=member_id)
        return
    if ctx.is_admin:
        return
    if rule in _READ_RULES:
        return
    if not ctx.can_write:
        raise Forbidden(f"You are not authorized to complete {rule} action.")
    if rule == PUBLICIZE_IMAGE:
        raise Forbidden("You are not authorized to complete publicize_image action.")
    if rule == ADD_IMAGE:
        if image is not None and image.owner is not None and not ctx.owns(image.owner):
            raise Forbidden("You are not permitted to create images owned by "
                            f"'{image.owner}'")
        return
    if rule == MODIFY_MEMBER:
        if member_id is None or member_id != ctx.project_id:
            raise Forbidden(f"You are not authorized to complete {rule} action.")
        return
    if rule in _OWNER_WRITE_RULES:
        if image is None or not ctx.owns(image.owner):
            raise Forbidden(f"You are not authorized to complete {rule} action.")
        return
    raise Forbidden(f"You are not authorized to complete {rule} action.")


def require_owner_or_admin(ctx: RequestContext, image: Image) -> None:
    """Forbidden unless the caller is an admin or its project owns ``image``."""
    if not (ctx.is_admin or ctx.owns(image.owner)):
        raise Forbidden("You are not permitted to modify this image.")


def list_scope(ctx: RequestContext, *, visibility: str | None = None,
               member_status: str = "accepted") -> tuple[ScopeBranch, ...]:
    """The images ``ctx`` gets in a list (Glance's rules), as disjoint branches
    for ``image_lists`` (one SQL query part each, see there why).

    ``visibility`` is the list filter (None: not asked; ``all``: every visibility
    the caller may see). ``member_status`` selects which of the caller's
    memberships make others' shared images appear (``all``: any status).
    The caller's project is the bound parameter ``scope_project``: pass
    :func:`scope_params` with the query. One scope object exists per kind
    of caller and filter, so the list statement built on it is reused.
    """
    return _scope(ctx.is_admin, ctx.project_id is not None, visibility, member_status)


def scope_params(ctx: RequestContext) -> dict[str, Any]:
    """Values of the parameters of :func:`list_scope`'s predicates."""
    return {} if ctx.project_id is None else {"scope_project": ctx.project_id}


_OTHERS_VISIBLE: Final = ("public", "community", "shared")


@lru_cache(maxsize=128)
def _scope(is_admin: bool, has_project: bool, visibility: str | None,
           member_status: str) -> tuple[ScopeBranch, ...]:
    project = bindparam("scope_project", type_=_images.c.owner.type)
    visibility_of = _images.c.visibility    # the column; ``visibility`` is the filter
    if is_admin:    # every image, but others' community images only when asked
        if visibility == "all":
            return (ScopeBranch(true()),)
        if visibility is not None:
            return (ScopeBranch(visibility_of == visibility),)
        if has_project:
            return (ScopeBranch(or_(_images.c.owner == project,
                                    visibility_of != "community")),)
        return (ScopeBranch(visibility_of != "community"),)
    # others' images by visibility: community only when asked, shared by membership
    if visibility in (None, "all"):
        kinds = [k for k in _OTHERS_VISIBLE if visibility == "all" or k != "community"]
    else:
        kinds = [k for k in _OTHERS_VISIBLE if k == visibility]
    if not has_project:
        kinds = [k for k in kinds if k != "shared"]
        return tuple(ScopeBranch(visibility_of == k) for k in kinds) or (ScopeBranch(false()),)
    own = _images.c.owner == project
    branches = [ScopeBranch(own if visibility in (None, "all")
                            else and_(own, visibility_of == visibility))]
    others = or_(_images.c.owner != project, _images.c.owner.is_(None))
    for kind in kinds:
        if kind != "shared":
            branches.append(ScopeBranch(and_(visibility_of == kind, others)))
            continue
        membership = _members.c.member == project
        if member_status != "all":
            membership = and_(membership, _members.c.status == member_status)
        branches.append(ScopeBranch(and_(visibility_of == "shared", others), membership))
    return tuple(branches)


__all__ = [
    "authorize", "can_see", "get_visible_image", "list_scope", "member_status", "not_found",
    "require_owner_or_admin", "scope_params",
]
