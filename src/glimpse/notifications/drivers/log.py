"""The ``log`` driver: each notification as one JSON line through Python logging.

Logger ``oslo.messaging.notification.<event_type>`` (as oslo.messaging's log
driver names it), level INFO / WARNING / ERROR by priority, message = the
envelope as one line of JSON with secret-looking keys (``password``,
``token``, ``secret``, ...) and credentials in URLs masked as ``***``. The
lines go wherever the service's logging goes (``[DEFAULT] log_file``).

"Durably accepted" here means handed to the logging handlers, which write
(and, for a FileHandler, flush) before the call returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from glimpse.notifications.drivers.base import Driver, OutboxEvent
from glimpse.notifications.payloads import mask_secrets

LOGGER_BASE = "oslo.messaging.notification"
_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "DEBUG": logging.DEBUG}


def format_line(envelope_json: str) -> str:
    """The logged message: the envelope, secrets masked, as one line of JSON."""
    return json.dumps(mask_secrets(json.loads(envelope_json)))


class LogDriver(Driver):
    name = "log"

    def send_batch(self, events: Sequence[OutboxEvent]) -> int:
        for event in events:
            logger = logging.getLogger(f"{LOGGER_BASE}.{event.event_type}")
            logger.log(_LEVELS.get(event.priority.upper(), logging.INFO),
                       "%s", format_line(event.envelope))
        return len(events)
