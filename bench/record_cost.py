"""CPU that recording a notification adds to an image create, in-process.

    .venv/bin/python bench/record_cost.py [--drivers noop,messagingv2] [--rounds 7]
                                          [--per-round 500] [--prof DRIVER]

Builds one runtime per driver (SQLite in a temporary state_path; the relay is
not started, so rows stay pending as they would under a burst), then runs
``services.images.create_image`` in rounds that alternate between the drivers
and reports each driver's median CPU (``time.process_time``, every thread of
the process: the WAL checkpointer included) per create, and the median of the
per-round difference to the first driver. CPU time, not wall time, so that
other load on the machine matters less; repeat runs when it is busy.
``--prof DRIVER`` prints a cProfile of one extra round of that driver.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from glimpse import config
from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.runtime import build
from glimpse.services import images as svc

CTX = RequestContext(project_id="0123456789abcdef0123456789abcdef", user_id="bench",
                     roles=frozenset({"member", "reader"}))
BODY = {"name": "bench-1", "disk_format": "raw", "container_format": "bare"}


def make_runtime(driver: str, tmp: Path) -> Any:
    state = tmp / driver
    state.mkdir()
    conf_file = state / "glimpse.conf"
    conf_file.write_text(
        f"[DEFAULT]\nstate_path = {state}\nlog_file = {state}/glimpse.log\n"
        "transport_url = rabbit://guest:guest@127.0.0.1:5672/\n"
        f"[oslo_messaging_notifications]\ndriver = {driver}\n")
    conf = config.load(["--config-file", str(conf_file)])
    policy.install(conf)
    return build(conf)


def one_round(runtime: Any, count: int) -> float:
    """CPU milliseconds per create over ``count`` creates."""
    start = time.process_time()
    for _ in range(count):
        svc.create_image(runtime, CTX, dict(BODY))
    return 1000 * (time.process_time() - start) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", default="noop,messagingv2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--prof", metavar="DRIVER")
    args = parser.parse_args()
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {d: make_runtime(d, Path(tmp)) for d in drivers}
        for runtime in runtimes.values():           # warm up: imports, caches, statistics
            one_round(runtime, 200)
        figures: dict[str, list[float]] = {d: [] for d in drivers}
        for _ in range(args.rounds):
            for d in drivers:
                figures[d].append(one_round(runtimes[d], args.per_round))
        base = figures[drivers[0]]
        for d in drivers:
            diffs = [x - b for x, b in zip(figures[d], base, strict=True)]
            print(f"{d:12s} median {statistics.median(figures[d]):.3f} ms/create "
                  f"(min {min(figures[d]):.3f}); vs {drivers[0]}: "
                  f"{1000 * statistics.median(diffs):+.0f} us/create")
        if args.prof:
            profile = cProfile.Profile()
            profile.enable()
            one_round(runtimes[args.prof], args.per_round)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        for runtime in runtimes.values():
            runtime.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
