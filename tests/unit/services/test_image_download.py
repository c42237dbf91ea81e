"""The download service: Range parsing (as Glance), and what a download meets
when the data is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from glimpse.auth.context import RequestContext
from glimpse.exceptions import Invalid, NotFound, RangeNotSatisfiable, StoreError
from glimpse.runtime import Runtime
from glimpse.services import image_download, image_upload, images
from glimpse.services.image_download import byte_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-9", (0, 9)),
    ("bytes=990-", (990, 999)),
    ("bytes=-5", (995, 999)),
    ("bytes=995-2000", (995, 999)),     # clipped to the end, as Glance
    ("bytes=-2000", (0, 999)),
    ("bytes=0-0", (0, 0)),
    ("bytes=999-999", (999, 999)),
    ("BYTES=0-1", (0, 1)),              # range units compare case-insensitively (RFC 9110)
    ("Bytes=-1", (999, 999)),
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


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes 0-0/1000", (0, 0)), ("bytes 2-5/*", (2, 5)), ("bytes 0-999/1000", (0, 999)),
    ("bytes 0-1/5", (0, 1)), ("Bytes 3-4/*", (3, 4)),
])
def test_legacy_content_range_requests(header: str, expected: tuple[int, int]) -> None:
    assert image_download.legacy_content_range(header, 1000) == expected


@pytest.mark.parametrize("header", [
    "bytes 0-1000/*", "bytes 5-2/1000", "bytes 0-5/3", "bytes */1000", "garbage",
    "bytes=0-1", "bytes 1-/*",
])
def test_legacy_content_ranges_that_are_416(header: str) -> None:
    """Not clipped as a Range would be: strict, as Glance (WebOb) reads them."""
    with pytest.raises(RangeNotSatisfiable):
        image_download.legacy_content_range(header, 1000)


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


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_data_gone_with_its_image_is_not_found_and_gone_alone_a_store_fault(
        rt: Runtime) -> None:
    """A download that looked its image up just before a delete removed the data
    answers as if it had come a moment later (NotFound: 404, nothing to record);
    data missing under an image that still points at it is a store fault."""
    ctx = RequestContext(project_id="0123456789abcdef0123456789abcdef", user_id="u",
                         roles=frozenset({"member", "reader"}))
    body = {"name": "a", "disk_format": "raw", "container_format": "bare"}
    deleted, lost = (images.create_image(rt, ctx, dict(body)) for _ in range(2))
    for image in (deleted, lost):
        asyncio.run(image_upload.upload_data(rt, ctx, image.id, _chunks(b"x" * 1000)))
    race = image_download.prepare_download(rt, ctx, deleted.id)
    fault = image_download.prepare_download(rt, ctx, lost.id)
    assert race is not None and fault is not None
    images.delete_image(rt, ctx, deleted.id)                  # removes the data too
    (rt.store.datadir / lost.id).unlink()                       # lost, record kept

    async def first_chunk(download: image_download.Download) -> bytes:
        return await anext(aiter(image_download.read_chunks(rt, download)))

    for download, expected in ((race, NotFound), (fault, StoreError)):
        with pytest.raises(expected):
            asyncio.run(first_chunk(download))
        opened = image_download.download_file(rt, download)
        assert opened is not None
        with pytest.raises(expected), opened:
            pass
