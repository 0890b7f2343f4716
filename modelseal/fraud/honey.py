"""Honey tokens: decoy model ids, accounts and device keys that no honest client uses.

Decoys are planted where only an attacker looks: a model id that appears in a string table
of the app but is never requested by its code, an account whose credentials sit in a
"forgotten" config file, a device key in a decoy keystore. Any use of one is the stop factor
``honey_token_used`` (the server records it with ``details.kind`` =
:class:`HoneyKind`) and raises an alert.

Decoy values are secrets from attackers' point of view (a decoy that is known is avoided), so
:class:`HoneyTokens` never shows them in ``repr`` and the event carries only the kind.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from modelseal.errors import UsageError
from modelseal.keys.jwk import key_to_jwk
from modelseal.keys.kem import KEM, RecipientPrivateKey

__all__ = [
    "DecoyDeviceKey",
    "HoneyKind",
    "HoneyTokens",
    "generate_decoy_account_name",
    "generate_decoy_device_key",
    "generate_decoy_model_id",
]

_KID: Final = re.compile(r"[0-9a-f]{32}")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


class HoneyKind(StrEnum):
    """Which kind of decoy was used (``details.kind`` of ``honey_token_used``)."""

    MODEL_ID = "model_id"
    ACCOUNT = "account"
    DEVICE_KEY = "device_key"


def _checked(values: Iterable[str], pattern: re.Pattern[str], what: str) -> frozenset[str]:
    out = set()
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise UsageError(f"{what} must match {pattern.pattern}, got {value!r}")
        out.add(value)
    return frozenset(out)


@dataclass(frozen=True, slots=True, repr=False)
class HoneyTokens:
    """The configured decoys.

    Attributes:
        model_ids: Decoy model ids (requesting one is honey-token use).
        account_names: Decoy account names (authenticating as one, or trying to).
        device_key_kids: Decoy device key ids: the FORMAT §6 ``kid`` of the public key,
            as stored in ``devices.kid`` (presenting one for registration).
    """

    model_ids: frozenset[str] = frozenset()
    account_names: frozenset[str] = frozenset()
    device_key_kids: frozenset[str] = frozenset()

    @classmethod
    def from_config(
        cls,
        *,
        model_ids: Iterable[str] = (),
        account_names: Iterable[str] = (),
        device_key_kids: Iterable[str] = (),
    ) -> HoneyTokens:
        """Validate and freeze decoy lists from the settings.

        Raises:
            UsageError: A value is not a plausible id (kids must be 32 lower-case hex digits).
        """
        return cls(
            _checked(model_ids, _NAME, "honey model id"),
            _checked(account_names, _NAME, "honey account name"),
            _checked(device_key_kids, _KID, "honey device key kid"),
        )

    def is_honey_model(self, model_id: str) -> bool:
        """Whether ``model_id`` is a decoy."""
        return model_id in self.model_ids

    def is_honey_account(self, name: str) -> bool:
        """Whether ``name`` is a decoy account."""
        return name in self.account_names

    def is_honey_device_kid(self, kid: str) -> bool:
        """Whether ``kid`` is a decoy device key."""
        return kid in self.device_key_kids

    def matches(self, kind: HoneyKind, value: str) -> bool:
        """Whether ``value`` is a decoy of ``kind``."""
        if kind is HoneyKind.MODEL_ID:
            return self.is_honey_model(value)
        if kind is HoneyKind.ACCOUNT:
            return self.is_honey_account(value)
        return self.is_honey_device_kid(value)

    def __bool__(self) -> bool:
        return bool(self.model_ids or self.account_names or self.device_key_kids)

    def __repr__(self) -> str:
        # Counts only: a decoy that leaks into a log is a decoy attackers avoid.
        return (
            f"HoneyTokens(model_ids={len(self.model_ids)}, accounts={len(self.account_names)}, "
            f"device_keys={len(self.device_key_kids)})"
        )


def generate_decoy_model_id(prefix: str = "model") -> str:
    """A fresh decoy model id that looks like a real one (``<prefix>-<8 hex>``).

    Raises:
        UsageError: ``prefix`` is not a valid id start.
    """
    return _decoy_name(prefix)


def generate_decoy_account_name(prefix: str = "svc") -> str:
    """A fresh decoy account name (``<prefix>-<8 hex>``).

    Raises:
        UsageError: ``prefix`` is not a valid name start.
    """
    return _decoy_name(prefix)


def _decoy_name(prefix: str) -> str:
    value = f"{prefix}-{secrets.token_hex(4)}"
    if not _NAME.fullmatch(value):
        raise UsageError(f"decoy prefix must match {_NAME.pattern}, got {prefix!r}")
    return value


@dataclass(frozen=True, slots=True, repr=False)
class DecoyDeviceKey:
    """A freshly generated device key pair that no honest device holds.

    Attributes:
        kid: The FORMAT §6 key id to list in the honey-token settings.
        public_jwk: The public key, as a device would register it.
        private_jwk: The private key, for planting in a decoy keystore (or discard it:
            registering the public key alone is already honey-token use).
    """

    kid: str
    public_jwk: dict[str, str]
    private_jwk: dict[str, str]

    def __repr__(self) -> str:
        return f"DecoyDeviceKey(kid={self.kid})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("decoy keys hold a private key and cannot be pickled")


def generate_decoy_device_key(kem: KEM = KEM.X25519) -> DecoyDeviceKey:
    """Generate a decoy device key pair from the OS CSPRNG.

    Args:
        kem: The key's KEM (decoys should look like the app's real keys).
    """
    private = RecipientPrivateKey.generate(kem)
    return DecoyDeviceKey(
        kid=private.kid,
        public_jwk=key_to_jwk(private.public_key()),
        private_jwk=key_to_jwk(private, include_private=True),
    )
