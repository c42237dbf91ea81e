"""``disabled_notifications`` matrix (contract section 5)."""

from __future__ import annotations

import pytest

from glimpse.notifications import catalogue as c

ALL = c.EVENT_TYPES
MEMBER = {c.MEMBER_CREATE, c.MEMBER_UPDATE, c.MEMBER_DELETE}
TASK = {c.TASK_CREATE, c.TASK_RUN, c.TASK_PROCESSING, c.TASK_SUCCESS, c.TASK_FAILURE}
IMAGE = {e for e in ALL if e.startswith("image.")}


@pytest.mark.parametrize(("entries", "expected_disabled"), [
    ([], set()),
    (["image.create"], {c.IMAGE_CREATE}),
    (["image"], IMAGE),
    (["image.member"], MEMBER),
    (["task"], TASK),
    (["image.send"], {c.IMAGE_SEND}),
    (["image.send", "task"], TASK | {c.IMAGE_SEND}),
    ([" image.update "], {c.IMAGE_UPDATE}),            # oslo ListOpt may keep spaces
    (["", "  "], set()),
    (["imag"], set()),                                  # not a prefix ending at a dot
    (["image.member.create"], {c.MEMBER_CREATE}),
    (["image.membe"], set()),
    (["task.run", "image.upload"], {c.TASK_RUN, c.IMAGE_UPLOAD}),
])
def test_disabled_matrix(entries: list[str], expected_disabled: set[str]) -> None:
    disabled = {e for e in ALL if c.is_disabled(e, entries)}
    assert disabled == expected_disabled


def test_catalogue_is_the_contract_list() -> None:
    assert set(ALL) == {
        "image.create", "image.prepare", "image.upload", "image.activate", "image.send",
        "image.update", "image.delete", "image.member.create", "image.member.update",
        "image.member.delete", "task.create", "task.run", "task.processing", "task.success",
        "task.failure"}
    assert c.PRIORITIES == ("INFO", "WARN", "ERROR")
