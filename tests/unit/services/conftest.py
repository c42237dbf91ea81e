"""``rt``: a Runtime on a SQLite file and a filesystem store in the test's directory,
notifications recorded for the ``log`` driver, Glance's default policies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from glimpse import config
from glimpse.auth import policy, property_protection
from glimpse.runtime import Runtime, build


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nlog_file = {tmp_path}/g.log\n"
                         "[oslo_messaging_notifications]\ndriver = log\n")
    conf = config.load(["--config-file", str(conf_file)])
    policy.install(conf)
    property_protection.install(conf)
    runtime = build(conf)
    yield runtime
    runtime.db.dispose()
