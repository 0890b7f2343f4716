"""Classic Play Integrity tokens and backend verdicts made with TEST keys."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

PACKAGE = "com.example.modelseal"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es256_jws(payload: bytes, key: ec.EllipticCurvePrivateKey, header: dict[str, Any]) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(payload)
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def eddsa_jws(payload: bytes, key: ed25519.Ed25519PrivateKey) -> str:
    head = b64url(json.dumps({"alg": "EdDSA"}).encode())
    body = b64url(payload)
    return f"{head}.{body}.{b64url(key.sign(f'{head}.{body}'.encode()))}"


def jwe(plaintext: bytes, kek: bytes, header: dict[str, Any] | None = None) -> str:
    protected = b64url(json.dumps(header or {"alg": "A256KW", "enc": "A256GCM"}).encode())
    cek = os.urandom(32)
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    ct, tag = sealed[:-16], sealed[-16:]
    return ".".join(
        [protected, b64url(aes_key_wrap(kek, cek)), b64url(iv), b64url(ct), b64url(tag)]
    )


def verdict(
    binding: str,
    now: int,
    *,
    app: str = "PLAY_RECOGNIZED",
    labels: tuple[str, ...] = ("MEETS_DEVICE_INTEGRITY",),
    licence: str = "LICENSED",
    package: str = PACKAGE,
    hash_field: str = "nonce",
) -> dict[str, Any]:
    device: dict[str, Any] = {"deviceRecognitionVerdict": list(labels)} if labels else {}
    return {
        "requestDetails": {
            "requestPackageName": package,
            hash_field: binding,
            "timestampMillis": str(now * 1000),
        },
        "appIntegrity": {
            "appRecognitionVerdict": app,
            "packageName": package,
            "certificateSha256Digest": ["abc"],
            "versionCode": "42",
        },
        "deviceIntegrity": device,
        "accountDetails": {"appLicensingVerdict": licence},
    }


@dataclass
class PlayKeys:
    """The Play Console key pair of an app, and an operator backend key."""

    decryption_key: bytes = field(default_factory=lambda: os.urandom(32))
    signing_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    backend_key: ed25519.Ed25519PrivateKey = field(
        default_factory=ed25519.Ed25519PrivateKey.generate
    )

    def classic(self, payload: dict[str, Any]) -> bytes:
        inner = es256_jws(json.dumps(payload).encode(), self.signing_key, {"alg": "ES256"})
        return jwe(inner.encode(), self.decryption_key).encode()

    def backend(self, payload: dict[str, Any]) -> bytes:
        return eddsa_jws(
            json.dumps({"tokenPayloadExternal": payload}).encode(), self.backend_key
        ).encode()
