"""Glimpse behind a reverse proxy that mounts it under a path, with clients that
find it in Keystone's catalog.

openstacksdk (through keystoneauth) fetches the catalog URL and then sends every
request to the ``self`` link of the version document, keeping the catalog's
scheme and host but the link's path. The proxy passes the client's ``Host`` on
and strips ``/image``: built from the request as it reached Glimpse, the link
would be ``<proxy>/v2/``, outside the proxy's path (measured: the SDK's endpoint
was then ``<proxy>/v2``). With ``enable_proxy_headers_parsing`` Glimpse adds
the proxy's ``X-Forwarded-Prefix``; the proxy records what passed through it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess, free_port, server_options, write_config
from tests.integration.keystone_fixture import (
    PROJECTS,
    REGION,
    KeystoneInfo,
    keystone,  # noqa: F401  (pytest fixture)
    password_of,
    user_name,
)
from tests.integration.reverse_proxy import ReverseProxy

pytestmark = pytest.mark.keystone

A, B = PROJECTS
PREFIX = "/image"


@pytest.fixture(scope="module")
def behind_proxy(keystone: KeystoneInfo,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[ServerProcess, ReverseProxy]]:
    """A Glimpse (keystone auth, proxy headers parsed from 127.0.0.1 only) behind a
    proxy at ``<proxy>/image``, which is the catalog's ``image`` endpoint."""
    state = tmp_path_factory.mktemp("behind-proxy")
    port = free_port()
    options = server_options(state, port, {
        "DEFAULT": {"auth_strategy": "keystone", "trusted_proxies": "127.0.0.1"},
        "oslo_middleware": {"enable_proxy_headers_parsing": "true"},
        "keystone_authtoken": keystone.authtoken_options()})
    server = ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                           config_file=write_config(state / "glimpse-api.conf", options),
                           log=state / "glimpse.log", options=options)
    server.start()
    proxy = ReverseProxy(server.url, PREFIX)
    proxy.start()
    try:
        keystone.set_image_endpoint(proxy.url + PREFIX)
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


def test_openstacksdk_stays_behind_the_proxy(keystone: KeystoneInfo,  # noqa: F811
                                             behind_proxy: tuple[ServerProcess, ReverseProxy],
                                             ) -> None:
    import openstack

    _, proxy = behind_proxy
    name = user_name(B, "member")
    conn = openstack.connect(auth_url=keystone.url, username=name, password=password_of(name),
                             project_name=B, user_domain_id="default",
                             project_domain_id="default", region_name=REGION,
                             identity_api_version="3")
    assert conn.image.get_endpoint().rstrip("/") == f"{proxy.url}{PREFIX}/v2"
    data = b"through the proxy " * 4000
    image = conn.image.create_image(name="sdk-behind-proxy", data=data, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    fetched = conn.image.download_image(image)
    body = fetched.content if hasattr(fetched, "content") else fetched
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert image.id in {i.id for i in conn.image.images()}
    conn.image.delete_image(image)
    for call in (("PUT", f"{PREFIX}/v2/images/{image.id}/file"),
                 ("GET", f"{PREFIX}/v2/images/{image.id}/file"),
                 ("DELETE", f"{PREFIX}/v2/images/{image.id}")):
        assert call in proxy.seen, (call, proxy.seen)


def test_glanceclient_pages_behind_the_proxy(keystone: KeystoneInfo,  # noqa: F811
                                             behind_proxy: tuple[ServerProcess, ReverseProxy],
                                             ) -> None:
    """glanceclient uses the catalog URL as it is and adds ``/v2`` itself; it follows
    the lists' ``next`` links (``/v2/images?marker=...``) under the proxy's path."""
    from glanceclient import Client

    _, proxy = behind_proxy
    glance: Any = Client("2", session=keystone.session(A, "member"), region_name=REGION)
    assert glance.http_client.get_endpoint().rstrip("/") == f"{proxy.url}{PREFIX}"
    data = b"glanceclient behind a proxy " * 3000
    created = []
    for n in range(3):
        image = glance.images.create(name=f"gc-behind-proxy-{n}", disk_format="raw",
                                     container_format="bare")
        created.append(image.id)
    glance.images.upload(created[0], io.BytesIO(data))   # a chunked body
    assert glance.images.get(created[0]).status == "active"
    assert b"".join(glance.images.data(created[0])) == data
    listed = [i.id for i in glance.images.list(page_size=1)]
    assert set(created) <= set(listed)
    pages = [path for method, path in proxy.seen
             if method == "GET" and path.startswith(f"{PREFIX}/v2/images?") and "marker=" in path]
    assert len(pages) >= len(listed) - 1
    assert ("PUT", f"{PREFIX}/v2/images/{created[0]}/file") in proxy.seen
