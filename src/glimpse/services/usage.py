"""A project's resource usage, as Glance's ``GET /v2/info/usage`` reports it.

Counted like Glance's unified-limits usage (``glance/quota/keystone.py``):

- ``image_size_total``: MiB of image data in the store owned by the project
  (images with a size that are not killed/deleted/pending_delete and whose
  data is not only staged); its limit is ``[DEFAULT] user_storage_quota`` in MiB;
- ``image_stage_total``: MiB of data staged by imports (``uploading``/``importing``);
- ``image_count_total``: images of the project that are not killed/deleted/pending_delete;
- ``image_count_uploading``: images being uploaded or imported
  (``saving``/``uploading``/``importing``).

A limit of ``-1`` means unlimited (oslo.limit's convention). One read
transaction, three aggregate queries; blocks on the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, select

from glimpse.config import parse_size
from glimpse.db.engine import Database
from glimpse.db.models import images

MiB = 1024 * 1024
UNLIMITED = -1

GONE = ("killed", "deleted", "pending_delete")
STAGED = ("uploading", "importing")
UPLOADING = ("saving", "uploading", "importing")


@dataclass(frozen=True)
class Usage:
    usage: int
    limit: int


def project_usage(db: Database, project_id: str | None,
                  user_storage_quota: str = "0") -> dict[str, Usage]:
    """Usage of ``project_id`` (a project-less caller owns nothing: all zero).

    Keys are in Glance's order. Raises ConfigError only if ``user_storage_quota``
    is malformed (it is validated at start-up, so in practice never).
    """
    quota = parse_size(user_storage_quota)
    size_limit = quota // MiB if quota else UNLIMITED
    stored = staged = count = uploading = 0
    if project_id is not None:
        alive = images.c.status.not_in(GONE)
        has_size = images.c.size > 0
        query = select(
            func.coalesce(func.sum(case(
                (and_(alive, has_size, images.c.status.not_in((*STAGED, "queued"))),
                 images.c.size), else_=0)), 0),
            func.coalesce(func.sum(case(
                (and_(has_size, images.c.status.in_(STAGED)), images.c.size), else_=0)), 0),
            func.count().filter(alive),
            func.count().filter(images.c.status.in_(UPLOADING)),
        ).where(images.c.owner == project_id, images.c.deleted.is_(False))
        with db.read() as session:
            row = session.execute(query).one()
        stored, staged, count, uploading = (int(v or 0) for v in row)
    return {
        "image_size_total": Usage(stored // MiB, size_limit),
        "image_stage_total": Usage(staged // MiB, UNLIMITED),
        "image_count_total": Usage(count, UNLIMITED),
        "image_count_uploading": Usage(uploading, UNLIMITED),
    }
