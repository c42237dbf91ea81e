"""The staging area of ``glance-direct`` imports (``[DEFAULT] node_staging_uri``).

One file per image, named by the image id, in the directory of the ``file://``
URI. :func:`write` is all or nothing: data goes to a temporary file which is
fsynced and renamed into place only when complete; on any error (limits, disk,
client gone) the temporary file is removed and the exception re-raised.
Every function blocks on file I/O.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
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

    def write(self, image_id: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` as the staged data of ``image_id``; returns the size."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{image_id}.{uuid.uuid4().hex[:8]}.part"
        size = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path(image_id))
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno in (28, 122):
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
