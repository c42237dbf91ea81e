"""The service's log file handler (``[DEFAULT] log_file``/``log_dir``).

Small on purpose: the supervisor process imports it (see :mod:`glimpse.cli`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading


def log_path(conf: object) -> str | None:
    """Where the service logs, by oslo.log's rule (Glance's): ``log_file``, joined to
    ``log_dir`` when relative; ``<log_dir>/glimpse-api.log`` with ``log_dir`` alone;
    None (standard error) with neither. ``conf``: anything with those attributes."""
    log_file: str | None = getattr(conf, "log_file", None)
    log_dir: str | None = getattr(conf, "log_dir", None)
    if log_file:
        return os.path.join(log_dir, log_file) if log_dir else log_file
    return os.path.join(log_dir, "glimpse-api.log") if log_dir else None


class LogFileHandler(logging.handlers.WatchedFileHandler):
    """``[DEFAULT] log_file``: reopened when logrotate moved it away (as oslo.log's
    default handler, Glance's), and keeping, per thread, the error of a write that
    failed, for :meth:`take_error`."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self._failed = threading.local()

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed.error = sys.exc_info()[1]
        super().handleError(record)

    def take_error(self) -> BaseException | None:
        """The error of this thread's last failed write since the last call, if any."""
        error: BaseException | None = getattr(self._failed, "error", None)
        self._failed.error = None
        return error
