"""The store interface: where image data lives.

A store has four operations, each one call (in the spirit of httpx's
transports): ``write`` a stream, ``read`` a byte range, ``delete``, and report
``capacity``; a store that keeps local files may also hand one out
(``open_file``), which downloads then send with ``sendfile``. Every method
**blocks** (file or network I/O); async callers run them in a worker thread
(``asyncio.to_thread``/an executor). None of them retries: a failure is
reported at once as one of the exceptions below and the caller decides.

Failures (all from :mod:`glimpse.exceptions`):

- :class:`~glimpse.exceptions.StorageFull` - no room left (ENOSPC, EDQUOT);
- :class:`~glimpse.exceptions.StoragePermissionDenied` - the media refuses access
  (EACCES, EPERM, EROFS);
- :class:`~glimpse.exceptions.StoreError` - any other I/O failure;
- :class:`~glimpse.exceptions.NotFound` - ``read`` of a location that holds no data.

Any exception raised by the *data source* given to ``write`` propagates
unchanged, after the partial data has been removed.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """Bytes in the store's media: ``total`` and ``free`` (for the calling user)."""

    total: int
    free: int


class Store(abc.ABC):
    """A place to keep image data, addressed by opaque location URIs."""

    #: store identifier shown in ``/v2/info/stores`` (e.g. ``"file"``)
    id: str = ""

    @abc.abstractmethod
    def write(self, image_id: str, chunks: Iterable[bytes | bytearray | memoryview]) -> str:
        """Consume ``chunks`` and keep them as the data of ``image_id``; return the location.

        All or nothing: the data becomes visible at the returned location only
        once every chunk is durably written. If iterating ``chunks`` raises, or
        writing fails, nothing partial remains and the exception propagates
        (store failures as StorageFull/StoragePermissionDenied/StoreError).
        Blocks for the whole transfer; ``chunks`` may block too. A chunk must be
        written (or copied) before the next one is requested: the caller may
        reuse a chunk's memory once the store asks for the next.
        """

    @abc.abstractmethod
    def read(self, location: str, offset: int = 0,
             length: int | None = None) -> AbstractContextManager[Iterator[bytes]]:
        """Open ``length`` bytes (all to the end when None) from ``offset`` of ``location``.

        Returns a context manager yielding an iterator of chunks (the store's
        chunk size; only the last one may be shorter). Leaving the context
        releases the underlying handle even if the iterator was not exhausted.
        Opening raises NotFound when no data is there; iterating may raise
        StoreError. Each ``next()`` blocks on I/O.
        """

    def open_file(self, location: str) -> AbstractContextManager[int] | None:
        """A local file holding the data at ``location``, for ``sendfile``: a context
        manager yielding an open, read-only file descriptor (closed on exit), or
        None when this store keeps no local files (callers then use :meth:`read`).
        The call itself does no I/O; entering opens the file (blocks) and raises
        NotFound when no data is there, StoreError on other I/O failures."""
        return None

    @abc.abstractmethod
    def delete(self, location: str) -> None:
        """Remove the data at ``location``. Missing data is not an error (idempotent)."""

    @abc.abstractmethod
    def capacity(self) -> Capacity:
        """Total and free bytes of the media."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (nothing for most stores)."""
