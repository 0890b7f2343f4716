"""The container framing (FORMAT §2), the DEK wrap (§4) and the signature (§7).

Layout::

    magic "MSEAL/1\\n" | u32 header_len | header | u16 enc_len | enc
    | u16 wrap_len | wrapped_dek | u16 sig_len | signature | body

Every length is checked against its allowed range before the bytes it covers
are read, and all of them before any HPKE or AEAD call.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

from modelseal.envelope.header import Header, RType, parse_header
from modelseal.errors import (
    BadMagicError,
    BadSignatureError,
    EncLengthError,
    HeaderLengthError,
    SigLengthError,
    TruncatedError,
    UsageError,
    WrapLengthError,
)
from modelseal.keys.issuer import IssuerKeySet, Signer
from modelseal.keys.kek import WRAP_NONCE_BYTES, KEKWrapper
from modelseal.keys.kem import HPKERecipient, RecipientPublicKey, is_hpke_recipient

__all__ = [
    "MAGIC",
    "Framing",
    "build_keyblock",
    "read_framing",
    "signature_message",
]

MAGIC = b"MSEAL/1\n"
MAX_HEADER_BYTES = 65536
DEK_BYTES = 32
WRAPPED_DEK_BYTES = DEK_BYTES + 16
SIGNATURE_BYTES = 64
DEK_INFO_LABEL = b"modelseal/1 dek"
KEK_AAD_LABEL = b"modelseal/1 kek"
SIG_LABEL = b"modelseal/1 sig"
BODY_CONTEXT_LABEL = b"modelseal/1 body"


@dataclass(frozen=True, slots=True)
class Framing:
    """Everything before the body, parsed and length-checked but not yet verified.

    Attributes:
        header: The validated header.
        prelude: ``magic || u32(header_len) || header``, exactly as stored.
        keyblock: ``u16(enc_len) || enc || u16(wrap_len) || wrapped_dek``.
        enc: HPKE encapsulated key, or the 12-byte KEK wrap nonce.
        wrapped_dek: The sealed DEK (48 bytes).
        signature: 64 bytes for hpke, empty for kek.
    """

    header: Header
    prelude: bytes
    keyblock: bytes
    enc: bytes
    wrapped_dek: bytes
    signature: bytes

    @property
    def header_hash(self) -> bytes:
        """H = SHA256(prelude)."""
        return hashlib.sha256(self.prelude).digest()

    @property
    def body_offset(self) -> int:
        """Offset of the body from the start of the container."""
        return len(self.prelude) + len(self.keyblock) + 2 + len(self.signature)

    @property
    def package_id(self) -> str:
        """Hex SHA256(prelude || keyblock): a stable identity of the issued package.

        Unlike a hash of the whole file, it does not change if a third party re-encodes
        an ECDSA signature (r, s) as (r, n - s), so it is what logs and audits record.
        """
        return hashlib.sha256(self.prelude + self.keyblock).hexdigest()

    def body_context(self) -> bytes:
        """The C2SP context: "modelseal/1 body" || H."""
        return BODY_CONTEXT_LABEL + self.header_hash

    def verify_signature(self, issuers: IssuerKeySet) -> None:
        """Verify the issuer signature against the pinned key set (FORMAT §7).

        The algorithm comes from the pinned key; the header's ``alg`` must agree.

        Raises:
            UnknownIssuerError: The header's kid is not pinned.
            BadSignatureError: Algorithm mismatch or invalid signature.
        """
        sig = self.header.sig
        if sig is None:  # kek packages carry no signature; callers never get here with one.
            raise BadSignatureError("package carries no issuer signature")
        pinned = issuers.require(sig.kid)
        if pinned.alg is not sig.alg:
            raise BadSignatureError("header alg does not match the pinned issuer key")
        pinned.verify(signature_message(self.prelude, self.keyblock), self.signature)

    def unwrap_dek(self, key: HPKERecipient | KEKWrapper) -> bytes:
        """Open the wrapped DEK with a device key (hpke) or a KEK (kek).

        Raises:
            RecipientMismatchError: Via the caller's recipient check (not here).
            DEKUnwrapError: The DEK does not open.
        """
        if is_hpke_recipient(key):
            return key.hpke_open(self.enc, self.wrapped_dek, DEK_INFO_LABEL + self.header_hash)
        return key.unwrap(self.enc, self.wrapped_dek, KEK_AAD_LABEL + self.header_hash)


def signature_message(prelude: bytes, keyblock: bytes) -> bytes:
    """M = "modelseal/1 sig" || SHA256(prelude || keyblock)."""
    return SIG_LABEL + hashlib.sha256(prelude + keyblock).digest()


def encode_prelude(header: Header) -> bytes:
    """``magic || u32(header_len) || header``."""
    data = header.encode()
    if not 1 <= len(data) <= MAX_HEADER_BYTES:
        raise HeaderLengthError(f"header_len must be 1..{MAX_HEADER_BYTES}, got {len(data)}")
    return MAGIC + struct.pack(">I", len(data)) + data


def build_keyblock(enc: bytes, wrapped_dek: bytes) -> bytes:
    """``u16(enc_len) || enc || u16(wrap_len) || wrapped_dek``."""
    return struct.pack(">H", len(enc)) + enc + struct.pack(">H", len(wrapped_dek)) + wrapped_dek


def wrap_dek_hpke(prelude: bytes, dek: bytes, recipient: RecipientPublicKey) -> bytes:
    """Seal the DEK to ``recipient`` (HPKE SealBase, ephemeral sender key); return the keyblock."""
    enc, wrapped = recipient.hpke_seal(dek, DEK_INFO_LABEL + hashlib.sha256(prelude).digest())
    return build_keyblock(enc, wrapped)


def wrap_dek_kek(prelude: bytes, dek: bytes, kek: KEKWrapper) -> bytes:
    """Wrap the DEK under a KEK with AES-256-GCM; return the keyblock."""
    nonce, wrapped = kek.wrap(dek, KEK_AAD_LABEL + hashlib.sha256(prelude).digest())
    return build_keyblock(nonce, wrapped)


def sign_package(prelude: bytes, keyblock: bytes, signer: Signer) -> bytes:
    """``u16(64) || signature`` over the FORMAT §7 message."""
    signature = signer.sign(signature_message(prelude, keyblock))
    if len(signature) != SIGNATURE_BYTES:
        raise SigLengthError(f"signer returned {len(signature)} bytes, expected 64")
    return struct.pack(">H", SIGNATURE_BYTES) + signature


def _read_upto(src: BinaryIO, size: int) -> bytes:
    # Pipes and sockets may return short reads: keep reading until EOF or ``size``.
    data = bytearray()
    while len(data) < size:
        piece = src.read(size - len(data))
        if piece is None:
            raise UsageError("non-blocking streams are not supported")
        if not piece:
            break
        data += piece
    return bytes(data)


def _read_exact(src: BinaryIO, size: int, what: str) -> bytes:
    data = _read_upto(src, size)
    if len(data) != size:
        raise TruncatedError(f"input ended inside {what}: needed {size} bytes, got {len(data)}")
    return data


def _read_u16(src: BinaryIO, what: str) -> tuple[bytes, int]:
    raw = _read_exact(src, 2, what)
    return raw, struct.unpack(">H", raw)[0]


def read_framing(src: BinaryIO) -> Framing:
    """Read and check everything up to the body from ``src``.

    ``src`` is left positioned at the start of the body.

    Raises:
        BadMagicError, TruncatedError, HeaderLengthError, HeaderError,
        UnsupportedSuiteError, UnsupportedAlgorithmError, EncLengthError,
        WrapLengthError, SigLengthError.
    """
    magic = _read_upto(src, len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            raise TruncatedError("input ended inside the magic")
        raise BadMagicError("not a modelseal v1 container (bad magic)")
    raw_len = _read_exact(src, 4, "header_len")
    header_len = struct.unpack(">I", raw_len)[0]
    if not 1 <= header_len <= MAX_HEADER_BYTES:
        raise HeaderLengthError(f"header_len must be 1..{MAX_HEADER_BYTES}, got {header_len}")
    header_bytes = _read_exact(src, header_len, "the header")
    header = parse_header(header_bytes)

    raw_enc_len, enc_len = _read_u16(src, "enc_len")
    if header.rtype is RType.HPKE:
        assert header.kem is not None  # guaranteed by Header validation
        expected_enc = header.kem.enc_length
    else:
        expected_enc = WRAP_NONCE_BYTES
    if enc_len != expected_enc:
        raise EncLengthError(f"enc_len must be {expected_enc} for this suite, got {enc_len}")
    enc = _read_exact(src, enc_len, "enc")
    raw_wrap_len, wrap_len = _read_u16(src, "wrap_len")
    if wrap_len != WRAPPED_DEK_BYTES:
        raise WrapLengthError(f"wrap_len must be {WRAPPED_DEK_BYTES}, got {wrap_len}")
    wrapped = _read_exact(src, wrap_len, "wrapped_dek")
    _, sig_len = _read_u16(src, "sig_len")
    expected_sig = SIGNATURE_BYTES if header.rtype is RType.HPKE else 0
    if sig_len != expected_sig:
        raise SigLengthError(
            f"sig_len must be {expected_sig} for rtype {header.rtype}, got {sig_len}"
        )
    signature = _read_exact(src, sig_len, "the signature")
    return Framing(
        header=header,
        prelude=MAGIC + raw_len + header_bytes,
        keyblock=raw_enc_len + enc + raw_wrap_len + wrapped,
        enc=enc,
        wrapped_dek=wrapped,
        signature=signature,
    )
