"""Fraud events: the closed vocabulary the rules speak, and the app-reported event schema.

Every event the anti-fraud engine scores has a *type*, a *source* and a server-side time:

- :class:`ServerEventType`: facts the server observed itself (a refused link, a key seen on a
  second device, a decoy used). Only events with source ``"server"`` count for these types.
- :class:`AppEventType`: facts the device app reported through ``POST /v1/events``
  (:class:`AppEventBatchIn`). The schema accepts only these types, and the engine ignores a
  server type whose source is ``"app"``, so an app can never forge a server fact such as
  ``honey_token_used``.

An app report is a claim by a client that may be hostile. It can only make its own user look
worse (reports are filed under the authenticated user), never better: no rule gives negative
points. Its ``at`` is the device's clock and is kept only for operators (``client_at``); the
engine scores every event at the time the server received it.

Events stored before this vocabulary existed (``access_error`` with ``details.reason``) are
translated by :func:`canonical_type`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

__all__ = [
    "ACCESS_ERROR_REASONS",
    "APP_EVENT_TYPES",
    "DETAIL_KEY_PATTERN",
    "DEVICE_ID_PATTERN",
    "LEGACY_APP_EVENT_TYPES",
    "MAX_DETAIL_KEYS",
    "MAX_DETAIL_STRING_CHARS",
    "MAX_EVENTS_PER_BATCH",
    "SERVER_EVENT_TYPES",
    "AppEventBatchIn",
    "AppEventIn",
    "AppEventType",
    "EventSource",
    "FraudEvent",
    "ServerEventType",
    "canonical_type",
    "fraud_event",
]

MAX_EVENTS_PER_BATCH: Final = 256
"""Largest batch :class:`AppEventBatchIn` accepts: the client's outbox holds at most 256."""

MAX_DETAIL_KEYS: Final = 16
MAX_DETAIL_STRING_CHARS: Final = 256
DETAIL_KEY_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
DEVICE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""The server's device id syntax (``modelseal.server.services.devices``), repeated here so the
engine does not import the server; a test keeps the two equal."""

_MAX_CLIENT_TIME: Final = 2**40


class EventSource(StrEnum):
    """Who observed the event."""

    SERVER = "server"
    APP = "app"


class AppEventType(StrEnum):
    """Events a device app reports about itself (``POST /v1/events``)."""

    JAILBREAK_DETECTED = "jailbreak_detected"
    """iOS: the app's jailbreak checks fired."""
    ROOT_DETECTED = "root_detected"
    """Android: su binary, Magisk, test-keys build or similar."""
    KEYSTORE_UNAVAILABLE = "keystore_unavailable"
    """Keychain or Keystore refused to create or use the device key."""
    APP_REINSTALLED = "app_reinstalled"
    """First start after an install that found server state for this user."""
    DOWNLOAD_FAILED = "download_failed"
    """A model download or its verification failed (``details.reason`` is the error code)."""
    APP_SIGNATURE_INVALID = "app_signature_invalid"
    """The app's own code-signature or package-certificate check failed: a repackaged app."""
    DEBUGGER_ATTACHED = "debugger_attached"
    """A debugger is attached to the app process."""
    EMULATOR_DETECTED = "emulator_detected"
    """The app runs in an emulator or simulator."""
    HOOKING_FRAMEWORK_DETECTED = "hooking_framework_detected"
    """Frida, Xposed, Substrate or a similar instrumentation framework is loaded."""
    TLS_PIN_MISMATCH = "tls_pin_mismatch"
    """The server's certificate did not match the pinned SPKI: an interception proxy."""
    CLOCK_TAMPERED = "clock_tampered"
    """The device clock moved backwards past a licence check."""
    MODEL_INTEGRITY_FAILED = "model_integrity_failed"
    """A model stored at rest failed authentication when loaded."""


class ServerEventType(StrEnum):
    """Events the server records itself."""

    RATE_LIMITED = "rate_limited"
    """A request was refused by a rate limit (recorded at most once per interval)."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """An IML request was refused by the per-user quota."""
    LINK_EXPIRED = "link_expired"
    """A download link was used after its expiry (or its object was already gone)."""
    LINK_REUSED = "link_reused"
    """A single-use download link was presented a second time."""
    LINK_TAMPERED = "link_tampered"
    """A download link did not verify (malformed or bad MAC)."""
    LINK_WRONG_DEVICE = "link_wrong_device"
    """A download link was presented by another user or device than it was bound to."""
    REVOKED_DEVICE_USED = "revoked_device_used"
    """A revoked device tried to fetch or request."""
    API_VERSION_OBSOLETE = "api_version_obsolete"
    """The client announced an API version the server refuses as obsolete."""
    API_VERSION_INVALID = "api_version_invalid"
    """The client announced an API version that never existed."""
    SAME_KEY_OTHER_DEVICE = "same_key_other_device"
    """A public key already registered to a device was presented for another device.
    ``details.other_user`` is true when the first device belongs to another user."""
    DEVICE_KEY_PINNED = "device_key_pinned"
    """A device id already pinned to one key was presented with another key."""
    ATTESTATION_FAILED = "attestation_failed"
    """Attestation evidence was present and did not verify."""
    ATTESTATION_MISSING = "attestation_missing"
    """A platform that gives attestation sent none."""
    ATTESTATION_COUNTER_REPLAYED = "attestation_counter_replayed"
    """An App Attest assertion counter did not increase: a replayed or cloned key."""
    ATTESTATION_WEAK = "attestation_weak"
    """Attestation verified but carried a fraud signal (``details.signal``, e.g.
    ``unlocked_bootloader``, ``not_from_store``)."""
    HONEY_TOKEN_USED = "honey_token_used"  # noqa: S105 - an event name, not a secret
    """A decoy model id, account or device key was used (``details.kind``)."""
    LINKED_ACCOUNT_BLOCKED = "linked_account_blocked"
    """The user shared a client address with an account that became malicious
    (``details.linked_user``): account farms rotating through accounts."""
    CREDENTIAL_FAILURE = "credential_failure"
    """An authentication attempt failed for a known user (``details.ip`` if recorded)."""
    DEVICE_REGISTERED = "device_registered"
    """A device key was registered (``device_id`` is the new device)."""
    DEVICE_REVOKED = "device_revoked"
    """A device was revoked."""
    IML_REQUESTED = "iml_requested"
    """An IML was requested and accepted."""
    DOWNLOAD_COMPLETED = "download_completed"
    """A package was downloaded in full."""
    ISSUANCE_ACKED = "issuance_acked"
    """The device acknowledged an issuance."""
    FRAUD_OVERRIDE = "fraud_override"
    """An operator set or cleared a verdict override (informational; no default rule)."""


APP_EVENT_TYPES: Final = frozenset(t.value for t in AppEventType)
SERVER_EVENT_TYPES: Final = frozenset(t.value for t in ServerEventType)

ACCESS_ERROR_REASONS: Final[Mapping[str, ServerEventType]] = {
    "link_invalid": ServerEventType.LINK_TAMPERED,
    "link_expired": ServerEventType.LINK_EXPIRED,
    "object_gone": ServerEventType.LINK_EXPIRED,
    "link_used": ServerEventType.LINK_REUSED,
    "link_wrong_device": ServerEventType.LINK_WRONG_DEVICE,
    "device_revoked": ServerEventType.REVOKED_DEVICE_USED,
}
"""``access_error`` events (``details.reason`` = the refusal's error code) as fraud types.
Reasons not listed (``range_not_satisfiable``) are not fraud signals."""

LEGACY_APP_EVENT_TYPES: Final[Mapping[str, AppEventType]] = {
    "download_failure": AppEventType.DOWNLOAD_FAILED,
}
"""Type names sent by clients released before this vocabulary (``modelseal.client.outbox``)."""


def canonical_type(type_: str, details: Mapping[str, Any]) -> str:
    """The fraud type of a stored event.

    ``access_error`` becomes the specific link type named by ``details.reason`` (or stays
    ``access_error``, which no rule uses, for reasons that are not fraud signals); legacy app
    type names become their current names; every other type is returned unchanged.

    Args:
        type_: The stored ``events.type``.
        details: The stored ``events.details``.
    """
    if type_ == "access_error":
        reason = details.get("reason")
        mapped = ACCESS_ERROR_REASONS.get(reason) if isinstance(reason, str) else None
        return mapped.value if mapped is not None else type_
    legacy = LEGACY_APP_EVENT_TYPES.get(type_)
    return legacy.value if legacy is not None else type_


@dataclass(frozen=True, slots=True)
class FraudEvent:
    """One event as the engine sees it.

    Attributes:
        id: Unique id (the ``events`` row id); with ``at`` it orders events.
        type: A :class:`ServerEventType` or :class:`AppEventType` value, or an operator
            type declared in the rules file.
        at: Unix seconds, **server** time of recording.
        source: ``"server"`` or ``"app"``.
        user_id: The user the event is filed under.
        device_id: The device concerned, if any.
        details: Small JSON object (ids and codes, never secrets).
    """

    id: int
    type: str
    at: int
    source: str
    user_id: int | None = None
    device_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def fraud_event(
    *,
    id: int,
    type_: str,
    at: int,
    source: str,
    user_id: int | None,
    device_id: str | None,
    details: Mapping[str, Any] | None,
) -> FraudEvent:
    """Build a :class:`FraudEvent` from a stored event row, translating its type.

    Args:
        id: The row id.
        type_: The stored type (see :func:`canonical_type`).
        at: The row's server-side ``created_at``.
        source: The row's source.
        user_id: The row's user.
        device_id: The row's device.
        details: The row's details (``None``, or anything but an object, is an empty object).
    """
    if not isinstance(details, Mapping):
        details = {}
    return FraudEvent(id, canonical_type(type_, details), at, source, user_id, device_id, details)


# --- POST /v1/events --------------------------------------------------------------------------

DetailKey = Annotated[str, StringConstraints(pattern=f"^{DETAIL_KEY_PATTERN.pattern}$")]
DetailValue = (
    Annotated[str, StringConstraints(max_length=MAX_DETAIL_STRING_CHARS, strict=True)]
    | Annotated[StrictInt, Field(ge=-(2**53), le=2**53)]
    | StrictBool
    | None
)


class AppEventIn(BaseModel):
    """One app-reported event.

    Attributes:
        type: What happened (legacy client names such as ``download_failure`` are accepted
            and translated).
        at: The device's clock when it happened. Untrusted: stored as ``client_at`` for
            operators, never used for scoring.
        details: At most 16 members, keys ``[a-z][a-z0-9_]{0,31}``, values short strings,
            integers, booleans or null. Never secrets.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: AppEventType
    at: Annotated[StrictInt, Field(ge=0, le=_MAX_CLIENT_TIME)] | None = None
    details: Annotated[dict[DetailKey, DetailValue], Field(max_length=MAX_DETAIL_KEYS)] = Field(
        default_factory=dict
    )

    @field_validator("type", mode="before")
    @classmethod
    def _legacy_type(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # the enum's own validation refuses it
        legacy = LEGACY_APP_EVENT_TYPES.get(value)
        return legacy.value if legacy is not None else value

    def record_details(self) -> dict[str, str | int | bool | None]:
        """The details to store: the reported ones plus ``client_at`` (the untrusted ``at``)."""
        stored: dict[str, str | int | bool | None] = dict(self.details)
        stored.pop("client_at", None)
        if self.at is not None:
            stored["client_at"] = self.at
        return stored


class AppEventBatchIn(BaseModel):
    """The body of ``POST /v1/events``: the events one device has queued.

    The device id must be one of the authenticated user's devices (the server checks);
    the batch is all-or-nothing.

    Attributes:
        device_id: The reporting device.
        events: 1 to :data:`MAX_EVENTS_PER_BATCH` events, oldest first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: Annotated[str, StringConstraints(pattern=f"^{DEVICE_ID_PATTERN.pattern}$")]
    events: Annotated[list[AppEventIn], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]
