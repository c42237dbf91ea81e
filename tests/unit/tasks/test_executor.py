"""Executor claims, recovery and task expiry against a real SQLite database."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from glimpse import config
from glimpse.db import images_repo, tasks_repo
from glimpse.db.engine import utcnow
from glimpse.db.models import outbox, tasks
from glimpse.domain.image import IMPORTING, Image
from glimpse.domain.task import PENDING, PROCESSING, Task
from glimpse.liveness import LivenessMarks
from glimpse.runtime import Runtime, build
from glimpse.tasks.executor import INTERRUPTED, NODE_SUFFIX, Executor
from tests.mark_holder import exited_node, hold_mark


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n"
                         "[oslo_messaging_notifications]\ndriver = log\n")
    runtime = build(config.load(["--config-file", str(conf_file)]))
    yield runtime
    runtime.db.dispose()


def add_task(rt: Runtime, *, status: str = PENDING, image_id: str | None = None,
             claimed_by: str | None = None, claim_age: float = 0.0, expires_in: float | None = None,
             created_offset: float = 0.0, task_type: str = "api_image_import") -> str:
    now = utcnow() + timedelta(seconds=created_offset)
    task = Task(id=str(uuid.uuid4()), type=task_type, owner="p1", status=status,
                input={"image_id": image_id,
                       "import_req": {"method": {"name": "web-download", "uri": "http://x/"}}},
                created_at=now, updated_at=now, image_id=image_id,
                expires_at=None if expires_in is None else now + timedelta(seconds=expires_in))
    with rt.db.write() as session:
        tasks_repo.insert_task(session, task)
        if claimed_by:
            session.execute(update(tasks).where(tasks.c.id == task.id).values(
                claimed_by=claimed_by, claimed_until=utcnow() - timedelta(seconds=claim_age)))
    return task.id


def events(rt: Runtime) -> list[tuple[str, Any]]:
    with rt.db.read() as session:
        rows = session.execute(select(outbox.c.event_type, outbox.c.envelope)
                               .order_by(outbox.c.id)).all()
    return [(kind, json.loads(env)["payload"]) for kind, env in rows]


def test_only_one_of_many_concurrent_claimers_wins(rt: Runtime) -> None:
    task_id = add_task(rt)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claimer(n: int) -> None:
        barrier.wait()
        with rt.db.write() as session:
            wins.append(tasks_repo.claim(session, task_id, node=f"node-{n}",
                                         until=utcnow() + timedelta(seconds=30)))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_recovery_fails_processing_task_and_restores_image(rt: Runtime) -> None:
    now = utcnow()
    image = Image(id=str(uuid.uuid4()), owner="p1", status=IMPORTING, disk_format="raw",
                  container_format="bare", created_at=now, updated_at=now,
                  properties={"os_glance_importing_to_stores": "file"})
    with rt.db.write() as session:
        images_repo.add(session, image)
    task_id = add_task(rt, status=PROCESSING, image_id=image.id, claimed_by="dead",
                       claim_age=5)
    with rt.db.write() as session:
        img = images_repo.get(session, image.id)
        assert img is not None
        img.properties["os_glance_import_task"] = task_id
        images_repo.update(session, img)
    alive = add_task(rt, status=PROCESSING, claimed_by="alive", claim_age=-30)

    Executor(rt).recover()

    with rt.db.read() as session:
        task = tasks_repo.get(session, task_id, now=utcnow())
        img = images_repo.get(session, image.id)
        other = tasks_repo.get(session, alive, now=utcnow())
    assert task is not None and task.status == "failure" and task.message == INTERRUPTED
    assert task.expires_at is not None
    assert img is not None and img.status == "queued"
    assert img.properties["os_glance_failed_import"] == "file"
    assert "os_glance_import_task" not in img.properties
    assert other is not None and other.status == PROCESSING   # its claim is still valid
    kinds = [(k, p["status"]) for k, p in events(rt)]
    assert kinds == [("image.update", "queued"), ("task.failure", "failure")]
    assert events(rt)[-1][1]["message"] == INTERRUPTED


def test_recovery_releases_a_pending_task_to_run_again(rt: Runtime) -> None:
    task_id = add_task(rt, claimed_by="dead", claim_age=5)
    Executor(rt).recover()
    with rt.db.read() as session:
        assert tasks_repo.claimable(session, limit=10) == [task_id]
    assert events(rt) == []


def test_tasks_of_an_exited_process_are_recovered_before_their_claim_runs_out(
        rt: Runtime, tmp_path: Path) -> None:
    marks_dir = tmp_path / "processes"
    rt.liveness = LivenessMarks(marks_dir)
    exited_node(marks_dir, "host:dead")
    live = hold_mark(marks_dir, "host:live")
    try:
        claim = {"claim_age": -300}                      # 5 minutes of claim left
        dead_pending = add_task(rt, claimed_by=f"host:dead{NODE_SUFFIX}", **claim)
        dead_running = add_task(rt, status=PROCESSING, claimed_by=f"host:dead{NODE_SUFFIX}",
                                **claim)
        live_running = add_task(rt, status=PROCESSING, claimed_by=f"host:live{NODE_SUFFIX}",
                                **claim)
        elsewhere = add_task(rt, status=PROCESSING, claimed_by=f"far:away{NODE_SUFFIX}",
                             **claim)
        Executor(rt).recover()
    finally:
        live.kill()
        live.wait(30)
    with rt.db.read() as session:
        assert tasks_repo.claimable(session, limit=10) == [dead_pending]
        status = {t: tasks_repo.get(session, t, now=utcnow()).status   # type: ignore[union-attr]
                  for t in (dead_running, live_running, elsewhere)}
    assert status == {dead_running: "failure", live_running: PROCESSING,
                      elsewhere: PROCESSING}
    assert [k for k, _ in events(rt)] == ["task.failure"]


def test_expired_tasks_are_invisible_and_purged(rt: Runtime) -> None:
    gone = add_task(rt, status="success", expires_in=-1)
    kept = add_task(rt, status="success", expires_in=3600)
    now = utcnow()
    with rt.db.read() as session:
        assert tasks_repo.get(session, gone, now=now) is None
        listed = tasks_repo.list_tasks(session, now=now, owner="p1", all_owners=False)
        assert [t.id for t in listed] == [kept]
    with rt.db.write() as session:
        assert tasks_repo.purge_expired(session, now=now) == 1
    with rt.db.read() as session:
        assert tasks_repo.get(session, gone, now=now, include_expired=True) is None


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_marker_paging_over_a_nullable_sort_key(rt: Runtime, sort_dir: str) -> None:
    ids = [add_task(rt, status="success" if i % 2 else PENDING,
                    expires_in=None if i % 2 == 0 else 1000 + (i // 3) * 10,
                    created_offset=i) for i in range(9)]
    with rt.db.read() as session:
        everything = tasks_repo.list_tasks(session, now=utcnow(), owner="p1", all_owners=False,
                                           sort_key="expires_at", sort_dir=sort_dir)
        assert sorted(t.id for t in everything) == sorted(ids)
        paged: list[str] = []
        marker = None
        while True:
            page = tasks_repo.list_tasks(session, now=utcnow(), owner="p1", all_owners=False,
                                         sort_key="expires_at", sort_dir=sort_dir, limit=2,
                                         marker=marker)
            if not page:
                break
            paged += [t.id for t in page]
            marker = page[-1].id
    assert paged == [t.id for t in everything]
    nulls = [t.id for t in everything if t.expires_at is None]
    if sort_dir == "asc":
        assert [t.id for t in everything[:len(nulls)]] == nulls
    else:
        assert [t.id for t in everything[-len(nulls):]] == nulls


def test_sweep_staging_removes_only_data_no_image_needs(rt: Runtime) -> None:
    from glimpse.tasks import import_flow, staging

    area = staging.from_conf(rt.conf)
    now = utcnow()
    keep = Image(id=str(uuid.uuid4()), owner="p1", status="uploading", created_at=now,
                 updated_at=now)
    done = Image(id=str(uuid.uuid4()), owner="p1", status="active", created_at=now,
                 updated_at=now)
    with rt.db.write() as session:
        images_repo.add(session, keep)
        images_repo.add(session, done)
    orphan = str(uuid.uuid4())
    area.root.mkdir(parents=True, exist_ok=True)
    for image_id in (keep.id, done.id, orphan):
        area.path(image_id).write_bytes(b"data")
    young_part = area.root / f".{orphan}.abcd.part"
    young_part.write_bytes(b"x")
    assert import_flow.sweep_staging(rt) == 2
    assert sorted(p.name for p in area.root.iterdir()) == sorted([keep.id, young_part.name])
    assert import_flow.sweep_staging(rt, part_age=-1) == 1
    assert [p.name for p in area.root.iterdir()] == [keep.id]
