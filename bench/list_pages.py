#!/usr/bin/env python3
"""What an image list page costs as a project's images grow, in-process.

    .venv/bin/python bench/list_pages.py [--sizes 1000,10000,50000] [--results-md]

For each size N, on a fresh SQLite state directory: project P owns N images, 500
other projects own N private images between them, 1 in 50 images is public and
P is an accepted member of 20 of the others' shared images. Then, as P (a
member) through ``services.images.list_images``, CPU milliseconds per call
(``time.process_time``, median of 5 runs of 20 calls; 5 calls for the sort by
name) for:

- the first page (``limit=25``, the default order);
- a page half-way down the list (``marker`` = the image there);
- a lookup by name (``name=<one of P's names>``: what ``openstack image show
  NAME`` sends);
- the first page sorted by name (``sort_key=name&sort_dir=asc``: what ``glance
  image-list`` asks for by default);
- and the whole list walked by marker, 100 per page (wall seconds, once).

Statistics are refreshed (``ANALYZE``) after the images are written, as a
running server does. Runs against whatever build is checked out, so two builds
compare by running it in each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from glimpse import config
from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.domain.image import Image
from glimpse.domain.member import Member
from glimpse.runtime import build
from glimpse.services import image_query
from glimpse.services import images as svc

P = "0123456789abcdef0123456789abcdef"
CTX = RequestContext(project_id=P, user_id="bench", roles=frozenset({"member", "reader"}))
T0 = datetime(2026, 1, 1)


def populate(runtime: Any, n: int) -> list[str]:
    """P's N images, the others' N, public and shared ones; returns P's ids, oldest first."""
    own: list[str] = []
    shared_with_p = 0
    with runtime.db.write() as s:
        for i in range(2 * n):
            mine = i % 2 == 0
            image_id = str(uuid.UUID(int=i + 1))
            if i % 50 == 1:
                visibility = "public"
            elif mine:
                visibility = "shared"
            else:
                visibility = "private" if i % 7 else "shared"
            owner = P if mine else f"{i % 500:032d}"
            created = T0 + timedelta(seconds=i)
            images_repo.add(s, Image(id=image_id, name=f"image-{i}", owner=owner,
                                     visibility=visibility, status="active", size=i,
                                     disk_format="raw", container_format="bare",
                                     created_at=created, updated_at=created))
            if mine:
                own.append(image_id)
            elif visibility == "shared" and shared_with_p < 20:
                images_repo.add_member(s, Member(image_id, P, status="accepted",
                                                 created_at=created, updated_at=created))
                shared_with_p += 1
    runtime.db.refresh_statistics()
    return own


def cpu_ms(fn: Callable[[], Any], calls: int = 20, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time()
        for _ in range(calls):
            fn()
        samples.append(1000 * (time.process_time() - start) / calls)
    return statistics.median(samples)


def listing(params: list[tuple[str, str]]) -> Callable[[], Any]:
    def call() -> Any:
        return svc.list_images(RUNTIME, CTX, image_query.parse_list_params(params))
    return call


def walk(page_size: int) -> tuple[int, float]:
    """Images and wall seconds to list everything P sees by marker."""
    seen, marker, start = 0, None, time.perf_counter()
    while True:
        params = [("limit", str(page_size))] + ([("marker", marker)] if marker else [])
        page, marker = svc.list_images(RUNTIME, CTX, image_query.parse_list_params(params))
        seen += len(page)
        if marker is None:
            return seen, time.perf_counter() - start


RUNTIME: Any = None


def main() -> int:
    global RUNTIME
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--results-md", action="store_true",
                        help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            conf_file = Path(tmp) / "glimpse.conf"
            conf_file.write_text(f"[DEFAULT]\nstate_path = {tmp}\nlog_file = {tmp}/glimpse.log\n")
            conf = config.load(["--config-file", str(conf_file)])
            policy.install(conf)
            RUNTIME = build(conf)
            own = populate(RUNTIME, n)
            first = cpu_ms(listing([("limit", "25")]))
            middle = cpu_ms(listing([("limit", "25"), ("marker", own[len(own) // 2])]))
            by_name = cpu_ms(listing([("name", f"image-{n // 2 * 2}")]))
            sorted_by_name = cpu_ms(listing([("limit", "20"), ("sort_key", "name"),
                                             ("sort_dir", "asc")]), calls=5)
            seen, seconds = walk(100)
            RUNTIME.db.dispose()
        rows.append((n, first, middle, by_name, sorted_by_name, seen, seconds))
        print(f"N={n}: first {first:.2f} ms, middle {middle:.2f} ms, by name {by_name:.2f} ms, "
              f"sorted by name {sorted_by_name:.2f} ms, walk {seen} images in {seconds:.2f} s",
              flush=True)
    table = ["| P's images | first page ms | middle page ms | by name ms | sorted by name ms "
             "| whole list by marker |", "|---:|---:|---:|---:|---:|---|"]
    for n, first, middle, by_name, sorted_by_name, seen, seconds in rows:
        table.append(f"| {n:,} | {first:.2f} | {middle:.2f} | {by_name:.2f} | "
                     f"{sorted_by_name:.2f} | {seen:,} images in {seconds:.2f} s |")
    print("\n".join(table))
    if args.results_md:
        results = Path(__file__).with_name("RESULTS.md")
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M UTC")
        with results.open("a") as out:
            out.write(f"\n## Image list pages as a project grows ({stamp}, in-process, SQLite, "
                      "CPU ms per call, median of 5 x 20)\n\n"
                      f"`.venv/bin/python bench/list_pages.py --sizes {args.sizes}`\n\n")
            out.write("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
