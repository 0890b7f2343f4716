"""HPKE receiver side for DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode.

pyca/cryptography's HPKE needs the recipient private key in memory. A key held
in a PKCS#11 token or a platform keystore can only run the Diffie-Hellman step,
so this module composes everything after it from pyca primitives, exactly as
RFC 9180 defines it:

* Decap (§4.1): ``dh = DH(skR, pkE)`` comes from the caller; then
  ``shared_secret = ExtractAndExpand(dh, enc || pkRm)``.
* Key schedule (§5.1), mode_base with empty ``psk`` and ``psk_id``:
  ``key`` and ``base_nonce``. The exporter secret is not derived: FORMAT v1 never
  exports.
* Single-shot Open (§6.1) with sequence number 0, so the nonce is ``base_nonce``,
  and the empty AAD that FORMAT v1 uses.

Only the suite FORMAT v1 names for hardware device keys is implemented; nothing
here is negotiable at run time.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from modelseal.errors import DEKUnwrapError

__all__ = [
    "N_DH",
    "N_ENC",
    "N_K",
    "N_N",
    "N_SECRET",
    "check_public_point",
    "extract_and_expand",
    "key_schedule_base",
    "labeled_expand",
    "labeled_extract",
    "open_base",
]

# Identifiers (RFC 9180 §7.1, §7.2, §7.3).
KEM_ID = 0x0010  # DHKEM(P-256, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0002  # AES-256-GCM
MODE_BASE = 0x00

# Sizes in bytes (RFC 9180 §7.1-§7.3).
N_SECRET = 32
N_ENC = 65
N_PK = 65
N_DH = 32
N_H = 32
N_K = 32
N_N = 12

# Labels (RFC 9180 §4, §4.1, §5.1).
HPKE_VERSION_LABEL = b"HPKE-v1"
EAE_PRK_LABEL = b"eae_prk"
SHARED_SECRET_LABEL = b"shared_secret"
PSK_ID_HASH_LABEL = b"psk_id_hash"
INFO_HASH_LABEL = b"info_hash"
SECRET_LABEL = b"secret"
KEY_LABEL = b"key"
BASE_NONCE_LABEL = b"base_nonce"

KEM_SUITE_ID = b"KEM" + struct.pack(">H", KEM_ID)
HPKE_SUITE_ID = b"HPKE" + struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """``LabeledExtract`` (§4): HKDF-Extract, which is HMAC-SHA256 keyed with the salt.

    An empty salt is an empty HMAC key, which HMAC pads to the same block as
    ``Nh`` zero bytes, as RFC 5869 requires.
    """
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(HPKE_VERSION_LABEL + suite_id + label + ikm)
    return mac.finalize()


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """``LabeledExpand`` (§4): HKDF-Expand with a labelled ``info``.

    The HKDF info is ``I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info``.
    """
    labeled_info = struct.pack(">H", length) + HPKE_VERSION_LABEL + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


def extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    """DHKEM ``ExtractAndExpand`` (§4.1): the KEM shared secret from ``dh``."""
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", EAE_PRK_LABEL, dh)
    return labeled_expand(KEM_SUITE_ID, eae_prk, SHARED_SECRET_LABEL, kem_context, N_SECRET)


def key_schedule_base(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """``KeySchedule`` (§5.1) for mode_base: return ``(key, base_nonce)``."""
    psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", PSK_ID_HASH_LABEL, b"")
    info_hash = labeled_extract(HPKE_SUITE_ID, b"", INFO_HASH_LABEL, info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE_ID, shared_secret, SECRET_LABEL, b"")
    key = labeled_expand(HPKE_SUITE_ID, secret, KEY_LABEL, context, N_K)
    base_nonce = labeled_expand(HPKE_SUITE_ID, secret, BASE_NONCE_LABEL, context, N_N)
    return key, base_nonce


def check_public_point(point: bytes) -> None:
    """``DeserializePublicKey`` (§7.1.1) as a check: an uncompressed point on P-256.

    Raises:
        DEKUnwrapError: ``point`` is not 65 bytes, not uncompressed, or not on the curve.
    """
    if len(point) != N_PK or point[0] != 0x04:
        raise DEKUnwrapError("DEK unwrap failed")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise DEKUnwrapError("DEK unwrap failed") from None


def open_base(dh: bytes, enc: bytes, pk_rm: bytes, info: bytes, ciphertext: bytes) -> bytes:
    """Finish ``OpenBase`` once the caller has computed ``dh = DH(skR, enc)``.

    Args:
        dh: The x-coordinate of ``skR * pkE``, 32 bytes (SEC1 ECDH output).
        enc: The encapsulated key, the sender's uncompressed ephemeral point.
        pk_rm: The recipient's uncompressed public point.
        info: The HPKE ``info``.
        ciphertext: AES-256-GCM ciphertext and tag, sealed with an empty AAD.

    Raises:
        DEKUnwrapError: A malformed input, or the ciphertext does not authenticate.
    """
    if len(dh) != N_DH or len(enc) != N_ENC or len(pk_rm) != N_PK:
        raise DEKUnwrapError("DEK unwrap failed")
    shared_secret = extract_and_expand(dh, enc + pk_rm)
    key, base_nonce = key_schedule_base(shared_secret, info)
    try:
        return AESGCM(key).decrypt(base_nonce, ciphertext, b"")
    except (InvalidTag, ValueError):
        raise DEKUnwrapError("DEK unwrap failed") from None
