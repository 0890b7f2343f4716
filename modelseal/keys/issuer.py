"""Issuer signing keys (Ed25519, ES256) and pinned issuer key sets.

Canonical public encodings (FORMAT §6): Ed25519 raw 32 bytes; P-256 uncompressed
SEC1 (65 bytes). ES256 signatures are r‖s, 32 bytes each (IEEE P1363), and are
computed over SHA-256 of the message, as JOSE's ES256 is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from modelseal.errors import BadSignatureError, KeyFormatError, UnknownIssuerError
from modelseal.keys.kem import key_id

__all__ = [
    "IssuerKeySet",
    "IssuerPrivateKey",
    "IssuerPublicKey",
    "SignatureAlgorithm",
    "Signer",
]

SIGNATURE_BYTES = 64
_P256_COORD_BYTES = 32


class SignatureAlgorithm(enum.StrEnum):
    """Issuer signature algorithms, named as in JOSE (RFC 7518, RFC 8037)."""

    ED25519 = "Ed25519"
    ES256 = "ES256"

    @classmethod
    def parse(cls, name: str) -> SignatureAlgorithm:
        """Parse ``Ed25519`` or ``ES256`` exactly (JOSE names are case-sensitive)."""
        try:
            return cls(name)
        except ValueError:
            raise KeyFormatError(f"alg must be Ed25519 or ES256, got {name!r}") from None


@runtime_checkable
class Signer(Protocol):
    """Anything that signs FORMAT §7 messages as an issuer (a local key, or an HSM)."""

    @property
    def alg(self) -> SignatureAlgorithm:
        """The signature algorithm."""
        ...

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``: Ed25519 over it, or ECDSA P-256 over SHA-256 of it; 64 bytes."""
        ...


@dataclass(frozen=True, slots=True)
class IssuerPublicKey:
    """An issuer verification key in canonical encoding."""

    alg: SignatureAlgorithm
    raw: bytes

    def __post_init__(self) -> None:
        self._pyca()

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id."""
        return key_id(self.raw)

    def _pyca(self) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
        try:
            if self.alg is SignatureAlgorithm.ED25519:
                if len(self.raw) != 32:
                    raise ValueError
                return ed25519.Ed25519PublicKey.from_public_bytes(self.raw)
            if len(self.raw) != 65 or self.raw[0] != 0x04:
                raise ValueError
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
        except ValueError:
            raise KeyFormatError(f"not a valid {self.alg} public key") from None

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify a 64-byte signature over ``message``.

        Raises:
            BadSignatureError: The signature is not valid for this key and message.
        """
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignatureError("signature verification failed")
        key = self._pyca()
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            else:
                r = int.from_bytes(signature[:_P256_COORD_BYTES], "big")
                s = int.from_bytes(signature[_P256_COORD_BYTES:], "big")
                key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise BadSignatureError("signature verification failed") from None


class IssuerPrivateKey:
    """A software issuer signing key; implements :class:`Signer`."""

    __slots__ = ("_alg", "_private", "_public", "_secret")

    def __init__(self, alg: SignatureAlgorithm, secret: bytes) -> None:
        """Load from the canonical secret: the Ed25519 seed or the P-256 scalar (32 bytes)."""
        if len(secret) != 32:
            raise KeyFormatError(f"{alg} private key must be 32 bytes, got {len(secret)}")
        self._alg = alg
        self._secret = bytes(secret)
        try:
            if alg is SignatureAlgorithm.ED25519:
                ek = ed25519.Ed25519PrivateKey.from_private_bytes(self._secret)
                self._private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = ek
                raw = ek.public_key().public_bytes_raw()
            else:
                pk = ec.derive_private_key(int.from_bytes(self._secret, "big"), ec.SECP256R1())
                self._private = pk
                raw = pk.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
        except ValueError:
            raise KeyFormatError(f"not a valid {alg} private key") from None
        self._public = IssuerPublicKey(alg, raw)

    @classmethod
    def generate(cls, alg: SignatureAlgorithm) -> IssuerPrivateKey:
        """Generate a fresh signing key from the OS CSPRNG."""
        if alg is SignatureAlgorithm.ED25519:
            seed = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
            return cls(alg, seed)
        scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
        return cls(alg, scalar.to_bytes(32, "big"))

    @property
    def alg(self) -> SignatureAlgorithm:
        """The signature algorithm."""
        return self._alg

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        return self._public.kid

    def public_key(self) -> IssuerPublicKey:
        """The verification key."""
        return self._public

    def secret_bytes(self) -> bytes:
        """The canonical secret encoding. Handle with care: this is the private key."""
        return self._secret

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; returns 64 bytes (Ed25519, or ES256 r‖s)."""
        if isinstance(self._private, ed25519.Ed25519PrivateKey):
            return self._private.sign(message)
        der = self._private.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(_P256_COORD_BYTES, "big") + s.to_bytes(_P256_COORD_BYTES, "big")

    def __repr__(self) -> str:
        return f"IssuerPrivateKey(alg={self._alg}, kid={self.kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("private keys cannot be pickled")


class IssuerKeySet(Mapping[str, IssuerPublicKey]):
    """A pinned set of issuer verification keys, indexed by FORMAT §6 kid."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[IssuerPublicKey]) -> None:
        self._keys: dict[str, IssuerPublicKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise KeyFormatError(f"duplicate issuer key {key.kid}")
            self._keys[key.kid] = key

    def __getitem__(self, kid: str) -> IssuerPublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def require(self, kid: str) -> IssuerPublicKey:
        """Return the pinned key ``kid``.

        Raises:
            UnknownIssuerError: No pinned key has this kid.
        """
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownIssuerError(f"issuer key {kid!r} is not pinned") from None

    def __repr__(self) -> str:
        return f"IssuerKeySet({sorted(self._keys)})"
