"""The request context: who is calling. Built by the API's auth layer, read by services."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    """Identity of one API call. ``project_id`` may be None for a project-less admin."""

    project_id: str | None
    user_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    request_id: str = ""
    # Client address for image.send (peer, or X-Forwarded-For from a trusted proxy).
    remote_address: str | None = None
    # Whether the policy's ``context_is_admin`` rule holds for this caller, as the
    # API's auth layer found (glimpse.auth.policy.Policy.is_admin); None for
    # contexts made without a policy (then: the ``admin`` role).
    admin: bool | None = None

    @property
    def is_admin(self) -> bool:
        """An administrator: sees and may change every project's images (Glance's
        ``context.is_admin``)."""
        return self.admin if self.admin is not None else "admin" in self.roles

    @property
    def can_write(self) -> bool:
        """Readers (no admin/member role) may not change anything."""
        return bool(self.roles & {"admin", "member"}) or not self.roles

    def owns(self, owner: str | None) -> bool:
        return owner is not None and owner == self.project_id
