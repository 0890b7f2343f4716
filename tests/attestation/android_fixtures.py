"""Shared helpers for the Android Key Attestation tests.

* Real chains from ``tests/data/attestation/android/`` (see its README for provenance),
  with the values each one was generated with.
* A synthetic chain factory: a test root, an intermediate CA and a leaf that carries a
  KeyDescription encoded here with pyasn1. Mutations that need re-signing are built with
  it, and the test root is pinned in the test verifier.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder
from pyasn1.type import univ

from modelseal.attestation.android import AndroidKeyVerifier, AndroidPolicy, default_android_roots
from modelseal.attestation.android_asn1 import (
    KEY_DESCRIPTION_OID,
    Algorithm,
    ECCurve,
    KeyOrigin,
    KeyPurpose,
    VerifiedBootState,
)
from modelseal.attestation.android_chain import ChainQuirk, encode_chain
from modelseal.attestation.base import client_data_hash
from modelseal.attestation.revocation import StatusListCache
from modelseal.keys import KEM, RecipientPublicKey

DATA = Path(__file__).resolve().parents[1] / "data" / "attestation" / "android"
GOOGLE_VECTORS = DATA / "google-android-key-attestation"
KEYATTESTATION_VECTORS = DATA / "android-keyattestation"


def at(year: int, month: int = 1, day: int = 1) -> int:
    """Unix seconds at midnight UTC."""
    return int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp())


# --- real chains -------------------------------------------------------------------------------


def pem_ders(data: bytes) -> list[bytes]:
    """The DER of each PEM certificate in ``data``, in order."""
    blocks = data.split(b"-----END CERTIFICATE-----")[:-1]
    return [base64.b64decode(b.split(b"-----BEGIN CERTIFICATE-----")[1]) for b in blocks]


@dataclass(frozen=True)
class RealChain:
    """A real attestation chain and the values it was generated with."""

    name: str
    certificates: tuple[bytes, ...]
    level: str
    challenge: bytes
    packages: tuple[str, ...]
    signing_digest: bytes
    now: int
    key_type: str
    locked_and_verified: bool

    @property
    def evidence(self) -> bytes:
        return b"".join(self.certificates)

    @property
    def leaf(self) -> x509.Certificate | None:
        try:
            return x509.load_der_x509_certificate(self.certificates[0])
        except ValueError:
            return None

    def leaf_public_key(self) -> ec.EllipticCurvePublicKey | object:
        # The StrongBox EC leaf is not DER that pyca accepts; read its SPKI with pyasn1.
        from modelseal.attestation.android_chain import _parse_leaf

        return _parse_leaf(self.certificates[0]).public_key


# The 2018-2019 sample chains: TestDPC on development devices (unlocked, unverified boot),
# challenge "abc", attesting for the shared system UID (13 packages, one platform signer).
_SYSTEM_PACKAGES = (
    "android",
    "com.android.keychain",
    "com.android.settings",
    "com.qti.diagservices",
    "com.android.dynsystem",
    "com.android.inputdevices",
    "com.android.localtransport",
    "com.android.location.fused",
    "com.android.server.telecom",
    "com.android.wallpaperbackup",
    "com.google.SSRestartDetector",
    "com.google.android.hiddenmenu",
    "com.android.providers.settings",
)
_SYSTEM_DIGEST = bytes.fromhex("301aa3cb081134501c45f1422abc66c24224fd5ded5fdc8f17e697176fd866aa")


def google_chain(algorithm: str, level: str) -> RealChain:
    """A chain of google/android-key-attestation: ``EC`` or ``RSA``, ``TEE`` or ``StrongBox``."""
    folder = GOOGLE_VECTORS / f"algorithm_{algorithm}_SecurityLevel_{level}"
    ders = tuple(pem_ders((folder / f"cert{i}.pem").read_bytes())[0] for i in range(4))
    return RealChain(
        name=folder.name,
        certificates=ders,
        level="strongbox" if level == "StrongBox" else "tee",
        challenge=b"abc",
        packages=_SYSTEM_PACKAGES,
        signing_digest=_SYSTEM_DIGEST,
        # Inside every certificate's validity and the pinned 2022 RSA root's.
        now=at(2024, 1, 1),
        key_type="ec-p256" if algorithm == "EC" else "rsa",
        locked_and_verified=False,
    )


GOOGLE_CHAINS = [
    ("EC", "TEE"),
    ("EC", "StrongBox"),
    ("RSA", "TEE"),
    ("RSA", "StrongBox"),
]


def keyattestation_chain(name: str) -> RealChain:
    """A 2026 Pixel chain from android/keyattestation (``TEE_EC_2026_ROOT`` or ``SB_...``)."""
    stem = f"tegu_sdk36_{name}"
    ders = tuple(pem_ders((KEYATTESTATION_VECTORS / f"{stem}.pem").read_bytes()))
    text = (KEYATTESTATION_VECTORS / f"{stem}.json").read_text()
    expected = json.loads("\n".join(line for line in text.splitlines() if "//" not in line))
    app = expected["softwareEnforced"]["attestationApplicationId"]
    return RealChain(
        name=stem,
        certificates=ders,
        level="strongbox" if expected["attestationSecurityLevel"] == "STRONG_BOX" else "tee",
        challenge=base64.b64decode(expected["attestationChallenge"]),
        packages=tuple(p["name"] for p in app["packages"]),
        signing_digest=base64.b64decode(app["signatures"][0]),
        now=at(2026, 3, 1),
        key_type="ec-p256",
        locked_and_verified=True,
    )


def sample_strongbox_root() -> x509.Certificate:
    """The root of the 2018 StrongBox sample chains (not a published Google root)."""
    folder = GOOGLE_VECTORS / "algorithm_EC_SecurityLevel_StrongBox"
    return x509.load_pem_x509_certificate((folder / "cert3.pem").read_bytes())


def real_policy(chain: RealChain, **overrides: object) -> AndroidPolicy:
    """A policy configured from the chain's known values."""
    options: dict[str, object] = {
        "packages": {name: frozenset({chain.signing_digest}) for name in chain.packages},
        "required_purposes": frozenset({KeyPurpose.SIGN}),
        "key_types": frozenset({chain.key_type}),
    }
    if not chain.locked_and_verified:
        options["require_device_locked"] = False
        options["allowed_boot_states"] = frozenset(
            {VerifiedBootState.VERIFIED, VerifiedBootState.UNVERIFIED}
        )
    options.update(overrides)
    return AndroidPolicy(**options)  # type: ignore[arg-type]


def status_file(directory: Path, serials: Sequence[int] = (), status: str = "REVOKED") -> Path:
    """Write a status list in Google's format listing ``serials``."""
    entries = {format(s, "x"): {"status": status, "reason": "KEY_COMPROMISE"} for s in serials}
    path = directory / f"status-{len(list(directory.iterdir()))}.json"
    path.write_text(json.dumps({"entries": entries}))
    return path


def real_verifier(
    chain: RealChain,
    directory: Path,
    *,
    roots: Sequence[x509.Certificate] | None = None,
    revoked: Sequence[int] = (),
    **policy: object,
) -> AndroidKeyVerifier:
    """A verifier pinned to Google's roots plus the sample StrongBox root."""
    if roots is None:
        roots = [*default_android_roots(), sample_strongbox_root()]
    return AndroidKeyVerifier(
        policy=real_policy(chain, **policy),
        revocation=StatusListCache(status_file(directory, revoked)),
        roots=roots,
        # The sample chains attest arbitrary challenges ("abc", UUIDs), not client data.
        challenge_binding="raw",
    )


# --- KeyDescription encoding ---------------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_sequence(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + _len(len(body)) + body


def explicit(number: int, value: object) -> bytes:
    """Encode ``value`` (a pyasn1 object) under EXPLICIT context tag ``[number]``."""
    inner = encoder.encode(value)
    if number < 31:
        ident = bytes([0xA0 | number])
    else:
        groups = []
        n = number
        while n:
            groups.append(n & 0x7F)
            n >>= 7
        groups.reverse()
        ident = bytes([0xBF]) + bytes(g | 0x80 for g in groups[:-1]) + bytes([groups[-1]])
    return ident + _len(len(inner)) + inner


def int_set(values: Sequence[int]) -> univ.SetOf:
    s = univ.SetOf(componentType=univ.Integer())
    for v in sorted(values):
        s.append(univ.Integer(v))
    return s


def application_id(packages: Sequence[tuple[str, int]], digests: Sequence[bytes]) -> bytes:
    infos = sorted(
        der_sequence(encoder.encode(univ.OctetString(n.encode())), encoder.encode(univ.Integer(v)))
        for n, v in packages
    )
    digest_parts = sorted(encoder.encode(univ.OctetString(d)) for d in digests)
    set_of_infos = b"\x31" + _len(sum(map(len, infos))) + b"".join(infos)
    set_of_digests = b"\x31" + _len(sum(map(len, digest_parts))) + b"".join(digest_parts)
    return der_sequence(set_of_infos, set_of_digests)


def root_of_trust(
    locked: bool = True, state: int = VerifiedBootState.VERIFIED, boot_hash: bytes | None = None
) -> bytes:
    parts = [
        encoder.encode(univ.OctetString(b"\x11" * 32)),
        encoder.encode(univ.Boolean(locked)),
        encoder.encode(univ.Enumerated(state)),
    ]
    if boot_hash is not None:
        parts.append(encoder.encode(univ.OctetString(boot_hash)))
    return der_sequence(*parts)


class _Raw(univ.Any):  # type: ignore[misc]
    """Pre-encoded DER passed through ``explicit``."""


TEST_PACKAGE = "app.modelseal.demo"
TEST_DIGEST = hashlib.sha256(b"modelseal test signing certificate").digest()


@dataclass(frozen=True)
class KeyDescriptionSpec:
    """Field values of a synthetic KeyDescription (defaults: a good modelseal key)."""

    attestation_version: int = 300
    security_level: int = 1
    keymint_version: int = 300
    keymint_level: int = 1
    challenge: bytes | None = None  # None: bound by make_leaf (client-data hash)
    unique_id: bytes = b""
    purposes: tuple[int, ...] = (KeyPurpose.AGREE_KEY,)
    algorithm: int = Algorithm.EC
    key_size: int = 256
    ec_curve: int | None = ECCurve.P_256
    origin: int = KeyOrigin.GENERATED
    locked: bool = True
    boot_state: int = VerifiedBootState.VERIFIED
    os_version: int = 150000
    os_patch_level: int = 202609
    vendor_patch_level: int = 20260905
    boot_patch_level: int = 20260905
    packages: tuple[tuple[str, int], ...] = ((TEST_PACKAGE, 42),)
    digests: tuple[bytes, ...] = (TEST_DIGEST,)
    hardware_in_software_list: bool = False
    extra_hw: tuple[bytes, ...] = field(default=())

    def replace(self, **changes: object) -> KeyDescriptionSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def encode(self) -> bytes:
        hw = [explicit(1, int_set(self.purposes)), explicit(2, univ.Integer(self.algorithm))]
        hw.append(explicit(3, univ.Integer(self.key_size)))
        if self.ec_curve is not None:
            hw.append(explicit(10, univ.Integer(self.ec_curve)))
        hw.append(explicit(503, univ.Null()))
        hw.append(explicit(702, univ.Integer(self.origin)))
        rot = root_of_trust(self.locked, self.boot_state, b"\x22" * 32)
        hw.append(explicit(704, _Raw(rot)))
        hw.append(explicit(705, univ.Integer(self.os_version)))
        hw.append(explicit(706, univ.Integer(self.os_patch_level)))
        hw.append(explicit(718, univ.Integer(self.vendor_patch_level)))
        hw.append(explicit(719, univ.Integer(self.boot_patch_level)))
        hw.extend(self.extra_hw)
        app = application_id(self.packages, self.digests)
        sw = [explicit(701, univ.Integer(1_760_000_000_000)), explicit(709, univ.OctetString(app))]
        if self.hardware_in_software_list:
            sw = sorted([*sw, *hw], key=_tag_of)
            hw = []
        return der_sequence(
            encoder.encode(univ.Integer(self.attestation_version)),
            encoder.encode(univ.Enumerated(self.security_level)),
            encoder.encode(univ.Integer(self.keymint_version)),
            encoder.encode(univ.Enumerated(self.keymint_level)),
            encoder.encode(univ.OctetString(self.challenge or b"")),
            encoder.encode(univ.OctetString(self.unique_id)),
            der_sequence(*sw),
            der_sequence(*hw),
        )


def _tag_of(element: bytes) -> int:
    if element[0] & 0x1F != 0x1F:
        return element[0] & 0x1F
    n = 0
    for b in element[1:]:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n
    raise AssertionError


# --- synthetic chains ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int,
    extra: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(
        issuer_key, hashes.SHA384() if subject.endswith("Root") else hashes.SHA256()
    )


@dataclass
class SyntheticPKI:
    """A test root and intermediate that can sign attestation leaves."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @classmethod
    def create(
        cls,
        *,
        name: str = "modelseal Test Attestation",
        intermediate_not_after: dt.datetime = dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    ) -> SyntheticPKI:
        root_key = ec.generate_private_key(ec.SECP384R1())
        start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        root = _ca_cert(
            f"{name} Root",
            root_key,
            f"{name} Root",
            root_key,
            start,
            dt.datetime(2040, 1, 1, tzinfo=dt.UTC),
            0x1000,
        )
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        intermediate = _ca_cert(
            f"{name} Intermediate",
            intermediate_key,
            f"{name} Root",
            root_key,
            start,
            intermediate_not_after,
            0xABCDEF0123,
        )
        return cls(root_key, root, intermediate_key, intermediate)

    def with_intermediate(self, **kwargs: object) -> SyntheticPKI:
        """The same root with a new intermediate (``not_after``, ``extra`` extensions)."""
        key = ec.generate_private_key(ec.SECP256R1())
        root_cn = self.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        cert = _ca_cert(
            str(root_cn).replace("Root", "Intermediate"),
            key,
            str(root_cn),
            self.root_key,
            dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            kwargs.get("not_after", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),  # type: ignore[arg-type]
            0xABCDEF0124,
            kwargs.get("extra", ()),  # type: ignore[arg-type]
        )
        return SyntheticPKI(self.root_key, self.root, key, cert)


SYNTHETIC_CHALLENGE = bytes(range(100, 132))


def bound_challenge(key: ec.EllipticCurvePrivateKey) -> bytes:
    """What the app passes to setAttestationChallenge: SHA256(client_data)."""
    if isinstance(key.curve, ec.SECP256R1):
        return client_data_hash(SYNTHETIC_CHALLENGE, device_public(key))
    return client_data_hash(SYNTHETIC_CHALLENGE, None)


def make_leaf(
    pki: SyntheticPKI,
    description: KeyDescriptionSpec | bytes,
    *,
    device_key: ec.EllipticCurvePrivateKey | None = None,
    signer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An attestation leaf for ``device_key`` carrying ``description``.

    A spec without a challenge gets the client-data hash of :data:`SYNTHETIC_CHALLENGE`
    and the leaf's key, as a modelseal app computes it.
    """
    key = device_key or ec.generate_private_key(ec.SECP256R1())
    if isinstance(description, KeyDescriptionSpec):
        if description.challenge is None:
            description = description.replace(challenge=bound_challenge(key))
        description = description.encode()
    issuer_name, issuer_key = signer or (pki.intermediate.subject, pki.intermediate_key)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("Android Keystore Key"))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2048, 1, 1, tzinfo=dt.UTC))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(KEY_DESCRIPTION_OID), description),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return leaf, key


def device_public(key: ec.EllipticCurvePrivateKey) -> RecipientPublicKey:
    """The FORMAT §6 P-256 device key for ``key``."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return RecipientPublicKey(KEM.P256, raw)


SYNTHETIC_NOW = at(2026, 11, 25)


def synthetic_policy(**overrides: object) -> AndroidPolicy:
    options: dict[str, object] = {"packages": {TEST_PACKAGE: frozenset({TEST_DIGEST})}}
    options.update(overrides)
    return AndroidPolicy(**options)  # type: ignore[arg-type]


def synthetic_verifier(
    pki: SyntheticPKI,
    directory: Path,
    *,
    revoked: Sequence[int] = (),
    roots: Sequence[x509.Certificate] | None = None,
    allowed_quirks: Sequence[ChainQuirk] = tuple(ChainQuirk),
    **policy: object,
) -> AndroidKeyVerifier:
    return AndroidKeyVerifier(
        policy=synthetic_policy(**policy),
        revocation=StatusListCache(status_file(directory, revoked)),
        roots=[pki.root] if roots is None else roots,
        allowed_quirks=allowed_quirks,
    )


def synthetic_evidence(pki: SyntheticPKI, leaf: x509.Certificate) -> bytes:
    return encode_chain([leaf, pki.intermediate, pki.root])
