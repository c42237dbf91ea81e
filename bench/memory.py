"""Where a Glimpse server's resident memory goes (not a test): idle, during a 1 GiB
upload and download, and idle again after them.

    .venv/bin/python bench/memory.py [--size-mib 1024] [--workers 2] [--rounds 1] [--maps 12]

Starts a :class:`servers.GlimpseServer` (``--driver``, default log; SQLite + filesystem store,
fresh directory), samples its process tree as compare_glance.py does (the peak of
RSS summed over the tree, :class:`servers.TreeMonitor`), and prints per process:
RSS, PSS, anonymous vs file-backed RSS (``/proc/<pid>/smaps_rollup``), and with
``--maps N`` the N largest mappings of one worker by RSS (which .so files). The
upload's MB/s and the server's CPU seconds per GiB are printed too (CPU per GiB
is what to compare on a busy machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from servers import GlimpseServer, TreeMonitor, rabbit_url

MiB = 1 << 20
HEADERS = {"X-Identity-Status": "Confirmed", "X-Project-Id": "0" * 31 + "1",
           "X-User-Id": "bench-user", "X-Roles": "admin,member,reader"}
BODY = {"name": "mem", "disk_format": "raw", "container_format": "bare"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rollup(pid: int) -> dict[str, int]:
    """kB fields of smaps_rollup as bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def top_maps(pid: int, n: int) -> list[tuple[int, int, str]]:
    """(rss, anon, name) of the ``n`` largest mappings by RSS, grouped by file."""
    rss: dict[str, int] = defaultdict(int)
    anon: dict[str, int] = defaultdict(int)
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                rss[name] += int(parts[1]) * 1024
            elif parts[0] == "Anonymous:":
                anon[name] += int(parts[1]) * 1024
    return sorted(((rss[k], anon[k], k) for k in rss), reverse=True)[:n]


def describe(label: str, server: GlimpseServer, monitor: TreeMonitor, maps: int) -> None:
    print(f"-- {label}: tree RSS {monitor.rss() / MiB:.1f} MiB, PSS {monitor.pss() / MiB:.1f} MiB")
    workers = set(server.worker_pids())
    for proc in monitor.processes():
        try:
            r = rollup(proc.pid)
        except OSError:
            continue
        role = "worker" if proc.pid in workers else "root"
        print(f"   {proc.pid:>7} {role:6} RSS {r.get('Rss', 0) / MiB:6.1f}  PSS "
              f"{r.get('Pss', 0) / MiB:6.1f}  anon {r.get('Anonymous', 0) / MiB:6.1f}  "
              f"file {(r.get('Rss', 0) - r.get('Anonymous', 0)) / MiB:6.1f} MiB")
    if maps and workers:
        pid = sorted(workers)[0]
        for rss, anon, name in top_maps(pid, maps):
            print(f"        {rss / MiB:6.1f} (anon {anon / MiB:5.1f})  {name}")


def per_process_peaks(monitor: TreeMonitor, peaks: dict[int, int], stop: list[bool]) -> None:
    while not stop:
        for proc in monitor.processes():
            with contextlib.suppress(psutil.Error):
                peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.memory_info().rss)
        time.sleep(0.05)


def run_requests(server: GlimpseServer, monitor: TreeMonitor, args: argparse.Namespace) -> None:
    """The request rows as compare_glance.py runs them (same wrk script and bodies)."""
    from compare_glance import OPS, SEED_BODY

    ids = loadgen.create_images(server.url, HEADERS, args.images, SEED_BODY)
    describe(f"after seeding {len(ids)} images", server, monitor, 0)
    for op, spec in OPS.items():
        headers = dict(HEADERS)
        if "content_type" in spec:
            headers["Content-Type"] = spec["content_type"]
        for conc in (1, 4, 16):
            time.sleep(0.5)
            monitor.set_phase(f"{op}_c{conc}")
            res = loadgen.run_wrk(server.url, method=spec["method"], path=spec["path"],
                                  headers=headers, connections=conc,
                                  duration_s=args.requests, body=spec.get("body"), ids=ids)
            monitor.set_phase(None)
            print(f"{op}_c{conc}: {res.rps:.0f} req/s, RSS " + ", ".join(
                f"{p.pid} {p.memory_info().rss / MiB:.1f}" for p in monitor.processes()))
    describe("idle after the requests", server, monitor, 0)
    for pid in server.worker_pids():
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        print(f"   {pid}: {sum(f.endswith('.sqlite') for f in fds)} database connections, "
              f"{len(os.listdir(f'/proc/{pid}/task'))} threads")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="uploads (each measured)")
    p.add_argument("--maps", type=int, default=0, help="largest mappings of a worker to list")
    p.add_argument("--requests", type=float, default=0, metavar="SECONDS",
                   help="then the request rows of compare_glance.py (list, show, patch, "
                        "create at 1, 4, 16 clients), SECONDS each (wrk)")
    p.add_argument("--images", type=int, default=1000, help="images seeded for --requests")
    p.add_argument("--dir", default=f"/tmp/glimpse-memory-{os.getpid()}")
    p.add_argument("--driver", default="log", choices=["log", "messagingv2"],
                   help="notification driver (messagingv2: the local RabbitMQ, as in "
                        "compare_glance.py)")
    args = p.parse_args()
    workdir = Path(args.dir)
    blob = loadgen.make_blob(Path("/tmp/glimpse-memory-blobs") / f"blob-{args.size_mib}.bin",
                             args.size_mib * MiB)
    server = GlimpseServer(name="glimpse", port=free_port(), workdir=workdir,
                           workers=args.workers, driver=args.driver,
                           transport_url=rabbit_url(None) if args.driver != "log" else None)
    server.start()
    try:
        time.sleep(1.0)
        monitor = TreeMonitor(server.root_pid, interval=0.05).start()
        describe("idle", server, monitor, args.maps)
        peaks: dict[int, int] = {}
        stop: list[bool] = []
        sampler = threading.Thread(target=per_process_peaks, args=(monitor, peaks, stop),
                                   daemon=True)
        sampler.start()
        client = loadgen.JsonClient(server.url, HEADERS)
        ids = []
        for _ in range(args.rounds):
            image_id = client.call("POST", "/v2/images", BODY, expect=(201,))["id"]
            ids.append(image_id)
            monitor.set_phase("upload")
            cpu0 = monitor.cpu_seconds()
            up = loadgen.upload(server.url, image_id, blob, HEADERS)
            cpu = monitor.cpu_seconds() - cpu0
            monitor.set_phase(None)
            gib = blob.stat().st_size / 2**30
            print(f"upload {up.mb_per_s:.0f} MB/s, server CPU {cpu / gib:.2f} s/GiB")
        time.sleep(0.5)
        describe("idle after the uploads", server, monitor, 0)
        monitor.set_phase("download")
        loadgen.download(server.url, ids[0], HEADERS, blob.stat().st_size)
        cpu0 = monitor.cpu_seconds()
        down = loadgen.download(server.url, ids[0], HEADERS, blob.stat().st_size)
        cpu = monitor.cpu_seconds() - cpu0
        monitor.set_phase(None)
        print(f"download {down.mb_per_s:.0f} MB/s, server CPU "
              f"{cpu / (blob.stat().st_size / 2**30):.2f} s/GiB")
        time.sleep(0.5)
        describe("idle after the downloads", server, monitor, 0)
        time.sleep(0.5)
        stop.append(True)
        sampler.join()
        client.close()
        if args.requests:
            run_requests(server, monitor, args)
        print(f"peak tree RSS {monitor.peak_rss / MiB:.1f} MiB (PSS {monitor.peak_pss / MiB:.1f}); "
              + ", ".join(f"{k} {v / MiB:.1f}" for k, v in monitor.phase_peaks.items()))
        print("per-process peak RSS: " + ", ".join(
            f"{pid} {v / MiB:.1f}" for pid, v in sorted(peaks.items())))
        describe("idle after", server, monitor, args.maps)
        monitor.stop()
    finally:
        server.stop()
        os.system(f"rm -rf {workdir}")


if __name__ == "__main__":
    main()
