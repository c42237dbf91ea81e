"""The real clients against the metadata definitions API: the ``openstack`` CLI
(``image metadef namespace create/list/show/set/delete``, through openstacksdk)
and python-glanceclient's ``glance md-*`` commands (the same commands, run
against a Glance 33 peer, give the same tables). The server runs with noauth:
requests without identity headers act as its default identity, an admin, as
metadef writes need. (~11 CLI runs of ~1-2 s each: their start-up.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess
from tests.integration.glance_cli import glance, table

OPENSTACK = str(Path(sys.executable).with_name("openstack"))


def openstack(server: ServerProcess, *args: str) -> Any:
    """``openstack ... -f json`` without Keystone (auth type none, the server's URL
    as the endpoint); the parsed output, or None for commands that print nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    proc = subprocess.run([OPENSTACK, "--os-auth-type", "none", "--os-endpoint", server.url,
                           *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"openstack {' '.join(args)} failed: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_openstack_cli_manages_namespaces(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server()
    created = openstack(server, "image", "metadef", "namespace", "create", "--display-name",
                        "OSC one", "--description", "d", "--public", "--protected", "osc-ns",
                        "-f", "json")
    assert (created["namespace"], created["display_name"], created["visibility"],
            created["protected"], created["owner"]) == ("osc-ns", "OSC one", "public", True,
                                                        "admin")
    assert {"namespace": "osc-ns"} in openstack(server, "image", "metadef", "namespace",
                                                 "list", "-f", "json")
    assert openstack(server, "image", "metadef", "namespace", "show", "osc-ns", "-f",
                     "json")["description"] == "d"
    openstack(server, "image", "metadef", "namespace", "set", "--display-name", "two",
              "--unprotected", "osc-ns")
    with server.client() as http:
        shown = http.get("/v2/metadefs/namespaces/osc-ns").json()
        assert (shown["display_name"], shown["protected"]) == ("two", False)
        openstack(server, "image", "metadef", "namespace", "delete", "osc-ns")
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
