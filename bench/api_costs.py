#!/usr/bin/env python3
"""CPU cost of Glimpse's request paths below HTTP, and of cheaper equivalents.

In one process, on a fresh SQLite state directory with ``--images`` images (created
through ``services.images.create_image``), measures CPU milliseconds per call
(``time.process_time``: robust to other load on the machine, unlike wall time):

- ``services.images.get_image`` vs the same three queries as prebuilt statements
  (``Database.read()``, a bare Core connection) vs raw sqlite3;
- ``services.images.list_images`` (limit=20) and its main SELECT in raw sqlite3,
  before and after ``ANALYZE`` (the query plan is printed);
- ``access.authorize`` through the oslo.policy enforcer the API installs.

    .venv/bin/python bench/api_costs.py [--images 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, false, select

from glimpse import config
from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.db import image_lists, images_repo
from glimpse.runtime import build
from glimpse.services import access, image_query
from glimpse.services import images as svc

CTX = RequestContext(project_id="0123456789abcdef0123456789abcdef", user_id="bench",
                     roles=frozenset({"member", "reader"}))


def cost(label: str, fn: Callable[[int], Any], n: int) -> float:
    fn(0)
    c0 = time.process_time()
    for i in range(n):
        fn(i)
    ms = 1000 * (time.process_time() - c0) / n
    print(f"  {label:58s} {ms:8.3f} ms CPU")
    return ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("-n", type=int, default=300, help="calls per measurement")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="glimpse-api-costs-"))
    conf_file = tmp / "glimpse.conf"
    conf_file.write_text(f"[DEFAULT]\nstate_path = {tmp}\nlog_file = {tmp}/glimpse.log\n"
                         "[oslo_messaging_notifications]\ndriver = noop\n")
    conf = config.load(["--config-file", str(conf_file)])
    policy.install(conf)
    rt = build(conf)
    body = {"name": "bench", "disk_format": "raw", "container_format": "bare",
            "bench_prop": "v0"}
    ids = [svc.create_image(rt, CTX, dict(body)).id for _ in range(args.images)]
    db_file = tmp / "glimpse.sqlite"
    raw = sqlite3.connect(db_file)
    n = args.n

    print(f"show ({args.images} images):")
    images, tags, props = images_repo._images, images_repo._tags, images_repo._props
    get_stmt = select(images).where(images.c.id == bindparam("id"), images.c.deleted == false())
    tags_stmt = select(tags.c.value).where(tags.c.image_id == bindparam("id"))
    props_stmt = select(props.c.name, props.c.value).where(props.c.image_id == bindparam("id"))

    def prebuilt(execute: Any, i: int) -> None:
        params = {"id": ids[i % len(ids)]}
        execute(get_stmt, params).first()
        list(execute(tags_stmt, params))
        list(execute(props_stmt, params))

    def in_read(i: int) -> None:
        with rt.db.read() as conn:
            prebuilt(conn.execute, i)

    def core(i: int) -> None:
        with rt.db.engine.connect() as conn:
            prebuilt(conn.execute, i)
            conn.rollback()

    def raw_show(i: int) -> None:
        image_id = ids[i % len(ids)]
        raw.execute("SELECT * FROM images WHERE id = ? AND deleted = 0", (image_id,)).fetchone()
        raw.execute("SELECT value FROM image_tags WHERE image_id = ?", (image_id,)).fetchall()
        raw.execute("SELECT name, value FROM image_properties WHERE image_id = ?",
                    (image_id,)).fetchall()

    cost("services.images.get_image (policy check included)",
         lambda i: svc.get_image(rt, CTX, ids[i % len(ids)]), n)
    cost("same 3 queries, prebuilt statements, Database.read()", in_read, n)
    cost("same 3 queries, prebuilt statements, Core connection", core, n)
    cost("same 3 queries, raw sqlite3", raw_show, n)

    print("list limit=20:")

    def request() -> image_query.ListRequest:
        return image_query.parse_list_params([("limit", "20")])

    statements: list[tuple[str, Any]] = []

    def capture(statement: str) -> None:   # SQLite reads run on the driver connection
        statements.append((statement, None))

    with rt.db.read() as conn:
        conn.connection.driver_connection.set_trace_callback(capture)
        listed = request()
        listed.query.scope = access.list_scope(CTX)
        listed.query.scope_params = access.scope_params(CTX)
        image_lists.list_images(conn, listed.query)
        conn.connection.driver_connection.set_trace_callback(None)
    sql = next(s for s, _ in statements if "ORDER BY" in s)   # values inlined by the trace
    params: tuple[Any, ...] = ()
    cost("services.images.list_images", lambda i: svc.list_images(rt, CTX, request()), n)
    plan = [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + sql, params)]
    print(f"  plan: {plan}")
    cost("its main SELECT, raw sqlite3", lambda i: raw.execute(sql, params).fetchall(), n)
    raw.execute("ANALYZE")
    raw.commit()
    plan = [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + sql, params)]
    print(f"  plan after ANALYZE: {plan}")
    cost("its main SELECT after ANALYZE, raw sqlite3",
         lambda i: raw.execute(sql, params).fetchall(), n)
    rt.db.engine.dispose()  # new connections see the statistics
    cost("services.images.list_images after ANALYZE",
         lambda i: svc.list_images(rt, CTX, request()), n)

    print("policy:")
    image = svc.get_image(rt, CTX, ids[0])
    def authorizer(rule: str) -> Callable[[int], None]:
        return lambda i: access.authorize(CTX, rule, image)

    for rule in (access.GET_IMAGE, access.MODIFY_IMAGE):
        cost(f"access.authorize({rule!r}) via oslo.policy (decisions remembered)",
             authorizer(rule), n * 5)
    print(f"state kept in {tmp}")


if __name__ == "__main__":
    main()
