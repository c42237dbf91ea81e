"""What an import task does, from ``processing`` to ``success``/``failure``.

Two task types run here:

* ``import`` (legacy ``POST /v2/tasks``): input ``{import_from, import_from_format,
  image_properties}``; the image is created when the task starts processing.
* ``api_image_import`` (``POST /v2/images/{id}/import``): input as Glance's,
  ``{image_id, import_req: {method: {name, uri?}}, backend}``; methods
  ``web-download`` (image ``queued``) and ``glance-direct`` (image ``uploading``,
  data in the staging area).

Steps (no transaction spans a transfer):

1. tx: task pending -> processing (``task.processing``); for ``import`` the image
   is created (``image.create``); image -> ``importing`` (``image.update``,
   ``image.prepare``); the project's remaining quota is read.
2. the data streams into the store through the same ingest pipeline as uploads
   (:func:`glimpse.services.data_pipeline.ingest`: MD5 + multihash, size cap and
   quota enforced while streaming, nothing partial kept).
3. tx: image -> ``active`` with size/hashes/location (``image.upload``,
   ``image.activate``, ``image.update``) and task -> ``success`` with
   ``{"image_id": ...}`` (``task.success``), committed together.

On any failure: the stored data is deleted; one tx returns the image to
``queued`` with the store listed in ``os_glance_failed_import`` (``image.upload``
ERROR if data had started to flow, then ``image.update``) and fails the task
(``task.failure`` with the reason); staged data is removed.

Everything here blocks; the executor calls :func:`run` in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

from glimpse.auth.context import RequestContext
from glimpse.auth.property_protection import unreadable_in_background
from glimpse.db import images_repo, tasks_repo
from glimpse.db.engine import utcnow
from glimpse.domain.image import ACTIVE, IMPORTING, QUEUED, UPLOADING, Image
from glimpse.domain.task import PENDING, PROCESSING, Task
from glimpse.exceptions import Conflict, GlimpseError, Gone, ImportFailed, Invalid
from glimpse.notifications import catalogue as ev
from glimpse.notifications import payloads
from glimpse.runtime import Runtime
from glimpse.services import tasks as task_service
from glimpse.services.data_pipeline import (
    Ingested,
    Limits,
    check_limits_at_commit,
    ingest,
    limits_for,
)
from glimpse.services.image_format import ContentCheck
from glimpse.tasks import fetch, staging
from glimpse.tasks.url_filter import FilterRules, check_url

LOG = logging.getLogger(__name__)

WEB_DOWNLOAD: Final = "web-download"
GLANCE_DIRECT: Final = "glance-direct"
IMPORT_TASK_PROP: Final = "os_glance_import_task"
IMPORTING_PROP: Final = payloads.IMPORTING_TO_STORES
FAILED_PROP: Final = payloads.FAILED_IMPORT
SHUTDOWN: Final = "Glimpse was shut down during the import; start the import again."
LEGACY_INPUT_KEYS: Final = ("import_from", "import_from_format", "image_properties")


# -- validation (API time) ---------------------------------------------------------------

def rules(rt: Runtime) -> FilterRules:
    return FilterRules.from_conf(rt.conf.import_filtering_opts)


def validate_task_body(rt: Runtime, ctx: RequestContext, body: Any) -> tuple[str, dict[str, Any]]:
    """Check a ``POST /v2/tasks`` body; returns ``(type, input)``. Raises Invalid."""
    from glimpse.api import schemas

    if not isinstance(body, dict):
        raise Invalid("Task body must be a JSON object.")
    # Glance's order: the two required keys, then the schema, then the input
    for key in ("type", "input"):
        if body.get(key) is None:
            raise Invalid(f"Task '{key}' is required")
    task_type, task_input = body["type"], body["input"]
    if task_type not in task_service.TASK_TYPES:
        raise Invalid(f"Invalid type value: {task_type!r} is not one of "
                      f"{list(task_service.TASK_TYPES)}")
    if not isinstance(task_input, dict):
        raise Invalid("Task 'input' must be a JSON object.")
    schemas.validate_task(body)             # types, enums, and no unknown keys
    if task_type != task_service.LEGACY_IMPORT:
        raise Invalid(f"Tasks of type {task_type!r} cannot be created through the tasks "
                      "API; use the image import call.")
    missing = [key for key in LEGACY_INPUT_KEYS if key not in task_input]
    if missing:
        raise Invalid(f"Input for import task is missing: {', '.join(missing)}")
    for key in ("import_from", "import_from_format"):
        if not isinstance(task_input[key], str) or not task_input[key]:
            raise Invalid(f"Input '{key}' of an import task must be a non-empty string.")
    properties = task_input["image_properties"]
    if not isinstance(properties, dict):
        raise Invalid("Input 'image_properties' of an import task must be a JSON object.")
    validate_image_properties(rt, ctx, properties)
    check_url(task_input["import_from"], rules(rt), what="URI for legacy import task")
    return task_type, task_input


def validate_image_properties(rt: Runtime, ctx: RequestContext,
                              properties: dict[str, Any]) -> None:
    """The image an ``import`` task will create must be valid and allowed: checked
    now with the images service's own rules (schema, read-only and reserved
    attributes, ``add_image`` policy, visibility, quotas), so that the task cannot
    fail later for this. Every refusal is Invalid (400) naming the cause."""
    from glimpse.api import schemas
    from glimpse.services import access
    from glimpse.services import images as image_service

    try:
        image_service.check_create_allowed(properties)
        schemas.validate_image(properties)
        image = image_service.image_from_body(ctx, properties)
        access.authorize(ctx, access.ADD_IMAGE, image)
        if image.visibility == "public":
            access.authorize(ctx, access.PUBLICIZE_IMAGE, image)
        elif image.visibility == "community":
            access.authorize(ctx, access.COMMUNITIZE_IMAGE, image)
        image_service.check_tag_quota(rt, image.tags)
        image_service.check_property_quota(rt, image.properties)
    except Invalid as exc:
        raise Invalid(f"Invalid image_properties: {exc.message}") from exc
    except GlimpseError as exc:
        raise Invalid(f"Invalid image_properties: {exc.message}") from exc


# -- running -----------------------------------------------------------------------------


def event_image(image: Image) -> dict[str, Any]:
    """Image payload for events of background work: the requester's roles are not
    known here, so every property not readable by everyone is left out."""
    return payloads.image(image, hidden_properties=unreadable_in_background(image.properties))


def event_image_with_lists(image: Image) -> dict[str, Any]:
    """``image.prepare``/``image.upload`` payload of background work (see event_image)."""
    return payloads.image_with_import_lists(
        image, hidden_properties=unreadable_in_background(image.properties))


class _Failed(Exception):
    """Carries the message the task fails with."""


def run(rt: Runtime, task: Task, node: str | None = None,
        cancel: threading.Event | None = None) -> None:
    """Run a task claimed by ``node`` to its end. Never raises for task-level
    failures: those end the task as ``failure``. Raises only if the database is
    unreachable (the claim then expires and recovery fails the task). Does nothing
    when the task is no longer pending or no longer claimed by ``node``. Setting
    ``cancel`` (service shutdown) fails the task at the next chunk."""
    state = _State(rt, task, node, cancel or threading.Event())
    try:
        state.begin()
        if state.finished:
            return
        stored = state.transfer()
        state.finish(stored)
    except BaseException as error:
        message = _message(error)
        if not isinstance(error, GlimpseError | _Failed):
            LOG.exception("Task %s failed unexpectedly", task.id)
        state.cleanup_data()
        state.fail(message, data_started=state.prepared, error=error)
        if not isinstance(error, Exception):
            raise


def _message(error: BaseException) -> str:
    if isinstance(error, GlimpseError):
        return error.message
    if isinstance(error, _Failed):
        return str(error)
    return f"Task failed due to an internal error ({type(error).__name__})."


class _State:
    """One task run: what has happened so far (for clean-up on failure)."""

    def __init__(self, rt: Runtime, task: Task, node: str | None,
                 cancel: threading.Event) -> None:
        self.rt = rt
        self.node = node
        self.cancel = cancel
        self.task = task
        self.image_id: str | None = task.image_id or task.input.get("image_id")
        self.method = (task.input.get("import_req", {}).get("method", {})
                       if task.type == task_service.API_IMAGE_IMPORT else {})
        self.method_name = self.method.get("name") if isinstance(self.method, dict) else None
        self.limits = Limits()
        self.check: ContentCheck | None = None
        self.prepared = False
        self.finished = False
        self.stored: Ingested | None = None
        self.staging = staging.from_conf(rt.conf)

    # 1 ------------------------------------------------------------------------------------
    def begin(self) -> None:
        rt = self.rt
        with rt.db.write() as session:
            task = task_service.load_for_update(session, self.task.id)
            if task is None or task.status != PENDING or (
                    self.node is not None
                    and not tasks_repo.still_claimed_by(session, task.id, self.node)):
                self.finished = True
                return
            self.task = task
            task_service.start_processing(rt, session, task)
            if task.type == task_service.LEGACY_IMPORT:
                image = self._create_image(session, task)
                task.image_id = image.id
                self.image_id = image.id
                tasks_repo.update_task(session, task)
            elif task.type == task_service.API_IMAGE_IMPORT:
                image = self._load_image(session)
            else:
                raise _Failed(f"Unsupported task type {task.type!r}.")
            if self.method_name == GLANCE_DIRECT:
                if image.status != UPLOADING or not self.staging.exists(image.id):
                    raise _Failed(f"Image {image.id} has no staged data to import.")
            elif image.status != QUEUED:
                raise _Failed(f"Image {image.id} is {image.status}; only a queued image "
                              "can be imported.")
            image.transition(IMPORTING)
            image.properties[IMPORTING_PROP] = self._store_id()
            image.properties[FAILED_PROP] = ""
            image.updated_at = utcnow()
            images_repo.update(session, image)
            snapshot = image.copy()
            rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: event_image(snapshot))
            rt.notifier.record(session, ev.IMAGE_PREPARE,
                               lambda: event_image_with_lists(snapshot))
            self.limits = limits_for(rt.conf, session, image)
            self.check = ContentCheck.for_image(image, rt.conf)
        self.prepared = True

    def _store_id(self) -> str:
        return str(getattr(self.rt.store, "id", "") or self.rt.conf.glance_store.default_store)

    def _load_image(self, session: Any) -> Image:
        if not self.image_id:
            raise _Failed("The import task names no image.")
        image = images_repo.get(session, self.image_id, for_update=True)
        if image is None:
            raise _Failed(f"Image {self.image_id} could not be found; it may have been "
                          "deleted.")
        return image

    def _create_image(self, session: Any, task: Task) -> Image:
        """The image of a legacy ``import`` task, owned by the task's project, built by
        the images service's own rules (validated when the task was created)."""
        from glimpse.services import images as image_service

        owner_ctx = RequestContext(project_id=task.owner, user_id=task.user_id,
                                   roles=frozenset({"member"}))
        image = image_service.image_from_body(owner_ctx,
                                              dict(task.input.get("image_properties") or {}))
        if images_repo.exists_any(session, image.id):
            raise _Failed(f"Image ID {image.id} already exists!")
        images_repo.add(session, image)
        created = image.copy()
        self.rt.notifier.record(session, ev.IMAGE_CREATE, lambda: event_image(created))
        return image

    # 2 ------------------------------------------------------------------------------------
    def transfer(self) -> Ingested:
        assert self.image_id is not None
        image_id = self.image_id
        rt = self.rt
        if self.method_name == GLANCE_DIRECT:
            source: Iterator[bytes] = self._watch(self.staging.read(image_id))
            self.stored = asyncio.run(self._ingest(image_id, source))
            return self.stored
        url = (self.method.get("uri") if self.method_name == WEB_DOWNLOAD
               else self.task.input.get("import_from"))
        if self.method_name not in (None, WEB_DOWNLOAD):
            raise _Failed(f"Unknown import method {self.method_name!r}.")
        with fetch.open_download(str(url), rules(rt),
                                 timeout=rt.conf.task.download_timeout,
                                 deadline=rt.conf.task.download_deadline) as download:
            if download.content_length is not None:
                self.limits.check(download.content_length)
            done = threading.Event()

            def abort_on_cancel() -> None:
                # A read blocked on a stalled server would not see ``cancel``.
                while not done.wait(0.5):
                    if self.cancel.is_set():
                        download.abort()
                        return

            threading.Thread(target=abort_on_cancel, daemon=True,
                             name=f"abort-{image_id[:8]}").start()
            try:
                self.stored = asyncio.run(self._ingest(image_id,
                                                       self._watch(download.iter_bytes())))
            finally:
                done.set()
        return self.stored

    def _watch(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                if self.cancel.is_set():
                    raise _Failed(SHUTDOWN)
                yield chunk
        except ImportFailed:
            if self.cancel.is_set():
                raise _Failed(SHUTDOWN) from None
            raise

    async def _ingest(self, image_id: str, chunks: Iterator[bytes]) -> Ingested:
        return await ingest(self.rt.store, image_id, _async_chunks(chunks),
                            hashing_algorithm=self.rt.conf.hashing_algorithm,
                            limits=self.limits, check=self.check)

    # 3 ------------------------------------------------------------------------------------
    def finish(self, stored: Ingested) -> None:
        rt = self.rt
        with rt.db.write() as session:
            task = task_service.load_for_update(session, self.task.id)
            if task is None or task.status != PROCESSING:
                raise _Failed("The task was ended by someone else during the import.")
            image = images_repo.get(session, str(self.image_id), for_update=True,
                                    include_deleted=True)
            if image is None or image.deleted:
                raise Gone(f"Image {self.image_id} could not be found after upload. The image "
                           "may have been deleted during the upload.")
            if image.status != IMPORTING:
                raise Conflict(f"Image {image.id} is {image.status}, no longer importing.")
            check_limits_at_commit(rt.conf, session, image, stored.size)
            image.size = stored.size
            image.checksum = stored.checksum
            image.os_hash_algo = stored.os_hash_algo
            image.os_hash_value = stored.os_hash_value
            image.location = stored.location
            if stored.virtual_size:          # what the content check found
                image.virtual_size = stored.virtual_size
            image.properties[IMPORTING_PROP] = ""
            image.properties[FAILED_PROP] = ""
            image.properties.pop(IMPORT_TASK_PROP, None)
            image.transition(ACTIVE)
            image.updated_at = utcnow()
            images_repo.update(session, image)
            done = image.copy()
            rt.notifier.record(session, ev.IMAGE_UPLOAD,
                               lambda: event_image_with_lists(done))
            rt.notifier.record(session, ev.IMAGE_ACTIVATE, lambda: event_image(done))
            rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: event_image(done))
            task_service.succeed(rt, session, task, {"image_id": image.id})
        self.task = task
        self.stored = None   # committed: the data now belongs to the image
        if self.method_name == GLANCE_DIRECT:
            self.staging.delete(image.id)

    # failure ------------------------------------------------------------------------------
    def cleanup_data(self) -> None:
        if self.stored is not None:
            try:
                self.rt.store.delete(self.stored.location)
            except Exception:
                LOG.exception("Could not delete data of failed import task %s", self.task.id)
            self.stored = None

    def fail(self, message: str, *, data_started: bool, error: BaseException | None) -> None:
        try:
            fail_task(self.rt, self.task.id, message, data_started=data_started, error=error)
        except Exception:
            LOG.exception("Could not record the failure of task %s", self.task.id)
            raise


def fail_task(rt: Runtime, task_id: str, message: str, *, data_started: bool = False,
              error: BaseException | None = None) -> None:
    """End ``task_id`` as failure and put its image back to ``queued`` with
    ``os_glance_failed_import`` set; remove staged data. One transaction.
    Also used by the executor's recovery of tasks whose process died."""
    staging_area = staging.from_conf(rt.conf)
    image_id: str | None = None
    with rt.db.write() as session:
        task = task_service.load_for_update(session, task_id)
        if task is None or task.status not in (PENDING, PROCESSING):
            return
        image_id = task.image_id or task.input.get("image_id")
        if image_id:
            image = images_repo.get(session, image_id, for_update=True)
            if image is not None and image.status in (IMPORTING, UPLOADING, QUEUED) and (
                    task.type == task_service.LEGACY_IMPORT
                    or image.properties.get(IMPORT_TASK_PROP) == task.id
                    or image.status == IMPORTING):
                _image_back_to_queued(rt, session, image, message, data_started, error)
            elif image is not None and image.properties.get(IMPORT_TASK_PROP) == task.id:
                # The image moved on without this import (e.g. data uploaded directly):
                # only drop the marker of the import that is over.
                image.properties.pop(IMPORT_TASK_PROP)
                images_repo.update(session, image)
        task_service.fail(rt, session, task, message)
    if image_id:
        with contextlib.suppress(Exception):
            if task.type == task_service.API_IMAGE_IMPORT and task.input.get(
                    "import_req", {}).get("method", {}).get("name") == GLANCE_DIRECT:
                staging_area.delete(image_id)


def _image_back_to_queued(rt: Runtime, session: Any, image: Image, message: str,
                          data_started: bool, error: BaseException | None) -> None:
    store_id = str(getattr(rt.store, "id", "") or rt.conf.glance_store.default_store)
    if data_started and image.status == IMPORTING:
        text = (f"Failed to upload image data for image {image.id}: {message}"
                if not isinstance(error, GlimpseError) or image.id not in message else message)
        rt.notifier.record(session, ev.IMAGE_UPLOAD, lambda: text, priority=ev.ERROR)
    if image.status != QUEUED:
        image.transition(QUEUED)
    image.size = None if image.location is None else image.size
    image.properties[IMPORTING_PROP] = ""
    image.properties[FAILED_PROP] = store_id
    image.properties.pop(IMPORT_TASK_PROP, None)
    image.updated_at = utcnow()
    images_repo.update(session, image)
    queued = image.copy()
    rt.notifier.record(session, ev.IMAGE_UPDATE, lambda: event_image(queued))


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking chunk iterator as an async one (each ``next`` in a worker thread)."""
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        yield chunk



def sweep_staging(rt: Runtime, *, part_age: float = 3600.0) -> int:
    """Remove staged data no image needs any more: its image was deleted or is no
    longer ``uploading``/``importing``; and temporary files older than ``part_age``
    seconds (left by a crash while staging). Returns how many files were removed."""
    import time

    area = staging.from_conf(rt.conf)
    if not area.root.is_dir():
        return 0
    removed = 0
    for path in area.root.iterdir():
        try:
            if path.name.startswith("."):
                if path.name.endswith(".part") and \
                        time.time() - path.stat().st_mtime > part_age:
                    path.unlink()
                    removed += 1
                continue
            with rt.db.read() as session:
                image = images_repo.get(session, path.name)
            if image is None or image.status not in (UPLOADING, IMPORTING):
                area.delete(path.name)
                removed += 1
        except OSError:
            LOG.warning("Could not sweep staged file %s", path, exc_info=True)
    return removed
