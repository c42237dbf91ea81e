"""Image members: projects an image is shared with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

PENDING: Final = "pending"
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
MEMBER_STATUSES: Final = (PENDING, ACCEPTED, REJECTED)


@dataclass
class Member:
    image_id: str
    member_id: str
    status: str = PENDING
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None
