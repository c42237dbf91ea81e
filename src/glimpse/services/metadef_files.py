"""Loading metadata definition files: Glimpse's ``glimpse-manage db load_metadefs``.

Glance ships its catalogue of definitions (``etc/metadefs/*.json``: CPU
pinning, watchdog, virtio devices, ...) and loads it with ``glance-manage db
load_metadefs``; Horizon's metadata editor shows them. Each file is one
namespace in the body format of ``POST /v2/metadefs/namespaces`` (with its
resource type associations, properties, objects and tags), so a file is loaded
through the same service, with the same checks, as that request: one
transaction per file, nothing half-loaded. Namespaces that already exist are
left as they are (skipped), so loading twice changes nothing. The owner of a
namespace is the file's ``owner``, else ``admin`` (as Glance's loader).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from glimpse.auth.context import RequestContext
from glimpse.exceptions import Duplicate, GlimpseError
from glimpse.runtime import Runtime

LOADER = RequestContext(project_id="admin", user_id="glimpse-manage",
                        roles=frozenset({"admin"}))


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)       # namespace names
    skipped: list[str] = field(default_factory=list)      # already there
    failed: list[tuple[str, str]] = field(default_factory=list)   # (file, why)


def load_directory(runtime: Runtime, directory: Path) -> LoadReport:
    """Load every ``*.json`` file of ``directory`` (in name order). A file that is
    not valid JSON or that the API would refuse is reported in ``failed`` and
    changes nothing; the others still load. Raises OSError when the directory
    cannot be read, and the database's errors."""
    from glimpse.api import schemas
    from glimpse.services import metadefs

    report = LoadReport()
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text("utf-8"))
            if not isinstance(body, dict):
                raise ValueError("the file is not a JSON object")
            schemas.validate_metadef("namespace", body)
            metadefs.create_namespace(runtime, LOADER, body)
        except Duplicate:
            report.skipped.append(str(body.get("namespace")))
        except (ValueError, UnicodeDecodeError) as exc:
            report.failed.append((path.name, str(exc)))
        except GlimpseError as exc:
            report.failed.append((path.name, exc.message))
        else:
            report.loaded.append(body["namespace"])
    return report
