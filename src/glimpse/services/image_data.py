"""Image data operations: upload (``PUT /file``) and download (``GET /file``).

Upload, in three steps so that no database transaction spans the transfer:

1. tx1: the image (visible, ``upload_image`` allowed, ``queued``) moves to
   ``saving``; records ``image.update`` then ``image.prepare``. The project's
   remaining quota is read in the same transaction.
2. the body streams into the store (:mod:`glimpse.services.data_pipeline`):
   size, MD5 and the multihash computed on the way; ``image_size_cap`` and
   ``user_storage_quota`` enforced while streaming.
3. tx2: the quota checked again against the owner's other images as committed
   now (concurrent uploads: the second to finish sees the first), then
   ``saving`` -> ``active`` with size, hashes and location; records
   ``image.upload`` (INFO), ``image.activate``, ``image.update``.
   On any failure (limits, store, client gone, image deleted meanwhile) the
   written data is deleted, and tx2' puts the image back to ``queued``,
   recording ``image.upload`` ERROR (a text payload) and ``image.update``;
   the original exception is re-raised.

Download: :func:`prepare_download` checks visibility and rules and resolves
the byte range; :func:`read_chunks` streams from the store without holding the
image in memory; :func:`record_send` records the one ``image.send`` of the
download in its own transaction when the stream ends (retried for a while if
the database is unavailable then).

Every function blocks on the database except the ``async`` ones, which run
blocking work in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

from glimpse.auth import property_protection
from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.db.engine import utcnow
from glimpse.domain.image import ACTIVE, DEACTIVATED, DELETED, QUEUED, SAVING, Image
from glimpse.exceptions import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    GlimpseError,
    Gone,
    Invalid,
    NotFound,
    RangeNotSatisfiable,
    StorageFull,
    StoragePermissionDenied,
    StoreError,
)
from glimpse.notifications import catalogue as ev
from glimpse.notifications import payloads
from glimpse.runtime import Runtime
from glimpse.services import access
from glimpse.services.data_pipeline import (
    Ingested,
    Limits,
    check_limits_at_commit,
    ingest,
    limits_for,
)

LOG = logging.getLogger(__name__)


# -- upload ---------------------------------------------------------------------------------

def begin_upload(rt: Runtime, ctx: RequestContext, image_id: str) -> Limits:
    """tx1: queued -> saving, with its events. Returns the limits for the stream.

    Raises NotFound (not visible), Forbidden (not allowed), InvalidStatusTransition
    (409: not queued).
    """
    with rt.db.write() as session:
        image = access.get_visible_image(session, ctx, image_id, for_update=True)
        access.authorize(ctx, access.UPLOAD_IMAGE, image)
        image.transition(SAVING)
        image.updated_at = utcnow()
        images_repo.update(session, image)
        limits = limits_for(rt.conf, session, image)
        snapshot = image.copy()
        hidden = _hidden(ctx, snapshot)
        rt.notifier.record(session, ev.IMAGE_UPDATE,
                           lambda: payloads.image(snapshot, hidden_properties=hidden))
        rt.notifier.record(session, ev.IMAGE_PREPARE,
                           lambda: payloads.image_with_import_lists(snapshot,
                                                                    hidden_properties=hidden))
    return limits


def _hidden(ctx: RequestContext | None, image: Image) -> frozenset[str]:
    """Properties ``ctx`` may not read (property protections): left out of its events."""
    if ctx is None:
        return frozenset()
    return property_protection.current().hidden(ctx, image.properties)


def finish_upload(rt: Runtime, image_id: str, stored: Ingested,
                  ctx: RequestContext | None = None) -> Image:
    """tx2: saving -> active with the data's size, hashes and location, and its events.

    Raises Gone when the image was deleted during the upload, Conflict when its
    status is no longer ``saving``, QuotaExceeded when uploads that finished
    meanwhile used the quota up; the caller then deletes the data.
    """
    with rt.db.write() as session:
        image = images_repo.get(session, image_id, for_update=True, include_deleted=True)
        if image is None or image.status == DELETED:
            raise Gone(f"Image {image_id} could not be found after upload. "
                       "The image may have been deleted during the upload.")
        if image.status != SAVING:
            raise Conflict(f"Unable to upload duplicate image data for image {image_id}: "
                           f"the image is {image.status}.")
        check_limits_at_commit(rt.conf, session, image, stored.size)
        image.size = stored.size
        image.checksum = stored.checksum
        image.os_hash_algo = stored.os_hash_algo
        image.os_hash_value = stored.os_hash_value
        image.location = stored.location
        image.transition(ACTIVE)
        image.updated_at = utcnow()
        images_repo.update(session, image)
        done = image.copy()
        hidden = _hidden(ctx, done)
        rt.notifier.record(session, ev.IMAGE_UPLOAD,
                           lambda: payloads.image_with_import_lists(done,
                                                                    hidden_properties=hidden))
        rt.notifier.record(session, ev.IMAGE_ACTIVATE,
                           lambda: payloads.image(done, hidden_properties=hidden))
        rt.notifier.record(session, ev.IMAGE_UPDATE,
                           lambda: payloads.image(done, hidden_properties=hidden))
    return image


def upload_error_text(image_id: str, error: BaseException) -> str:
    """The ERROR ``image.upload`` payload (contract 4.4) for ``error``."""
    detail = error.message if isinstance(error, GlimpseError) else (str(error) or
                                                                    type(error).__name__)
    if isinstance(error, StorageFull | StoragePermissionDenied):
        return detail
    if isinstance(error, Gone):
        return (f"Image {image_id} could not be found after upload. The image may have "
                f"been deleted during the upload: {detail}")
    if isinstance(error, Conflict):
        return f"Unable to upload duplicate image data for image {image_id}: {detail}"
    return f"Failed to upload image data for image {image_id}: {detail}"


def fail_upload(rt: Runtime, image_id: str, error: BaseException,
                ctx: RequestContext | None = None) -> None:
    """tx2': saving -> queued; records ``image.upload`` ERROR (text) then ``image.update``.

    When the image is gone or no longer ``saving`` only the ERROR is recorded.
    """
    text = upload_error_text(image_id, error)
    with rt.db.write() as session:
        image = images_repo.get(session, image_id, for_update=True)
        rt.notifier.record(session, ev.IMAGE_UPLOAD, lambda: text, priority=ev.ERROR)
        if image is not None and image.status == SAVING:
            image.transition(QUEUED)
            image.updated_at = utcnow()
            images_repo.update(session, image)
            queued = image.copy()
            hidden = _hidden(ctx, queued)
            rt.notifier.record(session, ev.IMAGE_UPDATE,
                               lambda: payloads.image(queued, hidden_properties=hidden))


def recover_interrupted_uploads(rt: Runtime) -> list[str]:
    """At start-up: images whose upload died with its process (the store found and
    removed their partial data, see ``FilesystemStore.interrupted_uploads``) and
    that are still ``saving`` go back to ``queued``, with ``image.upload`` ERROR
    and ``image.update`` as for any failed upload. Returns their ids."""
    recovered: list[str] = []
    error = StoreError("the service stopped while the data was being written")
    for image_id in getattr(rt.store, "interrupted_uploads", ()):
        with rt.db.read() as session:
            image = images_repo.get(session, image_id)
        if image is None or image.status != SAVING:
            continue
        fail_upload(rt, image_id, error)
        recovered.append(image_id)
        LOG.warning("Image %s was being uploaded when the service stopped: back to queued",
                    image_id)
    return recovered


async def upload_data(rt: Runtime, ctx: RequestContext, image_id: str,
                      body: AsyncIterable[bytes], *, content_length: int | None = None,
                      ) -> Image:
    """Store ``body`` as the image's data and activate it (see the module doc).

    Raises NotFound, Forbidden, InvalidStatusTransition (409) before anything
    changes; TooLarge/QuotaExceeded (413), StorageFull, StoragePermissionDenied,
    StoreError, Gone (410), Conflict (409) or the body's own exception (client
    disconnect) after the image went back to ``queued`` with nothing stored.
    """
    limits = await asyncio.to_thread(begin_upload, rt, ctx, image_id)
    try:
        if content_length is not None:
            limits.check(content_length)
        stored = await ingest(rt.store, image_id, body,
                              hashing_algorithm=rt.conf.hashing_algorithm, limits=limits)
        try:
            return await asyncio.to_thread(finish_upload, rt, image_id, stored, ctx)
        except BaseException:
            await asyncio.to_thread(rt.store.delete, stored.location)
            raise
    except BaseException as error:
        try:
            await asyncio.to_thread(fail_upload, rt, image_id, error, ctx)
        except Exception:
            LOG.exception("Could not put image %s back to queued after a failed upload",
                          image_id)
        raise


# -- download -------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


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
                     range_header: str | None = None) -> Download | None:
    """Check the caller may download the image; None when it has no data (HTTP 204).

    Raises NotFound (not visible), Forbidden (deactivated and not admin),
    Invalid/RangeNotSatisfiable (bad Range).
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


# How long a download's image.send is retried while the database is unavailable
# (a failover, a restart): the bytes went out, and billing counts them.
SEND_RECORD_PATIENCE = 300.0
SEND_RECORD_FIRST_DELAY = 0.5
SEND_RECORD_MAX_DELAY = 10.0


async def record_send(rt: Runtime, ctx: RequestContext, download: Download, bytes_sent: int,
                      priority: str) -> None:
    """Record the download's one ``image.send`` (INFO/WARN/ERROR) in its own
    transaction, run in a worker thread.

    While the database is unavailable the same event (its ``message_id``, and
    the timestamp of the end of the download) is retried, waiting 0.5 s
    doubling to 10 s between attempts, for up to ``SEND_RECORD_PATIENCE``
    seconds; the first failure is logged at WARNING and giving up at ERROR,
    both with the event's figures, so that an operator can reconcile. Other
    errors propagate."""
    event = rt.notifier.prepare(ev.IMAGE_SEND, lambda: payloads.send(
        image_id=download.image.id, owner_id=download.image.owner,
        receiver_tenant_id=ctx.project_id, receiver_user_id=ctx.user_id,
        destination_ip=ctx.remote_address, bytes_sent=bytes_sent), priority=priority)
    if event is None:
        return

    def add() -> None:
        with rt.db.write() as session:
            rt.notifier.add(session, event)

    figures = (f"image.send of image {download.image.id} to project {ctx.project_id} "
               f"({bytes_sent} bytes, {priority})")
    deadline = asyncio.get_running_loop().time() + SEND_RECORD_PATIENCE
    delay, failures = SEND_RECORD_FIRST_DELAY, 0
    while True:
        try:
            await asyncio.to_thread(add)
        except DatabaseUnavailable as error:
            failures += 1
            if asyncio.get_running_loop().time() + delay > deadline:
                LOG.error("Could not record the %s: the database stayed unavailable for "
                          "%.0f s (%s)", figures, SEND_RECORD_PATIENCE, error.detail)
                return
            if failures == 1:
                LOG.warning("Could not record the %s yet: database unavailable (%s); "
                            "retrying", figures, error.detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SEND_RECORD_MAX_DELAY)
            continue
        if failures:
            LOG.warning("Recorded the %s after %d failed attempts", figures, failures)
        return
