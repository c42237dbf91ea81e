"""``auth_strategy = token-file``: API tokens kept as hashes in a local file.

File format (JSON; YAML with the same shape is read too)::

    {"tokens": [{"id": "3f9c0a1b2d4e", "sha256": "<hex sha256 of the token>",
                 "user": "alice", "project": "<project id>", "roles": ["member", "reader"],
                 "created_at": "2026-11-26T23:00:00Z", "description": ""}]}

The token itself is never stored: only ``sha256(token)``. A presented token is
hashed and compared with every entry using :func:`hmac.compare_digest` (no early
exit, so the time taken says nothing about which entry nearly matched).

:class:`TokenFile` re-reads the file when its identity (inode, size, mtime)
changes, checked at most every ``check_interval`` seconds (0.5 s), or at the
next lookup after :meth:`TokenFile.request_reload` (called on SIGHUP). A token
revoked with ``glimpse-manage token revoke`` is therefore refused within a
second. A missing file means "no tokens" (every request gets 401); an
unreadable or malformed file keeps the last good set and logs an error (a
half-written edit never opens the door nor locks everyone out).

Writers (:func:`create_token`, :func:`revoke_token`) take an exclusive
``flock`` on ``<file>.lock`` and replace the file atomically (mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from glimpse.exceptions import ConfigError, Invalid, NotFound

LOG = logging.getLogger(__name__)

TOKEN_PREFIX = "glt_"


@dataclass(frozen=True)
class TokenEntry:
    id: str
    sha256: str
    user: str
    project: str
    roles: tuple[str, ...]
    created_at: str = ""
    description: str = ""

    def public(self) -> dict[str, Any]:
        """Everything but the hash (for ``token list``)."""
        return {"id": self.id, "user": self.user, "project": self.project,
                "roles": list(self.roles), "created_at": self.created_at,
                "description": self.description}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _parse(text: str, path: Path) -> list[TokenEntry]:
    """Entries of a token file's text. Raises ConfigError when malformed."""
    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
        raise ConfigError(f"Token file {path}: expected a mapping with a 'tokens' list")
    entries: list[TokenEntry] = []
    for i, raw in enumerate(data.get("tokens", [])):
        if not isinstance(raw, dict):
            raise ConfigError(f"Token file {path}: entry {i} is not a mapping")
        try:
            digest = str(raw["sha256"]).lower()
            roles = raw.get("roles", [])
            if isinstance(roles, str):
                roles = [r for r in roles.split(",")]
            entry = TokenEntry(id=str(raw["id"]), sha256=digest, user=str(raw["user"]),
                               project=str(raw["project"]),
                               roles=tuple(str(r).strip().lower() for r in roles if str(r).strip()),
                               created_at=str(raw.get("created_at", "")),
                               description=str(raw.get("description", "")))
        except KeyError as exc:
            raise ConfigError(f"Token file {path}: entry {i} lacks {exc.args[0]!r}") from exc
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"Token file {path}: entry {entry.id!r} has a malformed sha256")
        entries.append(entry)
    return entries


def read_entries(path: Path) -> list[TokenEntry]:
    """All entries of ``path`` ([] when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return _parse(text, path)


class TokenFile:
    """Thread-safe lookup of presented tokens in a token file."""

    def __init__(self, path: str | os.PathLike[str], check_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._entries: list[TokenEntry] = []
        self._identity: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._force = True
        self._maybe_reload()

    def request_reload(self) -> None:
        """Re-read the file at the next lookup (signal-handler safe: sets a flag)."""
        self._force = True

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self._force and now < self._next_check:
            return
        with self._lock:
            if not self._force and now < self._next_check:
                return
            self._force = False
            self._next_check = now + self.check_interval
            identity = self._file_identity()
            if identity == self._identity and identity is not None:
                return
            try:
                self._entries = read_entries(self.path) if identity is not None else []
                self._identity = identity
                LOG.info("Loaded %d token(s) from %s", len(self._entries), self.path)
            except (ConfigError, OSError, yaml.YAMLError) as exc:
                LOG.error("Keeping the previous tokens: cannot read %s: %s", self.path, exc)

    def lookup(self, token: str | None) -> TokenEntry | None:
        """The entry whose hash matches ``token``, or None. Never raises."""
        self._maybe_reload()
        if not token:
            return None
        digest = hash_token(token).encode("ascii")
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256.encode("ascii")) and found is None:
                found = entry
        return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write(path: Path, entries: list[TokenEntry]) -> None:
    data = {"tokens": [{**e.public(), "sha256": e.sha256} for e in entries]}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_token(path: str | os.PathLike[str], *, user: str, project: str,
                 roles: list[str], description: str = "") -> tuple[str, TokenEntry]:
    """Add a new random token; returns ``(token, entry)``. The token is not stored."""
    roles = [r.strip().lower() for r in roles if r.strip()]
    if not user or not project:
        raise Invalid("A token needs a user and a project")
    p = Path(path)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry = TokenEntry(id=secrets.token_hex(6), sha256=hash_token(token), user=user,
                       project=project, roles=tuple(roles),
                       created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       description=description)
    with _locked(p):
        entries = read_entries(p)
        entries.append(entry)
        _write(p, entries)
    return token, entry


def revoke_token(path: str | os.PathLike[str], token_id: str) -> TokenEntry:
    """Remove the entry ``token_id``; raises NotFound when there is none."""
    p = Path(path)
    with _locked(p):
        entries = read_entries(p)
        kept = [e for e in entries if e.id != token_id]
        if len(kept) == len(entries):
            raise NotFound(f"No token with id {token_id!r} in {p}")
        _write(p, kept)
    return next(e for e in entries if e.id == token_id)
