"""Images, contexts and a seeded database for the tests of ``glimpse.db``."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from glimpse.auth.context import RequestContext
from glimpse.db import images_repo
from glimpse.db.engine import Database
from glimpse.domain.image import Image

T0 = datetime(2026, 1, 1, 12, 0, 0)


def make(n: int, **kw: object) -> Image:
    """Image ``n`` (its id is the UUID of the integer ``n``) of project p1, created
    ``n`` seconds after T0; ``kw`` overrides any field."""
    values: dict[str, object] = {
        "id": str(uuid.UUID(int=n)), "owner": "p1", "name": f"img{n}",
        "created_at": T0 + timedelta(seconds=n), "updated_at": T0 + timedelta(seconds=n)}
    values.update(kw)
    return Image(**values)  # type: ignore[arg-type]


def ids(images: list[Image]) -> list[int]:
    """The ``n`` of each image made by :func:`make`, in order."""
    return [uuid.UUID(i.id).int for i in images]


def ctx(project: str | None, *roles: str) -> RequestContext:
    return RequestContext(project_id=project, user_id="u", roles=frozenset(roles or ("member",)))


def seed(db: Database) -> None:
    """Images 1-7 of p1: size 10n, tag even/odd, property mod3, qcow2 below 4, raw after."""
    with db.write() as s:
        for n in range(1, 8):
            images_repo.add(s, make(n, size=n * 10, tags={"even"} if n % 2 == 0 else {"odd"},
                                    properties={"mod3": str(n % 3)},
                                    disk_format="qcow2" if n < 4 else "raw"))
