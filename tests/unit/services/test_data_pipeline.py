"""The ingest pipeline: hashes, sizes and limits over a real filesystem store; the
quota checked again where the size commits, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from glimpse.db import images_repo, migrate
from glimpse.db.engine import Database
from glimpse.domain.image import SAVING, Image
from glimpse.exceptions import QuotaExceeded, TooLarge
from glimpse.services.data_pipeline import Limits, check_limits_at_commit, ingest
from glimpse.store.filesystem import FilesystemStore


async def source(data: bytes, seed: int = 1) -> AsyncIterator[bytes]:
    """``data`` in chunks of random sizes (1 byte .. 70 KB), as a socket delivers them."""
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice([1, 7, 1000, 65_536, 70_001])
        yield data[i:i + n]
        i += n
        if rng.random() < 0.1:
            yield b""   # empty chunks happen too


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "images")


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 300_001])
@pytest.mark.parametrize("algo", ["sha512", "sha256"])
def test_hashes_and_size_match_hashlib(store: FilesystemStore, size: int, algo: str) -> None:
    data = random.Random(size).randbytes(size)
    # Tiny buffers and few in flight: exercises buffer reuse and back-pressure.
    result = asyncio.run(ingest(store, "img", source(data), hashing_algorithm=algo,
                                buffer_size=4096, max_in_flight=2))
    assert result.size == size
    assert result.checksum == hashlib.md5(data).hexdigest()
    assert result.os_hash_algo == algo
    assert result.os_hash_value == hashlib.new(algo, data).hexdigest()
    with store.read(result.location) as chunks:
        assert b"".join(chunks) == data


def test_default_buffers_roundtrip(store: FilesystemStore) -> None:
    data = random.Random(9).randbytes(9_000_001)
    result = asyncio.run(ingest(store, "img", source(data)))
    assert result.os_hash_value == hashlib.sha512(data).hexdigest()
    with store.read(result.location) as chunks:
        assert b"".join(chunks) == data


def test_size_cap_stops_the_stream_and_keeps_nothing(store: FilesystemStore) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 65_536
            yield b"x" * 65_536

    with pytest.raises(TooLarge) as info:
        asyncio.run(ingest(store, "img", endless(), limits=Limits(size_cap=1_000_000),
                           buffer_size=65_536))
    assert not isinstance(info.value, QuotaExceeded)
    assert consumed < 1_000_000 + 3 * 65_536   # stopped as soon as the cap was passed
    assert list(store.datadir.iterdir()) == []


def test_exact_size_cap_is_accepted(store: FilesystemStore) -> None:
    data = b"y" * 100_000
    result = asyncio.run(ingest(store, "img", source(data), limits=Limits(size_cap=100_000)))
    assert result.size == 100_000


def test_quota_exceeded(store: FilesystemStore) -> None:
    with pytest.raises(QuotaExceeded, match="exceeds the quota"):
        asyncio.run(ingest(store, "img", source(b"z" * 50_000),
                           limits=Limits(size_cap=10**9, quota_remaining=49_999)))
    assert list(store.datadir.iterdir()) == []


def test_source_error_propagates_and_keeps_nothing(store: FilesystemStore) -> None:
    class Disconnected(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 5_000_000
        raise Disconnected("gone")

    with pytest.raises(Disconnected):
        asyncio.run(ingest(store, "img", broken()))
    assert list(store.datadir.iterdir()) == []


class ReadableBody:
    """A source with ``readinto`` (as the API's request body): fills at most a random
    number of bytes per call, as a socket does; raises ``error`` after ``fail_after``."""

    def __init__(self, data: bytes, seed: int = 3, fail_after: int | None = None,
                 error: Exception | None = None) -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.rng = random.Random(seed)
        self.fail_after = fail_after
        self.error = error
        self.iterated = False

    async def readinto(self, buffer: memoryview) -> int:
        if self.fail_after is not None and self.offset >= self.fail_after:
            assert self.error is not None
            raise self.error
        n = min(len(buffer), len(self.data) - self.offset, self.rng.choice([1, 4096, 70_001]))
        buffer[:n] = self.data[self.offset:self.offset + n]
        self.offset += n
        return n

    def __aiter__(self) -> AsyncIterator[bytes]:
        self.iterated = True
        raise AssertionError("a readable source is not iterated")


@pytest.mark.parametrize("size", [0, 1, 4096, 300_001])
def test_readable_source_fills_buffers_with_readinto(store: FilesystemStore, size: int) -> None:
    data = random.Random(size).randbytes(size)
    body = ReadableBody(data)
    result = asyncio.run(ingest(store, "img", body, buffer_size=65_536, max_in_flight=2))
    assert not body.iterated
    assert result.size == size
    assert result.checksum == hashlib.md5(data).hexdigest()
    assert result.os_hash_value == hashlib.sha512(data).hexdigest()
    with store.read(result.location) as chunks:
        assert b"".join(chunks) == data


def test_readable_source_over_the_cap_keeps_nothing(store: FilesystemStore) -> None:
    body = ReadableBody(b"q" * 3_000_000)
    with pytest.raises(TooLarge):
        asyncio.run(ingest(store, "img", body, limits=Limits(size_cap=1_000_000),
                           buffer_size=65_536))
    assert body.offset < 1_000_000 + 3 * 65_536   # stopped as soon as the cap was passed
    assert list(store.datadir.iterdir()) == []


def test_readable_source_error_propagates_and_keeps_nothing(store: FilesystemStore) -> None:
    class Disconnected(Exception):
        pass

    body = ReadableBody(b"d" * 9_000_000, fail_after=5_000_000, error=Disconnected("gone"))
    with pytest.raises(Disconnected):
        asyncio.run(ingest(store, "img", body))
    assert list(store.datadir.iterdir()) == []


# -- the quota at commit, on both databases ---------------------------------------------------

MiB = 1024 * 1024
QUOTA = SimpleNamespace(user_storage_quota="3MB", image_size_cap=1 << 40)


def _saving_images(db: Database, owner: str, count: int) -> list[Image]:
    now = datetime(2026, 11, 27, 12, 0, 0)
    made = [Image(id=str(uuid.uuid4()), owner=owner, status=SAVING, created_at=now,
                  updated_at=now) for _ in range(count)]
    with db.write() as session:
        for image in made:
            images_repo.add(session, image)
    return made


def _commit_size_in_thread(db: Database, image: Image, size: int) -> tuple[threading.Thread,
                                                                            list[BaseException]]:
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            with db.write() as session:
                check_limits_at_commit(QUOTA, session, image, size)
                image.size = size
                images_repo.update(session, image)
        except BaseException as error:   # handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=commit)
    thread.start()
    return thread, errors


def test_commits_of_one_owner_are_serialized_and_see_each_other(db: Database) -> None:
    # Both transfers passed the streaming check (each saw 0 bytes used when it
    # began); together they would hold 4 MiB of a 3 MiB quota.
    first, second = _saving_images(db, "p" * 32, 2)
    with db.write() as session:
        check_limits_at_commit(QUOTA, session, first, 2 * MiB)
        first.size = 2 * MiB
        images_repo.update(session, first)
        thread, errors = _commit_size_in_thread(db, second, 2 * MiB)
        thread.join(0.5)
        assert thread.is_alive(), "the second commit must wait for the first"
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], QuotaExceeded), errors
    assert "1048576 bytes remaining" in errors[0].message
    with db.read() as session:
        assert images_repo.usage(session, "p" * 32) == 2 * MiB


def test_within_the_quota_both_commit(db: Database) -> None:
    first, second = _saving_images(db, "p" * 32, 2)
    for image in (first, second):
        thread, errors = _commit_size_in_thread(db, image, MiB)
        thread.join(10)
        assert errors == []
    with db.read() as session:
        assert images_repo.usage(session, "p" * 32) == 2 * MiB


def test_postgresql_lock_is_per_owner(pg_database: str) -> None:
    # SQLite has one writer at a time anyway; PostgreSQL must not serialize the
    # commits of different projects.
    db = Database(pg_database)
    migrate.upgrade(db.engine)
    try:
        (mine,) = _saving_images(db, "p" * 32, 1)
        (theirs,) = _saving_images(db, "q" * 32, 1)
        with db.write() as session:
            check_limits_at_commit(QUOTA, session, mine, 2 * MiB)
            thread, errors = _commit_size_in_thread(db, theirs, 2 * MiB)
            thread.join(10)
            assert not thread.is_alive() and errors == []
    finally:
        db.dispose()
