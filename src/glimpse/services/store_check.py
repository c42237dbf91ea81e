"""Do the filesystem store and the image records agree? (``glimpse-manage store check``)

Data and records can part in a few rare ways, each logged when it happens: a
delete whose data removal failed, or a crash between the delete's commit and
the removal (the data is left behind: never the reverse); an upload whose end
met a database outage that outlasted its patience (the data is kept, the
record left as it was). This reads both sides and reports:

* ``orphaned``: a data file whose image is deleted or has no record. Nothing can
  refer to it again (image ids are never reused): ``--remove-orphans`` deletes it.
* ``unreferenced``: a data file named after an image that exists, is not being
  uploaded or imported, and does not point at it. Reported, never removed (an
  upload of that image may start at any moment and write that very file).
* ``missing``: an image whose record points at a file of this store that is not
  there (its data is lost: restore it from a backup of the store).
* ``size_mismatch``: a file whose size is not the image's.
* ``stalled``: the data file of an image still ``saving`` or ``importing`` an
  hour (``STALLED_AFTER``) after the file was completed. An upload's file gets
  its final name only at the end, just before the image becomes active, so the
  image's last step never happened (its process died, or the database stayed
  unavailable). The next start of the service puts such an image back to
  ``queued`` and removes the file (``image_upload.recover_interrupted_uploads``).

Other files of images being uploaded or imported, and temporary ``.part``
files, are counted as ``in_progress`` and otherwise left alone. Read-only unless
asked to remove orphans; blocks on the database (reads in batches) and on the
directory listing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from glimpse.db import images_repo
from glimpse.db.engine import Database
from glimpse.domain.image import IMPORTING, SAVING
from glimpse.services.image_upload import STALLED_AFTER
from glimpse.store.filesystem import FilesystemStore

BATCH = 500
IN_PROGRESS = (SAVING, IMPORTING)


@dataclass
class StoreReport:
    """What :func:`check` found; lists of image ids (file names), sorted."""

    files: int = 0
    in_progress: int = 0
    orphaned: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """No problem left (orphans that were removed do not count)."""
        left = set(self.orphaned) - set(self.removed)
        return not (left or self.unreferenced or self.missing or self.size_mismatch
                    or self.stalled)


def check(db: Database, store: FilesystemStore, *, remove_orphans: bool = False,
          ) -> StoreReport:
    """Compare ``store``'s files with the image records (see the module doc); with
    ``remove_orphans``, delete the orphaned files (each re-checked just before)."""
    report = StoreReport()
    sizes: dict[str, int] = {}
    ages: dict[str, float] = {}
    now = time.time()
    for file in store.data_files():
        if file.partial:
            report.in_progress += 1          # an upload's temporary file
            continue
        sizes[file.name], ages[file.name] = file.size, now - file.mtime
    report.files = len(sizes)
    names = sorted(sizes)
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        with db.read() as session:
            records = images_repo.data_records(session, batch)
        for name in batch:
            _classify(report, store, name, sizes[name], ages[name], records.get(name))
    prefix = store.datadir.as_uri() + "/"
    with db.read() as session:
        for image_id, _status, _size, location in images_repo.located_under(session, prefix):
            name = location[len(prefix):]
            if name not in sizes and store.data_file(name) is None:
                report.missing.append(image_id)
    if remove_orphans:
        for name in report.orphaned:
            with db.read() as session:
                record = images_repo.data_records(session, [name]).get(name)
            if record is None or record[1]:             # still no live image
                store.delete(store.location_for(name))
                report.removed.append(name)
    return report


def _classify(report: StoreReport, store: FilesystemStore, name: str, size: int, age: float,
              record: tuple[str, bool, int | None, str | None] | None) -> None:
    if record is None or record[1]:
        report.orphaned.append(name)
        return
    status, _, image_size, location = record
    if status in IN_PROGRESS and age > STALLED_AFTER:
        report.stalled.append(name)
    elif status in IN_PROGRESS:
        report.in_progress += 1
    elif location != store.location_for(name):
        report.unreferenced.append(name)
    elif image_size is not None and image_size != size:
        report.size_mismatch.append(name)


def render(report: StoreReport, *, as_json: bool) -> str:
    """The report as one JSON object, or as lines for a terminal."""
    lists = {"orphaned": report.orphaned, "unreferenced": report.unreferenced,
             "missing": report.missing, "size_mismatch": report.size_mismatch,
             "stalled": report.stalled, "removed": report.removed}
    if as_json:
        return json.dumps({"files": report.files, "in_progress": report.in_progress,
                           **lists, "consistent": report.consistent})
    lines = [f"data files: {report.files}; being uploaded or imported: {report.in_progress}"]
    for name, ids in lists.items():
        lines.append(f"{name}: {len(ids)}" + "".join(f"\n  {i}" for i in ids))
    lines.append("consistent" if report.consistent else "NOT consistent")
    return "\n".join(lines)
