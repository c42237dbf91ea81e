"""Image data stores: the interface (:mod:`.base`) and its backends.

``from_config(conf)`` builds the store named by ``[glance_store] default_store``
(a filesystem store in the directory :func:`datadir_of` finds).
"""

from __future__ import annotations

from typing import Any

from glimpse.exceptions import ConfigError
from glimpse.store.base import Capacity, Store

__all__ = ["Capacity", "Store", "datadir_of", "from_config"]

#: Bytes per read when streaming data out (``filesystem_store_chunk_size``
#: applies when it is larger), for downloads that do not use ``sendfile``
#: (HEAD, a server without the extension). Such a download holds about three
#: chunks (one read ahead, one in the socket's write path, one being sent).
#: 2 MiB rather than 4 MiB (bench/data_path.py before sendfile, 2 runs each,
#: 1 GiB warm): 1,740-2,014 vs 1,554-1,684 MB/s, server CPU 0.50-0.57 vs
#: 0.60-0.61 s/GiB, and the server tree's peak during a download 6 MiB lower.
MIN_READ_CHUNK = 2 << 20


def datadir_of(conf: Any) -> tuple[str, str]:
    """The filesystem store's directory, and the option that names it.

    ``[glance_store] filesystem_store_datadir``; or, when the configuration is in
    Glance's multi-store form (``[DEFAULT] enabled_backends = fast:file``), that
    of the backend Glimpse serves: ``[glance_store] default_backend``, or the only
    backend. Raises ConfigError when that backend is not a filesystem one, or
    there are several and none is named."""
    backends: dict[str, str] = dict(conf.enabled_backends or {})
    if not backends:
        return conf.glance_store.filesystem_store_datadir, "[glance_store] filesystem_store_datadir"
    chosen = conf.glance_store.default_backend
    if chosen is None and len(backends) == 1:
        chosen = next(iter(backends))
    if chosen is None or chosen not in backends:
        raise ConfigError("Invalid value for [glance_store] default_backend: "
                          f"{chosen!r} (name one of [DEFAULT] enabled_backends: "
                          f"{', '.join(sorted(backends))})")
    if backends[chosen] != "file":
        raise ConfigError(f"Invalid value for [DEFAULT] enabled_backends: backend {chosen!r} "
                          f"is of type {backends[chosen]!r} (Glimpse serves a file store)")
    import contextlib

    from oslo_config import cfg

    with contextlib.suppress(cfg.DuplicateOptError):
        conf.register_opt(cfg.StrOpt("filesystem_store_datadir"), group=chosen)
    datadir = conf[chosen].filesystem_store_datadir
    if not datadir:
        raise ConfigError(f"Invalid value for [{chosen}] filesystem_store_datadir: not set "
                          f"(the directory of the backend {chosen!r})")
    return datadir, f"[{chosen}] filesystem_store_datadir"


def from_config(conf: Any) -> Store:
    """The configured store. Creating it may touch the media (directory creation,
    removal of partial files left by a crash); failures raise ConfigError."""
    from glimpse.exceptions import StoreError

    group = conf.glance_store
    if group.default_store != "file":
        raise ConfigError(f"Invalid value for [glance_store] default_store: "
                          f"{group.default_store!r} (supported: file)")
    from glimpse.store.filesystem import FilesystemStore

    datadir, option = datadir_of(conf)
    try:
        return FilesystemStore(datadir,
                               chunk_size=max(group.filesystem_store_chunk_size, MIN_READ_CHUNK))
    except StoreError as exc:
        raise ConfigError(f"Invalid value for {option}: {exc.message}") from exc
