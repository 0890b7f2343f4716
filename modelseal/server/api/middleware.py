"""Pure ASGI middleware: request ids and the one log line per request; load shedding;
body guards.

Pure ASGI (not BaseHTTPMiddleware) so streamed downloads pass through untouched.
Every refusal made here has the API's error body ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

from modelseal.server.errors import OverloadedError

__all__ = [
    "EXEMPT_FROM_LIMIT",
    "NEW_WORK",
    "BodyGuardMiddleware",
    "InFlightLimitMiddleware",
    "RequestContextMiddleware",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = structlog.get_logger("modelseal.server.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json", re.IGNORECASE)
# Probes must still answer while the server sheds load: that is when they matter.
EXEMPT_FROM_LIMIT = frozenset({"/healthz", "/metrics"})
# Requests that start work the server must then finish (generate, seal, deliver).
NEW_WORK = frozenset({("POST", "/v1/imls")})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Request id in and out (``X-Request-ID``) and one JSON log line per request.

    The line has the route template, never the raw path: a download path holds a
    link token.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        )
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            _log.info(
                "request",
                method=scope.get("method"),
                route=template,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


class InFlightLimitMiddleware:
    """Shed load: 503 ``overloaded`` (with ``Retry-After``) instead of an ever longer wait.

    Two counts are kept. *In flight*: requests admitted and not finished, a download
    until its last byte; from ``limit`` on every request is refused. *Working*: requests
    admitted whose response has not started yet, that is, whose handler is still
    deciding or computing; from ``new_work_limit`` on, requests that start new work
    (``new_work``: an IML request, which commits the server to generate, seal and
    deliver) are refused. Under overload the server so finishes the work it accepted
    (job polls, downloads, acknowledgements) instead of accepting more than it can
    finish, and downloads streaming to slow clients do not block new requests.

    Refused requests are turned away before their body is read or anything is looked
    up, so shedding costs almost nothing. Paths in ``exempt`` are never refused. The
    counts live in the event loop's thread and change only between awaits, so they
    need no lock; each server process has its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        retry_after_seconds: int = 1,
        *,
        new_work_limit: int | None = None,
        new_work: frozenset[tuple[str, str]] = NEW_WORK,
        exempt: frozenset[str] = EXEMPT_FROM_LIMIT,
        on_refusal: Callable[[], None] | None = None,
    ) -> None:
        """Wrap ``app``.

        Args:
            app: The application.
            limit: Requests allowed in flight at once (>= 1).
            retry_after_seconds: The ``Retry-After`` of a refusal.
            new_work_limit: Working requests from which ``new_work`` is refused
                (1..``limit``; default ``limit``).
            new_work: ``(method, path)`` pairs that start new work.
            exempt: Exact paths that bypass the limits.
            on_refusal: Called once per refused request (metrics).
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        new_work_limit = limit if new_work_limit is None else new_work_limit
        if not 1 <= new_work_limit <= limit:
            raise ValueError(f"new_work_limit must be 1..{limit}, got {new_work_limit}")
        self.app = app
        self.limit = limit
        self.new_work_limit = new_work_limit
        self.new_work = new_work
        self.exempt = exempt
        self.on_refusal = on_refusal
        self._retry_after = str(retry_after_seconds).encode()
        self._in_flight = 0
        self._working = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return self._in_flight

    @property
    def working(self) -> int:
        """Requests admitted whose response has not started."""
        return self._working

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        path = scope.get("path")
        if scope["type"] != "http" or path in self.exempt:
            await self.app(scope, receive, send)
            return
        starts_work = (scope.get("method"), path) in self.new_work
        if self._in_flight >= self.limit or (starts_work and self._working >= self.new_work_limit):
            if self.on_refusal is not None:
                self.on_refusal()
            await _send_error(
                send,
                503,
                OverloadedError.code,
                "the server is at capacity; retry after the Retry-After delay",
                [(b"retry-after", self._retry_after)],
            )
            return
        working = True

        async def send_and_track(message: Message) -> None:
            nonlocal working
            if working and message["type"] == "http.response.start":
                working = False
                self._working -= 1
            await send(message)

        self._in_flight += 1
        self._working += 1
        try:
            await self.app(scope, receive, send_and_track)
        finally:
            self._in_flight -= 1
            if working:
                self._working -= 1


class BodyGuardMiddleware:
    """Refuse request bodies over ``max_bytes`` (413) or not JSON (415), before parsing.

    Checks ``Content-Length`` first, then counts what actually arrives (chunked
    uploads have no length), buffering at most ``max_bytes``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await _send_error(
                    send, 413, "body_too_large", f"request body exceeds {self.max_bytes} bytes"
                )
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            piece = message.get("body", b"")
            size += len(piece)
            if size > self.max_bytes:
                await _send_error(
                    send, 413, "body_too_large", f"request body exceeds {self.max_bytes} bytes"
                )
                return
            chunks.append(piece)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body:
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip()
            if not _JSON_TYPE.fullmatch(content_type):
                await _send_error(
                    send, 415, "unsupported_media_type", "request body must be application/json"
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
