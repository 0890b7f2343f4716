"""What the client still owes the server: acknowledgements and security events.

``outbox.json``::

    {"v": 1,
     "acks": ["<jti>", ...],
     "events": [{"type": "tls_pin_mismatch", "at": 1800000000,
                 "details": {"host": ..., "observed_pin": "sha256/..."}}, ...]}

An acknowledgement is queued before the downloaded ciphertext is deleted, so a
crash or a failed ``POST /v1/issuances/{jti}/ack`` never loses it; it is retried
on every later connection that passes the TLS checks. Events are recorded when
something suspicious happens (a TLS pin mismatch, a package that failed to
verify), including when the server itself cannot be trusted at that moment, and
are offered to ``POST /v1/events`` on the next good connection. Servers without
that endpoint answer 404; the events then stay here (at most
:data:`MAX_EVENTS`, oldest dropped first) for a later server version or for
inspection (``modelseal device list --json`` shows the count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelseal.client.datadir import DataDir, read_json_object, write_json_object
from modelseal.client.errors import ClientStateError

__all__ = ["MAX_EVENTS", "Event", "EventType", "Outbox"]

MAX_EVENTS = 256
MAX_ACKS = 4096


class EventType:
    """Event types the client records."""

    TLS_PIN_MISMATCH = "tls_pin_mismatch"
    DOWNLOAD_FAILURE = "download_failure"


@dataclass(frozen=True, slots=True)
class Event:
    """One security event, as recorded and as sent."""

    type: str
    at: int
    details: Mapping[str, str | int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event's JSON form."""
        return {"type": self.type, "at": self.at, "details": dict(self.details)}


def _event(obj: object) -> Event:
    if not isinstance(obj, dict) or set(obj) != {"type", "at", "details"}:
        raise ClientStateError("outbox.json: an event must have type, at and details")
    kind, at, details = obj["type"], obj["at"], obj["details"]
    if not isinstance(kind, str) or type(at) is not int or not isinstance(details, dict):
        raise ClientStateError("outbox.json: an event has a member of the wrong type")
    return Event(kind, at, details)


class Outbox:
    """The pending acknowledgements and events of one data directory."""

    __slots__ = ("_clock", "_path")

    def __init__(self, datadir: DataDir, clock: Callable[[], float] = time.time) -> None:
        """Use ``datadir``'s ``outbox.json``."""
        self._path = datadir.outbox
        self._clock = clock

    def _read(self) -> tuple[list[str], list[Event]]:
        document = read_json_object(self._path)
        if document is None:
            return [], []
        if set(document) != {"v", "acks", "events"} or document["v"] != 1:
            raise ClientStateError("outbox.json is malformed")
        acks, events = document["acks"], document["events"]
        if not isinstance(acks, list) or not all(isinstance(a, str) for a in acks):
            raise ClientStateError("outbox.json: acks must be an array of strings")
        if not isinstance(events, list):
            raise ClientStateError("outbox.json: events must be an array")
        return list(acks), [_event(e) for e in events]

    def _write(self, acks: list[str], events: list[Event]) -> None:
        document = {
            "v": 1,
            "acks": acks[-MAX_ACKS:],
            "events": [event.to_json() for event in events[-MAX_EVENTS:]],
        }
        write_json_object(self._path, document)

    def acks(self) -> list[str]:
        """Issuance ids whose acknowledgement has not reached the server yet."""
        return self._read()[0]

    def events(self) -> list[Event]:
        """Events not delivered yet, oldest first."""
        return self._read()[1]

    def add_ack(self, jti: str) -> None:
        """Queue the acknowledgement of ``jti``."""
        acks, events = self._read()
        if jti not in acks:
            acks.append(jti)
            self._write(acks, events)

    def remove_ack(self, jti: str) -> None:
        """Forget ``jti``: the server has it."""
        acks, events = self._read()
        if jti in acks:
            acks.remove(jti)
            self._write(acks, events)

    def record(self, type_: str, **details: str | int | None) -> Event:
        """Record an event now."""
        event = Event(type_, int(self._clock()), details)
        acks, events = self._read()
        events.append(event)
        self._write(acks, events)
        return event

    def remove_events(self, delivered: list[Event]) -> None:
        """Forget events the server accepted."""
        acks, events = self._read()
        remaining = list(events)
        for event in delivered:
            if event in remaining:
                remaining.remove(event)
        self._write(acks, remaining)
