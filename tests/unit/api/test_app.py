"""glimpse.api.app.bound_request_threads: both thread pools of a worker's event
loop (anyio's, for Starlette's run_in_threadpool; asyncio's default executor,
for asyncio.to_thread) run at most ``[DEFAULT] worker_threads`` threads."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread

from glimpse.api.app import bound_request_threads


def _peak_concurrency(calls: int, offload: str) -> int:
    """Run ``calls`` blocking calls at once through one pool, with a bound of 2;
    the most that ever ran at the same time. Each call blocks until 2 are
    running or, past the bound, until the others finished (never forever)."""
    lock = threading.Lock()
    running = 0
    peak = 0
    two_running = threading.Event()

    def blocking() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running >= 2:
                two_running.set()
        two_running.wait(10)
        # a third call would find two_running set and overlap the others here
        threading.Event().wait(0.05)
        with lock:
            running -= 1

    async def main() -> None:
        bound_request_threads(2)
        if offload == "anyio":
            await asyncio.gather(*(anyio.to_thread.run_sync(blocking) for _ in range(calls)))
        else:
            await asyncio.gather(*(asyncio.to_thread(blocking) for _ in range(calls)))

    asyncio.run(main())
    return peak


def test_anyio_pool_is_bounded() -> None:
    assert _peak_concurrency(8, "anyio") == 2


def test_default_executor_is_bounded() -> None:
    assert _peak_concurrency(8, "asyncio") == 2


def test_the_bound_is_per_event_loop() -> None:
    """Another loop in the process (a task's asyncio.run) keeps its own pools."""
    async def limit() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    async def bounded() -> float:
        bound_request_threads(3)
        return await limit()

    assert asyncio.run(bounded()) == 3
    assert asyncio.run(limit()) == 40
