"""The schema documents and the request validators built from them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from glimpse.api import schemas
from glimpse.exceptions import Invalid

SCHEMA_DIR = Path(schemas.__file__).parent / "schemas"


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_every_document_is_a_valid_json_schema(name: str) -> None:
    doc = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    assert doc["name"] == name
    jsonschema.validators.validator_for(doc).check_schema(doc)


def test_list_schemas_embed_their_item_schema() -> None:
    images = schemas.schema("images")
    assert images["properties"]["images"]["items"] == schemas.image_schema()
    members = schemas.schema("members")
    assert members["properties"]["members"]["items"] == schemas.member_schema()
    assert {link["rel"] for link in images["links"]} == {"first", "next", "describedby"}


def test_accessors_return_copies() -> None:
    doc = schemas.image_schema()
    doc["properties"].clear()
    assert "name" in schemas.image_schema()["properties"]


def test_valid_image_body_passes() -> None:
    schemas.validate_image({"name": None, "disk_format": "qcow2", "container_format": "bare",
                            "min_ram": 512, "tags": ["a", "b"], "visibility": "shared",
                            "protected": False, "os_hidden": True, "custom": "value"})


@pytest.mark.parametrize(("body", "expected"), [
    ({"disk_format": "foo"}, "'foo' is not one of [None, 'ami'"),
    ({"min_ram": "x"}, "'x' is not of type 'integer' (on instance['min_ram'])"),
    ({"name": "a" * 256}, "is too long (on instance['name'])"),
    ({"visibility": "everyone"}, "on instance['visibility']"),
    ({"custom": 1}, "1 is not of type 'string' (on instance['custom'])"),
    ({"tags": ["ok", 7]}, "on instance['tags'][1]"),
    ({"id": "not-a-uuid"}, "does not match"),
])
def test_invalid_image_body_names_the_problem(body: dict[str, object], expected: str) -> None:
    with pytest.raises(Invalid) as info:
        schemas.validate_image(body)
    assert info.value.message.startswith("Provided object does not match schema 'image': ")
    assert expected in info.value.message


def test_partial_image_validation_checks_the_given_attribute() -> None:
    schemas.validate_image({"min_disk": 3}, partial=True)
    with pytest.raises(Invalid, match="min_disk"):
        schemas.validate_image({"min_disk": "big"}, partial=True)


def test_member_and_task_validation() -> None:
    schemas.validate_member({"status": "accepted"})
    with pytest.raises(Invalid, match="schema 'member': 'maybe' is not one of"):
        schemas.validate_member({"status": "maybe"})
    schemas.validate_task({"type": "import", "input": {"import_from": "http://x/y"}})
    with pytest.raises(Invalid, match="schema 'task'"):
        schemas.validate_task({"type": "copy", "input": {}})
    with pytest.raises(Invalid, match="schema 'task'"):
        schemas.validate_task({"type": "import", "input": "text"})
