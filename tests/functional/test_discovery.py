"""Version discovery, schemas, info and health over a real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from glimpse.api import schemas
from tests.conftest import ServerProcess, free_port, server_options, write_config

ADMIN = {"X-Project-Id": "1" * 32, "X-User-Id": "u1", "X-Roles": "admin,member,reader"}
MEMBER = {"X-Project-Id": "2" * 32, "X-User-Id": "u2", "X-Roles": "member,reader"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: these endpoints are read-only."""
    state = tmp_path_factory.mktemp("discovery")
    port = free_port()
    options = server_options(state, port, {"DEFAULT": {"user_storage_quota": "2GB"}})
    config_file = write_config(state / "glimpse-api.conf", options)
    proc = ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                         config_file=config_file, log=state / "glimpse.log", options=options)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _check_version_list(body: dict[str, object], host: str) -> None:
    versions = body["versions"]
    assert isinstance(versions, list)
    assert versions[0]["id"] == "v2.18" and versions[0]["status"] == "CURRENT"
    assert {v["status"] for v in versions[1:]} == {"SUPPORTED"}
    assert versions[-1]["id"] == "v2.0"
    assert all(v["links"] == [{"rel": "self", "href": f"http://{host}/v2/"}] for v in versions)


def test_version_discovery_without_identity(server: ServerProcess) -> None:
    with server.client() as c:
        root = c.get("/")
        assert root.status_code == 300
        assert root.headers["content-type"] == "application/json"
        _check_version_list(root.json(), f"127.0.0.1:{server.port}")
        for path in ("/versions", "/v2", "/v2/"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.json() == root.json()


def test_versions_are_negotiated_as_glance_does_before_authentication(
        glimpse_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """A path under a listed version is served as /v2; under any other version or
    none, the version list answers with 300 whatever the method, credentials or
    not (Glance's version negotiation filter runs before authentication). A
    trailing slash is a 404, not a redirect."""
    server = glimpse_server({"DEFAULT": {"auth_strategy": "token-file"},
                             "glimpse": {"token_file": str(tmp_path / "tokens.json")}})
    with server.client() as c:
        for method, path in [("GET", "/v1/images"), ("POST", "/v1/images"), ("GET", "/v3"),
                             ("DELETE", "/images/x"), ("GET", "/v2.99/images"),
                             ("PUT", "/v1.1/")]:
            r = c.request(method, path)
            assert r.status_code == 300, (method, path)
            _check_version_list(r.json(), f"127.0.0.1:{server.port}")
        # a listed version is the v2 API: here it asks for credentials
        for path in ("/v2.0/images", "/v2.18/images", "/v2/images"):
            assert c.get(path).status_code == 401, path
        assert c.get("/v2.1").status_code == 200              # as /v2: the version list
        assert c.get("/healthcheck").text == "OK"

    noauth = glimpse_server()
    headers = {"X-Identity-Status": "Confirmed", **MEMBER}
    with noauth.client(**headers) as c:
        image_id = c.post("/v2.5/images", json={"name": "negotiated"}).json()["id"]
        r = c.get(f"/v2.1/images/{image_id}")
        assert r.status_code == 200 and r.json()["name"] == "negotiated"
        tag = c.put(f"/v2.3/images/{image_id}/tags/a%20b%C3%A9")   # decoded once
        assert tag.status_code == 204
        assert c.get(f"/v2/images/{image_id}").json()["tags"] == ["a b\u00e9"]
        assert c.get("/v2/images/").status_code == 404
        assert c.get(f"/v2/images/{image_id}/").status_code == 404


def test_version_links_follow_the_host_the_client_used(server: ServerProcess) -> None:
    with server.client(Host="images.example.org:8443") as c:
        _check_version_list(c.get("/versions").json(), "images.example.org:8443")


# the legacy import task made for its Location fetches from here, and fails
TASK_SOURCE = {"import_filtering_opts": {"allowed_hosts": "127.0.0.1"}}
BEHIND_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cloud.example.com",
                "X-Forwarded-Prefix": "/image"}


def _links_and_locations(server: ServerProcess, **headers: str) -> tuple[set[str], str, str]:
    """The version document's links, and the Location of a created image and task."""
    with server.client(**ADMIN, **headers) as c:
        links = {v["links"][0]["href"] for v in c.get("/versions").json()["versions"]}
        image = c.post("/v2/images", json={"name": "behind-proxy"})
        task = c.post("/v2/tasks", json={"type": "import", "input": {
            "import_from": "http://127.0.0.1/nothing", "import_from_format": "raw",
            "image_properties": {"disk_format": "raw", "container_format": "bare"}}})
        assert (image.status_code, task.status_code) == (201, 201), (image.text, task.text)
        return links, image.headers["Location"], task.headers["Location"]


def test_links_follow_a_trusted_proxy_when_parsing_is_enabled(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    proxied = glimpse_server({**TASK_SOURCE, "DEFAULT": {"trusted_proxies": "127.0.0.1"},
                              "oslo_middleware": {"enable_proxy_headers_parsing": "true"}})
    links, image_at, task_at = _links_and_locations(proxied, **BEHIND_PROXY)
    assert links == {"https://cloud.example.com/image/v2/"}
    assert image_at.startswith("https://cloud.example.com/image/v2/images/")
    assert task_at.startswith("https://cloud.example.com/image/v2/tasks/")
    # RFC 7239's header is read first, as oslo.middleware does
    links, _, _ = _links_and_locations(
        proxied, Forwarded='for=192.0.2.1;proto=https;host="cloud.example.com:8443"',
        **{"X-Forwarded-Prefix": "/image"})
    assert links == {"https://cloud.example.com:8443/image/v2/"}
    # a peer other than the trusted proxy cannot choose the links
    untrusted = glimpse_server({**TASK_SOURCE, "DEFAULT": {"trusted_proxies": "192.0.2.10"},
                                "oslo_middleware": {"enable_proxy_headers_parsing": "true"}})
    links, image_at, _ = _links_and_locations(untrusted, **BEHIND_PROXY)
    assert links == {f"{untrusted.url}/v2/"}
    assert image_at.startswith(f"{untrusted.url}/v2/images/")


def test_public_endpoint_sets_every_link(glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server({**TASK_SOURCE,
                             "DEFAULT": {"public_endpoint": "https://cloud.example.com/image/"},
                             "oslo_middleware": {"enable_proxy_headers_parsing": "true"}})
    for headers in ({}, {"X-Forwarded-Host": "elsewhere.example.com"}):
        links, image_at, task_at = _links_and_locations(server, **headers)
        assert links == {"https://cloud.example.com/image/v2/"}
        assert image_at.startswith("https://cloud.example.com/image/v2/images/")
        assert task_at.startswith("https://cloud.example.com/image/v2/tasks/")


def test_healthcheck_and_draining_by_file(server: ServerProcess) -> None:
    disable = server.state / "healthcheck_disable"     # the default, under state_path
    with server.client() as c:
        r = c.get("/healthcheck")
        assert (r.status_code, r.text) == (200, "OK")
        assert c.head("/healthcheck").status_code == 204
        disable.touch()
        try:
            r = c.get("/healthcheck")
            assert (r.status_code, r.text) == (503, "DISABLED BY FILE")
            assert c.head("/healthcheck").status_code == 503
            # draining: the load balancer stops sending, the API still answers
            assert c.get("/v2/images", headers=MEMBER).status_code == 200
        finally:
            disable.unlink()
        assert c.get("/healthcheck").status_code == 200


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_schemas_are_the_documents_clients_validate_with(server: ServerProcess,
                                                         name: str) -> None:
    with server.client(**MEMBER) as c:
        r = c.get(f"/v2/schemas/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc == schemas.schema(name)
    assert doc["name"] == name
    jsonschema.validators.validator_for(doc).check_schema(doc)


def test_image_schema_accepts_what_glance_accepts_and_refuses_the_rest(
        server: ServerProcess) -> None:
    with server.client(**MEMBER) as c:
        doc = c.get("/v2/schemas/image").json()
    validator = jsonschema.validators.validator_for(doc)(doc)
    good = {"id": "8f8a2a9e-4bb9-4d7e-9a61-2e3f8f3b2f10", "name": "cirros", "status": "active",
            "visibility": "private", "disk_format": "qcow2", "container_format": "bare",
            "min_ram": 0, "min_disk": 0, "tags": ["x"], "protected": False,
            "os_hidden": False, "size": 13, "checksum": None, "hw_disk_bus": "scsi"}
    assert not list(validator.iter_errors(good))
    for bad in ({"disk_format": "floppy"}, {"min_ram": "1"}, {"extra": 5},
                {"visibility": "everyone"}):
        assert list(validator.iter_errors(bad)), bad


def test_unknown_schema_is_404(server: ServerProcess) -> None:
    with server.client(**MEMBER) as c:
        r = c.get("/v2/schemas/nothing")
    assert r.status_code == 404


def test_info_stores(server: ServerProcess) -> None:
    with server.client(**MEMBER) as c:
        r = c.get("/v2/info/stores")
        assert r.status_code == 200
        assert r.json() == {"stores": [{"id": "file", "description": "Filesystem store",
                                        "default": "true"}]}
        assert c.get("/v2/info/stores/detail").status_code == 403
    with server.client(**ADMIN) as c:
        detail = c.get("/v2/info/stores/detail").json()["stores"][0]
    assert detail["type"] == "file"
    assert detail["properties"]["data_dir"] == str(server.state / "images")


def test_info_usage_of_an_empty_project(server: ServerProcess) -> None:
    with server.client(**MEMBER) as c:
        r = c.get("/v2/info/usage")
    assert r.status_code == 200
    assert r.json() == {"usage": {
        "image_size_total": {"usage": 0, "limit": 2048},
        "image_stage_total": {"usage": 0, "limit": -1},
        "image_count_total": {"usage": 0, "limit": -1},
        "image_count_uploading": {"usage": 0, "limit": -1},
    }}
