"""The comparison table of bench/compare_glance.py: rows, ratios, goals, Markdown.

Ratio = Glimpse / Glance for every row (so throughput goals read ">= 3x" and
latency/memory goals "<= 0.2x"). A goal is judged only when both sides ran.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTION = "## Glimpse vs Glance"

# key -> (goal text, check(ratio, value) -> bool)
GOALS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "upload_mb_s": (">= 3x", lambda r, v: r >= 3),
    "download_mb_s": (">= 1x and >= 1500", lambda r, v: r >= 1 and v >= 1500),
    "peak_rss_mib": ("<= 0.5x", lambda r, v: r <= 0.5),
}
for _op in ("list", "show", "create", "patch"):
    GOALS[f"{_op}_c4_rps"] = (">= 10x", lambda r, v: r >= 10)
    GOALS[f"{_op}_c4_p99_ms"] = ("<= 0.2x", lambda r, v: r <= 0.2)

LABELS = {"list": "GET /v2/images?limit=20", "show": "GET /v2/images/{id}",
          "create": "POST /v2/images", "patch": "PATCH /v2/images/{id}"}


def row_specs(concurrency: list[int], ops: list[str]) -> list[tuple[str, str, str | None]]:
    """(key, label, client-cpu key) in table order."""
    specs: list[tuple[str, str, str | None]] = [
        ("upload_mb_s", "upload 1 GiB, MB/s", "upload_client_cpu_pct"),
        ("upload_cpu_s_per_gib", "upload, server CPU s per GiB", None),
        ("download_mb_s", "download 1 GiB (warm), MB/s", "download_client_cpu_pct"),
        ("download_cpu_s_per_gib", "download, server CPU s per GiB", None),
    ]
    for op in ops:
        for c in concurrency:
            base = f"{op}_c{c}"
            specs.append((f"{base}_rps", f"{LABELS[op]} c={c}, req/s", f"{base}_client_cpu_pct"))
            specs.append((f"{base}_p50_ms", f"{LABELS[op]} c={c}, p50 ms", None))
            specs.append((f"{base}_p99_ms", f"{LABELS[op]} c={c}, p99 ms", None))
        mid = 4 if 4 in concurrency else concurrency[-1]
        specs.append((f"{op}_c{mid}_cpu_ms", f"{LABELS[op]} c={mid}, server CPU ms/req", None))
    specs.append(("idle_rss_mib", "RSS after start, MiB (all processes)", None))
    specs.append(("peak_rss_mib", "peak RSS, MiB (all processes)", None))
    specs.append(("peak_pss_mib", "peak PSS, MiB (all processes, shared pages once)", None))
    return specs


def table_rows(data: dict[str, Any], concurrency: list[int],
               ops: list[str]) -> list[dict[str, Any]]:
    targets = data["targets"]
    glance = targets.get("glance", {}).get("rows", {})
    rows = []
    for key, label, cpu_key in row_specs(concurrency, ops):
        values = {name: t["rows"].get(key) for name, t in targets.items()}
        ratios: dict[str, float | None] = {}
        met: dict[str, bool | None] = {}
        goal = GOALS.get(key)
        for name, value in values.items():
            if name == "glance":
                continue
            base = glance.get(key)
            ratio = value / base if value is not None and base else None
            ratios[name] = ratio
            met[name] = goal[1](ratio, value) if goal and ratio is not None else None
        cpu = [t["rows"].get(cpu_key) for t in targets.values()] if cpu_key else []
        cpu = [c for c in cpu if c is not None]
        rows.append({"key": key, "row": label, "values": values, "ratios": ratios,
                     "goal": goal[0] if goal else "", "met": met,
                     "client_cpu_pct_max": max(cpu) if cpu else None})
    return rows


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def markdown(data: dict[str, Any]) -> str:
    targets = list(data["targets"])
    glimpses = [t for t in targets if t != "glance"]
    head = ["row", *targets]
    head += [f"{g} / glance" for g in glimpses if "glance" in targets]
    head += ["goal", "met", "client CPU % (max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in data["table"]:
        cells = [row["row"], *(_num(row["values"][t]) for t in targets)]
        if "glance" in targets:
            cells += [_ratio(row["ratios"].get(g)) for g in glimpses]
        met = [f"{g.removeprefix('glimpse-')}: {'yes' if m else 'NO'}"
               for g, m in row["met"].items() if m is not None]
        cells += [row["goal"], ", ".join(met), _num(row["client_cpu_pct_max"])]
        lines.append("| " + " | ".join(cells) + " |")
    m, v = data["machine"], data["versions"]
    errors = {name: t.get("errors") for name, t in data["targets"].items() if t.get("errors")}
    failed = {name: t["failed"] for name, t in data["targets"].items() if t.get("failed")}
    out = [
        f"### {data['started']} — {data['mode']} run",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}. Versions: Glimpse {v.get('glimpse')} ({v.get('glimpse_git')}), "
        f"Glance {v.get('glance', '—')}, Python {v['python']}, uvicorn {v.get('uvicorn')}, "
        f"Starlette {v.get('starlette')}, SQLAlchemy {v.get('sqlalchemy')}, {v['wrk']}.",
        "",
        f"Settings: {data['settings']['workers']} workers each; rows of "
        f"{data['settings']['duration']:.0f} s; {data['settings']['images']} images for the "
        f"list row; transfers: median of {data['settings']['repeat']}, "
        f"{data['settings']['size'] / 2**20:.0f} MiB; X-Roles {data['settings']['roles']}"
        f"{'; niceness ' + str(data['settings']['nice']) if data['settings'].get('nice') else ''}. "
        f"Client: {data['client']}. Ratio = Glimpse / Glance.",
        "",
        *lines,
    ]
    noise = ", ".join(f"{name} {t.get('other_cpu_pct_max', 0):.0f}%"
                      for name, t in data["targets"].items())
    out += ["", f"CPU used by other processes during the measured rows (max, % of one core; "
                f"noise, not part of either server): {noise}."]
    notes = ", ".join(f"{name} {t['info']['notifications']['recorded']} recorded, "
                      f"{t['info']['notifications']['undelivered']} undelivered"
                      for name, t in data["targets"].items()
                      if t.get("info", {}).get("notifications"))
    revs = {name: t.get("info", {}).get("git") for name, t in data["targets"].items()
            if name != "glance" and t.get("info", {}).get("git")}
    if len(set(revs.values())) > 1:
        out += ["", f"The Glimpse tree changed during this run; code per server: {revs}."]
    if notes:
        out += ["", f"Notifications in Glimpse's outbox after stop: {notes}."]
    if failed:
        out += ["", f"FAILED (no numbers, or only some): {failed}"]
    if errors:
        out += ["", f"Errors (non-2xx / socket errors per row): {errors}"]
    return "\n".join(out) + "\n"


def append_section(path: Path, text: str) -> None:
    """Add ``text`` at the end of the "Glimpse vs Glance" section (created if absent);
    other sections of the file are left as they are."""
    content = path.read_text() if path.exists() else "# Benchmark results\n"
    if SECTION not in content:
        path.write_text(content.rstrip("\n") + f"\n\n{SECTION}\n\n"
                        "Produced by `.venv/bin/python bench/compare_glance.py` (issue 6).\n\n"
                        + text)
        return
    start = content.index(SECTION) + len(SECTION)
    nxt = re.search(r"^## ", content[start:], flags=re.MULTILINE)
    end = start + nxt.start() if nxt else len(content)
    before, after = content[:end].rstrip("\n"), content[end:]
    path.write_text(before + "\n\n" + text + ("\n" + after if after else ""))
