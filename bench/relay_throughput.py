"""How fast the relay drains the outbox into RabbitMQ with publisher confirms.

    .venv/bin/python bench/relay_throughput.py [--events N] [--db sqlite|postgresql|both]
                                               [--no-oslo] [--append-results]
    .venv/bin/python bench/relay_throughput.py --steady 60 --events 6000

Fills the outbox with N ``image.update`` events (a realistic ~1 KB image
payload), starts a ``Relay`` with the ``messagingv2`` driver, and times it
from start until every row is marked delivered (i.e. confirmed by the
broker). For comparison it then sends N notifications through
oslo.messaging's own ``Notifier`` (messagingv2 driver, no confirms: that is
what Glance does). Uses RabbitMQ from ``GLIMPSE_TEST_RABBIT_URL`` (default
``rabbit://guest:guest@127.0.0.1:5672/``) and, for PostgreSQL,
``GLIMPSE_TEST_PG_URL`` (``. scripts/test-services.sh`` sets both). The queue
the run fills is deleted at the end. ``--append-results`` appends the figures
to bench/RESULTS.md. ``--steady N`` measures the relay's CPU per event when it
is not draining a backlog but keeping up, N events per 0.1 s (see bench_steady).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import kombu
from sqlalchemy import func, select

from glimpse import config
from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox
from glimpse.domain.image import Image
from glimpse.notifications import payloads
from glimpse.notifications.recorder import Notifier
from glimpse.notifications.relay import Relay

RABBIT = os.environ.get("GLIMPSE_TEST_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672/")


class Measure:
    """Wall clock, this process's CPU and the broker's CPU (RabbitMQ's beam.smp,
    which also serves whatever else uses the broker meanwhile: an upper bound)."""

    def __init__(self) -> None:
        import psutil

        self._broker = [p for p in psutil.process_iter(["name"])
                        if p.info["name"] and p.info["name"].startswith("beam")]

    def _broker_cpu(self) -> float:
        total = 0.0
        for proc in self._broker:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except Exception:
                pass
        return total

    def __enter__(self) -> Measure:
        self.wall, self.cpu, self.bcpu = (time.perf_counter(), time.process_time(),
                                          self._broker_cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.bcpu = self._broker_cpu() - self.bcpu

    def row(self, count: int) -> tuple[float, float, float]:
        """(events/s, our CPU us/event, broker CPU us/event)."""
        return count / self.wall, self.cpu / count * 1e6, self.bcpu / count * 1e6


def sample_payload(i: int) -> dict[str, object]:
    now = dt.datetime(2026, 11, 26, 12, 0, 0)
    img = Image(id=str(uuid.uuid4()), owner="1" * 32, name=f"bench-image-{i}", status="active",
                disk_format="qcow2", container_format="bare", size=12345678,
                virtual_size=23456789, checksum="0" * 32, os_hash_algo="sha512",
                os_hash_value="f" * 128, min_disk=1, min_ram=512, created_at=now,
                updated_at=now, tags={"bench", "relay"},
                properties={"os_distro": "ubuntu", "os_version": "24.04", "hw_disk_bus": "virtio"})
    return payloads.image(img)


def fill(db: Database, count: int) -> None:
    notifier = Notifier(["messagingv2"], publisher_id="image.bench")
    done = 0
    while done < count:
        with db.write() as session:
            for i in range(done, min(count, done + 1000)):
                notifier.record(session, "image.update", lambda i=i: sample_payload(i))
        done = min(count, done + 1000)


def pending(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(outbox)
                                  .where(outbox.c.delivered_at.is_(None))) or 0)


def delete_queue(topic: str) -> None:
    with kombu.Connection(RABBIT.replace("rabbit://", "amqp://", 1)) as conn:
        channel = conn.channel()
        for priority in ("info", "warn", "error"):
            channel.queue_delete(f"{topic}.{priority}")


def bench_relay(db_url: str, count: int, batch_size: int) -> tuple[float, float, float]:
    db = Database(db_url)
    migrate.upgrade(db.engine)
    fill(db, count)
    topic = f"bench_{uuid.uuid4().hex[:8]}"
    conf = config.load([])
    conf.set_override("transport_url", RABBIT)
    conf.set_override("topics", [topic], group="oslo_messaging_notifications")
    conf.set_override("batch_size", batch_size, group="outbox")
    relay = Relay(conf, db, ["messagingv2"], node_id="bench")
    try:
        with Measure() as m:
            relay.start()
            worker = relay.workers[0]
            while worker.delivered < count:       # counted by the relay after its UPDATE
                time.sleep(0.005)
        assert pending(db) == 0
    finally:
        relay.stop(5)
        delete_queue(topic)
        db.dispose()
    return m.row(count)


def bench_steady(db_url: str, count: int, per_cycle: int, cycle: float = 0.1) -> float:
    """Relay CPU (us) per event in steady state: ``per_cycle`` events recorded, then
    one ``DriverWorker.step()`` (read, publish, confirm, marks when due), every
    ``cycle`` seconds, as under a steady API load (the relay's busy_interval is
    0.1 s). Only the steps are timed (``process_time``: every thread of the
    process, so the WAL checkpointer's work falls partly in)."""
    db = Database(db_url)
    migrate.upgrade(db.engine)
    notifier = Notifier(["messagingv2"], publisher_id="image.bench")
    topic = f"bench_{uuid.uuid4().hex[:8]}"
    conf = config.load([])
    conf.set_override("transport_url", RABBIT)
    conf.set_override("topics", [topic], group="oslo_messaging_notifications")
    relay = Relay(conf, db, ["messagingv2"], node_id="bench")
    worker = relay.workers[0]
    samples = [sample_payload(i) for i in range(per_cycle)]

    def record_cycle() -> None:
        for i in range(per_cycle):
            with db.write() as session:
                notifier.record(session, "image.update", lambda i=i: samples[i])

    try:
        record_cycle()
        worker.step()                               # connect, declare, lease
        worker.finish()                             # a short batch stays in flight
        worker.flush_marks()
        start = worker.delivered
        cpu, recorded = 0.0, 0
        while recorded < count:
            record_cycle()
            recorded += per_cycle
            began = time.process_time()
            worker.step()
            cpu += time.process_time() - began
            time.sleep(cycle)
        began = time.process_time()
        worker.finish()
        worker.flush_marks()
        cpu += time.process_time() - began
        delivered = worker.delivered - start
        assert delivered == recorded, (delivered, recorded)
    finally:
        worker.release_lease()
        worker.driver.close()
        delete_queue(topic)
        db.dispose()
    return cpu / delivered * 1e6


def bench_oslo(count: int) -> tuple[float, float, float]:
    import oslo_messaging
    from oslo_config import cfg

    topic = f"bench_oslo_{uuid.uuid4().hex[:8]}"
    transport = oslo_messaging.get_notification_transport(cfg.ConfigOpts(), url=RABBIT)
    notifier = oslo_messaging.Notifier(transport, publisher_id="image.bench",
                                       driver="messagingv2", topics=[topic])
    notifier.info({}, "image.update", sample_payload(0))   # connect + declare outside the clock
    payloads_ = [sample_payload(i) for i in range(count)]     # built outside the clock
    try:
        with Measure() as m:
            for payload in payloads_:
                notifier.info({}, "image.update", payload)
    finally:
        transport.cleanup()
        delete_queue(topic)
    return m.row(count)


def fmt(row: tuple[float, float, float]) -> str:
    return (f"{row[0]:8.0f} events/s   CPU {row[1]:6.0f} us/event here, "
            f"{row[2]:6.0f} us/event in the broker")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--no-oslo", action="store_true")
    parser.add_argument("--append-results", action="store_true")
    parser.add_argument("--steady", type=int, metavar="PER_CYCLE", default=0,
                        help="instead: SQLite relay CPU per event with PER_CYCLE events "
                             "recorded every 0.1 s (--events of them)")
    args = parser.parse_args()
    if args.steady:
        with tempfile.TemporaryDirectory() as tmp:
            cpu = bench_steady(f"sqlite:///{Path(tmp) / 'bench.sqlite'}", args.events,
                               args.steady)
        print(f"relay (SQLite, steady {args.steady} events / 0.1 s): CPU {cpu:6.1f} us/event")
        return 0

    rows: list[tuple[str, tuple[float, float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.db in ("sqlite", "both"):
            rate = bench_relay(f"sqlite:///{Path(tmp) / 'bench.sqlite'}", args.events,
                               args.batch_size)
            rows.append(("Glimpse relay, SQLite outbox, messagingv2, confirms", rate))
            print(f"relay (SQLite):      {fmt(rate)}")
        if args.db in ("postgresql", "both"):
            pg = os.environ.get("GLIMPSE_TEST_PG_URL")
            if not pg:
                print("GLIMPSE_TEST_PG_URL not set: run '. scripts/test-services.sh' first",
                      file=sys.stderr)
                return 2
            import psycopg

            name = f"glimpse_bench_{uuid.uuid4().hex[:8]}"
            admin = pg.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                rate = bench_relay(pg.rsplit("/", 1)[0] + "/" + name, args.events,
                                   args.batch_size)
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            rows.append(("Glimpse relay, PostgreSQL outbox, messagingv2, confirms", rate))
            print(f"relay (PostgreSQL):  {fmt(rate)}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if not args.no_oslo:
        rate = bench_oslo(args.events)
        rows.append(("oslo.messaging Notifier, messagingv2, no confirms (Glance's way)", rate))
        print(f"oslo.messaging:      {fmt(rate)}")
    if args.append_results:
        results = Path(__file__).with_name("RESULTS.md")
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"\n## Relay throughput ({when}, {args.events} events, batch "
                 f"{args.batch_size}, {os.cpu_count()} CPUs, load average "
                 f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()})",
                 "", "`.venv/bin/python bench/relay_throughput.py --events "
                 f"{args.events}`", "",
                 "| path | events/s | CPU us/event (sender) | CPU us/event (broker) |",
                 "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r[0]:,.0f} | {r[1]:,.0f} | {r[2]:,.0f} |" for name, r in rows]
        with results.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
