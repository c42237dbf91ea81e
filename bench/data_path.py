"""Benchmark of the image data path (not a test): upload, download, server memory.

    .venv/bin/python bench/data_path.py [--size-mib 1024] [--rss-size-mib 5120] [--workers 1]

Starts a Glimpse server (SQLite + filesystem store in a fresh directory under
the system's temporary directory, or under ``--dir``), creates an image,
uploads ``--size-mib`` MiB with a streaming raw-socket client (a random 4 MiB block
repeated, sent with a Content-Length so nothing is buffered), downloads it
(once to warm the page cache, then best of 3) with a client that reads into one
reused buffer, then uploads ``--rss-size-mib`` MiB to a second image while
sampling the resident memory of the server's process tree (psutil). Prints a
table, with the server's and the client's CPU seconds per GiB: on a loaded
machine wall-clock rates say little, CPU per GiB still does.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

MiB = 1 << 20


def random_raw(size: int) -> bytes:
    """Random bytes without an MBR signature at 510: uploads are inspected, and one
    draw in 65,536 would look like a disk with a broken partition table (refused)."""
    data = bytearray(os.urandom(size))
    data[510:512] = b"\0\0"
    return bytes(data)


BLOCK = random_raw(4 * MiB)
HEADERS = {"X-Project-Id": "bench", "X-User-Id": "bench", "X-Roles": "admin,member,reader"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    conf = state / "glimpse-api.conf"
    conf.write_text(f"[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\n"
                    f"state_path = {state}\nworkers = {workers}\n"
                    f"log_file = {state / 'glimpse.log'}\n")
    with open(state / "stderr.log", "wb") as stderr:   # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "glimpse.cli", "--config-file", str(conf)],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited: " + (state / "stderr.log").read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/versions", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def create_image(client: httpx.Client) -> str:
    response = client.post("/v2/images", json={"name": "bench", "disk_format": "raw",
                                               "container_format": "bare"})
    if response.status_code != 201:
        raise SystemExit(f"image create failed: {response.status_code} {response.text}")
    return str(response.json()["id"])


def upload(port: int, image_id: str, size: int, chunked: bool = False) -> None:
    """A minimal streaming HTTP/1.1 PUT: the same random 4 MiB block sent again and
    again with ``sendall`` (no per-chunk copies: the client must not be the
    bottleneck; httpx costs about twice the CPU per GiB). ``chunked``: as
    python-glanceclient sends, ``Transfer-Encoding: chunked`` with 4 MiB chunks."""
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
            + f"Content-Type: application/octet-stream\r\n{length}\r\n"
            "Connection: close\r\n\r\n").encode()
    view = memoryview(BLOCK)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
        sock.sendall(head)
        left = size
        while left > 0:
            n = min(left, len(BLOCK))
            if chunked:
                sock.sendall(b"%x\r\n" % n)
            sock.sendall(view[:n])
            if chunked:
                sock.sendall(b"\r\n")
            left -= n
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        reply = sock.makefile("rb").readline()
    if not reply.startswith(b"HTTP/1.1 204"):
        raise SystemExit(f"upload failed: {reply!r}")


def download(port: int, image_id: str, size: int) -> float:
    """A minimal HTTP/1.1 GET reading into one reused buffer (the client must not
    be the bottleneck; httpx costs more CPU per byte than the server)."""
    request = (f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
               + "Connection: close\r\n\r\n").encode()
    buffer = bytearray(8 * MiB)
    view = memoryview(buffer)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        header, _, rest = head.partition(b"\r\n\r\n")
        if not header.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"download failed: {header[:200]!r}")
        got = len(rest)
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            got += n
    elapsed = time.perf_counter() - started
    if got != size:
        raise SystemExit(f"download returned {got} bytes, expected {size}")
    return elapsed


def disk_write_rate(directory: Path, size: int) -> float:
    """Bytes/s of writing ``size`` bytes to a new file in ``directory`` and fsyncing it,
    with direct I/O where the filesystem allows (as the store does): the ceiling of
    a durable upload."""
    buffer = mmap.mmap(-1, 4 * MiB)
    buffer.write(BLOCK)
    path = directory / "disk-rate.bin"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError:
        fd = os.open(path, flags, 0o600)
    started = time.perf_counter()
    try:
        for _ in range(size // len(buffer)):
            os.write(fd, buffer)
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return size / (time.perf_counter() - started)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Measured:
    """Wall time, server CPU and client CPU of one phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> Measured:
        self.server0 = tree_cpu(self.pid)
        self.client0 = time.thread_time()   # the transfer runs in this thread; samplers don't count
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.server = tree_cpu(self.pid) - self.server0
        self.client = time.thread_time() - self.client0


def thread_cpu(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """``(pid, tid) -> (role, CPU seconds so far)`` for every thread of a process tree.
    Roles: ``loop`` (a process's main thread, the event loop), the OS thread name
    the ingest pipeline gives its threads (``ingest-md5``, ``ingest-hash``,
    ``ingest-write``), ``other`` (database/executor threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    root = psutil.Process(pid)
    found: dict[tuple[int, int], tuple[str, float]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            tids = os.listdir(f"/proc/{proc.pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick   # utime + stime
            role = ("loop" if int(tid) == proc.pid
                    else comm if comm.startswith("ingest-") else "other")
            found[(proc.pid, int(tid))] = (role, cpu)
    return found


class ThreadCpuSampler(threading.Thread):
    """CPU seconds per thread role over a phase, sampled every 100 ms (so that
    threads that end before the phase does are counted up to their last sample)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.start_cpu = thread_cpu(pid)
        self.last: dict[tuple[int, int], tuple[str, float]] = dict(self.start_cpu)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.last.update(thread_cpu(self.pid))
            time.sleep(0.1)

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.join()
        self.last.update(thread_cpu(self.pid))
        roles: dict[str, float] = {}
        for key, (role, cpu) in self.last.items():
            roles[role] = roles.get(role, 0.0) + cpu - self.start_cpu.get(key, (role, 0.0))[1]
        return roles


class RssSampler(threading.Thread):
    """Peak RSS (bytes) of a process and its children, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> int:
        self.stopping.set()
        self.join()
        return self.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=None,
                        help="size of the upload during which RSS is sampled "
                             "(default: --size-mib)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunked", action="store_true",
                        help="upload with Transfer-Encoding: chunked (as python-glanceclient) "
                             "instead of a Content-Length")
    parser.add_argument("--dir", default=None,
                        help="parent of the temporary state directory (default: the "
                             "system's temporary directory; it decides which disk is measured)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    rss_size = (args.rss_size_mib or args.size_mib) * MiB
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="glimpse-bench-", dir=args.dir))
    port = free_port()
    proc = start_server(state, port, args.workers)
    rows: list[tuple[str, str]] = []
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS,
                          timeout=600) as client:
            idle_rss = RssSampler(proc.pid)
            idle_rss.start()
            time.sleep(0.2)
            idle = idle_rss.stop()
            image_id = create_image(client)
            gib = size / (1 << 30)
            threads = ThreadCpuSampler(proc.pid)
            threads.start()
            with Measured(proc.pid) as up:
                upload(port, image_id, size, args.chunked)
            per_role = threads.stop()
            rows.append((f"upload {args.size_mib} MiB", f"{size / up.wall / 1e6:8.0f} MB/s"))
            download(port, image_id, size)                     # warm the page cache
            best: Measured | None = None
            for _ in range(3):
                with Measured(proc.pid) as down:
                    download(port, image_id, size)
                if best is None or down.wall < best.wall:
                    best = down
            assert best is not None
            rows.append((f"download {args.size_mib} MiB (warm cache, best of 3)",
                         f"{size / best.wall / 1e6:8.0f} MB/s"))
            second = create_image(client)
            sampler = RssSampler(proc.pid)
            sampler.start()
            with Measured(proc.pid) as big:
                upload(port, second, rss_size, args.chunked)
            peak = sampler.stop()
            rows.append((f"upload {rss_size // MiB} MiB while sampling RSS",
                         f"{rss_size / big.wall / 1e6:8.0f} MB/s"))
            rows.append((f"disk: write + fsync {args.size_mib} MiB (direct I/O)",
                         f"{disk_write_rate(state, size) / 1e6:8.0f} MB/s"))
            rows.append(("server RSS idle", f"{idle / MiB:8.0f} MiB"))
            rows.append((f"server peak RSS during the {rss_size // MiB} MiB upload",
                         f"{peak / MiB:8.0f} MiB"))
            hashing = per_role.get("ingest-md5", 0.0) + per_role.get("ingest-hash", 0.0)
            rows.append(("upload: server CPU per GiB, hashes / the rest",
                         f"{hashing / gib:.2f} s / {(up.server - hashing) / gib:.2f} s"))
            rows.append(("upload: hash threads busy (CPU / wall), md5 / multihash",
                         f"{per_role.get('ingest-md5', 0.0) / up.wall:.0%} / "
                         f"{per_role.get('ingest-hash', 0.0) / up.wall:.0%}"))
            rows.append(("upload: server CPU per GiB by thread",
                         " ".join(f"{role} {cpu / gib:.2f}"
                                  for role, cpu in sorted(per_role.items()))))
            for label, m, amount in (("upload", up, gib), ("download", best, gib)):
                rows.append((f"{label}: server / client CPU per GiB",
                             f"{m.server / amount:.2f} s / {m.client / amount:.2f} s"))
                ceiling = cores * (1 << 30) / (m.server + m.client) * amount / 1e6
                rows.append((f"{label}: CPU-bound ceiling on {cores} idle cores",
                             f"{ceiling:8.0f} MB/s"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(state, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"Glimpse data path - {cores} cores, workers={args.workers}, "
          f"{'chunked' if args.chunked else 'Content-Length'} uploads, "
          f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|-------------")
    for name, value in rows:
        print(f"{name:<{width}} | {value.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
