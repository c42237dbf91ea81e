"""Ingest pipeline: an async byte stream -> a store, hashed on the way, with size limits.

Used by the upload API and by imports: ``await ingest(store, image_id, source, ...)``.

How it runs (per ingest, three worker threads):

- the event loop reads the source (e.g. the ASGI request body) and aggregates
  its small chunks into ``buffer_size`` buffers (``BUFFER_SIZE``, 2 MiB),
  counting bytes and enforcing the limits as each chunk arrives;
- a *writer* thread runs ``store.write(image_id, buffers)``, pulling buffers
  from the loop one ahead of what it writes;
- two *hasher* threads run MD5 (``checksum``) and the multihash
  (``os_hash_value``, default SHA-512) in parallel; hashlib releases the GIL,
  so on two cores both hashes and the loop proceed at the same time. At most
  ``max_in_flight`` written buffers wait for hashing, so memory stays flat
  whatever the image size: ``max_in_flight + 2`` buffers at most (one being
  filled, one being written and hashed, those waiting for the hashes).

What may fail: the limits raise :class:`TooLarge` / :class:`QuotaExceeded` as
soon as the count passes them; the source's own exceptions (client
disconnect) propagate unchanged; the store's (StorageFull, ...) too. In every
failure case the store removes what was written (its ``write`` contract), so
nothing partial remains, and the exception is re-raised after the worker
threads have stopped.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import mmap
import threading
from collections import deque
from collections.abc import AsyncIterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Connection

from glimpse.config import parse_size
from glimpse.db import images_repo
from glimpse.domain.image import Image
from glimpse.exceptions import QuotaExceeded, TooLarge
from glimpse.services.image_format import ContentCheck
from glimpse.store.base import Store

# 2 MiB x 1 waiting for the hashes: 3 buffers, 6 MiB resident per upload (8 MiB
# x 2 was 4 buffers, 32 MiB: the peak of a worker's RSS during a 1 GiB upload
# went 96 -> 76 MiB; 4 MiB x 1 was 12 MiB). The hashes run ~2x faster than the
# disk writes, so one buffer of slack keeps them off the writer's path (upload
# MB/s unchanged within noise: the hash threads idle ~half the time, waiting for
# the disk). Each halving doubles the hand-offs per GiB: 4 -> 2 MiB cost the
# loop and the writer ~0.15 s of CPU per GiB together (0.65-0.71 -> 0.80-0.93 s
# besides the hashes' ~4.1 s; bench/data_path.py, 2 runs each), for 6 MiB less
# per upload in flight (bench/memory.py: the tree's upload peak 138.5 -> 132.5).
BUFFER_SIZE = 2 << 20
MAX_IN_FLIGHT = 1


def _load_prctl() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_NAME = 15


def _name_os_thread(name: str) -> None:
    """Give the calling thread an OS-level name (``/proc/<pid>/task/<tid>/comm``,
    top, py-spy): the benchmark accounts CPU per pipeline thread by it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


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


def limits_for(conf: Any, session: Connection, image: Image, *,
               lock_usage: bool = False) -> Limits:
    """The limits an upload/stage/import of ``image`` streams under: the size cap
    and what is left of its owner's ``user_storage_quota`` (other images only).
    Call inside the write transaction that moves the image out of ``queued``.
    ``lock_usage``: first take the owner's usage lock until the transaction ends
    (:func:`images_repo.lock_usage`; blocks while another transaction holds it)."""
    quota = parse_size(conf.user_storage_quota)
    remaining = None
    if quota > 0 and image.owner is not None:
        if lock_usage:
            images_repo.lock_usage(session, image.owner)
        remaining = quota - images_repo.usage(session, image.owner, exclude_image_id=image.id)
    return Limits(size_cap=conf.image_size_cap, quota_remaining=remaining)


def check_limits_at_commit(conf: Any, session: Connection, image: Image, size: int) -> None:
    """Raise TooLarge/QuotaExceeded if ``image`` may not keep ``size`` bytes, counting
    its owner's other images as they are now. Call in the write transaction that
    commits the size; blocks while another such transaction of the same owner runs.

    The streaming check reads the usage when a transfer begins, so transfers of
    one project that run at the same time all pass it. This one holds the
    owner's usage lock until the commit, so the second to commit sees the
    first's bytes: together they never exceed the quota.
    """
    limits_for(conf, session, image, lock_usage=True).check(size)


@dataclass(frozen=True)
class Ingested:
    """What was stored: where, how much, and its hashes (hex)."""

    location: str
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    virtual_size: int | None = None     # from the content check, when it found one


class _BufferPool:
    """Reusable ``size``-byte buffers: no allocation (and no page faults) per buffer.

    Buffers are anonymous memory maps, so they are page-aligned: a store may
    write them with direct I/O (see the filesystem store)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def get(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def put(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)


@runtime_checkable
class ReadableSource(Protocol):
    """A source that fills buffers itself (e.g. the API's request body): returns
    how many bytes it wrote into ``buffer``, 0 at the end. Used instead of
    iterating the source when it has this method: no chunk objects, and the
    loop wakes once per buffer instead of once per network read."""

    async def readinto(self, buffer: memoryview) -> int: ...


class _Aggregator:
    """Reads the async source on the loop; fills pooled ``buffer_size`` buffers."""

    def __init__(self, source: AsyncIterable[bytes], limits: Limits, pool: _BufferPool) -> None:
        self._readinto = source.readinto if isinstance(source, ReadableSource) else None
        self._iter = source.__aiter__() if self._readinto is None else None
        self._limits = limits
        self._pool = pool
        self._pending: memoryview | None = None
        self.size = 0
        self.done = False

    async def next_buffer(self) -> tuple[mmap.mmap, memoryview] | None:
        """The next buffer and the view of its filled part (only the last one is
        short), or None at the end of the source. Each byte is copied once."""
        if self.done and self._pending is None:
            return None
        buffer = self._pool.get()
        view = memoryview(buffer)
        try:
            if self._readinto is not None:
                filled = await self._fill_by_readinto(view)
            else:
                filled = await self._fill_from_chunks(view)
        except BaseException:
            self._pool.put(buffer)
            raise
        if filled == 0:
            self._pool.put(buffer)
            return None
        return buffer, view[:filled]

    async def _fill_by_readinto(self, view: memoryview) -> int:
        assert self._readinto is not None
        filled = 0
        while filled < len(view) and not self.done:
            n = await self._readinto(view[filled:])
            if n == 0:
                self.done = True
                break
            filled += n
            self.size += n
            self._limits.check(self.size)
        return filled

    async def _fill_from_chunks(self, view: memoryview) -> int:
        assert self._iter is not None
        capacity = len(view)
        filled = 0
        if self._pending is not None:
            pending = self._pending
            filled = min(len(pending), capacity)
            view[:filled] = pending[:filled]
            self._pending = pending[filled:] if filled < len(pending) else None
        while filled < capacity and not self.done and self._pending is None:
            try:
                chunk = await self._iter.__anext__()
            except StopAsyncIteration:
                self.done = True
                break
            if not chunk:
                continue
            self.size += len(chunk)
            self._limits.check(self.size)
            n = min(len(chunk), capacity - filled)
            view[filled:filled + n] = chunk if n == len(chunk) else memoryview(chunk)[:n]
            filled += n
            if n < len(chunk):
                self._pending = memoryview(chunk)[n:]
        return filled


async def ingest(store: Store, image_id: str, source: AsyncIterable[bytes], *,
                 hashing_algorithm: str = "sha512", limits: Limits = Limits(),
                 buffer_size: int = BUFFER_SIZE, max_in_flight: int = MAX_IN_FLIGHT,
                 check: ContentCheck | None = None) -> Ingested:
    """Stream ``source`` into ``store`` as the data of ``image_id``; see the module doc.
    ``check``: the content must pass it (:mod:`glimpse.services.image_format`; it
    runs in the writer thread and refuses at the end of the stream, so the
    store's write fails and keeps nothing)."""
    loop = asyncio.get_running_loop()
    pool = _BufferPool(buffer_size)
    aggregator = _Aggregator(source, limits, pool)
    md5 = hashlib.md5(usedforsecurity=False)
    multihash = hashlib.new(hashing_algorithm)
    md5_worker = ThreadPoolExecutor(1, thread_name_prefix=f"md5-{image_id[:8]}",
                                    initializer=_name_os_thread, initargs=("ingest-md5",))
    hash_worker = ThreadPoolExecutor(1, thread_name_prefix=f"hash-{image_id[:8]}",
                                     initializer=_name_os_thread, initargs=("ingest-hash",))
    writer = ThreadPoolExecutor(1, thread_name_prefix=f"write-{image_id[:8]}",
                                initializer=_name_os_thread, initargs=("ingest-write",))
    # Buffers handed out and not yet back in the pool, oldest first.
    hashing: deque[tuple[mmap.mmap, Future[Any], Future[Any]]] = deque()

    def fetch() -> Future[tuple[mmap.mmap, memoryview] | None]:
        return asyncio.run_coroutine_threadsafe(aggregator.next_buffer(), loop)

    def recycle() -> None:
        # Called when the store asks for the next buffer: every buffer handed to
        # it so far is written. Return those already hashed to the pool; block
        # (on the oldest) only while more than ``max_in_flight`` wait for hashing.
        while hashing:
            buffer, f_md5, f_hash = hashing[0]
            if len(hashing) <= max_in_flight and not (f_md5.done() and f_hash.done()):
                return
            f_md5.result()
            f_hash.result()
            hashing.popleft()
            pool.put(buffer)

    def buffers() -> Iterator[memoryview]:
        # Runs in the writer thread: one buffer read ahead while the store writes.
        upcoming = fetch()
        try:
            while True:
                item = upcoming.result()
                if item is None:
                    return
                upcoming = fetch()
                buffer, view = item
                hashing.append((buffer, md5_worker.submit(md5.update, view),
                                hash_worker.submit(multihash.update, view)))
                yield view
                recycle()
        finally:
            upcoming.cancel()  # stop reading the source when the store gave up

    try:
        chunks = buffers() if check is None else check.wrap(buffers())
        location = await loop.run_in_executor(writer, store.write, image_id, chunks)
        while hashing:
            _, f_md5, f_hash = hashing.popleft()
            await asyncio.wrap_future(f_md5)
            await asyncio.wrap_future(f_hash)
    finally:
        for worker in (writer, md5_worker, hash_worker):
            worker.shutdown(wait=False, cancel_futures=True)
    return Ingested(location=location, size=aggregator.size, checksum=md5.hexdigest(),
                    os_hash_algo=hashing_algorithm, os_hash_value=multihash.hexdigest(),
                    virtual_size=check.virtual_size if check is not None else None)

