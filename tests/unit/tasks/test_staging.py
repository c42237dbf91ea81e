"""The staging area writes all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from glimpse.exceptions import TooLarge
from glimpse.tasks.staging import StagingArea


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def no_limit(size: int) -> None:
    return None


def test_write_stream_stores_the_bytes(tmp_path: Path) -> None:
    area = StagingArea(f"file://{tmp_path}/staging")
    size = asyncio.run(area.write_stream("img", chunks(b"ab", b"", b"cd" * 600_000), no_limit))
    assert size == 2 + 1_200_000
    assert area.path("img").read_bytes() == b"ab" + b"cd" * 600_000
    assert [p.name for p in area.root.iterdir()] == ["img"]


def test_a_limit_hit_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    area = StagingArea(f"file://{tmp_path}/staging")

    def cap(size: int) -> None:
        if size > 5:
            raise TooLarge("over the cap")

    with pytest.raises(TooLarge):
        asyncio.run(area.write_stream("img", chunks(b"abc", b"def"), cap))
    assert list(area.root.iterdir()) == []
