"""Start-up checks of the auth configuration (owner: identity issue)."""

from __future__ import annotations

from typing import Any


def check_startup(conf: Any) -> None:
    """Raise ConfigError when the auth settings are unsafe or incomplete."""
