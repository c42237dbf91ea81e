"""Interoperable image import: discovery, staging (``glance-direct``) and the import call.

* :func:`import_methods` - ``GET /v2/info/import`` (and the create answer's
  ``OpenStack-image-import-methods``): the ``[DEFAULT] enabled_import_methods``
  Glimpse can run.
* :func:`stage` - ``PUT /v2/images/{id}/stage``: tx1 ``queued`` -> ``uploading``
  (``image.update``); the body streams into the staging area (``image_size_cap``
  and ``user_storage_quota`` enforced while streaming; nothing partial kept);
  tx2 records the staged size (``image.update``). On failure the staged data is
  removed and the image goes back to ``queued`` (``image.update``).
* :func:`request_import` - ``POST /v2/images/{id}/import``: checks the method
  and the image, then in one transaction creates a pending ``api_image_import``
  task (``task.create``) and marks the image with ``os_glance_import_task``;
  the executor does the rest (:mod:`glimpse.tasks.import_flow`).

Errors: NotFound (image not visible), Forbidden (not allowed), Invalid (bad
request, URL refused), Conflict (image status or an import already running),
TooLarge/QuotaExceeded (staging over the limits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from typing import Any

from glimpse.auth.context import RequestContext
from glimpse.db import images_repo, tasks_repo
from glimpse.db.engine import utcnow
from glimpse.domain.image import QUEUED, UPLOADING, Image
from glimpse.domain.task import PENDING, PROCESSING
from glimpse.exceptions import Conflict, Invalid, NotFound
from glimpse.notifications import catalogue as ev
from glimpse.runtime import Runtime
from glimpse.services import access
from glimpse.services import tasks as task_service
from glimpse.services.data_pipeline import Limits, check_limits_at_commit, limits_for
from glimpse.tasks import import_flow, staging
from glimpse.tasks.url_filter import check_url

LOG = logging.getLogger(__name__)
KNOWN_METHODS = (import_flow.GLANCE_DIRECT, import_flow.WEB_DOWNLOAD, "copy-image",
                 "glance-download")
# What Glimpse can run: copy-image needs a second store, glance-download a second cloud.
SUPPORTED_METHODS = (import_flow.GLANCE_DIRECT, import_flow.WEB_DOWNLOAD)


def import_methods(rt: Runtime) -> list[str]:
    """The methods offered (``/v2/info/import``): those enabled that Glimpse can run,
    so that a client never picks one that every request would then refuse."""
    return [m for m in rt.conf.enabled_import_methods if m in SUPPORTED_METHODS]


# -- stage ---------------------------------------------------------------------------------

def _begin_stage(rt: Runtime, ctx: RequestContext, image_id: str) -> Limits:
    with rt.db.write() as session:
        image = access.get_visible_image(session, ctx, image_id, for_update=True)
        access.authorize(ctx, access.UPLOAD_IMAGE, image)
        if import_flow.GLANCE_DIRECT not in rt.conf.enabled_import_methods:
            raise NotFound("The glance-direct import method is not enabled.")
        image.transition(UPLOADING)
        image.updated_at = utcnow()
        images_repo.update(session, image)
        limits = limits_for(rt.conf, session, image)
        snapshot = image.copy()
        rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: import_flow.event_image(snapshot))
    return limits


def _finish_stage(rt: Runtime, image_id: str, size: int) -> None:
    with rt.db.write() as session:
        image = images_repo.get(session, image_id, for_update=True)
        if image is None or image.status != UPLOADING:
            raise Conflict(f"Image {image_id} changed while its data was being staged.")
        check_limits_at_commit(rt.conf, session, image, size)
        image.size = size
        image.updated_at = utcnow()
        images_repo.update(session, image)
        snapshot = image.copy()
        rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: import_flow.event_image(snapshot))


def _fail_stage(rt: Runtime, image_id: str) -> None:
    with rt.db.write() as session:
        image = images_repo.get(session, image_id, for_update=True)
        if image is None or image.status != UPLOADING:
            return
        image.transition(QUEUED)
        image.size = None
        image.updated_at = utcnow()
        images_repo.update(session, image)
        snapshot = image.copy()
        rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: import_flow.event_image(snapshot))


async def stage(rt: Runtime, ctx: RequestContext, image_id: str, body: AsyncIterable[bytes],
                *, content_length: int | None = None) -> None:
    """``PUT /v2/images/{id}/stage`` (see the module doc). Blocks only in threads."""
    limits = await asyncio.to_thread(_begin_stage, rt, ctx, image_id)
    area = staging.from_conf(rt.conf)
    try:
        if content_length is not None:
            limits.check(content_length)
        size = await area.write_stream(image_id, body, limits.check)
        await asyncio.to_thread(_finish_stage, rt, image_id, size)
    except BaseException:
        await asyncio.to_thread(area.delete, image_id)
        try:
            await asyncio.to_thread(_fail_stage, rt, image_id)
        except Exception:
            LOG.exception("Could not put image %s back to queued after failed staging",
                          image_id)
        raise


# -- import ----------------------------------------------------------------------------------

def _method_of(rt: Runtime, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("Import request body must be a JSON object.")
    method = body.get("method")
    if method is None:
        raise Invalid("Import request requires a 'method' field.")
    if not isinstance(method, dict):
        raise Invalid("Import request 'method' must be a JSON object.")
    name = method.get("name")
    if name not in KNOWN_METHODS:
        raise Invalid(f"Unknown import method name '{name}'.")
    if name not in import_methods(rt):
        raise Invalid(f"Import method {name} is not enabled.")
    for flag in ("all_stores_must_succeed", "all_stores"):
        if flag in body and not isinstance(body[flag], bool):
            raise Invalid(f"'{flag}' must be boolean value only")
    if name == import_flow.WEB_DOWNLOAD:
        check_url(method.get("uri"), import_flow.rules(rt), what="URI for web-download")
    stores = body.get("stores")
    if stores is not None:
        known = {str(getattr(rt.store, "id", "") or "file")}
        if (not isinstance(stores, list) or not all(isinstance(s, str) for s in stores)
                or not set(stores) <= known):
            raise Invalid(f"Unknown stores {stores!r}: this service has {sorted(known)}.")
    return method


def _active_import(session: Any, image: Image) -> bool:
    task_id = image.properties.get(import_flow.IMPORT_TASK_PROP)
    if not task_id:
        return False
    task = tasks_repo.get(session, task_id, now=utcnow(), include_expired=True)
    return task is not None and task.status in (PENDING, PROCESSING)


def request_import(rt: Runtime, ctx: RequestContext, image_id: str, body: Any) -> str:
    """``POST /v2/images/{id}/import``: returns the new task's id (see the module doc)."""
    method = _method_of(rt, body)
    name = method["name"]
    with rt.db.write() as session:
        image = access.get_visible_image(session, ctx, image_id, for_update=True)
        access.authorize(ctx, access.MODIFY_IMAGE, image)
        if _active_import(session, image):
            raise Conflict("Image has active task")
        if name == import_flow.GLANCE_DIRECT:
            # Staged = uploading with its size recorded (staging committed) and data there.
            if image.status != UPLOADING or image.size is None or not staging.from_conf(
                    rt.conf).exists(image.id):
                raise Conflict("Image needs to be staged before 'glance-direct' method can "
                               "be used")
        elif image.status != QUEUED:
            raise Conflict(f"Image with status {image.status} cannot be target for import")
        for attr in ("container_format", "disk_format"):
            if not getattr(image, attr):
                raise Conflict(f"'{attr}' needs to be set before import")
        task_input = {"image_id": image.id, "import_req": body, "backend": [None]}
        task = task_service.insert_pending(rt, session, ctx, task_service.API_IMAGE_IMPORT,
                                           task_input, image_id=image.id)
        image.properties[import_flow.IMPORT_TASK_PROP] = task.id
        images_repo.update(session, image)
    return task.id
