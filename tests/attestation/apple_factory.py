"""Genuine-shaped App Attest objects signed by TEST roots (Apple's keys are not ours).

The structure mimics Apple's: a P-384 root, a P-384 intermediate ("App Attestation CA 1")
and a P-256 leaf holding the App Attest key, with the nonce in extension
1.2.840.113635.100.8.2 as ``SEQUENCE { [1] EXPLICIT OCTET STRING }``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelseal.attestation.apple import AAGUID_DEVELOPMENT, AAGUID_PRODUCTION, NONCE_EXTENSION_OID

APP_ID = "TEAM123456.com.example.modelseal"
NOW = 1_790_000_000  # 2026-09-21


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Apple Inc."),
        ]
    )


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


@dataclass
class CA:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def make_root(cn: str = "Test App Attestation Root CA") -> CA:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(NOW - 5 * 365 * 86400))
        .not_valid_after(_at(NOW + 20 * 365 * 86400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA384())
    )
    return CA(cert, key)


def make_intermediate(root: CA, cn: str = "Test App Attestation CA 1") -> CA:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(NOW - 365 * 86400))
        .not_valid_after(_at(NOW + 10 * 365 * 86400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA384())
    )
    return CA(cert, key)


def nonce_extension(nonce: bytes) -> x509.UnrecognizedExtension:
    der = bytes.fromhex("3024a1220420") + nonce
    return x509.UnrecognizedExtension(NONCE_EXTENSION_OID, der)


def p256_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def cose_key(point: bytes) -> bytes:
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: point[1:33], -3: point[33:]})


@dataclass
class AppleFactory:
    """Builds attestations and assertions under a test root."""

    root: CA = field(default_factory=make_root)
    intermediate: CA | None = None

    def __post_init__(self) -> None:
        if self.intermediate is None:
            self.intermediate = make_intermediate(self.root)

    def attestation(
        self,
        client_data_hash: bytes,
        *,
        app_id: str = APP_ID,
        aaguid: bytes = AAGUID_PRODUCTION,
        counter: int = 0,
        key: ec.EllipticCurvePrivateKey | None = None,
        claimed_key_id: bytes | None = None,
        credential_id: bytes | None = None,
        nonce: bytes | None = None,
        leaf_not_after: int = NOW + 3 * 86400,
        issuer: CA | None = None,
        x5c_tail: list[bytes] | None = None,
        cose_point: bytes | None = None,
    ) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        """Return ``keyId || attestationObject`` and the App Attest private key."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        point = p256_point(key)
        key_id = hashlib.sha256(point).digest()
        auth_data = (
            hashlib.sha256(app_id.encode()).digest()
            + bytes([0x40])
            + counter.to_bytes(4, "big")
            + aaguid
            + len(credential_id or key_id).to_bytes(2, "big")
            + (credential_id or key_id)
            + cose_key(cose_point or point)
        )
        nonce = nonce or hashlib.sha256(auth_data + client_data_hash).digest()
        issuer = issuer or self.intermediate
        assert issuer is not None
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id.hex())]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_at(NOW - 86400))
            .not_valid_after(_at(leaf_not_after))
            .add_extension(nonce_extension(nonce), critical=False)
            .sign(issuer.key, hashes.SHA256())
        )
        leaf_der = leaf.public_bytes(serialization.Encoding.DER)
        tail = x5c_tail if x5c_tail is not None else [issuer.der]
        obj = cbor2.dumps(
            {
                "fmt": "apple-appattest",
                "attStmt": {"x5c": [leaf_der, *tail], "receipt": b"test receipt"},
                "authData": auth_data,
            }
        )
        return (claimed_key_id or key_id) + obj, key

    @staticmethod
    def assertion(
        key: ec.EllipticCurvePrivateKey,
        client_data: bytes,
        counter: int,
        *,
        app_id: str = APP_ID,
    ) -> bytes:
        auth_data = hashlib.sha256(app_id.encode()).digest() + b"\x00" + counter.to_bytes(4, "big")
        nonce = hashlib.sha256(auth_data + hashlib.sha256(client_data).digest()).digest()
        signature = key.sign(nonce, ec.ECDSA(hashes.SHA256()))
        return cbor2.dumps({"signature": signature, "authenticatorData": auth_data})


__all__ = [
    "AAGUID_DEVELOPMENT",
    "AAGUID_PRODUCTION",
    "APP_ID",
    "CA",
    "NOW",
    "AppleFactory",
    "make_intermediate",
    "make_root",
    "p256_point",
]


def _cbor_x5c(evidence: bytes) -> list[bytes]:
    """The x5c list of ``keyId || attestationObject``."""
    x5c: list[bytes] = cbor2.loads(evidence[32:])["attStmt"]["x5c"]
    return x5c
