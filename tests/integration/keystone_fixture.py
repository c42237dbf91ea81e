"""The test Keystone's fixed content, and pytest fixtures that use it.

``scripts/keystone.sh`` starts Keystone and, on a first set-up, runs
``python tests/integration/keystone_fixture.py provision`` (idempotent) to
create two projects with an admin, a member and a reader each, and the
service user Glimpse validates tokens with. The set-up is then cached.

Fixtures: ``keystone`` (session; fails when ``GLIMPSE_TEST_KEYSTONE_URL`` is
missing: a missing service is a failure), ``keystone_glimpse`` (module scope: a
Glimpse server with ``auth_strategy = keystone`` whose URL is registered as the
``image`` endpoint of Keystone's catalog).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

PROJECTS = ("glimpse-a", "glimpse-b")
ROLES_OF = {"admin": ("admin",), "member": ("member",), "reader": ("reader",)}
SERVICE_USER = "glimpse-service"
SERVICE_PROJECT = "service"
REGION = "RegionOne"


def user_name(project: str, role: str) -> str:
    return f"{project}-{role}"


def password_of(user: str) -> str:
    return f"pw-{user}"


def admin_connection(url: str, admin_password: str) -> Any:
    import openstack

    return openstack.connect(auth_url=url, username="admin", password=admin_password,
                             project_name="admin", user_domain_id="default",
                             project_domain_id="default", region_name=REGION,
                             identity_api_version="3")


def provision(url: str, admin_password: str) -> None:
    """Create (if missing) projects, users and role grants. Idempotent."""
    conn = admin_connection(url, admin_password)
    idn = conn.identity
    roles = {r.name: r for r in idn.roles()}
    for name in (*PROJECTS, SERVICE_PROJECT):
        if idn.find_project(name, domain_id="default") is None:
            idn.create_project(name=name, domain_id="default")
    for project_name in PROJECTS:
        project = idn.find_project(project_name, domain_id="default")
        for role in ROLES_OF:
            name = user_name(project_name, role)
            user = idn.find_user(name, domain_id="default")
            if user is None:
                user = idn.create_user(name=name, password=password_of(name),
                                       domain_id="default", default_project_id=project.id)
            for r in ROLES_OF[role]:
                idn.assign_project_role_to_user(project, user, roles[r])
    service = idn.find_project(SERVICE_PROJECT, domain_id="default")
    user = idn.find_user(SERVICE_USER, domain_id="default")
    if user is None:
        user = idn.create_user(name=SERVICE_USER, password=password_of(SERVICE_USER),
                               domain_id="default", default_project_id=service.id)
    idn.assign_project_role_to_user(service, user, roles["service"])
    if not list(idn.services(type="image")):
        idn.create_service(name="glance", type="image", description="Glimpse (tests)")


@dataclass
class KeystoneInfo:
    url: str
    admin_password: str
    project_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)

    def authtoken_options(self, **extra: Any) -> dict[str, Any]:
        """``[keystone_authtoken]`` of a Glimpse that validates this Keystone's tokens."""
        base = self.url.rsplit("/v3", 1)[0]
        return {"www_authenticate_uri": base, "auth_url": base, "auth_type": "password",
                "username": SERVICE_USER, "password": password_of(SERVICE_USER),
                "project_name": SERVICE_PROJECT, "user_domain_id": "default",
                "project_domain_id": "default", "region_name": REGION, **extra}

    def session(self, project: str, role: str) -> Any:
        """A keystoneauth1 Session of the user ``<project>-<role>``."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        name = user_name(project, role)
        auth = v3.Password(auth_url=self.url, username=name, password=password_of(name),
                           project_name=project, user_domain_id="default",
                           project_domain_id="default")
        return session.Session(auth=auth)

    def token(self, project: str, role: str) -> str:
        return str(self.session(project, role).get_token())

    def service_token(self) -> str:
        """A token of the service user Glimpse validates tokens as."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        auth = v3.Password(auth_url=self.url, username=SERVICE_USER,
                           password=password_of(SERVICE_USER), project_name=SERVICE_PROJECT,
                           user_domain_id="default", project_domain_id="default")
        return str(session.Session(auth=auth).get_token())

    def set_image_endpoint(self, glimpse_url: str) -> None:
        """Point the catalog's ``image`` endpoints (public/internal/admin) at Glimpse."""
        conn = admin_connection(self.url, self.admin_password)
        idn = conn.identity
        service = next(iter(idn.services(type="image")))
        existing = {e.interface: e for e in idn.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            endpoint = existing.get(interface)
            if endpoint is None:
                idn.create_endpoint(service_id=service.id, interface=interface,
                                    url=glimpse_url, region_id=REGION)
            elif endpoint.url != glimpse_url:
                idn.update_endpoint(endpoint, url=glimpse_url)


def keystone_info() -> KeystoneInfo:
    url = os.environ.get("GLIMPSE_TEST_KEYSTONE_URL")
    password = os.environ.get("GLIMPSE_TEST_KEYSTONE_ADMIN_PASSWORD")
    if not url or not password:
        pytest.fail("GLIMPSE_TEST_KEYSTONE_URL is not set: run the suite through "
                    "scripts/test.sh (or '. scripts/keystone.sh'), which starts Keystone "
                    "(a missing service is a failure, not a skip)")
    conn = admin_connection(url, password)
    info = KeystoneInfo(url=url, admin_password=password)
    for project in PROJECTS:
        found = conn.identity.find_project(project, domain_id="default")
        if found is None:
            pytest.fail(f"Keystone at {url} lacks project {project}: re-run "
                        "tests/integration/keystone_fixture.py provision")
        info.project_ids[project] = found.id
        for role in ROLES_OF:
            user = conn.identity.find_user(user_name(project, role), domain_id="default")
            info.user_ids[user_name(project, role)] = user.id
    return info


@pytest.fixture(scope="session")
def keystone() -> KeystoneInfo:
    return keystone_info()


def _root_conftest() -> Any:
    """tests/conftest.py as a module (its server helpers)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "conftest.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(path):
            return module
    spec = importlib.util.spec_from_file_location("glimpse_tests_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["glimpse_tests_conftest"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keystone_glimpse(keystone: KeystoneInfo, tmp_path_factory: pytest.TempPathFactory,
                     ) -> Iterator[Any]:
    """One Glimpse per module with ``auth_strategy = keystone`` (no token cache, so a
    revoked token is refused at once), registered as the catalog's ``image`` endpoint."""
    conftest = _root_conftest()
    state = tmp_path_factory.mktemp("keystone-glimpse")
    port = conftest.free_port()
    options = conftest.server_options(state, port, {
        "DEFAULT": {"auth_strategy": "keystone"},
        "keystone_authtoken": keystone.authtoken_options(token_cache_time=-1)})
    config_file = conftest.write_config(state / "glimpse-api.conf", options)
    server = conftest.ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                                    config_file=config_file, log=state / "glimpse.log",
                                    options=options)
    server.start()
    try:
        keystone.set_image_endpoint(server.url)
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["provision"]:
        print("usage: keystone_fixture.py provision", file=sys.stderr)
        sys.exit(2)
    provision(os.environ["GLIMPSE_TEST_KEYSTONE_URL"],
              os.environ["GLIMPSE_TEST_KEYSTONE_ADMIN_PASSWORD"])
    print("[keystone] provisioned projects and users", file=sys.stderr)
