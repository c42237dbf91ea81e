"""Start-up refuses unsafe or broken auth settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse import config
from glimpse.auth.startup import check_startup, is_loopback
from glimpse.exceptions import ConfigError


def conf_with(tmp_path: Path, text: str) -> object:
    path = tmp_path / "glimpse.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n" + text)
    return config.load(["--config-file", str(path)])


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("glimpse.example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_noauth_on_loopback_is_allowed(tmp_path: Path) -> None:
    check_startup(conf_with(tmp_path, "auth_strategy = noauth\nbind_host = 127.0.0.1\n"))


def test_noauth_on_a_public_address_is_refused(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, "auth_strategy = noauth\nbind_host = 0.0.0.0\n")
    with pytest.raises(ConfigError, match="behind_trusted_proxy"):
        check_startup(conf)


def test_noauth_behind_a_trusted_proxy_is_allowed(tmp_path: Path) -> None:
    check_startup(conf_with(tmp_path, "auth_strategy = noauth\nbind_host = 0.0.0.0\n"
                                      "behind_trusted_proxy = true\n"))


def test_token_file_strategy_on_a_public_address_is_allowed(tmp_path: Path) -> None:
    check_startup(conf_with(tmp_path, "auth_strategy = token-file\nbind_host = 0.0.0.0\n"))


def test_a_malformed_token_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text("[1, 2]")
    conf = conf_with(tmp_path, "auth_strategy = token-file\n"
                               f"[glimpse]\ntoken_file = {tmp_path / 'tokens.json'}\n")
    with pytest.raises(ConfigError, match="token_file"):
        check_startup(conf)


def test_keystone_without_authtoken_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keystone_authtoken"):
        check_startup(conf_with(tmp_path, "auth_strategy = keystone\n"))


def test_keystone_with_authtoken_settings_is_accepted(tmp_path: Path) -> None:
    check_startup(conf_with(tmp_path, "auth_strategy = keystone\n[keystone_authtoken]\n"
                                      "www_authenticate_uri = http://127.0.0.1:5000\n"
                                      "auth_type = password\n"))


def test_a_broken_property_protection_file_stops_start_up(tmp_path: Path) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text("[^x_.*]\ncreate = admin\nread = @,!\nupdate = admin\ndelete = admin\n")
    with pytest.raises(ConfigError, match="mutually exclusive"):
        check_startup(conf_with(tmp_path, f"property_protection_file = {rules}\n"))


def test_a_missing_property_protection_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read"):
        check_startup(conf_with(tmp_path, f"property_protection_file = {tmp_path}/nope\n"))


def test_a_policy_file_that_does_not_parse_stops_start_up(tmp_path: Path) -> None:
    rules = tmp_path / "policy.yaml"
    rules.write_text('"get_image": "role:reader"\n"add_image": [broken\n')
    conf = conf_with(tmp_path, f"[oslo_policy]\npolicy_file = {rules}\n")
    with pytest.raises(ConfigError, match=r"\[oslo_policy\] policy_file .*cannot be parsed"):
        check_startup(conf)
    rules.write_text('"get_image": "role:reader"\n')
    check_startup(conf)               # a good file, or none at all, is fine
    (tmp_path / "none").mkdir()
    check_startup(conf_with(tmp_path / "none", ""))
