"""The PKCS#11 backend: keys generated on a token, never extractable, used there.

* ``issuer`` and ``checkpoint`` keys are ECDSA P-256 pairs
  (:class:`~modelseal.keys.pkcs11.PKCS11Signer`): ``CKM_ECDSA`` over a SHA-256
  computed here, since SoftHSM2 and other tokens lack ``CKM_ECDSA_SHA256``.
* ``link`` keys are 256-bit ``CKK_GENERIC_SECRET`` keys that can only
  ``CKM_SHA256_HMAC`` sign and verify (:class:`PKCS11MACKey`). HMAC keeps the link
  token format and its constant-time check unchanged and costs one token call per
  mint or verify; only the server ever checks a link, so a public key would buy
  nothing (docs/KEY_SERVICE.md).

Every secret object is created with ``CKA_SENSITIVE=TRUE``, ``CKA_EXTRACTABLE=FALSE``
and ``CKA_PRIVATE=TRUE``, and objects found later are refused unless they still
say so. Labels are ``modelseal-<purpose>-<kid prefix>``; an asymmetric key's
``CKA_ID`` is its FORMAT §6 key id, a MAC key's a random 16-byte id.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from typing import Any, NoReturn

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.types import Object, SignMixin

from modelseal.keys import key_to_jwk
from modelseal.keys.pkcs11 import (
    PKCS11Signer,
    Token,
    TokenError,
    TokenKeyNotFoundError,
)
from modelseal.server.keyservice.base import (
    HMAC_SHA256,
    GeneratedKey,
    KeyNotFoundError,
    KeyPurpose,
    KeyUnsupportedError,
    MACKey,
    ManagedSigner,
)

__all__ = ["MAC_KEY_BITS", "PKCS11Backend", "PKCS11MACKey"]

MAC_KEY_BITS = 256
_MAC_BYTES = 32
_MAC_ID_BYTES = 16


def _mac_search(kid: str) -> dict[Attribute, Any]:
    try:
        raw = bytes.fromhex(kid)
    except ValueError:
        raw = b""
    if len(raw) != _MAC_ID_BYTES:
        raise KeyNotFoundError(f"malformed link key id {kid!r}")
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.ID: raw,
    }


class PKCS11MACKey:
    """An HMAC-SHA256 key on a token; implements :class:`~modelseal.server.keyservice.MACKey`."""

    __slots__ = ("_key", "_kid", "_token")

    def __init__(self, token: Token, kid: str, key: Object) -> None:
        """Wrap a key object found on ``token``.

        Raises:
            TokenError: The key is extractable, not sensitive, or cannot sign.
        """
        if key[Attribute.SENSITIVE] is not True or key[Attribute.EXTRACTABLE] is not False:
            raise TokenError(f"link key {kid} is extractable or not sensitive; refusing to use it")
        if not isinstance(key, SignMixin):
            raise TokenError(f"link key {kid} cannot sign")
        self._token = token
        self._kid = kid
        self._key: Any = key

    @classmethod
    def generate(cls, token: Token) -> PKCS11MACKey:
        """Generate a 256-bit generic secret on the token, usable only for HMAC.

        Raises:
            TokenError: The token refused.
        """
        kid = secrets.token_hex(_MAC_ID_BYTES)
        with token.session() as session:
            try:
                key = session.generate_key(
                    KeyType.GENERIC_SECRET,
                    MAC_KEY_BITS,
                    label=f"modelseal-link-{kid[:16]}",
                    id=bytes.fromhex(kid),
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                    },
                )
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"link key generation failed: {type(exc).__name__}") from None
            return cls(token, kid, key)

    @classmethod
    def find(cls, token: Token, kid: str) -> PKCS11MACKey:
        """Find the link key whose CKA_ID is ``kid``.

        Raises:
            KeyNotFoundError: No such key on the token.
            TokenError: More than one, or the key is unusable.
        """
        with token.session() as session:
            try:
                found = list(session.get_objects(_mac_search(kid)))
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"token failure: {type(exc).__name__}") from None
            if not found:
                raise KeyNotFoundError(f"link key {kid} is not on the token")
            if len(found) > 1:
                raise TokenError(f"more than one link key {kid} on the token")
            return cls(token, kid, found[0])

    @property
    def kid(self) -> str:
        """The key's CKA_ID in hex."""
        return self._kid

    def mac(self, message: bytes) -> bytes:
        """``CKM_SHA256_HMAC`` on the token.

        Raises:
            TokenError: The token failed or returned a MAC of the wrong length.
        """
        with self._token.session():
            try:
                tag = self._key.sign(message, mechanism=Mechanism.SHA256_HMAC)
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"token failure: {type(exc).__name__}") from None
        if not isinstance(tag, bytes) or len(tag) != _MAC_BYTES:
            raise TokenError("token returned a malformed HMAC")
        return tag

    def destroy(self) -> None:
        """Delete the key from the token."""
        with self._token.session():
            try:
                self._key.destroy()
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"token failure: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        return f"PKCS11MACKey(kid={self._kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("token keys cannot be pickled")


def _signer_label(purpose: KeyPurpose) -> str:
    return f"modelseal-{purpose}-{secrets.token_hex(8)}"


class PKCS11Backend:
    """Keys on one PKCS#11 token, logged in as the user for the life of the backend."""

    def __init__(
        self, module_path: str | os.PathLike[str], token_label: str, user_pin: str
    ) -> None:
        """Log in to the token.

        Raises:
            TokenError: The module or token cannot be opened.
            TokenLoginError: The PIN is refused.
        """
        self._token = Token(module_path, token_label, user_pin)
        self._signers: dict[str, PKCS11Signer] = {}
        self._macs: dict[str, PKCS11MACKey] = {}

    @property
    def name(self) -> str:
        """Always ``pkcs11``."""
        return "pkcs11"

    @property
    def token(self) -> Token:
        """The logged-in token."""
        return self._token

    def generate(self, purpose: KeyPurpose, alg: str) -> GeneratedKey:
        """Generate a key of ``purpose`` on the token.

        Raises:
            KeyUnsupportedError: Ed25519 (not offered: ES256 is what tokens hold), or
                a link key that is not HS256.
            TokenError: The token refused.
        """
        if purpose is KeyPurpose.LINK:
            if alg != HMAC_SHA256:
                raise KeyUnsupportedError(f"link keys are {HMAC_SHA256}, got {alg!r}")
            mac = PKCS11MACKey.generate(self._token)
            self._macs[mac.kid] = mac
            return GeneratedKey(
                kid=mac.kid, alg=HMAC_SHA256, handle=f"modelseal-link-{mac.kid[:16]}"
            )
        if alg != "ES256":
            raise KeyUnsupportedError(f"the PKCS#11 backend signs with ES256 only, got {alg!r}")
        signer = PKCS11Signer.generate(self._token, _signer_label(purpose))
        self._signers[signer.kid] = signer
        return GeneratedKey(
            kid=signer.kid,
            alg="ES256",
            handle=signer.label,
            public_jwk=key_to_jwk(signer.public_key()),
        )

    def signer(self, purpose: KeyPurpose, kid: str, handle: str) -> ManagedSigner:
        """Find the signing key labelled ``handle`` and check that its kid is ``kid``.

        Raises:
            KeyNotFoundError: Not on the token.
            TokenError: The key is unusable or is not ``kid``.
        """
        cached = self._signers.get(kid)
        if cached is not None:
            return cached
        try:
            signer = PKCS11Signer.find(self._token, label=handle)
        except TokenKeyNotFoundError:
            raise KeyNotFoundError(f"{purpose} key {kid} is not on the token") from None
        if not hmac.compare_digest(signer.kid, kid):
            raise TokenError(f"token key {handle!r} is not {purpose} key {kid}")
        self._signers[kid] = signer
        return signer

    def mac_key(self, kid: str, handle: str) -> MACKey:
        """Find the link key ``kid``.

        Raises:
            KeyNotFoundError: Not on the token.
        """
        cached = self._macs.get(kid)
        if cached is None:
            cached = self._macs[kid] = PKCS11MACKey.find(self._token, kid)
        return cached

    def destroy(self, purpose: KeyPurpose, kid: str, handle: str) -> None:
        """Destroy the key's objects on the token (already gone is fine)."""
        if purpose is KeyPurpose.LINK:
            self._macs.pop(kid, None)
            with contextlib.suppress(KeyNotFoundError):
                PKCS11MACKey.find(self._token, kid).destroy()
            return
        self._signers.pop(kid, None)
        with contextlib.suppress(TokenKeyNotFoundError):
            PKCS11Signer.find(self._token, label=handle).destroy()

    def close(self) -> None:
        """Log out (when this was the token's last user in the process)."""
        self._signers.clear()
        self._macs.clear()
        self._token.close()
