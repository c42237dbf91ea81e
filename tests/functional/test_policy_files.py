"""Operator policy files as Glance reads them, over HTTP: a renamed admin role
(``context_is_admin``) and the legacy defaults (``enforce_new_defaults = false``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.import_helpers import OTHER, PROJECT, headers


def test_context_is_admin_names_who_is_admin(glimpse_server: Any, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"context_is_admin": "role:cloud_admin"\n')
    server = glimpse_server({"oslo_policy": {"policy_file": str(policy)}})
    third = "0" * 32
    with server.client(**headers(roles="member,reader")) as owner, \
            server.client(**headers(OTHER, roles="cloud_admin,member,reader")) as cloud, \
            server.client(**headers(third, roles="admin,member,reader")) as admin_role:
        image_id = owner.post("/v2/images", json={"name": "p", "visibility": "private"}
                              ).json()["id"]
        # the operator's admin: others' private images, other owners, deactivation
        assert cloud.get(f"/v2/images/{image_id}").status_code == 200
        patched = cloud.patch(f"/v2/images/{image_id}",
                              json=[{"op": "add", "path": "/k", "value": "v"}],
                              headers={"Content-Type":
                                       "application/openstack-images-v2.1-json-patch"})
        assert patched.status_code == 200, patched.text
        assert cloud.post("/v2/images", json={"owner": PROJECT}).status_code == 201
        assert image_id in {i["id"] for i in cloud.get("/v2/images").json()["images"]}
        # the "admin" role is only a role now
        assert admin_role.get(f"/v2/images/{image_id}").status_code == 404
        assert admin_role.post("/v2/images", json={"owner": PROJECT}).status_code == 403
        assert admin_role.get("/v2/images").json()["images"] == []
        assert cloud.delete(f"/v2/images/{image_id}").status_code == 204


def test_legacy_defaults_let_a_projects_readers_write_but_not_others(
        glimpse_server: Any) -> None:
    server = glimpse_server({"oslo_policy": {"enforce_new_defaults": False}})
    with server.client(**headers(roles="member,reader")) as member, \
            server.client(**headers(roles="reader")) as reader, \
            server.client(**headers(OTHER, roles="reader")) as stranger:
        image_id = member.post("/v2/images", json={"name": "legacy"}).json()["id"]
        patch = [{"op": "add", "path": "/k", "value": "v"}]
        content = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
        # Glance's deprecated rules ("rule:default": anybody) for the project's reader
        assert reader.patch(f"/v2/images/{image_id}", json=patch,
                            headers=content).status_code == 200
        # the image is still invisible to other projects
        assert stranger.get(f"/v2/images/{image_id}").status_code == 404
        assert stranger.delete(f"/v2/images/{image_id}").status_code == 404
        # and publicizing stays an admin's
        assert reader.patch(f"/v2/images/{image_id}", json=[
            {"op": "replace", "path": "/visibility", "value": "public"}],
            headers=content).status_code == 403
        assert reader.delete(f"/v2/images/{image_id}").status_code == 204
