"""Driver loading, the log driver's lines, and the AMQP driver's pure parts."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

import amqp.transport
import pytest
from oslo_config import cfg

from glimpse import config
from glimpse.exceptions import ConfigError
from glimpse.notifications.drivers import OutboxEvent, load_driver
from glimpse.notifications.drivers.amqp import (
    AmqpDriver,
    BrokerHost,
    add_unique_id,
    message_body,
    parse_transport_url,
)
from glimpse.notifications.drivers.log import LogDriver
from glimpse.notifications.envelope import make_envelope


def event(priority: str = "INFO", payload: object = None, event_type: str = "image.create",
          row_id: int = 1) -> OutboxEvent:
    env = make_envelope(publisher_id="image.n1", event_type=event_type, priority=priority,
                        payload=payload if payload is not None else {"id": "x"},
                        moment=datetime(2026, 1, 2, 3, 4, 5, 6))
    return OutboxEvent(row_id, env["message_id"], event_type, priority, json.dumps(env))


def conf_with(**groups: dict[str, object]) -> cfg.ConfigOpts:
    conf = config.load([])
    for group, values in groups.items():
        for key, value in values.items():
            conf.set_override(key, value, group=None if group == "DEFAULT" else group)
    return conf


# -- load_driver -------------------------------------------------------------------

def test_unknown_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown driver 'kafka'"):
        load_driver("kafka", conf_with())


def test_messaging_driver_needs_a_url_and_prefers_the_notifications_one() -> None:
    with pytest.raises(ConfigError, match="transport_url"):
        load_driver("messagingv2", conf_with())
    driver = load_driver("messagingv2", conf_with(
        DEFAULT={"transport_url": "rabbit://a:b@default:5672/"},
        oslo_messaging_notifications={"transport_url": "rabbit://c:d@notif:5673/v",
                                      "topics": ["n1", "n2"]},
        outbox={"declare_queues": False}))
    assert isinstance(driver, AmqpDriver) and driver.v2 and driver.name == "messagingv2"
    assert driver.hosts == [BrokerHost("notif", 5673, "c", "d", "v")]
    assert driver.topics == ("n1", "n2") and driver.exchange_name == "glance"
    assert driver.declare_queues is False
    v1 = load_driver("messaging", conf_with(DEFAULT={"transport_url": "amqp://h/",
                                                     "control_exchange": "images"}))
    assert isinstance(v1, AmqpDriver) and not v1.v2 and v1.exchange_name == "images"
    assert v1.hosts == [BrokerHost("h", 5672, "guest", "guest", "/")]


def test_loading_does_not_connect() -> None:
    # Nothing listens on port 1: building the driver must still succeed.
    driver = load_driver("messaging", conf_with(DEFAULT={"transport_url": "rabbit://127.0.0.1:1/"}))
    assert isinstance(driver, AmqpDriver) and driver._conn is None


# -- transport URLs ------------------------------------------------------------------

def test_parse_cluster_url() -> None:
    hosts = parse_transport_url("rabbit://u%40x:p%3Aw@h1:5672,u2:p2@h2:5673,h3/my%2Fvhost")
    assert hosts == [BrokerHost("h1", 5672, "u@x", "p:w", "my/vhost"),
                     BrokerHost("h2", 5673, "u2", "p2", "my/vhost"),
                     BrokerHost("h3", 5672, "u2", "p2", "my/vhost")]
    assert "p2" not in hosts[1].describe()


def test_parse_ipv6_and_ssl() -> None:
    (host,) = parse_transport_url("amqp://u:p@[::1]:5671/?ssl=1")
    assert host == BrokerHost("::1", 5671, "u", "p", "/", ssl=True)


@pytest.mark.parametrize("url", ["kafka://h/", "rabbit:///", "rabbit://h:notaport/",
                                 "rabbit://h:70000/", "no scheme"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_transport_url(url)


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


# -- log driver ------------------------------------------------------------------------

def test_log_driver_logger_level_and_masking(caplog: pytest.LogCaptureFixture) -> None:
    events = [
        event("INFO", {"id": "a", "properties": {"password": "hunter2", "x": "y"}}),
        event("WARN", {"image_id": "b", "token": "abc", "url": "http://u:pw@host/p"},
              event_type="image.send"),
        event("ERROR", "Failed to upload image data for image c: boom",
              event_type="image.upload"),
    ]
    with caplog.at_level(logging.INFO, logger="oslo.messaging.notification"):
        assert LogDriver().send_batch(events) == 3
    records = [r for r in caplog.records if r.name.startswith("oslo.messaging.notification")]
    assert [r.name for r in records] == ["oslo.messaging.notification.image.create",
                                         "oslo.messaging.notification.image.send",
                                         "oslo.messaging.notification.image.upload"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.ERROR]
    lines = [r.getMessage() for r in records]
    assert all("\n" not in line for line in lines)
    first, second, third = (json.loads(line) for line in lines)
    assert first["payload"]["properties"] == {"password": "***", "x": "y"}
    assert second["payload"]["token"] == "***"
    assert second["payload"]["url"] == "http://***:***@host/p"
    # quoted: a random message_id may contain "abc"
    assert '"hunter2"' not in lines[0] and '"abc"' not in lines[1]
    assert third["payload"] == "Failed to upload image data for image c: boom"
    assert list(first) == list(json.loads(events[0].envelope))
    assert first["message_id"] == events[0].message_id


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
    import amqp
    from amqp import spec
    from amqp.method_framing import frame_writer

    from glimpse.notifications.drivers.amqp_wire import PublishFramer

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


# -- publisher confirms read from the socket ----------------------------------------

def _ack_frame(channel: int, tag: int, multiple: bool, nack: bool = False) -> bytes:
    return struct.pack(">BHIHHQBB", 1, channel, 13, 60, 120 if nack else 80, tag,
                       int(multiple), 0xCE)


def _driver_on_socket() -> tuple[AmqpDriver, socket.socket, Any]:
    """An AmqpDriver whose connection is a py-amqp TCPTransport over a socketpair."""
    ours, broker = socket.socketpair()
    transport: Any = object.__new__(amqp.transport.TCPTransport)
    transport.sock, transport._read_buffer = ours, b""
    driver = AmqpDriver([BrokerHost("h", 5672, "u", "p", "/")], v2=True)
    driver._conn = cast(Any, SimpleNamespace(connection=SimpleNamespace(transport=transport)))
    driver._channel = SimpleNamespace(channel_id=1)
    return driver, broker, transport


def test_confirms_are_read_from_the_socket_and_other_frames_left_to_py_amqp() -> None:
    driver, broker, transport = _driver_on_socket()
    close_frame = struct.pack(">BHIHH", 1, 1, 4, 20, 40) + b"\xce"   # channel.close (cut)
    broker.sendall(_ack_frame(1, 1, False) + _ack_frame(1, 3, True) + close_frame)
    assert driver._read_confirms(1.0) is True
    assert driver._acked_upto == 3
    assert transport._read_buffer == close_frame          # py-amqp reads it next
    assert driver._read_confirms(1.0) is False
    assert transport._read_buffer == close_frame


def test_an_ack_split_across_reads_and_a_nack() -> None:
    driver, broker, transport = _driver_on_socket()
    frame = _ack_frame(1, 1, False)
    broker.sendall(frame[:10])
    assert driver._read_confirms(1.0) is True and driver._acked_upto == 0
    broker.sendall(frame[10:] + _ack_frame(1, 2, False, nack=True))
    assert driver._read_confirms(1.0) is True
    assert driver._acked_upto == 1 and driver._nacked == [2]
    assert transport._read_buffer == b""
    assert driver._read_confirms(0.05) is True              # timed out: caller's deadline
    assert _ack_frame(2, 1, False)[:3] != frame[:3]
    broker.sendall(_ack_frame(2, 5, False))                  # another channel: py-amqp's
    assert driver._read_confirms(1.0) is False
    broker.close()
    transport._read_buffer = b""
    assert driver._read_confirms(1.0) is False               # closed: py-amqp raises
