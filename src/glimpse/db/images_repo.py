"""Image and member repository: the only module that writes image rows.

Every function takes the caller's ``Connection`` in a transaction (from
``Database.write()`` or, for the read functions, ``Database.read()``) and never
commits: the caller's transaction decides.
Functions return and accept domain objects (:class:`glimpse.domain.image.Image`,
:class:`glimpse.domain.member.Member`); tags and properties are loaded with the
image. Visibility is *not* checked here: ``glimpse.services.access`` does that.
Lists of images are :mod:`glimpse.db.image_lists`, which reads rows with
:func:`images_of` and their children with :func:`load_children`.

The reads (``get``, ``exists_any``, the pages of ``image_lists`` and the
children of images) and the writes of ``add``/``update`` are SQLAlchemy
statements built once. On SQLite they run as their
compiled text straight on the sqlite3 connection of the caller's transaction,
with SQLAlchemy's own bind and result converters (:mod:`glimpse.db.sqlite_direct`): the
execution machinery around these sub-0.1 ms queries cost ~10x the queries.
Other databases run them through SQLAlchemy.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    Select,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from glimpse.db import models, sqlite_direct
from glimpse.domain.image import DELETED, KILLED, Image
from glimpse.domain.member import Member
from glimpse.exceptions import Duplicate, NotFound

_images = models.images
_props = models.image_properties
_tags = models.image_tags
_members = models.image_members

# Columns copied between the ``images`` table and Image one to one.
COLUMNS: Final = (
    "id", "name", "status", "visibility", "owner", "disk_format", "container_format",
    "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "min_disk",
    "min_ram", "protected", "os_hidden", "location", "created_at", "updated_at", "deleted_at",
)

# -- images -------------------------------------------------------------------------------

def _is_postgres(session: Connection) -> bool:
    return session.dialect.name == "postgresql"


# Statements built once (their SQL is compiled once per dialect and cached):
# building SQLAlchemy expressions costs more than running these small queries.
IMAGE_COLUMNS = [_images.c[name] for name in COLUMNS]
_GET = select(*IMAGE_COLUMNS).where(_images.c.id == bindparam("id"))
GET_LIVE = _GET.where(_images.c.deleted == false())
_EXISTS = select(literal(1)).where(_images.c.id == bindparam("id"))
_INSERT_IMAGE = insert(_images)
_INSERT_TAG = insert(_tags)
_INSERT_PROP = insert(_props)
# SET columns come from the parameters' keys; the row is named by ``image_key``.
_UPDATE_IMAGE = sql_update(_images).where(_images.c.id == bindparam("image_key"))
_UPDATE_PROP = sql_update(_props).where(_props.c.image_id == bindparam("image_key"),
                                        _props.c.name == bindparam("prop_key"))
# Children (tags UNION ALL properties) of at most CHILDREN_CHUNK images at once.
CHILDREN_CHUNK: Final = 500


def _children_of(count: int) -> Select[Any]:
    """``(image_id, name, value, is_tag)`` of the tags (``value`` NULL, ``is_tag`` 1)
    and properties (``is_tag`` 0; ``value`` may be NULL too) of ``count`` images
    bound as ``i0``, ``i1``, ..."""
    def match(column: Any) -> ColumnElement[bool]:
        if count == 1:
            return cast(ColumnElement[bool], column == bindparam("i0"))
        return cast(ColumnElement[bool],
                    column.in_([bindparam(f"i{k}") for k in range(count)]))

    return cast(Select[Any], union_all(
        select(_tags.c.image_id, _tags.c.value.label("name"), null().label("value"),
               literal_column("1").label("is_tag"))
        .where(match(_tags.c.image_id)),
        select(_props.c.image_id, _props.c.name, _props.c.value,
               literal_column("0").label("is_tag"))
        .where(match(_props.c.image_id))))


_CHILDREN: dict[int, Select[Any]] = {}


def _children_statement(count: int) -> Select[Any]:
    stmt = _CHILDREN.get(count)
    if stmt is None:
        stmt = _CHILDREN.setdefault(count, _children_of(count))
    return stmt


def _result_converters() -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    found = []
    for i, column in enumerate(IMAGE_COLUMNS):
        dialect = sqlite_direct.SQLITE
        convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if convert is not None:
            found.append((i, convert))
    return tuple(found)


# SQLite: (position, converter) of the image columns SQLAlchemy converts (times, booleans).
_SQLITE_RESULT_CONVERTERS: Final = _result_converters()


def images_of(session: Connection, stmt: Any, params: dict[str, Any]) -> list[Image]:
    """Images (without tags and properties) from a SELECT of ``IMAGE_COLUMNS``,
    possibly followed by more columns (a list's sort keys), which are ignored."""
    raw = sqlite_direct.sqlite_connection(session)
    prepared = sqlite_direct.cached(stmt) if raw is not None else None
    if raw is None or prepared is None:
        return [_row_to_image(row[:_WIDTH]) for row in session.execute(stmt, params)]
    images = []
    values = prepared.values(params)
    with sqlite_direct.as_sqlalchemy_errors(prepared.sql, values):
        rows = raw.execute(prepared.sql, values).fetchall()
    for row in rows:
        values = list(row[:_WIDTH])
        for i, convert in _SQLITE_RESULT_CONVERTERS:
            if values[i] is not None:
                values[i] = convert(values[i])
        images.append(_row_to_image(values))
    return images


_WIDTH: Final = len(COLUMNS)


def _row_to_image(row: Any) -> Image:
    """``row`` holds the columns of ``COLUMNS`` in that order."""
    return Image(**dict(zip(COLUMNS, row, strict=True)))


def _image_values(image: Image) -> dict[str, Any]:
    values = {name: getattr(image, name) for name in COLUMNS}
    values["deleted"] = image.status == DELETED
    return values


def load_children(session: Connection, images: Sequence[Image]) -> None:
    """Fill ``tags`` and ``properties`` of ``images``: one query (tags UNION ALL
    properties) per CHILDREN_CHUNK images."""
    if not images:
        return
    by_id = {img.id: img for img in images}
    ids = list(by_id)
    tags: dict[str, set[str]] = defaultdict(set)
    props: dict[str, dict[str, str | None]] = defaultdict(dict)
    for start in range(0, len(ids), CHILDREN_CHUNK):
        chunk = ids[start:start + CHILDREN_CHUNK]
        params = {f"i{k}": image_id for k, image_id in enumerate(chunk)}
        statement = _children_statement(len(chunk))
        for image_id, name, value, is_tag in sqlite_direct.rows(session, statement, params):
            if is_tag:
                tags[image_id].add(name)
            else:
                props[image_id][name] = value
    for image_id, img in by_id.items():
        img.tags = tags.get(image_id, set())
        img.properties = props.get(image_id, {})


def get(session: Connection, image_id: str, *, for_update: bool = False,
        include_deleted: bool = False) -> Image | None:
    """The image with tags and properties, or None (also None when deleted, unless
    ``include_deleted``). ``for_update`` locks the row until the transaction ends
    (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions already
    hold the database lock)."""
    stmt = _GET if include_deleted else GET_LIVE
    if for_update and _is_postgres(session):
        stmt = _GET_FOR_UPDATE if include_deleted else _GET_LIVE_FOR_UPDATE
    found = images_of(session, stmt, {"id": image_id})
    if not found:
        return None
    image = found[0]
    load_children(session, [image])
    return image


_GET_FOR_UPDATE = _GET.with_for_update()
_GET_LIVE_FOR_UPDATE = GET_LIVE.with_for_update()


def exists_any(session: Connection, image_id: str) -> bool:
    """True when a row with this id exists, deleted or not (ids are never reused)."""
    return bool(sqlite_direct.rows(session, _EXISTS, {"id": image_id}))


def data_records(session: Connection, ids: Sequence[str],
                 ) -> dict[str, tuple[str, bool, int | None, str | None]]:
    """``id -> (status, deleted, size, location)`` of the images with these ids,
    deleted ones too (the store check: whose data is a file)."""
    c = _images.c
    rows = session.execute(select(c.id, c.status, c.deleted, c.size, c.location)
                           .where(c.id.in_(list(ids))))
    return {row[0]: (row[1], bool(row[2]), row[3], row[4]) for row in rows}


def ids_with_status(session: Connection, status: str) -> list[str]:
    """Ids of the non-deleted images in ``status``."""
    c = _images.c
    rows = session.execute(select(c.id).where(c.deleted == false(), c.status == status))
    return [row[0] for row in rows]


def located_under(session: Connection, prefix: str,
                  ) -> Iterable[tuple[str, str, int | None, str]]:
    """``(id, status, size, location)`` of the non-deleted images whose data location
    starts with ``prefix``, in id order, streamed."""
    c = _images.c
    stmt = (select(c.id, c.status, c.size, c.location)
            .where(c.deleted == false(), c.location.startswith(prefix, autoescape=True))
            .order_by(c.id).execution_options(yield_per=1000))
    for row in session.execute(stmt):
        yield row[0], row[1], row[2], row[3]


def add(session: Connection, image: Image) -> None:
    """Insert ``image`` with its tags and properties. An id that exists or existed
    (image rows are never deleted) raises Duplicate (409): the primary key turns
    it away in the same statement. Only the image row's refusal means that;
    any other statement's error propagates as it is."""
    try:
        sqlite_direct.execute(session, _INSERT_IMAGE, _image_values(image))
    except IntegrityError:
        raise Duplicate(f"Image ID {image.id} already exists!") from None
    if image.tags:
        sqlite_direct.execute(session, _INSERT_TAG, [{"image_id": image.id, "value": t}
                                        for t in sorted(image.tags)])
    if image.properties:
        sqlite_direct.execute(session, _INSERT_PROP, [{"image_id": image.id, "name": k, "value": v}
                                         for k, v in sorted(image.properties.items())])


def update(session: Connection, image: Image, *, before: Image | None = None) -> None:
    """Write every column of ``image`` and make its stored tags and properties
    equal to ``image.tags`` / ``image.properties`` (only the differences are written).

    ``before`` is the image as loaded in this transaction (under ``for_update``);
    given, the differences are computed against it instead of re-reading the rows.
    """
    values = _image_values(image)
    values["image_key"] = values.pop("id")
    if sqlite_direct.execute(session, _UPDATE_IMAGE, values) == 0:
        raise NotFound(f"No image found with ID {image.id}")
    if before is not None:
        old_tags, old_props = set(before.tags), dict(before.properties)
    else:
        old_tags = set(session.scalars(select(_tags.c.value)
                                       .where(_tags.c.image_id == image.id)))
        old_props = {name: value for name, value in session.execute(
            select(_props.c.name, _props.c.value).where(_props.c.image_id == image.id))}
    gone_tags = old_tags - image.tags
    new_tags = image.tags - old_tags
    if gone_tags:
        session.execute(delete(_tags).where(_tags.c.image_id == image.id,
                                            _tags.c.value.in_(gone_tags)))
    if new_tags:
        sqlite_direct.execute(session, _INSERT_TAG, [{"image_id": image.id, "value": t}
                                        for t in sorted(new_tags)])
    gone = set(old_props) - set(image.properties)
    if gone:
        session.execute(delete(_props).where(_props.c.image_id == image.id,
                                             _props.c.name.in_(gone)))
    added = [{"image_id": image.id, "name": k, "value": v}
             for k, v in sorted(image.properties.items()) if k not in old_props]
    if added:
        sqlite_direct.execute(session, _INSERT_PROP, added)
    for name, value in sorted(image.properties.items()):
        if name in old_props and old_props[name] != value:
            sqlite_direct.execute(session, _UPDATE_PROP,
                     {"image_key": image.id, "prop_key": name, "value": value})


def lock_usage(session: Connection, project_id: str) -> None:
    """Serialize, until ``session``'s transaction ends, the writers that check and
    then add to ``project_id``'s stored bytes (blocks while another holds it).

    PostgreSQL: a transaction-level advisory lock keyed by the project (a 64-bit
    BLAKE2b of its id); under READ COMMITTED the next holder's :func:`usage` then
    sees what the previous one committed. SQLite: nothing to take, the write
    transaction (``BEGIN IMMEDIATE``) already excludes every other writer.
    """
    if session.dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(f"glimpse-usage:{project_id}".encode(), digest_size=8).digest()
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": int.from_bytes(digest, "big", signed=True)})


def usage(session: Connection, project_id: str, *, exclude_image_id: str | None = None) -> int:
    """Bytes of image data the project's non-deleted images hold (``user_storage_quota``)."""
    stmt = select(func.coalesce(func.sum(_images.c.size), 0)).where(
        _images.c.owner == project_id, _images.c.deleted == false(),
        _images.c.status != KILLED)
    if exclude_image_id is not None:
        stmt = stmt.where(_images.c.id != exclude_image_id)
    return int(session.scalar(stmt) or 0)


# -- members ------------------------------------------------------------------------------

def _row_to_member(row: Any) -> Member:
    return Member(image_id=row.image_id, member_id=row.member, status=row.status,
                  created_at=row.created_at, updated_at=row.updated_at)


def get_member(session: Connection, image_id: str, member_id: str) -> Member | None:
    row = session.execute(select(_members).where(
        _members.c.image_id == image_id, _members.c.member == member_id)).first()
    return None if row is None else _row_to_member(row)


def list_members(session: Connection, image_id: str) -> list[Member]:
    """Members of the image, oldest first."""
    rows = session.execute(select(_members).where(_members.c.image_id == image_id)
                           .order_by(_members.c.created_at, _members.c.member))
    return [_row_to_member(row) for row in rows]


def count_members(session: Connection, image_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(_members)
                              .where(_members.c.image_id == image_id)) or 0)


def add_member(session: Connection, member: Member) -> None:
    """Insert; a duplicate (image, member) raises IntegrityError (check ``get_member``)."""
    session.execute(insert(_members).values(
        image_id=member.image_id, member=member.member_id, status=member.status,
        created_at=member.created_at, updated_at=member.updated_at))


def update_member(session: Connection, member: Member) -> None:
    session.execute(sql_update(_members).where(
        _members.c.image_id == member.image_id, _members.c.member == member.member_id)
        .values(status=member.status, updated_at=member.updated_at))


def delete_member(session: Connection, image_id: str, member_id: str) -> None:
    session.execute(delete(_members).where(_members.c.image_id == image_id,
                                           _members.c.member == member_id))


def member_status_of(session: Connection, image_ids: Iterable[str],
                     project_id: str) -> dict[str, str]:
    """``{image_id: status}`` of ``project_id``'s memberships among ``image_ids``."""
    ids = list(image_ids)
    if not ids:
        return {}
    return {image_id: status for image_id, status in session.execute(
        select(_members.c.image_id, _members.c.status).where(
            _members.c.image_id.in_(ids), _members.c.member == project_id))}


def soft_delete(session: Connection, image: Image, *, when: datetime) -> None:
    """Mark ``image`` deleted (status ``deleted``, ``deleted_at``); the row stays so the
    id is never reused. Members, tags and properties stay for the record."""
    image.status = DELETED
    image.deleted_at = when
    image.updated_at = when
    session.execute(sql_update(_images).where(_images.c.id == image.id).values(
        status=DELETED, deleted=True, deleted_at=when, updated_at=when))
