"""Tasks (Glance's import tasks) and their status machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from glimpse.exceptions import InvalidStatusTransition

PENDING: Final = "pending"
PROCESSING: Final = "processing"
SUCCESS: Final = "success"
FAILURE: Final = "failure"
TASK_STATUSES: Final = (PENDING, PROCESSING, SUCCESS, FAILURE)

TASK_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    PENDING: frozenset({PROCESSING, FAILURE}),
    PROCESSING: frozenset({SUCCESS, FAILURE}),
    SUCCESS: frozenset(),
    FAILURE: frozenset(),
}


@dataclass
class Task:
    id: str
    type: str
    owner: str | None
    status: str = PENDING
    input: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    message: str = ""
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    image_id: str | None = None
    request_id: str | None = None
    user_id: str | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def transition(self, new_status: str) -> None:
        if new_status not in TASK_TRANSITIONS[self.status]:
            raise InvalidStatusTransition(
                f"Task status transition from {self.status} to {new_status} is not allowed")
        self.status = new_status
