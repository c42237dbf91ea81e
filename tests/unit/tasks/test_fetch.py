"""The downloader against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import pytest

from glimpse.exceptions import ImportFailed
from glimpse.tasks.fetch import open_download
from glimpse.tasks.url_filter import FilterRules, URLRefused
from tests.import_source import SourceServer, generated


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


def rules_for(server: SourceServer) -> FilterRules:
    return FilterRules(allowed_hosts=("127.0.0.1",), allowed_ports=(server.port,))


def test_streams_the_body(source: SourceServer) -> None:
    source.files["a"] = b"x" * 3000 + b"end"
    with open_download(source.url("/files/a"), rules_for(source), timeout=5) as download:
        assert download.content_length == 3003
        assert b"".join(download.iter_bytes(1000)) == source.files["a"]


def test_large_body_in_chunks(source: SourceServer) -> None:
    n = 5 * 1024 * 1024 + 7
    digest = hashlib.md5()
    chunks = 0
    with open_download(source.url(f"/big/{n}?nolength"), rules_for(source), timeout=5) as d:
        assert d.content_length is None
        for chunk in d.iter_bytes(65536):
            assert len(chunk) <= 65536
            digest.update(chunk)
            chunks += 1
    assert chunks > 1
    assert digest.hexdigest() == hashlib.md5(b"".join(generated(n))).hexdigest()


def test_404_fails_with_status(source: SourceServer) -> None:
    with pytest.raises(ImportFailed, match="404"), \
            open_download(source.url("/nothere"), rules_for(source), timeout=5):
        pass


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rules = FilterRules(allowed_hosts=("127.0.0.1",), allowed_ports=(port,))
    with pytest.raises(ImportFailed, match="Could not connect"), \
            open_download(f"http://127.0.0.1:{port}/x", rules, timeout=5):
        pass


def test_stalled_server_times_out(source: SourceServer) -> None:
    with open_download(source.url("/stall/100000"), rules_for(source), timeout=0.5) as d, \
            pytest.raises(ImportFailed, match="stalled"):
        for _ in d.iter_bytes():
            pass


def test_a_drip_that_never_stalls_fails_at_the_deadline(source: SourceServer) -> None:
    started = time.monotonic()
    with open_download(source.url("/drip/100000"), rules_for(source), timeout=5,
                       deadline=0.5) as d, \
            pytest.raises(ImportFailed, match=r"took longer than its deadline of 0\.5 s"):
        for _ in d.iter_bytes():
            pass
    # the 5 s stall timeout never fired: every read got a byte within 0.05 s
    assert time.monotonic() - started < 4


def test_without_a_deadline_a_slow_download_completes(source: SourceServer) -> None:
    with open_download(source.url("/drip/20?every=0.05"), rules_for(source), timeout=5,
                       deadline=0) as d:
        assert b"".join(d.iter_bytes()) == b"d" * 20


def test_redirect_followed_to_allowed_target(source: SourceServer) -> None:
    source.files["b"] = b"payload"
    url = source.url("/redirect?to=/files/b")
    with open_download(url, rules_for(source), timeout=5) as d:
        assert b"".join(d.iter_bytes()) == b"payload"
    assert source.requests == ["/redirect?to=/files/b", "/files/b"]


@pytest.mark.parametrize("to", ["http://169.254.169.254/latest/meta-data/",
                                "http://10.0.0.1:{port}/x", "ftp://127.0.0.1:{port}/x",
                                "http://127.0.0.1:1/x"])
def test_redirect_to_disallowed_target_is_refused(source: SourceServer, to: str) -> None:
    url = source.url("/redirect?to=" + to.format(port=source.port))
    with pytest.raises(URLRefused), open_download(url, rules_for(source), timeout=5):
        pass
    assert len(source.requests) == 1


def test_too_many_redirects(source: SourceServer) -> None:
    url = source.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/files/none")
    with pytest.raises(ImportFailed, match="redirects"), \
            open_download(url, rules_for(source), timeout=5, max_redirects=1):
        pass


def test_disallowed_host_never_contacted(source: SourceServer) -> None:
    with pytest.raises(URLRefused), \
            open_download(source.url("/files/a"), FilterRules(), timeout=5):
        pass
    assert source.requests == []
