"""API rate limits per user, device and client address, on the ``limits`` library.

Limits are counted after authentication (a request is charged to the account that
made it) with one exception: failed authentications are counted per client address,
and an address past ``auth_failure_limit`` is refused before any credential is
checked, which caps credential stuffing and the Argon2id work it costs.

Storage is ``memory://`` for one process, or Redis shared by every process and node
(``rate_limit_storage = "redis://127.0.0.1:6379"``; keys start with
``rate_limit_key_prefix``). If the shared storage fails, requests are let through
and the failure is logged: rate limits protect capacity, while the per-user IML
quota, which protects the models, lives in the database and does not depend on it.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from modelseal.server.errors import ConfigurationError
from modelseal.server.settings import AbuseSettings

__all__ = ["RateLimits", "Refusal", "address_key"]

_log = structlog.get_logger("modelseal.server.ratelimit")
_STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit refused a request, and for how long."""

    scope: str
    retry_after_seconds: int


class RateLimits:
    """The server's rate limiters (thread-safe; one per app)."""

    def __init__(self, settings: AbuseSettings) -> None:
        """Open the storage named by ``settings.rate_limit_storage``.

        Raises:
            ConfigurationError: The storage is not a synchronous one.
        """
        options: dict[str, str | bool] = {"wrap_exceptions": True}
        if not settings.rate_limit_storage.startswith("memory://"):
            options["key_prefix"] = settings.rate_limit_key_prefix
        storage = storage_from_string(settings.rate_limit_storage, **options)
        if not isinstance(storage, Storage):  # an async scheme such as async+redis://
            raise ConfigurationError("rate_limit_storage must name a synchronous storage")
        self._storage = storage
        self._limiter = _STRATEGIES[settings.rate_limit_strategy](self._storage)
        # Flood events are throttled with a fixed window: exactly one per interval.
        self._throttle = FixedWindowRateLimiter(self._storage)
        self._interval = settings.event_record_interval_seconds
        self._user = _item(settings.user_rate_limit)
        self._suspicious = _item(settings.suspicious_user_rate_limit)
        self._device = _item(settings.device_rate_limit)
        self._ip = _item(settings.ip_rate_limit)
        self._auth_failures = _item(settings.auth_failure_limit)
        self._app_events = _item(settings.app_events_per_user_limit)

    def hit(
        self, *, user_id: int, device_id: str | None, ip: str | None, suspicious: bool
    ) -> Refusal | None:
        """Charge one request to the caller's user, device and address.

        Returns:
            None when every limit allows it, else the first limit that refused.
        """
        user_item = self._suspicious if suspicious and self._suspicious else self._user
        checks: list[tuple[str, RateLimitItem | None, str | None]] = [
            ("user", user_item, str(user_id)),
            # Device ids are unique per user only: the device's bucket is the user's device.
            ("device", self._device, None if device_id is None else f"{user_id}:{device_id}"),
            ("ip", self._ip, None if ip is None else address_key(ip)),
        ]
        for scope, item, key in checks:
            if item is None or key is None:
                continue
            refusal = self._charge(scope, item, key)
            if refusal is not None:
                return refusal
        return None

    def _charge(self, scope: str, item: RateLimitItem, key: str) -> Refusal | None:
        try:
            if self._limiter.hit(item, scope, key):
                return None
            stats = self._limiter.get_window_stats(item, scope, key)
        except StorageError as exc:
            _log.error(
                "rate_limit_storage_unavailable", error_type=type(exc.storage_error).__name__
            )
            return None
        return Refusal(scope, max(1, math.ceil(stats.reset_time - time.time())))

    def auth_refused(self, ip: str | None) -> Refusal | None:
        """Whether ``ip`` is past its failed-authentication limit (charges nothing)."""
        if self._auth_failures is None or ip is None:
            return None
        key = address_key(ip)
        try:
            if self._limiter.test(self._auth_failures, "authfail", key):
                return None
            stats = self._limiter.get_window_stats(self._auth_failures, "authfail", key)
        except StorageError:
            return None
        return Refusal("auth", max(1, math.ceil(stats.reset_time - time.time())))

    def auth_failed(self, ip: str | None) -> None:
        """Count one failed authentication from ``ip``."""
        if self._auth_failures is None or ip is None:
            return
        try:
            self._limiter.hit(self._auth_failures, "authfail", address_key(ip))
        except StorageError:
            return

    def app_events(self, user_id: int, count: int) -> Refusal | None:
        """Charge ``count`` stored app events to ``user_id`` (all or none).

        Returns:
            None when the per-user event limit allows them all, else the refusal.
        """
        if self._app_events is None:
            return None
        try:
            if self._limiter.hit(self._app_events, "appevents", str(user_id), cost=count):
                return None
            stats = self._limiter.get_window_stats(self._app_events, "appevents", str(user_id))
        except StorageError:
            return None
        return Refusal("events", max(1, math.ceil(stats.reset_time - time.time())))

    def within_interval(self, kind: str, key: str, count: int) -> bool:
        """True for the first ``count`` calls per ``event_record_interval_seconds`` for
        ``(kind, key)``."""
        item = parse(f"{count} per {self._interval} second")
        try:
            return self._throttle.hit(item, "event", kind, key)
        except StorageError:
            return True

    def first_in_interval(self, kind: str, key: str) -> bool:
        """True once per ``event_record_interval_seconds`` for ``(kind, key)``.

        Used to record one event for a flood of refusals instead of one per request.
        """
        item = parse(f"1 per {self._interval} second")
        try:
            return self._throttle.hit(item, "event", kind, key)
        except StorageError:
            return True


def address_key(ip: str) -> str:
    """The bucket of a client address: an IPv6 client is its /64 (one subscriber gets a
    whole /64 and picks addresses in it at will); IPv4 (and IPv4-mapped) as is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a Unix socket, a test client)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _item(text: str | None) -> RateLimitItem | None:
    return parse(text) if text is not None else None
