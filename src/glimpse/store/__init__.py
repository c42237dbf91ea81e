"""Image data stores. Placeholder: filled in by its owner."""

from typing import Any


def from_config(conf: Any) -> Any:
    return None
