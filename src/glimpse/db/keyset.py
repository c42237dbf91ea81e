"""Keyset paging: the condition for "the rows after the marker row".

Lists page by a marker (the last row of the previous page) rather than by an
offset: a page costs the same wherever it is, and rows added or removed meanwhile
never shift the pages. The rows after the marker in a lexicographic order
``k1, k2, ...`` (all in one direction) are those with ``k1`` beyond the marker's,
or ``k1`` equal and ``k2`` beyond, and so on. Keys must be non-NULL here (or be
handled by the caller, see ``tasks_repo``); the last key must be unique (the id)
so that the order is total and no row is skipped or repeated.

The image list builds its own (``image_lists``): its keys may each have their own
direction and its values are bound parameters shared by a cached statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement


def rows_after(keys: Sequence[Any], values: Sequence[Any], *,
               descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys`` (SQL expressions,
    all ascending or all descending)."""
    clauses = []
    for i, key in enumerate(keys):
        prior = [keys[j] == values[j] for j in range(i)]
        beyond = key < values[i] if descending else key > values[i]
        clauses.append(and_(*prior, beyond))
    return or_(*clauses)
