"""Glance's default rules as ``access.authorize`` implements them (no policy file)."""

from __future__ import annotations

import pytest

from glimpse.auth.context import RequestContext
from glimpse.domain.image import Image
from glimpse.exceptions import Forbidden
from glimpse.services import access


def ctx(project: str, *roles: str) -> RequestContext:
    return RequestContext(project_id=project, user_id="u", roles=frozenset(roles))


OWN = Image(id="i", owner="p1", visibility="shared")
MEMBER, READER, ADMIN = ctx("p1", "member", "reader"), ctx("p1", "reader"), ctx("p9", "admin")
OTHER = ctx("p2", "member", "reader")


@pytest.mark.parametrize("rule", [access.MODIFY_IMAGE, access.DELETE_IMAGE, access.ADD_MEMBER,
                                  access.DELETE_MEMBER, access.DEACTIVATE, access.REACTIVATE,
                                  access.UPLOAD_IMAGE, access.COMMUNITIZE_IMAGE])
def test_owner_writes_others_and_readers_do_not(rule: str) -> None:
    access.authorize(MEMBER, rule, OWN)
    access.authorize(ADMIN, rule, OWN)
    with pytest.raises(Forbidden, match=f"^You are not authorized to complete {rule} action.$"):
        access.authorize(OTHER, rule, OWN)
    with pytest.raises(Forbidden):
        access.authorize(READER, rule, OWN)


def test_reads_are_open_to_whoever_sees_the_image() -> None:
    for rule in (access.GET_IMAGE, access.DOWNLOAD_IMAGE, access.GET_MEMBER):
        access.authorize(READER, rule, OWN)
        access.authorize(OTHER, rule, OWN)


def test_publicize_is_admin_only() -> None:
    access.authorize(ADMIN, access.PUBLICIZE_IMAGE, OWN)
    with pytest.raises(Forbidden, match="publicize_image"):
        access.authorize(MEMBER, access.PUBLICIZE_IMAGE, OWN)


def test_add_image_for_another_owner() -> None:
    access.authorize(MEMBER, access.ADD_IMAGE, Image(id="n", owner="p1"))
    access.authorize(ADMIN, access.ADD_IMAGE, Image(id="n", owner="anyone"))
    with pytest.raises(Forbidden, match=r"^You are not permitted to create images owned by 'p2'$"):
        access.authorize(MEMBER, access.ADD_IMAGE, Image(id="n", owner="p2"))
    with pytest.raises(Forbidden, match="add_image"):
        access.authorize(READER, access.ADD_IMAGE, Image(id="n", owner="p1"))


def test_only_the_member_itself_changes_its_status() -> None:
    access.authorize(OTHER, access.MODIFY_MEMBER, OWN, member_id="p2")
    access.authorize(ADMIN, access.MODIFY_MEMBER, OWN, member_id="p2")
    with pytest.raises(Forbidden):
        access.authorize(MEMBER, access.MODIFY_MEMBER, OWN, member_id="p2")


@pytest.mark.parametrize(("visibility", "member_status", "seen_by_other"), [
    ("private", None, False), ("private", "accepted", False), ("shared", None, False),
    ("shared", "pending", True), ("shared", "rejected", True), ("shared", "accepted", True),
    ("community", None, True), ("public", None, True)])
def test_can_see(visibility: str, member_status: str | None, seen_by_other: bool) -> None:
    img = Image(id="i", owner="p1", visibility=visibility)
    assert access.can_see(OTHER, img, member_status) is seen_by_other
    assert access.can_see(MEMBER, img, None) and access.can_see(ADMIN, img, None)
