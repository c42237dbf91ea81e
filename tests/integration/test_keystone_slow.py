"""A slow Keystone holds up only the requests whose tokens it must validate.

keystonemiddleware validates a token it has not cached with a call to Keystone,
in a thread. Those threads are a pool of their own (``[glimpse]
keystone_threads``): while Keystone takes seconds per answer (here a TCP link
in front of the real Keystone holds each of its answers for 2 s), a request
whose token is cached is served at once, not after the slow validations that
came before it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine.url import make_url

from tests.conftest import ServerProcess, free_port, server_options, write_config
from tests.integration.keystone_fixture import (
    PROJECTS,
    KeystoneInfo,
    keystone,  # noqa: F401  (pytest fixture)
)
from tests.tcp_link import TcpLink

pytestmark = pytest.mark.keystone

A = PROJECTS[0]


@pytest.fixture
def slow_keystone_glimpse(keystone: KeystoneInfo,  # noqa: F811
                          tmp_path_factory: pytest.TempPathFactory,
                          ) -> Iterator[tuple[ServerProcess, TcpLink]]:
    """A Glimpse (keystone auth, tokens cached) that reaches Keystone through a link.

    auth_token validates at the identity endpoint of the catalog, which is the
    real Keystone's; the ``admin_token`` plugin (the service user's token and a
    fixed endpoint) sends its validations through the link instead."""
    url = make_url(keystone.url)
    link = TcpLink(url.host or "127.0.0.1", url.port or 5000)
    linked = keystone.url.replace(f":{url.port}/", f":{link.port}/", 1)
    state = tmp_path_factory.mktemp("slow-keystone")
    port = free_port()
    options = server_options(state, port, {
        "DEFAULT": {"auth_strategy": "keystone"},
        "keystone_authtoken": {"www_authenticate_uri": linked.rsplit("/v3", 1)[0],
                               "auth_type": "admin_token", "endpoint": linked,
                               "token": keystone.service_token()}})
    server = ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                           config_file=write_config(state / "glimpse-api.conf", options),
                           log=state / "glimpse.log", options=options)
    server.start()
    try:
        yield server, link
    finally:
        server.stop()
        link.close()


def test_a_cached_token_is_served_while_keystone_is_slow(
        keystone: KeystoneInfo,  # noqa: F811
        slow_keystone_glimpse: tuple[ServerProcess, TcpLink]) -> None:
    server, link = slow_keystone_glimpse
    cached = keystone.token(A, "member")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/v2/images", headers={"X-Auth-Token": cached}).status_code == 200
    fresh = [keystone.token(A, "member") for _ in range(4)]   # not yet seen by Glimpse
    link.delay = 2.0
    done: list[tuple[str, int]] = []

    def get(name: str, token: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            status = http.get("/v2/images", headers={"X-Auth-Token": token}).status_code
        done.append((name, status))

    threads = [threading.Thread(target=get, args=(f"fresh{n}", token))
               for n, token in enumerate(fresh)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)                     # the fresh tokens' validations wait on Keystone
    get("cached", cached)
    for thread in threads:
        thread.join(60)
    assert sorted(status for _, status in done) == [200] * 5
    assert done[0] == ("cached", 200), done
