"""Metadata definitions (metadefs): entities and the pure rules Glance applies to them.

A *namespace* groups property definitions, *objects* (named groups of
property definitions), *tags*, and *resource type associations* (which
resource types -- ``OS::Glance::Image``, ``OS::Nova::Flavor`` ... -- the
namespace applies to, with an optional property name ``prefix``).

Property definitions are normalized as Glance's WSME ``PropertyType`` model
does before it stores them (after the JSON Schema check, which the API does):
unknown keys are refused, text fields must be strings, integer fields are
truncated to integers (``1.5`` -> ``1``), flags become booleans, and
``default`` is stored as text (``5`` -> ``"5"``, ``true`` -> ``"True"``;
an array or object becomes null). Keys given as null stay null. Where Glance
answers 500 (a non-string ``enum`` value, ``items`` without ``type``, an
unknown key inside a nested definition), :func:`normalize_property` raises
Invalid (400). Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from glimpse.exceptions import Invalid

PRIVATE: Final = "private"
PUBLIC: Final = "public"
VISIBILITIES: Final = (PUBLIC, PRIVATE)


@dataclass
class Namespace:
    """One namespace row. ``id`` is the database key (never shown)."""

    namespace: str
    owner: str
    visibility: str = PRIVATE
    protected: bool = False
    display_name: str | None = None
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    id: int | None = None


@dataclass
class MetadefObject:
    """An object. ``required``/``properties`` are None only in an object built
    from a request that left them out (Glance's create answer echoes only what
    was given); read from the database they are ``[]``/``{}`` at least."""

    name: str
    description: str | None = None
    required: list[str] | None = None
    properties: dict[str, dict[str, Any]] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class MetadefProperty:
    """A property definition: ``schema`` is the normalized definition (it holds
    ``name`` too when the definition was created through ``/properties``)."""

    name: str
    schema: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class MetadefTag:
    name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class ResourceTypeAssociation:
    name: str
    prefix: str | None = None
    properties_target: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class ResourceType:
    name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


def is_visible(namespace: Namespace, *, project_id: str | None, is_admin: bool) -> bool:
    """Glance's visibility of a namespace: admins see all; others see public
    namespaces and those their project owns."""
    return is_admin or namespace.visibility == PUBLIC or (
        project_id is not None and namespace.owner == project_id)


# --- property definitions, as Glance's PropertyType model reads them --------------------

def _text(field_name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"Invalid input for field/attribute {field_name}. Value: '{value}'. "
                      f"Wrong type. Expected '{str}', got '{type(value)}'")
    return value


def _integer(field_name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise Invalid(f"Invalid input for field/attribute {field_name}. Value: '{value}'. "
                      "Wrong type. Expected an integer") from None


_TRUE: Final = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "off", "0"})


def _flag(field_name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Invalid(f"Invalid input for field/attribute {field_name}. Value: '{value}'. "
                  "Wrong type. Expected a boolean")


def _texts(field_name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(f"Invalid input for field/attribute {field_name}. Value: '{value}'. "
                      "Wrong type. Expected a list")
    return [_text(field_name, item) for item in value]


def _default(field_name: str, value: Any) -> str | None:
    """``default`` as Glance keeps it: text; numbers and booleans as Python
    writes them; arrays and objects are dropped (null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _items(field_name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"Invalid input for field/attribute {field_name}. Value: '{value}'. "
                      "Wrong type. Expected an object")
    unknown = set(value) - {"type", "enum"}
    if unknown:
        raise Invalid(f"Unknown attribute for argument items: {', '.join(sorted(unknown))}")
    if "type" not in value:
        raise Invalid("Invalid input for field/attribute type. Value: 'None'. "
                      "Mandatory field missing.")
    out: dict[str, Any] = {"type": None if value["type"] is None else _text("type", value["type"])}
    if "enum" in value:
        out["enum"] = None if value["enum"] is None else _texts("enum", value["enum"])
    return out


# Glance's PropertyType attributes, in the order its JSON shows them.
_PROPERTY_FIELDS: Final[tuple[tuple[str, Callable[[str, Any], Any]], ...]] = (
    ("name", _text), ("type", _text), ("title", _text), ("description", _text),
    ("operators", _texts), ("default", _default), ("readonly", _flag),
    ("minimum", _integer), ("maximum", _integer), ("enum", _texts), ("pattern", _text),
    ("minLength", _integer), ("maxLength", _integer), ("confidential", _flag),
    ("items", _items), ("uniqueItems", _flag), ("minItems", _integer),
    ("maxItems", _integer), ("additionalItems", _flag),
)
_PROPERTY_FIELD_NAMES: Final = frozenset(name for name, _ in _PROPERTY_FIELDS)


def normalize_property(definition: Any) -> dict[str, Any]:
    """A property definition as Glance stores and shows it (see the module doc):
    only the keys given, in Glance's order. Raises Invalid for an unknown key or
    a value of the wrong kind."""
    if not isinstance(definition, dict):
        raise Invalid(f"Invalid input for a property definition: '{definition}'. "
                      "Expected an object")
    unknown = set(definition) - _PROPERTY_FIELD_NAMES
    if unknown:
        raise Invalid(f"Unknown attribute for argument property: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, convert in _PROPERTY_FIELDS:
        if name not in definition:
            continue
        value = definition[name]
        out[name] = None if value is None else convert(name, value)
    return out


def normalize_properties(definitions: Any) -> dict[str, dict[str, Any]]:
    """``{name: definition}`` of a namespace or an object, each normalized."""
    if definitions is None:
        return {}
    if not isinstance(definitions, dict):
        raise Invalid("Invalid input for field/attribute properties. Expected an object")
    return {name: normalize_property(value) for name, value in definitions.items()}


def required_to_text(required: list[str] | None) -> str | None:
    """An object's ``required`` list as stored: a JSON array (none: NULL). Glance
    joins it with commas, which splits a name holding one on the way back."""
    return json.dumps(required) if required else None


def required_from_text(text: str | None) -> list[str]:
    if not text:
        return []
    value = json.loads(text)
    return [str(item) for item in value] if isinstance(value, list) else []


def check_addressable(kind: str, name: Any) -> None:
    """Invalid unless ``name`` can appear as one segment of a URL path: not empty,
    not ``.`` or ``..`` (clients fold those away) and without ``/`` (a request path
    is decoded before routing, so ``%2F`` is a ``/`` too). Such a name could be
    created but never read, changed or deleted again."""
    if isinstance(name, str) and (name in ("", ".", "..") or "/" in name):
        raise Invalid(f"Invalid name of {kind}: {name!r} cannot be used in a URL "
                      "(it must not be empty, '.' or '..', nor contain '/').")


# --- resource type prefixes ---------------------------------------------------------------

def prefix_for(associations: list[ResourceTypeAssociation], resource_type: str) -> str | None:
    """The ``prefix`` the namespace declares for ``resource_type`` (None: no
    association, or an association without a prefix)."""
    for association in associations:
        if association.name == resource_type:
            return association.prefix
    return None


def prefixed_properties(properties: Mapping[str, dict[str, Any]],
                        prefix: str | None) -> dict[str, dict[str, Any]]:
    """Property definitions keyed by ``prefix + name`` (as given when no prefix)."""
    if not prefix:
        return dict(properties)
    return {prefix + name: value for name, value in properties.items()}


def prefixed_object(obj: MetadefObject, prefix: str | None) -> MetadefObject:
    """A copy of ``obj`` whose property names and ``required`` entries carry ``prefix``."""
    if not prefix:
        return obj
    return MetadefObject(name=obj.name, description=obj.description,
                         required=[prefix + name for name in obj.required or []],
                         properties=prefixed_properties(obj.properties or {}, prefix),
                         created_at=obj.created_at, updated_at=obj.updated_at)


def unprefixed_name(property_name: str, prefix: str | None) -> str | None:
    """``property_name`` without the association's ``prefix``; None when it does
    not start with it (or the association has no prefix), as Glance: such a
    name does not name a property of the namespace for that resource type."""
    if prefix and property_name.startswith(prefix):
        return property_name[len(prefix):]
    return None
