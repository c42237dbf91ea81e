#!/usr/bin/env python3
"""Why Glimpse's PATCH/POST p99 explodes under concurrency, and the fix, on raw sqlite3.

2 processes x 8 threads (like 2 uvicorn workers and their thread pools) run short
write transactions on one SQLite file in WAL mode (``BEGIN IMMEDIATE``, one UPDATE,
``--hold-ms`` of Python work while the lock is held, COMMIT), for ``--seconds``:

- ``busy_timeout``: what Glimpse does today (db/engine.py): waiters sleep-poll in
  SQLite's busy handler (1, 2, 5 ... 100 ms naps), so some wait seconds (starvation);
- ``flock``: a per-process ``threading.Lock`` plus ``fcntl.flock`` on ``<db>.lock``
  taken before ``BEGIN IMMEDIATE``: writers queue in the kernel and are woken in turn.

    .venv/bin/python bench/sqlite_writers.py [--hold-ms 1.0] [--seconds 6]
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path


def setup(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x") for i in range(1000)])
    conn.commit()
    conn.close()


def worker(db: Path, mode: str, seconds: float, hold_ms: float, threads: int,
           out: mp.Queue) -> None:  # type: ignore[type-arg]
    lockfd = os.open(str(db) + ".lock", os.O_RDWR | os.O_CREAT)
    local = threading.Lock()
    latencies: list[float] = []

    def run() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            if mode == "flock":
                local.acquire()
                fcntl.flock(lockfd, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE t SET v = ? WHERE id = ?", (str(n), n % 1000))
                spin = time.perf_counter() + hold_ms / 1000
                while time.perf_counter() < spin:  # Python work inside the transaction
                    pass
                conn.execute("COMMIT")
            finally:
                if mode == "flock":
                    fcntl.flock(lockfd, fcntl.LOCK_UN)
                    local.release()
            latencies.append(time.perf_counter() - t0)
            n += 1
        conn.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(latencies)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hold-ms", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqlite-writers-") as tmp:
        db = Path(tmp) / "w.sqlite"
        for mode in ("busy_timeout", "flock"):
            setup(db)
            out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            procs = [mp.Process(target=worker, args=(db, mode, args.seconds, args.hold_ms,
                                                     args.threads, out))
                     for _ in range(args.processes)]
            for proc in procs:
                proc.start()
            lat = sorted(x for _ in procs for x in out.get())
            for proc in procs:
                proc.join()
            print(f"{mode:13s} {len(lat) / args.seconds:7.1f} tx/s   "
                  f"p50 {1000 * lat[len(lat) // 2]:7.2f} ms   "
                  f"p99 {1000 * lat[int(len(lat) * 0.99)]:8.2f} ms   max {1000 * lat[-1]:8.1f} ms")


if __name__ == "__main__":
    main()
