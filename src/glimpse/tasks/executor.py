"""Placeholder: filled in by its owner."""

from typing import Any


class Executor:
    def __init__(self, runtime: Any) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...
