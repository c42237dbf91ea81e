"""The driver interface: how the relay hands outbox rows to a transport.

A driver receives a batch of events in ``outbox.id`` order and must deliver
them in that order. ``send_batch`` returns only once every event it counts
as delivered has been *durably accepted* by the transport (the broker's
publisher confirm for AMQP; the logging handlers for ``log``), and returns
how many that is (always ``len(events)`` on success).

On failure it raises: :class:`DeliveryError` when a prefix of the batch was
confirmed before the failure (``delivered`` says how many), any other
exception when nothing in the batch can be counted as delivered. The relay
then marks the confirmed prefix delivered and retries from the first
unconfirmed event later (at-least-once: a retried event keeps its
``message_id`` because it is part of the stored envelope).

Pipelining (optional): ``publish(events)`` starts a batch and returns a
:class:`Ticket`; ``confirm(ticket)`` waits for it and returns / raises like
``send_batch``. The relay publishes batch N+1 before it confirms batch N, so
the broker's work overlaps the database's. The default implementation runs
``send_batch`` inside ``publish`` (a ticket that is already ``done``), so a
driver only overrides the pair when it can really overlap.

Drivers are used by one relay thread each (never concurrently), may block
(connect, confirm timeouts), hold their connection between batches,
reconnect on their own after a failure, and must not connect in
``__init__``: a broker that is down at start-up is not an error.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple


class OutboxEvent(NamedTuple):
    """One outbox row as a driver sees it. ``envelope`` is the stored JSON text
    (contract section 1, key order kept). A NamedTuple: immutable and built for
    every event the relay reads at a fifth of a frozen dataclass's cost."""

    id: int
    message_id: str
    event_type: str
    priority: str
    envelope: str


class DeliveryError(Exception):
    """A batch failed after its first ``delivered`` events were confirmed."""

    def __init__(self, delivered: int, message: str) -> None:
        super().__init__(message)
        self.delivered = delivered


class Ticket:
    """A batch handed to ``Driver.publish``. ``done`` once its outcome is known."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = False
        self.delivered = 0
        self.error: BaseException | None = None

    def settle(self, delivered: int, error: BaseException | None = None) -> None:
        self.done, self.delivered, self.error = True, delivered, error

    def outcome(self) -> int:
        """The settled result: the count, or the failure raised."""
        if self.error is not None:
            raise self.error
        return self.delivered


class Driver(abc.ABC):
    """A notification transport. See the module docstring for the contract."""

    name: str = ""

    @abc.abstractmethod
    def send_batch(self, events: Sequence[OutboxEvent]) -> int:
        """Deliver ``events`` in order; return how many were durably accepted.

        Blocks until the transport confirmed them. Raises on failure (see the
        module docstring); never returns a count smaller than ``len(events)``.
        """

    def publish(self, events: Sequence[OutboxEvent]) -> Ticket:
        """Start delivering ``events``; by default deliver them now (see module doc)."""
        ticket = Ticket(len(events))
        try:
            ticket.settle(self.send_batch(events))
        except Exception as exc:
            ticket.settle(0, exc)
        return ticket

    def confirm(self, ticket: Ticket) -> int:
        """Wait for ``ticket``'s batch; return / raise like ``send_batch``."""
        return ticket.outcome()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent; the driver may be used again after."""
