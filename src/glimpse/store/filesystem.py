"""Filesystem store: one file per image in ``[glance_store] filesystem_store_datadir``.

Writes are atomic: data goes to a temporary file in the same directory
(``.<image_id>.<host>.<pid>.<random>.part``), is fsynced, renamed into place,
and the directory is fsynced. Any failure - of the source, of the disk, or a
crash - leaves no file under the image's name; a crash may leave a ``.part``
file, which the next start of the store on that host removes. Only files whose
writing process is gone are removed, so that several worker processes, or
hosts sharing the directory, never lose an upload in progress: the writer's pid
must be gone, and so must its ``flock`` on the file, held until the file has
its final name (which is what tells a process in another PID namespace, e.g.
another container with the same host name, that the writer lives). The ids of
the images whose partial data was removed are kept in ``interrupted_uploads``
so that the service can put those images back to ``queued``.

Direct I/O: where the filesystem supports ``O_DIRECT``, chunks that are
page-aligned in memory and a multiple of the page size long (the ingest
pipeline's pooled buffers are) go straight to the device: no copy into the
page cache and no writeback work later, which on a two-core machine leaves the
CPU to hashing. The first chunk that is not aligned (typically the last, short
one) switches the file to buffered writes for the rest. Buffered writes start
their writeback every ``flush_every`` bytes (Linux ``sync_file_range``), so the
final fsync waits only for the tail instead of the whole image.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from glimpse import liveness
from glimpse.exceptions import NotFound, StorageFull, StoragePermissionDenied, StoreError
from glimpse.store.base import Capacity, Store

LOG = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def store_error(error: OSError, what: str) -> StoreError:
    """Map an OSError to the store exception for its errno (section: base module)."""
    detail = f"{what}: {error.strerror or error}"
    if error.errno in _FULL:
        return StorageFull(f"Image storage media is full: {detail}")
    if error.errno in _DENIED:
        return StoragePermissionDenied(
            f"Insufficient permissions on image storage media: {detail}")
    return StoreError(detail)


def _load_sync_file_range() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_ALIGN = 4096


def _aligned(view: memoryview) -> bool:
    """True when ``view`` may be written with O_DIRECT (address and length aligned)."""
    if view.nbytes % _ALIGN or view.readonly or not view.c_contiguous:
        return False
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return False
    return address % _ALIGN == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DataFile(NamedTuple):
    """A file in the store's directory: an image's data, or an upload's partial file."""

    name: str           # the image id (a partial file's full name)
    size: int
    mtime: float        # seconds since the epoch
    partial: bool


class FilesystemStore(Store):
    """Image data as plain files in one directory. Thread-safe (no shared state)."""

    id = "file"

    def __init__(self, datadir: str | os.PathLike[str], *, chunk_size: int = 4 << 20,
                 flush_every: int = 32 << 20, fsync: bool = True,
                 direct_io: bool = True, remove_leftovers: bool = True) -> None:
        """Creates ``datadir`` if needed and (unless ``remove_leftovers`` is False, for
        a read-only look) removes what dead uploads left, see :meth:`remove_leftovers`."""
        self.datadir = Path(datadir).absolute()
        self.direct_io = direct_io
        self.interrupted_uploads: list[str] = []
        self.chunk_size = chunk_size
        self.flush_every = flush_every
        self.fsync = fsync
        try:
            self.datadir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(exc, f"cannot create {self.datadir}") from exc
        if remove_leftovers:
            self.remove_leftovers()

    # -- locations -------------------------------------------------------

    def location_for(self, image_id: str) -> str:
        return self.path_for(image_id).as_uri()

    def path_for(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise StoreError(f"invalid image id for the filesystem store: {image_id!r}")
        return self.datadir / image_id

    def _path_of(self, location: str) -> Path:
        parts = urlsplit(location)
        if parts.scheme != "file":
            raise StoreError(f"not a filesystem store location: {location!r}")
        path = Path(unquote(parts.path))
        if path.parent != self.datadir:
            raise StoreError(f"location outside the store directory: {location!r}")
        return path

    # -- operations ------------------------------------------------------

    def write(self, image_id: str, chunks: Iterable[bytes | bytearray | memoryview]) -> str:
        final = self.path_for(image_id)
        temp = self.datadir / (f".{image_id}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}"
                               f"{TEMP_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        direct = bool(self.direct_io and _O_DIRECT)
        try:
            try:
                fd = os.open(temp, flags | (_O_DIRECT if direct else 0), 0o640)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                direct = False      # e.g. tmpfs: no direct I/O
                fd = os.open(temp, flags, 0o640)
        except OSError as exc:
            raise store_error(exc, f"cannot create {temp.name}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)      # "being written" until renamed
                self._write_all(fd, chunks, direct)
                if self.fsync:
                    os.fsync(fd)
                os.replace(temp, final)
            finally:
                os.close(fd)
            if self.fsync:
                self._fsync_dir()
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, OSError) and not isinstance(exc, StoreError):
                raise store_error(exc, f"cannot write data of image {image_id}") from exc
            raise
        return final.as_uri()

    def _write_all(self, fd: int, chunks: Iterable[bytes | bytearray | memoryview],
                   direct: bool) -> None:
        written = 0
        flushed = 0
        for chunk in chunks:
            view = memoryview(chunk)
            if direct and not _aligned(view):
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                direct = False
                flushed = written
            if direct:
                n = os.write(fd, view)
                written += n
                if n == len(view):
                    continue
                # A short direct write: finish this chunk and the rest buffered.
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                direct = False
                flushed = written
                view = view[n:]
            while view:
                n = os.write(fd, view)
                view = view[n:]
                written += n
            if (not direct and _SYNC_FILE_RANGE is not None
                    and written - flushed >= self.flush_every):
                # Start writeback of what is written so far; does not wait for it.
                _SYNC_FILE_RANGE(fd, flushed, written - flushed, _SYNC_FILE_RANGE_WRITE)
                flushed = written

    def _fsync_dir(self) -> None:
        dfd = os.open(self.datadir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def read(self, location: str, offset: int = 0,
             length: int | None = None) -> Iterator[Iterator[bytes]]:
        with self.open_file(location) as fd:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(fd, offset, length or 0, os.POSIX_FADV_SEQUENTIAL)
            yield self._chunks(fd, self._path_of(location).name, offset, length)

    @contextlib.contextmanager
    def open_file(self, location: str) -> Iterator[int]:
        path = self._path_of(location)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"No data found at {location}") from exc
        except OSError as exc:
            raise store_error(exc, f"cannot open {path.name}") from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def _chunks(self, fd: int, name: str, offset: int, length: int | None) -> Iterator[bytes]:
        remaining = length
        position = offset
        while remaining is None or remaining > 0:
            want = self.chunk_size if remaining is None else min(self.chunk_size, remaining)
            try:
                data = os.pread(fd, want, position)
            except OSError as exc:
                raise store_error(exc, f"cannot read {name}") from exc
            if not data:
                if remaining is not None:
                    raise StoreError(f"{name} is shorter than expected "
                                     f"({remaining} bytes missing at offset {position})")
                return
            position += len(data)
            if remaining is not None:
                remaining -= len(data)
            yield data

    def delete(self, location: str) -> None:
        path = self._path_of(location)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise store_error(exc, f"cannot delete {path.name}") from exc

    def data_files(self) -> Iterator[DataFile]:
        """Every file in the directory, as listed now (for the store check)."""
        try:
            with os.scandir(self.datadir) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        yield DataFile(entry.name, st.st_size, st.st_mtime,
                                       partial=entry.name.startswith("."))
        except OSError as exc:
            raise store_error(exc, f"cannot list {self.datadir}") from exc

    def data_file(self, image_id: str) -> DataFile | None:
        """The complete data file of ``image_id``, if there is one (StoreError for an id
        that cannot name a file here)."""
        try:
            st = self.path_for(image_id).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise store_error(exc, f"cannot stat {image_id}") from exc
        return DataFile(image_id, st.st_size, st.st_mtime, partial=False)

    def capacity(self) -> Capacity:
        try:
            st = os.statvfs(self.datadir)
        except OSError as exc:
            raise store_error(exc, f"cannot stat {self.datadir}") from exc
        return Capacity(total=st.f_blocks * st.f_frsize, free=st.f_bavail * st.f_frsize)

    # -- start-up --------------------------------------------------------

    def remove_leftovers(self) -> list[Path]:
        """Remove ``.part`` files that this host's dead processes left (crash, kill);
        record their image ids in ``interrupted_uploads``."""
        removed: list[Path] = []
        for temp in self.datadir.glob(f".*{TEMP_SUFFIX}"):
            image_id, host, pid = _parse_temp_name(temp.name)
            if host is not None and host != _HOST:
                continue            # another host's upload (shared directory)
            # Our own pid cannot have written it yet (we are starting): a reused pid.
            if pid > 0 and pid != os.getpid() and _pid_alive(pid):
                continue
            if not liveness.unlocked(temp):
                continue            # its writer lives (in another PID namespace)
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
                removed.append(temp)
                if image_id:
                    self.interrupted_uploads.append(image_id)
                LOG.info("Removed partial image data left by an earlier run: %s", temp.name)
        return removed


def _parse_temp_name(name: str) -> tuple[str | None, str | None, int]:
    """``.<image_id>.<host>.<pid>.<random>.part`` -> (image_id, host, pid); unknown
    parts are None / -1 (such files are leftovers of nobody alive: removed)."""
    stem = name[1:-len(TEMP_SUFFIX)] if name.endswith(TEMP_SUFFIX) else name[1:]
    image_id, _, rest = stem.partition(".")
    pieces = rest.rsplit(".", 2)
    if len(pieces) != 3:
        return image_id or None, None, -1
    try:
        return image_id, pieces[0], int(pieces[1])
    except ValueError:
        return image_id, pieces[0], -1
