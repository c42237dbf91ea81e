"""Ingest pipeline: an async byte stream -> a store, hashed on the way, with size limits.

Used by the upload API and by imports: ``await ingest(store, image_id, source, ...)``.

How it runs (per ingest, three worker threads):

- the event loop reads the source (e.g. the ASGI request body) and aggregates
  its small chunks into ``buffer_size`` buffers (default 4 MiB), counting bytes
  and enforcing the limits as each chunk arrives;
- a *writer* thread runs ``store.write(image_id, buffers)``, pulling buffers
  from the loop one ahead of what it writes;
- two *hasher* threads run MD5 (``checksum``) and the multihash
  (``os_hash_value``, default SHA-512) in parallel; hashlib releases the GIL,
  so on two cores both hashes and the loop proceed at the same time. At most
  ``max_in_flight`` buffers wait for hashing, so memory stays flat
  (about ``(max_in_flight + 3) * buffer_size``) whatever the image size.

What may fail: the limits raise :class:`TooLarge` / :class:`QuotaExceeded` as
soon as the count passes them; the source's own exceptions (client
disconnect) propagate unchanged; the store's (StorageFull, ...) too. In every
failure case the store removes what was written (its ``write`` contract), so
nothing partial remains, and the exception is re-raised after the worker
threads have stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from glimpse.exceptions import QuotaExceeded, TooLarge
from glimpse.store.base import Store

BUFFER_SIZE = 4 << 20
MAX_IN_FLIGHT = 4


@dataclass(frozen=True)
class Limits:
    """``size_cap``: largest image accepted; ``quota_remaining``: bytes the
    project may still store (None: unlimited)."""

    size_cap: int | None = None
    quota_remaining: int | None = None

    def check(self, size: int) -> None:
        """Raise TooLarge/QuotaExceeded when ``size`` bytes exceed a limit."""
        if self.size_cap is not None and size > self.size_cap:
            raise TooLarge(f"The provided image is too large: it exceeds the size cap "
                           f"of {self.size_cap} bytes.")
        if self.quota_remaining is not None and size > self.quota_remaining:
            raise QuotaExceeded(
                f"Denying attempt to upload image because it exceeds the quota: The size of "
                f"the data {size} will exceed the limit. {max(self.quota_remaining, 0)} "
                f"bytes remaining.")


@dataclass(frozen=True)
class Ingested:
    """What was stored: where, how much, and its hashes (hex)."""

    location: str
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str


class _Aggregator:
    """Reads the async source on the loop; hands out ``buffer_size`` buffers."""

    def __init__(self, source: AsyncIterable[bytes], limits: Limits, buffer_size: int) -> None:
        self._iter = source.__aiter__()
        self._limits = limits
        self._buffer_size = buffer_size
        self._pending = b""
        self.size = 0
        self.done = False

    async def next_buffer(self) -> bytes | None:
        """The next buffer (the last may be shorter), or None at the end of the source."""
        if self.done:
            return None
        parts: list[bytes] = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while have < self._buffer_size:
            try:
                chunk = await self._iter.__anext__()
            except StopAsyncIteration:
                self.done = True
                break
            if not chunk:
                continue
            self.size += len(chunk)
            self._limits.check(self.size)
            parts.append(chunk)
            have += len(chunk)
        if not parts:
            return None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) > self._buffer_size:
            data, self._pending = data[:self._buffer_size], data[self._buffer_size:]
        return data


async def ingest(store: Store, image_id: str, source: AsyncIterable[bytes], *,
                 hashing_algorithm: str = "sha512", limits: Limits = Limits(),
                 buffer_size: int = BUFFER_SIZE, max_in_flight: int = MAX_IN_FLIGHT,
                 ) -> Ingested:
    """Stream ``source`` into ``store`` as the data of ``image_id``; see the module doc."""
    loop = asyncio.get_running_loop()
    aggregator = _Aggregator(source, limits, buffer_size)
    md5 = hashlib.md5(usedforsecurity=False)
    multihash = hashlib.new(hashing_algorithm)
    md5_worker = ThreadPoolExecutor(1, thread_name_prefix=f"md5-{image_id[:8]}")
    hash_worker = ThreadPoolExecutor(1, thread_name_prefix=f"hash-{image_id[:8]}")
    writer = ThreadPoolExecutor(1, thread_name_prefix=f"write-{image_id[:8]}")
    hashing: deque[tuple[Future[Any], Future[Any]]] = deque()

    def fetch() -> Future[bytes | None]:
        return asyncio.run_coroutine_threadsafe(aggregator.next_buffer(), loop)

    def buffers() -> Iterator[bytes]:
        # Runs in the writer thread: one buffer read ahead while the store writes.
        upcoming = fetch()
        try:
            while True:
                data = upcoming.result()
                if data is None:
                    return
                upcoming = fetch()
                hashing.append((md5_worker.submit(md5.update, data),
                                hash_worker.submit(multihash.update, data)))
                while len(hashing) > max_in_flight:
                    for fut in hashing.popleft():
                        fut.result()
                yield data
        finally:
            upcoming.cancel()  # stop reading the source when the store gave up

    try:
        location = await loop.run_in_executor(writer, store.write, image_id, buffers())
        while hashing:
            for fut in hashing.popleft():
                await asyncio.wrap_future(fut)
    finally:
        for pool in (writer, md5_worker, hash_worker):
            pool.shutdown(wait=False, cancel_futures=True)
    return Ingested(location=location, size=aggregator.size, checksum=md5.hexdigest(),
                    os_hash_algo=hashing_algorithm, os_hash_value=multihash.hexdigest())

