"""Filesystem store: atomic writes, cleanup of partial data, range reads, error mapping."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glimpse import config, liveness
from glimpse import store as stores
from glimpse.exceptions import (
    ConfigError,
    NotFound,
    StorageFull,
    StoragePermissionDenied,
    StoreError,
)
from glimpse.store import filesystem
from glimpse.store.filesystem import FilesystemStore
from tests.mark_holder import hold_lock

DATA = bytes(range(256)) * 40_000 + b"tail"  # ~10 MB, not a multiple of the chunk size


def chunks(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "images", chunk_size=1 << 20)


def test_write_then_read_roundtrip(store: FilesystemStore) -> None:
    location = store.write("img-1", chunks(DATA))
    assert location == (store.datadir / "img-1").as_uri()
    assert files(store.datadir) == ["img-1"]
    with store.read(location) as it:
        parts = list(it)
    assert b"".join(parts) == DATA
    assert all(len(p) == 1 << 20 for p in parts[:-1])


@pytest.mark.parametrize(("offset", "length"), [
    (0, 1), (5, 10), (1_048_570, 20), (len(DATA) - 4, 4), (123, None), (0, len(DATA)),
])
def test_range_reads(store: FilesystemStore, offset: int, length: int | None) -> None:
    location = store.write("img", chunks(DATA))
    with store.read(location, offset, length) as it:
        got = b"".join(it)
    end = None if length is None else offset + length
    assert got == DATA[offset:end]


def test_open_file_hands_out_a_descriptor_of_the_data_and_closes_it(
        store: FilesystemStore) -> None:
    location = store.write("img", chunks(DATA))
    opened = store.open_file(location)
    assert opened is not None
    with opened as fd:
        assert os.pread(fd, 10, 5) == DATA[5:15]
        assert os.fstat(fd).st_size == len(DATA)
    with pytest.raises(OSError):
        os.fstat(fd)                     # closed on exit


def test_open_file_of_missing_or_outside_data_raises_like_read(store: FilesystemStore,
                                                               tmp_path: Path) -> None:
    location = store.write("img", [b"data"])
    store.delete(location)
    with pytest.raises(NotFound):
        store.open_file(location).__enter__()
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    with pytest.raises(StoreError):
        store.open_file(outside.as_uri()).__enter__()


def test_read_past_the_end_of_the_file_is_a_store_error(store: FilesystemStore) -> None:
    location = store.write("img", [b"abc"])
    with store.read(location, 0, 10) as it, pytest.raises(StoreError, match="shorter"):
        list(it)


def test_source_failure_leaves_nothing(store: FilesystemStore) -> None:
    class Boom(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise Boom("client went away")

    with pytest.raises(Boom):
        store.write("img", failing())
    assert files(store.datadir) == []


def test_failure_does_not_replace_existing_data(store: FilesystemStore) -> None:
    location = store.write("img", [b"old"])

    def failing() -> Iterator[bytes]:
        yield b"new"
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        store.write("img", failing())
    with store.read(location) as it:
        assert b"".join(it) == b"old"
    assert files(store.datadir) == ["img"]


def test_enospc_maps_to_storage_full_and_removes_the_temp_file(
        store: FilesystemStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(filesystem.os, "write", write)
    with pytest.raises(StorageFull, match="Image storage media is full"):
        store.write("img", chunks(DATA))
    assert files(store.datadir) == []


def test_eacces_maps_to_permission_denied(store: FilesystemStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(filesystem.os, "open", deny)
    with pytest.raises(StoragePermissionDenied, match="Insufficient permissions"):
        store.write("img", [b"data"])
    assert files(store.datadir) == []


def test_other_os_errors_are_store_errors(store: FilesystemStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(filesystem.os, "fsync", fail)
    with pytest.raises(StoreError) as info:
        store.write("img", [b"data"])
    assert not isinstance(info.value, StorageFull | StoragePermissionDenied)
    assert files(store.datadir) == []


def test_leftover_temp_files_of_dead_processes_are_removed_on_start(tmp_path: Path) -> None:
    datadir = tmp_path / "images"
    datadir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = filesystem._HOST
    (datadir / f".img-a.{host}.{dead_pid}.abcd1234.part").write_bytes(b"partial")
    (datadir / f".img-b.{host}.{os.getpid()}.abcd1234.part").write_bytes(b"reused pid")
    (datadir / ".garbage.part").write_bytes(b"no pid")
    live = f".img-c.{host}.{os.getppid()}.abcd1234.part"    # a live writer: kept
    (datadir / live).write_bytes(b"in progress")
    remote = f".img-e.other-host.{dead_pid}.abcd1234.part"  # another host's: kept
    (datadir / remote).write_bytes(b"elsewhere")
    (datadir / "img-d").write_bytes(b"complete image")       # real data: kept
    store = FilesystemStore(datadir)
    assert files(datadir) == sorted([remote, live, "img-d"])
    assert sorted(store.interrupted_uploads) == ["garbage", "img-a", "img-b"]


def test_a_locked_temp_file_is_kept_whatever_its_pid_says(tmp_path: Path) -> None:
    """A writer in another PID namespace (a container with the same host name):
    its pid means nothing here, but its lock on the file does."""
    datadir = tmp_path / "images"
    datadir.mkdir()
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    temp = datadir / f".img-f.{filesystem._HOST}.{pid_max + 1}.abcd1234.part"
    temp.write_bytes(b"being written elsewhere")
    writer = hold_lock(temp)
    try:
        assert FilesystemStore(datadir).interrupted_uploads == []
        assert temp.exists()
    finally:
        writer.kill()
        writer.wait(30)
    assert FilesystemStore(datadir).interrupted_uploads == ["img-f"]
    assert not temp.exists()


def test_the_temp_file_is_locked_until_it_has_its_final_name(store: FilesystemStore) -> None:
    seen: list[bool] = []

    def source() -> Iterator[bytes]:
        (temp,) = store.datadir.iterdir()
        seen.append(liveness.unlocked(temp))
        yield b"data"

    store.write("img-g", source())
    assert seen == [False]
    assert files(store.datadir) == ["img-g"]
    assert liveness.unlocked(store.datadir / "img-g")


def test_temp_names_carry_image_host_and_pid(store: FilesystemStore,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def source() -> Iterator[bytes]:
        seen.extend(p.name for p in store.datadir.iterdir())
        yield b"data"

    store.write("6f1c3c2e-1d7a-4d8e-9a55-0b7d1c2e3f40", source())
    (name,) = seen
    assert filesystem._parse_temp_name(name) == (
        "6f1c3c2e-1d7a-4d8e-9a55-0b7d1c2e3f40", filesystem._HOST, os.getpid())


def test_delete_is_idempotent(store: FilesystemStore) -> None:
    location = store.write("img", [b"data"])
    store.delete(location)
    store.delete(location)
    assert files(store.datadir) == []
    with pytest.raises(NotFound):
        store.read(location).__enter__()


def test_locations_outside_the_store_are_refused(store: FilesystemStore,
                                                 tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    with pytest.raises(StoreError):
        store.read(outside.as_uri()).__enter__()
    with pytest.raises(StoreError):
        store.delete(outside.as_uri())
    with pytest.raises(StoreError):
        store.write("../escape", [b"x"])
    assert outside.exists()


def test_capacity_reports_the_filesystem(store: FilesystemStore) -> None:
    cap = store.capacity()
    assert 0 < cap.free <= cap.total


def test_aligned_chunks_use_direct_io_and_the_short_tail_is_buffered(
        store: FilesystemStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import mmap

    opened: list[int] = []
    switched: list[int] = []
    real_open, real_fcntl = os.open, fcntl.fcntl

    def spy_open(path: object, flags: int, *args: object) -> int:
        opened.append(flags)
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    def spy_fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL:
            switched.append(arg)
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(filesystem.os, "open", spy_open)
    monkeypatch.setattr(filesystem.fcntl, "fcntl", spy_fcntl)
    buffers = []
    for i in range(3):
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(bytes([i]) * (1 << 20))
        buffers.append(buf)
    tail = b"end-of-image"
    location = store.write("img", [memoryview(b) for b in buffers] + [tail])
    assert opened[0] & os.O_DIRECT            # this filesystem supports it
    assert len(switched) == 1 and not switched[0] & os.O_DIRECT   # only for the tail
    with store.read(location) as it:
        assert b"".join(it) == b"".join(bytes(b) for b in buffers) + tail


# -- where the directory comes from (glance-api.conf's single- or multi-store form) ----------

def _conf(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "glimpse-api.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n" + text)
    return config.load(["--config-file", str(path)])


def test_the_store_directory_in_glances_single_and_multi_store_forms(tmp_path: Path) -> None:
    single = _conf(tmp_path, f"[glance_store]\nfilesystem_store_datadir = {tmp_path / 'one'}\n")
    assert stores.datadir_of(single) == (str(tmp_path / "one"),
                                        "[glance_store] filesystem_store_datadir")
    multi = _conf(tmp_path, "enabled_backends = fast:file, cheap:file\n"
                            "[glance_store]\ndefault_backend = cheap\n"
                            f"[fast]\nfilesystem_store_datadir = {tmp_path / 'fast'}\n"
                            f"[cheap]\nfilesystem_store_datadir = {tmp_path / 'cheap'}\n")
    built = stores.from_config(multi)
    assert isinstance(built, FilesystemStore) and built.datadir == tmp_path / "cheap"
    only = _conf(tmp_path, "enabled_backends = fast:file\n"
                           f"[fast]\nfilesystem_store_datadir = {tmp_path / 'fast'}\n")
    assert stores.datadir_of(only)[0] == str(tmp_path / "fast")


@pytest.mark.parametrize(("text", "named"), [
    ("enabled_backends = ceph:rbd\n", "[DEFAULT] enabled_backends"),
    ("enabled_backends = a:file, b:file\n", "[glance_store] default_backend"),
    ("enabled_backends = a:file\n[glance_store]\ndefault_backend = z\n",
     "[glance_store] default_backend"),
    ("enabled_backends = a:file\n", "[a] filesystem_store_datadir"),
])
def test_a_multi_store_form_glimpse_cannot_serve_stops_start_up(
        tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        stores.from_config(_conf(tmp_path, text))
