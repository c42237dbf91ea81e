"""Envelope keys, order and time formats (contract section 1)."""

from __future__ import annotations

import json
import re
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

from glimpse.notifications.envelope import (
    default_publisher_id,
    envelope_time,
    make_envelope,
    new_message_id,
    payload_time,
)

SAMPLES = Path("/work/shared/reference/glance-samples")


def test_envelope_keys_in_contract_order_like_glance() -> None:
    env = make_envelope(publisher_id="image.node1", event_type="image.create", priority="INFO",
                        payload={"a": 1}, moment=datetime(2026, 1, 2, 3, 4, 5, 60))
    assert list(env) == ["message_id", "publisher_id", "event_type", "priority", "payload",
                         "timestamp"]
    sample = json.loads((SAMPLES / "image.create.json").read_text())[0]
    assert list(env) == list(sample)
    assert str(uuid.UUID(env["message_id"])) == env["message_id"]
    assert env["message_id"] != make_envelope(
        publisher_id="p", event_type="e", priority="INFO", payload={},
        moment=datetime(2026, 1, 1))["message_id"]


def test_message_id_kept_when_given() -> None:
    env = make_envelope(publisher_id="p", event_type="e", priority="WARN", payload="text",
                        moment=datetime(2026, 1, 1), message_id="fixed")
    assert env["message_id"] == "fixed"
    assert env["payload"] == "text"


def test_time_formats() -> None:
    assert envelope_time(datetime(2026, 11, 26, 21, 55, 24)) == "2026-11-26 21:55:24.000000"
    assert envelope_time(datetime(2026, 11, 26, 21, 55, 24, 476140)) == \
        "2026-11-26 21:55:24.476140"
    assert payload_time(datetime(2026, 11, 26, 21, 55, 24, 999999)) == "2026-11-26T21:55:24Z"
    assert payload_time(None) is None
    aware = datetime(2026, 11, 26, 21, 55, 24, 5, tzinfo=UTC)     # never with a zone suffix
    assert envelope_time(aware) == "2026-11-26 21:55:24.000005"
    assert payload_time(aware) == "2026-11-26T21:55:24Z"
    sample = json.loads((SAMPLES / "image.create.json").read_text())[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", sample["timestamp"])


def test_publisher_id() -> None:
    assert default_publisher_id("image.node7") == "image.node7"
    assert default_publisher_id(None) == "image." + socket.gethostname().split(".")[0]
    assert default_publisher_id("") == "image." + socket.gethostname().split(".")[0]


def test_message_ids_are_random_version_4_uuids_in_canonical_form() -> None:
    ids = {new_message_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
