"""Every error Glimpse raises on purpose.

Services, the domain and the store raise these; only ``glimpse.api.errors``
maps them to HTTP status codes. Each class names a *kind* of failure, and the
message is meant for the API user (it ends up in the response body).
"""

from __future__ import annotations


class GlimpseError(Exception):
    """Base class. ``message`` is safe to show to the API user."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.__class__.__name__


class Invalid(GlimpseError):
    """The request is malformed or a value is out of range (HTTP 400)."""


class NotAuthenticated(GlimpseError):
    """No valid credentials were presented (HTTP 401)."""


class Forbidden(GlimpseError):
    """The caller may see the resource but may not do this (HTTP 403)."""


class ReservedAttribute(Forbidden):
    """A read-only or reserved attribute was written (HTTP 403)."""


class NotFound(GlimpseError):
    """No such resource, or the caller may not see it (HTTP 404)."""


class MethodNotAllowed(GlimpseError):
    """The resource exists but does not support this method (HTTP 405)."""


class Conflict(GlimpseError):
    """The resource's current state forbids the change (HTTP 409)."""


class Duplicate(Conflict):
    """A resource with that identity already exists (HTTP 409)."""


class InvalidStatusTransition(Conflict):
    """The image or task is not in a status that allows this (HTTP 409)."""


class Gone(GlimpseError):
    """The image's data is no longer available (HTTP 410)."""


class TooLarge(GlimpseError):
    """Image data exceeds the size cap or the project's quota (HTTP 413)."""


class QuotaExceeded(TooLarge):
    """The project's storage quota would be exceeded (HTTP 413)."""


class UnsupportedMediaType(GlimpseError):
    """The request body's content type is not accepted here (HTTP 415)."""


class InvalidImageData(GlimpseError):
    """Image data that does not match its ``disk_format`` or fails the format's
    safety checks (HTTP 415 on upload, as Glance)."""


class RangeNotSatisfiable(GlimpseError):
    """The requested byte range lies outside the image data (HTTP 416)."""

    def __init__(self, message: str = "", *, size: int = 0) -> None:
        super().__init__(message)
        self.size = size


class StoreError(GlimpseError):
    """The backing store failed; the detail is for logs, not users (HTTP 500/503)."""


class StorageFull(StoreError):
    """The store has no room for the data (HTTP 413, as Glance)."""


class StoragePermissionDenied(StoreError):
    """The store refused access to its media (HTTP 503)."""


class DatabaseUnavailable(GlimpseError):
    """The database could not be reached or did not answer: connection refused or
    lost, no pooled connection free in time, SQLite busy beyond its timeout (HTTP
    503). Transient: the same request may succeed later. ``detail`` (the
    driver's message) is for logs."""

    def __init__(self, detail: str) -> None:
        super().__init__("The image database is unavailable; try again later.")
        self.detail = detail


class ClientDisconnected(GlimpseError):
    """The client went away while data was being transferred."""


class ConfigError(GlimpseError):
    """A configuration value is invalid; start-up stops with this message."""


class ImportFailed(GlimpseError):
    """Image data could not be fetched from its import source (the task fails with this)."""
