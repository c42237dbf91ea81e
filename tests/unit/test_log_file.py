"""The log file: where it is (oslo.log's rule) and the handler the service logs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse import config
from glimpse.log_file import log_path


@pytest.mark.parametrize(("log_dir", "log_file", "expected"), [
    (None, None, None),
    (None, "/var/log/g/api.log", "/var/log/g/api.log"),
    ("/var/log/glance", None, "/var/log/glance/glimpse-api.log"),
    ("/var/log/glance", "api.log", "/var/log/glance/api.log"),
    ("/var/log/glance", "/elsewhere/api.log", "/elsewhere/api.log"),
])
def test_log_path_follows_oslo_log(tmp_path: Path, log_dir: str | None, log_file: str | None,
                                   expected: str | None) -> None:
    path = tmp_path / "glimpse-api.conf"
    path.write_text("[DEFAULT]\n" + (f"log_dir = {log_dir}\n" if log_dir else "")
                    + (f"log_file = {log_file}\n" if log_file else ""))
    assert log_path(config.load(["--config-file", str(path)])) == expected
