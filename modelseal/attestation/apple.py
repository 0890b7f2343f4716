"""Apple App Attest: attestation objects and assertions, pinned to Apple's root alone.

An App Attest key is a P-256 signing key in the Secure Enclave, separate from the
device's HPKE key. The app binds the two by attesting (and asserting) over
``clientDataHash = SHA256(client_data(challenge, device_key))``
(:func:`modelseal.attestation.base.client_data`), so the attestation proves: a
genuine Apple device, running the app ``TEAMID.bundle``, generated this App Attest key
in answer to this server challenge, for this device key.

Evidence sent to :meth:`AppleAppAttestVerifier.verify` is::

    evidence = keyId (32 bytes, the base64-decoded DCAppAttestService keyId)
               || attestationObject (CBOR, as returned by attestKey)

The checks follow Apple's "Validating apps that connect to your server" steps, with
trust anchored in the pinned roots only (never the OS trust store):

1. ``fmt`` is ``apple-appattest``; ``attStmt`` holds ``x5c`` (leaf first) and ``receipt``.
2. Each certificate of ``x5c`` is directly issued by the next, the last by a pinned
   root; every certificate, the root included, is valid at ``now``; issuers are CAs.
3. ``nonce = SHA256(authData || clientDataHash)`` equals the leaf's extension
   1.2.840.113635.100.8.2 (``SEQUENCE { [1] EXPLICIT OCTET STRING }``).
4. ``SHA256(leaf public key as an uncompressed point)`` equals the claimed keyId and
   the credentialId of ``authData``; the COSE key in ``authData`` is the leaf key.
5. ``rpIdHash = SHA256(appId)``, ``signCount = 0``, AAGUID ``appattestdevelop`` or
   ``appattest`` + 7 zero bytes, allowed by the configured environments.

Assertions (:meth:`AppleAppAttestVerifier.verify_assertion`) check the ECDSA
signature over ``SHA256(authenticatorData || SHA256(clientData))`` with the stored
key, the rpIdHash, and a counter strictly above the stored one; the caller persists the
new counter atomically (:mod:`modelseal.server.services.attestation`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from modelseal.attestation._cbor import decode_map, require_bytes, require_list
from modelseal.attestation.base import (
    AttestationChainError,
    AttestationChallengeError,
    AttestationConfigError,
    AttestationCounterError,
    AttestationExpiredError,
    AttestationKeyMismatchError,
    AttestationMalformedError,
    AttestationPolicyError,
    AttestationResult,
    AttestationRootError,
    Signal,
    client_data_hash,
    load_roots,
)
from modelseal.keys import RecipientPublicKey

__all__ = [
    "AAGUID_DEVELOPMENT",
    "AAGUID_PRODUCTION",
    "APPLE_ROOT_FILE",
    "NONCE_EXTENSION_OID",
    "PLATFORM",
    "AppleAppAttestVerifier",
    "AssertionResult",
    "AuthenticatorData",
    "parse_authenticator_data",
]

PLATFORM = "apple-appattest"
APPLE_ROOT_FILE = "apple_app_attestation_root_ca.pem"
NONCE_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
AAGUID_DEVELOPMENT = b"appattestdevelop"
AAGUID_PRODUCTION = b"appattest" + b"\x00" * 7
_ENVIRONMENT_BY_AAGUID = {AAGUID_PRODUCTION: "production", AAGUID_DEVELOPMENT: "development"}

MAX_ATTESTATION_BYTES = 64 * 1024
MAX_ASSERTION_BYTES = 1024
MAX_CERT_BYTES = 8 * 1024
MAX_RECEIPT_BYTES = 32 * 1024
KEY_ID_BYTES = 32
_RP_ID_HASH_BYTES = 32
_AUTH_DATA_HEAD_BYTES = 37  # rpIdHash(32) || flags(1) || signCount(4)
_AAGUID_BYTES = 16
_FLAG_ATTESTED_CREDENTIAL = 0x40
_FLAG_EXTENSIONS = 0x80
# SEQUENCE(36) { [1] EXPLICIT (34) { OCTET STRING (32) } }: the only DER form of the value.
_NONCE_DER_PREFIX = bytes.fromhex("3024a1220420")
_P256_POINT_BYTES = 65
_MAX_SIGNATURE_BYTES = 80


@dataclass(frozen=True, slots=True)
class AuthenticatorData:
    """The parsed WebAuthn authenticator data of an attestation or assertion."""

    rp_id_hash: bytes
    flags: int
    sign_count: int
    aaguid: bytes | None
    credential_id: bytes | None
    credential_public_key: bytes | None


@dataclass(frozen=True, slots=True)
class AssertionResult:
    """A verified assertion: the counter to store."""

    sign_count: int


def parse_authenticator_data(data: bytes, *, attested: bool) -> AuthenticatorData:
    """Parse authenticator data; with ``attested``, the attested credential data too.

    Raises:
        AttestationMalformedError: Too short, lengths inconsistent, or flags unexpected.
    """
    if len(data) < _AUTH_DATA_HEAD_BYTES:
        raise AttestationMalformedError(
            f"authenticator data must be at least {_AUTH_DATA_HEAD_BYTES} bytes, got {len(data)}"
        )
    rp_id_hash = data[:_RP_ID_HASH_BYTES]
    flags = data[32]
    sign_count = int.from_bytes(data[33:37], "big")
    if flags & _FLAG_EXTENSIONS:
        raise AttestationMalformedError("authenticator data must not carry extensions")
    if not attested:
        if len(data) != _AUTH_DATA_HEAD_BYTES:
            raise AttestationMalformedError(
                f"assertion authenticator data must be {_AUTH_DATA_HEAD_BYTES} bytes, "
                f"got {len(data)}"
            )
        return AuthenticatorData(rp_id_hash, flags, sign_count, None, None, None)
    if not flags & _FLAG_ATTESTED_CREDENTIAL:
        raise AttestationMalformedError("attestation authenticator data lacks credential data")
    offset = _AUTH_DATA_HEAD_BYTES
    if len(data) < offset + _AAGUID_BYTES + 2:
        raise AttestationMalformedError("authenticator data ends inside the credential data")
    aaguid = data[offset : offset + _AAGUID_BYTES]
    offset += _AAGUID_BYTES
    id_len = int.from_bytes(data[offset : offset + 2], "big")
    offset += 2
    if id_len != KEY_ID_BYTES or len(data) < offset + id_len:
        raise AttestationMalformedError(
            f"credentialId must be {KEY_ID_BYTES} bytes inside authenticator data, "
            f"got length {id_len}"
        )
    credential_id = data[offset : offset + id_len]
    cose = data[offset + id_len :]
    return AuthenticatorData(rp_id_hash, flags, sign_count, aaguid, credential_id, cose)


def _cose_p256_point(cose: bytes) -> bytes:
    """The uncompressed point of a COSE EC2 P-256 key (kty 2, crv 1, x -2, y -3)."""
    key = decode_map(cose, what="credentialPublicKey", max_bytes=256, integer_keys=True)
    if key.get(1) != 2 or key.get(-1) != 1:
        raise AttestationMalformedError("credentialPublicKey must be a COSE EC2 P-256 key")
    x = require_bytes(key.get(-2), what="credentialPublicKey x", min_len=32, max_len=32)
    y = require_bytes(key.get(-3), what="credentialPublicKey y", min_len=32, max_len=32)
    return b"\x04" + x + y


def _as_datetime(now: int) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


def _check_validity(cert: x509.Certificate, at: datetime, role: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise AttestationExpiredError(f"the {role} certificate is not valid at this time")


# pyca's extension parsing errors that are not ValueErrors.
_EXTENSION_ERRORS = (
    x509.ExtensionNotFound,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    except (ValueError, *_EXTENSION_ERRORS):
        return False
    return isinstance(constraints.value, x509.BasicConstraints) and constraints.value.ca


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _leaf_nonce(leaf: x509.Certificate) -> bytes:
    try:
        ext = leaf.extensions.get_extension_for_oid(NONCE_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise AttestationMalformedError("the leaf certificate has no App Attest nonce") from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise AttestationMalformedError("the leaf certificate's extensions are malformed") from None
    value = ext.value
    der = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(der) != len(_NONCE_DER_PREFIX) + 32 or not der.startswith(_NONCE_DER_PREFIX):
        raise AttestationMalformedError("the App Attest nonce extension is malformed")
    return der[len(_NONCE_DER_PREFIX) :]


def _p256_point(cert: x509.Certificate) -> bytes:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise AttestationMalformedError("the leaf certificate's key is malformed") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationMalformedError("the leaf certificate must hold a P-256 key")
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class AppleAppAttestVerifier:
    """Verifies App Attest attestations and assertions for one app id.

    Attributes:
        platform: ``"apple-appattest"``.
    """

    platform = PLATFORM

    def __init__(
        self,
        app_ids: Sequence[str],
        *,
        roots: Sequence[x509.Certificate] | None = None,
        environments: Sequence[str] = ("production",),
    ) -> None:
        """Configure the verifier.

        Args:
            app_ids: Accepted app ids, ``"TEAMID.bundle.id"`` each.
            roots: Pinned roots; default: the packaged Apple App Attestation Root CA.
            environments: Accepted AAGUID environments: ``"production"`` and/or
                ``"development"``.

        Raises:
            AttestationConfigError: No app id, an app id without a team prefix, an
                unknown environment, or no root.
        """
        if not app_ids:
            raise AttestationConfigError("apple: at least one app id is required")
        for app_id in app_ids:
            team, dot, bundle = app_id.partition(".")
            if not (dot and team and bundle):
                raise AttestationConfigError(f"apple: app id {app_id!r} must be TEAMID.bundle")
        unknown = set(environments) - {"production", "development"}
        if unknown or not environments:
            raise AttestationConfigError(
                "apple: environments must be a non-empty subset of production, development"
            )
        self._rp_id_hashes = {hashlib.sha256(a.encode()).digest(): a for a in app_ids}
        self._environments = frozenset(environments)
        self._roots = tuple(roots) if roots is not None else load_roots([APPLE_ROOT_FILE])
        if not self._roots:
            raise AttestationConfigError("apple: no pinned root")

    # --- attestation -------------------------------------------------------------------

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        """Verify ``keyId || attestationObject`` for ``challenge`` and ``device_key``.

        Raises:
            AttestationMalformedError: The evidence does not parse.
            AttestationRootError: The chain does not end at a pinned root.
            AttestationChainError: A link of the chain does not verify.
            AttestationExpiredError: A certificate is not valid at ``now``.
            AttestationChallengeError: The nonce is not the one for this challenge and key.
            AttestationKeyMismatchError: keyId, credentialId or COSE key disagree.
            AttestationPolicyError: Wrong app id, counter, or AAGUID environment.
        """
        if len(evidence) <= KEY_ID_BYTES:
            raise AttestationMalformedError("evidence must be keyId (32 bytes) || attestation")
        key_id, attestation = evidence[:KEY_ID_BYTES], evidence[KEY_ID_BYTES:]
        return self.verify_attestation(
            attestation,
            key_id=key_id,
            client_data_hash=client_data_hash(challenge, device_key),
            now=now,
        )

    def verify_attestation(
        self, attestation: bytes, *, key_id: bytes, client_data_hash: bytes, now: int
    ) -> AttestationResult:
        """Verify an attestation object for a claimed ``key_id`` and ``client_data_hash``.

        Raises:
            AttestationError: As :meth:`verify`.
        """
        obj = decode_map(attestation, what="attestation object", max_bytes=MAX_ATTESTATION_BYTES)
        if set(obj) != {"fmt", "attStmt", "authData"}:
            raise AttestationMalformedError("attestation object must hold fmt, attStmt, authData")
        if obj["fmt"] != "apple-appattest":
            raise AttestationMalformedError("attestation fmt must be apple-appattest")
        statement = obj["attStmt"]
        if not isinstance(statement, dict) or set(statement) != {"x5c", "receipt"}:
            raise AttestationMalformedError("attStmt must hold x5c and receipt")
        ders = require_list(statement["x5c"], what="x5c", min_len=2, max_len=4)
        receipt = require_bytes(statement["receipt"], what="receipt", max_len=MAX_RECEIPT_BYTES)
        auth_bytes = require_bytes(obj["authData"], what="authData", max_len=4096)
        auth = parse_authenticator_data(auth_bytes, attested=True)
        chain = [
            self._load_cert(require_bytes(d, what="x5c entry", max_len=MAX_CERT_BYTES))
            for d in ders
        ]
        leaf = chain[0]
        self._verify_chain(chain, _as_datetime(now))

        nonce = hashlib.sha256(auth_bytes + client_data_hash).digest()
        if not hmac.compare_digest(_leaf_nonce(leaf), nonce):
            raise AttestationChallengeError("the attestation is not for this challenge and key")
        point = _p256_point(leaf)
        expected_id = hashlib.sha256(point).digest()
        if not hmac.compare_digest(expected_id, key_id):
            raise AttestationKeyMismatchError("the keyId is not the attested key's")
        if auth.credential_id is None or not hmac.compare_digest(auth.credential_id, expected_id):
            raise AttestationKeyMismatchError("the credentialId is not the attested key's")
        if (
            auth.credential_public_key is None
            or _cose_p256_point(auth.credential_public_key) != point
        ):
            raise AttestationKeyMismatchError("the credential public key is not the attested key")
        app_id = self._rp_id_hashes.get(auth.rp_id_hash)
        if app_id is None:
            raise AttestationPolicyError("the attestation is for another app id")
        if auth.sign_count != 0:
            raise AttestationPolicyError("an attestation's counter must be 0")
        environment = _ENVIRONMENT_BY_AAGUID.get(auth.aaguid or b"")
        if environment is None:
            raise AttestationMalformedError("the AAGUID is not an App Attest AAGUID")
        if environment not in self._environments:
            raise AttestationPolicyError(f"App Attest {environment} keys are not accepted here")
        signals = (str(Signal.DEVELOPMENT_ENVIRONMENT),) if environment == "development" else ()
        return AttestationResult(
            platform=self.platform,
            level=environment,
            key_id=base64.b64encode(key_id).decode("ascii"),
            facts={
                "app_id": app_id,
                "environment": environment,
                "public_key": base64.b64encode(point).decode("ascii"),
                "receipt_sha256": hashlib.sha256(receipt).hexdigest(),
                "leaf_serial": format(leaf.serial_number, "x"),
            },
            signals=signals,
        )

    @staticmethod
    def _load_cert(der: bytes) -> x509.Certificate:
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion):
            raise AttestationMalformedError("an x5c entry is not a DER certificate") from None
        if cert.serial_number <= 0:
            raise AttestationMalformedError("an x5c certificate has a non-positive serial number")
        return cert

    def _verify_chain(self, chain: list[x509.Certificate], at: datetime) -> None:
        # The chain is linear and short (leaf, Apple App Attestation CA 1), so each link
        # is checked directly: issuer name, signature, CA flag and validity. The last
        # certificate must be issued by a pinned root, or be one verbatim.
        pinned = {root.public_bytes(serialization.Encoding.DER) for root in self._roots}
        if chain[-1].public_bytes(serialization.Encoding.DER) in pinned and len(chain) > 2:
            chain = chain[:-1]
        for position, cert in enumerate(chain):
            _check_validity(cert, at, "leaf" if position == 0 else "intermediate")
        for child, parent in itertools.pairwise(chain):
            if not _is_ca(parent) or not _issued_by(child, parent):
                raise AttestationChainError("the attestation certificate chain does not verify")
        top = chain[-1]
        for root in self._roots:
            if _is_ca(root) and _issued_by(top, root):
                _check_validity(root, at, "root")
                return
        raise AttestationRootError("the attestation chain does not end at a pinned Apple root")

    # --- assertions --------------------------------------------------------------------

    def verify_assertion(
        self,
        assertion: bytes,
        *,
        client_data: bytes,
        public_key: bytes,
        app_id: str,
        stored_count: int,
    ) -> AssertionResult:
        """Verify an assertion made with the attested key ``public_key`` (65-byte point).

        Args:
            assertion: The CBOR assertion from ``generateAssertion``.
            client_data: The exact bytes whose SHA-256 the app passed as clientDataHash.
            public_key: The attested key, as stored at attestation.
            app_id: The app id recorded at attestation.
            stored_count: The highest counter accepted so far for this key.

        Raises:
            AttestationMalformedError: The assertion does not parse.
            AttestationChainError: The signature does not verify.
            AttestationPolicyError: The rpIdHash is not the app id's.
            AttestationCounterError: The counter is not above ``stored_count``.
        """
        obj = decode_map(assertion, what="assertion", max_bytes=MAX_ASSERTION_BYTES)
        if set(obj) != {"signature", "authenticatorData"}:
            raise AttestationMalformedError("assertion must hold signature and authenticatorData")
        signature = require_bytes(
            obj["signature"], what="signature", min_len=8, max_len=_MAX_SIGNATURE_BYTES
        )
        auth_bytes = require_bytes(
            obj["authenticatorData"], what="authenticatorData", max_len=_AUTH_DATA_HEAD_BYTES
        )
        auth = parse_authenticator_data(auth_bytes, attested=False)
        if len(public_key) != _P256_POINT_BYTES:
            raise AttestationConfigError("the stored App Attest key must be a P-256 point")
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        nonce = hashlib.sha256(auth_bytes + hashlib.sha256(client_data).digest()).digest()
        try:
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise AttestationChainError("the assertion signature does not verify") from None
        expected_rp = hashlib.sha256(app_id.encode()).digest()
        if not hmac.compare_digest(auth.rp_id_hash, expected_rp):
            raise AttestationPolicyError("the assertion is for another app id")
        if auth.sign_count <= stored_count:
            raise AttestationCounterError("the assertion counter did not increase")
        return AssertionResult(sign_count=auth.sign_count)
