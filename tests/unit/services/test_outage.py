"""Waiting out a database outage: retried while unavailable, for a bounded time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from glimpse.exceptions import DatabaseUnavailable, Invalid
from glimpse.services import outage


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(outage, "MAX_DELAY", 0.04)


def failing(times: int, then: object = "done") -> tuple[list[int], Callable[[], object]]:
    """A step that raises DatabaseUnavailable ``times`` times, then returns ``then``;
    and the list of its calls."""
    calls: list[int] = []

    def step() -> object:
        calls.append(len(calls))
        if len(calls) <= times:
            raise DatabaseUnavailable(f"refused #{len(calls)}")
        return then
    return calls, step


def test_a_step_is_run_again_until_the_database_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    calls, step = failing(3)
    with caplog.at_level(logging.WARNING, logger=outage.__name__):
        result = asyncio.run(outage.while_unavailable(step, patience=5, what="Doing it"))
    assert result == "done" and len(calls) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Doing it: database unavailable (refused #1); retrying",
                        "Doing it: done after 3 failed attempts"]


def test_after_its_patience_the_last_failure_propagates() -> None:
    calls, step = failing(1000)
    started = asyncio.run(_timed(step, patience=0.2))
    assert isinstance(started[0], DatabaseUnavailable)
    assert 0.1 <= started[1] < 1.0            # waited about its patience, not more
    assert 3 <= len(calls) < 20               # backed off: 0.01, 0.02, 0.04, 0.04, ...


def test_other_errors_propagate_at_once() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        raise Invalid("bad")

    with pytest.raises(Invalid):
        asyncio.run(outage.while_unavailable(step, patience=5, what="x"))
    assert calls == [1]


async def _timed(step: Callable[[], object],
                 patience: float) -> tuple[BaseException | None, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await outage.while_unavailable(step, patience=patience, what="x")
    except DatabaseUnavailable as error:
        return error, loop.time() - start
    return None, loop.time() - start
