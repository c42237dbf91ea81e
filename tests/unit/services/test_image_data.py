"""Pure parts of the data service: Range parsing (as Glance) and upload error texts."""

from __future__ import annotations

import pytest

from glimpse.exceptions import (
    ClientDisconnected,
    Gone,
    Invalid,
    QuotaExceeded,
    RangeNotSatisfiable,
    StorageFull,
)
from glimpse.services.image_data import byte_range, upload_error_text


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-9", (0, 9)),
    ("bytes=990-", (990, 999)),
    ("bytes=-5", (995, 999)),
    ("bytes=995-2000", (995, 999)),     # clipped to the end, as Glance
    ("bytes=-2000", (0, 999)),
    ("bytes=0-0", (0, 0)),
    ("bytes=999-999", (999, 999)),
])
def test_satisfiable_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", [
    "bytes=1000-", "bytes=5-2", "junk", "bytes=", "bytes=-", "bytes=-0", "items=0-1",
    "bytes=a-b",
])
def test_unsatisfiable_ranges_are_416_with_the_size(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        byte_range(header, 1000)
    assert info.value.size == 1000


def test_start_past_the_end_names_the_valid_range() -> None:
    with pytest.raises(RangeNotSatisfiable, match=r"inclusive range \[0, 999\]"):
        byte_range("bytes=1000-", 1000)


def test_multiple_ranges_are_400_as_glance() -> None:
    with pytest.raises(Invalid, match="multiple ranges are not supported"):
        byte_range("bytes=0-1,5-6", 1000)


def test_any_range_of_empty_data_is_unsatisfiable() -> None:
    for header in ("bytes=0-", "bytes=-1"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(header, 0)


def test_upload_error_texts_name_the_image_and_the_cause() -> None:
    iid = "1b0c5f0e-0000-4000-8000-000000000001"
    assert upload_error_text(iid, QuotaExceeded("over quota")) == (
        f"Failed to upload image data for image {iid}: over quota")
    assert upload_error_text(iid, ClientDisconnected("client left")) == (
        f"Failed to upload image data for image {iid}: client left")
    assert upload_error_text(iid, StorageFull("Image storage media is full: disk")) == (
        "Image storage media is full: disk")
    assert upload_error_text(iid, Gone("deleted")).startswith(
        f"Image {iid} could not be found after upload. The image may have been deleted "
        "during the upload: ")
    assert upload_error_text(iid, RuntimeError("boom")).endswith(": boom")
