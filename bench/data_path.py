"""Benchmark of the image data path (not a test): upload, download, server memory.

    .venv/bin/python bench/data_path.py [--size-mib 1024] [--rss-size-mib 5120] [--workers 1]

Starts a Glimpse server (SQLite + filesystem store in a temporary directory on
the same disk as the repository), creates an image, uploads ``--size-mib`` MiB
with a streaming client (a random 4 MiB block repeated, sent with a
Content-Length so nothing is buffered), downloads it twice (the first warms the
page cache, the second is measured) with a client that reads into one reused
buffer, then uploads ``--rss-size-mib`` MiB to a second image while sampling
the resident memory of the server's process tree (psutil). Prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

MiB = 1 << 20
BLOCK = os.urandom(4 * MiB)
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
    proc = subprocess.Popen([sys.executable, "-m", "glimpse.cli", "--config-file", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=open(state / "stderr.log", "wb"),
                            start_new_session=True)
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


def create_image(client: httpx.Client, state: Path) -> str:
    response = client.post("/v2/images", json={"name": "bench", "disk_format": "raw",
                                               "container_format": "bare"})
    if response.status_code == 201:
        return str(response.json()["id"])
    # The images API is not there: create the record directly in the database.
    from glimpse.db import images_repo
    from glimpse.db.engine import Database, utcnow
    from glimpse.domain.image import Image

    db = Database(f"sqlite:///{state}/glimpse.sqlite")
    image_id = str(uuid.uuid4())
    with db.write() as session:
        now = utcnow()
        images_repo.add(session, Image(id=image_id, owner="bench", created_at=now,
                                       updated_at=now, disk_format="raw",
                                       container_format="bare"))
    db.dispose()
    return image_id


def body(size: int) -> Iterator[bytes]:
    view = memoryview(BLOCK)
    left = size
    while left > 0:
        n = min(left, len(BLOCK))
        yield bytes(view[:n]) if n < len(BLOCK) else BLOCK
        left -= n


def upload(client: httpx.Client, image_id: str, size: int) -> float:
    started = time.perf_counter()
    response = client.put(f"/v2/images/{image_id}/file", content=body(size),
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Length": str(size)})
    elapsed = time.perf_counter() - started
    if response.status_code != 204:
        raise SystemExit(f"upload failed: {response.status_code} {response.text}")
    return elapsed


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
    parser.add_argument("--dir", default=str(Path(__file__).resolve().parent / ".state"),
                        help="parent of the temporary state directory")
    args = parser.parse_args()
    size = args.size_mib * MiB
    rss_size = (args.rss_size_mib or args.size_mib) * MiB
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="glimpse-bench-", dir=args.dir))
    port = free_port()
    proc = start_server(state, port, args.workers)
    rows: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS,
                          timeout=600) as client:
            idle_rss = RssSampler(proc.pid)
            idle_rss.start()
            time.sleep(0.2)
            idle = idle_rss.stop()
            image_id = create_image(client, state)
            t = upload(client, image_id, size)
            rows.append((f"upload {args.size_mib} MiB", f"{size / t / 1e6:8.0f} MB/s"))
            download(port, image_id, size)                     # warm the page cache
            t = min(download(port, image_id, size) for _ in range(3))
            rows.append((f"download {args.size_mib} MiB (warm cache, best of 3)",
                         f"{size / t / 1e6:8.0f} MB/s"))
            second = create_image(client, state)
            sampler = RssSampler(proc.pid)
            sampler.start()
            t = upload(client, second, rss_size)
            peak = sampler.stop()
            rows.append((f"upload {rss_size // MiB} MiB while sampling RSS",
                         f"{rss_size / t / 1e6:8.0f} MB/s"))
            rows.append(("server RSS idle", f"{idle / MiB:8.0f} MiB"))
            rows.append((f"server peak RSS during the {rss_size // MiB} MiB upload",
                         f"{peak / MiB:8.0f} MiB"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(state, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"Glimpse data path - {os.cpu_count()} cores, workers={args.workers}")
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|-------------")
    for name, value in rows:
        print(f"{name:<{width}} | {value.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
