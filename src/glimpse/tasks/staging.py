"""The staging area of ``glance-direct`` imports (``[DEFAULT] node_staging_uri``).

One file per image, named by the image id, in the directory of the ``file://``
URI. ``write_stream`` is all or nothing: data goes to a temporary file which is
fsynced and renamed into place only when complete; on any error (limits, disk,
client gone) the temporary file is removed and the exception re-raised.
Every function but ``write_stream`` blocks on file I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from glimpse.exceptions import ConfigError, NotFound, StorageFull, StoreError

CHUNK = 1 << 20


class StagingArea:
    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.scheme != "file" or not parts.path:
            raise ConfigError(f"Invalid value for [DEFAULT] node_staging_uri: {uri!r} "
                              "(only file:///path is supported)")
        self.root = Path(parts.path)

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    def exists(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    async def write_stream(self, image_id: str, body: AsyncIterable[bytes],
                           check: Callable[[int], None]) -> int:
        """Stage ``body`` for ``image_id``; returns the size.

        ``check(size_so_far)`` runs after every chunk and may raise (size cap,
        quota). File I/O runs in threads, in ~1 MiB writes. All or nothing: on
        any error (limits, disk, client gone) the temporary file is removed and
        the error re-raised, disk errors as StorageFull/StoreError.
        """
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        tmp = self.root / f".{image_id}.{uuid.uuid4().hex[:8]}.part"
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            handle = await asyncio.to_thread(open, tmp, "wb")
            try:
                async for chunk in body:
                    size += len(chunk)
                    check(size)
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= CHUNK:
                        await asyncio.to_thread(handle.write, b"".join(pending))
                        pending, pending_size = [], 0
                if pending:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                await asyncio.to_thread(handle.flush)
                await asyncio.to_thread(os.fsync, handle.fileno())
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, tmp, self.path(image_id))
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"Image storage media is full: {exc}") from exc
            raise StoreError(f"Cannot write to the staging area: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size

    def read(self, image_id: str) -> Iterator[bytes]:
        """The staged bytes in chunks; NotFound when nothing is staged."""
        try:
            handle = open(self.path(image_id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise NotFound(f"No staged data for image {image_id}") from exc
        with handle:
            while True:
                data = handle.read(CHUNK)
                if not data:
                    return
                yield data

    def delete(self, image_id: str) -> None:
        """Remove the staged data (missing data is not an error)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(image_id).unlink()


def from_conf(conf: Any) -> StagingArea:
    return StagingArea(str(conf.node_staging_uri))
