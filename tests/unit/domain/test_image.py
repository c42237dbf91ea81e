"""Image.transition: Glance's status machine, and its rule that data is saved only
into an image whose disk and container formats are set."""

from __future__ import annotations

import pytest

from glimpse.domain.image import (
    ACTIVE,
    DEACTIVATED,
    DELETED,
    IMPORTING,
    QUEUED,
    SAVING,
    TRANSITIONS,
    UPLOADING,
    Image,
)
from glimpse.exceptions import Invalid, InvalidStatusTransition


def image(status: str = QUEUED, **formats: str | None) -> Image:
    values = {"disk_format": "raw", "container_format": "bare", **formats}
    return Image(id="i", owner="p", status=status, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "target"), [
    (s, t) for s, targets in TRANSITIONS.items() for t in sorted(targets)])
def test_every_allowed_transition_moves_when_the_formats_are_set(start: str,
                                                                  target: str) -> None:
    img = image(start)
    img.transition(target)
    assert img.status == target


@pytest.mark.parametrize(("start", "target"), [
    (QUEUED, DEACTIVATED), (ACTIVE, SAVING), (ACTIVE, QUEUED), (UPLOADING, SAVING),
    (DELETED, ACTIVE), (SAVING, UPLOADING)])
def test_forbidden_transitions_raise_and_leave_the_status(start: str, target: str) -> None:
    img = image(start)
    with pytest.raises(InvalidStatusTransition,
                       match=f"from {start} to {target} is not allowed"):
        img.transition(target)
    assert img.status == start


@pytest.mark.parametrize(("formats", "message"), [
    ({"disk_format": None, "container_format": None},
     "Properties disk_format, container_format must be set prior to saving data."),
    ({"disk_format": None}, "Property disk_format must be set prior to saving data."),
    ({"container_format": ""}, "Property container_format must be set prior to saving data."),
])
@pytest.mark.parametrize(("start", "target"), [
    (QUEUED, SAVING), (QUEUED, ACTIVE), (QUEUED, IMPORTING), (UPLOADING, IMPORTING)])
def test_saving_data_needs_both_formats(start: str, target: str,
                                        formats: dict[str, str | None], message: str) -> None:
    img = image(start, **formats)
    with pytest.raises(Invalid) as caught:
        img.transition(target)
    assert caught.value.message == message and img.status == start


@pytest.mark.parametrize(("start", "target"), [
    (QUEUED, UPLOADING), (QUEUED, DELETED), (UPLOADING, QUEUED), (SAVING, QUEUED),
    (IMPORTING, QUEUED)])
def test_moves_that_save_no_data_need_no_formats(start: str, target: str) -> None:
    img = image(start, disk_format=None, container_format=None)
    img.transition(target)
    assert img.status == target
