"""Property protections in Glance's roles and policies formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse import config
from glimpse.auth import policy
from glimpse.auth.context import RequestContext
from glimpse.auth.property_protection import PropertyProtections, load_rules
from glimpse.domain.image import Image
from glimpse.exceptions import ConfigError, ReservedAttribute

ROLES_FILE = """
[^x_owner_.*]
create = admin,member
read = admin,member,reader
update = admin,member
delete = admin,member

[^x_admin_.*]
create = admin
read = admin
update = admin
delete = admin

[^x_readonly$]
create = admin
read = @
update = !
delete = admin

[.*]
create = @
read = @
update = @
delete = @
"""

ADMIN = RequestContext("p1", "u", frozenset({"admin", "member", "reader"}))
MEMBER = RequestContext("p1", "u", frozenset({"member", "reader"}))
READER = RequestContext("p1", "u", frozenset({"reader"}))


@pytest.fixture
def roles(tmp_path: Path) -> PropertyProtections:
    path = tmp_path / "protections.conf"
    path.write_text(ROLES_FILE)
    return PropertyProtections(load_rules(str(path), "roles"))


def test_roles_decide_per_operation(roles: PropertyProtections) -> None:
    assert roles.can(MEMBER, "create", "x_owner_a")
    assert not roles.can(READER, "create", "x_owner_a")
    assert roles.can(READER, "read", "x_owner_a")
    assert not roles.can(MEMBER, "read", "x_admin_secret")
    assert roles.can(ADMIN, "read", "x_admin_secret")
    assert roles.can(READER, "read", "x_readonly")          # '@'
    assert not roles.can(ADMIN, "update", "x_readonly")     # '!'
    assert roles.can(READER, "delete", "anything_else")     # catch-all section
    assert roles.can(READER, "update", "os_glance_x") and roles.can(READER, "read", "os_glance.y")


def test_a_property_no_rule_matches_is_untouchable(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_text("[^only_this$]\ncreate = @\nread = @\nupdate = @\ndelete = @\n")
    rules = PropertyProtections(load_rules(str(path)))
    assert rules.can(READER, "read", "only_this")
    assert not rules.can(ADMIN, "read", "something_else")


def test_hidden_and_filtered_properties(roles: PropertyProtections) -> None:
    props = {"x_admin_secret": "s", "x_owner_a": "a", "plain": "p"}
    assert roles.hidden(MEMBER, props) == {"x_admin_secret"}
    assert roles.filter_readable(MEMBER, props) == {"x_owner_a": "a", "plain": "p"}
    assert roles.hidden(ADMIN, props) == frozenset()
    image = Image(id="i", owner="p1", properties=dict(props))
    shown = roles.readable_image(MEMBER, image)
    assert "x_admin_secret" not in shown.properties
    assert "x_admin_secret" in image.properties             # the stored image is untouched
    assert roles.readable_image(ADMIN, image) is image


def test_changes_are_checked_as_create_update_delete(roles: PropertyProtections) -> None:
    before = {"x_owner_a": "1", "x_admin_secret": "s", "x_readonly": "r"}
    roles.check_changes(MEMBER, before, {**before, "x_owner_a": "2", "x_owner_b": "new"})
    with pytest.raises(ReservedAttribute):
        roles.check_changes(READER, before, {**before, "x_owner_a": "2"})
    with pytest.raises(ReservedAttribute):
        roles.check_changes(ADMIN, before, {**before, "x_readonly": "changed"})
    with pytest.raises(ReservedAttribute):       # overwrite a hidden property = create
        roles.check_changes(MEMBER, before, {**before, "x_admin_secret": "mine"})
    with pytest.raises(ReservedAttribute):       # remove a hidden property
        roles.check_changes(MEMBER, before, {"x_owner_a": "1", "x_readonly": "r"})
    with pytest.raises(ReservedAttribute):
        roles.check_changes(MEMBER, {}, {"x_admin_new": "v"})
    roles.check_changes(MEMBER, before, dict(before))          # no change, no check


def test_merge_hidden_keeps_what_the_caller_cannot_see(roles: PropertyProtections) -> None:
    before = {"x_admin_secret": "s", "plain": "p"}
    assert roles.merge_hidden(MEMBER, before, {"plain": "q"}) == {"plain": "q",
                                                                  "x_admin_secret": "s"}


def test_policies_format_uses_rules_of_the_policy_file(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"glance_creator": "role:admin or role:creator"\n'
                           '"everyone": ""\n')
    conf_file = tmp_path / "glimpse.conf"
    protections = tmp_path / "protections.conf"
    protections.write_text("[^x_.*]\ncreate = glance_creator\nread = everyone\n"
                           "update = glance_creator\ndelete = !\n")
    conf_file.write_text(f"[DEFAULT]\nproperty_protection_file = {protections}\n"
                         "property_protection_rule_format = policies\n"
                         f"[oslo_policy]\npolicy_file = {policy_file}\n")
    conf = config.load(["--config-file", str(conf_file)])
    rules = PropertyProtections(load_rules(str(protections), "policies"),
                                policy.Policy(conf))
    creator = RequestContext("p1", "u", frozenset({"creator"}))
    assert rules.can(creator, "create", "x_a")
    assert not rules.can(MEMBER, "create", "x_a")
    assert rules.can(MEMBER, "read", "x_a")
    assert not rules.can(ADMIN, "delete", "x_a")


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("[x]\ncreate = @,!\nread = @\nupdate = @\ndelete = @\n", "roles", "mutually exclusive"),
    ("[x]\ncreate = @\nread = @\nupdate = @\n", "roles", "no 'delete'"),
    ("[x(]\ncreate = @\nread = @\nupdate = @\ndelete = @\n", "roles", "malformed rule"),
    ("[x]\ncreate = a,b\nread = a\nupdate = a\ndelete = a\n", "policies", "one policy"),
    ("not an ini file", "roles", "Malformed"),
])
def test_invalid_files_are_refused(tmp_path: Path, text: str, fmt: str, message: str) -> None:
    path = tmp_path / "p.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_rules(str(path), fmt)


def test_a_relative_file_is_found_next_to_the_configuration(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from glimpse.auth import startup
    from glimpse.auth.property_protection import for_conf

    (tmp_path / "protections.conf").write_text(ROLES_FILE)
    conf_file = tmp_path / "glimpse-api.conf"
    conf_file.write_text("[DEFAULT]\nproperty_protection_file = protections.conf\n")
    monkeypatch.chdir("/")                 # not where the files are
    conf = config.load(["--config-file", str(conf_file)])
    startup.check_startup(conf)            # found, so no ConfigError
    protections = for_conf(conf)
    assert not protections.can(READER, "update", "x_owner_a")
    assert protections.can(MEMBER, "update", "x_owner_a")
