"""oslo.policy with Glance's defaults, operator overrides, and 404-vs-403."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from glimpse import config
from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.exceptions import Forbidden, NotFound

ADMIN = frozenset({"admin", "member", "reader"})
MEMBER = frozenset({"member", "reader"})
READER = frozenset({"reader"})


def ctx(project: str, roles: frozenset[str]) -> RequestContext:
    return RequestContext(project_id=project, user_id="u", roles=roles)


def image(owner: str = "p1", visibility: str = "private") -> SimpleNamespace:
    return SimpleNamespace(id="img-1", owner=owner, visibility=visibility)


@pytest.fixture
def enforcer(tmp_path: Path) -> policy.Policy:
    return policy.Policy(config.load([]))


def test_defaults_are_glances(enforcer: policy.Policy) -> None:
    own = policy.image_target("p1", "private")
    assert enforcer.check(ctx("p1", MEMBER), "modify_image", own)
    assert not enforcer.check(ctx("p1", READER), "modify_image", own)
    assert enforcer.check(ctx("p1", READER), "get_image", own)
    assert not enforcer.check(ctx("p1", READER), "download_image", own)   # Glance: member
    assert not enforcer.check(ctx("p2", MEMBER), "get_image", own)
    assert enforcer.check(ctx("p2", ADMIN), "modify_image", own)
    assert not enforcer.check(ctx("p1", MEMBER), "publicize_image", own)
    assert enforcer.check(ctx("p1", MEMBER), "communitize_image", own)
    assert not enforcer.check(ctx("p1", frozenset()), "get_images", {"project_id": "p1"})
    assert not enforcer.check(ctx("p1", MEMBER), "tasks_api_access", {})
    assert enforcer.check(ctx("p1", ADMIN), "tasks_api_access", {})


def test_only_the_member_project_changes_its_membership(enforcer: policy.Policy) -> None:
    shared = policy.image_target("p1", "shared", member_id="p2")
    assert enforcer.check(ctx("p2", MEMBER), "modify_member", shared)
    assert not enforcer.check(ctx("p2", READER), "modify_member", shared)
    assert not enforcer.check(ctx("p3", MEMBER), "modify_member", shared)
    assert not enforcer.check(ctx("p1", MEMBER), "modify_member",
                              policy.image_target("p1", "shared"))


def test_a_project_less_caller_never_matches_a_missing_member(enforcer: policy.Policy) -> None:
    nobody = RequestContext(project_id=None, user_id="u", roles=MEMBER)
    assert not enforcer.check(nobody, "get_members", policy.image_target("p1", "shared"))


def test_unknown_rule_names_raise(enforcer: policy.Policy) -> None:
    with pytest.raises(KeyError):
        enforcer.check(ctx("p1", ADMIN), "modify_imagee", {})


def test_authorize_hides_images_the_caller_may_not_get(enforcer: policy.Policy) -> None:
    with pytest.raises(NotFound):
        policy.authorize(ctx("p1", frozenset()), "modify_image", image(), policy=enforcer)
    with pytest.raises(Forbidden):
        policy.authorize(ctx("p1", READER), "modify_image", image(), policy=enforcer)
    with pytest.raises(Forbidden):   # visible to the caller: 403, not 404
        policy.authorize(ctx("p2", MEMBER), "modify_image", image(visibility="public"),
                         policy=enforcer)
    policy.authorize(ctx("p1", MEMBER), "modify_image", image(), policy=enforcer)


def test_authorize_add_image_for_another_owner(enforcer: policy.Policy) -> None:
    with pytest.raises(Forbidden, match="owned by 'p9'"):
        policy.authorize(ctx("p1", MEMBER), "add_image", image(owner="p9"), policy=enforcer)
    policy.authorize(ctx("p1", MEMBER), "add_image", image(owner=None), policy=enforcer)
    policy.authorize(ctx("p1", ADMIN), "add_image", image(owner="p9"), policy=enforcer)


def test_member_of_a_shared_image_may_list_members(enforcer: policy.Policy) -> None:
    policy.authorize(ctx("p2", READER), "get_members", image(visibility="shared"),
                     policy=enforcer)
    policy.authorize(ctx("p2", MEMBER), "modify_member", image(visibility="shared"),
                     member_id="p2", policy=enforcer)
    with pytest.raises(Forbidden):
        policy.authorize(ctx("p2", MEMBER), "modify_member", image(visibility="shared"),
                         member_id="p3", policy=enforcer)


def test_operator_policy_file_overrides_defaults(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"modify_image": "role:reader and project_id:%(project_id)s"\n'
                     '"publicize_image": "role:member"\n'
                     '"prop_reader": "role:reader"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    enforcer = policy.Policy(config.load(["--config-file", str(conf_file)]))
    own = policy.image_target("p1", "private")
    assert enforcer.check(ctx("p1", READER), "modify_image", own)
    assert enforcer.check(ctx("p1", MEMBER), "publicize_image", own)
    assert enforcer.check_expression(ctx("p1", READER), "rule:prop_reader")
    assert not enforcer.check_expression(ctx("p1", MEMBER - {"reader"}), "rule:prop_reader")
    assert not enforcer.check_expression(ctx("p1", ADMIN), "rule:undefined_rule")


def test_decisions_follow_a_changed_policy_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"modify_image": "role:member and project_id:%(project_id)s"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    monkeypatch.setattr(policy, "RELOAD_CHECK_INTERVAL", 0.0)
    enforcer = policy.Policy(config.load(["--config-file", str(conf_file)]))
    own = policy.image_target("p1", "private")
    assert enforcer.check(ctx("p1", MEMBER), "modify_image", own)
    assert enforcer.check(ctx("p1", MEMBER), "modify_image", own)   # remembered
    assert not enforcer.check(ctx("p1", READER), "modify_image", own)
    rules.write_text('"modify_image": "role:admin"\n')
    os.utime(rules, (time.time() + 5, time.time() + 5))   # a new mtime, whatever the clock
    assert not enforcer.check(ctx("p1", MEMBER), "modify_image", own)
    assert enforcer.check(ctx("p1", ADMIN), "modify_image", own)


def test_decisions_depend_on_every_target_key_the_rules_read(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"get_image": "role:reader and \'v1\':%(os_version)s"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    enforcer = policy.Policy(config.load(["--config-file", str(conf_file)]))
    base = policy.image_target("p1", "private")
    assert enforcer.check(ctx("p1", READER), "get_image", {**base, "os_version": "v1"})
    assert not enforcer.check(ctx("p1", READER), "get_image", {**base, "os_version": "v2"})
    assert not enforcer.check(ctx("p1", READER), "get_image", base)
    assert enforcer.check(ctx("p1", READER), "get_image", {**base, "os_version": "v1"})


def test_rules_with_impure_checks_are_never_remembered(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"get_image": "role:reader or http://127.0.0.1:9/deny"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    enforcer = policy.Policy(config.load(["--config-file", str(conf_file)]))
    assert enforcer.check(ctx("p1", READER), "get_image", policy.image_target("p1", "private"))
    assert enforcer._decision_keys() is None
    assert enforcer._decisions == {}


def test_default_rules_read_only_the_image_target_keys(enforcer: policy.Policy) -> None:
    keys = enforcer._decision_keys()
    assert keys is not None and set(keys) <= {"project_id", "owner", "member_id", "visibility"}


def test_metadef_defaults_are_glances(enforcer: policy.Policy) -> None:
    """glance/policies/metadef.py: reads for readers of the owner project (any
    project for a public namespace), writes through metadef_admin (admins)."""
    private = {"project_id": "p1", "visibility": "private"}
    public = {"project_id": "p1", "visibility": "public"}
    assert enforcer.check(ctx("p1", READER), "get_metadef_namespace", private)
    assert not enforcer.check(ctx("p2", MEMBER), "get_metadef_namespace", private)
    assert enforcer.check(ctx("p2", READER), "get_metadef_tags", public)
    assert not enforcer.check(ctx("p2", frozenset()), "get_metadef_object", public)
    for rule in ("add_metadef_namespace", "modify_metadef_object", "add_metadef_tags",
                 "remove_metadef_property", "add_metadef_resource_type_association"):
        assert not enforcer.check(ctx("p1", MEMBER), rule, private), rule
        assert enforcer.check(ctx("p2", ADMIN), rule, private), rule


def test_an_operator_opens_metadef_writes_by_overriding_metadef_admin(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"metadef_admin": "role:member"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    enforcer = policy.Policy(config.load(["--config-file", str(conf_file)]))
    own = {"project_id": "p1", "visibility": "private"}
    assert enforcer.check(ctx("p1", MEMBER), "add_metadef_namespace", own)
    assert enforcer.check(ctx("p1", MEMBER), "delete_metadef_tags", own)
    assert not enforcer.check(ctx("p1", READER), "add_metadef_namespace", own)


def test_is_admin_is_the_context_is_admin_rule(tmp_path: Path) -> None:
    default = policy.Policy(config.load([]))
    assert default.is_admin(ctx("p1", ADMIN)) and not default.is_admin(ctx("p1", MEMBER))
    rules = tmp_path / "policy.yaml"
    rules.write_text('"context_is_admin": "role:cloud_admin"\n')
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text(f"[oslo_policy]\npolicy_file = {rules}\n")
    renamed = policy.Policy(config.load(["--config-file", str(conf_file)]))
    cloud_admin = ctx("p9", frozenset({"cloud_admin", "member", "reader"}))
    assert renamed.is_admin(cloud_admin) and not renamed.is_admin(ctx("p1", ADMIN))
    # and every rule built on it follows: publicize, others' private images
    others = policy.image_target("p1", "private")
    assert renamed.check(replace(cloud_admin, admin=True), "publicize_image", others)
    assert renamed.check(replace(cloud_admin, admin=True), "modify_image", others)
    assert not renamed.check(ctx("p2", ADMIN), "modify_image", others)


def test_legacy_defaults_apply_only_without_enforce_new_defaults(tmp_path: Path) -> None:
    conf_file = tmp_path / "glimpse.conf"
    conf_file.write_text("[oslo_policy]\nenforce_new_defaults = false\n")
    with pytest.warns(UserWarning, match="was deprecated"):
        legacy = policy.Policy(config.load(["--config-file", str(conf_file)]))
        own = policy.image_target("p1", "private")
        # Glance's deprecated rules are "rule:default" (anybody) for these...
        for rule in ("modify_image", "delete_image", "download_image", "add_member"):
            assert legacy.check(ctx("p1", READER), rule, own), rule
    # ...but publicize_image has none: admins only, either way
    assert not legacy.check(ctx("p1", READER), "publicize_image", own)
    strict = policy.Policy(config.load([]))
    assert not strict.check(ctx("p1", READER), "modify_image", own)
