"""PKCS#11 keys on a real SoftHSM2 token, and the DHKEM(P-256) receiver composed around them.

The HPKE receiver (:mod:`modelseal.keys.hpke_p256`) is checked byte for byte against the
RFC 9180 P-256 base-mode vector twice: once with the Diffie-Hellman computed in software,
once with the vector's private key imported into the token so that the ECDH runs there.
Everything else uses keys generated on the token.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, ObjectClass

from modelseal.envelope import AtRest, Claims, IssueTo, OpenPolicy, open_bytes, seal_bytes
from modelseal.envelope.container import build_keyblock, read_framing, sign_package
from modelseal.errors import (
    BadSignatureError,
    DEKUnwrapError,
    KeyFormatError,
    RecipientMismatchError,
)
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
    hpke_p256,
    key_id,
)
from modelseal.keys.pkcs11 import (
    P256_EC_PARAMS,
    PKCS11KEK,
    PKCS11RecipientKey,
    PKCS11Signer,
    Token,
    TokenError,
    TokenKeyExistsError,
    TokenKeyNotFoundError,
    TokenLoginError,
)
from tests.softhsm import SoftHSM
from tests.unit.conftest import MAIN_TOKEN, SPARE_TOKEN

RFC9180 = (
    Path(__file__).resolve().parents[1] / "data" / "hpke" / "rfc9180-base-sha256-aes256gcm.json"
)
RFC9180_SHA256 = "03f2f5c91fa43e3ca3ed1ea54cbec810485454ec1ba98ffa94cd66b5c1517d7e"
NOW = 1_800_000_000
INFO = b"modelseal/1 dek" + bytes(32)
CLAIMS = Claims(
    iss="issuer", sub="user-1", aud="device-1", mid="model-1", jti="j-1", iat=NOW, exp=NOW + 600
)


def _label(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@functools.cache
def _rfc9180_p256() -> dict[str, bytes]:
    raw = RFC9180.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == RFC9180_SHA256
    (entry,) = [e for e in json.loads(raw) if e["kem_id"] == KEM.P256]
    assert (entry["mode"], entry["kdf_id"], entry["aead_id"]) == (0, 1, 2)
    fields = ("info", "skRm", "pkRm", "enc", "shared_secret", "key", "base_nonce")
    vector = {name: bytes.fromhex(entry[name]) for name in fields}
    first = entry["encryptions"][0]
    for name in ("aad", "ct", "pt"):
        vector[name] = bytes.fromhex(first[name])
    return vector


def _import_rfc9180_key(token: Token) -> PKCS11RecipientKey:
    """Put the vector's skRm in the token as a sensitive, non-extractable session object."""
    vector = _rfc9180_p256()
    label = _label("rfc9180")
    key_id_bytes = bytes.fromhex(key_id(vector["pkRm"]))
    common: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.KEY_TYPE: KeyType.EC,
        Attribute.EC_PARAMS: P256_EC_PARAMS,
        Attribute.LABEL: label,
        Attribute.ID: key_id_bytes,
    }
    with token.session() as session:
        session.create_object(
            {
                **common,
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.EC_POINT: b"\x04\x41" + vector["pkRm"],
            }
        )
        session.create_object(
            {
                **common,
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.VALUE: vector["skRm"],
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
                Attribute.DERIVE: True,
            }
        )
    return PKCS11RecipientKey.find(token, label=label)


def _destroy_label(token: Token, label: str) -> None:
    """Remove objects a test planted on purpose, so that they do not outlive the test."""
    with token.session() as session:
        for obj in list(session.get_objects({Attribute.LABEL: label})):
            obj.destroy()


def _private_object(token: Token, object_class: ObjectClass, label: str) -> pkcs11.types.Object:
    with token.session() as session:
        return session.get_key(object_class, label=label)


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@pytest.fixture
def device(token: Token) -> PKCS11RecipientKey:
    return PKCS11RecipientKey.generate(token, _label("device"))


@pytest.fixture
def signer(token: Token) -> PKCS11Signer:
    return PKCS11Signer.generate(token, _label("issuer"))


@pytest.fixture
def token_kek(token: Token) -> PKCS11KEK:
    return PKCS11KEK.generate(token, _label("kek"))


# --- RFC 9180 byte-exact ------------------------------------------------------------------------


def test_hpke_p256_reproduces_rfc9180_shared_secret_key_and_base_nonce() -> None:
    vector = _rfc9180_p256()
    sk = ec.derive_private_key(int.from_bytes(vector["skRm"], "big"), ec.SECP256R1())
    assert _point(sk) == vector["pkRm"]
    pk_e = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vector["enc"])
    dh = sk.exchange(ec.ECDH(), pk_e)

    shared_secret = hpke_p256.extract_and_expand(dh, vector["enc"] + vector["pkRm"])
    key, base_nonce = hpke_p256.key_schedule_base(shared_secret, vector["info"])

    assert shared_secret == vector["shared_secret"]
    assert key == vector["key"]
    assert base_nonce == vector["base_nonce"]
    # Sequence number 0: the vector's first ciphertext uses base_nonce itself.
    assert AESGCM(key).decrypt(base_nonce, vector["ct"], vector["aad"]) == vector["pt"]


def test_token_ecdh_gives_rfc9180_shared_secret(token: Token) -> None:
    vector = _rfc9180_p256()
    key = _import_rfc9180_key(token)
    assert key.public_key().raw == vector["pkRm"]
    dh = key._derive(vector["enc"])
    assert (
        hpke_p256.extract_and_expand(dh, vector["enc"] + vector["pkRm"])
        == (vector["shared_secret"])
    )


def test_token_key_opens_rfc9180_ciphertext_resealed_with_empty_aad(token: Token) -> None:
    # The single-shot API has an empty AAD; the vector's uses "Count-0". Re-seal the vector's
    # plaintext with its key and base_nonce: the token opens it only if Decap and the key
    # schedule reproduce both exactly.
    vector = _rfc9180_p256()
    key = _import_rfc9180_key(token)
    resealed = AESGCM(vector["key"]).encrypt(vector["base_nonce"], vector["pt"], b"")
    assert key.hpke_open(vector["enc"], resealed, vector["info"]) == vector["pt"]


def test_hpke_p256_matches_pyca_hpke_for_fresh_keys() -> None:
    for _ in range(16):
        recipient = RecipientPrivateKey.generate(KEM.P256)
        sk = ec.derive_private_key(int.from_bytes(recipient.secret_bytes(), "big"), ec.SECP256R1())
        dek = hashlib.sha256(recipient.kid.encode()).digest()
        enc, ct = recipient.public_key().hpke_seal(dek, INFO)
        pk_e = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
        dh = sk.exchange(ec.ECDH(), pk_e)
        assert hpke_p256.open_base(dh, enc, recipient.public_key().raw, INFO, ct) == dek


@pytest.mark.parametrize(
    ("dh_len", "enc_len", "pk_len"), [(31, 65, 65), (32, 64, 65), (32, 65, 33), (0, 0, 0)]
)
def test_hpke_p256_open_refuses_wrong_input_lengths(dh_len: int, enc_len: int, pk_len: int) -> None:
    with pytest.raises(DEKUnwrapError) as info:
        hpke_p256.open_base(b"\x01" * dh_len, b"\x04" * enc_len, b"\x04" * pk_len, INFO, b"x" * 48)
    assert info.value.code == "dek_unwrap_failed"


# --- device key (HPKE recipient) ----------------------------------------------------------------


def test_dek_sealed_by_pyca_opens_through_the_token(device: PKCS11RecipientKey) -> None:
    dek = bytes(range(32))
    enc, ct = device.public_key().hpke_seal(dek, INFO)
    assert device.hpke_open(enc, ct, INFO) == dek


def test_generated_device_key_never_leaves_the_token(
    token: Token, device: PKCS11RecipientKey
) -> None:
    private = _private_object(token, ObjectClass.PRIVATE_KEY, device.label)
    attrs = private.get_attributes(
        [
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.ALWAYS_SENSITIVE,
            Attribute.NEVER_EXTRACTABLE,
            Attribute.LOCAL,
            Attribute.TOKEN,
            Attribute.DERIVE,
            Attribute.SIGN,
        ]
    )
    assert attrs == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ALWAYS_SENSITIVE: True,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.LOCAL: True,
        Attribute.TOKEN: True,
        Attribute.DERIVE: True,
        Attribute.SIGN: False,
    }
    with pytest.raises(pkcs11.AttributeSensitive):
        private[Attribute.VALUE]
    with pytest.raises(pkcs11.AttributeReadOnly):
        private[Attribute.EXTRACTABLE] = True


def test_device_key_id_is_the_kid_of_the_point_read_off_the_token(
    token: Token, device: PKCS11RecipientKey
) -> None:
    public = _private_object(token, ObjectClass.PUBLIC_KEY, device.label)
    point = public[Attribute.EC_POINT]
    assert point[:2] == b"\x04\x41"  # SoftHSM2 returns the DER OCTET STRING form
    assert device.kid == key_id(point[2:]) == device.public_key().kid
    assert public[Attribute.ID] == bytes.fromhex(device.kid)
    found = PKCS11RecipientKey.find(token, kid=device.kid)
    assert (found.label, found.public_key()) == (device.label, device.public_key())


def test_device_key_lookup_of_a_missing_label_is_refused(token: Token) -> None:
    with pytest.raises(TokenKeyNotFoundError) as info:
        PKCS11RecipientKey.find(token, label=_label("missing"))
    assert info.value.code == "token_key_not_found"


def test_device_key_label_cannot_be_generated_twice(
    token: Token, device: PKCS11RecipientKey
) -> None:
    with pytest.raises(TokenKeyExistsError) as info:
        PKCS11RecipientKey.generate(token, device.label)
    assert info.value.code == "token_key_exists"


def test_signing_key_is_not_found_as_a_device_key(token: Token, signer: PKCS11Signer) -> None:
    with pytest.raises(TokenKeyNotFoundError):
        PKCS11RecipientKey.find(token, label=signer.label)


def test_device_key_with_a_foreign_public_half_is_refused(token: Token) -> None:
    vector = _rfc9180_p256()
    label = _label("mismatch")
    foreign = _point(ec.generate_private_key(ec.SECP256R1()))
    common: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.KEY_TYPE: KeyType.EC,
        Attribute.EC_PARAMS: P256_EC_PARAMS,
        Attribute.LABEL: label,
        Attribute.ID: b"\x01" * 16,
    }
    with token.session() as session:
        session.create_object(
            {**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.EC_POINT: foreign}
        )
        session.create_object(
            {
                **common,
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.VALUE: vector["skRm"],
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DERIVE: True,
            }
        )
    try:
        with pytest.raises(TokenError, match="public half does not match") as info:
            PKCS11RecipientKey.find(token, label=label)
        assert info.value.code == "token_error"
    finally:
        _destroy_label(token, label)


def test_device_key_that_is_extractable_is_refused(token: Token) -> None:
    label = _label("extractable")
    with token.session() as session:
        session.generate_keypair(
            KeyType.EC,
            label=label,
            id=b"\x02" * 16,
            capabilities=pkcs11.MechanismFlag.DERIVE,
            public_template={Attribute.EC_PARAMS: P256_EC_PARAMS},
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
        )
    try:
        with pytest.raises(TokenError, match="extractable") as info:
            PKCS11RecipientKey.find(token, label=label)
        assert info.value.code == "token_error"
        assert label not in {key.label for key in PKCS11RecipientKey.find_all(token)}
    finally:
        _destroy_label(token, label)


def _other_point() -> bytes:
    return _point(ec.generate_private_key(ec.SECP256R1()))


def _off_curve(enc: bytes) -> bytes:
    point = bytearray(enc)
    point[-1] ^= 0x01
    return bytes(point)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_off_curve, id="point-off-curve"),
        pytest.param(lambda enc: _other_point(), id="other-valid-point"),
        pytest.param(lambda enc: enc[:33], id="truncated"),
        pytest.param(lambda enc: b"\x02" + enc[1:33], id="compressed"),
        pytest.param(lambda enc: b"\x04" + bytes(64), id="zero-point"),
        pytest.param(lambda enc: b"", id="empty"),
    ],
)
def test_tampered_enc_is_refused_with_dek_unwrap_failed(
    device: PKCS11RecipientKey, tamper: Any
) -> None:
    enc, ct = device.public_key().hpke_seal(bytes(32), INFO)
    with pytest.raises(DEKUnwrapError) as info:
        device.hpke_open(tamper(enc), ct, INFO)
    assert info.value.code == "dek_unwrap_failed"
    # Nothing from pyca or the token is chained into the error.
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_tampered_wrapped_dek_and_info_are_refused(device: PKCS11RecipientKey) -> None:
    enc, ct = device.public_key().hpke_seal(bytes(32), INFO)
    flipped = bytes([ct[0] ^ 0x80]) + ct[1:]
    for args in [(enc, flipped, INFO), (enc, ct, INFO + b"x"), (enc, ct[:-1], INFO)]:
        with pytest.raises(DEKUnwrapError) as info:
            device.hpke_open(*args)
        assert info.value.code == "dek_unwrap_failed"


def test_softhsm_itself_refuses_ecdh_with_a_point_off_the_curve(
    device: PKCS11RecipientKey,
) -> None:
    # Defence in depth: modelseal checks the point first, and the token checks it too.
    enc, _ = device.public_key().hpke_seal(bytes(32), INFO)
    with pytest.raises(pkcs11.PKCS11Error):
        device._derive(_off_curve(enc))


# --- envelope round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16385])
def test_package_sealed_to_token_key_and_signed_on_token_opens_via_token(
    device: PKCS11RecipientKey, signer: PKCS11Signer, size: int
) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    package = seal_bytes(plaintext, IssueTo(device.public_key(), signer, CLAIMS))
    policy = OpenPolicy(issuers=IssuerKeySet([signer.public_key()]), audience="device-1", now=NOW)
    opened = open_bytes(package, device, policy)
    assert opened.plaintext == plaintext


def test_package_for_another_token_key_is_refused_as_recipient_mismatch(
    token: Token, device: PKCS11RecipientKey
) -> None:
    issuer = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
    package = seal_bytes(b"model", IssueTo(device.public_key(), issuer, CLAIMS))
    other = PKCS11RecipientKey.generate(token, _label("other"))
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience="device-1", now=NOW)
    with pytest.raises(RecipientMismatchError) as info:
        open_bytes(package, other, policy)
    assert info.value.code == "recipient_mismatch"


def test_signed_package_with_replaced_enc_fails_dek_unwrap_via_open_bytes(
    device: PKCS11RecipientKey,
) -> None:
    # A genuine issuer that signs a keyblock with a wrong enc: the signature holds, the
    # token's Decap must fail.
    issuer = IssuerPrivateKey.generate(SignatureAlgorithm.ES256)
    package = seal_bytes(b"model" * 100, IssueTo(device.public_key(), issuer, CLAIMS))
    framing = read_framing(io.BytesIO(package))
    keyblock = build_keyblock(_other_point(), framing.wrapped_dek)
    forged = (
        framing.prelude
        + keyblock
        + sign_package(framing.prelude, keyblock, issuer)
        + package[framing.body_offset :]
    )
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience="device-1", now=NOW)
    with pytest.raises(DEKUnwrapError) as info:
        open_bytes(forged, device, policy)
    assert info.value.code == "dek_unwrap_failed"


def test_at_rest_package_round_trips_under_token_kek(token_kek: PKCS11KEK) -> None:
    plaintext = b"\xa5" * 40000
    package = seal_bytes(plaintext, AtRest(token_kek, CLAIMS))
    assert open_bytes(package, token_kek, OpenPolicy(now=NOW)).plaintext == plaintext


def test_at_rest_package_under_another_kek_with_the_same_label_fails_dek_unwrap(
    token_kek: PKCS11KEK,
) -> None:
    software = KEK.generate(token_kek.label)
    for sealer, opener in [(software, token_kek), (token_kek, software)]:
        package = seal_bytes(b"model", AtRest(sealer, CLAIMS))
        with pytest.raises(DEKUnwrapError) as info:
            open_bytes(package, opener, OpenPolicy(now=NOW))
        assert info.value.code == "dek_unwrap_failed"


# --- ES256 signer -------------------------------------------------------------------------------


def test_token_signature_verifies_with_issuer_public_key(signer: PKCS11Signer) -> None:
    message = b"modelseal/1 sig" + bytes(32)
    signature = signer.sign(message)
    assert len(signature) == 64
    assert signer.alg is SignatureAlgorithm.ES256
    signer.public_key().verify(message, signature)
    with pytest.raises(BadSignatureError) as info:
        signer.public_key().verify(message + b"x", signature)
    assert info.value.code == "bad_signature"


def test_signing_key_can_only_sign(token: Token, signer: PKCS11Signer) -> None:
    private = _private_object(token, ObjectClass.PRIVATE_KEY, signer.label)
    assert private[Attribute.SIGN] is True
    assert private[Attribute.DERIVE] is False
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(pkcs11.AttributeSensitive):
        private[Attribute.VALUE]
    found = PKCS11Signer.find(token, kid=signer.kid)
    assert found.public_key() == signer.public_key()


def test_softhsm_lacks_ecdsa_sha256_so_the_digest_is_computed_outside(
    token: Token, signer: PKCS11Signer
) -> None:
    private = _private_object(token, ObjectClass.PRIVATE_KEY, signer.label)
    assert isinstance(private, pkcs11.types.SignMixin)
    with token.session(), pytest.raises(pkcs11.MechanismInvalid):
        private.sign(b"message", mechanism=pkcs11.Mechanism.ECDSA_SHA256)


def test_one_token_serves_concurrent_threads(
    device: PKCS11RecipientKey, signer: PKCS11Signer, token_kek: PKCS11KEK
) -> None:
    # python-pkcs11 initialises the module with C_Initialize(NULL), so SoftHSM2 runs with
    # its own locking off and releases the GIL during calls: the Token must serialise.
    sealed = [device.public_key().hpke_seal(bytes([i]) * 32, INFO) for i in range(8)]

    def work(i: int) -> None:
        for _ in range(20):
            message = bytes([i]) * 40
            signer.public_key().verify(message, signer.sign(message))
            enc, ct = sealed[i]
            assert device.hpke_open(enc, ct, INFO) == bytes([i]) * 32
            nonce, wrapped = token_kek.wrap(bytes([i]) * 32, b"aad")
            assert token_kek.unwrap(nonce, wrapped, b"aad") == bytes([i]) * 32

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))


# --- KEK ----------------------------------------------------------------------------------------


def test_token_kek_output_is_standard_aes_256_gcm(token: Token) -> None:
    raw = bytes(range(100, 132))
    label = _label("known-kek")
    with token.session() as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: raw,
                Attribute.LABEL: label,
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            }
        )
    kek = PKCS11KEK.find(token, label)
    dek, aad = bytes(range(32)), b"modelseal/1 kek" + bytes(32)
    nonce, wrapped = kek.wrap(dek, aad)
    assert len(nonce) == 12
    assert len(wrapped) == 48
    assert AESGCM(raw).decrypt(nonce, wrapped, aad) == dek
    software = KEK(label, raw)
    nonce2, wrapped2 = software.wrap(dek, aad)
    assert kek.unwrap(nonce2, wrapped2, aad) == dek


def test_generated_kek_never_leaves_the_token(token: Token, token_kek: PKCS11KEK) -> None:
    secret = _private_object(token, ObjectClass.SECRET_KEY, token_kek.label)
    assert secret[Attribute.SENSITIVE] is True
    assert secret[Attribute.EXTRACTABLE] is False
    assert secret[Attribute.NEVER_EXTRACTABLE] is True
    assert secret[Attribute.VALUE_LEN] == 32
    assert secret[Attribute.WRAP] is False
    with pytest.raises(pkcs11.AttributeSensitive):
        secret[Attribute.VALUE]


def test_kek_nonces_are_fresh(token_kek: PKCS11KEK) -> None:
    nonces = {token_kek.wrap(bytes(32), b"")[0] for _ in range(64)}
    assert len(nonces) == 64


@pytest.mark.parametrize("nonce_len", [0, 8, 11, 13])
def test_kek_unwrap_refuses_nonces_that_are_not_96_bits(
    token_kek: PKCS11KEK, nonce_len: int
) -> None:
    # SoftHSM2 itself runs GCM with any IV length, even zero.
    nonce, wrapped = token_kek.wrap(bytes(32), b"aad")
    with pytest.raises(DEKUnwrapError) as info:
        token_kek.unwrap((nonce * 2)[:nonce_len], wrapped, b"aad")
    assert info.value.code == "dek_unwrap_failed"


def test_kek_unwrap_refuses_altered_wrap_or_aad(token_kek: PKCS11KEK) -> None:
    nonce, wrapped = token_kek.wrap(bytes(32), b"aad")
    altered_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    altered_wrap = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    for args in [
        (altered_nonce, wrapped, b"aad"),
        (nonce, altered_wrap, b"aad"),
        (nonce, wrapped, b"aaX"),
        (nonce, wrapped[:15], b"aad"),
    ]:
        with pytest.raises(DEKUnwrapError) as info:
            token_kek.unwrap(*args)
        assert info.value.code == "dek_unwrap_failed"


def test_kek_label_cannot_be_generated_twice_and_missing_kek_is_not_found(
    token: Token, token_kek: PKCS11KEK
) -> None:
    with pytest.raises(TokenKeyExistsError):
        PKCS11KEK.generate(token, token_kek.label)
    with pytest.raises(TokenKeyNotFoundError) as info:
        PKCS11KEK.find(token, _label("absent"))
    assert info.value.code == "token_key_not_found"


def test_kek_label_must_be_a_valid_rcpt(token: Token) -> None:
    with pytest.raises(KeyFormatError) as info:
        PKCS11KEK.generate(token, "has space")
    assert info.value.code == "key_invalid"


def test_destroyed_keys_are_gone(token: Token) -> None:
    device = PKCS11RecipientKey.generate(token, _label("gone"))
    kek = PKCS11KEK.generate(token, _label("gone"))
    device.destroy()
    kek.destroy()
    with pytest.raises(TokenKeyNotFoundError):
        PKCS11RecipientKey.find(token, label=device.label)
    with pytest.raises(TokenKeyNotFoundError):
        PKCS11KEK.find(token, kek.label)
    with token.session() as session:
        assert list(session.get_objects({Attribute.LABEL: device.label})) == []


def test_find_all_lists_generated_keys(token: Token) -> None:
    device = PKCS11RecipientKey.generate(token, _label("listed"))
    kek = PKCS11KEK.generate(token, _label("listed"))
    assert device.kid in {key.kid for key in PKCS11RecipientKey.find_all(token)}
    assert kek.label in {k.label for k in PKCS11KEK.find_all(token)}


# --- token sessions and login -------------------------------------------------------------------


def test_wrong_pin_is_refused_by_the_token(softhsm: SoftHSM) -> None:
    # No test logs in to the spare token, so this reaches C_Login.
    with pytest.raises(TokenLoginError) as info:
        Token(softhsm.module, SPARE_TOKEN, "not-the-pin")
    assert info.value.code == "token_login_failed"


def test_wrong_pin_is_refused_while_the_process_is_logged_in(
    softhsm: SoftHSM, token: Token, device: PKCS11RecipientKey
) -> None:
    # C_Login would only say CKR_USER_ALREADY_LOGGED_IN here, whatever the PIN.
    with pytest.raises(TokenLoginError) as info:
        Token(softhsm.module, MAIN_TOKEN, "not-the-pin")
    assert info.value.code == "token_login_failed"
    enc, ct = device.public_key().hpke_seal(bytes(32), INFO)
    assert device.hpke_open(enc, ct, INFO) == bytes(32)


def test_closing_one_token_handle_keeps_the_shared_login(
    softhsm: SoftHSM, token: Token, device: PKCS11RecipientKey
) -> None:
    with Token(softhsm.module, MAIN_TOKEN, softhsm.user_pin) as second:
        again = PKCS11RecipientKey.find(second, label=device.label)
    assert second.closed
    enc, ct = device.public_key().hpke_seal(bytes(32), INFO)
    assert device.hpke_open(enc, ct, INFO) == bytes(32)
    with pytest.raises(TokenError, match="closed") as info:
        again.hpke_open(enc, ct, INFO)
    assert info.value.code == "token_error"


def test_unknown_token_label_and_module_are_refused(softhsm: SoftHSM) -> None:
    with pytest.raises(TokenError, match="no token labelled") as info:
        Token(softhsm.module, "no-such-token", softhsm.user_pin)
    assert info.value.code == "token_error"
    with pytest.raises(TokenError, match="cannot load"):
        Token("/nonexistent/libpkcs11.so", MAIN_TOKEN, softhsm.user_pin)


def test_tokens_and_token_keys_refuse_pickling(
    token: Token, device: PKCS11RecipientKey, signer: PKCS11Signer, token_kek: PKCS11KEK
) -> None:
    for item in (token, device, signer, token_kek):
        with pytest.raises(TypeError):
            pickle.dumps(item)
    assert "pin" not in repr(token).lower()
