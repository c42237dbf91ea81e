"""Image data stores: the interface (:mod:`.base`) and its backends.

``from_config(conf)`` builds the store named by ``[glance_store] default_store``.
"""

from __future__ import annotations

from typing import Any

from glimpse.exceptions import ConfigError
from glimpse.store.base import Capacity, Store

__all__ = ["Capacity", "Store", "from_config"]

#: Bytes per read when streaming data out (``filesystem_store_chunk_size``
#: applies when it is larger), for downloads that do not use ``sendfile``
#: (HEAD, a server without the extension). Such a download holds about three
#: chunks (one read ahead, one in the socket's write path, one being sent).
#: 2 MiB rather than 4 MiB (bench/data_path.py before sendfile, 2 runs each,
#: 1 GiB warm): 1,740-2,014 vs 1,554-1,684 MB/s, server CPU 0.50-0.57 vs
#: 0.60-0.61 s/GiB, and the server tree's peak during a download 6 MiB lower.
MIN_READ_CHUNK = 2 << 20


def from_config(conf: Any) -> Store:
    """The configured store. Creating it may touch the media (directory creation,
    removal of partial files left by a crash); failures raise ConfigError."""
    from glimpse.exceptions import StoreError

    group = conf.glance_store
    if group.default_store != "file":
        raise ConfigError(f"Invalid value for [glance_store] default_store: "
                          f"{group.default_store!r} (supported: file)")
    from glimpse.store.filesystem import FilesystemStore

    try:
        return FilesystemStore(group.filesystem_store_datadir,
                               chunk_size=max(group.filesystem_store_chunk_size, MIN_READ_CHUNK))
    except StoreError as exc:
        raise ConfigError(f"Invalid value for [glance_store] filesystem_store_datadir: "
                          f"{exc.message}") from exc
