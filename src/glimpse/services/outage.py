"""Waiting out a database outage (a failover, a restart) for a step that must not
be dropped: a download's ``image.send``, the end of an upload.

:func:`while_unavailable` runs a blocking step in a worker thread and runs it
again while it raises :class:`DatabaseUnavailable`, sleeping on the event loop
in between (no thread is held while waiting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from glimpse.exceptions import DatabaseUnavailable

LOG = logging.getLogger(__name__)

FIRST_DELAY = 0.5
MAX_DELAY = 10.0

_T = TypeVar("_T")


async def while_unavailable(step: Callable[[], _T], *, patience: float, what: str) -> _T:
    """``step()`` in a worker thread; while it raises DatabaseUnavailable it runs
    again, after 0.5 s doubling to 10 s, until ``patience`` seconds have passed,
    then the last DatabaseUnavailable propagates. Other errors propagate at once.

    The first failure is logged at WARNING ("<what>: database unavailable ...;
    retrying"), a later success too. ``step`` must be safe to run again after it
    failed: its transaction rolled back, or committed without its caller knowing
    (a connection lost during COMMIT), which the step must check or tolerate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay, failures = FIRST_DELAY, 0
    while True:
        try:
            result = await asyncio.to_thread(step)
        except DatabaseUnavailable as error:
            failures += 1
            if loop.time() + delay > deadline:
                raise
            if failures == 1:
                LOG.warning("%s: database unavailable (%s); retrying", what, error.detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if failures:
            LOG.warning("%s: done after %d failed attempts", what, failures)
        return result
