"""Image upload (``PUT /v2/images/{id}/file``), in three steps so that no database
transaction spans the transfer:

1. tx1: the image (visible, ``upload_image`` allowed, ``queued``) moves to
   ``saving``; records ``image.update`` then ``image.prepare``. The project's
   remaining quota is read in the same transaction.
2. the body streams into the store (:mod:`glimpse.services.data_pipeline`):
   size, MD5 and the multihash computed on the way; ``image_size_cap`` and
   ``user_storage_quota`` enforced while streaming; the content checked
   against ``disk_format`` (:mod:`glimpse.services.image_format`), which gives
   the ``virtual_size``.
3. tx2: the quota checked again against the owner's other images as committed
   now (concurrent uploads: the second to finish sees the first), then
   ``saving`` -> ``active`` with size, hashes and location; records
   ``image.upload`` (INFO), ``image.activate``, ``image.update``.
   On any failure (limits, content refused, store, client gone, image deleted
   meanwhile) the written data is deleted, and tx2' puts the image back to
   ``queued``, recording ``image.upload`` ERROR (a text payload) and
   ``image.update``; the original exception is re-raised. A database outage at the end is
   waited out for a while (:mod:`glimpse.services.outage`).

Every function blocks on the database except the ``async`` ones, which run
blocking work in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from functools import partial

from glimpse.auth import property_protection
from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.db.engine import utcnow
from glimpse.domain.image import ACTIVE, DELETED, QUEUED, SAVING, Image
from glimpse.exceptions import (
    Conflict,
    DatabaseUnavailable,
    GlimpseError,
    Gone,
    StorageFull,
    StoragePermissionDenied,
    StoreError,
)
from glimpse.notifications import catalogue as ev
from glimpse.notifications import payloads
from glimpse.runtime import Runtime
from glimpse.services import access, outage
from glimpse.services.data_pipeline import (
    Ingested,
    Limits,
    check_limits_at_commit,
    ingest,
    limits_for,
)
from glimpse.services.image_format import ContentCheck

LOG = logging.getLogger(__name__)


# How long the end of an upload waits out a database outage (the client waits too).
UPLOAD_PATIENCE = 60.0
# After how long an image still saving with a complete data file is taken as stalled.
STALLED_AFTER = 3600.0


def begin_upload(rt: Runtime, ctx: RequestContext, image_id: str,
                 ) -> tuple[Limits, ContentCheck]:
    """tx1: queued -> saving, with its events. Returns the limits for the stream
    and the check its content must pass.

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
        check = ContentCheck.for_image(image, rt.conf)
        snapshot = image.copy()
        hidden = _hidden(ctx, snapshot)
        rt.notifier.record(session, ev.IMAGE_UPDATE,
                           lambda: payloads.image(snapshot, hidden_properties=hidden))
        rt.notifier.record(session, ev.IMAGE_PREPARE,
                           lambda: payloads.image_with_import_lists(snapshot,
                                                                    hidden_properties=hidden))
    return limits, check


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
        if stored.virtual_size:
            image.virtual_size = stored.virtual_size
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
                ctx: RequestContext | None = None, *, only_if_saving: bool = False) -> bool:
    """tx2': saving -> queued; records ``image.upload`` ERROR (text) then ``image.update``.

    When the image is gone or no longer ``saving`` only the ERROR is recorded, or
    nothing with ``only_if_saving`` (a recovery another process may have done).
    Returns whether the image went back to ``queued``.
    """
    text = upload_error_text(image_id, error)
    with rt.db.write() as session:
        image = images_repo.get(session, image_id, for_update=True)
        saving = image is not None and image.status == SAVING
        if only_if_saving and not saving:
            return False
        rt.notifier.record(session, ev.IMAGE_UPLOAD, lambda: text, priority=ev.ERROR)
        if image is not None and saving:
            image.transition(QUEUED)
            image.updated_at = utcnow()
            images_repo.update(session, image)
            queued = image.copy()
            hidden = _hidden(ctx, queued)
            rt.notifier.record(session, ev.IMAGE_UPDATE,
                               lambda: payloads.image(queued, hidden_properties=hidden))
    return saving


def recover_interrupted_uploads(rt: Runtime) -> list[str]:
    """At start-up: uploads that will never finish go back to ``queued``, with
    ``image.upload`` ERROR and ``image.update`` as for any failed upload:

    * those that died with their process while writing (the store found and
      removed their partial data, ``FilesystemStore.interrupted_uploads``);
    * stalled ones: still ``saving`` ``STALLED_AFTER`` seconds after their data
      file was complete. A file gets its final name just before the commit that
      activates the image, so that commit never came (the process died in
      between, or the database stayed unavailable); the file is then removed.

    Returns their ids."""
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
    return recovered + _recover_stalled(rt)


def _recover_stalled(rt: Runtime) -> list[str]:
    data_file = getattr(rt.store, "data_file", None)
    if data_file is None:
        return []
    with rt.db.read() as session:
        saving = images_repo.ids_with_status(session, SAVING)
    stalled = StoreError("the upload's data was complete but the image was never activated")
    recovered: list[str] = []
    now = time.time()
    for image_id in saving:
        try:
            file = data_file(image_id)
        except StoreError:
            continue
        if file is None or now - file.mtime <= STALLED_AFTER:
            continue
        # the record first (a crash between leaves a stray file, never a lost one);
        # another worker starting at the same time may have recovered it already
        if not fail_upload(rt, image_id, stalled, only_if_saving=True):
            continue
        recovered.append(image_id)
        try:
            rt.store.delete(rt.store.location_for(image_id))
        except StoreError as exc:
            # a stray file, which store check reports: no reason not to start
            LOG.error("Image %s: could not remove its stalled data: %s", image_id, exc.message)
            continue
        LOG.warning("Image %s was left saving with its data complete: back to queued, "
                    "data removed", image_id)
    return recovered


async def upload_data(rt: Runtime, ctx: RequestContext, image_id: str,
                      body: AsyncIterable[bytes], *, content_length: int | None = None,
                      ) -> Image:
    """Store ``body`` as the image's data and activate it (see the module doc).

    Raises NotFound, Forbidden, InvalidStatusTransition (409) before anything
    changes; TooLarge/QuotaExceeded (413), InvalidImageData (415), StorageFull,
    StoragePermissionDenied, StoreError, Gone (410), Conflict (409) or the body's
    own exception (client disconnect) after the image went back to ``queued``
    with nothing stored.
    A database outage at the end waits up to ``UPLOAD_PATIENCE`` (tx2 and tx2'
    are retried); beyond that DatabaseUnavailable (503) leaves the record as it
    is and keeps the data, which tx2 may have made the image's.
    """
    limits, check = await asyncio.to_thread(begin_upload, rt, ctx, image_id)
    outcome_unknown = False
    try:
        if content_length is not None:
            limits.check(content_length)
        stored = await ingest(rt.store, image_id, body, check=check,
                              hashing_algorithm=rt.conf.hashing_algorithm, limits=limits)
        try:
            return await _finish(rt, image_id, stored, ctx)
        except DatabaseUnavailable:
            # tx2 may have committed: the data may be the image's now
            outcome_unknown = True
            LOG.error("Image %s: the database stayed unavailable at the end of its upload; "
                      "its record is left as it is and its data kept at %s",
                      image_id, stored.location)
            raise
        except BaseException:
            await asyncio.to_thread(rt.store.delete, stored.location)
            raise
    except BaseException as error:
        if not outcome_unknown:
            try:
                await outage.while_unavailable(
                    partial(fail_upload, rt, image_id, error, ctx), patience=UPLOAD_PATIENCE,
                    what=f"Putting image {image_id} back to queued after a failed upload")
            except Exception:
                LOG.exception("Could not put image %s back to queued after a failed upload",
                              image_id)
        raise


async def _finish(rt: Runtime, image_id: str, stored: Ingested,
                  ctx: RequestContext | None) -> Image:
    """tx2, waiting out a database outage of up to ``UPLOAD_PATIENCE`` seconds: when
    the database went away, the image's record tells whether tx2 committed (the
    image has the new data's location); if not, tx2 runs again."""
    try:
        return await asyncio.to_thread(finish_upload, rt, image_id, stored, ctx)
    except DatabaseUnavailable:
        pass

    def again() -> Image:
        with rt.db.read() as session:
            image = images_repo.get(session, image_id, include_deleted=True)
        if image is not None and image.location == stored.location:
            return image
        return finish_upload(rt, image_id, stored, ctx)

    return await outage.while_unavailable(
        again, patience=UPLOAD_PATIENCE, what=f"Finishing the upload of image {image_id}")
