"""Image PATCH documents: parsing, validation and application (Glance's rules).

Pure: no I/O. Two media types, as Glance:

- ``application/openstack-images-v2.1-json-patch`` (draft 10):
  ``[{"op": "add"|"replace"|"remove", "path": "/name", "value": ...}]``;
- ``application/openstack-images-v2.0-json-patch`` (draft 4):
  ``[{"add": "/name", "value": ...}]``; ``add`` of an existing attribute -> 409.

:func:`parse_patch` checks the document's shape and each change's path and
value (read-only -> Forbidden "Attribute 'x' is read-only.", reserved ->
Forbidden "Attribute 'x' is reserved.", value against the image schema via the
``validate`` callback -> Invalid). :func:`apply_change` applies one change to an
:class:`~glimpse.domain.image.Image` copy (no permission checks: the service
checks ``modify_image``/``publicize_image``/... before each change).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from glimpse.domain.image import Image
from glimpse.exceptions import Conflict, Forbidden, Invalid, ReservedAttribute

PATCH_MEDIA_TYPES: Final = {
    "application/openstack-images-v2.0-json-patch": 4,
    "application/openstack-images-v2.1-json-patch": 10,
}
OPERATIONS: Final = ("add", "remove", "replace")

# Glance's RequestDeserializer lists.
READ_ONLY: Final = frozenset({"created_at", "updated_at", "status", "checksum", "size",
                              "virtual_size", "direct_url", "self", "file", "schema", "id",
                              "os_hash_algo", "os_hash_value"})
RESERVED: Final = frozenset({"location", "deleted", "deleted_at"})
RESERVED_NAMESPACE: Final = "os_glance"
# Attributes held in columns that a PATCH may set (everything else is a property).
WRITABLE_CORE: Final = frozenset({"name", "visibility", "min_disk", "min_ram", "protected",
                                  "owner", "disk_format", "container_format", "os_hidden",
                                  "tags"})
# Only these may change once an image has left ``queued``/``importing``.
_FORMAT_ATTRS: Final = ("container_format", "disk_format")


@dataclass(frozen=True)
class Change:
    op: str
    path: tuple[str, ...]
    value: Any = None
    draft: int = 10

    @property
    def name(self) -> str:
        return self.path[0]


def check_attribute_name(name: str) -> None:
    """Forbidden when ``name`` is read-only or reserved (Glance's messages)."""
    if name in READ_ONLY:
        raise ReservedAttribute(f"Attribute '{name}' is read-only.")
    if name in RESERVED or name.startswith(RESERVED_NAMESPACE):
        raise ReservedAttribute(f"Attribute '{name}' is reserved.")


def _decode_pointer(pointer: Any) -> tuple[str, ...]:
    if not isinstance(pointer, str):
        raise Invalid(f"Pointer `{pointer}` does not start with \"/\".")
    if not pointer.startswith("/"):
        raise Invalid(f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise Invalid(f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise Invalid(f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise Invalid(f"Pointer `{pointer}` does not contains valid token.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise Invalid(f'Pointer `{pointer}` contains "~" not part of a recognized escape '
                      "sequence.")
    return tuple(part.replace("~1", "/").replace("~0", "~").strip()
                 for part in pointer.lstrip("/").split("/"))


def _op_and_path(raw: dict[str, Any], draft: int) -> tuple[str, Any]:
    if draft == 10:
        op = raw.get("op")
        if op is None:
            raise Invalid("Unable to find `op` in JSON Schema change. It must be one of the "
                          f"following: {', '.join(OPERATIONS)}.")
        if op not in OPERATIONS:
            raise Invalid(f"Invalid operation: `{op}`. It must be one of the following: "
                          f"{', '.join(OPERATIONS)}.")
        if "path" not in raw:
            raise Invalid("Unable to find 'path' in JSON Schema change")
        return op, raw["path"]
    present = [key for key in OPERATIONS if key in raw]
    if len(present) > 1:
        raise Invalid('Operation objects must contain only one member named "add", '
                      '"remove", or "replace".')
    if not present:
        raise Invalid('Operation objects must contain exactly one member named "add", '
                      '"remove", or "replace".')
    return present[0], raw[present[0]]


def parse_patch(body: Any, draft: int,
                validate: Callable[[dict[str, Any]], None]) -> list[Change]:
    """The changes of a PATCH body, validated; raises Invalid (400) or
    ReservedAttribute (403). ``validate`` checks a partial image ``{name: value}``
    against the image schema (raising Invalid)."""
    if not isinstance(body, list):
        raise Invalid("Request body must be a JSON array of operation objects.")
    changes: list[Change] = []
    for raw in body:
        if not isinstance(raw, dict):
            raise Invalid("Operations must be JSON objects.")
        op, pointer = _op_and_path(raw, draft)
        path = _decode_pointer(pointer)
        depth = {"add": 2, "remove": 2, "replace": 1}[op] if path[0] == "locations" else 1
        if len(path) != depth:
            raise Invalid(f"Invalid JSON pointer for this resource: '/{'/'.join(path)}'")
        if op != "remove" and "value" not in raw:
            raise Invalid(f'Operation "{op}" requires a member named "value".')
        change = Change(op=op, path=path, value=raw.get("value"), draft=draft)
        check_attribute_name(change.name)
        if len(change.name) > 255:  # the column's size; Glance on PostgreSQL would fail
            raise Invalid("Custom property should not be greater than 255 characters.")
        if op != "remove" and len(path) == 1:
            validate({change.name: change.value})
        changes.append(change)
    return changes


def apply_change(image: Image, change: Change) -> None:
    """Apply one validated change to ``image`` (Glance's ``_do_add/_do_replace/_do_remove``).

    Raises Forbidden (locations, removing a core attribute, changing formats of
    an image that is not queued), Conflict (replace/remove of a missing
    property; draft-4 ``add`` of an existing one).
    """
    name = change.name
    if name == "locations":
        if change.op == "remove":
            raise Forbidden("It's not allowed to remove locations if locations are invisible.")
        if change.op == "replace" and not change.value:
            raise Forbidden("Cannot set locations to empty list.")
        raise Forbidden("It's not allowed to add locations if locations are invisible."
                        if change.op == "add" else
                        "It's not allowed to replace locations if locations are invisible.")
    if change.op == "remove":
        if name in WRITABLE_CORE:
            raise Forbidden(f"Property {name} may not be removed.")
        if name not in image.properties:
            raise Conflict(f"Property {name} does not exist.")
        del image.properties[name]
        return
    if change.op == "replace" and name not in WRITABLE_CORE and name not in image.properties:
        raise Conflict(f"Property {name} does not exist.")
    if change.op == "add" and change.draft == 4 and (
            name in WRITABLE_CORE or name in image.properties):
        raise Conflict(f"Property {name} already present.")
    if name in WRITABLE_CORE:
        _set_core(image, name, change.value)
    else:
        image.properties[name] = change.value


# Glance's min_disk/min_ram columns are 32-bit integers; it refuses larger values.
MAX_MIN_REQUIREMENT = 2**31 - 1


def min_requirement(name: str, value: Any) -> int:
    """A schema-valid ``min_disk``/``min_ram`` as the int to store (None: 0). Below
    zero or above ``MAX_MIN_REQUIREMENT`` -> Invalid with Glance's messages. The
    schema's "integer" admits whole floats (and the JSON parser turns integers
    beyond 64 bits into floats), so those are checked and converted here."""
    if value is None:
        return 0
    if value < 0:
        raise Invalid(f"Invalid value '{value}' for parameter '{name}': "
                      "Cannot be a negative value")
    if value > MAX_MIN_REQUIREMENT:
        raise Invalid(f"'{name}' value out of range, must not exceed {MAX_MIN_REQUIREMENT}.")
    return int(value)


def _set_core(image: Image, name: str, value: Any) -> None:
    if name == "tags":
        image.tags = set(value or [])
    elif name in _FORMAT_ATTRS:
        if image.status not in ("queued", "importing"):
            raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
        setattr(image, name, value)
    elif name in ("min_disk", "min_ram"):
        setattr(image, name, min_requirement(name, value))
    else:
        setattr(image, name, value)
