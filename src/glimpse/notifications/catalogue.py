"""The event types Glimpse produces (contract section 3) and ``disabled_notifications``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

INFO: Final = "INFO"
WARN: Final = "WARN"
ERROR: Final = "ERROR"
PRIORITIES: Final = (INFO, WARN, ERROR)

IMAGE_CREATE: Final = "image.create"
IMAGE_PREPARE: Final = "image.prepare"
IMAGE_UPLOAD: Final = "image.upload"
IMAGE_ACTIVATE: Final = "image.activate"
IMAGE_SEND: Final = "image.send"
IMAGE_UPDATE: Final = "image.update"
IMAGE_DELETE: Final = "image.delete"
MEMBER_CREATE: Final = "image.member.create"
MEMBER_UPDATE: Final = "image.member.update"
MEMBER_DELETE: Final = "image.member.delete"
TASK_CREATE: Final = "task.create"
TASK_RUN: Final = "task.run"
TASK_PROCESSING: Final = "task.processing"
TASK_SUCCESS: Final = "task.success"
TASK_FAILURE: Final = "task.failure"

EVENT_TYPES: Final = (
    IMAGE_CREATE, IMAGE_PREPARE, IMAGE_UPLOAD, IMAGE_ACTIVATE, IMAGE_SEND, IMAGE_UPDATE,
    IMAGE_DELETE, MEMBER_CREATE, MEMBER_UPDATE, MEMBER_DELETE, TASK_CREATE, TASK_RUN,
    TASK_PROCESSING, TASK_SUCCESS, TASK_FAILURE,
)


def is_disabled(event_type: str, disabled: Iterable[str]) -> bool:
    """True when an entry equals ``event_type`` or a prefix of it ending at a dot.

    ``image`` disables every ``image.*`` (members included); ``image.member``
    the three member events; ``image.send`` only downloads (contract section 5).
    """
    for entry in disabled:
        entry = entry.strip()
        if entry and (event_type == entry or event_type.startswith(entry + ".")):
            return True
    return False
