"""The metadata definitions API over a real server: every route, with Glance's
bodies, status codes and texts (checked against a Glance 33 peer), visibility
between projects, admin-only writes, protected namespaces, duplicates, cascades
and paging. One server per database for the module; each test uses its own
namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, server_per_database

P1, P2 = "1" * 32, "2" * 32
ADMIN, MEMBER, READER = "admin,member,reader", "member,reader", "reader"
NS = "/v2/metadefs/namespaces"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per database for the module."""
    yield from server_per_database(request, tmp_path_factory, "metadefs-api")


def client(server: ServerProcess, project: str = P1, roles: str = ADMIN) -> httpx.Client:
    return server.client(**{"X-Project-Id": project, "X-User-Id": "u", "X-Roles": roles})


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as c:
        yield c


def _message(response: httpx.Response) -> str:
    return str(response.json()["message"])


def _stamped(view: dict[str, Any]) -> bool:
    return all(view[k].endswith("Z") and len(view[k]) == 20 for k in ("created_at", "updated_at"))


def test_a_namespace_created_with_its_content_is_echoed_shown_and_prefixed(
        admin: httpx.Client) -> None:
    body = {"namespace": "full", "display_name": "Full",
            "properties": {"cpu": {"type": "string", "title": "CPU", "default": 5,
                                   "minimum": 1.5}},
            "objects": [{"name": "o1", "required": ["a"],
                         "properties": {"a": {"type": "integer", "title": "A"}}},
                        {"name": "o0"}],
            "tags": [{"name": "t1"}, {"name": "t2"}],
            "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}]}
    r = admin.post(NS, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"] == f"{NS}/full"
    assert list(created) == ["namespace", "display_name", "visibility", "protected", "owner",
                             "created_at", "updated_at", "resource_type_associations",
                             "properties", "objects", "tags", "self", "schema"]
    assert (created["visibility"], created["protected"], created["owner"]) == (
        "private", False, P1)
    assert created["properties"] == {"cpu": {"type": "string", "title": "CPU",
                                             "default": "5", "minimum": 1}}
    assert created["objects"][0] == {"name": "o1", "required": ["a"],
                                     "properties": {"a": {"type": "integer", "title": "A"}}}
    assert created["resource_type_associations"] == [{"name": "OS::Glance::Image",
                                                      "prefix": "hw_"}]
    assert created["tags"] == [{"name": "t1"}, {"name": "t2"}]

    shown = admin.get(f"{NS}/full").json()
    assert [o["name"] for o in shown["objects"]] == ["o0", "o1"]
    o0 = shown["objects"][0]
    assert (o0["required"], o0["properties"], o0["self"], o0["schema"]) == (
        [], {}, f"{NS}/full/objects/o0", "/v2/schemas/metadefs/object")
    assert _stamped(o0) and _stamped(shown["resource_type_associations"][0])
    assert shown["tags"] == [{"name": "t2"}, {"name": "t1"}]        # newest first

    prefixed = admin.get(f"{NS}/full", params={"resource_type": "OS::Glance::Image"}).json()
    assert list(prefixed["properties"]) == ["hw_cpu"]
    assert prefixed["objects"][1]["required"] == ["hw_a"]
    assert list(prefixed["objects"][1]["properties"]) == ["hw_a"]
    other = admin.get(f"{NS}/full", params={"resource_type": "OS::Nova::Flavor"}).json()
    assert list(other["properties"]) == ["cpu"]


def test_a_failed_create_leaves_nothing_behind(admin: httpx.Client) -> None:
    r = admin.post(NS, json={"namespace": "half", "objects": [{"name": "o"}, {"name": "o"}]})
    assert r.status_code == 409
    assert _message(r) == ("A metadata definition object with name=o already exists in "
                           "namespace=half.")
    r = admin.post(NS, json={"namespace": "half", "tags": [{"name": "a"}],
                             "properties": {"p": {"type": "string", "title": "P",
                                                  "enum": [1]}}})
    assert r.status_code == 400                     # Glance answers 500 here
    r = admin.get(f"{NS}/half")
    assert r.status_code == 404
    assert _message(r) == "Metadata definition namespace=half was not found."


def test_namespace_bodies_are_checked(admin: httpx.Client) -> None:
    assert admin.post(NS, json={"namespace": "dup"}).status_code == 201
    r = admin.post(NS, json={"namespace": "dup"})
    assert (r.status_code, _message(r)) == (
        409, "The metadata definition namespace=dup already exists.")
    r = admin.post(NS, json={})
    assert r.status_code == 400
    assert _message(r).startswith("Provided object does not match schema 'namespace': "
                                  "'namespace' is a required property")
    r = admin.post(NS, json={"namespace": "x", "self": "y"})
    assert (r.status_code, _message(r)) == (403, "Attribute 'self' is read-only.")
    r = admin.post(NS, json={"namespace": "x", "visibility": "shared"})
    assert r.status_code == 400
    assert admin.post(NS, content=b"{", headers={"Content-Type": "application/json"}
                      ).status_code == 400


def test_update_replaces_the_namespace_and_refuses_a_taken_name(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "upd", "visibility": "public", "protected": True,
                         "description": "D", "tags": [{"name": "t"}]})
    admin.post(NS, json={"namespace": "upd-other"})
    r = admin.put(f"{NS}/upd", json={"namespace": "upd2", "display_name": "U"})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["namespace"], updated["display_name"], updated["visibility"],
            updated["protected"], updated["self"]) == ("upd2", "U", "private", False,
                                                       f"{NS}/upd2")
    assert "description" not in updated
    assert admin.get(f"{NS}/upd").status_code == 404
    assert admin.get(f"{NS}/upd2").json()["tags"] == [{"name": "t"}]     # content follows
    r = admin.put(f"{NS}/upd2", json={"namespace": "upd-other"})
    assert (r.status_code, _message(r)) == (
        409, "Invalid update. It would result in a duplicate metadata definition namespace "
        "with the same name of upd-other")
    r = admin.put(f"{NS}/nope", json={"namespace": "nope"})
    assert (r.status_code, _message(r)) == (404, "Namespace nope not found")


def test_a_protected_namespace_and_its_content_cannot_be_deleted(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "prot", "protected": True, "tags": [{"name": "t"}],
                         "objects": [{"name": "o"}],
                         "properties": {"p": {"type": "string", "title": "P"}},
                         "resource_type_associations": [{"name": "R"}]})
    denied = "Metadata definition namespace prot is protected and cannot be deleted."
    for path in ("", "/objects", "/properties", "/tags"):
        r = admin.delete(f"{NS}/prot{path}")
        assert (r.status_code, _message(r)) == (403, denied)
    for path, text in (("/objects/o", "object o"), ("/properties/p", "property p"),
                       ("/tags/t", "tag t"), ("/resource_types/R", "resource-type-association R")):
        r = admin.delete(f"{NS}/prot{path}")
        assert (r.status_code, _message(r)) == (
            403, f"Metadata definition {text} is protected and cannot be deleted.")
    shown = admin.get(f"{NS}/prot").json()
    assert [len(shown[k]) for k in ("objects", "properties", "tags",
                                    "resource_type_associations")] == [1, 1, 1, 1]
    admin.put(f"{NS}/prot", json={"namespace": "prot"})          # unprotects
    assert admin.delete(f"{NS}/prot").status_code == 204
    assert admin.get(f"{NS}/prot").status_code == 404


def test_delete_all_of_a_kind_and_the_namespace_cascade(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "casc", "tags": [{"name": "t"}],
                         "objects": [{"name": "o"}],
                         "properties": {"p": {"type": "string", "title": "P"}}})
    for kind in ("objects", "properties", "tags"):
        assert admin.delete(f"{NS}/casc/{kind}").status_code == 204
        shown = admin.get(f"{NS}/casc").json()
        assert kind not in shown
    admin.post(f"{NS}/casc/objects", json={"name": "o"})
    assert admin.delete(f"{NS}/casc").status_code == 204
    admin.post(NS, json={"namespace": "casc"})                    # the name is free again
    assert admin.get(f"{NS}/casc/objects").json()["objects"] == []


def test_objects_crud(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "objs"})
    r = admin.post(f"{NS}/objs/objects", json={
        "name": "o2", "description": "d",
        "properties": {"x": {"type": "string", "title": "X", "default": 1}}})
    assert r.status_code == 201
    created = r.json()
    assert list(created) == ["name", "description", "properties", "created_at", "updated_at",
                             "self", "schema"]
    assert created["properties"]["x"]["default"] == "1"
    r = admin.post(f"{NS}/objs/objects", json={"name": "o2"})
    assert (r.status_code, _message(r)) == (
        409, "A metadata definition object with name=o2 already exists in namespace=objs.")
    r = admin.post(f"{NS}/objs/objects", json={"name": "o5", "schema": "x"})
    assert (r.status_code, _message(r)) == (403, "Attribute 'schema' is read-only.")
    admin.post(f"{NS}/objs/objects", json={"name": "o1"})
    listed = admin.get(f"{NS}/objs/objects").json()
    assert listed["schema"] == "v2/schemas/metadefs/objects"       # sic, as Glance
    assert [o["name"] for o in listed["objects"]] == ["o1", "o2"]
    assert admin.get(f"{NS}/objs/objects/o2").json()["required"] == []
    r = admin.put(f"{NS}/objs/objects/o2", json={"name": "o4"})
    assert r.status_code == 200 and "description" not in r.json()
    assert "description" not in admin.get(f"{NS}/objs/objects/o4").json()
    r = admin.put(f"{NS}/objs/objects/o4", json={"name": "o1"})
    assert r.status_code == 409                                    # Glance answers 500 here
    for method in ("GET", "DELETE"):
        r = admin.request(method, f"{NS}/objs/objects/o2")
        assert (r.status_code, _message(r)) == (404, "Could not find metadata object o2")
    assert admin.delete(f"{NS}/objs/objects/o4").status_code == 204
    assert [o["name"] for o in admin.get(f"{NS}/objs/objects").json()["objects"]] == ["o1"]


def test_properties_crud_and_resource_type_prefixes(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "props", "resource_type_associations": [
        {"name": "OS::Glance::Image", "prefix": "hw_"}, {"name": "OS::Nova::Flavor"}]})
    definition = {"name": "p2", "type": "integer", "title": "P2", "minimum": 0, "default": 3,
                  "items": {"type": "string", "enum": ["a"]}, "readonly": True}
    r = admin.post(f"{NS}/props/properties", json=definition)
    assert r.status_code == 201
    assert r.json() == {"name": "p2", "type": "integer", "title": "P2", "default": "3",
                        "readonly": True, "minimum": 0,
                        "items": {"type": "string", "enum": ["a"]}}
    assert admin.get(f"{NS}/props/properties/p2").json() == r.json()
    r = admin.post(f"{NS}/props/properties", json=definition)
    assert (r.status_code, _message(r)) == (
        409, "A metadata definition property with name=p2 already exists in namespace=props.")
    r = admin.post(f"{NS}/props/properties", json={"name": "p4", "type": "integer"})
    assert r.status_code == 400 and "'title' is a required property" in _message(r)
    r = admin.post(f"{NS}/props/properties", json={"name": "p4", "type": "integer",
                                                   "title": "x", "foo": 1})
    assert r.status_code == 400
    image = {"resource_type": "OS::Glance::Image"}
    assert admin.get(f"{NS}/props/properties/hw_p2", params=image).json()["name"] == "p2"
    r = admin.get(f"{NS}/props/properties/p2", params=image)
    assert (r.status_code, _message(r)) == (
        404, "Property p2 does not start with the expected resource type association prefix "
        "of 'hw_'.")
    r = admin.get(f"{NS}/props/properties/p2", params={"resource_type": "Nope"})
    assert (r.status_code, _message(r)) == (
        404, "The metadata definition resource-type with name=Nope, was not found.")
    r = admin.put(f"{NS}/props/properties/p2", json={"name": "p3", "type": "string",
                                                     "title": "P3"})
    assert r.json() == {"name": "p3", "type": "string", "title": "P3"}
    assert admin.get(f"{NS}/props/properties").json() == {
        "properties": {"p3": {"name": "p3", "type": "string", "title": "P3"}}}
    for method in ("GET", "DELETE"):
        r = admin.request(method, f"{NS}/props/properties/p2")
        assert (r.status_code, _message(r)) == (404, "Could not find property p2")
    assert admin.delete(f"{NS}/props/properties/p3").status_code == 204
    assert admin.get(f"{NS}/props/properties").json() == {"properties": {}}


def test_tags_crud_replace_append_and_paging(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "tags"})
    r = admin.post(f"{NS}/tags/tags/t3")
    assert r.status_code == 201 and list(r.json()) == ["name", "created_at", "updated_at"]
    r = admin.post(f"{NS}/tags/tags/t3")
    assert (r.status_code, _message(r)) == (
        409, "A metadata tag with name=t3 already exists in namespace=tags.")
    assert admin.post(f"{NS}/tags/tags/T3").status_code == 201     # case counts
    assert admin.delete(f"{NS}/tags/tags/T3").status_code == 204
    assert admin.post(f"{NS}/tags/tags/{'x' * 81}").status_code == 400
    assert admin.put(f"{NS}/tags/tags/t3", json={"name": "t4"}).json()["name"] == "t4"
    assert admin.get(f"{NS}/tags/tags/t3").status_code == 404
    r = admin.post(f"{NS}/tags/tags", json={"tags": [{"name": "a"}, {"name": "b"}]})
    assert (r.status_code, r.json()) == (201, {"tags": [{"name": "a"}, {"name": "b"}]})
    assert admin.get(f"{NS}/tags/tags").json() == {"tags": [{"name": "b"}, {"name": "a"}]}
    append = {"X-Openstack-Append": "true"}
    assert admin.post(f"{NS}/tags/tags", json={"tags": [{"name": "c"}]},
                      headers=append).status_code == 201
    r = admin.post(f"{NS}/tags/tags", json={"tags": [{"name": "d"}, {"name": "c"}]},
                   headers=append)
    assert r.status_code == 409
    assert admin.post(f"{NS}/tags/tags",
                      json={"tags": [{"name": "e"}, {"name": "e"}]}).status_code == 409
    assert admin.post(f"{NS}/tags/tags", json={"tags": []}).json() == {"tags": []}
    names = [t["name"] for t in admin.get(f"{NS}/tags/tags").json()["tags"]]
    assert names == ["c", "b", "a"]                  # failed writes changed nothing
    page = admin.get(f"{NS}/tags/tags", params={"limit": 1, "marker": "c", "sort_key": "name",
                                                 "sort_dir": "desc"}).json()
    assert page == {"tags": [{"name": "b"}]}
    r = admin.get(f"{NS}/tags/tags", params={"marker": "zz"})
    assert (r.status_code, _message(r)) == (404, "Could not find metadata tag zz")
    assert admin.put(f"{NS}/tags/tags/a", json={"name": "b"}).status_code == 409
    assert admin.delete(f"{NS}/tags/tags/a").status_code == 204
    assert admin.delete(f"{NS}/tags/tags/a").status_code == 404


def test_resource_type_associations(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "rts"})
    r = admin.post(f"{NS}/rts/resource_types", json={
        "name": "OS::Cinder::Volume", "prefix": "v_", "properties_target": "image"})
    assert r.status_code == 201
    assert list(r.json()) == ["name", "prefix", "properties_target", "created_at",
                              "updated_at"]
    r = admin.post(f"{NS}/rts/resource_types", json={"name": "OS::Cinder::Volume"})
    assert (r.status_code, _message(r)) == (
        409, "The metadata definition resource-type association of "
        "resource-type=OS::Cinder::Volume to namespace=rts already exists.")
    assert admin.post(f"{NS}/rts/resource_types", json={"prefix": "x"}).status_code == 400
    listed = admin.get(f"{NS}/rts/resource_types").json()["resource_type_associations"]
    assert [a["name"] for a in listed] == ["OS::Cinder::Volume"]
    types = admin.get("/v2/metadefs/resource_types").json()["resource_types"]
    assert "OS::Cinder::Volume" in [t["name"] for t in types]
    assert [n["namespace"] for n in admin.get(NS, params={
        "resource_types": "OS::Cinder::Volume,Other"}).json()["namespaces"]] == ["rts"]
    r = admin.delete(f"{NS}/rts/resource_types/Nope")
    assert (r.status_code, _message(r)) == (404, "Failed to find resource type Nope to delete")
    assert admin.delete(f"{NS}/rts/resource_types/OS::Cinder::Volume").status_code == 204
    assert admin.get(f"{NS}/rts/resource_types").json() == {"resource_type_associations": []}


def test_visibility_between_projects_and_admin_only_writes(server: ServerProcess,
                                                           admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "vis-private", "objects": [{"name": "o"}]})
    admin.post(NS, json={"namespace": "vis-public", "visibility": "public",
                         "tags": [{"name": "t"}]})
    with client(server, P2, MEMBER) as other, client(server, P1, MEMBER) as member:
        listed = [n["namespace"] for n in other.get(NS).json()["namespaces"]]
        assert "vis-public" in listed and "vis-private" not in listed
        r = other.get(f"{NS}/vis-private")          # as if it did not exist
        assert (r.status_code, _message(r)) == (
            404, "Metadata definition namespace=vis-private was not found.")
        r = other.get(f"{NS}/vis-nowhere")
        assert (r.status_code, _message(r)) == (
            404, "Metadata definition namespace=vis-nowhere was not found.")
        for path in ("/objects", "/objects/o", "/properties", "/tags", "/resource_types"):
            r = other.get(f"{NS}/vis-private{path}")
            assert (r.status_code, _message(r)) == (404, "Namespace vis-private not found")
        assert other.get(f"{NS}/vis-public/tags").json() == {"tags": [{"name": "t"}]}
        assert member.get(f"{NS}/vis-private").status_code == 200      # its own project
        writes = [("POST", NS, {"namespace": "vis-mine"}, "add_metadef_namespace"),
                  ("PUT", f"{NS}/vis-public", {"namespace": "vis-public"},
                   "modify_metadef_namespace"),
                  ("DELETE", f"{NS}/vis-public", None, "delete_metadef_namespace"),
                  ("POST", f"{NS}/vis-public/objects", {"name": "o"}, "add_metadef_object"),
                  ("POST", f"{NS}/vis-public/tags/x", None, "add_metadef_tag"),
                  ("POST", f"{NS}/vis-public/resource_types", {"name": "R"},
                   "add_metadef_resource_type_association")]
        for method, path, body, rule in writes:
            r = other.request(method, path, json=body)
            assert (r.status_code, _message(r)) == (
                403, f"You are not authorized to complete {rule} action."), path
        r = other.post(f"{NS}/vis-private/objects", json={"name": "x"})
        assert r.status_code == 404                 # cannot see it: not even a 403
    with client(server, P2, "") as nobody:
        r = nobody.get(NS)
        assert (r.status_code, _message(r)) == (404, "The resource could not be found.")
    with client(server, P2, READER) as reader:
        assert reader.get(f"{NS}/vis-public").status_code == 200
    with client(server, P2, ADMIN) as other_admin:           # admins see every project's
        listed = [n["namespace"] for n in other_admin.get(
            NS, params={"limit": 1000}).json()["namespaces"]]
        assert "vis-private" in listed
        assert other_admin.get(f"{NS}/vis-private/objects/o").status_code == 200


def test_namespace_list_pages_with_first_and_next_links(admin: httpx.Client) -> None:
    for i in range(5):
        admin.post(NS, json={"namespace": f"page-{i}", "resource_type_associations": [
            {"name": "Paged"}]})
    params = {"resource_types": "Paged", "sort_key": "namespace", "sort_dir": "asc",
              "limit": "2"}
    seen: list[str] = []
    body = admin.get(NS, params=params).json()
    assert body["first"] == f"{NS}?resource_types=Paged&sort_key=namespace&sort_dir=asc&limit=2"
    assert body["schema"] == "/v2/schemas/metadefs/namespaces"
    while True:
        seen += [n["namespace"] for n in body["namespaces"]]
        assert all(n["resource_type_associations"][0]["name"] == "Paged"
                   for n in body["namespaces"])
        if "next" not in body:
            break
        body = admin.get(body["next"]).json()
    assert seen == [f"page-{i}" for i in range(5)]
    for key in ("namespace", "display_name", "description", "visibility", "protected",
                "owner", "created_at", "updated_at", "id"):    # every sort key pages
        for sort_dir in ("asc", "desc"):
            query = {"resource_types": "Paged", "sort_key": key, "sort_dir": sort_dir}
            whole = [n["namespace"] for n in admin.get(NS, params=query).json()["namespaces"]]
            rest = admin.get(NS, params={**query, "marker": whole[1]}).json()["namespaces"]
            assert sorted(whole) == seen and [n["namespace"] for n in rest] == whole[2:]
    for query, text in (({"sort_dir": "up"}, "Invalid sort direction: up"),
                        ({"visibility": "shared"}, "Invalid visibility value: shared"),
                        ({"limit": "-1"}, "limit param must be positive"),
                        ({"limit": "x"}, "limit param must be an integer"),
                        ({"sort_key": "nope"}, "Invalid sort key: nope")):
        r = admin.get(NS, params=query)
        assert (r.status_code, _message(r)) == (400, text)
    r = admin.get(NS, params={"marker": "nope"})
    assert (r.status_code, _message(r)) == (404, "Metadata definition namespace=nope was not "
                                                 "found.")


def test_the_metadef_schemas_are_served(admin: httpx.Client) -> None:
    for kind, name in (("namespace", "namespace"), ("namespaces", "namespaces"),
                       ("resource_type", "resource_type_association"),
                       ("resource_types", "resource_type_associations"),
                       ("object", "object"), ("objects", "objects"), ("property", "property"),
                       ("properties", "properties"), ("tag", "tag"), ("tags", "tags")):
        r = admin.get(f"/v2/schemas/metadefs/{kind}")
        assert r.status_code == 200 and r.json()["name"] == name
    assert admin.get("/v2/schemas/metadefs/nope").status_code == 404


def test_nested_parts_of_a_create_are_checked_not_failed(admin: httpx.Client) -> None:
    """The namespace schema leaves nested names optional and unbounded; the
    columns hold 80 characters: 400, never a 500 or a half-made namespace."""
    long = "x" * 81
    for body in ({"objects": [{"description": "no name"}]},
                 {"objects": [{"name": long}]},
                 {"tags": [{"name": long}]},
                 {"resource_type_associations": [{"name": "R", "prefix": long}]},
                 {"properties": {long: {"type": "string", "title": "T"}}}):
        r = admin.post(NS, json={"namespace": "nested", **body})
        assert r.status_code == 400, (body, r.text)
    assert admin.get(f"{NS}/nested").status_code == 404
    assert admin.post(NS, json={"namespace": "nested-ok"}).status_code == 201
    r = admin.post(f"{NS}/nested-ok/tags", json={"tags": [{"name": long}]})
    assert r.status_code == 400
    r = admin.post(f"{NS}", json=["not", "an", "object"])
    assert r.status_code == 400 and "schema 'namespace'" in _message(r)


def test_only_admins_give_a_namespace_to_another_project(glimpse_server: Any,
                                                         tmp_path: Any) -> None:
    """Even where a policy lets members create and change namespaces, a member's
    namespace belongs to its own project, as a member's image does."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"add_metadef_namespace": "role:member"\n'
                      '"modify_metadef_namespace": "role:member"\n')
    server = glimpse_server({"oslo_policy": {"policy_file": str(policy)}})
    with client(server, P1, MEMBER) as member, client(server, P1, ADMIN) as admin:
        r = member.post(NS, json={"namespace": "given", "owner": P2})
        assert (r.status_code, _message(r)) == (
            403, f"You are not permitted to create namespace owned by '{P2}'.")
        assert member.get(f"{NS}/given").status_code == 404          # nothing was made
        assert member.post(NS, json={"namespace": "mine"}).json()["owner"] == P1
        r = member.put(f"{NS}/mine", json={"namespace": "mine", "owner": P2})
        assert r.status_code == 403
        assert member.get(f"{NS}/mine").json()["owner"] == P1
        assert admin.post(NS, json={"namespace": "theirs", "owner": P2}).json()["owner"] == P2


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_names_no_url_can_reach_are_refused(admin: httpx.Client, name: str) -> None:
    """They could be created but never read, changed or deleted again (and a
    client that folds '..' away would act on the namespace itself)."""
    admin.post(NS, json={"namespace": "reach"})
    attempts = [
        ("POST", NS, {"namespace": name}),
        ("POST", NS, {"namespace": "reach-nested", "objects": [{"name": name}]}),
        ("POST", NS, {"namespace": "reach-nested", "tags": [{"name": name}]}),
        ("POST", NS, {"namespace": "reach-nested",
                      "resource_type_associations": [{"name": name}]}),
        ("PUT", f"{NS}/reach", {"namespace": name}),
        ("POST", f"{NS}/reach/objects", {"name": name}),
        ("POST", f"{NS}/reach/properties", {"name": name, "type": "string", "title": "T"}),
        ("POST", f"{NS}/reach/tags", {"tags": [{"name": name}]}),
        ("POST", f"{NS}/reach/resource_types", {"name": name}),
    ]
    for method, path, body in attempts:
        r = admin.request(method, path, json=body)
        assert r.status_code == 400, (method, path, body, r.text)
        assert "cannot be used in a URL" in _message(r), (path, body)
    assert admin.get(f"{NS}/reach-nested").status_code == 404       # nothing half-made
    assert admin.get(f"{NS}/reach").json()["namespace"] == "reach"


def test_any_name_gets_a_location_that_leads_back_to_it(admin: httpx.Client) -> None:
    for name in ("café x", "Ā?#%", "p1?q"):
        r = admin.post(NS, json={"namespace": name})
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        assert location.isascii() and " " not in location and "?" not in location
        assert admin.get(location).json()["namespace"] == name
        assert admin.delete(location).status_code == 204


def test_an_objects_required_names_come_back_as_given(admin: httpx.Client) -> None:
    admin.post(NS, json={"namespace": "req"})
    required = ["a,b", "c"]
    assert admin.post(f"{NS}/req/objects", json={"name": "o", "required": required}
                      ).json()["required"] == required
    assert admin.get(f"{NS}/req/objects/o").json()["required"] == required
