"""Property protections: who may create, read, update and delete which image
properties (``[DEFAULT] property_protection_file``), in Glance's file format.

The file is INI. Each section is a regular expression matched (``re.search``)
against a property name; the first matching section in file order decides.
Each section has ``create``, ``read``, ``update`` and ``delete``:

- ``property_protection_rule_format = roles``: a comma-separated list of roles
  (any one suffices); ``@`` allows everybody, ``!`` nobody.
- ``property_protection_rule_format = policies``: one policy rule name, defined
  in the policy file (``[oslo_policy] policy_file``) or among the defaults.

As in Glance: a property that no section matches may not be touched at all
(when a file is configured); ``os_glance.*`` properties are always allowed;
an empty value allows nobody; '@' and '!' together, a missing operation or a
malformed expression make the file invalid (start-up fails). Protections apply
to user properties only, never to core attributes (``name``, ``visibility``, ...).

Services call (with :func:`current`): ``filter_readable(ctx, properties)`` on
everything they show (API bodies *and* notification payloads, through
``hidden(ctx, properties)`` → ``payloads.image(..., hidden_properties=...)``),
and ``check_changes(ctx, before, after)`` before storing a create or update;
:meth:`PropertyProtections.merge_hidden` keeps properties the caller cannot
read through a whole-document update. Denials raise ReservedAttribute (403).
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from glimpse.auth.context import RequestContext
from glimpse.exceptions import ConfigError, ReservedAttribute

OPERATIONS: Final = ("create", "read", "update", "delete")
_INTERNAL: Final = "os_glance.*"


@dataclass(frozen=True)
class Rule:
    expression: str
    pattern: re.Pattern[str]
    # operation -> roles (roles format) or [policy rule name] (policies format)
    permissions: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class PropertyRules:
    rule_format: str
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def match(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.pattern.search(name):
                return rule
        return None


def load_rules(path: str, rule_format: str = "roles") -> PropertyRules:
    """Parse a protection file; ConfigError (naming the file) when it is invalid."""
    rule_format = rule_format.lower()
    if rule_format not in ("roles", "policies"):
        raise ConfigError(f"Invalid value for [DEFAULT] property_protection_rule_format: "
                          f"{rule_format!r} (roles or policies)")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict({_INTERNAL: {op: "@" for op in OPERATIONS}})
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise ConfigError(f"Cannot read property_protection_file {path}: {exc}") from exc
    except configparser.Error as exc:
        raise ConfigError(f"Malformed property_protection_file {path}: {exc}") from exc
    rules: list[Rule] = []
    for section in parser.sections():
        try:
            pattern = re.compile(section)
        except re.error as exc:
            raise ConfigError(f"property_protection_file {path}: malformed rule "
                              f"[{section}]: {exc}") from exc
        permissions: dict[str, tuple[str, ...]] = {}
        for op in OPERATIONS:
            if not parser.has_option(section, op):
                raise ConfigError(f"property_protection_file {path}: [{section}] has no "
                                  f"'{op}' permission")
            value = parser.get(section, op).strip()
            items = tuple(v.strip() for v in value.split(",") if v.strip())
            if "@" in items and "!" in items:
                raise ConfigError(f"property_protection_file {path}: [{section}] {op}: "
                                  "'@' and '!' are mutually exclusive")
            if rule_format == "policies" and len(items) > 1:
                raise ConfigError(f"property_protection_file {path}: [{section}] {op}: "
                                  "one policy per operation (combine them in the policy file)")
            if rule_format == "roles":
                items = tuple(i.lower() if i not in ("@", "!") else i for i in items)
            permissions[op] = items
        rules.append(Rule(section, pattern, permissions))
    return PropertyRules(rule_format, tuple(rules))


class PropertyProtections:
    """Decisions on properties for one configuration. ``rules=None``: no protections."""

    def __init__(self, rules: PropertyRules | None, policy: Any = None) -> None:
        self.rules = rules
        self.policy = policy

    @property
    def enabled(self) -> bool:
        return self.rules is not None

    def can(self, ctx: RequestContext, operation: str, name: str) -> bool:
        """Whether ``ctx`` may do ``operation`` (create/read/update/delete) on ``name``."""
        if self.rules is None:
            return True
        if operation not in OPERATIONS:
            return False
        rule = self.rules.match(name)
        if rule is None:
            return False
        allowed = rule.permissions[operation]
        if not allowed or "!" in allowed:
            return False
        if "@" in allowed:
            return True
        if self.rules.rule_format == "policies":
            if self.policy is None:
                return False
            return bool(self.policy.check_expression(ctx, f"rule:{allowed[0]}"))
        return bool(ctx.roles & set(allowed))

    def filter_readable(self, ctx: RequestContext, properties: Mapping[str, Any],
                        ) -> dict[str, Any]:
        """The properties ``ctx`` may read (a new dict)."""
        if self.rules is None:
            return dict(properties)
        return {k: v for k, v in properties.items() if self.can(ctx, "read", k)}

    def hidden(self, ctx: RequestContext, properties: Mapping[str, Any]) -> frozenset[str]:
        """Names among ``properties`` that ``ctx`` may not read (for payloads'
        ``hidden_properties``)."""
        if self.rules is None:
            return frozenset()
        return frozenset(k for k in properties if not self.can(ctx, "read", k))

    def check_write(self, ctx: RequestContext, operation: str, name: str) -> None:
        """ReservedAttribute (403) unless ``ctx`` may ``operation`` the property ``name``."""
        if not self.can(ctx, operation, name):
            raise ReservedAttribute(f"Property '{name}' is protected")

    def check_changes(self, ctx: RequestContext, before: Mapping[str, Any],
                      after: Mapping[str, Any]) -> None:
        """Check every change from ``before`` to ``after`` (user properties only).

        A property the caller cannot read counts as absent (as in Glance): setting
        it is a *create*. A property unchanged is not checked. ``after`` should
        already contain the hidden properties (see :meth:`merge_hidden`).
        """
        if self.rules is None:
            return
        readable = {k for k in before if self.can(ctx, "read", k)}
        for name, value in after.items():
            if name in readable:
                if before[name] != value:
                    self.check_write(ctx, "update", name)
            elif name not in before or before[name] != value:
                self.check_write(ctx, "create", name)
        for name in before:
            if name not in after:
                if name not in readable:
                    # Removing what one cannot see: refused like Glance's
                    # "not found" on remove, as a protected property.
                    raise ReservedAttribute(f"Property '{name}' is protected")
                self.check_write(ctx, "delete", name)

    def readable_image(self, ctx: RequestContext, image: Any) -> Any:
        """``image`` itself when nothing is hidden from ``ctx``, else a copy whose
        properties are only the readable ones (for API responses)."""
        hidden = self.hidden(ctx, image.properties)
        if not hidden:
            return image
        shown = image.copy()
        shown.properties = {k: v for k, v in image.properties.items() if k not in hidden}
        return shown

    def merge_hidden(self, ctx: RequestContext, before: Mapping[str, Any],
                     after_visible: Mapping[str, Any]) -> dict[str, Any]:
        """``after_visible`` (what the caller sent/saw) plus the properties of
        ``before`` the caller cannot read, which therefore stay untouched."""
        merged = dict(after_visible)
        for name in self.hidden(ctx, before):
            merged.setdefault(name, before[name])
        return merged


_NONE = PropertyProtections(None)
_current: PropertyProtections = _NONE


def rules_file(conf: Any) -> str:
    """``property_protection_file`` as Glance finds it: a relative name is looked
    up next to the configuration files (oslo.config's ``find_file``, as for the
    policy file), else taken as it is (and then reported missing)."""
    name = conf.property_protection_file
    return str(conf.find_file(name) or name)


def for_conf(conf: Any) -> PropertyProtections:
    """Protections configured in ``conf`` (disabled when no file is set)."""
    if not conf.property_protection_file:
        return _NONE
    from glimpse.auth import policy

    rules = load_rules(rules_file(conf), conf.property_protection_rule_format)
    return PropertyProtections(rules, policy.enforcer_for(conf))


def install(conf: Any) -> PropertyProtections:
    """Make the protections of ``conf`` the ones :func:`current` returns."""
    global _current
    _current = for_conf(conf)
    return _current


def current() -> PropertyProtections:
    """The protections of this process (no-op until :func:`install`)."""
    return _current


_NO_ROLES = RequestContext(project_id=None, user_id=None, roles=frozenset())


def unreadable_in_background(properties: Mapping[str, Any]) -> frozenset[str]:
    """Properties a caller with no role may not read.

    Background work (imports run by the task executor) does not know the
    requester's roles, so its events leave out every property that is not
    readable by everyone: a protected property never leaves in an event.
    """
    return current().hidden(_NO_ROLES, properties)
