"""Mapping of errors to HTTP responses: ``{"error": {"code": ..., "message": ...}}``.

This is the only place that knows which status each error class gets.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelseal.attestation.base import (
    AttestationConfigError,
    AttestationError,
    AttestationMalformedError,
    AttestationUnsupportedError,
)
from modelseal.attestation.revocation import RevocationUnavailableError
from modelseal.errors import (
    ClaimsError,
    FormatError,
    KeyFormatError,
    ModelSealError,
    UsageError,
    VerificationError,
)
from modelseal.keys.pkcs11 import TokenError
from modelseal.server.api.schemas import ErrorBody
from modelseal.server.errors import (
    AccountBlockedError,
    ApiVersionError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    DatabaseBusyError,
    DeviceRevokedError,
    EventRejectedError,
    LinkExpiredError,
    LinkInvalidError,
    LinkUsedError,
    LinkWrongDeviceError,
    NotFoundError,
    ObjectGoneError,
    OverloadedError,
    OverrideInvalidError,
    QueueFullError,
    QuotaExceededError,
    RangeNotSatisfiableError,
    RetryLaterError,
    TooManyLinksError,
    UnknownModelError,
)
from modelseal.server.keyservice.kms import KMSError
from modelseal.server.services.examples import ExamplesInvalidError, ExamplesLimitError

__all__ = ["ERROR_RESPONSES", "STATUS_BY_ERROR", "error_response", "install_error_handlers"]

_log = structlog.get_logger("modelseal.server.api")

STATUS_BY_ERROR: dict[type[ModelSealError], int] = {
    AuthenticationError: 401,
    NotFoundError: 404,
    UnknownModelError: 404,
    ConflictError: 409,
    DeviceRevokedError: 403,
    TooManyLinksError: 429,
    LinkInvalidError: 403,
    LinkWrongDeviceError: 403,
    LinkExpiredError: 410,
    LinkUsedError: 410,
    ObjectGoneError: 410,
    RangeNotSatisfiableError: 416,
    QueueFullError: 429,
    OverloadedError: 503,
    KeyFormatError: 422,
    FormatError: 422,
    VerificationError: 422,
    ClaimsError: 422,
    UsageError: 500,
    ConfigurationError: 500,
    RetryLaterError: 429,
    AccountBlockedError: 403,
    ApiVersionError: 400,
    EventRejectedError: 422,
    OverrideInvalidError: 422,
    ExamplesInvalidError: 422,
    ExamplesLimitError: 422,
    AttestationError: 403,
    AttestationMalformedError: 422,
    AttestationUnsupportedError: 422,
    AttestationConfigError: 500,
    # Google's status list could not be read and the checker fails closed: not the
    # device's fault, and worth retrying.
    RevocationUnavailableError: 503,
    # The key backend (HSM, KMS) failed while signing: the server's fault, retryable.
    TokenError: 503,
    KMSError: 503,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
}
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "unauthenticated"},
    404: {"model": ErrorBody, "description": "not_found (also: not the caller's)"},
    422: {"model": ErrorBody, "description": "invalid_request: the message names the field"},
    503: {"model": ErrorBody, "description": "overloaded: retry after Retry-After seconds"},
}


DEPENDENCY_RETRY_AFTER_SECONDS = 30


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, int] | None = None,
) -> JSONResponse:
    """The one error body shape (``extra``: machine-readable members such as ``resets_at``)."""
    return JSONResponse(
        {"error": {"code": code, "message": message, **(extra or {})}},
        status_code=status,
        headers=headers,
    )


def _status_for(exc: ModelSealError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


async def _modelseal_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ModelSealError):  # registered for this class only
        raise exc
    status = _status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="modelseal"'
    if isinstance(exc, RangeNotSatisfiableError) and exc.total is not None:
        headers["Content-Range"] = f"bytes */{exc.total}"
    if isinstance(exc, OverloadedError):
        # A refusal for capacity, not a fault: the client is told when to come back.
        headers["Retry-After"] = str(exc.retry_after_seconds)
        return error_response(status, exc.code, exc.message, headers)
    if isinstance(exc, RetryLaterError):
        # Quotas and rate limits: say when to come back, in the header and the body.
        headers["Retry-After"] = str(exc.retry_after_seconds)
        extra = {"retry_after_seconds": exc.retry_after_seconds}
        if isinstance(exc, QuotaExceededError):
            extra["resets_at"] = exc.resets_at
        return error_response(status, exc.code, exc.message, headers, extra)
    if isinstance(exc, RevocationUnavailableError):
        # Not the device's fault and retryable: the client is told so, and when.
        _log.warning("attestation_status_list_unavailable", code=exc.code)
        headers["Retry-After"] = "60"
        return error_response(503, exc.code, exc.message, headers)
    if status == 503:
        # A service the server depends on (HSM, cloud KMS) failed: retryable, and not the
        # client's fault. Its message may name internals, so the client gets the code only.
        _log.warning("dependency_unavailable", code=exc.code, error_type=type(exc).__name__)
        headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
        return error_response(
            503, exc.code, "a service the server depends on is unavailable; retry later", headers
        )
    if status >= 500:
        _log.error("server_error", code=exc.code, error_type=type(exc).__name__)
        return error_response(500, "internal_error", "internal server error")
    return error_response(status, exc.code, exc.message, headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # registered for this class only
        raise exc
    errors = exc.errors()
    if not errors:
        return error_response(422, "invalid_request", "invalid request")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header"):
        where = location[0] + (" field " + ".".join(location[1:]) if location[1:] else "")
    else:
        where = ".".join(location) or "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    # Input values are never echoed: they may hold keys or tokens.
    return error_response(422, "invalid_request", message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # registered for this class only
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    message = exc.detail if isinstance(exc.detail, str) else code
    return error_response(exc.status_code, code, message, headers)


# PostgreSQL SQLSTATEs of a lock not obtained in time: lock_not_available, deadlock_detected,
# serialization_failure, query_canceled (statement or lock timeout).
_PG_BUSY_STATES = frozenset({"55P03", "40P01", "40001", "57014"})


def _database_busy(exc: Exception) -> bool:
    """Whether ``exc`` is the database refusing a lock in time (a retry may succeed)."""
    if not isinstance(exc, sqlalchemy.exc.OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig)
        return text.startswith(("database is locked", "database table is locked")) or (
            text.startswith("database is busy")
        )
    return getattr(orig, "sqlstate", None) in _PG_BUSY_STATES


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if _database_busy(exc):
        # Under load the database may not give its lock within the busy timeout: nothing
        # was committed, so the client is told to retry (503 + Retry-After), never 500.
        _log.warning("database_busy", error_type=type(exc).__name__)
        return await _modelseal_error(request, DatabaseBusyError("the database is busy; retry"))
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unhandled_exception", error_type=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ModelSealError, _modelseal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
