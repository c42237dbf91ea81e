"""The pure rules of metadata definitions: property normalization as Glance's
PropertyType model does it, resource type prefixes, visibility."""

from __future__ import annotations

import pytest

from glimpse.domain import metadef
from glimpse.domain.metadef import MetadefObject, Namespace, ResourceTypeAssociation
from glimpse.exceptions import Invalid


def test_a_property_is_normalized_as_glance_stores_it() -> None:
    """Checked against Glance 33: integers truncated, default kept as text,
    flags made booleans, keys in Glance's order, nulls kept."""
    got = metadef.normalize_property({
        "minimum": 1.5, "title": "T", "type": "string", "default": 5, "readonly": "yes",
        "enum": ["a", "b"], "description": None, "name": "p",
        "items": {"enum": ["x"], "type": "string"}})
    assert got == {"name": "p", "type": "string", "title": "T", "description": None,
                   "default": "5", "readonly": True, "minimum": 1, "enum": ["a", "b"],
                   "items": {"type": "string", "enum": ["x"]}}
    assert list(got) == ["name", "type", "title", "description", "default", "readonly",
                         "minimum", "enum", "items"]


@pytest.mark.parametrize(("default", "stored"), [
    (True, "True"), (1.5, "1.5"), ("ü", "ü"), ([1, 2], None), ({"a": 1}, None), (None, None)])
def test_a_default_is_kept_as_text_or_dropped(default: object, stored: str | None) -> None:
    assert metadef.normalize_property({"type": "x", "title": "t",
                                       "default": default})["default"] == stored


@pytest.mark.parametrize("definition", [
    {"type": "string", "title": "t", "foo": 1},            # unknown key
    {"type": "string", "title": 5},                        # text field not text
    {"type": "string", "title": "t", "enum": [1]},         # Glance: 500
    {"type": "string", "title": "t", "items": {}},         # items without type (Glance: 500)
    {"type": "string", "title": "t", "items": {"type": "s", "x": 1}},
    {"type": "string", "title": "t", "minimum": "many"},
    {"type": "string", "title": "t", "readonly": "perhaps"},
    ["not", "an", "object"],
])
def test_a_bad_definition_is_invalid(definition: object) -> None:
    with pytest.raises(Invalid):
        metadef.normalize_property(definition)


def test_properties_of_a_namespace_are_normalized_each() -> None:
    assert metadef.normalize_properties(None) == {}
    assert metadef.normalize_properties({"a": {"type": "integer", "title": "A",
                                               "maximum": 2.9}}) == {
        "a": {"type": "integer", "title": "A", "maximum": 2}}
    with pytest.raises(Invalid):
        metadef.normalize_properties(["a"])


@pytest.mark.parametrize("required", [["a", "b"], ["a,b", "c"], [""], ["x y", "é"]])
def test_required_comes_back_as_it_was_given(required: list[str]) -> None:
    """Stored as JSON: Glance's comma-joined text split ``["a,b", "c"]`` into three
    names and ``[""]`` into none."""
    assert metadef.required_from_text(metadef.required_to_text(required)) == required


def test_no_required_is_stored_as_null() -> None:
    assert metadef.required_to_text([]) is None
    assert metadef.required_to_text(None) is None
    assert metadef.required_from_text(None) == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "a/"])
def test_names_that_cannot_be_in_a_url_are_refused(name: str) -> None:
    with pytest.raises(Invalid, match="cannot be used in a URL"):
        metadef.check_addressable("a tag", name)


@pytest.mark.parametrize("name", ["a", "a.b", "...", "a%2Fb", "é t", "a\\b"])
def test_other_names_are_addressable(name: str) -> None:
    metadef.check_addressable("a tag", name)


def test_the_prefix_of_a_resource_type_applies_to_properties_and_objects() -> None:
    associations = [ResourceTypeAssociation(name="OS::Glance::Image", prefix="hw_"),
                    ResourceTypeAssociation(name="OS::Nova::Flavor")]
    assert metadef.prefix_for(associations, "OS::Glance::Image") == "hw_"
    assert metadef.prefix_for(associations, "OS::Nova::Flavor") is None
    assert metadef.prefix_for(associations, "OS::Cinder::Volume") is None
    props = {"cpu": {"type": "string", "title": "C"}}
    assert metadef.prefixed_properties(props, "hw_") == {"hw_cpu": props["cpu"]}
    assert metadef.prefixed_properties(props, None) == props
    obj = MetadefObject(name="o", required=["cpu"], properties=props)
    got = metadef.prefixed_object(obj, "hw_")
    assert (got.name, got.required, got.properties) == ("o", ["hw_cpu"], {"hw_cpu": props["cpu"]})
    assert obj.required == ["cpu"]                          # the original is untouched
    assert metadef.prefixed_object(obj, None) is obj


def test_a_prefixed_name_is_unprefixed_only_with_its_prefix() -> None:
    assert metadef.unprefixed_name("hw_cpu", "hw_") == "cpu"
    assert metadef.unprefixed_name("cpu", "hw_") is None
    assert metadef.unprefixed_name("cpu", None) is None


def test_private_namespaces_are_seen_by_their_owner_and_admins_only() -> None:
    private = Namespace(namespace="n", owner="p1")
    public = Namespace(namespace="n", owner="p1", visibility="public")
    assert metadef.is_visible(private, project_id="p1", is_admin=False)
    assert not metadef.is_visible(private, project_id="p2", is_admin=False)
    assert not metadef.is_visible(private, project_id=None, is_admin=False)
    assert metadef.is_visible(private, project_id="p2", is_admin=True)
    assert metadef.is_visible(public, project_id="p2", is_admin=False)
