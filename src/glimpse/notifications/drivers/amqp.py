"""The ``messaging`` / ``messagingv2`` drivers: AMQP 0-9-1 (RabbitMQ) through kombu.

Wire format and topology are oslo.messaging's (rabbit driver, default
options), so that an unmodified oslo.messaging notification listener with
``Target(topic='notifications', exchange='glance')`` receives every event:

- exchange ``[DEFAULT] control_exchange``, type ``topic``, ``durable=False``,
  ``auto_delete=False`` (oslo.messaging's ``amqp_durable_queues`` and
  ``amqp_auto_delete`` defaults; different flags make RabbitMQ answer
  PRECONDITION_FAILED to whoever declares second). An exchange or queue that
  already exists with other flags is used as it is (passive declare);
- routing key ``<topic>.<priority lower-cased>`` for every configured topic;
- with ``[outbox] declare_queues`` (default), a queue named after the routing
  key, same flags, bound to it: events wait for a listener that starts later;
- ``messagingv2`` body ``{"oslo.version": "2.0", "oslo.message": "<JSON>"}``,
  ``messaging`` body the envelope itself; the inner JSON is the stored
  envelope with ``_unique_id`` (32 hex, new per published message) added
  after ``timestamp``; content type ``application/json``, utf-8,
  ``delivery_mode`` 2 (persistent).

Delivery: the channel is in publisher-confirm mode; a batch is published in
one go (pre-framed, a few socket writes: see ``PublishFramer``) and the
driver then waits (up to ``confirm_timeout``) for the broker's acks, so
confirms cost one round trip per batch, not per message. An event
counts as delivered once every message carrying it (one per topic) is acked.

Connections: ``[oslo_messaging_notifications] transport_url`` or else
``[DEFAULT] transport_url``; ``rabbit://u:p@h1:5672,u:p@h2:5672/vhost`` lists
a cluster. Nothing connects before the first batch. One connection and channel
are reused; after any failure they are dropped and the next batch connects
again, trying the hosts round-robin starting after the one that failed.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

import amqp
import kombu
from amqp import exceptions as amqp_exc

from glimpse.exceptions import ConfigError
from glimpse.notifications.drivers.amqp_wire import (
    ACK_FRAME,
    PublishFramer,
    add_unique_id,
    may_start_with_ack,
    message_body,
)
from glimpse.notifications.drivers.base import DeliveryError, Driver, OutboxEvent, Ticket
from glimpse.notifications.drivers.transport_url import BrokerHost, parse_transport_url

__all__ = ["AmqpDriver", "BrokerHost", "add_unique_id", "message_body", "parse_transport_url"]

LOG = logging.getLogger(__name__)

_FLUSH_BYTES = 256 * 1024


class _AmqpTicket(Ticket):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.last_tags: list[int] = []      # per event: the tag of its last message


def tls_options(rabbit: Any) -> dict[str, Any]:
    """``[oslo_messaging_rabbit]``'s files as py-amqp's TLS options, as
    oslo.messaging (18) maps them: a CA file makes the broker's certificate
    required. The certificate is always checked against the broker's name
    (``server_hostname`` None is kombu's "the host being connected to", so with
    several hosts each is checked against its own name). oslo.messaging checks
    the name only with a CA file of the operator's; with the system's CAs a
    certificate any public CA signed for any name would otherwise do."""
    options: dict[str, Any] = {"server_hostname": None}
    if rabbit.ssl_ca_file:
        options.update(ca_certs=rabbit.ssl_ca_file, cert_reqs=ssl.CERT_REQUIRED)
    if rabbit.ssl_cert_file:
        options["certfile"] = rabbit.ssl_cert_file
    if rabbit.ssl_key_file:
        options["keyfile"] = rabbit.ssl_key_file
    return options


class AmqpDriver(Driver):
    """kombu publisher with batched publisher confirms. Not thread-safe: one relay
    thread uses it. ``send_batch`` blocks for at most about ``connect_timeout``
    per host plus ``confirm_timeout``."""

    def __init__(self, hosts: Sequence[BrokerHost], *, v2: bool, exchange: str = "glance",
                 topics: Sequence[str] = ("notifications",), declare_queues: bool = True,
                 connect_timeout: float = 5.0, confirm_timeout: float = 10.0,
                 tls: dict[str, Any] | None = None) -> None:
        """``tls``: py-amqp's TLS options (``ca_certs``, ``certfile``, ``keyfile``,
        ``cert_reqs``, ``server_hostname``) for the hosts that use TLS; None: the
        system's CAs, and the certificate checked against the host's name."""
        if not hosts:
            raise ConfigError("No broker host configured for the messaging driver")
        self.name = "messagingv2" if v2 else "messaging"
        self.hosts = list(hosts)
        self.v2 = v2
        self.exchange_name = exchange
        self.topics = tuple(topics) or ("notifications",)
        self.declare_queues = declare_queues
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self.tls = dict(tls) if tls is not None else {"server_hostname": None}
        self._host_index = 0
        self._conn: kombu.Connection | None = None
        self._channel: Any = None
        self._exchange: kombu.Exchange | None = None
        self._declared: set[str] = set()
        self._next_tag = 1          # delivery tag of the next publish on this channel
        self._acked_upto = 0        # every tag <= this is acked
        self._acked_single: set[int] = set()
        self._nacked: list[int] = []
        self._framer: PublishFramer | None = None
        self._outstanding: list[_AmqpTicket] = []     # published, not yet settled

    @classmethod
    def from_conf(cls, conf: Any, *, v2: bool) -> AmqpDriver:
        group = conf.oslo_messaging_notifications
        url = group.transport_url or conf.transport_url
        if not url:
            raise ConfigError("The messaging notification driver needs a transport_url "
                              "([oslo_messaging_notifications] or [DEFAULT])")
        rabbit = conf.oslo_messaging_rabbit
        hosts = parse_transport_url(url)
        if rabbit.ssl:
            hosts = [dataclasses.replace(host, ssl=True) for host in hosts]
        return cls(hosts, v2=v2, exchange=conf.control_exchange, topics=group.topics,
                   declare_queues=conf.outbox.declare_queues, tls=tls_options(rabbit))

    # -- delivery ---------------------------------------------------------------

    def send_batch(self, events: Sequence[OutboxEvent]) -> int:
        return self.confirm(self.publish(events))

    def publish(self, events: Sequence[OutboxEvent]) -> Ticket:
        """Write the batch to the broker without waiting for its confirms."""
        ticket = _AmqpTicket(len(events))
        if not events:
            ticket.settle(0)
            return ticket
        try:
            self._ensure_channel()
            keys = [[f"{topic}.{ev.priority.lower()}" for topic in self.topics] for ev in events]
            for key in dict.fromkeys(k for ks in keys for k in ks):
                self._declare_queue(key)
            framer, conn = self._framer, self._conn
            assert framer is not None and conn is not None
            self._outstanding.append(ticket)
            write = conn.connection.transport.write
            out: list[bytes] = []
            size = 0
            for ev, ev_keys in zip(events, keys, strict=True):
                for key in ev_keys:
                    data = framer.frames(key, message_body(ev.envelope, v2=self.v2))
                    out.append(data)
                    size += len(data)
                    self._next_tag += 1
                    if size >= _FLUSH_BYTES:
                        write(b"".join(out))
                        out, size = [], 0
                ticket.last_tags.append(self._next_tag - 1)
            if out:
                write(b"".join(out))
        except Exception as exc:
            self._fail_outstanding(exc)
            if not ticket.done:
                ticket.settle(0, DeliveryError(0, f"{type(exc).__name__} on "
                                                  f"{self._current()}: {exc}"))
        return ticket

    def confirm(self, ticket: Ticket) -> int:
        """Wait for the broker's confirms of ``ticket``'s batch."""
        assert isinstance(ticket, _AmqpTicket)
        if not ticket.done:
            try:
                self._wait_for_confirms(ticket.last_tags[-1])
            except Exception as exc:
                self._fail_outstanding(exc)
            else:
                if self._nacked:
                    self._fail_outstanding(RuntimeError("the broker refused (nack) a message"))
                else:
                    ticket.settle(ticket.count)
                    self._outstanding.remove(ticket)
        return ticket.outcome()

    def _fail_outstanding(self, exc: BaseException) -> None:
        """Settle every unsettled batch with its confirmed prefix, drop the connection."""
        where = self._current()
        first_nacked = min(self._nacked) if self._nacked else None
        for ticket in self._outstanding:
            if ticket.done:
                continue
            confirmed = bisect.bisect_right(ticket.last_tags, self._acked_upto)
            if first_nacked is not None:
                confirmed = min(confirmed, bisect.bisect_left(ticket.last_tags, first_nacked))
            ticket.settle(confirmed, DeliveryError(
                confirmed, f"{type(exc).__name__} on {where}: {exc}"))
        self._outstanding.clear()
        self._drop_connection()

    def _wait_for_confirms(self, want: int) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        assert self._conn is not None
        while self._acked_upto < want and not self._nacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no publisher confirm within {self.confirm_timeout}s")
            if not self._read_confirms(remaining):
                self._conn.drain_events(timeout=remaining)

    def _read_confirms(self, timeout: float) -> bool:
        """Read the broker's ``basic.ack``/``basic.nack`` frames straight from the
        socket; False when py-amqp must read the next frame (any other frame, a
        closed or failing socket, a transport other than plain TCP).

        The broker acks a published batch in many small frames; through
        ``drain_events`` each costs ~60 us of Python (kombu, py-amqp's frame
        reader, method dispatch, channel events), here ~2 us. Bytes that are not
        acks of our channel stay at the head of py-amqp's read buffer, which its
        frame reader consumes first, so everything else (channel or connection
        close, flow control) is handled by py-amqp as before.
        """
        transport: Any = self._conn.connection.transport if self._conn is not None else None
        if type(transport) is not amqp.transport.TCPTransport or self._channel is None:
            return False
        # py-amqp's read buffer (5.x): a version without it takes the slow path
        buffer = getattr(transport, "_read_buffer", None)
        if not isinstance(buffer, bytes) or not hasattr(transport, "having_timeout"):
            return False
        channel_id = self._channel.channel_id
        if not may_start_with_ack(buffer, channel_id):
            return False
        if len(buffer) < ACK_FRAME.size:          # wait for (more of) an ack frame
            try:
                with transport.having_timeout(timeout) as sock:
                    data = sock.recv(65536)
            except TimeoutError:
                return True                          # the caller checks its deadline
            except OSError:
                return False
            if not data:
                return False                         # closed: py-amqp raises
            buffer = transport._read_buffer = buffer + data
        pos, end = 0, len(buffer) - ACK_FRAME.size
        while pos <= end:
            (frame_type, channel, size, class_id, method_id, tag, bits,
             frame_end) = ACK_FRAME.unpack_from(buffer, pos)
            if (frame_type != 1 or channel != channel_id or size != 13 or class_id != 60
                    or method_id not in (80, 120) or frame_end != 0xCE):
                break
            if method_id == 80:
                self._on_ack(tag, bool(bits & 1))
            else:
                self._on_nack(tag, bool(bits & 1))
            pos += ACK_FRAME.size
        if pos:
            transport._read_buffer = buffer[pos:]
        # nothing consumed: more bytes are needed only while the buffer holds the
        # start of an ack; anything else (even a malformed ack) goes to py-amqp
        return pos > 0 or (len(buffer) < ACK_FRAME.size
                           and may_start_with_ack(buffer, channel_id))

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, delivery_tag)
        else:
            self._acked_single.add(delivery_tag)
        while self._acked_upto + 1 in self._acked_single:
            self._acked_upto += 1
            self._acked_single.discard(self._acked_upto)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked.append(delivery_tag)

    # -- connection and topology ---------------------------------------------

    def _current(self) -> str:
        return self.hosts[self._host_index].describe()

    def _ensure_channel(self) -> None:
        if self._channel is not None:
            return
        errors: list[str] = []
        for _ in range(len(self.hosts)):
            host = self.hosts[self._host_index]
            conn = kombu.Connection(
                hostname=host.hostname, port=host.port, userid=host.userid,
                password=host.password, virtual_host=host.virtual_host,
                # a copy per connection: kombu writes the host's name into it
                ssl=dict(self.tls) if host.ssl else False,
                transport="pyamqp", connect_timeout=self.connect_timeout, heartbeat=0)
            try:
                # one attempt per host: the relay retries with its own backoff (connect()
                # waits 2 s and tries the same host again before fail-over could move on)
                conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
                self._conn = conn
                self._open_channel()
                LOG.info("Notification driver %s connected to %s", self.name, host.describe())
                return
            except Exception as exc:
                errors.append(f"{host.describe()}: {type(exc).__name__}: {exc}")
                self._drop_connection()
                self._host_index = (self._host_index + 1) % len(self.hosts)
        raise ConnectionError("no broker reachable (" + "; ".join(errors) + ")")

    def _open_channel(self) -> None:
        """A confirm-mode channel with the exchange declared (once per connection)."""
        self._declared.clear()
        if self._exchange is None or self._exchange.passive:
            self._exchange = kombu.Exchange(self.exchange_name, type="topic", durable=False,
                                            auto_delete=False)
        self._open_channel_only()
        try:
            self._exchange(self._channel).declare()
        except amqp_exc.PreconditionFailed as exc:
            # Created by someone with other flags (e.g. amqp_durable_queues=True): the
            # broker closed the channel; use the exchange as it is.
            LOG.warning("Exchange %r exists with other flags (%s); using it as it is",
                        self.exchange_name, exc)
            self._exchange = kombu.Exchange(self.exchange_name, type="topic", passive=True)
            self._open_channel_only()
            self._exchange(self._channel).declare()

    def _open_channel_only(self) -> None:
        """A fresh confirm-mode channel after the broker closed ours (tags restart)."""
        assert self._conn is not None
        for ticket in self._outstanding:          # their confirms died with the old channel
            if ticket.done:
                continue
            confirmed = bisect.bisect_right(ticket.last_tags, self._acked_upto)
            ticket.settle(confirmed, DeliveryError(confirmed, "channel closed by the broker"))
        self._outstanding.clear()
        channel = self._conn.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._channel = channel
        self._next_tag, self._acked_upto = 1, 0
        self._acked_single.clear()
        self._nacked.clear()
        assert self._exchange is not None
        self._framer = PublishFramer(channel.channel_id, self._conn.connection.frame_max,
                                      self._exchange.name)

    def _declare_queue(self, routing_key: str) -> None:
        """Declare and bind the queue named ``routing_key`` (once per channel)."""
        if not self.declare_queues or routing_key in self._declared:
            return
        queue = kombu.Queue(routing_key, exchange=self._exchange, routing_key=routing_key,
                            durable=False, auto_delete=False)
        try:
            queue(self._channel).declare()
        except amqp_exc.PreconditionFailed as exc:
            LOG.warning("Queue %r exists with other flags (%s); using it as it is",
                        routing_key, exc)
            self._open_channel_only()
            bound = queue(self._channel)
            bound.queue_declare(passive=True)
            bound.queue_bind()
        self._declared.add(routing_key)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._channel = self._framer = None
        self._declared.clear()
        if conn is not None:
            try:
                conn.collect()      # releases without network I/O (socket may be dead)
            except Exception:  # pragma: no cover - best effort
                LOG.debug("error dropping broker connection", exc_info=True)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._channel = self._framer = None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except Exception:
                LOG.debug("error closing broker connection", exc_info=True)
