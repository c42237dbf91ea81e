"""Request ids: ``x-openstack-request-id`` on every response, and in the log lines of it.

Every HTTP request gets a new ``req-<uuid4>`` (oslo.middleware's format, what
Glance answers; an id sent by the client is not reused). Clients show it with
their errors (openstacksdk's ``request_id``, the CLI's ``Request-ID``); the
operator finds the same id in the service log: at the end of the access log
line (``[DEFAULT] access_log``) and in the lines logged for a failed request.
The request's ``RequestContext`` carries it too (tasks keep it as their
``request_id``).
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-openstack-request-id"

# The id of the request being served in this task (uvicorn runs each request in a
# task of its own, so the value never leaks into another request).
current: ContextVar[str] = ContextVar("glimpse_request_id", default="")


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def request_id_of(scope: Scope) -> str:
    """The id :class:`RequestIdMiddleware` gave this request (a new one outside it)."""
    rid = scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


class RequestIdMiddleware:
    """Gives each HTTP request its id (``scope["state"]["request_id"]`` and
    :data:`current`) and adds it to the response's headers. Responses sent from
    outside it (Starlette's last-resort 500) add it themselves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        current.set(rid)   # not reset: the access line of a 500 answered outside has it
        header = (HEADER.encode(), rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLogRequestId(logging.Filter):
    """Appends the request's id to uvicorn's access log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = current.get()
        if rid and isinstance(record.args, tuple):
            record.msg = f"{record.msg} %s"
            record.args = (*record.args, rid)
        return True


def log_access_with_request_ids() -> None:
    """Install :class:`AccessLogRequestId` on ``uvicorn.access`` (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogRequestId) for f in logger.filters):
        logger.addFilter(AccessLogRequestId())
