"""Driver loading, URLs, the log driver's lines, and the AMQP driver's confirm reader
(its wire bytes: test_amqp_wire.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import amqp.transport
import pytest
from oslo_config import cfg

from glimpse import config
from glimpse.exceptions import ConfigError
from glimpse.log_file import LogFileHandler
from glimpse.notifications.drivers import OutboxEvent, load_driver
from glimpse.notifications.drivers.amqp import AmqpDriver, BrokerHost, parse_transport_url
from glimpse.notifications.drivers.base import DeliveryError
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


# -- log driver ------------------------------------------------------------------------

def test_a_failing_host_is_tried_once_before_the_next() -> None:
    """Fail-over moves on after one attempt per host (kombu's ``connect()`` would
    wait 2 s and try the same host again); the relay's backoff does the retrying."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def hang_up() -> None:           # a host that accepts and drops every connection
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(1)
                conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    driver = AmqpDriver([BrokerHost("127.0.0.1", listener.getsockname()[1], "u", "p", "/"),
                         BrokerHost("127.0.0.1", refusing.getsockname()[1], "u", "p", "/")],
                        v2=True, connect_timeout=1)
    try:
        with pytest.raises(Exception, match="no broker reachable") as failure:
            driver._ensure_channel()
        assert "refused" in str(failure.value)       # the second host was tried too
        assert len(accepted) == 1
    finally:
        listener.close()
        refusing.close()


def test_each_tls_host_is_checked_against_its_own_name() -> None:
    """kombu writes the name of the host it connects to into the TLS options it is
    given; with fail-over the next host must be checked against *its* name, so
    every connection gets a fresh copy of the driver's options."""
    closed = [socket.socket() for _ in range(2)]
    for sock in closed:
        sock.bind(("127.0.0.1", 0))     # bound, never listening: connections refused
    hosts = [BrokerHost("127.0.0.1", sock.getsockname()[1], "u", "p", "/", ssl=True)
             for sock in closed]
    driver = AmqpDriver(hosts, v2=True, connect_timeout=1)
    try:
        with pytest.raises(Exception, match="refused"):
            driver._ensure_channel()
        assert driver.tls == {"server_hostname": None}
    finally:
        for sock in closed:
            sock.close()


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


@pytest.fixture
def log_to(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], LogFileHandler]]:
    """Send the notification loggers' lines to a LogFileHandler on a path (only)."""
    notification_logger = logging.getLogger("oslo.messaging.notification")
    monkeypatch.setattr(notification_logger, "propagate", False)
    monkeypatch.setattr(notification_logger, "level", logging.INFO)
    handlers: list[LogFileHandler] = []

    def attach(path: str) -> LogFileHandler:
        for old in handlers:
            notification_logger.removeHandler(old)
            with contextlib.suppress(OSError):   # what /dev/full still holds
                old.close()
        handler = LogFileHandler(path)
        handlers.append(handler)
        notification_logger.addHandler(handler)
        return handler

    yield attach
    for handler in handlers:
        notification_logger.removeHandler(handler)
        with contextlib.suppress(OSError):
            handler.close()


def test_a_line_the_log_file_cannot_take_fails_the_batch_from_that_event(
        log_to: Callable[[str], LogFileHandler], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    events = [event("INFO", {"id": str(n)}) for n in range(3)]
    log_to("/dev/full")                          # every write: ENOSPC, a full disk
    with pytest.raises(DeliveryError) as failed:
        LogDriver().send_batch(events)
    assert failed.value.delivered == 0 and "No space left" in str(failed.value)
    capsys.readouterr()                          # logging's own report, on stderr
    log_to(str(tmp_path / "glimpse.log"))        # room again: the retry goes through
    assert LogDriver().send_batch(events) == 3
    lines = (tmp_path / "glimpse.log").read_text().splitlines()
    assert [json.loads(line)["payload"]["id"] for line in lines] == ["0", "1", "2"]


def test_the_log_file_is_reopened_after_logrotate_moved_it(
        log_to: Callable[[str], LogFileHandler], tmp_path: Path) -> None:
    path = tmp_path / "glimpse.log"
    log_to(str(path))
    assert LogDriver().send_batch([event("INFO", {"id": "before"})]) == 1
    path.rename(tmp_path / "glimpse.log.1")      # logrotate without copytruncate
    assert LogDriver().send_batch([event("INFO", {"id": "after"})]) == 1
    assert "before" in (tmp_path / "glimpse.log.1").read_text()
    assert json.loads(path.read_text())["payload"]["id"] == "after"


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
