"""The audit entry: one canonical JSON object per security event.

An entry is the canonical JSON (:mod:`modelseal.audit.canonical`) of exactly these
members::

    {"action":    "iml.issued",          what happened (AuditAction value, or any string)
     "actor":     "user:3",              who did it: "user:<id>", "admin:<os user>", "system"
     "details":   {...},                 ids and facts only, never secrets
     "device_id": "phone-1" | null,
     "model_id":  "demo" | null,
     "prev":      "<64 hex>",            leaf hash of entry seq-1 (64 zeros for seq 0)
     "seq":       41,                    0, 1, 2, ... without gaps; also its Merkle leaf index
     "time":      1767225600,            Unix seconds (server clock)
     "user_id":   3 | null,
     "v":         1}

Its Merkle leaf is ``SHA-256(0x00 || entry bytes)`` (RFC 9162). ``prev`` chains each entry
to the one before, which lets verification name the first changed entry instead of only
a checkpoint interval; the checkpoints, not the chain, are what an insider cannot forge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelseal.audit.canonical import canonical_json, parse_canonical
from modelseal.audit.errors import CanonicalJSONError, SecretFieldError
from modelseal.audit.merkle import leaf_hash

__all__ = ["ENTRY_VERSION", "GENESIS_PREV", "AuditEntry", "check_details"]

ENTRY_VERSION = 1
GENESIS_PREV = "0" * 64
_MEMBERS = frozenset(
    {"action", "actor", "details", "device_id", "model_id", "prev", "seq", "time", "user_id", "v"}
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 256
_MAX_ACTION = 64

# Words that mark a secret in a detail key ("dek", "link_token", "private_key", ...).
_SECRET_WORDS = frozenset(
    {
        "authorization",
        "bearer",
        "cookie",
        "credential",
        "credentials",
        "dek",
        "jwt",
        "key",
        "passphrase",
        "passwd",
        "password",
        "pin",
        "plaintext",
        "private",
        "privkey",
        "secret",
        "seed",
        "token",
    }
)
# A key whose last word is one of these names an identifier or a public fact.
_SAFE_LAST_WORDS = frozenset({"alg", "count", "id", "ids", "kid", "kids", "kind", "type"})
_WORD_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])")


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    if lowered == "d":  # JWK private scalar
        return True
    camel = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    words = [w for w in _WORD_SPLIT.split(camel) if w]
    if not words:
        return False
    if words[-1] in _SAFE_LAST_WORDS or "public" in words:
        return False
    return any(w in _SECRET_WORDS for w in words)


def check_details(details: Mapping[str, Any], where: str = "details") -> None:
    """Refuse detail keys (at any depth) that name a secret.

    Callers pass identifiers only; a key such as ``dek``, ``link_token``,
    ``private_key`` or ``password`` means a secret is about to be logged.
    Identifiers (``token_id``, ``kid``, ``key_id``) and public facts
    (``public_key_kid``) are allowed.

    Raises:
        SecretFieldError: A key names a secret.
    """
    for key, value in details.items():
        if not isinstance(key, str):
            raise CanonicalJSONError(f"{where}: keys must be strings")
        if _is_secret_key(key):
            raise SecretFieldError(f"{where}.{key}: audit details must not carry secrets")
        if isinstance(value, Mapping):
            check_details(value, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Mapping):
                    check_details(item, f"{where}.{key}[]")


def _opt_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise CanonicalJSONError(f"entry.{name} must be null or a string of 1..{_MAX_TEXT}")
    return value


def _opt_int(value: object, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CanonicalJSONError(f"entry.{name} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit entry (see the module docstring for its JSON form)."""

    seq: int
    time: int
    action: str
    actor: str
    prev: str
    user_id: int | None = None
    device_id: str | None = None
    model_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object."""
        return {
            "action": self.action,
            "actor": self.actor,
            "details": dict(self.details),
            "device_id": self.device_id,
            "model_id": self.model_id,
            "prev": self.prev,
            "seq": self.seq,
            "time": self.time,
            "user_id": self.user_id,
            "v": ENTRY_VERSION,
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes (the Merkle leaf data).

        Raises:
            CanonicalJSONError: A value cannot be written canonically.
        """
        return canonical_json(self.to_json())

    def leaf_hash(self) -> bytes:
        """SHA-256(0x00 || canonical bytes).

        Raises:
            CanonicalJSONError: A value cannot be written canonically.
        """
        return leaf_hash(self.to_bytes())

    @classmethod
    def parse(cls, data: bytes) -> AuditEntry:
        """Parse and check canonical entry bytes.

        Raises:
            CanonicalJSONError: Not canonical JSON, or not an entry of version 1.
        """
        value = parse_canonical(data)
        if not isinstance(value, dict) or set(value) != _MEMBERS:
            raise CanonicalJSONError("entry must be an object with exactly the v1 members")
        if value["v"] != ENTRY_VERSION or isinstance(value["v"], bool):
            raise CanonicalJSONError("entry.v must be 1")
        for name in ("action", "actor"):
            if _opt_text(value[name], name) is None:
                raise CanonicalJSONError(f"entry.{name} must be a string")
        if len(value["action"]) > _MAX_ACTION:
            raise CanonicalJSONError(f"entry.action must be at most {_MAX_ACTION} characters")
        if not isinstance(value["prev"], str) or not _HEX64.fullmatch(value["prev"]):
            raise CanonicalJSONError("entry.prev must be 64 lower-case hex digits")
        if not isinstance(value["details"], dict):
            raise CanonicalJSONError("entry.details must be an object")
        return cls(
            seq=_int(value["seq"], "seq"),
            time=_int(value["time"], "time"),
            action=value["action"],
            actor=value["actor"],
            prev=value["prev"],
            user_id=_opt_int(value["user_id"], "user_id"),
            device_id=_opt_text(value["device_id"], "device_id"),
            model_id=_opt_text(value["model_id"], "model_id"),
            details=value["details"],
        )
