"""ImageDataResponse: what a download streams, and how many chunks it keeps resident."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from glimpse.api import image_data as api
from glimpse.notifications.catalogue import INFO
from glimpse.services.image_download import Download


class Chunk(bytearray):
    """A chunk that can be watched with a weak reference."""


class Cycle:
    """The shape of uvicorn's request cycle that the response reads."""

    disconnected = False

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}


def run_download(monkeypatch: pytest.MonkeyPatch, count: int, trim_after: int = 0) -> tuple[
        list[dict[str, Any]], int, list[tuple[Any, ...]]]:
    """Stream ``count`` 4-byte chunks through the response; the messages sent,
    the most chunks alive when a send began, and the record_send (and heap
    trim, for downloads of ``trim_after`` bytes or more) calls."""
    alive: list[weakref.ref[Chunk]] = []
    recorded: list[tuple[Any, ...]] = []

    async def read_chunks(_rt: Any, _download: Any) -> AsyncIterator[bytes]:
        # as the service: the next chunk is read before this one is handed out
        def make(i: int) -> Chunk:
            chunk = Chunk(bytes([i]) * 4)
            alive.append(weakref.ref(chunk))
            return chunk
        upcoming = make(0)
        for i in range(1, count + 1):
            current, upcoming = upcoming, (make(i) if i < count else None)
            yield current
            del current

    monkeypatch.setattr(api.image_download, "read_chunks", read_chunks)
    async def record_send(*args: Any) -> None:
        recorded.append(args)

    monkeypatch.setattr(api.image_download, "record_send", record_send)
    monkeypatch.setattr(api, "release_free_heap", lambda: recorded.append(("trim",)))
    monkeypatch.setattr(api, "TRIM_AFTER_BYTES", trim_after)
    download = Download(image=SimpleNamespace(id="img", checksum=None, owner="p"),  # type: ignore[arg-type]
                        location="file:///x", size=4 * count, start=0, length=4 * count,
                        partial=False)
    response = api.ImageDataResponse(None, None, download)  # type: ignore[arg-type]
    messages: list[dict[str, Any]] = []
    held: list[Any] = []   # what the server's send buffer still holds
    most = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal most
        most = max(most, sum(1 for ref in alive if ref() is not None))
        held.clear()       # as uvicorn: a send first waits until the buffer drained
        body = message.get("body")
        messages.append({**message, "body": bytes(body) if body is not None else None})
        if body:
            held.append(body)

    asyncio.run(response({"type": "http"}, Cycle().receive, send))
    return messages, most, recorded


def test_download_streams_every_chunk_and_records_the_bytes_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    messages, _, recorded = run_download(monkeypatch, 5)
    assert messages[0]["type"] == "http.response.start"
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"".join(bytes([i]) * 4 for i in range(5))
    assert [m["more_body"] for m in bodies][-1] is False
    assert all(m["more_body"] for m in bodies[:-1])
    assert len(recorded) == 2
    assert recorded[0][3:] == (20, INFO)
    assert recorded[1] == ("trim",)   # the heap is trimmed once the download is over


def test_a_short_download_does_not_trim_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, recorded = run_download(monkeypatch, 5, trim_after=21)
    assert len(recorded) == 1 and recorded[0][3:] == (20, INFO)


def test_release_free_heap_runs() -> None:
    api.release_free_heap()   # glibc malloc_trim, or nothing elsewhere: never raises


def test_download_keeps_at_most_two_chunks_resident(monkeypatch: pytest.MonkeyPatch) -> None:
    # the chunk in the server's send buffer and the one read ahead; not the
    # first chunk for the whole download, not a third while the buffer drains
    _, most, _ = run_download(monkeypatch, 6)
    assert most == 2
