"""The image entity and its status machine (Glance's statuses and transitions)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from glimpse.exceptions import Invalid, InvalidStatusTransition

QUEUED: Final = "queued"
SAVING: Final = "saving"
UPLOADING: Final = "uploading"     # glance-direct: data staged, not yet imported
IMPORTING: Final = "importing"
ACTIVE: Final = "active"
KILLED: Final = "killed"
DEACTIVATED: Final = "deactivated"
PENDING_DELETE: Final = "pending_delete"
DELETED: Final = "deleted"

STATUSES: Final = (QUEUED, SAVING, UPLOADING, IMPORTING, ACTIVE, KILLED, DEACTIVATED,
                   PENDING_DELETE, DELETED)

# from-status -> statuses it may move to (as Glance's domain allows).
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    QUEUED: frozenset({SAVING, UPLOADING, IMPORTING, ACTIVE, DELETED}),
    SAVING: frozenset({ACTIVE, KILLED, QUEUED, DELETED}),
    UPLOADING: frozenset({IMPORTING, QUEUED, DELETED}),
    IMPORTING: frozenset({ACTIVE, QUEUED, DELETED}),
    ACTIVE: frozenset({DEACTIVATED, PENDING_DELETE, DELETED}),
    KILLED: frozenset({DELETED}),
    DEACTIVATED: frozenset({ACTIVE, DELETED}),
    PENDING_DELETE: frozenset({DELETED}),
    DELETED: frozenset(),
}

VISIBILITIES: Final = ("public", "private", "shared", "community")

# Attributes that live in their own columns; everything else is a property.
CORE_ATTRIBUTES: Final = frozenset({
    "id", "name", "status", "visibility", "owner", "disk_format", "container_format",
    "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "min_disk",
    "min_ram", "protected", "os_hidden", "created_at", "updated_at", "tags",
    "locations", "direct_url", "file", "self", "schema", "deleted", "deleted_at",
})
# Set by the service only; a client may not write them (403 on PATCH, as Glance).
READ_ONLY_ATTRIBUTES: Final = frozenset({
    "id", "status", "size", "virtual_size", "checksum", "os_hash_algo",
    "os_hash_value", "created_at", "updated_at", "file", "self", "schema", "direct_url",
    "locations", "deleted", "deleted_at",
})
# Never accepted from clients at all (Glance answers 403 "reserved").
RESERVED_ATTRIBUTES: Final = frozenset({"location", "deleted", "deleted_at"})


@dataclass
class Image:
    """An image record. ``properties`` holds user-defined properties: strings, or
    None where the schema allows null (``kernel_id``, ``ramdisk_id``)."""

    id: str
    owner: str | None
    name: str | None = None
    status: str = QUEUED
    visibility: str = "shared"
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    min_disk: int = 0
    min_ram: int = 0
    protected: bool = False
    os_hidden: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    tags: set[str] = field(default_factory=set)
    properties: dict[str, str | None] = field(default_factory=dict)
    # Internal: where the data lives (store URI). Never shown to API users or events.
    location: str | None = None

    @property
    def deleted(self) -> bool:
        return self.status == DELETED

    def transition(self, new_status: str) -> None:
        """Move to ``new_status``. Raises InvalidStatusTransition if Glance forbids the
        move, Invalid when data would be saved (``queued``/``uploading`` to
        ``saving``, ``active`` or ``importing``) while ``disk_format`` or
        ``container_format`` is unset (Glance's domain refuses both, 400)."""
        if new_status not in TRANSITIONS[self.status]:
            raise InvalidStatusTransition(
                f"Image status transition from {self.status} to {new_status} is not allowed")
        if self.status in (QUEUED, UPLOADING) and new_status in (SAVING, ACTIVE, IMPORTING):
            missing = [name for name in ("disk_format", "container_format")
                       if not getattr(self, name)]
            if missing:
                noun = "Property" if len(missing) == 1 else "Properties"
                raise Invalid(f"{noun} {', '.join(missing)} must be set prior to saving data.")
        self.status = new_status

    def copy(self) -> Image:
        return dataclasses.replace(self, tags=set(self.tags), properties=dict(self.properties))
