"""Recipient (device) keys for the three HPKE KEMs of FORMAT v1.

Canonical encodings (FORMAT §6), which are also what key ids hash:

* X25519: the raw 32-byte public key; the private key is the raw 32-byte scalar.
* P-256: the uncompressed SEC1 point (65 bytes); the private key is the 32-byte
  big-endian scalar.
* X-Wing (MLKEM768-X25519): the public key is the ML-KEM-768 encapsulation key
  (1184 bytes) followed by the X25519 public key (32 bytes), 1216 bytes in all;
  the private key is the 32-byte seed of draft-connolly-cfrg-xwing-kem, expanded
  with SHAKE256 into the ML-KEM-768 seed (64 bytes) and the X25519 scalar (32).

All HPKE operations go through pyca/cryptography's ``hazmat.primitives.hpke``.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from typing_extensions import TypeIs

from modelseal.errors import DEKUnwrapError, KeyFormatError

__all__ = [
    "KEM",
    "HPKERecipient",
    "RecipientPrivateKey",
    "RecipientPublicKey",
    "is_hpke_recipient",
    "key_id",
]

KID_BYTES = 16
XWING_SEED_BYTES = 32
XWING_MLKEM_PUBLIC_BYTES = 1184
X25519_BYTES = 32
P256_POINT_BYTES = 65
P256_SCALAR_BYTES = 32


def key_id(canonical_public_key: bytes) -> str:
    """Return the FORMAT §6 key id: hex of the first 16 bytes of SHA-256(pk)."""
    return hashlib.sha256(canonical_public_key).digest()[:KID_BYTES].hex()


class KEM(enum.IntEnum):
    """HPKE KEM identifiers from the IANA registry that FORMAT v1 accepts."""

    P256 = 0x0010
    X25519 = 0x0020
    XWING = 0x647A

    @property
    def label(self) -> str:
        """The short name used on the command line and in JWKs: x25519, p256 or xwing."""
        return _KEM_LABELS[self]

    @property
    def enc_length(self) -> int:
        """Length in bytes of the HPKE encapsulated key for this KEM."""
        return _ENC_LENGTHS[self]

    @property
    def public_key_length(self) -> int:
        """Length in bytes of the canonical public key encoding."""
        return _PUBLIC_LENGTHS[self]

    @classmethod
    def from_label(cls, label: str) -> KEM:
        """Parse ``x25519``, ``p256`` or ``xwing`` (case-insensitive)."""
        for kem, name in _KEM_LABELS.items():
            if name == label.lower():
                return kem
        raise KeyFormatError(f"kem must be one of x25519, p256, xwing, got {label!r}")

    def suite(self) -> hpke.Suite:
        """The pyca HPKE suite (this KEM, HKDF-SHA256, AES-256-GCM)."""
        return hpke.Suite(_PYCA_KEMS[self], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


_KEM_LABELS = {KEM.X25519: "x25519", KEM.P256: "p256", KEM.XWING: "xwing"}
_PYCA_KEMS = {
    KEM.X25519: hpke.KEM.X25519,
    KEM.P256: hpke.KEM.P256,
    KEM.XWING: hpke.KEM.MLKEM768_X25519,
}
_ENC_LENGTHS = {kem: pyca.enc_length() for kem, pyca in _PYCA_KEMS.items()}
_PUBLIC_LENGTHS = {
    KEM.X25519: X25519_BYTES,
    KEM.P256: P256_POINT_BYTES,
    KEM.XWING: XWING_MLKEM_PUBLIC_BYTES + X25519_BYTES,
}

_PyCAPublic = x25519.X25519PublicKey | ec.EllipticCurvePublicKey | hpke.MLKEM768X25519PublicKey
_PyCAPrivate = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | hpke.MLKEM768X25519PrivateKey


@runtime_checkable
class HPKERecipient(Protocol):
    """Anything that can open an HPKE-wrapped DEK addressed to one device key.

    Software keys (:class:`RecipientPrivateKey`) and hardware-backed keystores
    both implement it, so the envelope never needs the private key bytes.
    """

    @property
    def kem(self) -> KEM:
        """The KEM of this key."""
        ...

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        ...

    def hpke_open(self, enc: bytes, ciphertext: bytes, info: bytes) -> bytes:
        """Run HPKE ``OpenBase`` (empty AAD); raise :class:`DEKUnwrapError` on failure."""
        ...


def is_hpke_recipient(key: object) -> TypeIs[HPKERecipient]:
    """True for device keys (software or hardware), false for KEKs.

    A duck-typed check: ``isinstance`` against a runtime-checkable Protocol costs
    tens of microseconds, and device keys are exactly the objects with ``hpke_open``.
    """
    return callable(getattr(key, "hpke_open", None))


@dataclass(frozen=True, slots=True)
class RecipientPublicKey:
    """A device public key in its FORMAT §6 canonical encoding."""

    kem: KEM
    raw: bytes

    def __post_init__(self) -> None:
        # Parsing validates the encoding (curve point, lengths) once, at construction.
        self._pyca()

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id."""
        return key_id(self.raw)

    def _pyca(self) -> _PyCAPublic:
        expected = self.kem.public_key_length
        if len(self.raw) != expected:
            raise KeyFormatError(
                f"{self.kem.label} public key must be {expected} bytes, got {len(self.raw)}"
            )
        try:
            if self.kem is KEM.X25519:
                return x25519.X25519PublicKey.from_public_bytes(self.raw)
            if self.kem is KEM.P256:
                return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
            mlkem_pub = mlkem.MLKEM768PublicKey.from_public_bytes(
                self.raw[:XWING_MLKEM_PUBLIC_BYTES]
            )
            x_pub = x25519.X25519PublicKey.from_public_bytes(self.raw[XWING_MLKEM_PUBLIC_BYTES:])
            return hpke.MLKEM768X25519PublicKey(mlkem_pub, x_pub)
        except ValueError:
            raise KeyFormatError(f"not a valid {self.kem.label} public key") from None

    def hpke_seal(self, plaintext: bytes, info: bytes) -> tuple[bytes, bytes]:
        """HPKE ``SealBase`` to this key with a fresh ephemeral key; return (enc, ct).

        Raises:
            KeyFormatError: The key is a point the KEM refuses (for example a low-order
                X25519 point, whose shared secret would be all zeros).
        """
        try:
            out = self.kem.suite().encrypt(plaintext, self._pyca(), info=info)
        except ValueError:
            raise KeyFormatError(f"{self.kem.label} public key is not usable for HPKE") from None
        split = self.kem.enc_length
        return out[:split], out[split:]


class RecipientPrivateKey:
    """A software device private key; implements :class:`HPKERecipient`.

    The secret never appears in ``repr`` and the object refuses to be pickled.
    """

    __slots__ = ("_kem", "_private", "_public", "_secret")

    def __init__(self, kem: KEM, secret: bytes) -> None:
        """Load a private key from its canonical secret encoding (see the module doc).

        Raises:
            KeyFormatError: The secret has the wrong length or is not a valid scalar.
        """
        self._kem = kem
        self._secret = bytes(secret)
        self._private, self._public = _load_private(kem, self._secret)

    @classmethod
    def generate(cls, kem: KEM) -> RecipientPrivateKey:
        """Generate a fresh key pair for ``kem`` from the OS CSPRNG."""
        if kem is KEM.P256:
            scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
            return cls(kem, scalar.to_bytes(P256_SCALAR_BYTES, "big"))
        # X25519 scalars and X-Wing seeds are uniformly random 32-byte strings.
        return cls(kem, os.urandom(32))

    @property
    def kem(self) -> KEM:
        """The KEM of this key."""
        return self._kem

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        return self._public.kid

    def public_key(self) -> RecipientPublicKey:
        """The public half, in canonical encoding."""
        return self._public

    def secret_bytes(self) -> bytes:
        """The canonical secret encoding. Handle with care: this is the private key."""
        return self._secret

    def hpke_open(self, enc: bytes, ciphertext: bytes, info: bytes) -> bytes:
        """HPKE ``OpenBase`` with empty AAD.

        Raises:
            DEKUnwrapError: The encapsulation or ciphertext does not open with this key.
        """
        try:
            return self._kem.suite().decrypt(enc + ciphertext, self._private, info=info)
        except (InvalidTag, ValueError):
            raise DEKUnwrapError("DEK unwrap failed") from None

    def __repr__(self) -> str:
        return f"RecipientPrivateKey(kem={self._kem.label}, kid={self.kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("private keys cannot be pickled")


def _load_private(kem: KEM, secret: bytes) -> tuple[_PyCAPrivate, RecipientPublicKey]:
    if len(secret) != 32:
        raise KeyFormatError(f"{kem.label} private key must be 32 bytes, got {len(secret)}")
    try:
        if kem is KEM.X25519:
            xk = x25519.X25519PrivateKey.from_private_bytes(secret)
            return xk, RecipientPublicKey(kem, xk.public_key().public_bytes_raw())
        if kem is KEM.P256:
            ek = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
            point = ek.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            return ek, RecipientPublicKey(kem, point)
        # X-Wing: expand the seed into the ML-KEM-768 seed and the X25519 scalar.
        shake = hashes.Hash(hashes.SHAKE256(96))
        shake.update(secret)
        expanded = shake.finalize()
        mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        xk = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        raw_public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        return hpke.MLKEM768X25519PrivateKey(mk, xk), RecipientPublicKey(kem, raw_public)
    except ValueError:
        raise KeyFormatError(f"not a valid {kem.label} private key") from None
