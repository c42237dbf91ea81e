"""The real clients against the metadata definitions API: the ``openstack`` CLI
(``image metadef namespace create/list/show/set/delete``, through openstacksdk)
and python-glanceclient's ``glance md-*`` commands (the same commands, run
against a Glance 33 peer, give the same tables). The server runs with noauth:
requests without identity headers act as its default identity, an admin, as
metadef writes need. (CLI runs cost ~1-2 s each of start-up: the ``openstack``
commands run through one shell process.)"""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.conftest import ServerProcess
from tests.integration.glance_cli import glance, table
from tests.integration.openstack_cli import openstack, openstack_shell


def env_for(server: ServerProcess) -> dict[str, str]:
    """The ``openstack`` CLI without Keystone: auth type none, the server's URL as the
    endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return {**env, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": server.url}


def test_openstack_cli_manages_namespaces(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server()
    env = env_for(server)
    namespace = ["image", "metadef", "namespace"]
    created = openstack(env, *namespace, "create", "--display-name", "OSC one",
                        "--description", "d", "--public", "--protected", "osc-ns",
                        "-f", "json")
    listed, shown_before = openstack_shell(
        env,
        [*namespace, "list", "-f", "json"],
        [*namespace, "show", "osc-ns", "-f", "json"],
        [*namespace, "set", "--display-name", "two", "--unprotected", "osc-ns"])
    assert (created["namespace"], created["display_name"], created["visibility"],
            created["protected"], created["owner"]) == ("osc-ns", "OSC one", "public", True,
                                                        "admin")
    assert {"namespace": "osc-ns"} in listed
    assert shown_before["description"] == "d"
    with server.client() as http:
        shown = http.get("/v2/metadefs/namespaces/osc-ns").json()
        assert (shown["display_name"], shown["protected"]) == ("two", False)
        assert openstack_shell(env, [*namespace, "delete", "osc-ns"]) == []
        assert http.get("/v2/metadefs/namespaces/osc-ns").status_code == 404


def test_glance_md_commands_build_a_namespace(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server()
    created = table(glance(server, "md-namespace-create", "cli-ns", "--display-name", "CLI NS",
                           "--visibility", "public"))
    assert (created["namespace"], created["display_name"], created["visibility"],
            created["protected"]) == ("cli-ns", "CLI NS", "public", "False")
    prop = table(glance(server, "md-property-create", "cli-ns", "--name", "p1", "--title",
                        "P1", "--type", "string", "--schema",
                        '{"type": "string", "enum": ["a", "b"]}'))
    assert (prop["name"], prop["title"], prop["enum"]) == ("p1", "P1", '["a", "b"]')
    obj = table(glance(server, "md-object-create", "cli-ns", "--name", "o1", "--schema",
                       '{"description": "d", "required": ["x"], '
                       '"properties": {"x": {"type": "integer", "title": "X"}}}'))
    assert (obj["name"], obj["required"], obj["properties"]) == ("o1", '["x"]', '["x"]')
    assert table(glance(server, "md-tag-create", "cli-ns", "--name", "t1"))["name"] == "t1"
    association = table(glance(server, "md-resource-type-associate", "cli-ns", "--name",
                               "OS::Glance::Image", "--prefix", "img_"))
    assert (association["name"], association["prefix"]) == ("OS::Glance::Image", "img_")
    shown = table(glance(server, "md-namespace-show", "cli-ns"))
    assert (shown["objects"], shown["properties"], shown["tags"],
            shown["resource_type_associations"]) == (
        '["o1"]', '["p1"]', '["t1"]', '["OS::Glance::Image"]')
    with server.client() as http:       # what the commands stored, prefixed for images
        body = http.get("/v2/metadefs/namespaces/cli-ns",
                        params={"resource_type": "OS::Glance::Image"}).json()
    # glanceclient adds the schema's default of uniqueItems, as it does against Glance
    assert body["properties"] == {"img_p1": {"name": "p1", "type": "string", "title": "P1",
                                             "enum": ["a", "b"], "uniqueItems": False}}
    assert body["objects"][0]["required"] == ["img_x"]
