"""The outbox -> relay -> driver machinery against real RabbitMQ and real databases.

Events are recorded through a real ``Database`` + ``Notifier`` (SQLite and
PostgreSQL), delivered by a real ``Relay`` and received by an unmodified
oslo.messaging notification listener (``Target(topic='notifications',
exchange='glance')``) or a raw kombu consumer. The module works in a RabbitMQ
virtual host of its own, so the default names can be used without meeting
queues of other tests; each test starts with the notification queues deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kombu
import pytest
from oslo_config import cfg
from sqlalchemy import Row, func, select

from glimpse import config
from glimpse.cli import setup_logging
from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox as outbox_table
from glimpse.db.models import relay_leases
from glimpse.notifications.drivers import OutboxEvent, load_driver
from glimpse.notifications.envelope import make_envelope
from glimpse.notifications.recorder import Notifier
from glimpse.notifications.relay import Relay
from tests.integration.listener import NotificationListener, Received
from tests.tcp_link import TcpLink

ROUTING_KEYS = ("notifications.info", "notifications.warn", "notifications.error")
MIXED = [("image.create", "INFO", {"id": "img-1", "status": "queued"}),
         ("image.send", "WARN", {"image_id": "img-1", "bytes_sent": 10}),
         ("image.upload", "ERROR", "Failed to upload image data for image img-1: boom"),
         ("image.update", "INFO", {"id": "img-1", "status": "active"})]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def vhost_url(rabbit_url: str) -> Iterator[str]:
    """A RabbitMQ virtual host for this module: ``rabbit://.../<vhost>``."""
    vhost = f"glimpse_relay_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield rabbit_url.rstrip("/") + "/" + vhost
    try:
        rabbitmqctl("start_app")
        rabbitmqctl("delete_vhost", vhost)
    except subprocess.CalledProcessError:
        pass


@pytest.fixture
def amqp_url(vhost_url: str) -> str:
    """The vhost URL, with the notification queues of earlier tests deleted."""
    with kombu.Connection(vhost_url.replace("rabbit://", "amqp://", 1)) as conn:
        channel = conn.channel()
        for key in ROUTING_KEYS:
            channel.queue_delete(key)
    return vhost_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'glimpse.sqlite'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_url_db(pg_database: str) -> str:
    return pg_database


def make_db(url: str) -> Database:
    db = Database(url)
    migrate.upgrade(db.engine)
    return db


def make_conf(amqp_url: str, drivers: Sequence[str], **outbox: Any) -> cfg.ConfigOpts:
    conf = config.load([])
    conf.set_override("transport_url", amqp_url)
    conf.set_override("driver", list(drivers), group="oslo_messaging_notifications")
    settings = {"poll_interval": 0.05, "initial_backoff": 0.05, "max_backoff": 0.5,
                "lease_seconds": 5.0, **outbox}
    for key, value in settings.items():
        conf.set_override(key, value, group="outbox")
    return conf


def record(db: Database, notifier: Notifier, items: Sequence[tuple[str, str, Any]]
           ) -> list[dict[str, Any]]:
    """Record each item in a transaction of its own; return the envelopes."""
    envelopes = []
    for event_type, priority, payload in items:
        with db.write() as session:
            env = notifier.record(session, event_type, lambda p=payload: p, priority=priority)
            assert env is not None
            envelopes.append(env)
    return envelopes


def numbered(count: int, image: str = "img-n") -> list[tuple[str, str, Any]]:
    return [("image.update", "INFO", {"id": image, "n": i}) for i in range(count)]


def outbox_rows(db: Database, driver: str) -> list[Row[Any]]:
    with db.read() as session:
        return list(session.execute(select(outbox_table).where(outbox_table.c.driver == driver)
                                    .order_by(outbox_table.c.id)))


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_matches(received: Received, envelope: dict[str, Any]) -> None:
    assert received.message_id == envelope["message_id"]
    assert received.metadata["timestamp"] == envelope["timestamp"]
    assert received.priority == envelope["priority"]
    assert received.publisher_id == envelope["publisher_id"]
    assert received.event_type == envelope["event_type"]
    assert received.payload == envelope["payload"]


@pytest.fixture
def listeners(amqp_url: str) -> Iterator[Callable[[], NotificationListener]]:
    started: list[NotificationListener] = []

    def start() -> NotificationListener:
        listener = NotificationListener(amqp_url).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


# -- wire compatibility -----------------------------------------------------------------

def test_oslo_listener_receives_every_priority_in_order(
        db_url: str, amqp_url: str, listeners: Callable[[], NotificationListener]) -> None:
    db = make_db(db_url)
    conf = make_conf(amqp_url, ["messagingv2"])
    relay = Relay(conf, db, ["messagingv2"], node_id="n1")
    notifier = Notifier(["messagingv2"], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        envelopes = record(db, notifier, MIXED)
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, "messagingv2")),
                   "delivery")
        # The listener starts after delivery: the declared queues kept the events.
        listener = listeners()
        got = listener.wait_for(lambda ev: len(ev) >= len(MIXED), timeout=120)
    finally:
        relay.stop(5)
    assert len(got) == len(MIXED)
    by_priority = {p: [e for e in got if e.priority == p] for p in ("INFO", "WARN", "ERROR")}
    for env in envelopes:
        (match,) = [e for e in by_priority[env["priority"]]
                    if e.message_id == env["message_id"]]
        assert_matches(match, env)
    # Per routing key the order is the recording order.
    infos = [e.message_id for e in by_priority["INFO"]]
    assert infos == [e["message_id"] for e in envelopes if e["priority"] == "INFO"]
    db.dispose()


def test_relay_publishes_into_topology_an_oslo_listener_declared_first(
        amqp_url: str, tmp_path: Path, listeners: Callable[[], NotificationListener]) -> None:
    """Same exchange/queue flags as oslo.messaging: no PRECONDITION_FAILED either way."""
    listener = listeners()                              # declares exchange + queues first
    db = make_db(f"sqlite:///{tmp_path / 'g.sqlite'}")
    conf = make_conf(amqp_url, ["messagingv2"])
    relay = Relay(conf, db, ["messagingv2"], node_id="n1")
    notifier = Notifier(["messagingv2"], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        envelopes = record(db, notifier, numbered(20))
        got = listener.wait_for(lambda ev: len(ev) >= 20, timeout=120)
    finally:
        relay.stop(5)
    assert [e.message_id for e in got] == [e["message_id"] for e in envelopes]
    assert all(r.attempts == 0 for r in outbox_rows(db, "messagingv2"))


def consume_raw(url: str, queue: str, count: int, timeout: float = 30.0
                ) -> list[kombu.Message]:
    messages: list[kombu.Message] = []
    with kombu.Connection(url.replace("rabbit://", "amqp://", 1)) as conn:
        q = kombu.Queue(queue, exchange=kombu.Exchange("glance", type="topic", durable=False),
                        routing_key=queue, durable=False, auto_delete=False)

        def on_message(body: Any, message: kombu.Message) -> None:
            messages.append(message)
            message.ack()

        with conn.Consumer([q], callbacks=[on_message], accept=["json"]):
            deadline = time.monotonic() + timeout
            while len(messages) < count and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
    return messages


@pytest.mark.parametrize("driver", ["messaging", "messagingv2"])
def test_raw_message_bodies_and_properties(driver: str, amqp_url: str, tmp_path: Path) -> None:
    db = make_db(f"sqlite:///{tmp_path / 'g.sqlite'}")
    conf = make_conf(amqp_url, [driver])
    relay = Relay(conf, db, [driver], node_id="n1")
    notifier = Notifier([driver], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        envelopes = record(db, notifier, numbered(3))
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, driver)), "delivery")
    finally:
        relay.stop(5)
    messages = consume_raw(amqp_url, "notifications.info", 3)
    assert len(messages) == 3
    unique_ids = set()
    for message, env in zip(messages, envelopes, strict=True):
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        assert message.properties["delivery_mode"] == 2
        assert message.delivery_info["routing_key"] == "notifications.info"
        assert message.delivery_info["exchange"] == "glance"
        body = json.loads(message.body)
        if driver == "messagingv2":
            assert list(body) == ["oslo.version", "oslo.message"]
            assert body["oslo.version"] == "2.0" and isinstance(body["oslo.message"], str)
            inner = json.loads(body["oslo.message"])
        else:
            assert "oslo.version" not in body
            inner = body
        assert list(inner) == [*env, "_unique_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", inner["_unique_id"])
        unique_ids.add(inner["_unique_id"])
        assert {k: v for k, v in inner.items() if k != "_unique_id"} == env
    assert len(unique_ids) == 3
    db.dispose()


def test_cluster_url_fails_over_to_a_live_host(
        amqp_url: str, tmp_path: Path, listeners: Callable[[], NotificationListener]) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    cluster = f"rabbit://guest:guest@127.0.0.1:1,guest:guest@127.0.0.1:5672/{vhost}"
    assert_relay_delivers(make_conf(cluster, ["messagingv2"]), tmp_path, listeners())


def assert_relay_delivers(conf: cfg.ConfigOpts, tmp_path: Path,
                          listener: NotificationListener, count: int = 5) -> None:
    """A relay with ``conf`` (messagingv2) delivers ``count`` events recorded in a fresh
    SQLite outbox to ``listener``, in order."""
    db = make_db(f"sqlite:///{tmp_path / 'g.sqlite'}")
    relay = Relay(conf, db, ["messagingv2"], node_id="n1")
    notifier = Notifier(["messagingv2"], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        envelopes = record(db, notifier, numbered(count))
        got = listener.wait_for(lambda ev: len(ev) >= count, timeout=120)
    finally:
        relay.stop(5)
    assert [e.message_id for e in got] == [e["message_id"] for e in envelopes]


# -- TLS to the broker --------------------------------------------------------------------

def _certificates(directory: Path, name: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for ``name`` (an IP address or a DNS
    name): (ca, cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def build(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            try:
                alt_name: Any = x509.IPAddress(ipaddress.ip_address(name))
            except ValueError:
                alt_name = x509.DNSName(name)
            builder = builder.add_extension(x509.SubjectAlternativeName([alt_name]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("Glimpse test CA", "Glimpse test CA", ca_key.public_key(), ca_key, True)
    cert = build(name, "Glimpse test CA", key.public_key(), ca_key, False)
    paths = directory / "ca.pem", directory / "broker.pem", directory / "broker.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _tls_broker(amqp_url: str, directory: Path, name: str = "127.0.0.1",
                ) -> tuple[Path, TcpLink, Any]:
    """In front of the real broker, a TLS terminator whose certificate a private CA
    signed for ``name``: (the CA file, the link, a messagingv2 configuration with
    ``[oslo_messaging_rabbit] ssl`` on and no CA file yet)."""
    ca, cert, key = _certificates(directory, name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    link = TcpLink("127.0.0.1", 5672, tls=context)
    vhost = amqp_url.rsplit("/", 1)[1]
    conf = make_conf(f"rabbit://guest:guest@127.0.0.1:{link.port}/{vhost}", ["messagingv2"])
    conf.set_override("ssl", True, group="oslo_messaging_rabbit")
    return ca, link, conf


def test_tls_to_the_broker_verified_with_the_operators_ca(
        amqp_url: str, tmp_path: Path, listeners: Callable[[], NotificationListener]) -> None:
    """[oslo_messaging_rabbit] ssl and ssl_ca_file, as a glance-api.conf sets them."""
    ca, link, conf = _tls_broker(amqp_url, tmp_path)
    try:
        # the system's CAs do not know this broker: nothing is sent, nothing counted
        untrusting = load_driver("messagingv2", conf)
        with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
            untrusting.send_batch([_event(0)])
        untrusting.close()

        conf.set_override("ssl_ca_file", str(ca), group="oslo_messaging_rabbit")
        assert_relay_delivers(conf, tmp_path, listeners())
    finally:
        link.close()


def test_tls_to_the_broker_checks_the_brokers_name(amqp_url: str, tmp_path: Path) -> None:
    """A certificate the operator's CA signed for another name is refused (as
    oslo.messaging 18 refuses it): a trusted CA alone does not make any host the
    broker."""
    ca, link, conf = _tls_broker(amqp_url, tmp_path, name="broker.invalid")
    conf.set_override("ssl_ca_file", str(ca), group="oslo_messaging_rabbit")
    try:
        driver = load_driver("messagingv2", conf)
        with pytest.raises(Exception, match=r"(?i)IP address mismatch"):
            driver.send_batch([_event(0)])
        driver.close()
    finally:
        link.close()


def _event(n: int) -> OutboxEvent:
    envelope = make_envelope(publisher_id="image.test", event_type="image.create",
                             priority="INFO", payload={"id": str(n)}, moment=datetime.now(UTC))
    return OutboxEvent(n + 1, envelope["message_id"], "image.create", "INFO",
                       json.dumps(envelope))


# -- the log driver ---------------------------------------------------------------------

LOG_LINE = re.compile(r"^\S+ \S+ \d+ (INFO|WARNING|ERROR) "
                      r"oslo\.messaging\.notification\.(\S+) (\{.*\})$")


def test_log_driver_lines_parse_back_into_the_envelopes(tmp_path: Path) -> None:
    db = make_db(f"sqlite:///{tmp_path / 'g.sqlite'}")
    log_file = tmp_path / "glimpse.log"
    conf = make_conf("rabbit://unused/", ["log"])
    conf.set_override("log_file", str(log_file))
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    setup_logging(conf)
    relay = Relay(conf, db, ["log"], node_id="n1")
    notifier = Notifier(["log"], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        envelopes = record(db, notifier, MIXED)
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, "log")), "delivery")
    finally:
        relay.stop(5)
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [m for m in map(LOG_LINE.match, log_file.read_text().splitlines()) if m]
    assert [json.loads(m.group(3)) for m in lines] == envelopes
    assert [m.group(2) for m in lines] == [e["event_type"] for e in envelopes]
    assert [m.group(1) for m in lines] == ["INFO", "WARNING", "ERROR", "INFO"]


# -- reliability -------------------------------------------------------------------------

def test_rolled_back_transaction_produces_no_event(
        db_url: str, amqp_url: str, listeners: Callable[[], NotificationListener]) -> None:
    db = make_db(db_url)
    relay = Relay(make_conf(amqp_url, ["messagingv2"]), db, ["messagingv2"], node_id="n1")
    notifier = Notifier(["messagingv2"], publisher_id="image.test", on_commit=relay.wake)
    listener = listeners()
    relay.start()
    try:
        with pytest.raises(RuntimeError), db.write() as session:
            notifier.record(session, "image.create", lambda: {"id": "rolled-back"})
            raise RuntimeError("the change failed after recording its event")
        (kept,) = record(db, notifier, [("image.create", "INFO", {"id": "committed"})])
        got = listener.wait_for(lambda ev: len(ev) >= 1, timeout=120)
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, "messagingv2")),
                   "delivery")
    finally:
        relay.stop(5)
    assert [e.message_id for e in got] == [kept["message_id"]]
    assert [r.message_id for r in outbox_rows(db, "messagingv2")] == [kept["message_id"]]


def test_broker_outage_events_wait_and_arrive_in_order(
        db_url: str, amqp_url: str, listeners: Callable[[], NotificationListener]) -> None:
    db = make_db(db_url)
    relay = Relay(make_conf(amqp_url, ["messagingv2"]), db, ["messagingv2"], node_id="n1")
    notifier = Notifier(["messagingv2"], publisher_id="image.test", on_commit=relay.wake)
    relay.start()
    try:
        record(db, notifier, numbered(1, "warm-up"))        # connection is up and in use
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, "messagingv2")),
                   "warm-up delivery")
        rabbitmqctl("stop_app")
        try:
            envelopes = record(db, notifier, numbered(50))
            # Every record() returned while the broker was down: nothing waits for it.
            pending = [r for r in outbox_rows(db, "messagingv2") if r.delivered_at is None]
            assert [r.message_id for r in pending] == [e["message_id"] for e in envelopes]
            wait_until(lambda: outbox_rows(db, "messagingv2")[1].attempts > 0,
                       "a failed delivery attempt")
            assert outbox_rows(db, "messagingv2")[1].last_error
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        listener = listeners()
        got = listener.wait_for(lambda ev: len(ev) >= 50, timeout=120)
    finally:
        relay.stop(5)
    assert [e.message_id for e in got] == [e["message_id"] for e in envelopes]
    assert [e.payload["n"] for e in got] == list(range(50))


CRASHING_RELAY = textwrap.dedent("""
    import os, sys, time
    from glimpse import config
    from glimpse.db.engine import Database
    from glimpse.notifications.relay import Relay

    db_url, amqp_url, marker, stall_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    conf = config.load([])
    conf.set_override("transport_url", amqp_url)
    for key, value in {"batch_size": 10, "poll_interval": 0.05, "lease_seconds": 2.0}.items():
        conf.set_override(key, value, group="outbox")
    relay = Relay(conf, Database(db_url), ["messagingv2"], node_id="crashing-node")
    driver = relay.workers[0].driver
    real_confirm, batches = driver.confirm, []

    def confirm(ticket):
        count = real_confirm(ticket)       # confirmed by the broker ...
        batches.append(count)
        if len(batches) == stall_after:    # ... but the process dies before marking it
            open(marker, "w").write(str(count))
            time.sleep(600)
        return count

    driver.confirm = confirm
    relay.start()
    time.sleep(600)
""")


def test_crash_between_confirm_and_mark_redelivers_with_same_message_id(
        db_url: str, amqp_url: str, tmp_path: Path,
        listeners: Callable[[], NotificationListener]) -> None:
    db = make_db(db_url)
    notifier = Notifier(["messagingv2"], publisher_id="image.test")
    envelopes = record(db, notifier, numbered(60))
    script, marker = tmp_path / "crashing_relay.py", tmp_path / "stalled"
    script.write_text(CRASHING_RELAY)
    proc = subprocess.Popen([sys.executable, str(script), db_url, amqp_url, str(marker), "3"],
                            start_new_session=True)
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, "the relay to stall")
        assert proc.poll() is None, "crashing relay exited early"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    rows = outbox_rows(db, "messagingv2")
    delivered = sum(1 for r in rows if r.delivered_at is not None)
    # Batches 1-2 were marked; batch 3 was confirmed but not marked, and batch 4
    # (pipelined: published before batch 3's confirm was read) reached the broker too.
    assert delivered == 20
    # A new relay (another node id: the dead one's lease has to run out first).
    relay = Relay(make_conf(amqp_url, ["messagingv2"], lease_seconds=2.0), db,
                  ["messagingv2"], node_id="restarted-node")
    relay.start()
    try:
        listener = listeners()
        got = listener.wait_for(lambda ev: len({e.message_id for e in ev}) >= 60
                                and len(ev) >= 80, timeout=120)
    finally:
        relay.stop(5)
    ids = [e.message_id for e in got]
    expected = [e["message_id"] for e in envelopes]
    assert set(ids) == set(expected)           # every event arrived
    assert len(ids) == 80                      # batches 3 and 4 came twice ...
    duplicates = {i for i in ids if ids.count(i) == 2}
    assert duplicates == set(expected[20:40])  # ... with the same message_id
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == expected              # and nothing overtook anything
    for event in got:
        env = envelopes[expected.index(event.message_id)]
        assert_matches(event, env)


def test_two_relays_on_one_postgresql_deliver_each_event_once(
        pg_url_db: str, amqp_url: str, listeners: Callable[[], NotificationListener]) -> None:
    db_a, db_b = make_db(pg_url_db), Database(pg_url_db)
    conf = make_conf(amqp_url, ["messagingv2"], batch_size=7)
    relays = [Relay(conf, db_a, ["messagingv2"], node_id="node-a"),
              Relay(conf, db_b, ["messagingv2"], node_id="node-b")]
    notifier = Notifier(["messagingv2"], publisher_id="image.test",
                        on_commit=lambda: [r.wake() for r in relays])
    listener = listeners()
    for relay in relays:
        relay.start()
    try:
        envelopes = []
        for start in range(0, 200, 20):
            envelopes += record(db_a, notifier, numbered(20, f"img-{start}"))
        listener.wait_for(lambda ev: len(ev) >= 200, timeout=120)
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db_a, "messagingv2")),
                   "delivery")
        time.sleep(0.5)                        # room for a wrongful duplicate to show up
    finally:
        for relay in relays:
            relay.stop(5)
    ids = [e.message_id for e in listener.events]
    expected = [e["message_id"] for e in envelopes]
    assert sorted(ids) == sorted(expected)                  # once each
    assert ids == expected                                  # in order
    with db_a.read() as session:
        assert session.scalar(select(func.count()).select_from(relay_leases)) == 1
    delivered_by = [r.delivered for relay in relays for r in relay.workers]
    assert sorted(delivered_by) == [0, 200]                 # one lease holder did it all


def test_failing_driver_does_not_hold_back_the_others(
        db_url: str, amqp_url: str, tmp_path: Path,
        listeners: Callable[[], NotificationListener]) -> None:
    db = make_db(db_url)
    good = make_conf(amqp_url, ["messagingv2"])
    bad = make_conf("rabbit://guest:guest@127.0.0.1:1/", ["messaging"])
    drivers = ["messaging", "messagingv2", "log"]
    relay = Relay(good, db, drivers, node_id="n1",
                  loaded={"messaging": load_driver("messaging", bad)})
    notifier = Notifier(drivers, publisher_id="image.test", on_commit=relay.wake)
    listener = listeners()
    relay.start()
    try:
        envelopes = record(db, notifier, numbered(30))
        got = listener.wait_for(lambda ev: len(ev) >= 30, timeout=120)
        wait_until(lambda: all(r.delivered_at for r in outbox_rows(db, "log")), "log delivery")
        wait_until(lambda: outbox_rows(db, "messaging")[0].attempts >= 2, "retries")
    finally:
        relay.stop(0.5)
    assert [e.message_id for e in got] == [e["message_id"] for e in envelopes]
    stuck = outbox_rows(db, "messaging")
    assert all(r.delivered_at is None for r in stuck) and len(stuck) == 30
    assert "127.0.0.1:1" in (stuck[0].last_error or "")
    assert all(r.attempts == 0 for r in stuck[1:])          # held behind the first: order
