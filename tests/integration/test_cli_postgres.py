"""glimpse-manage db sync/version and glimpse-api start-up against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from glimpse.db import migrate
from glimpse.db.engine import make_engine
from tests.conftest import ServerProcess, free_port, server_options, write_config


def _manage() -> list[str]:
    script = Path(sys.executable).parent / "glimpse-manage"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from glimpse.manage import main; "
                                  "sys.exit(main())"]


def _config(tmp_path: Path, url: str) -> Path:
    port = free_port()
    options = server_options(tmp_path, port, {"database": {"connection": url}})
    return write_config(tmp_path / "glimpse-api.conf", options)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_db_sync_then_serve(tmp_path: Path, pg_database: str) -> None:
    conf = _config(tmp_path, pg_database)
    before = _run([*_manage(), "--config-file", str(conf), "db", "version"])
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == "none"

    refused = _run([sys.executable, "-m", "glimpse.cli", "--config-file", str(conf)])
    assert refused.returncode == 2
    assert "not up to date" in refused.stderr and "db sync" in refused.stderr
    assert "Traceback" not in refused.stderr

    synced = _run([*_manage(), "--config-file", str(conf), "db", "sync"])
    assert synced.returncode == 0, synced.stderr
    engine = make_engine(pg_database)
    try:
        head = migrate.head_revision(engine)
        assert synced.stdout.strip() == head
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()
    again = _run([*_manage(), "--config-file", str(conf), "db", "sync"])   # idempotent
    assert again.returncode == 0 and again.stdout.strip() == head

    port = int(conf.read_text().split("bind_port = ")[1].split()[0])
    server = ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=tmp_path,
                           config_file=conf, log=tmp_path / "glimpse.log")
    try:
        server.start()
        with server.client(**{"X-Project-Id": "c" * 32, "X-Roles": "member"}) as c:
            r = c.get("/v2/info/usage")
        assert r.status_code == 200
        assert r.json()["usage"]["image_count_total"] == {"usage": 0, "limit": -1}
    finally:
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    conf = _config(tmp_path, url)
    api = _run([sys.executable, "-m", "glimpse.cli", "--config-file", str(conf)])
    assert api.returncode == 1
    assert "cannot use the database [database] connection" in api.stderr
    assert "Traceback" not in api.stderr
    manage = _run([*_manage(), "--config-file", str(conf), "db", "sync"])
    assert manage.returncode == 1
    assert "cannot use the database" in manage.stderr


def test_db_sync_from_several_nodes_at_once(tmp_path: Path, pg_database: str) -> None:
    """Deployment tools may run db sync on every node at the same time: they take
    turns (here all four wait while the test holds the migrations' lock), and the
    later ones find the schema at head. Without the turns, concurrent syncs failed
    on duplicate tables."""
    import psycopg

    conf = _config(tmp_path, pg_database)
    with psycopg.connect(pg_database.replace("postgresql+psycopg", "postgresql")) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrate.MIGRATION_LOCK,))
        runs = [subprocess.Popen([*_manage(), "--config-file", str(conf), "db", "sync"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
        time.sleep(3)
        assert [run.poll() for run in runs] == [None] * 4, "they wait for their turn"
    # the holder's transaction ended: the lock is free
    results = [(run.wait(120), *run.communicate()) for run in runs]
    engine = make_engine(pg_database)
    try:
        head = migrate.head_revision(engine)
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()
    for status, out, err in results:
        assert status == 0, err
        assert out.strip() == head
