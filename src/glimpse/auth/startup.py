"""Start-up checks of the auth configuration: refuse to serve when it is unsafe.

- ``noauth`` trusts identity headers from anyone who can connect. It is
  allowed on a loopback ``bind_host`` (``127.0.0.0/8``, ``::1``,
  ``localhost``), or elsewhere only with ``behind_trusted_proxy = true``
  (a proxy in front authenticates and sets the headers).
- ``token-file`` needs ``[glimpse] token_file``; a file that exists must parse.
- ``keystone`` needs ``[keystone_authtoken]`` to say where Keystone is
  (``www_authenticate_uri`` or an ``auth_type``).
- ``property_protection_file``, when set, must exist and parse (as Glance:
  the service does not start with broken protections).
- The policy file, when there is one, must parse (Glance starts, then answers
  every request with a 500 until it is fixed).

:func:`check_startup` raises ConfigError with a message naming the option.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import Any

from glimpse.exceptions import ConfigError


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``; any other name is not."""
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_startup(conf: Any) -> None:
    """Raise ConfigError when the auth settings are unsafe or incomplete."""
    strategy = conf.auth_strategy
    if strategy == "noauth" and not is_loopback(str(conf.bind_host)) \
            and not conf.behind_trusted_proxy:
        raise ConfigError(
            f"[DEFAULT] auth_strategy = noauth trusts identity headers from any client, "
            f"and [DEFAULT] bind_host = {conf.bind_host} is not a loopback address: use "
            "auth_strategy = keystone or token-file, or set behind_trusted_proxy = true "
            "if a proxy in front authenticates every request")
    if strategy == "token-file":
        path = conf.glimpse.token_file
        if not path:
            raise ConfigError("[glimpse] token_file must be set for auth_strategy = token-file")
        from glimpse.auth.token_file import read_entries

        try:
            read_entries(Path(path))
        except OSError as exc:
            raise ConfigError(f"[glimpse] token_file {path}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"[glimpse] token_file {path} is malformed: {exc}") from exc
    if strategy == "keystone":
        _check_keystone(conf)
    if conf.property_protection_file:
        from glimpse.auth.property_protection import load_rules, rules_file

        load_rules(rules_file(conf), conf.property_protection_rule_format)
    _check_policy_file(conf)


def _check_policy_file(conf: Any) -> None:
    from glimpse.auth import policy

    try:
        policy.Policy(conf).enforcer.load_rules(force_reload=True)
    except ValueError as exc:   # oslo.policy's YAML/JSON parse errors
        reason = " ".join(str(exc).split())
        raise ConfigError(f"[oslo_policy] policy_file {conf.oslo_policy.policy_file}: "
                          f"cannot be parsed: {reason}") from exc


def _check_keystone(conf: Any) -> None:
    from keystonemiddleware.auth_token import list_opts

    for group, opts in list_opts():
        for opt in opts:
            with contextlib.suppress(Exception):  # already registered
                conf.register_opt(opt, group=group)
    section = conf.keystone_authtoken
    if not (section.www_authenticate_uri or section.auth_type):
        raise ConfigError("auth_strategy = keystone needs [keystone_authtoken] configured "
                          "as for Glance (www_authenticate_uri, auth_type = password, "
                          "auth_url, username, password, project_name, ... of the "
                          "service user)")
