#!/usr/bin/env python3
"""Image-create cost with ``messagingv2`` (RabbitMQ) versus ``noop`` (issue 3).

One run, same machine, same settings: a Glimpse server with ``[DEFAULT] workers``
(default 2, SQLite) and the ``noop`` driver, then one with ``messagingv2`` to
the local RabbitMQ, alternated ``--rounds`` times so that both see the same
background load. Each round: ``POST /v2/images`` at ``--clients`` keep-alive
connections for ``--duration`` seconds with wrk (bench/loadgen.py), and the
user+system CPU of the server's whole process tree (psutil, before/after),
divided by the requests answered. The CPU per request is the stable figure on
a shared machine; req/s is reported too (median over rounds, and the median
of the per-round messagingv2/noop ratios, which cancels slow drifts of the
background load). With
``messagingv2`` the relay runs inside the same worker processes, so its
publishing work is counted in the server CPU; RabbitMQ's own CPU is not. After
each messagingv2 server stops, the outbox must hold no undelivered row.

``--outage`` adds a third server per round: ``messagingv2`` with its
``transport_url`` on a local port where nothing listens, so every event waits
in the outbox. Its row is compared with ``messagingv2`` with the broker up:
issue 3 asks that a broker outage not slow requests down, and this measures
it under load.

``--clients 1,2,4,8`` measures each load in turn (all rounds of one before the
next) and prints one table with a row per load in place of the single load's
table of measures. With one or two connections the machine has idle CPU, so
the difference is mostly the latency that recording adds to each create; with
more, both cores are busy and the difference is the CPU that recording, the
relay and RabbitMQ take from the server.

    .venv/bin/python bench/notify_overhead.py [--rounds 3] [--duration 8] [--clients 4]
                                              [--outage] [--no-results-md]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from servers import GlimpseServer, rabbit_url

REPO = Path(__file__).resolve().parent.parent
PROJECT = "0123456789abcdef0123456789abcdef"
HEADERS = {"X-Identity-Status": "Confirmed", "X-Project-Id": PROJECT,
           "X-User-Id": "bench-user", "X-Roles": "member,reader",
           "Content-Type": "application/json"}
BODY = '{"name": "bench-{n}", "disk_format": "raw", "container_format": "bare"}'


def tree_cpu(root: int) -> float:
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def broker_process() -> psutil.Process | None:
    """RabbitMQ's node (the longest-running beam.smp; rabbitmqctl calls are short-lived
    beam processes too): it shares the 2 cores with the server."""
    nodes = [p for p in psutil.process_iter(["name", "create_time"])
             if p.info["name"] and p.info["name"].startswith("beam")]
    return min(nodes, key=lambda p: p.info["create_time"]) if nodes else None


def broker_cpu(node: psutil.Process | None) -> float:
    """CPU seconds of the broker node so far (it also serves whatever else uses the
    broker meanwhile: an upper bound of what the bench costs it)."""
    if node is None:
        return 0.0
    try:
        t = node.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


OUTAGE = "messagingv2 (broker unreachable)"


def unreachable_broker() -> str:
    """A ``rabbit://`` URL on a local port where nothing listens (bound, then freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"rabbit://guest:guest@127.0.0.1:{port}/"


def one_round(driver: str, args: argparse.Namespace, transport: str | None,
              clients: int, *, broker_up: bool = True) -> dict[str, Any]:
    server = GlimpseServer(name=f"notify-{driver}", port=args.port,
                           workdir=Path(args.workdir) / driver, workers=args.workers,
                           driver=driver, transport_url=transport, purge_queues=broker_up)
    server.start()
    try:
        # warm-up: connections, statements, the relay's broker connection
        loadgen.run_wrk(server.url, method="POST", path="/v2/images", headers=HEADERS,
                        connections=clients, duration_s=1, body=BODY)
        time.sleep(0.5)
        node = broker_process()
        cpu0, broker0 = tree_cpu(server.root_pid), broker_cpu(node)
        res = loadgen.run_wrk(server.url, method="POST", path="/v2/images", headers=HEADERS,
                              connections=clients, duration_s=args.duration, body=BODY)
        cpu1, broker1 = tree_cpu(server.root_pid), broker_cpu(node)
        time.sleep(1.0)   # the relay catches up before the server stops
    finally:
        server.stop()
    counts = server.outbox_counts()
    return {"driver": driver, "rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
            "requests": res.requests, "cpu_ms": 1000 * (cpu1 - cpu0) / max(res.requests, 1),
            "broker_cpu_ms": 1000 * (broker1 - broker0) / max(res.requests, 1),
            "errors": {k: v for k, v in res.errors.items() if v}, "outbox": counts}


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per driver and the paired per-round ratios (each messagingv2 server
    ran right after its noop server, under about the same background load: steadier
    than the ratio of the medians)."""
    med = {d: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms",
                                                                 "cpu_ms", "broker_cpu_ms")}
           for d, rs in runs.items()}
    pairs = list(zip(runs["noop"], runs["messagingv2"], strict=True))
    return {
        "noop": med["noop"], "v2": med["messagingv2"],
        "paired_rps": statistics.median(v["rps"] / n["rps"] for n, v in pairs),
        "paired_cpu": statistics.median(v["cpu_ms"] / n["cpu_ms"] for n, v in pairs),
        "undelivered": sum((r["outbox"] or {}).get("undelivered", 0)
                           for r in runs["messagingv2"]),
        "creates": sum(r["requests"] for r in runs["messagingv2"]),
    } | outage_summary(runs)


def outage_summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """With ``--outage``: the unreachable-broker server's medians, and its per-round
    req/s and CPU against the messagingv2 server of the same round."""
    if not runs.get(OUTAGE):
        return {}
    pairs = list(zip(runs["messagingv2"], runs[OUTAGE], strict=True))
    return {
        "outage": {k: statistics.median(r[k] for r in runs[OUTAGE])
                   for k in ("rps", "p50_ms", "p99_ms", "cpu_ms")},
        "outage_paired_rps": statistics.median(o["rps"] / v["rps"] for v, o in pairs),
        "outage_paired_cpu": statistics.median(o["cpu_ms"] / v["cpu_ms"] for v, o in pairs),
    }


def one_load_table(s: dict[str, Any]) -> list[str]:
    noop, v2 = s["noop"], s["v2"]
    rows = [
        ("create req/s (median)", noop["rps"], v2["rps"],
         f"{100 * (1 - v2['rps'] / noop['rps']):+.1f}% slower "
         f"(paired per round: {100 * (1 - s['paired_rps']):+.1f}%)"),
        ("p50 ms", noop["p50_ms"], v2["p50_ms"], ""),
        ("p99 ms", noop["p99_ms"], v2["p99_ms"], ""),
        ("server CPU ms/request (all processes)", noop["cpu_ms"], v2["cpu_ms"],
         f"{100 * (v2['cpu_ms'] / noop['cpu_ms'] - 1):+.1f}% CPU "
         f"(paired per round: {100 * (s['paired_cpu'] - 1):+.1f}%)"),
        ("RabbitMQ CPU ms/request (not in the server's)", noop["broker_cpu_ms"],
         v2["broker_cpu_ms"], ""),
    ]
    return (["| measure | noop | messagingv2 | difference |", "|---|---:|---:|---|"]
            + [f"| {name} | {a:,.2f} | {b:,.2f} | {d} |" for name, a, b, d in rows])


def outage_table(by_load: dict[int, dict[str, Any]]) -> list[str]:
    """``messagingv2`` with the broker up against unreachable, a row per load."""
    lines = ["| clients | broker up req/s | unreachable req/s | unreachable vs up "
             "(paired per round) | p99 ms up / unreachable "
             "| server CPU ms/req up / unreachable (paired) |",
             "|---:|---:|---:|---|---|---|"]
    for clients, s in by_load.items():
        up, down = s["v2"], s["outage"]
        lines.append(
            f"| {clients} | {up['rps']:,.1f} | {down['rps']:,.1f} "
            f"| {100 * (down['rps'] / up['rps'] - 1):+.1f}% "
            f"({100 * (s['outage_paired_rps'] - 1):+.1f}%) "
            f"| {up['p99_ms']:.2f} / {down['p99_ms']:.2f} "
            f"| {up['cpu_ms']:.2f} / {down['cpu_ms']:.2f} "
            f"({100 * (s['outage_paired_cpu'] - 1):+.1f}%) |")
    return lines


def sweep_table(by_load: dict[int, dict[str, Any]]) -> list[str]:
    lines = ["| clients | noop req/s | messagingv2 req/s | slower (paired per round) "
             "| p50 ms noop / messagingv2 | p99 ms noop / messagingv2 "
             "| server CPU ms/req noop / messagingv2 | RabbitMQ CPU ms/req |",
             "|---:|---:|---:|---|---|---|---|---:|"]
    for clients, s in by_load.items():
        noop, v2 = s["noop"], s["v2"]
        lines.append(
            f"| {clients} | {noop['rps']:,.1f} | {v2['rps']:,.1f} "
            f"| {100 * (1 - v2['rps'] / noop['rps']):+.1f}% "
            f"({100 * (1 - s['paired_rps']):+.1f}%) "
            f"| {noop['p50_ms']:.2f} / {v2['p50_ms']:.2f} "
            f"| {noop['p99_ms']:.2f} / {v2['p99_ms']:.2f} "
            f"| {noop['cpu_ms']:.2f} / {v2['cpu_ms']:.2f} | {v2['broker_cpu_ms']:.2f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--clients", default="4",
                   help="keep-alive connections; a comma-separated list measures each")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=9497)
    p.add_argument("--workdir", default="/tmp/glimpse-notify-bench")
    p.add_argument("--rabbit-url", default=os.environ.get("GLIMPSE_TEST_RABBIT_URL"))
    p.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    p.add_argument("--outage", action="store_true",
                   help="also run messagingv2 with the broker unreachable each round")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args()
    loads = [int(c) for c in str(args.clients).split(",") if c.strip()]
    transport = rabbit_url(args.rabbit_url)
    cells: list[tuple[str, str, str | None]] = [
        ("noop", "noop", None), ("messagingv2", "messagingv2", transport)]
    if args.outage:
        cells.append((OUTAGE, "messagingv2", unreachable_broker()))
    load0 = os.getloadavg()[0]
    by_load: dict[int, dict[str, Any]] = {}
    for clients in loads:
        runs: dict[str, list[dict[str, Any]]] = {cell: [] for cell, _, _ in cells}
        for i in range(args.rounds):
            for cell, driver, url in cells:
                r = one_round(driver, args, url, clients, broker_up=cell != OUTAGE)
                runs[cell].append(r)
                print(f"[{clients} clients, round {i + 1}] {cell:12s} {r['rps']:7.1f} req/s  "
                      f"p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:7.2f} ms  "
                      f"server CPU {r['cpu_ms']:.2f} ms/req  "
                      f"broker {r['broker_cpu_ms']:.2f}  outbox {r['outbox']}"
                      + (f"  ERRORS {r['errors']}" if r["errors"] else ""), flush=True)
        by_load[clients] = summary(runs)
    load1 = os.getloadavg()[0]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    clients_text = ", ".join(str(c) for c in loads)
    lines = [f"## Notification overhead on image create ({stamp}, {args.rounds} rounds of "
             f"{args.duration:.0f} s, {clients_text} clients, {args.workers} workers, SQLite, "
             f"{psutil.cpu_count()} CPUs, load average {load0:.1f}-{load1:.1f}, "
             f"Python {platform.python_version()})", "",
             f"`.venv/bin/python bench/notify_overhead.py --rounds {args.rounds} "
             f"--clients {','.join(str(c) for c in loads)}"
             f"{' --outage' if args.outage else ''}`", ""]
    if len(loads) > 1:
        lines += [*sweep_table(by_load), ""]
    else:
        lines += [*one_load_table(by_load[loads[0]]), ""]
    if args.outage:
        lines += ["With the broker unreachable (every event waits in the outbox):", "",
                  *outage_table(by_load), ""]
    undelivered = sum(s["undelivered"] for s in by_load.values())
    creates = sum(s["creates"] for s in by_load.values())
    lines += [f"Undelivered messagingv2 events after the servers stopped: {undelivered} "
              f"(of {creates} creates measured).", ""]
    table = "\n".join(lines)
    print()
    print(table)
    if not args.no_results_md:
        with open(args.results_md, "a") as out:
            out.write("\n" + table)


if __name__ == "__main__":
    main()
