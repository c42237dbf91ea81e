"""Pure payload builders (contract section 4). Functions of domain objects only.

Key order matters to some consumers and is fixed here. None of these read the
clock, the database or the configuration: what they need comes in arguments.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from glimpse.domain.image import Image
from glimpse.domain.member import Member
from glimpse.domain.task import Task
from glimpse.notifications.envelope import payload_time

# Properties the service keeps for itself; shown separately in upload/prepare.
IMPORTING_TO_STORES = "os_glance_importing_to_stores"
FAILED_IMPORT = "os_glance_failed_import"
_INTERNAL_PREFIX = "os_glance_"


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def image(img: Image, *, hidden_properties: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Image metadata (section 4.1). ``hidden_properties`` are left out (property
    protections: a protected property never leaves in an event)."""
    props = {k: v for k, v in sorted(img.properties.items())
             if k not in hidden_properties and not k.startswith(_INTERNAL_PREFIX)}
    return {
        "id": img.id,
        "name": img.name,
        "status": img.status,
        "created_at": payload_time(img.created_at),
        "updated_at": payload_time(img.updated_at),
        "min_disk": img.min_disk,
        "min_ram": img.min_ram,
        "protected": img.protected,
        "checksum": img.checksum,
        "owner": img.owner,
        "disk_format": img.disk_format,
        "container_format": img.container_format,
        "size": img.size,
        "virtual_size": img.virtual_size,
        "is_public": img.visibility == "public",
        "visibility": img.visibility,
        "properties": props,
        "tags": sorted(img.tags),
        "deleted": img.deleted,
        "deleted_at": payload_time(img.deleted_at),
        "os_hash_algo": img.os_hash_algo,
        "os_hash_value": img.os_hash_value,
    }


def image_with_import_lists(img: Image, *, backend: str | None = None,
                            hidden_properties: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``image.prepare`` / ``image.upload`` INFO payload: the image plus the two
    import lists (``[]`` when not importing) and, for prepare with several
    stores configured, ``backend``."""
    payload = image(img, hidden_properties=hidden_properties)
    payload[IMPORTING_TO_STORES] = _split(img.properties.get(IMPORTING_TO_STORES))
    payload[FAILED_IMPORT] = _split(img.properties.get(FAILED_IMPORT))
    if backend is not None:
        payload["backend"] = backend
    return payload


def member(m: Member) -> dict[str, Any]:
    """Image member payload (section 4.2)."""
    return {
        "image_id": m.image_id,
        "member_id": m.member_id,
        "status": m.status,
        "created_at": payload_time(m.created_at),
        "updated_at": payload_time(m.updated_at),
        "deleted": m.deleted,
        "deleted_at": payload_time(m.deleted_at),
    }


def send(*, image_id: str, owner_id: str | None, receiver_tenant_id: str | None,
         receiver_user_id: str | None, destination_ip: str | None,
         bytes_sent: int) -> dict[str, Any]:
    """``image.send`` payload (section 4.3): the same dict for INFO, WARN and ERROR."""
    return {
        "image_id": image_id,
        "owner_id": owner_id,
        "receiver_tenant_id": receiver_tenant_id,
        "receiver_user_id": receiver_user_id,
        "destination_ip": destination_ip,
        "bytes_sent": bytes_sent,
    }


_SECRET_KEYS = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``http://user:pw@host/x`` -> ``http://***:***@host/x``; other strings unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***:***@{host}", parts.path, parts.query, parts.fragment))


def mask_secrets(value: Any) -> Any:
    """Copy of ``value`` with credentials in URLs and secret-looking keys masked."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEYS.search(str(k)) and isinstance(v, str | int)
                    else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return value


def task(t: Task) -> dict[str, Any]:
    """Task payload (section 4.5), including the description's aliases."""
    return {
        "id": t.id,
        "type": t.type,
        "status": t.status,
        "result": t.result,
        "owner": t.owner,
        "message": t.message or "",
        "expires_at": payload_time(t.expires_at),
        "created_at": payload_time(t.created_at),
        "updated_at": payload_time(t.updated_at),
        "deleted": t.deleted,
        "deleted_at": payload_time(t.deleted_at),
        "task_id": t.id,
        "task_type": t.type,
        "task_input": mask_secrets(t.input),
    }
