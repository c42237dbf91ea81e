"""oslo.policy's rule-check plugins, each imported only when a policy rule uses it.

oslo.policy loads every ``oslo.policy.rule_checks`` plugin through stevedore the
first time it parses a rule, and the ``http`` one imports ``requests`` (with
urllib3, charset_normalizer, idna, certifi): ~0.1 s of start-up and ~5 MiB
resident in every API worker, for a kind of rule that the default policies
never use. :func:`install` replaces that with a lazy table: same names, same
classes, same behaviour for a rule that does use them. It must run before
the first rule is parsed, which :mod:`glimpse.auth.policy_defaults` does on import
(its defaults are parsed when they are defined).
"""

from __future__ import annotations

from typing import Any


class LazyRuleChecks(dict[str, Any]):
    """oslo.policy's ``oslo.policy.rule_checks`` plugins (``http:``, ``https:``
    rules), each imported the first time a policy rule uses it."""

    def __init__(self) -> None:
        super().__init__()
        from importlib.metadata import entry_points

        self._entry_points = {ep.name: ep for ep in
                              entry_points(group="oslo.policy.rule_checks")}

    def __contains__(self, name: object) -> bool:
        return name in self._entry_points

    def __missing__(self, name: str) -> Any:
        plugin = self._entry_points[name].load()
        self[name] = plugin
        return plugin


def install() -> None:
    """Install :class:`LazyRuleChecks` unless oslo.policy already loaded its plugins.
    Idempotent."""
    from oslo_policy import _checks

    if _checks.extension_checks is None:
        _checks.extension_checks = LazyRuleChecks()
