"""Project isolation, cell by cell: callers x images x endpoints (data: isolation_matrix.yaml).

Each cell's expectation comes from :func:`expected_item`, :func:`expected_list`
and :func:`expected_global`: small pure functions that state Glance's rules
(secure-RBAC defaults) — never from observed output:

- an image the caller may not see is 404, never 403 (admins see all; owners
  their own; everyone public and community images; members of a shared image
  — whatever their member status — that image); a caller with no role at all
  sees nothing (``get_image`` needs ``reader``), and may not list (403);
- readers read but never write, and download needs ``member`` (Glance);
- writes (PATCH, tags, deactivate/reactivate, delete, upload, add/remove
  members) need ``member`` on the owning project, or ``admin``; only admins
  publicize; a protected image cannot be deleted, not even by an admin; a
  deactivated image's data is for admins only;
- members exist only on shared images (other visibilities: 403, or 404 when
  showing one); the owner manages the member list; only the member itself
  (or an admin) changes its status;
- lists: own images, public ones, community ones only when asked
  (``visibility=community|all``), others' shared images only through an
  accepted membership, or the ``member_status`` asked; ``os_hidden`` images
  only with ``os_hidden=true``; admins list everything (others' community
  images, too, only when asked).

Checked against the reference Glance 33 (``main`` below, trusted headers): the
rules agree on every cell except 54 where a caller with *no role at all* gets
403 from Glance instead of 404 (deactivated download, publicize, member calls
on non-shared images: Glance checks those before visibility). Glimpse keeps
404 there: a caller that may not see an image learns nothing about it.

The matrix runs through noauth headers against one real server (a second one
for the list cells, so that images created by item cells never enter a list).
``python tests/functional/test_isolation_matrix.py URL [--glance]`` runs the
whole matrix against any server (``--glance`` adds Glance's trusted-auth
header), e.g. the reference Glance on 127.0.0.1:9292, and prints the cells
that differ.
"""

from __future__ import annotations

import itertools
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

DATA: dict[str, Any] = yaml.safe_load(
    (Path(__file__).with_name("isolation_matrix.yaml")).read_text())
ROLE_SETS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in DATA["roles"].items()}
IMAGES: dict[str, dict[str, Any]] = DATA["images"]
LIST_IMAGES: dict[str, dict[str, Any]] = {**IMAGES, **DATA["list_only_images"]}
ENDPOINTS: dict[str, dict[str, Any]] = DATA["endpoints"]
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
OTHER_STATUS = {"pending": "accepted", "accepted": "rejected", "rejected": "accepted"}


# --------------------------------------------------------------------------- the rules
def _powers(roles: frozenset[str]) -> tuple[bool, bool, bool]:
    admin = "admin" in roles
    return admin, admin or "member" in roles, admin or "reader" in roles


def expected_item(relation: str, roles: frozenset[str], image: dict[str, Any],
                  endpoint: str) -> int:
    """Status of ``endpoint`` on ``image`` for a caller of ``relation`` with ``roles``."""
    admin, member_role, reader_role = _powers(roles)
    visibility = image["visibility"]
    owner = relation == "owner"
    image_member = relation == "member" and visibility == "shared"
    visible = admin or owner or visibility in ("public", "community") or image_member
    if not (visible and reader_role):
        return 404
    owner_write = admin or (member_role and owner)
    if endpoint == "show":
        return 200
    if endpoint == "download":
        return 200 if member_role else 403
    if endpoint == "download-deactivated":
        return 200 if admin else 403
    if endpoint == "patch":
        return 200 if owner_write else 403
    if endpoint == "publicize":
        return 200 if admin else 403
    if endpoint in ("tag-add", "tag-delete", "deactivate", "reactivate", "delete", "upload"):
        return 204 if owner_write else 403
    if endpoint == "delete-protected":
        return 403
    if endpoint == "member-show":
        # Forbidden turns into 404 here (Glance hides memberships).
        return 200 if visibility == "shared" and (admin or owner or image_member) else 404
    if visibility != "shared":
        return 403  # "Only shared images have members."
    if endpoint == "members-list":
        return 200
    if endpoint == "member-add":
        return 200 if owner_write else 403
    if endpoint == "member-update":
        return 200 if admin or (member_role and image_member) else 403
    if endpoint == "member-delete":
        return 204 if owner_write else 403
    raise KeyError(endpoint)


def expected_list(relation: str, roles: frozenset[str], images: dict[str, dict[str, Any]],
                  filters: dict[str, str]) -> tuple[int, frozenset[str]]:
    """Status and names of the ``images`` that GET /v2/images?``filters`` returns."""
    admin, _member_role, reader_role = _powers(roles)
    if not reader_role:
        return 403, frozenset()
    wanted_visibility = filters.get("visibility")
    member_status = filters.get("member_status", "accepted")
    hidden = filters.get("os_hidden") == "true"
    names = set()
    for name, image in images.items():
        visibility = image["visibility"]
        if bool(image.get("os_hidden", False)) != hidden:
            continue
        if wanted_visibility not in (None, "all") and visibility != wanted_visibility:
            continue
        if _listed(admin, relation, image, wanted_visibility, member_status):
            names.add(name)
    return 200, frozenset(names)


def _listed(admin: bool, relation: str, image: dict[str, Any], wanted_visibility: str | None,
            member_status: str) -> bool:
    visibility = image["visibility"]
    if visibility == "community":  # others' community images only when asked, even for admins
        return relation == "owner" or wanted_visibility in ("community", "all")
    if admin or relation == "owner" or visibility == "public":
        return True
    return (visibility == "shared" and relation == "member"
            and member_status in ("all", image["member_status"]))


def expected_global(relation: str, roles: frozenset[str], endpoint: str) -> int:
    admin, _, _ = _powers(roles)
    if endpoint == "tasks-list":
        return 200 if admin else 403  # tasks_api_access: role:admin
    raise KeyError(endpoint)


# --------------------------------------------------------------------------- the cells
@dataclass(frozen=True)
class Cell:
    kind: str            # item | list | global
    relation: str
    role: str
    target: str          # image variant (item) or filter name (list) or "-"
    endpoint: str

    @property
    def id(self) -> str:
        return f"{self.endpoint}:{self.target}:{self.relation}-{self.role}"


def item_cells() -> list[Cell]:
    return [Cell("item", p, r, img, ep) for ep, img, p, r in itertools.product(
        ENDPOINTS, IMAGES, DATA["projects"], ROLE_SETS)]


def list_cells() -> list[Cell]:
    return [Cell("list", p, r, f, "list") for f, p, r in itertools.product(
        DATA["list_filters"], DATA["projects"], ROLE_SETS)]


def global_cells() -> list[Cell]:
    return [Cell("global", p, r, "-", ep) for ep, p, r in itertools.product(
        DATA["global_endpoints"], DATA["projects"], ROLE_SETS)]


# --------------------------------------------------------------------------- running
@dataclass
class MatrixEnv:
    """A server plus the matrix's projects and images (owned by ``owner``)."""

    client: httpx.Client
    extra_headers: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)       # variant -> id
    targets: dict[tuple[str, str], str] = field(default_factory=dict)
    ignore_foreign: bool = False  # shared servers (the reference Glance) hold other images

    def __post_init__(self) -> None:
        self.projects = {p: uuid.uuid4().hex for p in DATA["projects"]}

    def headers(self, relation: str, role: str) -> dict[str, str]:
        project = self.projects[relation]
        return {**self.extra_headers, "X-Project-Id": project,
                "X-User-Id": f"user-{role}-{project[:8]}",
                "X-Roles": ",".join(sorted(ROLE_SETS[role]))}

    def call(self, relation: str, role: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers(relation, role), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def _ok(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code >= 300:
            raise AssertionError(f"matrix set-up failed: {what}: {response.status_code} "
                                 f"{response.text[:300]}")
        return response

    def make_image(self, variant: str, state: str = "active",
                   spec: dict[str, Any] | None = None) -> str:
        """Create an image of ``variant`` owned by ``owner`` in ``state``."""
        spec = spec or LIST_IMAGES[variant]
        body: dict[str, Any] = {"name": f"matrix-{variant}-{state}", "disk_format": "raw",
                                "container_format": "bare", "visibility": spec["visibility"],
                                "tags": ["matrix-keep"]}
        if spec.get("os_hidden"):
            body["os_hidden"] = True
        if state == "protected":
            body["protected"] = True
        image = self._ok(self.call("owner", "admin", "POST", "/v2/images", json=body),
                         f"create {variant}").json()
        image_id = str(image["id"])
        if state != "queued":
            self._ok(self.call("owner", "member", "PUT", f"/v2/images/{image_id}/file",
                               content=b"matrix image data",
                               headers={"Content-Type": "application/octet-stream"}),
                     f"upload {variant}")
        if spec["visibility"] == "shared":
            self._ok(self.call("owner", "member", "POST", f"/v2/images/{image_id}/members",
                               json={"member": self.projects["member"]}), "add member")
            if spec["member_status"] != "pending":
                self._ok(self.call("member", "member", "PUT",
                                   f"/v2/images/{image_id}/members/{self.projects['member']}",
                                   json={"status": spec["member_status"]}), "member status")
        if state == "deactivated":
            self._ok(self.call("owner", "member", "POST",
                               f"/v2/images/{image_id}/actions/deactivate"), "deactivate")
        return image_id

    def target(self, variant: str, state: str) -> str:
        key = (variant, state)
        if key not in self.targets:
            self.targets[key] = self.make_image(variant, state)
        return self.targets[key]

    def run_item(self, cell: Cell) -> tuple[int, int, str]:
        """(expected, actual, body excerpt) of an item cell."""
        spec = ENDPOINTS[cell.endpoint]
        image = IMAGES[cell.target]
        roles = ROLE_SETS[cell.role]
        expected = expected_item(cell.relation, roles, image, cell.endpoint)
        state = spec.get("state", "active")
        if spec.get("mutates") and expected < 300:
            image_id = self.make_image(cell.target, state)  # its own copy
        else:
            image_id = self.target(cell.target, state)
        values = {"id": image_id, "member": self.projects["member"], "tag": "matrix-keep",
                  "new_member": uuid.uuid4().hex,
                  "other_status": OTHER_STATUS[image.get("member_status", "pending")]}
        path = spec["path"].format(**values)
        kw: dict[str, Any] = {}
        if "json" in spec:
            body = _format(spec["json"], values)
            if spec["method"] == "PATCH":
                kw["content"] = json.dumps(body).encode()
                kw["headers"] = {"Content-Type": PATCH_TYPE}
            else:
                kw["json"] = body
        if "data" in spec:
            kw["content"] = str(spec["data"]).encode()
            kw["headers"] = {"Content-Type": "application/octet-stream"}
        response = self.call(cell.relation, cell.role, spec["method"], path, **kw)
        return expected, response.status_code, response.text[:200]

    def run_list(self, cell: Cell) -> tuple[tuple[int, frozenset[str]], tuple[int, frozenset[str]]]:
        filters = DATA["list_filters"][cell.target]
        expected = expected_list(cell.relation, ROLE_SETS[cell.role], LIST_IMAGES, filters)
        response = self.call(cell.relation, cell.role, "GET", "/v2/images",
                             params={**filters, "limit": 1000})
        names: frozenset[str] = frozenset()
        if response.status_code == 200:
            by_id = {v: k for k, v in self.images.items()}
            names = frozenset(by_id.get(i["id"], f"foreign:{i['id']}")
                              for i in response.json()["images"]
                              if i["id"] in by_id or not self.ignore_foreign)
        return expected, (response.status_code, names)

    def run_global(self, cell: Cell) -> tuple[int, int, str]:
        spec = DATA["global_endpoints"][cell.endpoint]
        expected = expected_global(cell.relation, ROLE_SETS[cell.role], cell.endpoint)
        response = self.call(cell.relation, cell.role, spec["method"], spec["path"])
        return expected, response.status_code, response.text[:200]

    def make_list_images(self) -> None:
        for variant in LIST_IMAGES:
            self.images[variant] = self.make_image(variant)


def _format(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, list):
        return [_format(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _format(v, values) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- pytest
def _env(glimpse_server: Callable[..., Any]) -> Iterator[MatrixEnv]:
    server = glimpse_server({"DEFAULT": {"auth_strategy": "noauth"}})
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
        yield MatrixEnv(client=client)


def _root_conftest() -> Any:
    """tests/conftest.py as a module (the server helpers live there)."""
    import importlib.util

    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(Path(__file__).parents[1] / "conftest.py"):
            return module
    spec = importlib.util.spec_from_file_location(
        "glimpse_tests_conftest", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["glimpse_tests_conftest"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def _module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """A module-scoped version of conftest's ``glimpse_server`` factory."""
    conftest = _root_conftest()

    started: list[Any] = []
    base = tmp_path_factory.mktemp("matrix")

    def make(options: dict[str, dict[str, Any]] | None = None) -> Any:
        state = base / f"server{len(started)}"
        state.mkdir()
        port = conftest.free_port()
        merged = conftest.server_options(state, port, options)
        cfg = conftest.write_config(state / "glimpse-api.conf", merged)
        server = conftest.ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                                        config_file=cfg, log=state / "glimpse.log",
                                        options=merged)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def list_env(_module_servers: Callable[..., Any]) -> Iterator[MatrixEnv]:
    for env in _env(_module_servers):
        env.make_list_images()
        yield env


@pytest.fixture(scope="module")
def item_env(_module_servers: Callable[..., Any]) -> Iterator[MatrixEnv]:
    yield from _env(_module_servers)


def _selected_cells(request: pytest.FixtureRequest, kinds: tuple[str, ...]) -> list[Cell]:
    cells = []
    for item in request.session.items:
        cell = getattr(item, "callspec", None) and item.callspec.params.get("cell")
        if isinstance(cell, Cell) and cell.kind in kinds:
            cells.append(cell)
    return cells


def _partition(cell: Cell) -> tuple[str, ...]:
    """Cells that touch the same image run one after another; the rest run in parallel."""
    if cell.kind == "global":
        return ("global",)
    spec = ENDPOINTS[cell.endpoint]
    if spec.get("mutates") and expected_item(cell.relation, ROLE_SETS[cell.role],
                                             IMAGES[cell.target], cell.endpoint) < 300:
        return ("fresh", cell.id)
    return (cell.target, spec.get("state", "active"))


def run_cells(env: MatrixEnv, cells: list[Cell], threads: int = 6) -> dict[str, Any]:
    """Run ``cells`` (concurrently across images) -> {cell id: result}."""
    from concurrent.futures import ThreadPoolExecutor

    groups: dict[tuple[str, ...], list[Cell]] = {}
    for cell in cells:
        key = ("list", cell.id) if cell.kind == "list" else _partition(cell)
        groups.setdefault(key, []).append(cell)
    results: dict[str, Any] = {}

    def work(group: list[Cell]) -> None:
        for cell in group:
            runner = {"list": env.run_list, "global": env.run_global,
                      "item": env.run_item}[cell.kind]
            try:
                results[cell.id] = runner(cell)
            except Exception as exc:  # reported by the cell's own test
                results[cell.id] = exc

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, g) for g in groups.values()]:
            future.result()
    return results


@pytest.fixture(scope="module")
def list_results(list_env: MatrixEnv, request: pytest.FixtureRequest) -> dict[str, Any]:
    return run_cells(list_env, _selected_cells(request, ("list",)))


@pytest.fixture(scope="module")
def item_results(item_env: MatrixEnv, request: pytest.FixtureRequest) -> dict[str, Any]:
    return run_cells(item_env, _selected_cells(request, ("item", "global")))


def _result(results: dict[str, Any], cell: Cell) -> Any:
    result = results[cell.id]
    if isinstance(result, Exception):
        raise result
    return result


@pytest.mark.parametrize("cell", list_cells(), ids=lambda c: c.id)
def test_list_cell(list_results: dict[str, Any], cell: Cell) -> None:
    expected, actual = _result(list_results, cell)
    assert actual == expected, f"{cell.id}: expected {expected}, got {actual}"


@pytest.mark.parametrize("cell", global_cells(), ids=lambda c: c.id)
def test_global_cell(item_results: dict[str, Any], cell: Cell) -> None:
    expected, actual, body = _result(item_results, cell)
    assert actual == expected, f"{cell.id}: expected {expected}, got {actual}: {body}"


@pytest.mark.parametrize("cell", item_cells(), ids=lambda c: c.id)
def test_item_cell(item_results: dict[str, Any], cell: Cell) -> None:
    expected, actual, body = _result(item_results, cell)
    assert actual == expected, f"{cell.id}: expected {expected}, got {actual}: {body}"


def test_matrix_covers_every_dimension() -> None:
    """The generated matrix is the full cross product named by the issue."""
    assert len(DATA["projects"]) == 3
    assert set(ROLE_SETS) == {"admin", "member", "reader", "none"}
    assert {v["visibility"] for v in IMAGES.values()} == {"private", "shared", "community",
                                                          "public"}
    assert len(item_cells()) == 3 * 4 * len(IMAGES) * len(ENDPOINTS)
    # The rules are not trivially uniform: every endpoint (but the one nobody may
    # do) has both allowed and refused cells.
    for endpoint in set(ENDPOINTS) - {"delete-protected"}:
        outcomes = {expected_item(p, ROLE_SETS[r], IMAGES[i], endpoint)
                    for p, r, i in itertools.product(DATA["projects"], ROLE_SETS, IMAGES)}
        assert any(s < 300 for s in outcomes) and any(s >= 400 for s in outcomes), endpoint


# --------------------------------------------------------------------------- CLI
def main(argv: list[str]) -> int:
    """Run the whole matrix against ``argv[0]``; print cells that differ."""
    url = argv[0]
    extra = {"X-Identity-Status": "Confirmed"} if "--glance" in argv else {}
    failures = 0
    total = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        env = MatrixEnv(client=client, extra_headers=extra, ignore_foreign=True)
        env.make_list_images()
        for cell in list_cells():
            total += 1
            expected, actual = env.run_list(cell)
            if expected != actual:
                failures += 1
                print(f"LIST {cell.id}: expected {expected[0]} {sorted(expected[1])}, "
                      f"got {actual[0]} {sorted(actual[1])}")
        env.images.clear()
        for cell in [*global_cells(), *item_cells()]:
            total += 1
            runner = env.run_global if cell.kind == "global" else env.run_item
            exp, act, body = runner(cell)
            if exp != act:
                failures += 1
                print(f"ITEM {cell.id}: expected {exp}, got {act}: {body[:120]}")
    print(f"{failures} of {total} cells differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
