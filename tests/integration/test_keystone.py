"""Glimpse with ``auth_strategy = keystone`` against a real Keystone (scripts/keystone.sh).

Tokens of two projects' admin, member and reader users are validated by
keystonemiddleware; python-glanceclient and openstacksdk log in with a
username and password and find Glimpse through Keystone's catalog; a slice of
the isolation matrix runs with real tokens.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    if name in sys.modules:
        return sys.modules[name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


_fixture = _load(Path(__file__).with_name("keystone_fixture.py"), "glimpse_keystone_fixture")
KeystoneInfo = _fixture.KeystoneInfo
REGION = _fixture.REGION
password_of = _fixture.password_of
user_name = _fixture.user_name
keystone = _fixture.keystone                    # pytest fixtures
keystone_glimpse = _fixture.keystone_glimpse

pytestmark = pytest.mark.keystone

A, B = _fixture.PROJECTS
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _matrix() -> Any:
    return _load(Path(__file__).parents[1] / "functional" / "test_isolation_matrix.py",
                 "glimpse_isolation_matrix")


class Tokens:
    def __init__(self, keystone: KeystoneInfo) -> None:
        self.keystone = keystone
        self._tokens: dict[tuple[str, str], str] = {}

    def __call__(self, project: str, role: str) -> dict[str, str]:
        key = (project, role)
        if key not in self._tokens:
            self._tokens[key] = self.keystone.token(project, role)
        return {"X-Auth-Token": self._tokens[key]}


def test_tokens_decide_identity(keystone: KeystoneInfo, keystone_glimpse: Any) -> None:
    server = keystone_glimpse
    token = Tokens(keystone)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/versions").status_code in (200, 300)
        for headers in ({}, {"X-Auth-Token": "gAAAAAB-not-a-token"},
                        {"X-Project-Id": keystone.project_ids[A], "X-Roles": "admin",
                         "X-Identity-Status": "Confirmed"}):
            denied = http.get("/v2/images", headers=headers)
            assert denied.status_code == 401, denied.text
            assert "keystone uri=" in denied.headers["WWW-Authenticate"].lower()

        created = http.post("/v2/images", headers=token(A, "member"),
                            json={"name": "ks", "disk_format": "raw",
                                  "container_format": "bare"})
        assert created.status_code == 201, created.text
        image = created.json()
        assert image["owner"] == keystone.project_ids[A]
        path = f"/v2/images/{image['id']}"
        assert http.get(path, headers=token(A, "reader")).status_code == 200
        assert http.get(path, headers=token(B, "member")).status_code == 404
        assert http.get(path, headers=token(B, "admin")).status_code == 200
        readonly = http.patch(path, headers={**token(A, "reader"), **PATCH},
                              content=b'[{"op": "add", "path": "/k", "value": "v"}]')
        assert readonly.status_code == 403
        # Identity headers next to a token are stripped by auth_token: no escalation.
        spoofed = {**token(A, "member"), **PATCH, "X-Roles": "admin",
                   "X-Project-Id": keystone.project_ids[B]}
        publicize = http.patch(path, headers=spoofed,
                               content=b'[{"op": "replace", "path": "/visibility", '
                                       b'"value": "public"}]')
        assert publicize.status_code == 403, publicize.text
        assert http.get(path, headers=token(B, "member")).status_code == 404


def test_a_revoked_token_is_refused(keystone: KeystoneInfo, keystone_glimpse: Any) -> None:
    server = keystone_glimpse
    session = keystone.session(A, "member")
    user_token = session.get_token()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v2/images", headers={"X-Auth-Token": user_token}).status_code == 200
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        admin_session = ks_session.Session(auth=v3.Password(
            auth_url=keystone.url, username="admin", password=keystone.admin_password,
            project_name="admin", user_domain_id="default", project_domain_id="default"))
        revoked = admin_session.delete(keystone.url + "/auth/tokens",
                                       headers={"X-Subject-Token": user_token})
        assert revoked.status_code == 204
        assert http.get("/v2/images", headers={"X-Auth-Token": user_token}).status_code == 401


def test_glanceclient_finds_glimpse_in_the_catalog(keystone: KeystoneInfo,
                                                   keystone_glimpse: Any) -> None:
    from glanceclient import Client

    server = keystone_glimpse
    glance = Client("2", session=keystone.session(A, "member"), region_name=REGION)
    assert glance.http_client.get_endpoint().rstrip("/") == server.url
    data = uuid.uuid4().bytes * 1000
    image = glance.images.create(name="via-catalog", disk_format="raw",
                                 container_format="bare")
    glance.images.upload(image.id, io.BytesIO(data))
    shown = glance.images.get(image.id)
    assert shown.status == "active" and shown.owner == keystone.project_ids[A]
    assert b"".join(glance.images.data(image.id)) == data
    assert image.id in {i.id for i in glance.images.list()}
    other = Client("2", session=keystone.session(B, "member"), region_name=REGION)
    assert image.id not in {i.id for i in other.images.list()}


def test_openstacksdk_finds_glimpse_in_the_catalog(keystone: KeystoneInfo,
                                                   keystone_glimpse: Any) -> None:
    import openstack

    name = user_name(B, "member")
    conn = openstack.connect(auth_url=keystone.url, username=name, password=password_of(name),
                             project_name=B, user_domain_id="default",
                             project_domain_id="default", region_name=REGION,
                             identity_api_version="3")
    data = b"sdk through keystone " * 500
    image = conn.image.create_image(name="sdk-ks", data=data, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    assert image.owner == keystone.project_ids[B]
    fetched = conn.image.download_image(image)
    body = fetched.content if hasattr(fetched, "content") else fetched
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert image.id in {i.id for i in conn.image.images()}


def test_isolation_matrix_slice_with_keystone_tokens(keystone: KeystoneInfo,
                                                     keystone_glimpse: Any) -> None:
    """The matrix's rules, with real tokens: project A owns, project B is the member."""
    matrix = _matrix()
    server = keystone_glimpse
    token = Tokens(keystone)
    relation_project = {"owner": A, "member": B}

    class KeystoneEnv(matrix.MatrixEnv):  # type: ignore[misc, name-defined]
        def headers(self, relation: str, role: str) -> dict[str, str]:
            return token(relation_project[relation], role)

    failures = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        env = KeystoneEnv(client=http)
        env.projects = {"owner": keystone.project_ids[A], "member": keystone.project_ids[B],
                        "stranger": uuid.uuid4().hex}
        cells = [matrix.Cell("item", relation, role, variant, endpoint)
                 for endpoint, variant, relation, role in itertools.product(
                     ("show", "download", "patch", "members-list", "member-update", "delete",
                      "deactivate"),
                     ("private", "shared-pending", "shared-accepted", "public"),
                     ("owner", "member"), ("admin", "member", "reader"))]
        for cell in cells:
            expected, actual, body = env.run_item(cell)
            if expected != actual:
                failures.append(f"{cell.id}: expected {expected}, got {actual}: {body}")
    assert not failures, "\n".join(failures)
