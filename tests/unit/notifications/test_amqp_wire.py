"""The AMQP bytes the messaging driver builds itself: message bodies and publish frames."""

from __future__ import annotations

import json
import re
from datetime import datetime

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer

from glimpse.notifications.drivers import OutboxEvent
from glimpse.notifications.drivers.amqp_wire import PublishFramer, add_unique_id, message_body
from glimpse.notifications.envelope import make_envelope


def event(payload: object = None) -> OutboxEvent:
    env = make_envelope(publisher_id="image.n1", event_type="image.create", priority="INFO",
                        payload=payload if payload is not None else {"id": "x"},
                        moment=datetime(2026, 1, 2, 3, 4, 5, 6))
    return OutboxEvent(1, env["message_id"], "image.create", "INFO", json.dumps(env))


# -- message bodies --------------------------------------------------------------------

def test_unique_id_added_after_timestamp_and_new_each_time() -> None:
    ev = event()
    first = json.loads(add_unique_id(ev.envelope))
    second = json.loads(add_unique_id(ev.envelope))
    assert list(first) == ["message_id", "publisher_id", "event_type", "priority", "payload",
                           "timestamp", "_unique_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first["_unique_id"])
    assert first["_unique_id"] != second["_unique_id"]
    assert {k: v for k, v in first.items() if k != "_unique_id"} == json.loads(ev.envelope)


def test_v2_and_v1_bodies() -> None:
    ev = event()
    v2 = json.loads(message_body(ev.envelope, v2=True))
    assert list(v2) == ["oslo.version", "oslo.message"] and v2["oslo.version"] == "2.0"
    inner = json.loads(v2["oslo.message"])
    assert inner["message_id"] == ev.message_id and "_unique_id" in inner
    v1 = json.loads(message_body(ev.envelope, v2=False))
    assert v1["message_id"] == ev.message_id and "_unique_id" in v1
    assert "oslo.version" not in v1
    with pytest.raises(ValueError):
        add_unique_id("{}")


def test_bodies_carry_non_ascii_text_as_utf8_json() -> None:
    payload = {"id": "x", "name": "образ \u00e9\u2603 \"q\" \\ \n", "properties": {"k": "値"}}
    ev = event(payload=payload)
    for v2 in (True, False):
        body = message_body(ev.envelope, v2=v2)
        assert isinstance(body, bytes)
        outer = json.loads(body.decode("utf-8"))
        inner = json.loads(outer["oslo.message"]) if v2 else outer
        assert inner["payload"] == payload
        assert {k: v for k, v in inner.items() if k != "_unique_id"} == json.loads(ev.envelope)



# -- pre-framed publishes ------------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk


class _Conn:
    frame_max = 4096 + 8
    bytes_sent = 0


@pytest.mark.parametrize("size", [0, 10, 4096 - 100, 4096, 3 * 4096 + 5])
def test_framer_writes_the_same_bytes_as_py_amqp(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sink = _Sink()
    write = frame_writer(_Conn(), sink)
    message = amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                           delivery_mode=2)
    write(1, 7, spec.Basic.Publish,
          amqp.serialization.dumps("Bssbb", (0, "glance", "notifications.info", False, False)),
          message)
    ours = PublishFramer(7, _Conn.frame_max, "glance").frames("notifications.info", body)
    assert ours == bytes(sink.data)
