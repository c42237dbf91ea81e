"""Image download (``GET /v2/images/{id}/file``).

:func:`prepare_download` checks visibility and rules and resolves the byte
range; :func:`read_chunks` streams from the store without holding the image in
memory, or :func:`download_file` hands out the store's file for ``sendfile``;
:func:`record_send` records the one ``image.send`` of the download in its own
transaction when the stream ends (waiting out a database outage for a while).

Every function blocks on the database except the ``async`` ones, which run
blocking work in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.domain.image import ACTIVE, DEACTIVATED, Image
from glimpse.exceptions import (
    DatabaseUnavailable,
    Forbidden,
    Invalid,
    NotFound,
    RangeNotSatisfiable,
    StoreError,
)
from glimpse.notifications import catalogue as ev
from glimpse.notifications import payloads
from glimpse.notifications.spool import EventSpool
from glimpse.runtime import Runtime
from glimpse.services import access, outage

LOG = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)   # units: case-insensitive


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range`` header -> ``(start, end)`` inclusive, or None for the whole image.

    As Glance: several ranges -> Invalid (400); a malformed header or a range
    outside ``[0, size)`` -> RangeNotSatisfiable (416). ``a-b`` is clipped to the
    end; ``-n`` is the last n bytes (``-0`` is unsatisfiable, as RFC 9110).
    """
    if header is None:
        return None
    spec = header.strip()
    if "," in spec:
        raise Invalid("Requests with multiple ranges are not supported in Glance. "
                      "You may make multiple single-range requests instead.")
    match = _RANGE.fullmatch(spec.replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable("Invalid Range header.", size=size)
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("Invalid Range header.", size=size)
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if start >= size:
        raise RangeNotSatisfiable(
            "Invalid start position in Range header. Start position MUST be in the "
            f"inclusive range [0, {max(size - 1, 0)}].", size=size)
    if end < start:
        raise RangeNotSatisfiable("Invalid Range header.", size=size)
    return start, min(end, size - 1)


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


def legacy_content_range(header: str, size: int) -> tuple[int, int]:
    """A ``Content-Range`` *request* header (``bytes a-b/length``) that asks for
    ``a..b``: Glance still honours it on downloads, for old clients, when there
    is no ``Range``. Strict as Glance's (WebOb's) reading of it: a malformed header,
    ``b < a`` or a range past the image's end is RangeNotSatisfiable (416)."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiable("Invalid Content-Range header.", size=size)
    start, end = int(match.group(1)), int(match.group(2))
    length = None if match.group(3) == "*" else int(match.group(3))
    if end < start or end >= size or (length is not None and end >= length):
        raise RangeNotSatisfiable("Invalid Content-Range header.", size=size)
    return start, end


@dataclass(frozen=True)
class Download:
    """A download about to stream: what, from where, which bytes."""

    image: Image
    location: str
    size: int
    start: int
    length: int
    partial: bool


def prepare_download(rt: Runtime, ctx: RequestContext, image_id: str,
                     range_header: str | None = None,
                     content_range_header: str | None = None) -> Download | None:
    """Check the caller may download the image; None when it has no data (HTTP 204).
    ``Range`` decides the bytes; without it, a legacy ``Content-Range`` request
    header does (:func:`legacy_content_range`).

    Raises NotFound (not visible), Forbidden (deactivated and not admin),
    Invalid/RangeNotSatisfiable (bad Range or Content-Range).
    """
    with rt.db.read() as session:
        image = access.get_visible_image(session, ctx, image_id)
        access.authorize(ctx, access.DOWNLOAD_IMAGE, image)
    if image.status == DEACTIVATED and not ctx.is_admin:
        raise Forbidden("The requested image has been deactivated. "
                        "Image data download is forbidden.")
    if image.location is None or image.status not in (ACTIVE, DEACTIVATED):
        return None
    size = image.size or 0
    if range_header is None and content_range_header is not None:
        wanted: tuple[int, int] | None = legacy_content_range(content_range_header, size)
    else:
        wanted = byte_range(range_header, size)
    if wanted is None:
        return Download(image, image.location, size, 0, size, partial=False)
    start, end = wanted
    return Download(image, image.location, size, start, end - start + 1, partial=True)


async def read_chunks(rt: Runtime, download: Download) -> AsyncGenerator[bytes, None]:
    """The requested bytes, in store-sized chunks, reading one chunk ahead in a
    worker thread. Store failures propagate as StoreError (missing data too);
    data gone with its image (deleted since ``prepare_download``) as NotFound."""
    loop = asyncio.get_running_loop()
    reader = rt.store.read(download.location, download.start, download.length)
    try:
        chunks = await asyncio.to_thread(reader.__enter__)
    except NotFound as exc:
        raise await asyncio.to_thread(_missing, rt, download, exc) from exc
    upcoming: asyncio.Future[bytes | None] | None = None
    try:
        upcoming = loop.run_in_executor(None, next, chunks, None)
        while True:
            data = await upcoming
            if data is None:
                return
            upcoming = loop.run_in_executor(None, next, chunks, None)
            yield data
    finally:
        if upcoming is not None and not upcoming.done():
            # Let the read in flight finish before the handle closes.
            await asyncio.gather(upcoming, return_exceptions=True)
        await asyncio.to_thread(reader.__exit__, None, None, None)


def download_file(rt: Runtime, download: Download) -> AbstractContextManager[int] | None:
    """The download's data as a local file, for ``sendfile``: a context manager
    yielding an open descriptor, or None when the store keeps no local files
    (then use :func:`read_chunks`). Entering blocks on I/O (and on the database
    when the data is missing); missing data raises as in :func:`read_chunks`."""
    opened = rt.store.open_file(download.location)
    return None if opened is None else _store_file(rt, opened, download)


@contextmanager
def _store_file(rt: Runtime, opened: AbstractContextManager[int],
                download: Download) -> Iterator[int]:
    with ExitStack() as stack:
        try:
            fd = stack.enter_context(opened)
        except NotFound as exc:
            raise _missing(rt, download, exc) from exc
        yield fd


def _missing(rt: Runtime, download: Download, error: NotFound) -> NotFound | StoreError:
    """What missing data means, from the image's record now (blocks on a read).
    Deleted since the download looked it up (or its data replaced): the download
    raced a delete, NotFound as if it had come a moment later. Still pointing at
    the data: a store fault, StoreError."""
    with rt.db.read() as session:
        now = images_repo.get(session, download.image.id)
    if now is None or now.location != download.location:
        return NotFound(f"No image found with ID {download.image.id}")
    return StoreError(f"The data of image {download.image.id} is missing from the store "
                      f"({error.message})")


# How long a background retry waits for the database before it logs that it still
# waits (and goes on): the bytes went out, and billing counts them.
SEND_RECORD_PATIENCE = 300.0


# Background work, kept from the collector: the replay of this process's event
# spool (at most one at a time) and the in-memory retries of image.sends that
# the spool could not take.
_REPLAYING: set[asyncio.Task[None]] = set()
_RETRYING: set[asyncio.Task[None]] = set()


async def record_send(rt: Runtime, ctx: RequestContext, download: Download, bytes_sent: int,
                      priority: str) -> None:
    """Record the download's one ``image.send`` (INFO/WARN/ERROR) in its own
    transaction, run in a worker thread.

    When the database is unavailable, the event (its ``message_id``, and the
    time of the end of the download) goes to the event spool on local disk
    (:mod:`glimpse.notifications.spool`) and this returns: the response is
    complete, its connection free. A background task replays the spool into the
    outbox once the database is back; if the process stops first, the next start
    does. Only when the spool cannot be written either (a full disk) is the
    event retried in memory for ``SEND_RECORD_PATIENCE`` seconds. The first
    failure is logged with the event's figures, so that an operator can
    reconcile. Other errors propagate."""
    event = rt.notifier.prepare(ev.IMAGE_SEND, lambda: payloads.send(
        image_id=download.image.id, owner_id=download.image.owner,
        receiver_tenant_id=ctx.project_id, receiver_user_id=ctx.user_id,
        destination_ip=ctx.remote_address, bytes_sent=bytes_sent), priority=priority)
    if event is None:
        return

    def add() -> None:
        with rt.db.write() as session:
            rt.notifier.add(session, event)

    try:
        await asyncio.to_thread(add)
        return
    except DatabaseUnavailable as error:
        figures = (f"image.send of image {download.image.id} to project {ctx.project_id} "
                   f"({bytes_sent} bytes, {priority})")
        LOG.warning("Recording the %s: database unavailable (%s); kept in the event spool",
                    figures, error.detail)
    spool = rt.spool
    assert spool is not None        # an event was prepared: a driver, and so a spool
    try:
        await asyncio.to_thread(spool.put, event, rt.notifier.drivers)
    except OSError as error:
        LOG.error("Could not keep the %s in the event spool (%s); retrying it in memory",
                  figures, error)
        _in_background(_record_later(add, figures), _RETRYING)
        return
    # a replay that has returned may still be in the set: its own check of the
    # spool may have come before this event was added
    if all(task.done() for task in _REPLAYING):
        _in_background(_replay_spool(rt, spool), _REPLAYING)


def _in_background(work: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _replay_spool(rt: Runtime, spool: EventSpool) -> None:
    """Replay the spool once the database is back: retried until it is (a line in
    the log every ``SEND_RECORD_PATIENCE`` seconds), and again while events this
    process added meanwhile wait, until the process stops."""
    while True:
        try:
            await outage.while_unavailable(partial(spool.replay, rt.db, rt.notifier),
                                           patience=SEND_RECORD_PATIENCE,
                                           what="Recording the events of the event spool")
            if not spool.own_pending():
                return
        except DatabaseUnavailable as error:
            LOG.warning("The database is still unavailable after %.0f s (%s); the events "
                        "wait in %s", SEND_RECORD_PATIENCE, error.detail, spool.directory)
        except asyncio.CancelledError:
            LOG.warning("Stopping while the database is unavailable: the events in %s are "
                        "recorded at the next start", spool.directory)
            raise
        except Exception:
            LOG.exception("Could not replay the event spool; its events wait in %s for "
                          "the next start", spool.directory)
            return


async def _record_later(add: Callable[[], None], figures: str) -> None:
    try:
        await outage.while_unavailable(add, patience=SEND_RECORD_PATIENCE,
                                       what=f"Recording the {figures}")
    except DatabaseUnavailable as error:
        LOG.error("Could not record the %s: the database stayed unavailable for %.0f s (%s)",
                  figures, SEND_RECORD_PATIENCE, error.detail)
    except asyncio.CancelledError:
        LOG.error("Could not record the %s: the process stopped while the database was "
                  "unavailable", figures)
        raise
