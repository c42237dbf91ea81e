"""PATCH documents: Glance's validation rules and how changes apply to an image."""

from __future__ import annotations

from typing import Any

import pytest

from glimpse.domain.image import Image
from glimpse.exceptions import Conflict, Forbidden, Invalid, ReservedAttribute
from glimpse.services.image_patch import Change, apply_change, parse_patch

V21, V20 = 10, 4
validated: list[dict[str, Any]] = []


def record(partial: dict[str, Any]) -> None:
    validated.append(partial)


def parse(body: Any, draft: int = V21) -> list[Change]:
    return parse_patch(body, draft, record)


def test_parses_draft10_and_validates_each_value() -> None:
    validated.clear()
    changes = parse([{"op": "add", "path": "/foo", "value": "bar"},
                     {"op": "replace", "path": "/name", "value": "n"},
                     {"op": "remove", "path": "/a~1b~0c"}])
    assert changes == [Change("add", ("foo",), "bar"), Change("replace", ("name",), "n"),
                       Change("remove", ("a/b~c",), None)]
    assert validated == [{"foo": "bar"}, {"name": "n"}]


def test_parses_draft4() -> None:
    assert parse([{"add": "/foo", "value": "x"}], V20) == [Change("add", ("foo",), "x", 4)]
    with pytest.raises(Invalid, match="only one member"):
        parse([{"add": "/foo", "remove": "/x", "value": "x"}], V20)
    with pytest.raises(Invalid, match="exactly one member"):
        parse([{"value": "x"}], V20)


@pytest.mark.parametrize(("body", "message"), [
    ({"op": "add"}, "Request body must be a JSON array of operation objects."),
    ([1], "Operations must be JSON objects."),
    ([{"path": "/x", "value": 1}], "Unable to find `op`"),
    ([{"op": "move", "path": "/x"}], "Invalid operation: `move`"),
    ([{"op": "add", "value": 1}], "Unable to find 'path' in JSON Schema change"),
    ([{"op": "add", "path": "x", "value": 1}], 'does not start with "/"'),
    ([{"op": "add", "path": "/a//b", "value": 1}], 'contains adjacent "/"'),
    ([{"op": "add", "path": "/a/", "value": 1}], 'end with "/"'),
    ([{"op": "add", "path": "/a~2", "value": 1}], "recognized escape sequence"),
    ([{"op": "add", "path": "/a/b", "value": 1}], "Invalid JSON pointer for this resource: '/a/b'"),
    ([{"op": "add", "path": "/name"}], 'Operation "add" requires a member named "value".'),
    ([{"op": "add", "path": "/" + "k" * 256, "value": "v"}],
     "Custom property should not be greater than 255 characters."),
])
def test_bad_documents_are_400(body: Any, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse(body)
    assert message in caught.value.message


@pytest.mark.parametrize("name", ["status", "id", "size", "checksum", "created_at", "self",
                                  "file", "schema", "direct_url", "os_hash_value",
                                  "virtual_size", "updated_at", "os_hash_algo"])
def test_read_only_attributes_are_403(name: str) -> None:
    with pytest.raises(ReservedAttribute, match=f"^Attribute '{name}' is read-only.$"):
        parse([{"op": "replace", "path": f"/{name}", "value": "x"}])


@pytest.mark.parametrize("name", ["location", "deleted", "deleted_at", "os_glance_x"])
def test_reserved_attributes_are_403(name: str) -> None:
    with pytest.raises(ReservedAttribute, match=f"^Attribute '{name}' is reserved.$"):
        parse([{"op": "add", "path": f"/{name}", "value": "x"}])


def test_schema_failure_propagates() -> None:
    def reject(partial: dict[str, Any]) -> None:
        raise Invalid("Provided object does not match schema 'image'")

    with pytest.raises(Invalid, match="does not match schema"):
        parse_patch([{"op": "replace", "path": "/disk_format", "value": "bad"}], V21, reject)


def image(**kw: Any) -> Image:
    return Image(id="i", owner="p", properties={"foo": "bar"}, **kw)


def test_apply_add_replace_remove() -> None:
    img = image()
    apply_change(img, Change("add", ("new",), "v"))
    apply_change(img, Change("replace", ("foo",), "baz"))
    apply_change(img, Change("replace", ("name",), "n"))
    apply_change(img, Change("add", ("tags",), ["a", "b"]))
    apply_change(img, Change("replace", ("min_disk",), 3))
    apply_change(img, Change("remove", ("new",)))
    assert img.properties == {"foo": "baz"}
    assert (img.name, img.tags, img.min_disk) == ("n", {"a", "b"}, 3)


@pytest.mark.parametrize(("change", "error", "message"), [
    (Change("remove", ("nope",)), Conflict, "Property nope does not exist."),
    (Change("replace", ("nope",), "x"), Conflict, "Property nope does not exist."),
    (Change("remove", ("name",)), Forbidden, "Property name may not be removed."),
    (Change("add", ("foo",), "x", 4), Conflict, "Property foo already present."),
    (Change("add", ("name",), "x", 4), Conflict, "Property name already present."),
    (Change("add", ("locations", "-"), {"url": "x"}), Forbidden,
     "It's not allowed to add locations if locations are invisible."),
    (Change("replace", ("min_ram",), -1), Invalid,
     "Invalid value '-1' for parameter 'min_ram': Cannot be a negative value"),
])
def test_apply_errors(change: Change, error: type[Exception], message: str) -> None:
    img = image()
    with pytest.raises(error) as caught:
        apply_change(img, change)
    assert caught.value.message == message  # type: ignore[attr-defined]


def test_formats_only_change_while_queued() -> None:
    img = image(status="active")
    with pytest.raises(Forbidden, match="disk_format can be only replaced for a queued image"):
        apply_change(img, Change("replace", ("disk_format",), "raw"))
    queued = image()
    apply_change(queued, Change("replace", ("disk_format",), "raw"))
    assert queued.disk_format == "raw"
    # draft 10 add of an existing property replaces it
    apply_change(queued, Change("add", ("foo",), "again"))
    assert queued.properties["foo"] == "again"
