"""The image view: Glance's keys, order and formats, whatever the image holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from glimpse.api import images as api
from glimpse.domain.image import Image

T = datetime(2026, 11, 27, 1, 2, 3, 456789)


def reference_view(image: Image) -> dict[str, Any]:
    """The view as first written (a getattr loop): the cheaper one must equal it."""
    view: dict[str, Any] = {k: v for k, v in image.properties.items()
                            if k not in api.HIDDEN_PROPERTIES}
    for key in ("name", "disk_format", "container_format", "visibility", "size",
                "virtual_size", "status", "checksum", "protected", "min_ram", "min_disk",
                "owner", "os_hidden", "os_hash_algo", "os_hash_value"):
        view[key] = getattr(image, key)
    view["id"] = image.id
    view["created_at"] = None if image.created_at is None else image.created_at.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    view["updated_at"] = None if image.updated_at is None else image.updated_at.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    view["tags"] = sorted(image.tags)
    view["self"] = f"/v2/images/{image.id}"
    view["file"] = f"/v2/images/{image.id}/file"
    view["schema"] = "/v2/schemas/image"
    return view


@pytest.mark.parametrize("image", [
    Image(id="i1", owner="p1", created_at=T, updated_at=T),
    Image(id="i2", owner=None, name="n", status="active", visibility="public", size=5,
          virtual_size=7, checksum="c", os_hash_algo="sha512", os_hash_value="h",
          min_disk=1, min_ram=2, protected=True, os_hidden=True, disk_format="raw",
          container_format="bare", created_at=T.replace(microsecond=0),
          updated_at=datetime(999, 1, 1), tags={"b", "a"},
          properties={"z": "1", "a": "é", "os_glance_stage_host": "x"}),
    Image(id="i3", owner="p1", created_at=T.replace(tzinfo=UTC), updated_at=None),
])
def test_view_equals_the_reference_in_content_and_key_order(image: Image) -> None:
    view = api.image_view(image)
    assert view == reference_view(image)
    assert list(view) == list(reference_view(image))
    assert json.dumps(view) == json.dumps(reference_view(image))


def test_times_are_glances_format() -> None:
    assert api.isotime(T) == "2026-11-27T01:02:03Z"
    assert api.isotime(None) is None


def test_fast_json_renders_the_bytes_starlette_renders() -> None:
    from starlette.responses import JSONResponse

    image = Image(id="i", owner="p", name='é "q" \x01 \u2028 😀', created_at=T, updated_at=T,
                  tags={"t"}, properties={"k": "v\n"})
    for body in ({"images": [api.image_view(image)], "first": "/v2/images"},
                 {"big": 2**70, "n": None}, {1: "int key"}):
        assert api.FastJSONResponse(body).body == JSONResponse(body).body
