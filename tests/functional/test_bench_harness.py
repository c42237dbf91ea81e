"""The Glimpse-vs-Glance benchmark harness (bench/compare_glance.py) runs end to end.

Only a tiny workload against Glimpse (log driver): 4 MiB transfers, 1 s request
rows at 1 and 4 clients, 20 images. No figure is asserted (speed lives in
bench/), only that every row was measured, the JSON and the Markdown table are
well formed, and a RESULTS.md keeps the sections it already had.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "bench" / "compare_glance.py"

sys.path.insert(0, str(REPO / "bench"))
import report  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tiny_run_against_glimpse_writes_json_and_table(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk must be installed (apt-get install wrk)"
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\n## Data path\n\nsomeone else's numbers\n")
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--tiny", "--only", "glimpse",
         "--glimpse-drivers", "log", "--glimpse-port", str(free_port()),
         "--workdir", str(tmp_path / "work"), "--json-dir", str(tmp_path / "json"),
         "--results-md", str(results_md)],
        cwd=REPO, capture_output=True, text=True, timeout=220, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = list((tmp_path / "json").glob("*-tiny.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["mode"] == "tiny"
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu_model"]
    assert data["versions"]["python"] and data["versions"]["wrk"] != "missing"
    assert list(data["targets"]) == ["glimpse-log"]
    target = data["targets"]["glimpse-log"]
    rows = target["rows"]
    assert target["raw"]["seeded_images"] == 20
    for key in ("upload_mb_s", "download_mb_s", "peak_rss_mib", "idle_rss_mib"):
        assert rows[key] > 0, key
    assert rows["peak_rss_mib"] >= rows["idle_rss_mib"]
    for op in ("list", "show", "create", "patch"):
        for conc in (1, 4):
            raw = target["raw"][f"{op}_c{conc}"]
            assert raw["requests"] > 0 and raw["rps"] > 0, (op, conc, raw)
            assert raw["errors"]["status"] == 0, (op, conc, raw["errors"])
            assert 0 < raw["p50_ms"] <= raw["p99_ms"], (op, conc, raw)
            assert raw["client_cpu_pct"] >= 0 and raw["server_cpu_pct"] > 0
    assert "errors" not in target

    # the table: one line per row spec, every Glimpse cell filled, no Glance column
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    specs = report.row_specs([1, 4], ["list", "show", "patch", "create"])
    assert table[0].split(" | ")[:2] == ["| row", "glimpse-log"]
    assert len(table) == 1 + len(specs)
    for line, (_, label, _) in zip(table[1:], specs, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == label
        assert re.fullmatch(r"[\d,]+(\.\d+)?", cells[1]), line

    # RESULTS.md: the other section survives, ours holds the same table
    text = results_md.read_text()
    assert "## Data path\n\nsomeone else's numbers" in text
    assert text.index("## Glimpse vs Glance") > text.index("## Data path")
    assert "— tiny run" in text and table[0] in text and table[-1] in text


def test_append_section_inserts_before_the_next_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n## Glimpse vs Glance\n\nold run\n\n## Other\n\ntheirs\n")
    report.append_section(path, "new run\n")
    assert path.read_text() == ("# R\n\n## Glimpse vs Glance\n\nold run\n\nnew run\n\n"
                                "## Other\n\ntheirs\n")


def test_ratios_and_goals_use_glimpse_over_glance() -> None:
    data = {"targets": {
        "glimpse-log": {"rows": {"upload_mb_s": 400.0, "list_c4_rps": 500.0,
                                 "list_c4_p99_ms": 5.0, "peak_rss_mib": 200.0}},
        "glance": {"rows": {"upload_mb_s": 100.0, "list_c4_rps": 100.0,
                            "list_c4_p99_ms": 50.0, "peak_rss_mib": 280.0}}}}
    rows = {r["key"]: r for r in report.table_rows(data, [4], ["list"])}
    assert rows["upload_mb_s"]["ratios"]["glimpse-log"] == 4.0
    assert rows["upload_mb_s"]["met"]["glimpse-log"] is True
    assert rows["list_c4_rps"]["met"]["glimpse-log"] is False  # 5x < 10x
    assert rows["list_c4_p99_ms"]["ratios"]["glimpse-log"] == 0.1
    assert rows["list_c4_p99_ms"]["met"]["glimpse-log"] is True
    assert rows["peak_rss_mib"]["met"]["glimpse-log"] is False  # 0.71x > 0.5x
    assert rows["download_mb_s"]["met"] == {"glimpse-log": None}  # no data: not judged
