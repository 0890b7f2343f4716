"""C2SP signed notes (c2sp.org/signed-note): text signed by one or more keys.

Layout: the text (valid UTF-8, ending in a newline, no control characters but
newline), one empty line, then one or more signature lines::

    — <key name> base64(4-byte key ID || signature)\\n

Two signature types are implemented, both assigned by the signed-note spec:

* ``0x01`` Ed25519 (RFC 8032) over the note text;
  key ID = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4].
* ``0x02`` ECDSA "as implemented by github.com/transparency-dev/witness", used here for
  a P-256 checkpoint key on an HSM: ECDSA P-256 over SHA-256(note text), the signature
  ASN.1 DER-encoded; key ID = SHA-256(DER SubjectPublicKeyInfo)[:4], as the spec states.
  The spec defines this type by reference to that implementation only; modelseal's
  reading of it (DER signature, SHA-256) is documented in docs/AUDIT.md and has not been
  checked against the Go code.

Verifier keys are written as ``<name>+<8 hex digits of key ID>+base64(type || public key)``
(the public key is the 32 raw bytes for Ed25519, DER SPKI for ECDSA), the form Go's
``golang.org/x/mod/sumdb/note`` uses for Ed25519.

Verification follows the spec: signatures of unknown keys (name and ID not both
known) are ignored; a known key's signature that fails rejects the note; at least one
known key must have signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from modelseal.audit.errors import NoteError, NoteSignatureError
from modelseal.keys import IssuerPublicKey, SignatureAlgorithm

__all__ = [
    "SIG_TYPE_ECDSA",
    "SIG_TYPE_ED25519",
    "ECDSANoteSigner",
    "Ed25519NoteSigner",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "ecdsa_key_id",
    "ed25519_key_id",
    "note_signer_for",
    "open_note",
    "parse_verifier_key",
    "sign_note",
]

SIG_TYPE_ED25519 = 0x01
SIG_TYPE_ECDSA = 0x02
_EM_DASH = "\u2014"
_NAME = re.compile(r"[^\s+\u2014]+")
# The spec: verifiers MUST accept at least 16 signatures, and post-quantum ones are up to
# about 5 kB (6.7 kB in base64): 16 of them must fit under the size limit.
_MAX_SIGNATURES = 16
_MAX_NOTE_BYTES = 1 << 17


@runtime_checkable
class NoteSigner(Protocol):
    """Signs note texts; the checkpoint key of the audit log (local file, HSM, KMS)."""

    @property
    def name(self) -> str:
        """The key name of the signature line (for checkpoints: the log origin)."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The signature bytes of ``message`` (without the key ID)."""
        ...

    def verifier_key(self) -> str:
        """The verifier key string, ``name+hex(key ID)+base64(type || public key)``."""
        ...


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError("key name must be non-empty, without spaces, '+' or em dash")
    return name


def ed25519_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    data = name.encode("utf-8") + b"\n" + bytes([SIG_TYPE_ED25519]) + public_key
    return hashlib.sha256(data).digest()[:4]


def ecdsa_key_id(spki_der: bytes) -> bytes:
    """SHA-256(DER SubjectPublicKeyInfo)[:4] (signature type 0x02)."""
    return hashlib.sha256(spki_der).digest()[:4]


def _vkey(name: str, key_id: bytes, sig_type: int, public: bytes) -> str:
    encoded = base64.b64encode(bytes([sig_type]) + public).decode("ascii")
    return f"{name}+{key_id.hex()}+{encoded}"


class _NamedNoteSigner:
    """What every note signer carries: its key name and 4-byte key ID."""

    __slots__ = ("_key_id", "_name")

    _name: str
    _key_id: bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, key_id={self._key_id.hex()})"

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_id


class _Ed25519FunctionNoteSigner(_NamedNoteSigner):
    """Type 0x01 over an Ed25519 signing function (the private key may live elsewhere)."""

    __slots__ = ("_public", "_sign")

    def __init__(self, name: str, public: bytes, sign: Callable[[bytes], bytes]) -> None:
        """Sign as ``name``; ``public`` is the raw public key of ``sign``.

        Raises:
            NoteError: ``name`` is not a valid key name.
        """
        self._name = _check_name(name)
        self._public = public
        self._key_id = ed25519_key_id(name, public)
        self._sign = sign

    def sign(self, message: bytes) -> bytes:
        """Ed25519 over ``message``."""
        return self._sign(message)

    def verifier_key(self) -> str:
        """``name+keyid+base64(0x01 || public key)``."""
        return _vkey(self._name, self._key_id, SIG_TYPE_ED25519, self._public)


class Ed25519NoteSigner(_Ed25519FunctionNoteSigner):
    """A note signer over a local Ed25519 private key (type 0x01)."""

    __slots__ = ()

    def __init__(self, name: str, private_key: ed25519.Ed25519PrivateKey) -> None:
        """Sign as ``name`` with ``private_key``.

        Raises:
            NoteError: ``name`` is not a valid key name.
        """
        super().__init__(name, private_key.public_key().public_bytes_raw(), private_key.sign)

    def __reduce__(self) -> NoReturn:
        raise TypeError("note signers hold a private key and cannot be pickled")


class ECDSANoteSigner(_NamedNoteSigner):
    """A note signer (type 0x02) over any ECDSA P-256 signing function, e.g. an HSM key.

    ``sign_raw`` must return ECDSA P-256 over SHA-256(message) as r||s (64 bytes),
    the form :class:`modelseal.keys.pkcs11.PKCS11Signer` produces; this class re-encodes
    it as DER.
    """

    __slots__ = ("_sign_raw", "_spki")

    def __init__(
        self,
        name: str,
        public_key: ec.EllipticCurvePublicKey,
        sign_raw: Callable[[bytes], bytes],
    ) -> None:
        """Sign as ``name``; ``public_key`` is the P-256 public half of ``sign_raw``.

        Raises:
            NoteError: ``name`` is invalid or the key is not on P-256.
        """
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise NoteError("ECDSA note keys must be on P-256")
        self._name = _check_name(name)
        self._spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = ecdsa_key_id(self._spki)
        self._sign_raw = sign_raw

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(``message``), DER-encoded.

        Raises:
            NoteError: The signing function did not return 64 bytes.
        """
        raw = self._sign_raw(message)
        if len(raw) != 64:
            raise NoteError("ECDSA signer must return r||s, 64 bytes")
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )

    def verifier_key(self) -> str:
        """``name+keyid+base64(0x02 || DER SPKI)``."""
        return _vkey(self._name, self._key_id, SIG_TYPE_ECDSA, self._spki)


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted verifier key, parsed by :func:`parse_verifier_key`."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify one signature (without key ID) over ``message``.

        Raises:
            NoteSignatureError: The signature is invalid.
        """
        try:
            if self.sig_type == SIG_TYPE_ED25519:
                ed25519.Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                    signature, message
                )
            else:
                key = serialization.load_der_public_key(self.public_key)
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise NoteSignatureError("signature verification failed")
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise NoteSignatureError("signature verification failed") from None

    def __str__(self) -> str:
        return _vkey(self.name, self.key_id, self.sig_type, self.public_key)


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse ``name+hexkeyid+base64(type || public key)``.

    Raises:
        NoteError: Malformed, an unsupported type, or the key ID does not match the key.
    """
    parts = text.strip().split("+", 2)  # base64 may itself contain '+'
    if len(parts) != 3:
        raise NoteError("verifier key must be name+keyid+base64key")
    name, hex_id, b64 = parts
    _check_name(name)
    try:
        key_id = bytes.fromhex(hex_id)
        blob = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("verifier key: bad hex key ID or base64 key") from None
    if len(key_id) != 4 or not blob:
        raise NoteError("verifier key: key ID must be 4 bytes and the key non-empty")
    sig_type, public = blob[0], blob[1:]
    if sig_type == SIG_TYPE_ED25519:
        if len(public) != 32:
            raise NoteError("verifier key: Ed25519 keys are 32 bytes")
        expected = ed25519_key_id(name, public)
    elif sig_type == SIG_TYPE_ECDSA:
        try:
            key = serialization.load_der_public_key(public)
        except ValueError:
            raise NoteError("verifier key: not a DER public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise NoteError("verifier key: ECDSA keys must be on P-256")
        expected = ecdsa_key_id(public)
    else:
        raise NoteError(f"verifier key: unsupported signature type 0x{sig_type:02x}")
    if not hmac.compare_digest(expected, key_id):
        raise NoteError("verifier key: key ID does not match the key")
    return NoteVerifier(name, key_id, sig_type, public)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note of ``text`` (ending in a newline) by every signer, UTF-8.

    Raises:
        NoteError: ``text`` is not a valid note text, or there is no signer.
    """
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signature")
    message = text.encode("utf-8")
    lines = [text, "\n"]
    for signer in signers:
        signature = base64.b64encode(signer.key_id + signer.sign(message)).decode("ascii")
        lines.append(f"{_EM_DASH} {_check_name(signer.name)} {signature}\n")
    return "".join(lines).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A note whose signatures were checked."""

    text: str
    verified_by: tuple[str, ...]


def open_note(data: bytes, verifiers: Sequence[NoteVerifier]) -> SignedNote:
    """Parse ``data`` and verify it against the trusted ``verifiers``.

    Raises:
        NoteError: Not a well-formed signed note.
        NoteSignatureError: A known key's signature fails, or no known key signed.
    """
    if len(data) > _MAX_NOTE_BYTES:
        raise NoteError("note too large")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in whole):
        raise NoteError("note must not contain control characters")
    split = whole.rfind("\n\n")
    if split < 0 or not whole.endswith("\n"):
        raise NoteError("note has no signature block")
    text, block = whole[: split + 1], whole[split + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise NoteError("note has too many signatures")
    message = text.encode("utf-8")
    verified: list[str] = []
    for line in lines:
        prefix = _EM_DASH + " "
        if not line.startswith(prefix):
            raise NoteError("malformed signature line")
        name, _, encoded = line[len(prefix) :].partition(" ")
        if not _NAME.fullmatch(name) or " " in encoded:
            raise NoteError("malformed signature line")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError("signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("signature too short")
        key_id, signature = blob[:4], blob[4:]
        for verifier in verifiers:
            if verifier.name == name and hmac.compare_digest(verifier.key_id, key_id):
                verifier.verify(message, signature)
                verified.append(name)
    if not verified:
        raise NoteSignatureError("no trusted key signed the note")
    return SignedNote(text, tuple(verified))


class _IssuerStyleSigner(Protocol):
    """A :class:`modelseal.keys.Signer` with its public half (local file or PKCS#11)."""

    @property
    def alg(self) -> SignatureAlgorithm: ...

    def public_key(self) -> IssuerPublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


def note_signer_for(name: str, signer: _IssuerStyleSigner) -> NoteSigner:
    """Adapt an Ed25519 or ES256 :class:`modelseal.keys.Signer` (file, HSM) to a note signer.

    Ed25519 keys sign as type 0x01; ES256 keys (an HSM's P-256) as type 0x02.

    Raises:
        NoteError: ``name`` is invalid.
    """
    public = signer.public_key()
    if signer.alg is SignatureAlgorithm.ED25519:
        return _Ed25519FunctionNoteSigner(name, public.raw, signer.sign)
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public.raw)
    return ECDSANoteSigner(name, point, signer.sign)
