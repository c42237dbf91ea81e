"""``GET /v2/schemas/{image,images,member,members,task,tasks}``, ``GET
/v2/schemas/metadefs/{namespace,namespaces,...}`` and request validation.

The JSON Schema documents in ``api/schemas/*.json`` are the ones a real Glance
serves (taken verbatim from Glance 33): python-glanceclient downloads them and
validates images against them (warlock), and its CLI builds its
``--property``-style options from them, so they must stay byte-for-byte
compatible. Glimpse validates request bodies against the very same documents.

Validators are built once per process and cached. Validation failures raise
:class:`glimpse.exceptions.Invalid` with Glance's message style::

    Provided object does not match schema 'image': 'foo' is not one of [...]

followed by where the problem is (``(on instance['disk_format'])``), as the
first and last lines of Glance's own message say. Nothing here blocks or does I/O
after the first call (the documents are read from package data once).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from glimpse.exceptions import Invalid, NotFound

SCHEMA_NAMES = ("image", "images", "member", "members", "task", "tasks")
# Metadata definitions' schemas (``/v2/schemas/metadefs/<kind>``), Glance 33's
# documents as its API serves them; the singular ones validate request bodies.
METADEF_KINDS = ("namespace", "namespaces", "resource_type", "resource_types", "object",
                 "objects", "property", "properties", "tag", "tags")
METADEF_SCHEMA_NAMES = tuple(f"metadefs/{kind}" for kind in METADEF_KINDS)
# What ``POST /v2/metadefs/namespaces/{ns}/tags`` accepts (Glance's
# ``get_schema_for_list``; not served).
METADEF_TAGS_BODY: dict[str, Any] = {
    "name": "tags",
    "properties": {"tags": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}},
        "required": ["name"], "additionalProperties": False}}},
    "additionalProperties": False,
}


@cache
def _document(name: str) -> dict[str, Any]:
    if name not in SCHEMA_NAMES and name not in METADEF_SCHEMA_NAMES:
        raise NotFound(f"Unknown schema '{name}'")
    text = resources.files("glimpse.api").joinpath(
        "schemas", *f"{name}.json".split("/")).read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@cache
def _serialized(name: str) -> bytes:
    # Glance serializes with json.dumps' default separators; so do we.
    return json.dumps(_document(name)).encode("utf-8")


def schema(name: str) -> dict[str, Any]:
    """A deep copy of the named schema document (callers may modify it)."""
    return copy.deepcopy(_document(name))


def image_schema() -> dict[str, Any]:
    """The ``image`` schema (what ``GET /v2/schemas/image`` returns), as a fresh dict."""
    return schema("image")


def member_schema() -> dict[str, Any]:
    return schema("member")


def task_schema() -> dict[str, Any]:
    return schema("task")


def base_image_properties() -> frozenset[str]:
    """Names of the properties the image schema declares (core and well-known extras)."""
    return frozenset(_document("image")["properties"])


@cache
def _validator(name: str, partial: bool) -> Validator:
    doc = copy.deepcopy(METADEF_TAGS_BODY) if name == "metadefs/tags-body" else schema(name)
    if partial:
        doc.pop("required", None)
    cls = jsonschema.validators.validator_for(doc)
    cls.check_schema(doc)
    validator: Validator = cls(doc)
    return validator


def _where(error: jsonschema.ValidationError) -> str:
    if not error.absolute_path:
        return ""
    path = "".join(f"[{part!r}]" for part in error.absolute_path)
    return f" (on instance{path})"


def validate(name: str, body: Any, *, partial: bool = False, label: str | None = None,
             ) -> None:
    """Validate ``body`` against schema ``name``; raise Invalid naming the problem.

    ``partial=True`` ignores ``required`` (for PATCH-style partial documents, as
    Glance validates ``{attribute: value}`` for each change). ``label`` is the
    schema's name in the message (default ``name``).
    """
    validator = _validator(name, partial)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        raise Invalid(f"Provided object does not match schema '{label or name}': "
                      f"{error.message}{_where(error)}")


def validate_metadef(kind: str, body: Any) -> None:
    """Validate a metadef request body against Glance's schema for ``kind``
    (``namespace``, ``object``, ``property``, ``resource_type``, ``tag``, or
    ``tags-body`` for a list of tags). Raises Invalid with Glance's schema name."""
    name = f"metadefs/{kind}"
    label = "tags" if kind == "tags-body" else _document(name)["name"]
    validate(name, body, label=label)


def validate_image(body: dict[str, Any], *, partial: bool = False) -> None:
    """Validate an image create body (or a partial ``{attr: value}``). Raises Invalid."""
    validate("image", body, partial=partial)


def validate_member(body: dict[str, Any], *, partial: bool = False) -> None:
    """Validate a member body (e.g. ``{"status": "accepted"}``). Raises Invalid."""
    validate("member", body, partial=partial)


def validate_task(body: dict[str, Any], *, partial: bool = False) -> None:
    """Validate a task create body (``{"type": ..., "input": {...}}``). Raises Invalid.

    Keys the schema does not declare are refused, as Glance validates task bodies
    with ``additionalProperties: false`` (which the served schema does not show)."""
    validate("task", body, partial=partial)
    extra = [key for key in body if key not in _document("task")["properties"]]
    if extra:
        listed = ", ".join(repr(key) for key in extra)
        verb = "was" if len(extra) == 1 else "were"
        raise Invalid("Provided object does not match schema 'task': Additional properties "
                      f"are not allowed ({listed} {verb} unexpected)")


async def get_schema(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SCHEMA_NAMES:
        raise NotFound("The resource could not be found.")
    return Response(_serialized(name), media_type="application/json")


async def get_metadef_schema(request: Request) -> Response:
    name = f"metadefs/{request.path_params['kind']}"
    if name not in METADEF_SCHEMA_NAMES:
        raise NotFound("The resource could not be found.")
    return Response(_serialized(name), media_type="application/json")


routes: list[BaseRoute] = [
    Route("/v2/schemas/{name}", get_schema, methods=["GET"]),
    Route("/v2/schemas/metadefs/{kind}", get_metadef_schema, methods=["GET"]),
]
