"""``glimpse-manage token ...`` (owner: identity issue)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``token`` sub-commands."""


def run(args: argparse.Namespace, conf: Any) -> int:
    return 2
