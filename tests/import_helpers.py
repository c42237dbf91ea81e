"""Helpers shared by the task/import tests: server options, polling, outbox events."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

PROJECT = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def headers(project: str = PROJECT, roles: str = "admin,member,reader",
            user: str = "user-1") -> dict[str, str]:
    return {"X-Identity-Status": "Confirmed", "X-Project-Id": project, "X-User-Id": user,
            "X-Roles": roles}


def import_options(source_port: int, **task: Any) -> dict[str, dict[str, Any]]:
    """Server options: log notifications, 127.0.0.1:<source_port> allowed for imports."""
    return {
        "oslo_messaging_notifications": {"driver": "log"},
        "import_filtering_opts": {"allowed_hosts": "127.0.0.1",
                                  "allowed_ports": str(source_port)},
        "task": {"download_timeout": 5, **task},
    }


def wait_task(client: httpx.Client, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the task ends; returns its representation."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v2/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        task: dict[str, Any] = resp.json()
        if task["status"] in ("success", "failure"):
            return task
        assert time.monotonic() < deadline, f"task still {task['status']}"
        time.sleep(0.1)


def wait_image(client: httpx.Client, image_id: str, statuses: tuple[str, ...],
               timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v2/images/{image_id}")
        assert resp.status_code == 200, resp.text
        image: dict[str, Any] = resp.json()
        if image["status"] in statuses:
            return image
        assert time.monotonic() < deadline, f"image still {image['status']}"
        time.sleep(0.1)


def outbox(state: Path) -> list[dict[str, Any]]:
    """Every envelope the server recorded (driver ``log``), in order."""
    with sqlite3.connect(state / "glimpse.sqlite") as db:
        rows = db.execute("SELECT envelope FROM outbox WHERE driver = 'log' ORDER BY id")
        return [json.loads(row[0]) for row in rows]


def events_for(state: Path, *, task_id: str | None = None,
               image_id: str | None = None) -> list[tuple[str, str, Any]]:
    """``(event_type, priority, status-or-payload)`` of one task's and one image's events."""
    found = []
    for env in outbox(state):
        payload = env["payload"]
        if isinstance(payload, dict):
            if (task_id and payload.get("task_id") == task_id) or (
                    image_id and env["event_type"].startswith("image.")
                    and payload.get("id") == image_id):
                found.append((env["event_type"], env["priority"], payload["status"]))
        elif image_id and image_id in payload:
            found.append((env["event_type"], env["priority"], payload))
    return found


def task_payloads(state: Path, task_id: str) -> list[dict[str, Any]]:
    return [env["payload"] for env in outbox(state)
            if env["event_type"].startswith("task.") and env["payload"]["id"] == task_id]
