"""Liveness marks against real processes: a mark is unlocked exactly when its
process has exited."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from glimpse.liveness import LivenessMarks, mark_name
from tests.mark_holder import exited_node, hold_mark


def test_a_live_process_is_not_gone_and_a_killed_one_is(tmp_path: Path) -> None:
    marks = LivenessMarks(tmp_path)
    proc = hold_mark(tmp_path, "host:live")
    try:
        assert not marks.gone("host:live")
        assert not marks.gone("host:live")          # asking does not take the lock
    finally:
        proc.kill()                                  # SIGKILL: no clean-up at all
        proc.wait(30)
    assert marks.gone("host:live")
    assert marks.gone("host:live")                  # asked again (another driver's lease)


def test_unknown_nodes_and_this_process_are_not_gone(tmp_path: Path) -> None:
    marks = LivenessMarks(tmp_path)
    assert marks.hold("host:me")
    assert not marks.gone("host:me")
    assert not marks.gone("other-host:abc")         # no mark here: another machine
    assert not LivenessMarks(tmp_path / "missing").gone("host:me")
    marks.release()
    assert not (tmp_path / mark_name("host:me")).exists()
    assert not marks.gone("host:me")                 # a clean stop leaves nothing to take


def test_the_mark_of_this_process_is_locked_for_others(tmp_path: Path) -> None:
    marks = LivenessMarks(tmp_path)
    assert marks.hold("host:me")
    try:
        assert not LivenessMarks(tmp_path).gone("host:me")   # another open file: locked
    finally:
        marks.release()


def test_mark_names_keep_only_safe_characters() -> None:
    assert mark_name("web-1.example.org:0a1b2c3d") == "web-1.example.org_0a1b2c3d.alive"
    assert mark_name("../../etc/x y") == ".._.._etc_x_y.alive"
    assert "/" not in mark_name("a/b")


def test_sweep_removes_a_dead_mark_at_its_second_sighting_only(tmp_path: Path) -> None:
    marks = LivenessMarks(tmp_path)
    assert marks.hold("host:me")
    exited_node(tmp_path, "host:dead")
    proc = hold_mark(tmp_path, "host:live")
    try:
        assert marks.sweep() == 0                    # first sighting: still needed
        assert marks.gone("host:dead")
        assert marks.sweep() == 1
        assert not marks.gone("host:dead")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [mark_name("host:live"), mark_name("host:me")]
    finally:
        proc.kill()
        proc.wait(30)
        marks.release()


def test_sweep_removes_abandoned_temporary_marks(tmp_path: Path) -> None:
    marks = LivenessMarks(tmp_path)
    old, fresh = tmp_path / ".x.alive.1.tmp", tmp_path / ".y.alive.2.tmp"
    old.write_text("1\n")
    fresh.write_text("2\n")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert marks.sweep() == 1
    assert not old.exists() and fresh.exists()


def test_an_unusable_directory_is_logged_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "processes"
    blocker.write_text("a file where the directory should be")
    marks = LivenessMarks(blocker)
    with caplog.at_level(logging.WARNING, logger="glimpse.liveness"):
        assert not marks.hold("host:me")
    assert "No liveness mark" in caplog.text
    assert not marks.gone("host:other")
    marks.release()                                   # nothing held: nothing to do
    assert blocker.read_text().startswith("a file")
