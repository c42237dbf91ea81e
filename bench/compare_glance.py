#!/usr/bin/env python3
"""Glimpse vs Glance, side by side, in one run on this machine (issue 6).

    .venv/bin/python bench/compare_glance.py            # full workload (~10 min)
    .venv/bin/python bench/compare_glance.py --quick    # shorter rows, one transfer each
    .venv/bin/python bench/compare_glance.py --tiny --only glimpse   # smoke test (CI)

Servers, one after the other: Glimpse with ``[DEFAULT] workers = 2`` and the
``log`` notification driver; Glimpse again with ``messagingv2`` to RabbitMQ;
the reference Glance peer (``run-peer.sh``, FLAVOR=trusted, WORKERS=2) on its
own PEER directory and port, reset before and stopped after. The same workload
runs against each, with the trusted-proxy identity headers:

- upload 1 GiB (PUT .../file, sendfile client), MB/s = 10**6 bytes/s;
- download 1 GiB, warm page cache (one unmeasured download first);
- ``GET /v2/images?limit=20`` with 1000 images present, ``GET /v2/images/{id}``,
  ``PATCH`` one property, ``POST /v2/images``: requests/s and p50/p99 latency at
  1, 4 and 16 concurrent keep-alive connections (wrk, one thread, Lua script);
- peak resident memory of the server's process tree (psutil, RSS summed).

Output: a table (Glimpse, Glance, ratio = Glimpse / Glance, goal), the raw
numbers in ``bench/results/<timestamp>.json`` and the table appended to the
"Glimpse vs Glance" section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import report
from servers import GlanceServer, GlimpseServer, Server, TreeMonitor, rabbit_url

REPO = Path(__file__).resolve().parent.parent
GiB = 1024**3
PROJECT = "0123456789abcdef0123456789abcdef"
OPS: dict[str, dict[str, Any]] = {
    "list": {"method": "GET", "path": "/v2/images?limit=20"},
    "show": {"method": "GET", "path": "/v2/images/{id}"},
    "patch": {"method": "PATCH", "path": "/v2/images/{id}",
              "body": '[{"op": "replace", "path": "/bench_prop", "value": "v{n}"}]',
              "content_type": "application/openstack-images-v2.1-json-patch"},
    "create": {"method": "POST", "path": "/v2/images",
               "body": '{"name": "bench-{n}", "disk_format": "raw", "container_format": "bare"}',
               "content_type": "application/json"},
}
SEED_BODY = {"name": "bench-seed", "disk_format": "raw", "container_format": "bare",
             "bench_prop": "v0"}


def _busy_seconds() -> float:
    """Machine-wide non-idle CPU seconds (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def identity_headers(roles: str) -> dict[str, str]:
    return {"X-Identity-Status": "Confirmed", "X-Project-Id": PROJECT,
            "X-User-Id": "bench-user", "X-Roles": roles}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="3 s per request row, one upload/download (1 GiB)")
    mode.add_argument("--tiny", action="store_true",
                      help="smoke test: 4 MiB, 1 s per row, 20 images, 1 and 4 clients")
    p.add_argument("--only", choices=["all", "glimpse", "glance"], default="all")
    p.add_argument("--glimpse-drivers", default="log,messagingv2",
                   help="Glimpse configurations to run (comma list of log, messagingv2)")
    p.add_argument("--duration", type=float, help="seconds per request row")
    p.add_argument("--concurrency", help="comma list of client counts (default 1,4,16)")
    p.add_argument("--images", type=int, help="images present for the list row (default 1000)")
    p.add_argument("--size", type=int, help="upload/download size in bytes (default 1 GiB)")
    p.add_argument("--repeat", type=int, help="transfers per row; the median is reported")
    p.add_argument("--ops", default=",".join(OPS), help="request rows to run")
    p.add_argument("--roles", default="member,reader", help="X-Roles of the bench user")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--glimpse-port", type=int, default=9494)
    p.add_argument("--glance-port", type=int, default=9393)
    p.add_argument("--glance-peer", default="/tmp/glance-bench")
    p.add_argument("--workdir", default="/tmp/glimpse-bench",
                   help="scratch: Glimpse state, the test blob")
    p.add_argument("--rabbit-url", default=os.environ.get("GLIMPSE_TEST_RABBIT_URL"))
    p.add_argument("--glimpse-database", help="SQLAlchemy URL (default: SQLite in the state dir)")
    p.add_argument("--json-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--results-md", help="where to append the table (default bench/RESULTS.md; "
                                        "--tiny appends only when this is given)")
    p.add_argument("--no-results-md", action="store_true")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each server, wait up to SECONDS for the machine to be quiet "
                        "(other processes below 30%% of one core)")
    p.add_argument("--nice", type=int, default=0,
                   help="run the harness, wrk and both servers at this niceness (e.g. -10 on "
                        "a shared machine: same priority for Glimpse and Glance; needs root)")
    p.add_argument("--profile", metavar="DIR",
                   help="also record py-spy profiles of the Glimpse workers per row into DIR "
                        "(profiled numbers are slower: they go to the JSON, not the table)")
    args = p.parse_args(argv)
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    defaults = {"tiny": (1.0, "1,4", 20, 4 * 1024**2, 1),
                "quick": (3.0, "1,4,16", 1000, GiB, 1),
                "full": (10.0, "1,4,16", 1000, GiB, 3)}[args.mode]
    args.duration = args.duration or defaults[0]
    args.concurrency = [int(c) for c in (args.concurrency or defaults[1]).split(",")]
    args.images = args.images or defaults[2]
    args.size = args.size or defaults[3]
    args.repeat = args.repeat or defaults[4]
    args.ops = [o for o in args.ops.split(",") if o]
    unknown = set(args.ops) - set(OPS)
    if unknown:
        p.error(f"unknown ops: {sorted(unknown)}")
    return args


def make_servers(args: argparse.Namespace) -> list[Server]:
    servers: list[Server] = []
    if args.only in ("all", "glimpse"):
        for driver in [d for d in args.glimpse_drivers.split(",") if d]:
            servers.append(GlimpseServer(
                name=f"glimpse-{driver}", port=args.glimpse_port,
                workdir=Path(args.workdir) / f"glimpse-{driver}", workers=args.workers,
                driver=driver, database=args.glimpse_database,
                transport_url=(rabbit_url(args.rabbit_url) if driver.startswith("messaging")
                               else None)))
    if args.only in ("all", "glance"):
        servers.append(GlanceServer(name="glance", port=args.glance_port,
                                    peer=Path(args.glance_peer), workers=args.workers))
    return servers


class Bench:
    """The workload against one started server."""

    def __init__(self, server: Server, args: argparse.Namespace, blob: Path) -> None:
        self.server = server
        self.args = args
        self.blob = blob
        self.headers = identity_headers(args.roles)
        self.monitor = TreeMonitor(server.root_pid).start()
        self.result: dict[str, Any] = {"info": server.info, "rows": {}, "raw": {},
                                       "profiles": {}}
        self.profile_dir = Path(args.profile) if args.profile else None

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.server.name}: {msg}", flush=True)

    def _measured(self, label: str, fn: Any) -> Any:
        """Run ``fn`` with the server's CPU accounted (and profiled if asked)."""
        self.monitor.set_phase(label)
        cpu0, t0, sys0 = self.monitor.cpu_seconds(), time.perf_counter(), _busy_seconds()
        res = fn()
        cpu, wall = self.monitor.cpu_seconds() - cpu0, time.perf_counter() - t0
        busy = _busy_seconds() - sys0
        res.server_cpu_pct = 100.0 * cpu / wall if wall else 0.0
        # whatever else ran meanwhile (other tests, the peer on 9292): noise to report
        res.other_cpu_pct = max(0.0, 100.0 * busy / wall - res.server_cpu_pct
                                - res.client_cpu_pct) if wall else 0.0
        self.monitor.set_phase(None)
        return res

    def _profiled(self, label: str, fn: Any) -> None:
        if self.profile_dir is None or not self.server.name.startswith("glimpse"):
            return
        from profiling import Profiler

        prof = Profiler(self.profile_dir / self.server.name, label,
                        self.server.worker_pids()).start()
        time.sleep(0.3)
        try:
            fn()
        finally:
            self.result["profiles"][label] = prof.stop()

    def transfers(self) -> None:
        size = self.blob.stat().st_size
        client = loadgen.JsonClient(self.server.url, self.headers)
        ups, downs, ids = [], [], []
        for i in range(self.args.repeat):
            image = client.call("POST", "/v2/images", {**SEED_BODY, "name": f"blob-{i}"},
                                expect=(201,))
            ids.append(image["id"])
            up = self._measured("upload", lambda: loadgen.upload(
                self.server.url, ids[-1], self.blob, self.headers))
            self.log(f"upload {up.mb_per_s:.0f} MB/s (server CPU {up.server_cpu_pct:.0f}%)")
            ups.append(up)
        got = client.call("GET", f"/v2/images/{ids[0]}")
        if got.get("status") != "active" or got.get("size") != size:
            raise loadgen.BenchError(f"uploaded image is {got.get('status')} size "
                                     f"{got.get('size')}, expected active/{size}")
        loadgen.download(self.server.url, ids[0], self.headers, size)  # warm the cache
        for _ in range(self.args.repeat):
            down = self._measured("download", lambda: loadgen.download(
                self.server.url, ids[0], self.headers, size))
            self.log(f"download {down.mb_per_s:.0f} MB/s (server CPU {down.server_cpu_pct:.0f}%)")
            downs.append(down)
        self._profiled("upload", lambda: loadgen.upload(self.server.url, client.call(
            "POST", "/v2/images", SEED_BODY, expect=(201,))["id"], self.blob, self.headers))
        self._profiled("download", lambda: loadgen.download(self.server.url, ids[0],
                                                            self.headers, size))
        for image_id in ids:
            client.call("DELETE", f"/v2/images/{image_id}", expect=(204,))
        client.close()
        self.result["raw"]["upload"] = [u.as_dict() for u in ups]
        self.result["raw"]["download"] = [d.as_dict() for d in downs]
        self.result["rows"]["upload_mb_s"] = statistics.median(u.mb_per_s for u in ups)
        self.result["rows"]["download_mb_s"] = statistics.median(d.mb_per_s for d in downs)
        gib = size / 2**30
        self.result["rows"]["upload_cpu_s_per_gib"] = statistics.median(
            u.server_cpu_pct / 100 * u.seconds / gib for u in ups)
        self.result["rows"]["download_cpu_s_per_gib"] = statistics.median(
            d.server_cpu_pct / 100 * d.seconds / gib for d in downs)
        self.result["rows"]["upload_client_cpu_pct"] = max(u.client_cpu_pct for u in ups)
        self.result["rows"]["download_client_cpu_pct"] = max(d.client_cpu_pct for d in downs)

    def requests(self) -> None:
        t0 = time.perf_counter()
        ids = loadgen.create_images(self.server.url, self.headers, self.args.images, SEED_BODY)
        self.log(f"seeded {len(ids)} images in {time.perf_counter() - t0:.1f}s")
        self.result["raw"]["seeded_images"] = len(ids)
        client = loadgen.JsonClient(self.server.url, self.headers)
        page = client.call("GET", "/v2/images?limit=20")
        client.close()
        if len(page.get("images", [])) != min(20, len(ids)):  # same work on both sides
            raise loadgen.BenchError(f"the list shows {len(page.get('images', []))} images, "
                                     f"expected {min(20, len(ids))}")
        for op in self.args.ops:
            spec = OPS[op]
            headers = dict(self.headers)
            if "content_type" in spec:
                headers["Content-Type"] = spec["content_type"]
            for conc in self.args.concurrency:
                def run(conc: int = conc, spec: dict[str, Any] = spec,
                        headers: dict[str, str] = headers) -> loadgen.RequestResult:
                    return loadgen.run_wrk(
                        self.server.url, method=spec["method"], path=spec["path"],
                        headers=headers, connections=conc, duration_s=self.args.duration,
                        body=spec.get("body"), ids=ids)

                time.sleep(0.5)  # let background work (notification relay) settle
                res = self._measured(f"{op}_c{conc}", run)
                key = f"{op}_c{conc}"
                self.result["raw"][key] = res.as_dict()
                rows = self.result["rows"]
                rows[f"{key}_rps"] = res.rps
                rows[f"{key}_p50_ms"] = res.p50_ms
                rows[f"{key}_p99_ms"] = res.p99_ms
                rows[f"{key}_client_cpu_pct"] = res.client_cpu_pct
                # CPU cost per request: robust to other load on the machine
                rows[f"{key}_cpu_ms"] = (res.server_cpu_pct / 100 * res.duration_s * 1000
                                         / max(res.requests, 1))
                if res.requests == 0:
                    rows[f"{key}_p50_ms"] = rows[f"{key}_p99_ms"] = None
                bad = {k: v for k, v in res.errors.items() if v}
                self.log(f"{key}: {res.rps:.1f} req/s p50 {res.p50_ms:.2f} ms "
                         f"p99 {res.p99_ms:.2f} ms (wrk CPU {res.client_cpu_pct:.0f}%, "
                         f"server CPU {res.server_cpu_pct:.0f}%, other {res.other_cpu_pct:.0f}%)"
                         + (f" ERRORS {bad}" if bad else ""))
                if bad:
                    self.result.setdefault("errors", {})[key] = bad
            if op in ("show", "list", "patch") and self.args.profile:
                self._profiled(f"{op}_c4", lambda spec=spec, headers=headers: loadgen.run_wrk(
                    self.server.url, method=spec["method"], path=spec["path"], headers=headers,
                    connections=4, duration_s=min(self.args.duration, 5),
                    body=spec.get("body"), ids=ids))
        if "create" in self.args.ops and self.args.profile:
            spec = OPS["create"]
            self._profiled("create_c4", lambda: loadgen.run_wrk(
                self.server.url, method="POST", path=spec["path"],
                headers={**self.headers, "Content-Type": spec["content_type"]},
                connections=4, duration_s=min(self.args.duration, 5), body=spec["body"]))

    def finish(self) -> dict[str, Any]:
        self.monitor.stop()
        others = [r.get("other_cpu_pct", 0.0) for v in self.result["raw"].values()
                  for r in (v if isinstance(v, list) else [v]) if isinstance(r, dict)]
        self.result["other_cpu_pct_max"] = max(others, default=0.0)
        rows = self.result["rows"]
        rows["peak_rss_mib"] = self.monitor.peak_rss / 2**20
        rows["peak_pss_mib"] = self.monitor.peak_pss / 2**20
        self.result["raw"]["phase_peak_rss_mib"] = {
            k: round(v / 2**20, 1) for k, v in self.monitor.phase_peaks.items()}
        return self.result


def wait_quiet(limit_s: float, threshold_pct: float = 30.0) -> float:
    """Wait (up to ``limit_s``) until the machine's busy CPU over 2 s is below
    ``threshold_pct`` of one core; return the last busy figure."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = _busy_seconds(), time.perf_counter()
        time.sleep(2)
        busy = 100.0 * (_busy_seconds() - b0) / (time.perf_counter() - t0)
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        print(f"[{time.strftime('%H:%M:%S')}] machine busy ({busy:.0f}% CPU), waiting", flush=True)


def run_server(server: Server, args: argparse.Namespace, blob: Path) -> dict[str, Any]:
    busy = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    server.info["git"] = git_revision()  # the tree may change during a run: per server
    server.start()
    try:
        bench = Bench(server, args, blob)
        idle = bench.result["rows"]["idle_rss_mib"] = bench.monitor.rss() / 2**20
        bench.log(f"up at {server.url}, root pid {server.root_pid}, workers "
                  f"{server.worker_pids()}, idle RSS {idle:.0f} MiB")
        bench.result["busy_before_pct"] = busy
        try:
            bench.transfers()
            bench.requests()
        except Exception as exc:  # keep what was measured before the failure
            bench.log(f"FAILED: {exc!r}")
            bench.result["failed"] = repr(exc)
        return bench.finish()
    finally:
        server.stop()
        counts = getattr(server, "outbox_counts", lambda: None)()
        if counts is not None:
            server.info["notifications"] = counts
            print(f"[{time.strftime('%H:%M:%S')}] {server.name}: notifications {counts}",
                  flush=True)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {"cores": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
            "kernel": platform.release(), "hostname": platform.node()}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "wrk": loadgen.wrk_version()}
    for dist in ("glimpse", "uvicorn", "starlette", "sqlalchemy", "uvloop", "httptools"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    out["glimpse_git"] = git_revision()
    return out


def git_revision() -> str:
    """Short HEAD of the Glimpse tree, with "+dirty" when src/ has uncommitted changes."""
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return (rev or "?") + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        # inherited by every child: wrk, the Glimpse processes, run-peer.sh and uWSGI
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    started = dt.datetime.now(dt.UTC)
    workdir = Path(args.workdir)
    blob = loadgen.make_blob(workdir / f"blob-{args.size}.bin", args.size)
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"), "mode": args.mode,
        "machine": machine(), "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("rabbit_url",)},
        "client": "wrk (1 thread, Lua script) for request rows; raw-socket sendfile/recv_into "
                  "Python client for transfers", "targets": {}}
    for server in make_servers(args):
        try:
            data["targets"][server.name] = run_server(server, args, blob)
        except Exception as exc:  # keep the other servers' numbers; say what failed
            print(f"[{time.strftime('%H:%M:%S')}] {server.name}: FAILED: {exc!r}", flush=True)
            data["targets"][server.name] = {"info": server.info, "rows": {}, "raw": {},
                                            "failed": repr(exc)}
        if server.name == "glance":
            data["versions"]["glance"] = server.info.get("version", "?")
    data["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    data["table"] = report.table_rows(data, args.concurrency, args.ops)
    text = report.markdown(data)
    print(text)
    json_dir = Path(args.json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    json_path = json_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{args.mode}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"raw numbers: {json_path}")
    results_md = args.results_md or (None if args.tiny else str(REPO / "bench" / "RESULTS.md"))
    if results_md and not args.no_results_md:
        report.append_section(Path(results_md), text)
        print(f"table appended to {results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
