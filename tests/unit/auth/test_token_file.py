"""Token file: hashes only, constant-time lookup, reload on change / on request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from glimpse.auth import token_file
from glimpse.exceptions import NotFound


def test_created_token_is_stored_only_as_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, entry = token_file.create_token(path, user="alice", project="p1",
                                           roles=["Member", "reader"])
    text = path.read_text()
    assert token not in text
    assert token_file.hash_token(token) in text
    assert entry.roles == ("member", "reader")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    found = token_file.TokenFile(path).lookup(token)
    assert found is not None and (found.user, found.project) == ("alice", "p1")


def test_unknown_missing_or_empty_tokens_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token_file.create_token(path, user="alice", project="p1", roles=["member"])
    tokens = token_file.TokenFile(path)
    assert tokens.lookup("glt_wrong") is None
    assert tokens.lookup("") is None
    assert tokens.lookup(None) is None
    assert token_file.TokenFile(tmp_path / "absent.json").lookup("anything") is None


def test_revoked_token_is_refused_after_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, entry = token_file.create_token(path, user="alice", project="p1", roles=["member"])
    tokens = token_file.TokenFile(path, check_interval=0.0)
    assert tokens.lookup(token) is not None
    token_file.revoke_token(path, entry.id)
    assert tokens.lookup(token) is None


def test_request_reload_rereads_even_within_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens = token_file.TokenFile(path, check_interval=3600)
    token, _ = token_file.create_token(path, user="bob", project="p2", roles=["reader"])
    assert tokens.lookup(token) is None          # not re-read yet (interval not over)
    tokens.request_reload()                        # what SIGHUP does
    assert tokens.lookup(token) is not None


def test_revoking_an_unknown_id_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        token_file.revoke_token(tmp_path / "tokens.json", "nope")


def test_a_malformed_file_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, _ = token_file.create_token(path, user="alice", project="p1", roles=["member"])
    tokens = token_file.TokenFile(path, check_interval=0.0)
    assert tokens.lookup(token) is not None
    path.write_text("{not json")
    os.utime(path, ns=(1, 1))
    assert tokens.lookup(token) is not None


def test_yaml_and_hand_written_entries_are_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    digest = token_file.hash_token("s3cret")
    path.write_text(f"tokens:\n  - id: t1\n    sha256: {digest}\n    user: u\n"
                    f"    project: p\n    roles: admin, member\n")
    entry = token_file.TokenFile(path).lookup("s3cret")
    assert entry is not None and entry.roles == ("admin", "member")


@pytest.mark.parametrize("content", [
    '{"tokens": [{"id": "x", "user": "u", "project": "p"}]}',          # no hash
    '{"tokens": [{"id": "x", "sha256": "abc", "user": "u", "project": "p"}]}',
    '["not", "a", "mapping"]',
])
def test_malformed_entries_are_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    from glimpse.exceptions import ConfigError

    with pytest.raises(ConfigError):
        token_file.read_entries(path)


def test_list_never_shows_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token_file.create_token(path, user="alice", project="p1", roles=["member"])
    public = [e.public() for e in token_file.read_entries(path)]
    assert "sha256" not in json.dumps(public)
