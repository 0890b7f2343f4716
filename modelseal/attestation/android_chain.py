"""Certificate-chain verification for Android Key Attestation.

Evidence format. The app sends the chain that ``KeyStore.getCertificateChain(alias)``
returns, leaf first and root last, each certificate DER-encoded, concatenated with nothing
in between (:func:`encode_chain`). A chain has 2 to 10 certificates and at most 64 KiB.

Two ways to verify, chosen per chain:

1. **Strict** (the normal case). pyca's ``ClientVerifier`` builds the path from the leaf
   through the presented intermediates to a certificate in a ``Store`` that holds only
   the pinned roots. CAs get pyca's Web PKI CA extension policy (basicConstraints CA,
   keyUsage keyCertSign, key identifiers, ...). The leaf gets a permissive extension
   policy, because attestation leaves carry no SAN and an unrecognised extension.
2. **Per-link for the leaf**. This is used only when the leaf shows one of the known
   quirks of Keystore implementations, detected before any verification (:class:`ChainQuirk`):

   * ``leaf_not_der``: pyca refuses to parse the leaf, but pyasn1's RFC 5280 schema reads
     it. Some StrongBox chips write ecdsa-with-SHA256 with NULL parameters.
   * ``leaf_issuer_mismatch``: the leaf's issuer name is not the subject of the next
     certificate. The same StrongBox sample copies its issuer's issuer.

   In this case the leaf link is checked by hand. The leaf's signature must verify with
   the next certificate's key, under an allow-list of algorithms. The next certificate must
   be a CA. The leaf must be valid at ``now``. Everything above the leaf still goes through
   pyca's strict verifier, with the same pinned store, starting at the next certificate.
   Only the link that the device's own keystore wrote is relaxed.

Both ways also require all of the following:

* every presented certificate is used, in order;
* the last certificate is self-issued, and its key and subject are those of a pinned root.
  The chain is anchored at the *pinned* certificate, so a reissued root with the same key
  and name works;
* every certificate but the presented root is valid at ``now``, and so is the pinned root;
* no certificate other than the leaf carries the KeyDescription extension. Otherwise an
  attested signing key could pose as an attestation CA.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc5280

from modelseal.attestation.android_asn1 import KEY_DESCRIPTION_OID
from modelseal.attestation.base import (
    AttestationChainError,
    AttestationConfigError,
    AttestationExpiredError,
    AttestationMalformedError,
    AttestationRootError,
)

__all__ = [
    "MAX_CHAIN_CERTIFICATES",
    "MAX_EVIDENCE_BYTES",
    "ChainQuirk",
    "ChainVerifier",
    "LeafCertificate",
    "VerifiedChain",
    "encode_chain",
    "split_der_chain",
]

MAX_EVIDENCE_BYTES = 64 * 1024
MIN_CHAIN_CERTIFICATES = 2
MAX_CHAIN_CERTIFICATES = 10
MIN_RSA_BITS = 2048

_KEY_USAGE_OID = "2.5.29.15"
_BASIC_CONSTRAINTS_OID = "2.5.29.19"
# Critical extensions a leaf may carry; any other critical one is refused (RFC 5280 §4.2).
_LEAF_CRITICAL_OK = frozenset({_KEY_USAGE_OID, _BASIC_CONSTRAINTS_OID})
_DER_NULL = b"\x05\x00"

_RSA_SIGNATURES: dict[str, hashes.HashAlgorithm] = {
    "1.2.840.113549.1.1.11": hashes.SHA256(),
    "1.2.840.113549.1.1.12": hashes.SHA384(),
    "1.2.840.113549.1.1.13": hashes.SHA512(),
}
_ECDSA_SIGNATURES: dict[str, hashes.HashAlgorithm] = {
    "1.2.840.10045.4.3.2": hashes.SHA256(),
    "1.2.840.10045.4.3.3": hashes.SHA384(),
    "1.2.840.10045.4.3.4": hashes.SHA512(),
}
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
# What pyca raises on malformed certificate fields (several are not ValueErrors).
_PYCA_ERRORS = (
    ValueError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)


class ChainQuirk(enum.StrEnum):
    """Known, tolerated deviations of attestation leaves (see the module docstring)."""

    LEAF_NOT_DER = "leaf_not_der"
    LEAF_ISSUER_MISMATCH = "leaf_issuer_mismatch"


# --- the evidence container --------------------------------------------------------------------


def _der_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read one DER tag and length at ``offset``; return (tag, header length, content length).

    Only single-byte tags and minimal definite lengths are accepted: enough for the
    SEQUENCE framing of certificates, and strict.
    """
    if offset + 2 > len(data):
        raise AttestationMalformedError(f"certificate chain truncated at offset {offset}")
    tag = data[offset]
    first = data[offset + 1]
    if first < 0x80:
        return tag, 2, first
    count = first & 0x7F
    if count == 0 or count > 3:
        raise AttestationMalformedError(f"unsupported DER length form at offset {offset + 1}")
    if offset + 2 + count > len(data):
        raise AttestationMalformedError(f"certificate chain truncated at offset {offset}")
    length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    if data[offset + 2] == 0 or length < 0x80:
        raise AttestationMalformedError(f"non-minimal DER length at offset {offset + 1}")
    return tag, 2 + count, length


def split_der_chain(evidence: bytes) -> tuple[bytes, ...]:
    """Split concatenated DER certificates (leaf first) into one ``bytes`` per certificate.

    Raises:
        AttestationMalformedError: Wrong size, count or framing; the message gives the offset.
    """
    if not isinstance(evidence, bytes | bytearray | memoryview):
        raise AttestationMalformedError("evidence must be bytes")
    data = bytes(evidence)
    if not data or len(data) > MAX_EVIDENCE_BYTES:
        raise AttestationMalformedError(
            f"evidence must be 1..{MAX_EVIDENCE_BYTES} bytes, got {len(data)}"
        )
    certificates: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(certificates) == MAX_CHAIN_CERTIFICATES:
            raise AttestationMalformedError(
                f"chain has more than {MAX_CHAIN_CERTIFICATES} certificates"
            )
        tag, header, length = _der_header(data, offset)
        if tag != 0x30:
            raise AttestationMalformedError(f"expected a DER SEQUENCE at offset {offset}")
        end = offset + header + length
        if end > len(data):
            raise AttestationMalformedError(f"certificate at offset {offset} is truncated")
        certificates.append(data[offset:end])
        offset = end
    if len(certificates) < MIN_CHAIN_CERTIFICATES:
        raise AttestationMalformedError(
            f"chain must have {MIN_CHAIN_CERTIFICATES}..{MAX_CHAIN_CERTIFICATES} "
            f"certificates, got {len(certificates)}"
        )
    return tuple(certificates)


def encode_chain(certificates: Iterable[bytes | x509.Certificate]) -> bytes:
    """Concatenate DER certificates (leaf first) into the evidence format."""
    parts = []
    for cert in certificates:
        if isinstance(cert, x509.Certificate):
            parts.append(cert.public_bytes(serialization.Encoding.DER))
        else:
            parts.append(bytes(cert))
    return b"".join(parts)


# --- the leaf ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeafCertificate:
    """The attestation certificate, read with pyasn1 so that quirky leaves parse too.

    Attributes:
        der: The certificate as sent.
        pyca: pyca's view of it, or ``None`` if pyca refuses its encoding.
        tbs_der: The exact signed bytes.
        signature_oid: The dotted OID of the signature algorithm.
        signature_params: The algorithm parameters' DER, or ``None`` when absent.
        public_key: The attested key.
        extensions: Criticality and value by dotted OID; the value is kept for
            unrecognised extensions (the KeyDescription) and empty for the others.
    """

    der: bytes
    pyca: x509.Certificate | None
    tbs_der: bytes
    signature_oid: str
    signature_params: bytes | None
    signature: bytes
    serial_number: int
    issuer_der: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    public_key: CertificatePublicKeyTypes
    extensions: Mapping[str, tuple[bool, bytes]] = field(default_factory=dict)

    @property
    def key_description(self) -> bytes:
        """The DER value of the KeyDescription extension.

        Raises:
            AttestationMalformedError: The leaf has none.
        """
        entry = self.extensions.get(KEY_DESCRIPTION_OID)
        if entry is None:
            raise AttestationMalformedError("leaf certificate has no KeyDescription extension")
        return entry[1]

    @property
    def spki_der(self) -> bytes:
        """The attested key as a DER SubjectPublicKeyInfo."""
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _parse_leaf(der: bytes) -> LeafCertificate:
    """Read the leaf with pyca, or with pyasn1 when pyca refuses it; refuse non-X.509."""
    leaf = _leaf_from_pyca(der)
    return leaf if leaf is not None else _leaf_from_pyasn1(der)


def _leaf_from_pyca(der: bytes) -> LeafCertificate | None:
    """The leaf as pyca reads it (strict DER), or ``None`` if pyca refuses any field."""
    try:
        cert = x509.load_der_x509_certificate(der)
        if cert.version is not x509.Version.v3:
            return None
        public_key = cert.public_key()
        extensions: dict[str, tuple[bool, bytes]] = {}
        for ext in cert.extensions:
            # Only unrecognised extensions (the KeyDescription) need their raw value.
            value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
            extensions[ext.oid.dotted_string] = (ext.critical, value)
        leaf = LeafCertificate(
            der=der,
            pyca=cert,
            tbs_der=cert.tbs_certificate_bytes,
            signature_oid=cert.signature_algorithm_oid.dotted_string,
            # pyca accepted the encoding, so the parameters are the standard ones.
            signature_params=None,
            signature=cert.signature,
            serial_number=cert.serial_number,
            issuer_der=cert.issuer.public_bytes(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            public_key=public_key,
            extensions=extensions,
        )
    except _PYCA_ERRORS:
        return None
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise AttestationMalformedError("leaf public key must be EC or RSA")
    return leaf


def _leaf_from_pyasn1(der: bytes) -> LeafCertificate:
    """The leaf as pyasn1's RFC 5280 schema reads it: the ``leaf_not_der`` quirk path."""
    tag, header, length = _der_header(der, 0)
    if tag != 0x30 or header + length != len(der):
        raise AttestationMalformedError("leaf certificate framing is invalid")
    tbs_tag, tbs_header, tbs_length = _der_header(der, header)
    if tbs_tag != 0x30:
        raise AttestationMalformedError("leaf tbsCertificate is not a SEQUENCE")
    tbs_der = der[header : header + tbs_header + tbs_length]
    try:
        cert, rest = decoder.decode(der, asn1Spec=rfc5280.Certificate())
        tbs = cert["tbsCertificate"]
        version = int(tbs["version"])
        reencoded_tbs = encoder.encode(tbs)
        outer_alg = cert["signatureAlgorithm"]
        inner_alg = tbs["signature"]
        oid = str(outer_alg["algorithm"])
        params = outer_alg["parameters"]
        params_der = bytes(params) if params.isValue else None
        same_alg = encoder.encode(outer_alg) == encoder.encode(inner_alg)
        issuer_der = encoder.encode(tbs["issuer"])
        validity = tbs["validity"]
        not_before = validity["notBefore"].getComponent().asDateTime
        not_after = validity["notAfter"].getComponent().asDateTime
        serial = int(tbs["serialNumber"])
        spki_der = encoder.encode(tbs["subjectPublicKeyInfo"])
        signature = cert["signature"].asOctets()
        extensions: dict[str, tuple[bool, bytes]] = {}
        for ext in tbs["extensions"] if tbs["extensions"].isValue else ():
            ext_oid = str(ext["extnID"])
            if ext_oid in extensions:
                raise AttestationMalformedError(f"leaf repeats extension {ext_oid}")
            extensions[ext_oid] = (bool(ext["critical"]), bytes(ext["extnValue"]))
    except (PyAsn1Error, ValueError, TypeError, IndexError, OverflowError, RecursionError):
        raise AttestationMalformedError("leaf certificate is not X.509") from None
    if version != 2:
        raise AttestationMalformedError("leaf certificate is not X.509 v3")
    if rest or reencoded_tbs != tbs_der:
        raise AttestationMalformedError("leaf tbsCertificate is not DER-encoded")
    if not same_alg:
        raise AttestationMalformedError("leaf signature algorithms disagree")
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise AttestationMalformedError("leaf validity has no time zone")
    try:
        public_key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm):
        raise AttestationMalformedError("leaf public key is not supported") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise AttestationMalformedError("leaf public key must be EC or RSA")
    return LeafCertificate(
        der=der,
        pyca=None,
        tbs_der=tbs_der,
        signature_oid=oid,
        signature_params=params_der,
        signature=signature,
        serial_number=serial,
        issuer_der=issuer_der,
        not_before=not_before,
        not_after=not_after,
        public_key=public_key,
        extensions=extensions,
    )


def _verify_link_signature(leaf: LeafCertificate, issuer_key: CertificatePublicKeyTypes) -> None:
    """Check the leaf's signature with ``issuer_key`` under the algorithm allow-list."""
    oid = leaf.signature_oid
    if oid in _RSA_SIGNATURES:
        if leaf.signature_params not in (None, _DER_NULL):
            raise AttestationChainError("leaf RSA signature parameters are invalid")
        if not isinstance(issuer_key, rsa.RSAPublicKey) or issuer_key.key_size < MIN_RSA_BITS:
            raise AttestationChainError("leaf issuer key does not fit the signature algorithm")
        try:
            issuer_key.verify(
                leaf.signature, leaf.tbs_der, padding.PKCS1v15(), _RSA_SIGNATURES[oid]
            )
        except InvalidSignature:
            raise AttestationChainError("leaf signature does not verify") from None
        return
    if oid in _ECDSA_SIGNATURES:
        # RFC 5758 says absent; NULL is the StrongBox quirk, and carries no meaning.
        if leaf.signature_params not in (None, _DER_NULL):
            raise AttestationChainError("leaf ECDSA signature parameters are invalid")
        if not isinstance(issuer_key, ec.EllipticCurvePublicKey) or not isinstance(
            issuer_key.curve, _EC_CURVES
        ):
            raise AttestationChainError("leaf issuer key does not fit the signature algorithm")
        try:
            issuer_key.verify(leaf.signature, leaf.tbs_der, ec.ECDSA(_ECDSA_SIGNATURES[oid]))
        except InvalidSignature:
            raise AttestationChainError("leaf signature does not verify") from None
        return
    raise AttestationChainError(f"leaf signature algorithm {oid[:64]} is not accepted")


# --- the verifier ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain that verified to a pinned root.

    Attributes:
        leaf: The attestation certificate.
        certificates: The presented certificates above the leaf, root last.
        anchor: The pinned root certificate the chain is anchored at.
        method: ``"strict"`` or ``"per-link-leaf"`` (see the module docstring).
        quirks: The :class:`ChainQuirk` values that made the per-link check necessary.
    """

    leaf: LeafCertificate
    certificates: tuple[x509.Certificate, ...]
    anchor: x509.Certificate
    method: str
    quirks: tuple[str, ...]

    @property
    def serial_numbers(self) -> tuple[int, ...]:
        """Serial numbers of every presented certificate, leaf first."""
        return (self.leaf.serial_number, *(c.serial_number for c in self.certificates))


def _load_upper(der: bytes, index: int) -> x509.Certificate:
    """Load a CA certificate with pyca and touch every field used later.

    pyca parses names, keys and extensions lazily; reading them here turns a malformed
    field into :class:`AttestationMalformedError` instead of a ``ValueError`` deep inside
    the checks.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.subject.public_bytes()
        cert.issuer.public_bytes()
        cert.public_key()
        _ = cert.extensions, cert.serial_number
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc
    except _PYCA_ERRORS:
        raise AttestationMalformedError(f"certificate {index} is not valid DER X.509") from None
    return cert


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _valid_at(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime) -> bool:
    return not_before <= now <= not_after


class ChainVerifier:
    """Verifies attestation chains against a fixed set of pinned roots."""

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        *,
        allowed_quirks: Iterable[ChainQuirk | str] = tuple(ChainQuirk),
    ) -> None:
        """Pin ``roots`` (self-signed CA certificates).

        Args:
            roots: The trust anchors; a chain must end at one of their keys.
            allowed_quirks: The leaf quirks that may switch to the per-link check; pass
                ``()`` to require the strict verifier for every chain.

        Raises:
            AttestationConfigError: No root, or a root that is not a self-signed CA.
        """
        if not roots:
            raise AttestationConfigError("no Android attestation root configured")
        self._roots: dict[bytes, x509.Certificate] = {}
        for root in roots:
            try:
                root.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                raise AttestationConfigError(
                    f"Android root {root.subject.rfc4514_string()[:80]!r} is not self-signed"
                ) from None
            if not _is_ca(root):
                raise AttestationConfigError(
                    f"Android root {root.subject.rfc4514_string()[:80]!r} is not a CA"
                )
            self._roots[_spki(root)] = root
        self._store = Store(list(self._roots.values()))
        self._allowed_quirks = frozenset(ChainQuirk(q) for q in allowed_quirks)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The pinned roots."""
        return tuple(self._roots.values())

    def verify(self, certificates: Sequence[bytes], now: dt.datetime) -> VerifiedChain:
        """Verify a chain (leaf first, root last, DER) at ``now`` (timezone-aware).

        Raises:
            AttestationMalformedError: A certificate does not parse.
            AttestationRootError: The chain does not end at a pinned root.
            AttestationExpiredError: A certificate is outside its validity at ``now``.
            AttestationChainError: A signature, CA constraint or path check failed.
        """
        if not MIN_CHAIN_CERTIFICATES <= len(certificates) <= MAX_CHAIN_CERTIFICATES:
            raise AttestationMalformedError(
                f"chain must have {MIN_CHAIN_CERTIFICATES}..{MAX_CHAIN_CERTIFICATES} "
                f"certificates, got {len(certificates)}"
            )
        leaf = _parse_leaf(certificates[0])
        uppers = [_load_upper(der, index) for index, der in enumerate(certificates[1:], start=1)]
        quirks: list[ChainQuirk] = []
        if leaf.pyca is None:
            quirks.append(ChainQuirk.LEAF_NOT_DER)
        if leaf.issuer_der != uppers[0].subject.public_bytes():
            quirks.append(ChainQuirk.LEAF_ISSUER_MISMATCH)

        anchor = self._anchor(uppers[-1])
        self._check_structure(leaf, uppers)
        self._check_validity(leaf, uppers, anchor, now)

        if not quirks:
            assert leaf.pyca is not None
            self._strict(leaf.pyca, uppers, anchor, now)
            return VerifiedChain(leaf, tuple(uppers), anchor, "strict", ())
        refused = [q for q in quirks if q not in self._allowed_quirks]
        if refused:
            raise AttestationChainError(f"leaf quirk {refused[0].value} is not allowed")
        issuer = uppers[0]
        if len(uppers) == 1:
            # The leaf hangs directly off the root: its key is the pinned one.
            _verify_link_signature(leaf, anchor.public_key())
        else:
            if not _is_ca(issuer):
                raise AttestationChainError("certificate 1 is not a CA")
            _verify_link_signature(leaf, issuer.public_key())
            self._strict(issuer, uppers[1:], anchor, now)
        return VerifiedChain(
            leaf, tuple(uppers), anchor, "per-link-leaf", tuple(q.value for q in quirks)
        )

    def _anchor(self, presented_root: x509.Certificate) -> x509.Certificate:
        anchor = self._roots.get(_spki(presented_root))
        if anchor is None:
            raise AttestationRootError("chain does not end at a pinned Android root")
        if presented_root.subject != presented_root.issuer or (
            presented_root.subject != anchor.subject
        ):
            raise AttestationRootError("chain root does not match the pinned root's name")
        return anchor

    @staticmethod
    def _check_structure(leaf: LeafCertificate, uppers: Sequence[x509.Certificate]) -> None:
        for oid, (critical, _value) in leaf.extensions.items():
            if critical and oid not in _LEAF_CRITICAL_OK:
                raise AttestationChainError(f"leaf has unknown critical extension {oid[:64]}")
        key_description = x509.ObjectIdentifier(KEY_DESCRIPTION_OID)
        for index, cert in enumerate(uppers, start=1):
            try:
                cert.extensions.get_extension_for_oid(key_description)
            except x509.ExtensionNotFound:
                continue
            except _PYCA_ERRORS:
                raise AttestationMalformedError(
                    f"certificate {index} has malformed extensions"
                ) from None
            raise AttestationChainError(
                f"certificate {index} carries a KeyDescription: only the leaf may"
            )

    @staticmethod
    def _check_validity(
        leaf: LeafCertificate,
        uppers: Sequence[x509.Certificate],
        anchor: x509.Certificate,
        now: dt.datetime,
    ) -> None:
        if not _valid_at(leaf.not_before, leaf.not_after, now):
            raise AttestationExpiredError("certificate 0 (leaf) is not valid at this time")
        # The presented root is replaced by the pinned anchor, whose validity counts.
        for index, cert in enumerate(uppers[:-1], start=1):
            if not _valid_at(cert.not_valid_before_utc, cert.not_valid_after_utc, now):
                raise AttestationExpiredError(f"certificate {index} is not valid at this time")
        if not _valid_at(anchor.not_valid_before_utc, anchor.not_valid_after_utc, now):
            raise AttestationExpiredError("the pinned root is not valid at this time")

    def _strict(
        self,
        end: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        anchor: x509.Certificate,
        now: dt.datetime,
    ) -> None:
        """Run pyca's strict verifier from ``end``; every presented cert must be used."""
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .max_chain_depth(MAX_CHAIN_CERTIFICATES)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        # The presented root (last) is not offered: the path must reach the pinned anchor.
        offered = list(intermediates[:-1])
        try:
            built = verifier.verify(end, offered).chain
        except (VerificationError, *_PYCA_ERRORS):
            raise AttestationChainError("chain does not verify to a pinned root") from None
        expected = [end, *offered, anchor]
        if len(built) != len(expected) or any(a != b for a, b in zip(built, expected, strict=True)):
            raise AttestationChainError("chain does not use every presented certificate in order")
