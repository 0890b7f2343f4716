#!/usr/bin/env python3
"""Write the FORMAT v1 decryption test vectors to ``tests/vectors/testdata/``.

Run from anywhere::

    python tests/vectors/generate.py

Every file holds one scenario: the keys and policy needed to open it, the
container bytes, and either the SHA-256 of the plaintext or the error code a
reader must fail with (the file format is in ``README.md``). Keys, DEKs, salts
and HPKE ephemerals are fresh on every run (HPKE offers no way to inject the
ephemeral key), so the bytes change on every regeneration while what each file
tests does not.

Invalid vectors are built from the library's own primitives
(:mod:`modelseal.envelope.container`, :class:`~modelseal.envelope.body.BodyCipher`)
rather than by patching sealed output, so that a vector breaks one rule only: a
malformed header is still signed by the pinned issuer, its DEK is still wrapped
over its own prelude, and its body still decrypts under that DEK. A reader
therefore fails for the intended reason, not an earlier one.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Running the script by path puts tests/vectors/ first on sys.path, not the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelseal.envelope.body import (
    BODY_PREFIX_BYTES,
    CHUNK_SIZE_BYTES,
    ENCRYPTED_CHUNK_BYTES,
    SALT_BYTES,
    TAG_BYTES,
    BodyCipher,
    body_length,
)
from modelseal.envelope.container import (
    BODY_CONTEXT_LABEL,
    DEK_INFO_LABEL,
    KEK_AAD_LABEL,
    MAGIC,
    SIG_LABEL,
    signature_message,
)
from modelseal.envelope.header import Claims, Header, RType, SignatureRef
from modelseal.keys import (
    KEK,
    KEM,
    IssuerPrivateKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
    key_to_jwk,
)

TESTDATA = Path(__file__).resolve().parent / "testdata"

NOW = 1_800_000_000
AUDIENCE = "device-7c1e0f"
CTYPE = "application/vnd.modelseal.bundle"
KEK_LABEL = "keystore/model-kek-1"
MULTI_MIB_BYTES = 5 * 1024 * 1024
# The plaintext length of invalid vectors that do not need chunk structure.
SMALL_BYTES = 64
# Two full chunks and a short final one, so that there is a middle chunk.
THREE_CHUNK_BYTES = 2 * CHUNK_SIZE_BYTES + 1000
COMMITMENT_OFFSET = SALT_BYTES

ED25519 = SignatureAlgorithm.ED25519
ES256 = SignatureAlgorithm.ES256
# Group orders: Ed25519's L (RFC 8032) and P-256's n (SEC 2).
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class _Drop:
    """Marks a header or claims member to leave out (``None`` stays JSON null)."""


DROP = _Drop()


# --- Keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The key pool of one run."""

    device: dict[KEM, RecipientPrivateKey]  # the recipient of every hpke vector
    stranger: dict[KEM, RecipientPrivateKey]  # another device of the same KEM
    issuer: dict[SignatureAlgorithm, IssuerPrivateKey]  # pinned
    rogue: IssuerPrivateKey  # never pinned
    kek: KEK

    @classmethod
    def generate(cls) -> Keys:
        return cls(
            device={kem: RecipientPrivateKey.generate(kem) for kem in KEM},
            stranger={kem: RecipientPrivateKey.generate(kem) for kem in KEM},
            issuer={alg: IssuerPrivateKey.generate(alg) for alg in SignatureAlgorithm},
            rogue=IssuerPrivateKey.generate(ED25519),
            kek=KEK.generate(KEK_LABEL),
        )


# --- Containers, field by field ------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """A container as its fields, so that a scenario can change one and re-encode.

    A ``*_len`` override writes a length prefix that disagrees with its field; ``None``
    writes the true length. ``dek`` is not part of the container: it is kept so that a
    scenario can rewrap or re-encrypt under the same key.
    """

    header: bytes
    dek: bytes
    enc: bytes = b""
    wrapped: bytes = b""
    signature: bytes = b""
    body: bytes = b""
    magic: bytes = MAGIC
    header_len: int | None = None

    @property
    def prelude(self) -> bytes:
        length = len(self.header) if self.header_len is None else self.header_len
        return self.magic + struct.pack(">I", length) + self.header

    @property
    def keyblock(self) -> bytes:
        return u16_field(self.enc) + u16_field(self.wrapped)

    @property
    def context(self) -> bytes:
        """The C2SP context of the body: "modelseal/1 body" || H."""
        return BODY_CONTEXT_LABEL + sha256(self.prelude)

    def encode(self) -> bytes:
        return self.prelude + self.keyblock + u16_field(self.signature) + self.body


def u16_field(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON, as the library writes headers."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def flip(data: bytes, offset: int) -> bytes:
    """``data`` with the low bit of byte ``offset`` flipped (negative counts from the end)."""
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def plaintext_of(length: int, seed: str) -> bytes:
    """Deterministic incompressible plaintext: a scenario's plaintext depends on its name only."""
    return hashlib.shake_256(seed.encode()).digest(length) if length else b""


def random_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypt_body(dek: bytes, salt: bytes, context: bytes, plaintext: bytes) -> bytes:
    """C2SP chunked encryption: salt || commitment || chunks."""
    cipher = BodyCipher(dek, salt, context)
    chunks = bytearray(body_length(len(plaintext)) - BODY_PREFIX_BYTES)
    cipher.encrypt_chunks(0, memoryview(plaintext), memoryview(chunks), final=True)
    return cipher.prefix() + bytes(chunks)


def zero_ciphertext_plaintext(dek: bytes, salt: bytes, context: bytes, length: int) -> bytes:
    """The plaintext whose every chunk encrypts to zero bytes, the tags aside.

    AES-GCM encrypts by XOR with a keystream: encrypting zeros reveals the keystream,
    and the keystream in turn encrypts to zeros. The container then compresses to
    little more than its tags, which keeps multi-MiB vectors small in the repository.
    A plaintext of repeated bytes would not help: the ciphertext would be random.
    """
    encrypted = encrypt_body(dek, salt, context, bytes(length))[BODY_PREFIX_BYTES:]
    out = bytearray()
    for start in range(0, len(encrypted), ENCRYPTED_CHUNK_BYTES):
        out += encrypted[start : start + ENCRYPTED_CHUNK_BYTES][:-TAG_BYTES]
    return bytes(out)


def hpke_wrap(prelude: bytes, dek: bytes, recipient: RecipientPublicKey) -> tuple[bytes, bytes]:
    """(enc, wrapped_dek) as FORMAT §4 specifies for rtype hpke."""
    return recipient.hpke_seal(dek, DEK_INFO_LABEL + sha256(prelude))


def resign(parts: Parts, signer: IssuerPrivateKey) -> Parts:
    """Sign the container's current prelude and keyblock (FORMAT §7)."""
    return replace(parts, signature=signer.sign(signature_message(parts.prelude, parts.keyblock)))


def sign_with(parts: Parts, sign: Callable[[bytes], bytes]) -> Parts:
    """Replace the signature with ``sign(M)``, for deliberately wrong signing procedures."""
    return replace(parts, signature=sign(signature_message(parts.prelude, parts.keyblock)))


def seal_issued(
    header: bytes,
    plaintext: bytes,
    recipient: RecipientPublicKey,
    signer: IssuerPrivateKey,
    *,
    dek: bytes | None = None,
    salt: bytes | None = None,
    header_len: int | None = None,
) -> Parts:
    """An hpke container around any header bytes: DEK wrapped over its prelude, signed.

    The body encrypts ``plaintext`` whatever the header's ``len`` says.
    """
    parts = Parts(header, dek or random_key(), header_len=header_len)
    enc, wrapped = hpke_wrap(parts.prelude, parts.dek, recipient)
    parts = resign(replace(parts, enc=enc, wrapped=wrapped), signer)
    salt = salt or random_key()[:SALT_BYTES]
    return replace(parts, body=encrypt_body(parts.dek, salt, parts.context, plaintext))


def seal_at_rest(
    header: bytes,
    plaintext: bytes,
    kek: KEK,
    *,
    dek: bytes | None = None,
    salt: bytes | None = None,
) -> Parts:
    """A kek container around any header bytes, its DEK wrapped over its prelude."""
    parts = Parts(header, dek or random_key())
    nonce, wrapped = kek.wrap(parts.dek, KEK_AAD_LABEL + sha256(parts.prelude))
    salt = salt or random_key()[:SALT_BYTES]
    body = encrypt_body(parts.dek, salt, parts.context, plaintext)
    return replace(parts, enc=nonce, wrapped=wrapped, body=body)


# --- Headers -------------------------------------------------------------------------------------


def _apply(members: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**members, **overrides}
    return {name: value for name, value in merged.items() if value is not DROP}


def claims(jti: str, /, **overrides: Any) -> dict[str, Any]:
    """Issued claims, valid at NOW for AUDIENCE, with members (``jti`` too) changed or DROPped."""
    base = {
        "iss": "https://issuer.example",
        "sub": "user-5f9b21",
        "aud": AUDIENCE,
        "mid": "model-speech-en-v3",
        "jti": jti,
        "iat": NOW - 300,
        "exp": NOW + 3600,
    }
    return _apply(base, overrides)


def hpke_header(
    keys: Keys,
    jti: str,
    length: int,
    *,
    kem: KEM = KEM.X25519,
    alg: SignatureAlgorithm = ED25519,
    **overrides: Any,
) -> dict[str, Any]:
    """The header the library writes for the device key of ``kem``, then ``overrides``.

    Overrides are applied to the JSON members, unvalidated, so they may break any rule.
    """
    members = Header(
        rtype=RType.HPKE,
        rcpt=keys.device[kem].kid,
        length=length,
        ctype=CTYPE,
        kem=kem,
        sig=SignatureRef(alg, keys.issuer[alg].kid),
        claims=Claims.from_json(claims(jti)),
    ).to_json()
    return _apply(members, overrides)


def kek_header(length: int, **overrides: Any) -> dict[str, Any]:
    """An at-rest header for the run's KEK label, then ``overrides`` (e.g. ``claims=``)."""
    return _apply({"rtype": "kek", "rcpt": KEK_LABEL, "len": length, "ctype": CTYPE}, overrides)


# --- Vectors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    """One test vector file."""

    name: str
    expect: str
    comment: str
    container: bytes
    identity: dict[str, str]
    issuers: tuple[IssuerPrivateKey, ...] = ()
    plaintext: bytes | None = None
    now: int = NOW
    leeway: int | None = None
    compressed: bool = False

    def render(self) -> bytes:
        lines = [f"expect: {self.expect}"]
        if self.plaintext is not None:
            lines.append(f"payload: {hashlib.sha256(self.plaintext).hexdigest()}")
        lines.append(f"identity: {compact(self.identity)}")
        if self.identity["kty"] != "oct":
            jwks = {"keys": [key_to_jwk(key.public_key()) for key in self.issuers]}
            lines += [f"issuers: {compact(jwks)}", f"audience: {AUDIENCE}"]
        lines.append(f"now: {self.now}")
        if self.leeway is not None:
            lines.append(f"leeway: {self.leeway}")
        if self.compressed:
            lines.append("compressed: zlib")
        lines.append(f"comment: {self.comment}")
        body = zlib.compress(self.container, 9) if self.compressed else self.container
        return ("\n".join(lines) + "\n\n").encode("ascii") + body


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def device_vector(
    keys: Keys,
    name: str,
    expect: str,
    comment: str,
    container: Parts | bytes,
    *,
    kem: KEM = KEM.X25519,
    pinned: tuple[IssuerPrivateKey, ...] | None = None,
    **options: Any,
) -> Vector:
    """A vector opened with the device key of ``kem``; both issuers pinned by default."""
    return Vector(
        name=name,
        expect=expect,
        comment=comment,
        container=container.encode() if isinstance(container, Parts) else container,
        identity=key_to_jwk(keys.device[kem], include_private=True),
        issuers=pinned if pinned is not None else (keys.issuer[ED25519], keys.issuer[ES256]),
        **options,
    )


def kek_vector(
    keys: Keys,
    name: str,
    expect: str,
    comment: str,
    container: Parts,
    *,
    kek: KEK | None = None,
    **options: Any,
) -> Vector:
    """A vector opened with a KEK (the run's KEK unless another is given)."""
    return Vector(
        name=name,
        expect=expect,
        comment=comment,
        container=container.encode(),
        identity=key_to_jwk(kek or keys.kek, include_private=True),
        **options,
    )


def issued(
    keys: Keys,
    name: str,
    length: int = SMALL_BYTES,
    *,
    kem: KEM = KEM.X25519,
    alg: SignatureAlgorithm = ED25519,
    **overrides: Any,
) -> tuple[Parts, bytes]:
    """A correct hpke container for scenario ``name``, and its plaintext."""
    plaintext = plaintext_of(length, name)
    header = dumps(hpke_header(keys, name, length, kem=kem, alg=alg, **overrides))
    return seal_issued(
        header, plaintext, keys.device[kem].public_key(), keys.issuer[alg]
    ), plaintext


def at_rest(keys: Keys, name: str, length: int = SMALL_BYTES, **overrides: Any) -> Parts:
    """A correct kek container for scenario ``name``."""
    return seal_at_rest(
        dumps(kek_header(length, **overrides)), plaintext_of(length, name), keys.kek
    )


# --- Valid ---------------------------------------------------------------------------------------


def valid_issued(keys: Keys) -> Iterator[Vector]:
    """Every KEM and both signature algorithms, over the chunk-boundary lengths."""
    matrix = [
        (KEM.X25519, ED25519, 0),
        (KEM.X25519, ED25519, 16383),
        (KEM.X25519, ED25519, 16384),
        (KEM.X25519, ED25519, 16385),
        (KEM.X25519, ES256, 16383),
        (KEM.P256, ES256, 0),
        (KEM.P256, ES256, 16384),
        (KEM.P256, ED25519, 16385),
        (KEM.XWING, ED25519, 16383),
        (KEM.XWING, ES256, 16385),
    ]
    for kem, alg, length in matrix:
        name = f"success_hpke_{kem.label}_{alg.lower()}_len{length}"
        parts, plaintext = issued(keys, name, length, kem=kem, alg=alg)
        comment = f"issued package: {kem.label} device key, {alg} issuer, {length}-byte plaintext"
        yield device_vector(keys, name, "success", comment, parts, kem=kem, plaintext=plaintext)

    name = "success_hpke_x25519_ed25519_5mib"
    header = dumps(hpke_header(keys, name, MULTI_MIB_BYTES))
    dek, salt = random_key(), random_key()[:SALT_BYTES]
    plaintext = zero_ciphertext_plaintext(dek, salt, Parts(header, dek).context, MULTI_MIB_BYTES)
    recipient = keys.device[KEM.X25519].public_key()
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519], dek=dek, salt=salt)
    comment = (
        "issued package, 5 MiB (320 full chunks and an empty final one); the plaintext is chosen "
        "so that the chunk ciphertexts are zeros and the file compresses"
    )
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext, compressed=True)


def valid_at_rest(keys: Keys) -> Iterator[Vector]:
    """The device at-rest copy over the same lengths, with and without kept claims."""
    for length in (0, 16383, 16384, 16385):
        name = f"success_kek_len{length}"
        kept = claims(name) if length % 2 else DROP
        plaintext = plaintext_of(length, name)
        parts = seal_at_rest(dumps(kek_header(length, claims=kept)), plaintext, keys.kek)
        what = "issued claims kept" if kept is not DROP else "no claims"
        comment = f"at-rest package, {length}-byte plaintext, {what}"
        yield kek_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    name = "success_kek_5mib"
    header = dumps(kek_header(MULTI_MIB_BYTES, claims=claims(name)))
    dek, salt = random_key(), random_key()[:SALT_BYTES]
    plaintext = zero_ciphertext_plaintext(dek, salt, Parts(header, dek).context, MULTI_MIB_BYTES)
    parts = seal_at_rest(header, plaintext, keys.kek, dek=dek, salt=salt)
    comment = "at-rest package, 5 MiB; chunk ciphertexts are zeros so that the file compresses"
    yield kek_vector(keys, name, "success", comment, parts, plaintext=plaintext, compressed=True)


def valid_edges(keys: Keys) -> Iterator[Vector]:
    """Valid inputs that a careless reader might refuse."""
    name = "success_hpke_exp_at_leeway_edge"
    parts, plaintext = issued(keys, name)
    comment = "now is exactly exp + leeway: still deliverable"
    yield device_vector(
        keys, name, "success", comment, parts, plaintext=plaintext, now=NOW + 3600 + 60, leeway=60
    )

    name = "success_hpke_lexp_at_leeway_edge"
    parts, plaintext = issued(keys, name, claims=claims(name, lexp=NOW - 30))
    comment = "lexp passed exactly 30 s ago, with a leeway of 30 s"
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext, leeway=30)

    name = "success_kek_exp_is_history"
    kept = claims(name, iat=NOW - 90 * 86400, exp=NOW - 89 * 86400, lexp=NOW + 86400)
    plaintext = plaintext_of(SMALL_BYTES, name)
    parts = seal_at_rest(dumps(kek_header(SMALL_BYTES, claims=kept)), plaintext, keys.kek)
    comment = "at-rest copy whose delivery deadline passed 89 days ago: kek readers ignore exp"
    yield kek_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    recipient = keys.device[KEM.X25519].public_key()

    name = "success_hpke_reordered_members_and_whitespace"
    plaintext = plaintext_of(SMALL_BYTES, name)
    members = hpke_header(keys, name, SMALL_BYTES)
    reordered = dict(reversed(members.items()))
    header = json.dumps(reordered, indent="\t", separators=(" ,\r\n", " : ")).encode()
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519])
    comment = "members in reverse order, with tabs, CR LF and spaces between tokens"
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    name = "success_hpke_unknown_claims_and_unicode"
    plaintext = plaintext_of(SMALL_BYTES, name)
    extra = claims(name, mid="modèle-语音-v3")
    extra["x-tier"] = {"name": "pro", "seats": [1, 2, 3], "trial": False, "note": None}
    header = dumps(hpke_header(keys, name, SMALL_BYTES, claims=extra))
    # An escaped surrogate pair (U+1F600) is valid JSON and valid I-JSON.
    header = header.replace(b'"pro"', b'"pro \\ud83d\\ude00 \\u00e9"')
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519])
    comment = (
        "an unknown claim holding an object, arrays, booleans and null is allowed; raw UTF-8 "
        "and an escaped surrogate pair are valid"
    )
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    name = "success_hpke_claim_of_255_code_points"
    plaintext = plaintext_of(SMALL_BYTES, name)
    wide = "\U0001f600" * 255  # 255 code points; 510 UTF-16 units; 1020 UTF-8 bytes
    header = dumps(hpke_header(keys, name, SMALL_BYTES, claims=claims(name, sub=wide)))
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519])
    comment = (
        "claims.sub is 255 astral code points (U+1F600): lengths count code points, not "
        "UTF-16 units or UTF-8 bytes"
    )
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    name = "success_hpke_nesting_at_limit"
    plaintext = plaintext_of(SMALL_BYTES, name)
    header = dumps(hpke_header(keys, name, SMALL_BYTES, claims=nested_claims(name, 16)))
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519])
    comment = "an unknown claim holds a scalar enclosed in 16 objects and arrays, the maximum"
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext)

    name = "success_hpke_header_len_65536"
    plaintext = plaintext_of(SMALL_BYTES, name)
    header = pad_header(dumps(hpke_header(keys, name, SMALL_BYTES, alg=ES256)), 65536)
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ES256])
    comment = "header_len is 65536, the maximum (JSON whitespace pads the header)"
    yield device_vector(keys, name, "success", comment, parts, plaintext=plaintext, compressed=True)

    name = "success_hpke_signer_second_of_three_pinned"
    parts, plaintext = issued(keys, name, alg=ES256)
    pinned = (keys.issuer[ED25519], keys.issuer[ES256], IssuerPrivateKey.generate(ES256))
    comment = "three issuer keys are pinned; the signer is the second"
    yield device_vector(keys, name, "success", comment, parts, pinned=pinned, plaintext=plaintext)


def nested_claims(jti: str, containers: int) -> dict[str, Any]:
    """Claims with an unknown claim whose innermost scalar sits in ``containers`` containers.

    The header object and ``claims`` are the first two; arrays make up the rest.
    """
    value: Any = 0
    for _ in range(containers - 2):
        value = [value]
    return {**claims(jti), "x-deep": value}


def pad_header(header: bytes, size: int) -> bytes:
    """Pad a JSON object to ``size`` bytes with whitespace after its opening brace."""
    return b"{" + b" " * (size - len(header)) + header[1:]


# --- Framing -------------------------------------------------------------------------------------


def magic_and_truncation(keys: Keys) -> Iterator[Vector]:
    """Not a v1 container, or one that ends before its body."""
    good, _ = issued(keys, "framing")
    for name, magic, comment in [
        ("bad_magic_version_2", b"MSEAL/2\n", "magic of a future version"),
        ("bad_magic_lowercase", b"mseal/1\n", "magic is compared byte for byte"),
        ("bad_magic_crlf", b"MSEAL/1\r\n", "magic ending in CR LF"),
    ]:
        yield device_vector(keys, name, "bad_magic", comment, replace(good, magic=magic))
    age = b"age-encryption.org/v1\n-> X25519 AAAA\n--- AAAA\n" + bytes(32)
    yield device_vector(
        keys, "bad_magic_age_file", "bad_magic", "an age file is not a modelseal container", age
    )

    data = good.encode()
    enc_at = len(good.prelude)
    sig_at = enc_at + len(good.keyblock) + 2
    for name, cut, comment in [
        ("truncated_empty_file", 0, "the file is empty"),
        ("truncated_in_magic", 5, "the input ends inside the magic"),
        ("truncated_in_header_len", 10, "the input ends inside header_len"),
        ("truncated_in_header", 40, "the input ends inside the header"),
        ("truncated_before_enc_len", enc_at, "the input ends right after the header"),
        ("truncated_in_enc", enc_at + 10, "the input ends inside enc"),
        ("truncated_in_wrapped_dek", enc_at + 2 + 32 + 2 + 20, "the input ends in wrapped_dek"),
        ("truncated_before_sig_len", sig_at - 2, "the input ends before sig_len"),
        ("truncated_in_signature", sig_at + 63, "the last byte of the signature is missing"),
    ]:
        yield device_vector(keys, name, "truncated", comment, data[:cut])


def length_fields(keys: Keys) -> Iterator[Vector]:
    """header_len, enc_len, wrap_len and sig_len out of range; all checked before any crypto."""
    recipient, signer = keys.device[KEM.X25519].public_key(), keys.issuer[ED25519]
    name = "header_length"
    header = dumps(hpke_header(keys, name, SMALL_BYTES))
    plaintext = plaintext_of(SMALL_BYTES, name)
    zero = seal_issued(header, plaintext, recipient, signer, header_len=0)
    yield device_vector(keys, "header_length_zero", "header_length", "header_len is 0", zero)
    huge = seal_issued(header, plaintext, recipient, signer, header_len=0xFFFFFFFF)
    comment = "header_len is 2^32-1: refused before the reader tries to read that much"
    yield device_vector(keys, "header_length_u32_max", "header_length", comment, huge)
    padded = pad_header(header, 65537)
    over = seal_issued(padded, plaintext, recipient, signer)
    comment = "header_len is 65537, one past the maximum; all 65537 bytes are present and signed"
    yield device_vector(
        keys, "header_length_65537", "header_length", comment, over, compressed=True
    )

    good, _ = issued(keys, "enc_length")
    p256, _ = issued(keys, "enc_length_p256", kem=KEM.P256)
    xwing, _ = issued(keys, "enc_length_xwing", kem=KEM.XWING)
    compressed_point = bytes([2 + (p256.enc[64] & 1)]) + p256.enc[1:33]
    for name, parts, kem, comment in [
        ("enc_length_x25519_33", replace(good, enc=good.enc + b"\x00"), KEM.X25519,
         "x25519 enc of 33 bytes"),
        ("enc_length_x25519_zero", replace(good, enc=b""), KEM.X25519, "x25519 enc_len 0"),
        ("enc_length_p256_compressed_point", replace(p256, enc=compressed_point), KEM.P256,
         "p256 enc as a 33-byte compressed point; FORMAT uses the 65-byte uncompressed form"),
        ("enc_length_xwing_mlkem_only", replace(xwing, enc=xwing.enc[:1088]), KEM.XWING,
         "xwing enc of 1088 bytes: the ML-KEM ciphertext without the X25519 share"),
    ]:  # fmt: skip
        yield device_vector(
            keys, name, "enc_length", comment + " (re-signed)", resign(parts, signer), kem=kem
        )
    rest = at_rest(keys, "enc_length_kek")
    comment = "kek wrap nonce of 16 bytes instead of 12"
    yield kek_vector(
        keys, "enc_length_kek_16", "enc_length", comment, replace(rest, enc=rest.enc + bytes(4))
    )

    for name, wrapped, comment in [
        ("wrap_length_32", good.wrapped[:32], "wrap_len 32: the sealed DEK without its tag"),
        ("wrap_length_64", good.wrapped + bytes(16), "wrap_len 64"),
        ("wrap_length_zero", b"", "wrap_len 0"),
    ]:
        parts = resign(replace(good, wrapped=wrapped), signer)
        yield device_vector(keys, name, "wrap_length", comment + " (re-signed)", parts)
    comment = "kek wrapped_dek of 47 bytes"
    yield kek_vector(
        keys, "wrap_length_kek_47", "wrap_length", comment, replace(rest, wrapped=rest.wrapped[:47])
    )

    es256, _ = issued(keys, "sig_length_es256", alg=ES256)
    r, s = (int.from_bytes(es256.signature[i : i + 32], "big") for i in (0, 32))
    der = encode_dss_signature(r, s)
    for name, parts, comment in [
        ("sig_length_hpke_zero", replace(good, signature=b""), "hpke package with sig_len 0"),
        ("sig_length_hpke_65", replace(good, signature=good.signature + b"\x00"),
         "hpke package with a 65-byte signature"),
        ("sig_length_es256_der", replace(es256, signature=der),
         "the ES256 signature DER-encoded (70 to 72 bytes) instead of the 64-byte r||s"),
    ]:  # fmt: skip
        yield device_vector(keys, name, "sig_length", comment, parts)
    comment = "kek package carrying a 64-byte signature"
    yield kek_vector(
        keys, "sig_length_kek_64", "sig_length", comment, replace(rest, signature=bytes(64))
    )


# --- Header --------------------------------------------------------------------------------------


def header_errors(keys: Keys) -> Iterator[Vector]:
    """Headers that break FORMAT §3, each signed by a pinned issuer and otherwise sound."""
    recipient, signer = keys.device[KEM.X25519].public_key(), keys.issuer[ED25519]

    def signed(name: str, header: bytes, comment: str, length: int = SMALL_BYTES) -> Vector:
        parts = seal_issued(header, plaintext_of(length, name), recipient, signer)
        return device_vector(keys, name, "header_invalid", comment + " (signed)", parts)

    def text(name: str, **overrides: Any) -> bytes:
        return dumps(hpke_header(keys, name, SMALL_BYTES, **overrides))

    sub = b'"sub":"user-5f9b21"'
    iat = f'"iat":{NOW - 300}'.encode()
    cases: list[tuple[str, Callable[[str], bytes], str]] = [
        ("duplicate_member", lambda n: text(n).replace(b'"len":64,', b'"len":64,"len":64,'),
         "top-level member len appears twice, with equal values"),
        ("duplicate_claim", lambda n: text(n).replace(b'"aud":', b'"aud":"device-other","aud":'),
         "claims.aud appears twice; a first-wins parser would see another device"),
        ("duplicate_by_escape",
         lambda n: text(n).replace(b'"len":64,', b'"len":64,"\\u006cen":64,'),
         "len and its escaped spelling \\u006cen are the same member"),
        ("duplicate_nested",
         lambda n: text(n, claims={**claims(n), "x-tier": {"seats": 1}}).replace(
             b'"seats":1', b'"seats":1,"seats":2'),
         "a duplicate inside an unknown claim's object: refused at every depth"),
        ("unknown_member", lambda n: text(n, zip="deflate"), "unknown top-level member zip"),
        ("missing_len", lambda n: text(n, len=DROP), "required member len is absent"),
        ("len_string", lambda n: text(n, len="64"), "len is the string \"64\""),
        ("len_fraction", lambda n: text(n).replace(b'"len":64', b'"len":64.0'), "len is 64.0"),
        ("len_exponent", lambda n: text(n).replace(b'"len":64', b'"len":6.4e1'), "len is 6.4e1"),
        ("len_negative", lambda n: text(n, len=-1), "len is -1"),
        ("len_2_52_plus_1", lambda n: text(n, len=2**52 + 1),
         "len is 2^52+1, two past the max (2^52-1)"),
        ("len_beyond_ijson", lambda n: text(n, len=2**64 + 64),
         "len is 2^64+64, outside the I-JSON range; a 64-bit wrap would read 64"),
        ("len_boolean", lambda n: text(n, len=True),
         "len is true over a 1-byte body: booleans are not integers"),
        ("kdf_boolean", lambda n: text(n, suite={"kem": 32, "kdf": True, "aead": 2}),
         "suite.kdf is true, not the integer 1"),
        ("iat_nan", lambda n: text(n).replace(iat, b'"iat":NaN'), "claims.iat is NaN"),
        ("exp_string", lambda n: text(n, claims=claims(n, exp=str(NOW + 3600))),
         "claims.exp is a string"),
        ("iat_equals_exp", lambda n: text(n, claims=claims(n, iat=NOW + 3600)), "iat == exp"),
        ("iat_after_exp", lambda n: text(n, claims=claims(n, iat=NOW + 7200)), "iat > exp"),
        ("missing_claim_aud", lambda n: text(n, claims=claims(n, aud=DROP)), "claims without aud"),
        ("hpke_missing_claims", lambda n: text(n, claims=DROP), "hpke header without claims"),
        ("hpke_missing_sig", lambda n: text(n, sig=DROP), "hpke header without sig"),
        ("hpke_missing_suite", lambda n: text(n, suite=DROP), "hpke header without suite"),
        ("claims_array", lambda n: text(n, claims=[claims(n)]), "claims is an array"),
        ("rtype_uppercase", lambda n: text(n, rtype="HPKE"), "rtype HPKE (case-sensitive)"),
        ("ctype_null", lambda n: text(n, ctype=None), "ctype is null"),
        ("sig_kid_uppercase",
         lambda n: text(n, sig={"alg": "Ed25519", "kid": signer.kid.upper()}),
         "sig.kid in uppercase hex (key ids are 32 characters [0-9a-f])"),
        ("suite_extra_member",
         lambda n: text(n, suite={"kem": 32, "kdf": 1, "aead": 2, "mode": 0}),
         "suite with an extra member mode"),
        ("not_an_object", lambda n: b"[" + text(n) + b"]", "the header is an array"),
        ("trailing_data", lambda n: text(n) + b"{}", "a second JSON value follows the object"),
        ("utf8_invalid_byte",
         lambda n: text(n).replace(sub, b'"sub":"user-\xff5f9b21"'), "0xFF in claims.sub"),
        ("utf8_overlong",
         lambda n: text(n).replace(sub, b'"sub":"user\xc0\xaf5f9b21"'),
         "claims.sub holds C0 AF, an overlong encoding of '/'"),
        ("utf8_encoded_surrogate",
         lambda n: text(n).replace(sub, b'"sub":"user\xed\xa0\x805f9b21"'),
         "claims.sub holds ED A0 80, surrogate U+D800 encoded as UTF-8"),
        ("lone_surrogate_escape",
         lambda n: text(n).replace(sub, b'"sub":"user\\ud8005f9b21"'),
         "claims.sub holds the escape \\ud800 with no low surrogate after it"),
        ("byte_order_mark", lambda n: b"\xef\xbb\xbf" + text(n), "the header starts with a BOM"),
        ("control_character", lambda n: text(n).replace(sub, b'"sub":"user-\x015f9b21"'),
         "claims.sub holds an unescaped U+0001"),
        ("nesting_too_deep", lambda n: text(n, claims=nested_claims(n, 17)),
         "an unknown claim holds a scalar enclosed in 17 objects and arrays (the limit is 16)"),
        ("unsafe_integer_in_unknown_claim",
         lambda n: text(n, claims={**claims(n), "x-count": 2**53}),
         "an unknown claim holds the integer 2^53, outside the I-JSON range"),
        ("claim_256_chars", lambda n: text(n, claims=claims(n, sub="u" * 256)),
         "claims.sub of 256 characters (the limit is 255)"),
        ("claim_empty", lambda n: text(n, claims=claims(n, jti="")), "claims.jti is empty"),
        ("ctype_256_chars", lambda n: text(n, ctype="application/" + "x" * 244),
         "ctype of 256 characters (the limit is 255)"),
        ("sig_alg_65_chars", lambda n: text(n, sig={"alg": "E" * 65, "kid": signer.kid}),
         "sig.alg of 65 characters: malformed (header_invalid), not merely unsupported"),
        ("sig_alg_empty", lambda n: text(n, sig={"alg": "", "kid": signer.kid}),
         "sig.alg is empty: malformed (header_invalid), not merely unsupported"),
        ("hpke_rcpt_uppercase", lambda n: text(n, rcpt=recipient.kid.upper()),
         "hpke rcpt in uppercase hex (it must be 32 characters [0-9a-f])"),
    ]  # fmt: skip
    for suffix, build, comment in cases:
        name = f"header_invalid_{suffix}"
        yield signed(name, build(name), comment, length=1 if suffix == "len_boolean" else 64)

    for suffix, header, comment in [
        ("kek_with_suite", kek_header(SMALL_BYTES, suite={"kem": 32, "kdf": 1, "aead": 2}),
         "kek header carrying suite"),
        ("kek_with_sig", kek_header(SMALL_BYTES, sig={"alg": "Ed25519", "kid": signer.kid}),
         "kek header carrying sig"),
        ("kek_rcpt_65_chars", kek_header(SMALL_BYTES, rcpt="k" * 65),
         "kek rcpt of 65 characters (the limit is 64)"),
        ("kek_rcpt_empty", kek_header(SMALL_BYTES, rcpt=""), "kek rcpt is empty"),
        ("kek_claims_missing_jti", kek_header(SMALL_BYTES, claims=claims("kek", jti=DROP)),
         "kek header whose kept claims lack jti: claims, when present, must be complete"),
    ]:  # fmt: skip
        name = f"header_invalid_{suffix}"
        parts = seal_at_rest(dumps(header), plaintext_of(SMALL_BYTES, name), keys.kek)
        yield kek_vector(keys, name, "header_invalid", comment + " (wrapped under the KEK)", parts)


def suite_and_alg_errors(keys: Keys) -> Iterator[Vector]:
    """Well-formed headers naming a suite or signature algorithm that v1 does not accept."""
    recipient, signer = keys.device[KEM.X25519].public_key(), keys.issuer[ED25519]
    for suffix, suite, comment in [
        ("kem_p384", {"kem": 0x0011, "kdf": 1, "aead": 2}, "kem 0x0011 (P-384)"),
        ("kem_x448", {"kem": 0x0021, "kdf": 1, "aead": 2}, "kem 0x0021 (X448)"),
        ("kem_mlkem768", {"kem": 0x0041, "kdf": 1, "aead": 2}, "kem 0x0041 (ML-KEM-768 alone)"),
        ("kdf_sha384", {"kem": 32, "kdf": 2, "aead": 2}, "kdf 0x0002 (HKDF-SHA384)"),
        ("aead_aes128", {"kem": 32, "kdf": 1, "aead": 1}, "aead 0x0001 (AES-128-GCM)"),
        ("aead_chacha20", {"kem": 32, "kdf": 1, "aead": 3}, "aead 0x0003 (ChaCha20Poly1305)"),
        ("aead_export_only", {"kem": 32, "kdf": 1, "aead": 0xFFFF}, "aead 0xFFFF (export-only)"),
    ]:
        name = f"unsupported_suite_{suffix}"
        header = dumps(hpke_header(keys, name, SMALL_BYTES, suite=suite))
        parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), recipient, signer)
        yield device_vector(keys, name, "unsupported_suite", comment + " (signed)", parts)

    for suffix, alg, comment in [
        ("eddsa", "EdDSA", "alg EdDSA (v1 uses the RFC 8037 name Ed25519)"),
        ("lowercase", "ed25519", "alg ed25519 (JOSE names are case-sensitive)"),
        ("es384", "ES384", "alg ES384"),
        ("none", "none", "alg none"),
    ]:
        name = f"unsupported_alg_{suffix}"
        sig = {"alg": alg, "kid": signer.kid}
        header = dumps(hpke_header(keys, name, SMALL_BYTES, sig=sig))
        parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), recipient, signer)
        comment += "; the package carries a valid Ed25519 signature"
        yield device_vector(keys, name, "unsupported_alg", comment, parts)


# --- Signature -----------------------------------------------------------------------------------


def signature_errors(keys: Keys) -> Iterator[Vector]:
    """Unpinned issuers and signatures that do not verify (FORMAT §7)."""
    recipient = keys.device[KEM.X25519].public_key()
    ed_signer, es_signer = keys.issuer[ED25519], keys.issuer[ES256]

    name = "unknown_issuer_unpinned_key"
    sig = {"alg": "Ed25519", "kid": keys.rogue.kid}
    header = dumps(hpke_header(keys, name, SMALL_BYTES, sig=sig))
    parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), recipient, keys.rogue)
    comment = "validly signed by an Ed25519 key that is not pinned"
    yield device_vector(keys, name, "unknown_issuer", comment, parts)
    name = "unknown_issuer_other_key_pinned"
    parts, _ = issued(keys, name, alg=ES256)
    comment = "signed by the ES256 issuer while only the Ed25519 issuer is pinned"
    yield device_vector(keys, name, "unknown_issuer", comment, parts, pinned=(ed_signer,))

    ed, _ = issued(keys, "bad_signature_ed25519")
    es, _ = issued(keys, "bad_signature_es256", alg=ES256)
    r_ed, s_ed = ed.signature[:32], int.from_bytes(ed.signature[32:], "little")
    s_es = es.signature[32:]

    # A header changed after signing, with a DEK wrap and body that match the new header,
    # so that only the signature is stale.
    changed = ed.header.replace(b'"mid":"model-speech-en-v3"', b'"mid":"model-speech-en-v4"')
    stale = seal_issued(changed, plaintext_of(SMALL_BYTES, "stale"), recipient, ed_signer)
    stale = replace(stale, signature=ed.signature)
    other_enc, _ = hpke_wrap(ed.prelude, ed.dek, recipient)
    prelude_only_message = SIG_LABEL + sha256(ed.prelude)

    for suffix, parts, comment in [
        ("ed25519_flipped_bit", replace(ed, signature=flip(ed.signature, 40)),
         "one bit of the Ed25519 signature flipped"),
        ("es256_flipped_bit", replace(es, signature=flip(es.signature, 5)),
         "one bit of r in the ES256 signature flipped"),
        ("header_changed_after_signing", stale,
         "claims.mid changed after signing (DEK wrap and body match the new header)"),
        ("wrapped_dek_changed", replace(ed, wrapped=flip(ed.wrapped, 0)),
         "wrapped_dek changed after signing: the signature covers the keyblock"),
        ("enc_replaced", replace(ed, enc=other_enc),
         "enc replaced by another valid encapsulation of the same DEK after signing"),
        ("pinned_kid_other_key", sign_with(ed, keys.rogue.sign),
         "the header names the pinned Ed25519 kid, but an unpinned key signed"),
        ("ed25519_s_plus_order",
         replace(ed, signature=r_ed + (s_ed + ED25519_ORDER).to_bytes(32, "little")),
         "Ed25519 signature with S + L in place of S: non-canonical S must be refused"),
        ("es256_r_zero", replace(es, signature=bytes(32) + s_es), "ES256 signature with r = 0"),
        ("es256_r_equals_order", replace(es, signature=P256_ORDER.to_bytes(32, "big") + s_es),
         "ES256 signature with r = n"),
        ("es256_double_hash", sign_with(es, lambda m: es_signer.sign(sha256(m))),
         "ES256 over SHA256(SHA256(M)) instead of SHA256(M)"),
        ("without_label", sign_with(ed, lambda m: ed_signer.sign(m[len(SIG_LABEL):])),
         "signature over SHA256(prelude || keyblock) without the \"modelseal/1 sig\" label"),
        ("over_prelude_only", sign_with(ed, lambda _: ed_signer.sign(prelude_only_message)),
         "signature over \"modelseal/1 sig\" || SHA256(prelude): the keyblock is left out"),
    ]:  # fmt: skip
        yield device_vector(keys, f"bad_signature_{suffix}", "bad_signature", comment, parts)

    name = "bad_signature_alg_differs_from_pinned"
    sig = {"alg": "Ed25519", "kid": es_signer.kid}
    header = dumps(hpke_header(keys, name, SMALL_BYTES, sig=sig))
    parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), recipient, es_signer)
    comment = (
        "the header says Ed25519 but names the pinned ES256 key, which signed: the algorithm "
        "comes from the pinned key and the header must agree with it"
    )
    yield device_vector(keys, name, "bad_signature", comment, parts)


# --- Claims --------------------------------------------------------------------------------------


def claims_errors(keys: Keys) -> Iterator[Vector]:
    """Genuine packages that are not for this device, or not for now."""
    name = "expired_one_second_past_leeway"
    parts, _ = issued(keys, name)
    comment = "now = exp + leeway + 1"
    yield device_vector(keys, name, "expired", comment, parts, now=NOW + 3600 + 61, leeway=60)
    name = "expired_without_leeway"
    parts, _ = issued(keys, name, claims=claims(name, iat=NOW - 600, exp=NOW - 1))
    yield device_vector(keys, name, "expired", "exp was 1 s ago, no leeway", parts, leeway=0)

    name = "wrong_audience_other_device"
    parts, _ = issued(keys, name, claims=claims(name, aud="device-000000"))
    yield device_vector(keys, name, "wrong_audience", "aud names another device", parts)
    name = "wrong_audience_case"
    parts, _ = issued(keys, name, claims=claims(name, aud=AUDIENCE.upper()))
    yield device_vector(keys, name, "wrong_audience", "aud differs only in case", parts)

    name = "licence_expired_hpke"
    parts, _ = issued(keys, name, claims=claims(name, lexp=NOW - 61))
    comment = "issued package whose lexp passed 61 s ago, leeway 60"
    yield device_vector(keys, name, "licence_expired", comment, parts, leeway=60)
    name = "licence_expired_kek"
    kept = claims(name, iat=NOW - 86400, exp=NOW - 86000, lexp=NOW - 1)
    comment = "at-rest copy whose lexp passed 1 s ago, no leeway"
    yield kek_vector(
        keys, name, "licence_expired", comment, at_rest(keys, name, claims=kept), leeway=0
    )


# --- Recipient and DEK ---------------------------------------------------------------------------


def recipient_errors(keys: Keys) -> Iterator[Vector]:
    """Packages addressed to another key."""
    signer = keys.issuer[ED25519]
    stranger = keys.stranger[KEM.X25519].public_key()

    name = "recipient_mismatch_other_device"
    header = dumps(hpke_header(keys, name, SMALL_BYTES, rcpt=stranger.kid))
    parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), stranger, signer)
    comment = "signed package for another x25519 device key"
    yield device_vector(keys, name, "recipient_mismatch", comment, parts)

    name = "recipient_mismatch_kem"
    suite = {"kem": int(KEM.X25519), "kdf": 1, "aead": 2}
    header = dumps(hpke_header(keys, name, SMALL_BYTES, kem=KEM.XWING, suite=suite))
    parts = seal_issued(header, plaintext_of(SMALL_BYTES, name), stranger, signer)
    comment = "rcpt is this X-Wing key's kid, but the suite's kem is X25519 (signed)"
    yield device_vector(keys, name, "recipient_mismatch", comment, parts, kem=KEM.XWING)

    name = "recipient_mismatch_kek_label"
    other = KEK("keystore/model-kek-2", random_key())
    header = dumps(kek_header(SMALL_BYTES, rcpt=other.label))
    parts = seal_at_rest(header, plaintext_of(SMALL_BYTES, name), other)
    comment = "at-rest copy under the KEK labelled keystore/model-kek-2"
    yield kek_vector(keys, name, "recipient_mismatch", comment, parts)

    name = "recipient_mismatch_kek_package_device_key"
    comment = "an at-rest (kek) package offered a device key"
    yield device_vector(keys, name, "recipient_mismatch", comment, at_rest(keys, name))


def dek_errors(keys: Keys) -> Iterator[Vector]:
    """Signed packages whose DEK does not unwrap, and at-rest copies under the wrong KEK."""
    signer = keys.issuer[ED25519]
    recipient = keys.device[KEM.X25519].public_key()
    base, _ = issued(keys, "dek_unwrap")
    h = sha256(base.prelude)

    def rewrapped(enc: bytes, wrapped: bytes) -> Parts:
        return resign(replace(base, enc=enc, wrapped=wrapped), signer)

    other_enc, _ = hpke_wrap(base.prelude, base.dek, recipient)
    stranger = keys.stranger[KEM.X25519].public_key()
    for suffix, parts, comment in [
        ("enc_replaced", rewrapped(other_enc, base.wrapped),
         "enc replaced by another valid encapsulation to the same key"),
        ("x25519_low_order_enc", rewrapped(bytes(32), base.wrapped),
         "enc is the all-zero X25519 point, whose shared secret is all zeros"),
        ("wrapped_dek_flipped", rewrapped(base.enc, flip(base.wrapped, -1)),
         "one bit of the wrapped DEK's tag flipped"),
        ("info_without_hash", rewrapped(*recipient.hpke_seal(base.dek, DEK_INFO_LABEL)),
         "DEK sealed with info \"modelseal/1 dek\" alone, without H"),
        ("info_hashes_header_only",
         rewrapped(*recipient.hpke_seal(base.dek, DEK_INFO_LABEL + sha256(base.header))),
         "DEK sealed with info over SHA256(header) instead of SHA256(prelude)"),
        ("info_kek_label", rewrapped(*recipient.hpke_seal(base.dek, KEK_AAD_LABEL + h)),
         "DEK sealed with the kek label \"modelseal/1 kek\" in info"),
        ("sealed_to_other_key", rewrapped(*hpke_wrap(base.prelude, base.dek, stranger)),
         "rcpt names this key, but the DEK was sealed to another x25519 key"),
    ]:  # fmt: skip
        name = f"dek_unwrap_failed_{suffix}"
        yield device_vector(keys, name, "dek_unwrap_failed", comment + " (signed)", parts)

    p256, _ = issued(keys, "dek_unwrap_p256", kem=KEM.P256)
    off_curve = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    yield device_vector(
        keys,
        "dek_unwrap_failed_p256_enc_off_curve",
        "dek_unwrap_failed",
        "p256 enc is the point (1, 1), which is not on the curve (signed)",
        resign(replace(p256, enc=off_curve), signer),
        kem=KEM.P256,
    )
    xwing, _ = issued(keys, "dek_unwrap_xwing", kem=KEM.XWING)
    yield device_vector(
        keys,
        "dek_unwrap_failed_xwing_mlkem_ciphertext_flipped",
        "dek_unwrap_failed",
        "one bit of the ML-KEM ciphertext in the X-Wing enc flipped; implicit rejection yields "
        "another shared secret (signed)",
        resign(replace(xwing, enc=flip(xwing.enc, 500)), signer),
        kem=KEM.XWING,
    )

    rest = at_rest(keys, "dek_unwrap_kek")
    wrong = KEK(KEK_LABEL, random_key())
    comment = "the KEK has the right label but other key bytes"
    yield kek_vector(
        keys, "dek_unwrap_failed_kek_wrong_key", "dek_unwrap_failed", comment, rest, kek=wrong
    )
    aes = AESGCM(keys.kek.secret_bytes())
    h_rest = sha256(rest.prelude)
    for suffix, parts, comment in [
        ("nonce_flipped", replace(rest, enc=flip(rest.enc, 0)), "one bit of the nonce flipped"),
        ("wrapped_flipped", replace(rest, wrapped=flip(rest.wrapped, 3)),
         "one bit of the wrapped DEK flipped"),
        ("aad_without_label", replace(rest, wrapped=aes.encrypt(rest.enc, rest.dek, h_rest)),
         "DEK wrapped with aad H alone, without the \"modelseal/1 kek\" label"),
        ("aad_hpke_label",
         replace(rest, wrapped=aes.encrypt(rest.enc, rest.dek, DEK_INFO_LABEL + h_rest)),
         "DEK wrapped with the hpke label \"modelseal/1 dek\" in the aad"),
        ("header_changed",
         replace(rest, header=rest.header.replace(CTYPE.encode(), b"application/onnx")),
         "ctype changed after wrapping: H is part of the wrap's aad"),
    ]:  # fmt: skip
        yield kek_vector(
            keys, f"dek_unwrap_failed_kek_{suffix}", "dek_unwrap_failed", comment, parts
        )


# --- Body ----------------------------------------------------------------------------------------


def commitment_errors(keys: Keys) -> Iterator[Vector]:
    """Bodies whose key commitment does not match the DEK and header (FORMAT §5)."""
    small, plaintext = issued(keys, "commitment")
    other, _ = issued(keys, "commitment_other")
    salt = random_key()[:SALT_BYTES]
    header_only = BODY_CONTEXT_LABEL + sha256(small.header)
    for suffix, body, comment in [
        ("salt_flipped", flip(small.body, 0), "one bit of the salt flipped"),
        ("commitment_flipped", flip(small.body, COMMITMENT_OFFSET),
         "one bit of the stored commitment flipped"),
        ("body_of_other_package", other.body,
         "the body of another package of the same length (another DEK)"),
        ("context_hashes_header_only", encrypt_body(small.dek, salt, header_only, plaintext),
         "body encrypted with context over SHA256(header) instead of SHA256(prelude)"),
        ("context_without_label",
         encrypt_body(small.dek, salt, sha256(small.prelude), plaintext),
         "body encrypted with context H, without the \"modelseal/1 body\" label"),
    ]:  # fmt: skip
        name = f"commitment_mismatch_{suffix}"
        parts = replace(small, body=body)
        yield device_vector(keys, name, "commitment_mismatch", comment, parts)
    rest = at_rest(keys, "commitment_kek")
    zeroed = rest.body[:COMMITMENT_OFFSET] + bytes(32) + rest.body[BODY_PREFIX_BYTES:]
    comment = "at-rest copy whose commitment is replaced by zeros"
    yield kek_vector(
        keys,
        "commitment_mismatch_kek_commitment_zeroed",
        "commitment_mismatch",
        comment,
        replace(rest, body=zeroed),
    )


def chunk_errors(keys: Keys) -> Iterator[Vector]:
    """Chunks that do not authenticate; the comment names the failing chunk index."""
    three, plaintext = issued(keys, "chunks", THREE_CHUNK_BYTES)
    prefix, chunks = three.body[:BODY_PREFIX_BYTES], three.body[BODY_PREFIX_BYTES:]
    c0, c1, c2 = (
        chunks[i * ENCRYPTED_CHUNK_BYTES : (i + 1) * ENCRYPTED_CHUNK_BYTES] for i in range(3)
    )
    shifted = bytearray(len(chunks))
    BodyCipher(three.dek, prefix[:SALT_BYTES], three.context).encrypt_chunks(
        1, memoryview(plaintext), memoryview(shifted), final=True
    )
    resalted = encrypt_body(three.dek, random_key()[:SALT_BYTES], three.context, plaintext)
    for suffix, body, comment in [
        ("middle_chunk_flipped", prefix + c0 + flip(c1, 8000) + c2,
         "one bit flipped inside chunk 1 of 3 (index 1)"),
        ("final_tag_flipped", prefix + c0 + c1 + flip(c2, -1),
         "one bit of the final chunk's tag flipped (index 2)"),
        ("chunks_swapped", prefix + c1 + c0 + c2, "chunks 0 and 1 swapped (index 0)"),
        ("chunk_repeated", prefix + c0 + c0 + c2, "chunk 0 repeated in place of chunk 1 (index 1)"),
        ("nonce_index_off_by_one", prefix + bytes(shifted),
         "chunks encrypted with the nonces of indices 1..3 instead of 0..2 (index 0)"),
        ("chunks_from_other_salt", prefix + resalted[BODY_PREFIX_BYTES:],
         "salt and commitment intact, chunks encrypted under another salt's keys (index 0)"),
    ]:  # fmt: skip
        name = f"chunk_tag_failed_{suffix}"
        yield device_vector(keys, name, "chunk_tag_failed", comment, replace(three, body=body))

    empty, _ = issued(keys, "chunk_empty", 0)
    body = empty.body[:BODY_PREFIX_BYTES] + bytes(TAG_BYTES)
    comment = "len 0: the tag of the lone, empty final chunk replaced by zeros (index 0)"
    yield device_vector(
        keys,
        "chunk_tag_failed_empty_final_chunk_zeroed",
        "chunk_tag_failed",
        comment,
        replace(empty, body=body),
    )

    # The declared len is one less than the plaintext, so the shortened body has the right
    # length and only the final chunk's tag can catch the cut.
    name = "chunk_tag_failed_final_chunk_shortened"
    header = dumps(hpke_header(keys, name, THREE_CHUNK_BYTES - 1))
    recipient = keys.device[KEM.X25519].public_key()
    parts = seal_issued(header, plaintext, recipient, keys.issuer[ED25519])
    comment = (
        "final chunk cut by one byte, with len one less to match (signed): its tag fails (index 2)"
    )
    yield device_vector(
        keys, name, "chunk_tag_failed", comment, replace(parts, body=parts.body[:-1])
    )

    rest = at_rest(keys, "chunk_kek", CHUNK_SIZE_BYTES + 10)
    comment = "at-rest copy with one bit flipped in chunk 0 of 2 (index 0)"
    yield kek_vector(
        keys,
        "chunk_tag_failed_kek_first_chunk_flipped",
        "chunk_tag_failed",
        comment,
        replace(rest, body=flip(rest.body, BODY_PREFIX_BYTES + 100)),
    )


def body_length_errors(keys: Keys) -> Iterator[Vector]:
    """Bodies that are not exactly as long as ``len`` requires."""
    full, _ = issued(keys, "body_full", CHUNK_SIZE_BYTES)
    two, _ = issued(keys, "body_two", CHUNK_SIZE_BYTES + 1)
    empty, _ = issued(keys, "body_empty", 0)
    small, _ = issued(keys, "body_small")
    first_chunk = full.body[BODY_PREFIX_BYTES : BODY_PREFIX_BYTES + ENCRYPTED_CHUNK_BYTES]
    for suffix, parts, comment in [
        ("empty_final_chunk_removed", replace(full, body=full.body[:-TAG_BYTES]),
         "len 16384 without its empty final chunk: the body ends at a chunk boundary"),
        ("short_final_chunk_removed", replace(two, body=two.body[: -(1 + TAG_BYTES)]),
         "len 16385 without its 1-byte final chunk: the body ends at a chunk boundary"),
        ("cut_inside_chunk", replace(two, body=two.body[:5000]),
         "the body ends inside chunk 0"),
        ("one_byte_appended", replace(small, body=small.body + b"\x00"),
         "one byte follows the final chunk"),
        ("chunk_appended", replace(full, body=full.body + first_chunk),
         "a copy of chunk 0 follows the final chunk"),
        ("no_body", replace(small, body=b""), "the file ends right after the signature"),
        ("prefix_only", replace(empty, body=empty.body[:BODY_PREFIX_BYTES]),
         "len 0 with salt and commitment but no final chunk"),
    ]:  # fmt: skip
        yield device_vector(keys, f"body_length_{suffix}", "body_length", comment, parts)

    recipient, signer = keys.device[KEM.X25519].public_key(), keys.issuer[ED25519]
    for suffix, declared, actual, comment in [
        ("len_one_more", SMALL_BYTES + 1, SMALL_BYTES, "len is one more than the body holds"),
        ("len_one_less", CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES + 1,
         "len 16384 over a body holding 16385 bytes"),
        ("len_2_52_minus_1", 2**52 - 1, SMALL_BYTES,
         "len 2^52-1 (the most a body can hold) over a 64-byte body: compare, do not allocate"),
    ]:  # fmt: skip
        name = f"body_length_{suffix}"
        header = dumps(hpke_header(keys, name, declared))
        parts = seal_issued(header, plaintext_of(actual, name), recipient, signer)
        yield device_vector(keys, name, "body_length", comment + " (signed)", parts)

    rest = at_rest(keys, "body_kek", CHUNK_SIZE_BYTES + 1)
    comment = "at-rest copy, len 16385, without its 1-byte final chunk"
    yield kek_vector(
        keys,
        "body_length_kek_final_chunk_removed",
        "body_length",
        comment,
        replace(rest, body=rest.body[: -(1 + TAG_BYTES)]),
    )


# --- Main ----------------------------------------------------------------------------------------

FAMILIES: list[Callable[[Keys], Iterator[Vector]]] = [
    valid_issued,
    valid_at_rest,
    valid_edges,
    magic_and_truncation,
    length_fields,
    header_errors,
    suite_and_alg_errors,
    signature_errors,
    claims_errors,
    recipient_errors,
    dek_errors,
    commitment_errors,
    chunk_errors,
    body_length_errors,
]


def main() -> None:
    keys = Keys.generate()
    vectors = [vector for family in FAMILIES for vector in family(keys)]
    names = [vector.name for vector in vectors]
    if len(set(names)) != len(names):
        raise SystemExit(
            f"duplicate vector names: {sorted(n for n in names if names.count(n) > 1)}"
        )
    TESTDATA.mkdir(exist_ok=True)
    for stale in TESTDATA.iterdir():
        if stale.name not in names:
            stale.unlink()
    for vector in vectors:
        (TESTDATA / vector.name).write_bytes(vector.render())
    print(f"wrote {len(vectors)} vectors to {TESTDATA}")


if __name__ == "__main__":
    main()
