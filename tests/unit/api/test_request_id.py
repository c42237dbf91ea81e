"""Request ids: one per request, on every response (errors and Starlette's last-resort
500 included), in the failure's log line and at the end of the access log line."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from glimpse.api import errors
from glimpse.api.request_id import (
    HEADER,
    AccessLogRequestId,
    RequestIdMiddleware,
    current,
    log_access_with_request_ids,
)

REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _app() -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.scope["state"]["request_id"])

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/ok", ok), Route("/boom", boom)],
                    exception_handlers={Exception: errors.handle_unexpected})
    app.add_middleware(RequestIdMiddleware)
    return app


def test_each_response_carries_its_own_request_id(caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        first, second = client.get("/ok"), client.get("/ok")
        missing = client.get("/nope")
        with caplog.at_level(logging.ERROR, logger="glimpse.api.errors"):
            failed = client.get("/boom")
    ids = [r.headers[HEADER] for r in (first, second, missing, failed)]
    assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == 4
    assert first.text == ids[0]                          # the id the handlers see
    assert (missing.status_code, failed.status_code) == (404, 500)
    assert [r.message for r in caplog.records] == [f"Unhandled error on GET /boom ({ids[3]})"]


def test_the_access_log_line_ends_with_the_request_id() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v2/images", "1.1", 200), None)
    token = current.set("req-0")
    try:
        assert AccessLogRequestId().filter(record)
    finally:
        current.reset(token)
    assert record.getMessage() == '127.0.0.1:5 - "GET /v2/images HTTP/1.1" 200 req-0'
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "x %s", ("y",), None)
    assert AccessLogRequestId().filter(plain) and plain.getMessage() == "x y"   # no request


def test_the_filter_is_installed_once() -> None:
    logger = logging.getLogger("uvicorn.access")
    before = list(logger.filters)
    try:
        log_access_with_request_ids()
        log_access_with_request_ids()
        assert sum(isinstance(f, AccessLogRequestId) for f in logger.filters) == 1
    finally:
        logger.filters[:] = before
