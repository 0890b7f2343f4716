"""Errors of the issuance server, each with a stable ``code``.

They extend the one hierarchy of :mod:`modelseal.errors`. Services raise them;
only :mod:`modelseal.server.api.errors` knows which HTTP status each one maps to,
so nothing below the API layer knows about HTTP.
"""

from __future__ import annotations

from modelseal.errors import ModelSealError

__all__ = [
    "AccountBlockedError",
    "ApiVersionError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "DeviceKeyPinnedError",
    "DeviceRevokedError",
    "EventRejectedError",
    "KeyAlreadyRegisteredError",
    "LinkError",
    "LinkExpiredError",
    "LinkInvalidError",
    "LinkUsedError",
    "LinkWrongDeviceError",
    "NotFoundError",
    "ObjectGoneError",
    "OverloadedError",
    "OverrideInvalidError",
    "QueueFullError",
    "QuotaExceededError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "RetryLaterError",
    "SchemaOutdatedError",
    "ServerError",
    "ShuttingDownError",
    "TooManyLinksError",
    "UnknownModelError",
]


class ServerError(ModelSealError):
    """Base of the errors the issuance server raises on purpose."""

    code = "server_error"


class ConfigurationError(ServerError):
    """The server's settings are missing, malformed or unsafe for the chosen mode."""

    code = "config_invalid"


class SchemaOutdatedError(ConfigurationError):
    """The database schema is behind the code's migrations (production refuses to start)."""

    code = "schema_outdated"


class AuthenticationError(ServerError):
    """No credentials, or credentials that did not verify.

    The message says only that authentication failed, never which part.

    Attributes:
        user_id: The user whose token id was named with a wrong secret (server-side
            only: the anti-fraud ``credential_failure`` event; never sent to the client).
    """

    code = "unauthenticated"
    user_id: int | None = None


class NotFoundError(ServerError):
    """The object does not exist, or belongs to someone else (the two are not told apart)."""

    code = "not_found"


class UnknownModelError(ServerError):
    """The requested model id is not declared in the settings."""

    code = "unknown_model"


class ConflictError(ServerError):
    """The request conflicts with state the server keeps pinned."""

    code = "conflict"


class KeyAlreadyRegisteredError(ConflictError):
    """The device public key is already pinned to another device or user."""

    code = "key_already_registered"


class DeviceKeyPinnedError(ConflictError):
    """The device id is pinned to another key (rotation = revoke + new device id)."""

    code = "device_key_pinned"


class DeviceRevokedError(ServerError):
    """The device has been revoked and can neither request nor download."""

    code = "device_revoked"


class TooManyLinksError(ServerError):
    """The issuance has had as many download links as the server mints for one object."""

    code = "too_many_links"


class LinkError(ServerError):
    """A download link was refused."""

    code = "link_refused"


class LinkInvalidError(LinkError):
    """The link token is malformed or its MAC does not verify."""

    code = "link_invalid"


class LinkExpiredError(LinkError):
    """The link is past its expiry."""

    code = "link_expired"


class LinkUsedError(LinkError):
    """The link has already delivered the whole object once."""

    code = "link_used"


class LinkWrongDeviceError(LinkError):
    """The link is bound to another user or device than the caller's."""

    code = "link_wrong_device"


class ObjectGoneError(LinkError):
    """The stored package was acknowledged or swept and no longer exists."""

    code = "object_gone"


class RangeNotSatisfiableError(ServerError):
    """The ``Range`` header is malformed, multi-range, or outside the object.

    Attributes:
        total: The object's size, for ``Content-Range: bytes */total``.
    """

    code = "range_not_satisfiable"

    def __init__(self, message: str, total: int | None = None) -> None:
        super().__init__(message)
        self.total = total

    def __reduce__(self) -> tuple[type[RangeNotSatisfiableError], tuple[str, int | None]]:  # type: ignore[override]
        return (type(self), (self.message, self.total))


class OverloadedError(ServerError):
    """The server is at capacity and did nothing with the request; retry later.

    Attributes:
        retry_after_seconds: The delay to announce in ``Retry-After``.
    """

    code = "overloaded"

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def __reduce__(self) -> tuple[type[OverloadedError], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_seconds))


class QueueFullError(OverloadedError):
    """The job queue is full; no job was created or scheduled."""

    code = "queue_full"


class ShuttingDownError(OverloadedError, RuntimeError):
    """The job runner is shut down (the process is stopping); nothing was scheduled.

    Also a ``RuntimeError``: for code that drives a runner directly, using a closed
    one is a lifecycle mistake.
    """

    code = "shutting_down"


# --- abuse controls (issue 6) ---------------------------------------------------------------


class RetryLaterError(ServerError):
    """A policy refusal that ends by itself: the client may retry after a delay.

    Attributes:
        retry_after_seconds: The delay to announce in ``Retry-After``.
    """

    code = "retry_later"

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)

    def __reduce__(self) -> tuple[type[RetryLaterError], tuple[str, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_seconds))


class RateLimitedError(RetryLaterError):
    """Too many requests from this user, device or address in the current window."""

    code = "rate_limited"


class QuotaExceededError(RetryLaterError):
    """The user has had the IMLs of this model the quota allows in the current period.

    Attributes:
        resets_at: Unix time at which the next period starts.
    """

    code = "quota_exceeded"

    def __init__(self, message: str, retry_after_seconds: int = 1, resets_at: int = 0) -> None:
        super().__init__(message, retry_after_seconds)
        self.resets_at = resets_at

    def __reduce__(self) -> tuple[type[QuotaExceededError], tuple[str, int, int]]:  # type: ignore[override]
        return (type(self), (self.message, self.retry_after_seconds, self.resets_at))


class AccountBlockedError(ServerError):
    """The account's fraud verdict is ``malicious``: nothing is served but events."""

    code = "account_blocked"


class ApiVersionError(ServerError):
    """The ``X-Modelseal-Api-Version`` header names a version this server does not accept."""

    code = "api_version_unsupported"


class EventRejectedError(ServerError):
    """A reported event is not acceptable (unknown type, time far off, details too big)."""

    code = "event_invalid"


class OverrideInvalidError(ServerError):
    """An operator's verdict override is not acceptable (empty reason, expiry in the past)."""

    code = "override_invalid"


class DatabaseBusyError(OverloadedError):
    """The database did not give a lock in time (SQLite busy timeout, PostgreSQL lock
    timeout, deadlock or serialization failure); the transaction was rolled back. Retry."""

    code = "database_busy"
