"""Google's attestation certificate status list: loading, caching and checking.

Google publishes the serial numbers of revoked or suspended attestation certificates at
:data:`GOOGLE_STATUS_URL` as JSON::

    {"entries": {"<serial, lowercase hex, no leading zeros>":
                 {"status": "REVOKED" | "SUSPENDED", "reason": "KEY_COMPROMISE", ...}}}

:class:`StatusListCache` loads that document from an ``https://`` (or ``http://``) URL with
httpx, or from a file, and keeps it for ``ttl_seconds``. Every serial of a chain is looked
up. A listed serial is refused, whatever its status: a suspended attestation key is not
trusted while suspended, and an unknown status is treated like a revocation.

When a refresh fails, a copy up to ``max_stale_seconds`` old is still used. With no usable
copy, the cache **fails closed** by default: it raises
:class:`RevocationUnavailableError`, and enrollment waits until the list is reachable again.
``fail_open=True`` turns that into a result marked unchecked. The Android verifier then adds
the ``revocation_unchecked`` signal. Fail-open suits development, or an operator who would
rather let enrollment through and score it than lose it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import structlog

from modelseal.attestation.base import (
    AttestationConfigError,
    AttestationError,
    AttestationRevokedError,
)

__all__ = [
    "GOOGLE_STATUS_URL",
    "RevocationChecker",
    "RevocationOutcome",
    "RevocationUnavailableError",
    "StatusEntry",
    "StatusList",
    "StatusListCache",
    "serial_key",
]

GOOGLE_STATUS_URL = "https://android.googleapis.com/attestation/status"
MAX_STATUS_LIST_BYTES = 32 * 1024 * 1024
MAX_SERIAL_HEX_CHARS = 64

_log = structlog.get_logger("modelseal.attestation.revocation")


class RevocationUnavailableError(AttestationError):
    """The status list could not be loaded and the cache fails closed."""

    code = "attestation_revocation_unavailable"


class _LoadError(Exception):
    """Internal: one attempt to load the list failed (the reason stays in the message)."""


def serial_key(serial: int) -> str:
    """The status list's key for a certificate serial: lowercase hex, no leading zeros."""
    return format(serial, "x") if serial >= 0 else "-" + format(-serial, "x")


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """One listed serial."""

    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class StatusList:
    """A parsed status list: listed serials (normalised hex) and their entries."""

    entries: Mapping[str, StatusEntry]

    @classmethod
    def parse(cls, data: bytes) -> StatusList:
        """Parse the JSON document.

        Raises:
            ValueError: It is not a status list (not JSON, no ``entries`` object, a key
                that is not hex, an entry without a string ``status``).
        """
        document = json.loads(data)
        if not isinstance(document, dict) or not isinstance(document.get("entries"), dict):
            raise ValueError("status list has no 'entries' object")
        entries: dict[str, StatusEntry] = {}
        for key, value in document["entries"].items():
            normalised = key.strip().lower().lstrip("0") or "0"
            if len(normalised) > MAX_SERIAL_HEX_CHARS or any(
                c not in "0123456789abcdef" for c in normalised
            ):
                raise ValueError(f"status list key {key[:70]!r} is not a hex serial")
            if not isinstance(value, dict) or not isinstance(value.get("status"), str):
                raise ValueError(f"status list entry {key[:70]!r} has no status")
            reason = value.get("reason")
            entries[normalised] = StatusEntry(
                status=value["status"], reason=reason if isinstance(reason, str) else None
            )
        return cls(entries=entries)

    def lookup(self, serial: int) -> StatusEntry | None:
        """The entry for ``serial``, or ``None`` if it is not listed."""
        return self.entries.get(serial_key(serial))


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What a revocation check established.

    Attributes:
        checked: ``False`` only when the list was unavailable and the cache fails open.
        list_age_seconds: Age of the list used, or ``None`` when unchecked.
    """

    checked: bool
    list_age_seconds: int | None


class RevocationChecker(Protocol):
    """Something that can refuse revoked certificate serials."""

    def check(self, serials: Sequence[int], *, now: int) -> RevocationOutcome:
        """Check ``serials`` at ``now`` (unix seconds).

        Raises:
            AttestationRevokedError: A serial is listed.
            RevocationUnavailableError: No list could be used and the checker fails closed.
        """
        ...


class StatusListCache:
    """A status list loaded from a URL or file, cached with a TTL; implements the checker."""

    def __init__(
        self,
        source: str | Path = GOOGLE_STATUS_URL,
        *,
        ttl_seconds: int = 3600,
        max_stale_seconds: int = 24 * 3600,
        fail_open: bool = False,
        timeout_seconds: float = 10.0,
        retry_seconds: int = 60,
        client: httpx.Client | None = None,
    ) -> None:
        """Configure the source and cache lifetime; nothing is loaded until first use.

        Args:
            source: An ``https://`` or ``http://`` URL, or a file path.
            ttl_seconds: How long a loaded list is used before it is refreshed.
            max_stale_seconds: How long past its TTL a list may still serve if a refresh
                fails (``0``: never).
            fail_open: Return an unchecked outcome instead of raising when no list is usable.
            timeout_seconds: HTTP timeout per request.
            retry_seconds: After a failed refresh, how long a still-usable stale list is
                served before the next attempt (so an outage does not put a fetch with its
                full timeout in front of every request).
            client: An httpx client to reuse (for proxies or connection pooling).

        Raises:
            AttestationConfigError: A negative lifetime or an empty source.
        """
        if ttl_seconds < 0 or max_stale_seconds < 0 or retry_seconds < 0 or timeout_seconds <= 0:
            raise AttestationConfigError("status list lifetimes must be >= 0, timeout > 0")
        text = str(source)
        if not text:
            raise AttestationConfigError("status list source is empty")
        self._url = text if text.startswith(("https://", "http://")) else None
        self._path = None if self._url else Path(text)
        self._ttl = ttl_seconds
        self._max_stale = max_stale_seconds
        self._fail_open = fail_open
        self._timeout = timeout_seconds
        self._client = client
        self._lock = threading.Lock()
        self._list: StatusList | None = None
        self._loaded_at = 0
        self._retry = retry_seconds
        self._failed_at: int | None = None
        self.loads = 0

    @property
    def source(self) -> str:
        """The URL or file path the list comes from."""
        return self._url or str(self._path)

    def check(self, serials: Sequence[int], *, now: int) -> RevocationOutcome:
        """Refuse any listed serial (see :class:`RevocationChecker`).

        Raises:
            AttestationRevokedError: A serial is listed (the message gives it in hex).
            RevocationUnavailableError: No usable list and the cache fails closed.
        """
        status_list, age = self._current(now)
        if status_list is None:
            return RevocationOutcome(checked=False, list_age_seconds=None)
        for serial in serials:
            entry = status_list.lookup(serial)
            if entry is not None:
                raise AttestationRevokedError(
                    f"certificate serial {serial_key(serial)[:64]} is {entry.status[:16]} "
                    "on the attestation status list"
                )
        return RevocationOutcome(checked=True, list_age_seconds=age)

    def _current(self, now: int) -> tuple[StatusList | None, int]:
        with self._lock:
            if self._list is not None and 0 <= now - self._loaded_at < self._ttl:
                return self._list, now - self._loaded_at
            if (
                self._list is not None
                and self._failed_at is not None
                and 0 <= now - self._failed_at < self._retry
                and now - self._loaded_at <= self._ttl + self._max_stale
            ):
                return self._list, now - self._loaded_at
            try:
                fresh: StatusList | None = StatusList.parse(self._load())
            except (_LoadError, ValueError, RecursionError) as exc:
                _log.warning(
                    "attestation_status_list_unavailable", source=self.source, error=str(exc)
                )
                fresh = None
            if fresh is not None:
                self._list, self._loaded_at, self._failed_at = fresh, now, None
                self.loads += 1
                return fresh, 0
            self._failed_at = now
            if self._list is not None and 0 <= now - self._loaded_at <= self._ttl + self._max_stale:
                return self._list, now - self._loaded_at
            if self._fail_open:
                return None, 0
            raise RevocationUnavailableError(
                "the attestation status list is unavailable; refusing (fail-closed)"
            )

    def _load(self) -> bytes:
        if self._path is not None:
            try:
                with self._path.open("rb") as f:
                    data = f.read(MAX_STATUS_LIST_BYTES + 1)
            except OSError as exc:
                raise _LoadError(f"cannot read {self._path}") from exc
        else:
            assert self._url is not None
            data = self._fetch(self._url)
        if len(data) > MAX_STATUS_LIST_BYTES:
            raise _LoadError("status list is too large")
        return data

    def _fetch(self, url: str) -> bytes:
        client = self._client or httpx.Client(timeout=self._timeout, follow_redirects=False)
        try:
            with client.stream("GET", url, timeout=self._timeout) as response:
                if response.status_code != httpx.codes.OK:
                    raise _LoadError(f"status list HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_STATUS_LIST_BYTES:
                        raise _LoadError("status list is too large")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise _LoadError("status list fetch failed") from exc
        finally:
            if self._client is None:
                client.close()
