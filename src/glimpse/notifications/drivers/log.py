"""The ``log`` driver: each notification as one JSON line through Python logging.

Logger ``oslo.messaging.notification.<event_type>`` (as oslo.messaging's log
driver names it), level INFO / WARNING / ERROR by priority, message = the
envelope as one line of JSON with secret-looking keys (``password``,
``token``, ``secret``, ...) and credentials in URLs masked as ``***``. The
lines go wherever the service's logging goes (``[DEFAULT] log_file``).

"Durably accepted" here means handed to the logging handlers, which write
(and, for a file, flush) before the call returns. The service's log file is a
:class:`glimpse.log_file.LogFileHandler`: a line it could not write (disk full, file system
gone read-only) fails the batch from that event on, so the relay retries it,
instead of logging's usual "print the error and carry on", which would have
counted the event as delivered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from glimpse.log_file import LogFileHandler
from glimpse.notifications.drivers.base import DeliveryError, Driver, OutboxEvent
from glimpse.notifications.payloads import mask_secrets

LOGGER_BASE = "oslo.messaging.notification"
_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "DEBUG": logging.DEBUG}


def format_line(envelope_json: str) -> str:
    """The logged message: the envelope, secrets masked, as one line of JSON."""
    return json.dumps(mask_secrets(json.loads(envelope_json)))


def _write_error(logger: logging.Logger) -> BaseException | None:
    """A failed write of this thread's last line by any LogFileHandler it reached."""
    found: BaseException | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, LogFileHandler):
                found = handler.take_error() or found
        current = current.parent if current.propagate else None
    return found


class LogDriver(Driver):
    name = "log"

    def send_batch(self, events: Sequence[OutboxEvent]) -> int:
        for done, event in enumerate(events):
            logger = logging.getLogger(f"{LOGGER_BASE}.{event.event_type}")
            logger.log(_LEVELS.get(event.priority.upper(), logging.INFO),
                       "%s", format_line(event.envelope))
            error = _write_error(logger)
            if error is not None:
                raise DeliveryError(done, f"could not write to the log: {error}")
        return len(events)
