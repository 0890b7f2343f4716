"""Project Wycheproof vectors through modelseal's own primitive layer.

Every vector file is run in full through the modelseal API (not through pyca directly),
and every test ends by comparing a tally of outcomes with exact counts, so a vector file
that shrinks, a vector that changes outcome, or a filter that silently drops cases makes
the test fail. The files are byte-exact copies kept in ``tests/data/wycheproof`` (see the
README there); each is checked against its pinned SHA-256 before use.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelseal.envelope.body import (
    BODY_PREFIX_BYTES,
    CHUNK_SIZE_BYTES,
    ENCRYPTED_CHUNK_BYTES,
    SALT_BYTES,
    TAG_BYTES,
    BodyCipher,
)
from modelseal.errors import (
    BadSignatureError,
    BodyLengthError,
    ChunkTagError,
    CommitmentMismatchError,
    DEKUnwrapError,
    KeyFormatError,
    ModelSealError,
    UsageError,
)
from modelseal.keys import (
    KEK,
    KEM,
    IssuerPublicKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "wycheproof"
PINNED_SHA256 = {
    "aes_gcm_test.json": "985e5ecc172e181eaf49e89508b9470dcf478002eb7e8559c707eb42dc97dfe7",
    "c2sp_chunked_encryption_aes_256_gcm_test.json": (
        "0f8e35568d59649fb55fb0e5602dc678dc8910d6822beef4945aee0b5994ef05"
    ),
    "ecdh_secp256r1_test.json": "cdb8bd5d1206fddb6618c69ffa18f303b4752caba321d348d4aacae3f20cbec4",
    "ecdsa_secp256r1_sha256_p1363_test.json": (
        "c60de693930e386c3a5472d08081623ef8504decc54b38ac01ec6b2a2575c986"
    ),
    "ed25519_test.json": "752d2ea7d7c6cf4736381b6cbacb61f8182b126ab7cd9b058f00c50084975536",
    "x25519_test.json": "35c3f5231cf25cc640b524d403461deee9e49441d5d915a3a25b2c8ff5adbe7d",
}

Vector = dict[str, Any]


@functools.cache
def _load(name: str) -> dict[str, Any]:
    raw = (DATA / name).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == PINNED_SHA256[name], f"{name} is not the pinned copy"
    document: dict[str, Any] = json.loads(raw)
    return document


def _vectors(name: str) -> Iterator[tuple[Vector, Vector]]:
    """Yield (group, test) pairs, after checking the file's own test count."""
    document = _load(name)
    pairs = [(group, test) for group in document["testGroups"] for test in group["tests"]]
    assert len(pairs) == document["numberOfTests"]
    return iter(pairs)


def _assert_raises_exactly(exc: BaseException, expected: type[ModelSealError]) -> None:
    assert type(exc) is expected, f"expected {expected.__name__}, got {exc!r}"
    assert isinstance(exc, ModelSealError)
    assert exc.code == expected.code


# --- HPKE key schedule, written from RFC 9180 for the decapsulation checks ---------------
#
# pyca's single-shot HPKE cannot take a caller-chosen ephemeral key, and Wycheproof gives
# only the peer's public key, never its private key. So the checks below run the other way
# round: the vector's public key plays HPKE's ``enc``, the vector's private key the
# recipient, and the vector's ``shared`` the DH output. From that DH output this code
# derives the AEAD key and nonce for FORMAT's suite (RFC 9180 §4.1 and §5.1, base mode),
# seals with them, and modelseal's ``hpke_open`` must open the result. It can only do so
# if its own Decap computed exactly the vector's shared secret. A mistake here makes every
# positive case fail; it cannot make one pass.

HPKE_KDF_HKDF_SHA256 = 0x0001
HPKE_AEAD_AES_256_GCM = 0x0002


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, b"HPKE-v1" + suite_id + label + ikm, hashlib.sha256).digest()


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + labeled_info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _format_suite_keys(kem_id: int, dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> bytes:
    """Seal-side AEAD key || base nonce for DHKEM(kem_id, HKDF-SHA256), HKDF-SHA256, AES-256-GCM."""
    kem_suite = b"KEM" + kem_id.to_bytes(2, "big")
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared_secret = _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_r, 32)
    suite = (
        b"HPKE"
        + kem_id.to_bytes(2, "big")
        + HPKE_KDF_HKDF_SHA256.to_bytes(2, "big")
        + HPKE_AEAD_AES_256_GCM.to_bytes(2, "big")
    )
    context = (
        b"\x00"
        + _labeled_extract(suite, b"", b"psk_id_hash", b"")
        + _labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = _labeled_extract(suite, shared_secret, b"secret", b"")
    return _labeled_expand(suite, secret, b"key", context, 32) + _labeled_expand(
        suite, secret, b"base_nonce", context, 12
    )


def _seal_for_decap_check(
    kem: KEM, dh: bytes, enc: bytes, pk_r: bytes, info: bytes, plaintext: bytes
) -> bytes:
    keys = _format_suite_keys(int(kem), dh, enc, pk_r, info)
    return AESGCM(keys[:32]).encrypt(keys[32:], plaintext, b"")


DECAP_INFO = b"modelseal wycheproof decap check"
DECAP_PLAINTEXT = b"\x5a" * 32


# --- C2SP chunked encryption (Cobblestone-256) through BodyCipher -----------------------
#
# BodyCipher works on buffers and never sees the whole body's length; the reader checks
# that against the header's ``len`` and raises BodyLengthError. The helpers below play
# the reader's part with the same rule, so length failures here come from the helpers.
# BodyCipher's own refusal of a final chunk shorter than a tag is checked on its own.

CHUNKED = "c2sp_chunked_encryption_aes_256_gcm_test.json"

# The outcome each invalid vector must have through _open_body, with the failing chunk's
# index for ChunkTagError. Pinned per tcId from the vector comments and flags.
CHUNKED_EXPECTED_ERRORS: dict[int, tuple[type[ModelSealError], int | None]] = {
    11: (ChunkTagError, 0),  # single chunk with flipped ciphertext bit
    12: (ChunkTagError, 1),  # full chunk followed by corrupted short chunk
    13: (ChunkTagError, 1),  # second of two full chunks corrupted
    14: (ChunkTagError, 1),  # empty terminating chunk with corrupted tag
    15: (ChunkTagError, 0),  # corrupted first chunk, valid short chunk
    16: (BodyLengthError, None),  # final chunk of 1 byte: tag removed
    17: (BodyLengthError, None),  # payload of 12 bytes, shorter than a tag
    18: (ChunkTagError, 1),  # 20 trailing bytes read as a final chunk
    19: (BodyLengthError, None),  # 12 trailing bytes: too short for a final chunk
    20: (BodyLengthError, None),  # header only
    21: (CommitmentMismatchError, None),
    22: (CommitmentMismatchError, None),  # WrongKey
    23: (UsageError, None),  # InvalidKeySize, 31 bytes
    24: (UsageError, None),  # InvalidKeySize, 33 bytes
    25: (CommitmentMismatchError, None),  # WrongContext
    26: (CommitmentMismatchError, None),  # corrupted salt
    27: (BodyLengthError, None),  # empty
    28: (BodyLengthError, None),  # salt only
    29: (BodyLengthError, None),  # 40 of 56 header bytes
    30: (BodyLengthError, None),  # 10 bytes
    31: (BodyLengthError, None),  # full chunk, no terminating chunk
    32: (ChunkTagError, 1),  # second chunk truncated mid-body
    33: (ChunkTagError, 0),  # chunks 0 and 1 swapped
    34: (ChunkTagError, 1),  # chunk 0 duplicated in place of chunk 1
    35: (ChunkTagError, 1),  # extra encrypted chunk after the final one
}


def _chunked_inputs(test: Vector) -> tuple[bytes, bytes, bytes]:
    """(input key, context, body); ``ct`` is hex of a zlib stream (Wycheproof doc)."""
    return (
        bytes.fromhex(test["key"]),
        bytes.fromhex(test["ctx"]),
        zlib.decompress(bytes.fromhex(test["ct"])),
    )


def _payload_layout(body: bytes) -> tuple[int, int]:
    """(full chunks, final chunk bytes) of a body, raising BodyLengthError when impossible.

    A body is the 56-byte prefix, then any number of 16400-byte chunks, then a final
    chunk of 16..16399 bytes (an encrypted plaintext shorter than 16 KiB, maybe empty).
    """
    if len(body) < BODY_PREFIX_BYTES:
        raise BodyLengthError(f"body of {len(body)} bytes has no room for salt and commitment")
    full, final = divmod(len(body) - BODY_PREFIX_BYTES, ENCRYPTED_CHUNK_BYTES)
    if final < TAG_BYTES:
        raise BodyLengthError(f"final chunk of {final} bytes is shorter than a tag")
    return full, final


def _cipher_for(key: bytes, context: bytes, body: bytes) -> BodyCipher:
    """Derive the body keys and check the commitment, as the reader does."""
    if len(body) < BODY_PREFIX_BYTES:
        raise BodyLengthError(f"body of {len(body)} bytes has no room for salt and commitment")
    cipher = BodyCipher(key, body[:SALT_BYTES], context)
    cipher.check_commitment(body[SALT_BYTES:BODY_PREFIX_BYTES])
    return cipher


def _open_body(key: bytes, context: bytes, body: bytes) -> bytes:
    """Decrypt a whole body with one decrypt_chunks call."""
    cipher = _cipher_for(key, context, body)
    full, final = _payload_layout(body)
    out = bytearray(full * CHUNK_SIZE_BYTES + final - TAG_BYTES)
    payload = memoryview(body)[BODY_PREFIX_BYTES:]
    written = cipher.decrypt_chunks(0, payload, memoryview(out), final=True)
    assert written == len(out)
    return bytes(out)


def _stream_body(key: bytes, context: bytes, body: bytes) -> tuple[bytes, ModelSealError | None]:
    """Decrypt chunk by chunk, releasing each chunk only once it verified.

    Returns the released plaintext and the error that stopped the stream (None at the
    end of a genuine body). After an error the failing step is retried once, and must
    fail the same way: a stream that failed keeps failing.
    """
    released = bytearray()
    try:
        cipher = _cipher_for(key, context, body)
        full, final = _payload_layout(body)
    except ModelSealError as exc:
        return bytes(released), exc
    payload = memoryview(body)[BODY_PREFIX_BYTES:]
    out = bytearray(CHUNK_SIZE_BYTES)
    for index in range(full + 1):
        start = index * ENCRYPTED_CHUNK_BYTES
        size = ENCRYPTED_CHUNK_BYTES if index < full else final
        chunk = payload[start : start + size]
        failure: ChunkTagError | None = None
        try:
            written = cipher.decrypt_chunks(index, chunk, memoryview(out), final=index == full)
        except ChunkTagError as exc:
            failure = exc
        if failure is not None:
            with pytest.raises(ChunkTagError) as again:
                cipher.decrypt_chunks(index, chunk, memoryview(out), final=index == full)
            assert again.value.index == failure.index
            return bytes(released), failure
        released += out[:written]
    return bytes(released), None


def _chunked_vectors() -> list[Vector]:
    document = _load(CHUNKED)
    assert document["algorithm"] == "Cobblestone-256"
    groups = document["testGroups"]
    assert [(g["aead"], g["sha"]) for g in groups] == [("AEAD_AES_256_GCM", "SHA-512")]
    return [test for _, test in _vectors(CHUNKED)]


def _sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def test_chunked_vectors_decrypt_or_fail_with_the_pinned_error() -> None:
    tally: Counter[str] = Counter()
    invalid_ids = set()
    for test in _chunked_vectors():
        key, context, body = _chunked_inputs(test)
        if test["result"] == "valid":
            plaintext = _open_body(key, context, body)
            assert len(plaintext) == test["msgLength"], test["tcId"]
            assert _sha512(plaintext) == test["msgSha512"], test["tcId"]
            tally["decrypted"] += 1
            continue
        assert test["result"] == "invalid"
        invalid_ids.add(test["tcId"])
        expected, index = CHUNKED_EXPECTED_ERRORS[test["tcId"]]
        with pytest.raises(ModelSealError) as caught:
            _open_body(key, context, body)
        _assert_raises_exactly(caught.value, expected)
        if isinstance(caught.value, ChunkTagError):
            assert caught.value.index == index, test["tcId"]
        tally[expected.__name__] += 1
    assert invalid_ids == set(CHUNKED_EXPECTED_ERRORS)
    assert tally == {
        "decrypted": 10,
        "ChunkTagError": 10,
        "BodyLengthError": 9,
        "CommitmentMismatchError": 4,
        "UsageError": 2,
    }


def test_chunked_flags_that_name_a_header_check_get_that_check() -> None:
    tally: Counter[str] = Counter()
    for test in _chunked_vectors():
        key, context, body = _chunked_inputs(test)
        flags = set(test["flags"])
        if flags & {"WrongKey", "WrongContext"}:
            cipher = BodyCipher(key, body[:SALT_BYTES], context)
            with pytest.raises(CommitmentMismatchError) as caught:
                cipher.check_commitment(body[SALT_BYTES:BODY_PREFIX_BYTES])
            assert caught.value.code == "commitment_mismatch"
            tally["commitment refused"] += 1
        if "InvalidKeySize" in flags:
            with pytest.raises(UsageError) as usage:
                BodyCipher(key, body[:SALT_BYTES], context)
            assert usage.value.code == "usage_error"
            tally["key size refused at construction"] += 1
        if "HeaderFailure" in flags:
            # Rejected before any chunk is decrypted: nothing may be released.
            released, error = _stream_body(key, context, body)
            assert released == b""
            assert type(error) in (BodyLengthError, CommitmentMismatchError, UsageError)
            tally["header failure"] += 1
    assert tally == {
        "commitment refused": 2,
        "key size refused at construction": 2,
        "header failure": 10,
    }


def test_chunked_streaming_releases_no_more_than_the_valid_prefix() -> None:
    tally: Counter[str] = Counter()
    for test in _chunked_vectors():
        key, context, body = _chunked_inputs(test)
        released, error = _stream_body(key, context, body)
        if test["result"] == "valid":
            assert error is None
            assert len(released) == test["msgLength"]
            assert _sha512(released) == test["msgSha512"]
            tally["whole message"] += 1
            continue
        assert error is not None, test["tcId"]
        if "PartialPlaintext" in test["flags"] and isinstance(error, ChunkTagError):
            # Exactly the verified chunks before the failing one, and nothing after.
            assert len(released) == test["msgLength"] == error.index * CHUNK_SIZE_BYTES
            assert _sha512(released) == test["msgSha512"]
            tally["valid prefix, then error"] += 1
        else:
            # Length and header failures are caught before any chunk is decrypted.
            assert released == b"", test["tcId"]
            tally["nothing, then error"] += 1
    assert tally == {
        "whole message": 10,
        "valid prefix, then error": 7,
        "nothing, then error": 18,
    }


def _one_shot_partial(test: Vector) -> tuple[bytearray, int] | None:
    """Decrypt a PartialPlaintext vector in one call: (output buffer, verified prefix bytes).

    None when the body's length is refused before any chunk is decrypted.
    """
    key, context, body = _chunked_inputs(test)
    try:
        full, final = _payload_layout(body)
    except BodyLengthError:
        return None
    cipher = _cipher_for(key, context, body)
    out = bytearray(full * CHUNK_SIZE_BYTES + final - TAG_BYTES)
    with pytest.raises(ChunkTagError) as caught:
        cipher.decrypt_chunks(0, memoryview(body)[BODY_PREFIX_BYTES:], memoryview(out), final=True)
    return out, caught.value.index * CHUNK_SIZE_BYTES


def _partial_plaintext_vectors() -> list[Vector]:
    return [test for test in _chunked_vectors() if "PartialPlaintext" in test["flags"]]


def test_chunked_one_shot_decryption_keeps_the_verified_prefix() -> None:
    tally: Counter[str] = Counter()
    for test in _partial_plaintext_vectors():
        result = _one_shot_partial(test)
        if result is None:
            tally["length refused"] += 1
            continue
        out, prefix = result
        assert prefix == test["msgLength"]
        assert _sha512(bytes(out[:prefix])) == test["msgSha512"]
        tally["verified prefix"] += 1
    assert tally == {"verified prefix": 7, "length refused": 2}


def test_chunked_one_shot_decryption_leaves_no_unverified_plaintext_in_the_buffer() -> None:
    tally: Counter[str] = Counter()
    for test in _partial_plaintext_vectors():
        result = _one_shot_partial(test)
        if result is None:
            continue
        out, prefix = result
        # The buffer started zeroed; the failing chunk's bytes must not have reached it.
        assert not any(out[prefix:]), f"tcId {test['tcId']}: unverified plaintext in dst"
        tally["clean"] += 1
    assert tally == {"clean": 7}


def test_chunked_final_chunk_authenticates_only_for_valid_and_valid_final_chunk_vectors() -> None:
    tally: Counter[str] = Counter()
    for test in _chunked_vectors():
        key, context, body = _chunked_inputs(test)
        try:
            cipher = _cipher_for(key, context, body)
            full, final = _payload_layout(body)
        except ModelSealError:
            continue
        start = BODY_PREFIX_BYTES + full * ENCRYPTED_CHUNK_BYTES
        last = memoryview(body)[start : start + final]
        out = bytearray(CHUNK_SIZE_BYTES)
        if test["result"] == "valid" or "ValidFinalChunk" in test["flags"]:
            written = cipher.decrypt_chunks(full, last, memoryview(out), final=True)
            assert written == final - TAG_BYTES
            tally["final chunk authentic"] += 1
        else:
            with pytest.raises(ChunkTagError) as caught:
                cipher.decrypt_chunks(full, last, memoryview(out), final=True)
            assert caught.value.index == full
            assert caught.value.code == "chunk_tag_failed"
            tally["final chunk refused"] += 1
    assert tally == {"final chunk authentic": 14, "final chunk refused": 6}


def test_chunked_final_chunk_shorter_than_a_tag_is_refused_by_the_body_cipher() -> None:
    tally: Counter[str] = Counter()
    for test in _chunked_vectors():
        key, context, body = _chunked_inputs(test)
        if len(body) < BODY_PREFIX_BYTES or len(key) != 32:
            continue
        full, final = divmod(len(body) - BODY_PREFIX_BYTES, ENCRYPTED_CHUNK_BYTES)
        if final >= TAG_BYTES:
            continue
        cipher = BodyCipher(key, body[:SALT_BYTES], context)
        out = bytearray(full * CHUNK_SIZE_BYTES)
        with pytest.raises(UsageError) as caught:
            cipher.decrypt_chunks(
                0, memoryview(body)[BODY_PREFIX_BYTES:], memoryview(out), final=True
            )
        assert caught.value.code == "usage_error"
        assert not any(out), "plaintext was released before the length was checked"
        tally["refused"] += 1
    assert tally == {"refused": 5}


@pytest.mark.parametrize("segment_chunks", [None, 3])
def test_chunked_encryption_with_the_vector_salt_reproduces_the_ciphertext(
    segment_chunks: int | None,
) -> None:
    """The Wycheproof doc's "inject the salt" method: re-encrypt every valid message.

    ``segment_chunks`` None encrypts in one call; 3 encrypts three chunks per call, so the
    chunk index carries across calls and through the counter rollover past 0xFF.
    """
    tally: Counter[str] = Counter()
    for test in _chunked_vectors():
        if test["result"] != "valid":
            continue
        key, context, body = _chunked_inputs(test)
        plaintext = _open_body(key, context, body)
        cipher = BodyCipher(key, body[:SALT_BYTES], context)
        assert cipher.prefix() == body[:BODY_PREFIX_BYTES]
        out = bytearray(len(body) - BODY_PREFIX_BYTES)
        src, dst = memoryview(plaintext), memoryview(out)
        if segment_chunks is None:
            written = cipher.encrypt_chunks(0, src, dst, final=True)
        else:
            written = index = 0
            full = len(plaintext) // CHUNK_SIZE_BYTES
            while index + segment_chunks <= full:
                segment = src[
                    index * CHUNK_SIZE_BYTES : (index + segment_chunks) * CHUNK_SIZE_BYTES
                ]
                written += cipher.encrypt_chunks(index, segment, dst[written:], final=False)
                index += segment_chunks
            written += cipher.encrypt_chunks(
                index, src[index * CHUNK_SIZE_BYTES :], dst[written:], final=True
            )
        assert written == len(out)
        assert bytes(out) == body[BODY_PREFIX_BYTES:], test["tcId"]
        tally["byte-exact"] += 1
    assert tally == {"byte-exact": 10}


# --- AES-256-GCM through the KEK ------------------------------------------------------


def test_aes_256_gcm_vectors_through_kek_unwrap() -> None:
    tally: Counter[str] = Counter()
    for group, test in _vectors("aes_gcm_test.json"):
        if (group["keySize"], group["ivSize"], group["tagSize"]) != (256, 96, 128):
            continue
        kek = KEK("wycheproof", bytes.fromhex(test["key"]))
        nonce, aad = bytes.fromhex(test["iv"]), bytes.fromhex(test["aad"])
        wrapped = bytes.fromhex(test["ct"] + test["tag"])
        if test["result"] == "valid":
            assert kek.unwrap(nonce, wrapped, aad) == bytes.fromhex(test["msg"]), test["tcId"]
            tally["valid opened"] += 1
        else:
            assert test["result"] == "invalid"
            with pytest.raises(DEKUnwrapError) as caught:
                kek.unwrap(nonce, wrapped, aad)
            assert caught.value.code == "dek_unwrap_failed"
            tally["invalid refused"] += 1
    assert tally == {"valid opened": 39, "invalid refused": 27}


# --- X25519 -------------------------------------------------------------------------


def test_x25519_public_keys_seal_unless_they_are_low_order() -> None:
    """Valid and acceptable keys seal; the low-order ones (zero shared secret) are refused.

    Refusing them is modelseal's pinned choice for Wycheproof's "acceptable" class.
    """
    tally: Counter[str] = Counter()
    for _, test in _vectors("x25519_test.json"):
        public = RecipientPublicKey(KEM.X25519, bytes.fromhex(test["public"]))
        low_order = "ZeroSharedSecret" in test["flags"]
        if low_order:
            assert test["result"] == "acceptable"
            with pytest.raises(KeyFormatError) as caught:
                public.hpke_seal(DECAP_PLAINTEXT, DECAP_INFO)
            assert caught.value.code == "key_invalid"
            tally["acceptable, low order, refused"] += 1
        else:
            enc, ciphertext = public.hpke_seal(DECAP_PLAINTEXT, DECAP_INFO)
            assert len(enc) == KEM.X25519.enc_length == 32
            assert len(ciphertext) == len(DECAP_PLAINTEXT) + 16
            tally[f"{test['result']}, sealed"] += 1
    assert tally == {
        "valid, sealed": 264,
        "acceptable, sealed": 223,
        "acceptable, low order, refused": 31,
    }


def test_x25519_private_keys_derive_the_same_public_key_as_pyca() -> None:
    tally: Counter[str] = Counter()
    for _, test in _vectors("x25519_test.json"):
        secret = bytes.fromhex(test["private"])
        key = RecipientPrivateKey(KEM.X25519, secret)
        expected = x25519.X25519PrivateKey.from_private_bytes(secret).public_key()
        assert key.public_key().raw == expected.public_bytes_raw()
        tally["matches"] += 1
    assert tally == {"matches": 518}


def test_x25519_decapsulation_computes_the_vector_shared_secret() -> None:
    tally: Counter[str] = Counter()
    for _, test in _vectors("x25519_test.json"):
        key = RecipientPrivateKey(KEM.X25519, bytes.fromhex(test["private"]))
        enc, dh = bytes.fromhex(test["public"]), bytes.fromhex(test["shared"])
        ciphertext = _seal_for_decap_check(
            KEM.X25519, dh, enc, key.public_key().raw, DECAP_INFO, DECAP_PLAINTEXT
        )
        if "ZeroSharedSecret" in test["flags"]:
            with pytest.raises(DEKUnwrapError) as caught:
                key.hpke_open(enc, ciphertext, DECAP_INFO)
            assert caught.value.code == "dek_unwrap_failed"
            tally["zero shared secret refused"] += 1
        else:
            assert key.hpke_open(enc, ciphertext, DECAP_INFO) == DECAP_PLAINTEXT, test["tcId"]
            tally[f"{test['result']}, opened"] += 1
    assert tally == {
        "valid, opened": 264,
        "acceptable, opened": 223,
        "zero shared secret refused": 31,
    }


# --- ECDH P-256 -----------------------------------------------------------------------

P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Wycheproof calls these invalid because their SubjectPublicKeyInfo spells out altered
# domain parameters (order, cofactor, prime). The point itself is a genuine P-256 point,
# and ECDH with it on P-256 gives the vector's ``shared``. FORMAT's raw SEC1 encoding
# carries no parameters, so accepting the point is right.
P256_INVALID_ONLY_BY_PARAMETERS = {352, 353, 358, 359, 361, 363}


def _der_element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, contents, end) of the DER element at ``offset``; IndexError when cut short."""
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        size = length & 0x7F
        if offset + size > len(data):
            raise IndexError
        length = int.from_bytes(data[offset : offset + size], "big")
        offset += size
    if offset + length > len(data):
        raise IndexError
    return tag, data[offset : offset + length], offset + length


def _spki_point(der: bytes) -> bytes | None:
    """The subjectPublicKey bytes of an SPKI, or None if it is not SPKI-shaped."""
    try:
        tag, spki, end = _der_element(der, 0)
        if tag != 0x30 or end != len(der):
            return None
        algorithm_tag, _, split = _der_element(spki, 0)
        bits_tag, bits, end = _der_element(spki, split)
    except IndexError:
        return None
    if algorithm_tag != 0x30 or bits_tag != 0x03 or end != len(spki) or bits[:1] != b"\x00":
        return None
    return bits[1:]


def _is_p256_point(encoded: bytes) -> bool:
    """Uncompressed SEC1 point on P-256, checked from the curve equation."""
    if len(encoded) != 65 or encoded[0] != 0x04:
        return False
    x, y = int.from_bytes(encoded[1:33], "big"), int.from_bytes(encoded[33:], "big")
    return x < P256_P and y < P256_P and (y * y - (x**3 - 3 * x + P256_B)) % P256_P == 0


def _p256_secret(hex_scalar: str) -> bytes:
    # Wycheproof writes scalars as minimal signed big-endian integers (1 to 33 bytes).
    scalar = int(hex_scalar, 16)
    assert 0 < scalar < P256_N
    return scalar.to_bytes(32, "big")


def _pyca_spki(der: bytes) -> PublicKeyTypes | None:
    """pyca's reading of an SPKI, or None where pyca refuses it."""
    try:
        return serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        return None


def test_p256_points_that_pyca_loads_are_accepted_exactly_on_p256() -> None:
    tally: Counter[str] = Counter()
    valid_loaded = 0
    for _, test in _vectors("ecdh_secp256r1_test.json"):
        loaded = _pyca_spki(bytes.fromhex(test["public"]))
        if loaded is None:
            assert test["result"] != "valid", test["tcId"]
            continue
        assert isinstance(loaded, ec.EllipticCurvePublicKey), test["tcId"]
        raw = loaded.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        if isinstance(loaded.curve, ec.SECP256R1):
            assert RecipientPublicKey(KEM.P256, raw).raw == raw
            valid_loaded += test["result"] == "valid"
            tally[f"{test['result']}, P-256, accepted"] += 1
        else:
            assert test["result"] == "invalid"
            with pytest.raises(KeyFormatError) as caught:
                RecipientPublicKey(KEM.P256, raw)
            assert caught.value.code == "key_invalid"
            tally[f"invalid, {loaded.curve.name}, refused"] += 1
    assert valid_loaded == 330
    assert tally == {
        "valid, P-256, accepted": 330,
        "acceptable, P-256, accepted": 1,  # tcId 2, a compressed point, re-encoded
        "invalid, brainpoolP256r1, refused": 1,
        "invalid, brainpoolP384r1, refused": 1,
        "invalid, brainpoolP512r1, refused": 1,
        "invalid, secp224r1, refused": 2,
        "invalid, secp256k1, refused": 2,
        "invalid, secp384r1, refused": 1,
        "invalid, secp521r1, refused": 1,
    }


def test_p256_raw_points_are_accepted_if_and_only_if_they_are_on_the_curve() -> None:
    tally: Counter[str] = Counter()
    on_curve_but_invalid = set()
    for _, test in _vectors("ecdh_secp256r1_test.json"):
        point = _spki_point(bytes.fromhex(test["public"]))
        if point is None:
            assert test["result"] != "valid"
            tally["not SPKI-shaped"] += 1
            continue
        if _is_p256_point(point):
            assert RecipientPublicKey(KEM.P256, point).raw == point
            if test["result"] == "invalid":
                on_curve_but_invalid.add(test["tcId"])
            tally[f"{test['result']}, accepted"] += 1
        else:
            assert test["result"] != "valid"
            with pytest.raises(KeyFormatError) as caught:
                RecipientPublicKey(KEM.P256, point)
            assert caught.value.code == "key_invalid"
            tally[f"{test['result']}, refused"] += 1
    assert on_curve_but_invalid == P256_INVALID_ONLY_BY_PARAMETERS
    assert tally == {
        "valid, accepted": 330,
        "acceptable, accepted": 120,
        "invalid, accepted": 6,
        # Compressed and hybrid encodings, other curves' points, off-curve points.
        "acceptable, refused": 7,
        "invalid, refused": 46,
        "not SPKI-shaped": 103,
    }


def test_p256_decapsulation_computes_the_vector_shared_secret() -> None:
    tally: Counter[str] = Counter()
    for _, test in _vectors("ecdh_secp256r1_test.json"):
        point = _spki_point(bytes.fromhex(test["public"]))
        if point is None or not _is_p256_point(point):
            continue
        key = RecipientPrivateKey(KEM.P256, _p256_secret(test["private"]))
        expected_public = ec.derive_private_key(int(test["private"], 16), ec.SECP256R1())
        assert key.public_key().raw == expected_public.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        ciphertext = _seal_for_decap_check(
            KEM.P256,
            bytes.fromhex(test["shared"]),
            point,
            key.public_key().raw,
            DECAP_INFO,
            DECAP_PLAINTEXT,
        )
        assert key.hpke_open(point, ciphertext, DECAP_INFO) == DECAP_PLAINTEXT, test["tcId"]
        tally[f"{test['result']}, opened"] += 1
    assert tally == {"valid, opened": 330, "acceptable, opened": 120, "invalid, opened": 6}


# --- Signatures ------------------------------------------------------------------------


def _check_signatures(
    name: str, alg: SignatureAlgorithm, public_of: str, tally: Counter[str]
) -> None:
    for group, test in _vectors(name):
        key = IssuerPublicKey(alg, bytes.fromhex(group["publicKey"][public_of]))
        message, signature = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        if test["result"] == "valid":
            key.verify(message, signature)
            tally["valid, verified"] += 1
            continue
        assert test["result"] == "invalid"
        with pytest.raises(BadSignatureError) as caught:
            key.verify(message, signature)
        assert caught.value.code == "bad_signature"
        size = "64 bytes" if len(signature) == 64 else "other length"
        tally[f"invalid, {size}, refused"] += 1


def test_ed25519_vectors_through_issuer_public_key() -> None:
    tally: Counter[str] = Counter()
    _check_signatures("ed25519_test.json", SignatureAlgorithm.ED25519, "pk", tally)
    assert tally == {
        "valid, verified": 88,
        "invalid, 64 bytes, refused": 51,
        "invalid, other length, refused": 12,
    }


def test_es256_p1363_vectors_through_issuer_public_key() -> None:
    document = _load("ecdsa_secp256r1_sha256_p1363_test.json")
    assert {g["sha"] for g in document["testGroups"]} == {"SHA-256"}
    assert {g["publicKey"]["curve"] for g in document["testGroups"]} == {"secp256r1"}
    tally: Counter[str] = Counter()
    _check_signatures(
        "ecdsa_secp256r1_sha256_p1363_test.json", SignatureAlgorithm.ES256, "uncompressed", tally
    )
    assert tally == {
        "valid, verified": 173,
        "invalid, 64 bytes, refused": 68,
        "invalid, other length, refused": 21,
    }
