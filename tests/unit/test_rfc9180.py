"""HPKE (RFC 9180) and X-Wing (draft-ietf-hpke-pq) vectors through modelseal's recipient keys.

FORMAT v1 wraps the DEK with single-shot HPKE base mode, HKDF-SHA256 and AES-256-GCM, with
an empty AAD. The official vectors use AAD ``Count-<n>``, which the single-shot API cannot
take, so the checks follow the "re-sealed first ciphertext" method of the shared vectors
README: seal the vector's first plaintext with the vector's ``key`` and ``base_nonce`` and
an empty AAD, then modelseal must open it from the vector's ``enc``, ``skRm`` and ``info``.
That holds only if modelseal's Decap and key schedule reproduce the vector's ``key`` and
``base_nonce`` exactly. pyhpke, an independent HPKE implementation, is the oracle for the
encryption direction.

Data (``tests/data/hpke``, see the README there): a filtered subset of the RFC 9180 file
(the two entries of FORMAT's suites) and the draft-ietf-hpke-pq file in full.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair, OpenError

from modelseal.errors import DEKUnwrapError
from modelseal.keys import KEM, RecipientPrivateKey, RecipientPublicKey

DATA = Path(__file__).resolve().parents[1] / "data" / "hpke"
RFC9180 = "rfc9180-base-sha256-aes256gcm.json"
HPKE_PQ = "hpke-pq-test-vectors.json"
PINNED_SHA256 = {
    RFC9180: "03f2f5c91fa43e3ca3ed1ea54cbec810485454ec1ba98ffa94cd66b5c1517d7e",
    HPKE_PQ: "ba1f90672903e0df25610a1eef84b5f157e44d34849c0a72a2f9b164f3213888",
}

KDF_HKDF_SHA256 = 0x0001
KDF_SHAKE128 = 0x0010
KDF_SHAKE256 = 0x0011
KDF_TURBOSHAKE128 = 0x0012
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003

Entry = dict[str, Any]


@functools.cache
def _load(name: str) -> list[Entry]:
    raw = (DATA / name).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == PINNED_SHA256[name], f"{name} is not the pinned copy"
    entries: list[Entry] = json.loads(raw)
    return entries


def _rfc9180_entry(kem: KEM) -> Entry:
    matches = [e for e in _load(RFC9180) if e["kem_id"] == kem]
    assert len(matches) == 1
    return matches[0]


def _hx(entry: Entry, member: str) -> bytes:
    return bytes.fromhex(entry[member])


def _first(entry: Entry, member: str) -> bytes:
    return bytes.fromhex(entry["encryptions"][0][member])


# --- The key schedule of RFC 9180 §5.1 (base mode, HKDF-SHA256), for re-deriving keys ----


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


def _key_schedule(
    kem_id: int, aead_id: int, shared_secret: bytes, info: bytes
) -> tuple[bytes, bytes]:
    """(key, base_nonce) for base mode with HKDF-SHA256 and a 32-byte-key AEAD."""
    suite = b"HPKE" + b"".join(n.to_bytes(2, "big") for n in (kem_id, KDF_HKDF_SHA256, aead_id))
    context = (
        b"\x00"
        + _labeled_extract(suite, b"", b"psk_id_hash", b"")
        + _labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = _labeled_extract(suite, shared_secret, b"secret", b"")
    return (
        _labeled_expand(suite, secret, b"key", context, 32),
        _labeled_expand(suite, secret, b"base_nonce", context, 12),
    )


def _dhkem_shared_secret(kem_id: int, dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    """ExtractAndExpand of RFC 9180 §4.1 for DHKEM(·, HKDF-SHA256)."""
    suite = b"KEM" + kem_id.to_bytes(2, "big")
    eae_prk = _labeled_extract(suite, b"", b"eae_prk", dh)
    return _labeled_expand(suite, eae_prk, b"shared_secret", enc + pk_r, 32)


def _dh(kem: KEM, sk_r: bytes, enc: bytes) -> bytes:
    if kem is KEM.X25519:
        xk = x25519.X25519PrivateKey.from_private_bytes(sk_r)
        return xk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    ek = ec.derive_private_key(int.from_bytes(sk_r, "big"), ec.SECP256R1())
    return ek.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc))


# --- RFC 9180, FORMAT's two DH suites --------------------------------------------------

DH_KEMS = [KEM.X25519, KEM.P256]


def test_the_rfc9180_subset_holds_exactly_the_two_format_suites() -> None:
    entries = _load(RFC9180)
    suites = sorted((e["mode"], e["kem_id"], e["kdf_id"], e["aead_id"]) for e in entries)
    assert suites == [(0, 0x10, 1, 2), (0, 0x20, 1, 2)]
    assert all(len(e["encryptions"]) == 1 for e in entries)


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_rfc9180_private_key_derives_the_vector_public_key(kem: KEM) -> None:
    entry = _rfc9180_entry(kem)
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    assert key.public_key().raw == _hx(entry, "pkRm")
    assert RecipientPublicKey(kem, _hx(entry, "pkRm")) == key.public_key()
    assert len(_hx(entry, "enc")) == kem.enc_length


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_rfc9180_resealed_first_ciphertext_opens_with_the_vector_key(kem: KEM) -> None:
    entry = _rfc9180_entry(kem)
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    plaintext = _first(entry, "pt")
    resealed = AESGCM(_hx(entry, "key")).encrypt(_hx(entry, "base_nonce"), plaintext, b"")
    assert key.hpke_open(_hx(entry, "enc"), resealed, _hx(entry, "info")) == plaintext


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_rfc9180_resealed_ciphertext_is_refused_under_another_info(kem: KEM) -> None:
    entry = _rfc9180_entry(kem)
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    resealed = AESGCM(_hx(entry, "key")).encrypt(_hx(entry, "base_nonce"), _first(entry, "pt"), b"")
    with pytest.raises(DEKUnwrapError) as caught:
        key.hpke_open(_hx(entry, "enc"), resealed, _hx(entry, "info") + b"!")
    assert caught.value.code == "dek_unwrap_failed"


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_rfc9180_key_schedule_helper_reproduces_the_vector(kem: KEM) -> None:
    """Validates the helper the X-Wing checks below rely on, against RFC 9180 itself."""
    entry = _rfc9180_entry(kem)
    enc, sk_r, pk_r = _hx(entry, "enc"), _hx(entry, "skRm"), _hx(entry, "pkRm")
    shared = _dhkem_shared_secret(kem, _dh(kem, sk_r, enc), enc, pk_r)
    assert shared == _hx(entry, "shared_secret")
    key, base_nonce = _key_schedule(kem, AEAD_AES_256_GCM, shared, _hx(entry, "info"))
    assert (key, base_nonce) == (_hx(entry, "key"), _hx(entry, "base_nonce"))
    # The vector's own first ciphertext, with its own AAD, confirms the reading of key/nonce.
    official = AESGCM(key).decrypt(base_nonce, _first(entry, "ct"), _first(entry, "aad"))
    assert official == _first(entry, "pt")


# --- pyhpke as an independent oracle -----------------------------------------------------

_PYHPKE_KEMS = {KEM.X25519: KEMId.DHKEM_X25519_HKDF_SHA256, KEM.P256: KEMId.DHKEM_P256_HKDF_SHA256}


def _pyhpke_suite(kem: KEM) -> CipherSuite:
    return CipherSuite.new(_PYHPKE_KEMS[kem], KDFId.HKDF_SHA256, AEADId.AES256_GCM)


def _pyhpke_private(kem: KEM, secret: bytes) -> Any:
    if kem is KEM.X25519:
        return KEMKey.from_pyca_cryptography_key(x25519.X25519PrivateKey.from_private_bytes(secret))
    scalar = int.from_bytes(secret, "big")
    return KEMKey.from_pyca_cryptography_key(ec.derive_private_key(scalar, ec.SECP256R1()))


def _pyhpke_public(kem: KEM, raw: bytes) -> Any:
    if kem is KEM.X25519:
        return KEMKey.from_pyca_cryptography_key(x25519.X25519PublicKey.from_public_bytes(raw))
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    return KEMKey.from_pyca_cryptography_key(point)


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_pyhpke_oracle_reproduces_the_official_first_ciphertext(kem: KEM) -> None:
    """pyhpke can inject the vector's ephemeral key, so it matches the vector byte for byte."""
    entry = _rfc9180_entry(kem)
    ephemeral = KEMKeyPair(
        _pyhpke_private(kem, _hx(entry, "skEm")), _pyhpke_public(kem, _hx(entry, "pkEm"))
    )
    enc, sender = _pyhpke_suite(kem).create_sender_context(
        _pyhpke_public(kem, _hx(entry, "pkRm")), _hx(entry, "info"), eks=ephemeral
    )
    assert enc == _hx(entry, "enc")
    assert sender.seal(_first(entry, "pt"), _first(entry, "aad")) == _first(entry, "ct")


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_modelseal_seal_opens_with_pyhpke(kem: KEM) -> None:
    entry = _rfc9180_entry(kem)
    info, plaintext = _hx(entry, "info"), b"a 32-byte DEK for the pyhpke test"[:32]
    enc, ciphertext = RecipientPublicKey(kem, _hx(entry, "pkRm")).hpke_seal(plaintext, info)
    assert len(enc) == kem.enc_length
    recipient = _pyhpke_suite(kem).create_recipient_context(
        enc, _pyhpke_private(kem, _hx(entry, "skRm")), info
    )
    assert recipient.open(ciphertext, b"") == plaintext
    wrong_info = _pyhpke_suite(kem).create_recipient_context(
        enc, _pyhpke_private(kem, _hx(entry, "skRm")), info + b"!"
    )
    with pytest.raises(OpenError):
        wrong_info.open(ciphertext, b"")


@pytest.mark.parametrize("kem", DH_KEMS, ids=lambda k: k.label)
def test_pyhpke_seal_opens_with_modelseal(kem: KEM) -> None:
    entry = _rfc9180_entry(kem)
    info, plaintext = _hx(entry, "info"), bytes(range(32))
    enc, sender = _pyhpke_suite(kem).create_sender_context(
        _pyhpke_public(kem, _hx(entry, "pkRm")), info
    )
    ciphertext = sender.seal(plaintext, b"")
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    assert key.hpke_open(enc, ciphertext, info) == plaintext
    with pytest.raises(DEKUnwrapError) as caught:
        key.hpke_open(enc, ciphertext, info + b"!")
    assert caught.value.code == "dek_unwrap_failed"


# --- draft-ietf-hpke-pq: X-Wing, and the DH KEMs under other KDFs --------------------------
#
# The draft file has no X-Wing entry with AES-256-GCM: its two X-Wing entries use
# ChaCha20-Poly1305 (with HKDF-SHA256 and with SHAKE256). A KEM's shared secret does not
# depend on the HPKE KDF or AEAD, though (X-Wing's combiner is its own, and DHKEM always
# uses HKDF-SHA256 inside), so the vector's ``shared_secret`` can be carried into FORMAT's
# suite: derive key and nonce for (KEM, HKDF-SHA256, AES-256-GCM) with the helper above,
# seal, and modelseal must open it from the vector's ``enc`` and ``skRm``. That proves
# modelseal's Decap reproduces the draft's shared secret byte for byte.

PQ_ENTRIES_FOR_FORMAT_KEMS = {
    (KEM.XWING, KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305),
    (KEM.XWING, KDF_SHAKE256, AEAD_CHACHA20_POLY1305),
    (KEM.P256, KDF_SHAKE128, 0x0001),
    (KEM.X25519, KDF_TURBOSHAKE128, AEAD_CHACHA20_POLY1305),
}


def _pq_entries() -> list[Entry]:
    return [e for e in _load(HPKE_PQ) if e["kem_id"] in (KEM.XWING, KEM.P256, KEM.X25519)]


def _pq_id(entry: Entry) -> str:
    return f"{KEM(entry['kem_id']).label}-kdf{entry['kdf_id']:#06x}-aead{entry['aead_id']:#06x}"


def test_the_hpke_pq_file_holds_the_expected_entries_for_format_kems() -> None:
    assert len(_load(HPKE_PQ)) == 13
    assert all(e["mode"] == 0 for e in _load(HPKE_PQ))
    found = {(KEM(e["kem_id"]), e["kdf_id"], e["aead_id"]) for e in _pq_entries()}
    assert found == PQ_ENTRIES_FOR_FORMAT_KEMS
    # If the draft ever adds X-Wing with FORMAT's exact suite, test it directly instead.
    assert (KEM.XWING, KDF_HKDF_SHA256, AEAD_AES_256_GCM) not in found


@pytest.mark.parametrize("entry", _pq_entries(), ids=_pq_id)
def test_hpke_pq_private_key_derives_the_vector_public_key(entry: Entry) -> None:
    kem = KEM(entry["kem_id"])
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    assert key.public_key().raw == _hx(entry, "pkRm")
    assert len(_hx(entry, "enc")) == kem.enc_length


@pytest.mark.parametrize("entry", _pq_entries(), ids=_pq_id)
def test_hpke_pq_decapsulation_reproduces_the_vector_shared_secret(entry: Entry) -> None:
    kem = KEM(entry["kem_id"])
    key = RecipientPrivateKey(kem, _hx(entry, "skRm"))
    enc, info, plaintext = _hx(entry, "enc"), _hx(entry, "info"), _first(entry, "pt")
    aead_key, nonce = _key_schedule(kem, AEAD_AES_256_GCM, _hx(entry, "shared_secret"), info)
    resealed = AESGCM(aead_key).encrypt(nonce, plaintext, b"")
    assert key.hpke_open(enc, resealed, info) == plaintext
    with pytest.raises(DEKUnwrapError) as caught:
        key.hpke_open(enc, resealed, info + b"!")
    assert caught.value.code == "dek_unwrap_failed"


def test_xwing_key_schedule_helper_reproduces_the_hkdf_vector() -> None:
    """The one X-Wing entry with HKDF-SHA256: the helper derives the vector's key and nonce."""
    (entry,) = [
        e for e in _pq_entries() if e["kem_id"] == KEM.XWING and e["kdf_id"] == KDF_HKDF_SHA256
    ]
    key, base_nonce = _key_schedule(
        KEM.XWING, AEAD_CHACHA20_POLY1305, _hx(entry, "shared_secret"), _hx(entry, "info")
    )
    assert (key, base_nonce) == (_hx(entry, "key"), _hx(entry, "base_nonce"))
    official = ChaCha20Poly1305(key).decrypt(base_nonce, _first(entry, "ct"), _first(entry, "aad"))
    assert official == _first(entry, "pt")


def test_xwing_decapsulation_with_a_changed_ciphertext_is_refused() -> None:
    """ML-KEM rejects implicitly: a changed ``enc`` yields another secret, so opening fails."""
    (entry,) = [
        e for e in _pq_entries() if e["kem_id"] == KEM.XWING and e["kdf_id"] == KDF_HKDF_SHA256
    ]
    key = RecipientPrivateKey(KEM.XWING, _hx(entry, "skRm"))
    info, plaintext = _hx(entry, "info"), _first(entry, "pt")
    aead_key, nonce = _key_schedule(KEM.XWING, AEAD_AES_256_GCM, _hx(entry, "shared_secret"), info)
    resealed = AESGCM(aead_key).encrypt(nonce, plaintext, b"")
    enc = bytearray(_hx(entry, "enc"))
    for position in (0, 1087, len(enc) - 1):  # ML-KEM part, its last byte, X25519 part
        changed = bytearray(enc)
        changed[position] ^= 0x01
        with pytest.raises(DEKUnwrapError) as caught:
            key.hpke_open(bytes(changed), resealed, info)
        assert caught.value.code == "dek_unwrap_failed"


def test_xwing_seal_to_the_vector_public_key_opens_with_its_seed() -> None:
    checked = 0
    for entry in _pq_entries():
        if entry["kem_id"] != KEM.XWING:
            continue
        checked += 1
        public = RecipientPublicKey(KEM.XWING, _hx(entry, "pkRm"))
        assert len(public.raw) == KEM.XWING.public_key_length == 1216
        enc, ciphertext = public.hpke_seal(b"k" * 32, b"info")
        assert len(enc) == KEM.XWING.enc_length == 1120
        opened = RecipientPrivateKey(KEM.XWING, _hx(entry, "skRm")).hpke_open(
            enc, ciphertext, b"info"
        )
        assert opened == b"k" * 32
    assert checked == 2
