"""Authorization with oslo.policy: Glance's rule names and secure-RBAC defaults.

The defaults are Glance's (:mod:`glimpse.auth.policy_defaults`): roles
``admin``, ``member``, ``reader``; project scope; ``context_is_admin`` is
``role:admin``. Operators override any rule
with a policy file (``[oslo_policy] policy_file``, default ``policy.yaml``
searched next to the config files), exactly as with Glance; the file is
re-read when it changes (oslo.policy's behaviour).

Targets follow Glance's ``ImageTarget``: ``project_id`` and ``owner`` are the
image's owner, ``visibility`` its visibility, and ``member_id`` the caller's
project when the caller is a member of the image (any member status), so
``project_id:%(member_id)s`` means "the caller is an image member". Keys whose
value is unknown are left out of the target (a check on them is False, never
a match of ``None`` against a project-less caller).

:func:`enforcer_for` gives the process-wide :class:`Policy` of a
configuration. :meth:`Policy.check` never raises for a denial; it returns
False. Mapping a denial to 403 or 404 (hiding images the caller may not see)
is the caller's job (services/access.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from oslo_config import cfg
from oslo_policy import _checks
from oslo_policy import policy as oslo_policy

from glimpse.auth.context import RequestContext
from glimpse.auth.policy_defaults import RULE_NAMES, RULES


def credentials(ctx: RequestContext) -> dict[str, Any]:
    """oslo.policy credentials of a request context."""
    creds: dict[str, Any] = {"roles": sorted(ctx.roles), "user_id": ctx.user_id,
                             "is_admin": ctx.is_admin}
    if ctx.project_id is not None:
        creds["project_id"] = ctx.project_id
    return creds


def image_target(owner: str | None, visibility: str | None, *, member_id: str | None = None,
                 image_id: str | None = None,
                 properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Glance-style policy target for an image (``None`` values are left out).

    ``member_id`` is the caller's project when the caller is a member of the
    image (whatever its member status), else None.
    """
    target: dict[str, Any] = dict(properties or {})
    values = {"project_id": owner, "owner": owner, "visibility": visibility,
              "member_id": member_id, "member": member_id, "id": image_id,
              "image_id": image_id}
    target.update({k: v for k, v in values.items() if v is not None})
    return target


def new_image_target(ctx: RequestContext, owner: str | None,
                     visibility: str | None) -> dict[str, Any]:
    """Target of ``add_image``: the proposed owner (default: the caller's project)."""
    owner = owner if owner is not None else ctx.project_id
    return image_target(owner, visibility or "private")


# Seconds between two looks at the policy file's modification time.
RELOAD_CHECK_INTERVAL = 1.0


class _Enforcer(oslo_policy.Enforcer):
    """oslo.policy's Enforcer, but ``load_rules`` (a stat of every policy file and
    directory, run by each ``enforce``) looks at the files at most once per
    ``RELOAD_CHECK_INTERVAL``: a changed policy file takes effect within a second.

    ``generation`` grows each time a load leaves different rules (compared by
    their text), so decisions cached under older rules can be dropped.
    """

    _checked_at: float | None = None
    _signature: tuple[tuple[str, str], ...] | None = None
    generation = 0

    def load_rules(self, force_reload: bool = False) -> None:
        now = time.monotonic()
        if (not force_reload and self.rules and self._checked_at is not None
                and now - self._checked_at < RELOAD_CHECK_INTERVAL):
            return
        super().load_rules(force_reload)
        self._checked_at = now
        signature = tuple(sorted((name, str(check)) for name, check in self.rules.items()))
        if signature != self._signature:
            self._signature = signature
            self.generation += 1


# Checks whose outcome depends only on the credentials, the rules and the target
# keys named in their ``%(key)s`` templates (no I/O, no clock): decisions of
# rules made only of these may be cached.
_PURE_CHECKS: tuple[type, ...] = (
    _checks.AndCheck, _checks.OrCheck, _checks.NotCheck, _checks.TrueCheck,
    _checks.FalseCheck, _checks.RuleCheck, _checks.RoleCheck, _checks.GenericCheck)
_TEMPLATE_KEY = re.compile(r"%\(([^)]*)\)s")
_MISSING = object()
# Cached decisions per process (the dict is emptied when full).
MAX_CACHED_DECISIONS = 4096


def _target_keys(rules: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The target keys any rule reads, sorted; None when a rule has a check that
    is not known to be pure (e.g. ``http:``) or a template other than ``%(key)s``."""
    keys: set[str] = set()
    stack: list[Any] = list(rules.values())
    while stack:
        check = stack.pop()
        if type(check) not in _PURE_CHECKS:
            return None
        if isinstance(check, (_checks.AndCheck, _checks.OrCheck)):
            stack.extend(check.rules)
        elif isinstance(check, _checks.NotCheck):
            stack.append(check.rule)
        elif isinstance(check, _checks.Check):
            for text in (check.kind, check.match):
                found = _TEMPLATE_KEY.findall(text)
                if "%" in _TEMPLATE_KEY.sub("", text):
                    return None
                keys.update(found)
    return tuple(sorted(keys))


class Policy:
    """An oslo.policy Enforcer loaded with Glance's defaults.

    :meth:`check` remembers its decisions per (rule, caller's roles, user and
    project, values of the target keys the rules read): oslo.policy evaluates
    the same rule tree for every request otherwise (~0.3 ms each). The memory
    is dropped whenever the rules change (policy file edited, ``set_rules``),
    and not used at all while a rule holds a check that may not be pure
    (``http:``, a custom check class).
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.enforcer = _Enforcer(conf, use_conf=True)
        self.enforcer.register_defaults(RULES)
        self._decisions: dict[tuple[Any, ...], bool] = {}
        self._state: tuple[Any, int] | None = None
        self._keys: tuple[str, ...] | None = None

    def _decision_keys(self) -> tuple[str, ...] | None:
        """The target keys of the current rules (None: do not cache), after
        dropping decisions taken under other rules."""
        enforcer = self.enforcer
        enforcer.load_rules()
        state = (enforcer.rules, enforcer.generation)
        if self._state is None or state[0] is not self._state[0] or state[1] != self._state[1]:
            self._decisions = {}
            self._keys = _target_keys(enforcer.rules)
            self._state = state
        return self._keys

    def check(self, ctx: RequestContext, rule: str, target: Mapping[str, Any] | None = None,
              ) -> bool:
        """True when ``rule`` allows ``ctx`` on ``target``. Unknown rules raise KeyError
        (a typo in a rule name must not silently allow or deny)."""
        if rule not in RULE_NAMES and rule not in self.enforcer.rules:
            self.enforcer.load_rules()
            if rule not in self.enforcer.rules:
                raise KeyError(f"unknown policy rule {rule!r}")
        target = target or {}
        keys = self._decision_keys()
        memo: tuple[Any, ...] | None = None
        if keys is not None:
            memo = (rule, ctx.roles, ctx.user_id, ctx.project_id,
                    tuple(target.get(k, _MISSING) for k in keys))
            try:
                found = self._decisions.get(memo)
            except TypeError:  # a value that cannot be hashed: evaluate
                memo = found = None
            if found is not None:
                return found
        allowed = bool(self.enforcer.enforce(rule, dict(target), credentials(ctx),
                                             do_raise=False))
        if memo is not None:
            decisions = self._decisions
            if len(decisions) >= MAX_CACHED_DECISIONS:
                decisions.clear()
            decisions[memo] = allowed
        return allowed

    def is_admin(self, ctx: RequestContext) -> bool:
        """Whether the ``context_is_admin`` rule holds for ``ctx`` (Glance's
        ``check_is_admin``: the caller's own credentials as the target, with
        ``is_admin`` false while it is being decided). Asked once per request:
        remembered per (roles, user, project) like :meth:`check`'s decisions."""
        cacheable = self._decision_keys() is not None
        memo = ("context_is_admin", ctx.roles, ctx.user_id, ctx.project_id)
        found = self._decisions.get(memo) if cacheable else None
        if found is not None:
            return found
        plain = replace(ctx, admin=False)
        allowed = self.check(plain, "context_is_admin", credentials(plain))
        if cacheable:
            self._decisions[memo] = allowed
        return allowed

    def check_expression(self, ctx: RequestContext, expression: str,
                         target: Mapping[str, Any] | None = None) -> bool:
        """Evaluate a policy expression such as ``rule:glance_creator`` (rules named in
        the policy file or the defaults); used by property protections' ``policies``
        format. A reference to a rule that does not exist is False."""
        from oslo_policy import _parser

        self.enforcer.load_rules()
        for name in re.findall(r"rule:([^\s()]+)", expression):
            if name not in self.enforcer.rules:
                return False
        check = _parser.parse_rule(expression)
        return bool(self.enforcer.enforce(check, dict(target or {}), credentials(ctx),
                                          do_raise=False))


_lock = threading.Lock()
_instances: dict[int, Policy] = {}


def enforcer_for(conf: cfg.ConfigOpts) -> Policy:
    """The process-wide Policy of ``conf`` (built once per configuration object)."""
    key = id(conf)
    with _lock:
        found = _instances.get(key)
        if found is None or found.conf is not conf:
            found = Policy(conf)
            _instances[key] = found
        return found


# --- The process's active policy (installed by the API's auth middleware) -----------------
_installed: Policy | None = None


def install(conf: cfg.ConfigOpts) -> Policy:
    """Make the Policy of ``conf`` the one :func:`authorize` uses in this process."""
    global _installed
    _installed = enforcer_for(conf)
    return _installed


def installed() -> Policy | None:
    return _installed


def authorize(ctx: RequestContext, rule: str, image: Any = None, *,
              member_id: str | None = None, policy: Policy | None = None) -> None:
    """Enforce ``rule`` on ``image`` (a domain Image the caller can already see, the
    image about to be created for ``add_image``, or None) with the active policy.

    Raises Forbidden when denied, or NotFound when the caller is not even allowed
    ``get_image`` on that image (Glance: no existence leak). ``member_id`` is the
    membership concerned by ``modify_member``: only the member project itself
    counts as the image member there, so nobody changes another project's status.
    """
    from glimpse.exceptions import Forbidden, NotFound

    active = policy or _installed
    if active is None:
        raise RuntimeError("no policy installed")
    if image is None:
        target: dict[str, Any] = ({"project_id": ctx.project_id}
                                  if ctx.project_id is not None else {})
    elif rule == "add_image":
        target = new_image_target(ctx, image.owner, image.visibility)
    else:
        target = image_target(image.owner, image.visibility,
                              member_id=_member_of(ctx, rule, image, member_id),
                              image_id=getattr(image, "id", None))
    if active.check(ctx, rule, target):
        return
    if image is not None and rule != "add_image" and (
            rule == "get_image" or not active.check(ctx, "get_image", target)):
        raise NotFound(f"No image found with ID {getattr(image, 'id', '')}")
    if rule == "add_image" and image is not None and image.owner not in (None, ctx.project_id):
        raise Forbidden(f"You are not permitted to create images owned by '{image.owner}'.")
    raise Forbidden(f"You are not authorized to complete {rule} action.")


def _member_of(ctx: RequestContext, rule: str, image: Any, member_id: str | None) -> str | None:
    """The target's ``member_id``: the caller's project when it is a member of ``image``.

    Callers hand over images the caller may see; a shared image the caller's
    project does not own is visible only through a membership, so the caller is
    a member. For ``modify_member`` only the membership being changed counts.
    """
    project = ctx.project_id
    if project is None:
        return None
    if rule == "modify_member":
        return member_id if member_id == project else None
    if image.visibility == "shared" and image.owner != project:
        return project
    return None
