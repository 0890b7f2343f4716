"""The Android Key Attestation record (KeyDescription) and its pyasn1 schema.

Keystore and KeyMint put a ``KeyDescription`` (OID 1.3.6.1.4.1.11129.2.1.17) in the
leaf certificate of every attestation chain. The schema, from the AOSP "Key and ID
attestation" page, is stable across attestation versions 1, 2, 3, 4, 100, 200, 300 and
400 in its eight top-level fields::

    KeyDescription ::= SEQUENCE {
        attestationVersion         INTEGER,
        attestationSecurityLevel   SecurityLevel,      -- ENUMERATED
        keyMintVersion             INTEGER,            -- keymasterVersion before 100
        keyMintSecurityLevel       SecurityLevel,
        attestationChallenge       OCTET STRING,
        uniqueId                   OCTET STRING,
        softwareEnforced           AuthorizationList,
        hardwareEnforced           AuthorizationList,  -- teeEnforced before 100
    }

Each ``AuthorizationList`` is a SEQUENCE of optional fields with EXPLICIT context tags
that grows with every version. This parser is tolerant where versions differ and strict
where ambiguity could matter:

* the eight top-level fields are decoded with a fixed pyasn1 schema, and the record
  must re-encode to exactly the bytes given (DER, no trailing data);
* each authorization list is read element by element: tags modelseal knows are decoded
  with their pyasn1 type, unknown tags (new versions) are skipped and reported;
* a tag repeated with a different value is refused (two readers could disagree on which
  one counts); a byte-identical repeat and tags out of ascending order, both seen on
  shipping devices, are tolerated and reported.

Every failure raises :class:`~modelseal.attestation.base.AttestationMalformedError`
naming the field; nothing else escapes :func:`parse_key_description` on any input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, tag, univ

from modelseal.attestation.base import AttestationMalformedError

__all__ = [
    "KEY_DESCRIPTION_OID",
    "Algorithm",
    "ApplicationId",
    "AuthorizationList",
    "ECCurve",
    "KeyDescription",
    "KeyOrigin",
    "KeyPurpose",
    "PackageInfo",
    "RootOfTrust",
    "SecurityLevel",
    "VerifiedBootState",
    "parse_application_id",
    "parse_key_description",
]

KEY_DESCRIPTION_OID = "1.3.6.1.4.1.11129.2.1.17"
MAX_KEY_DESCRIPTION_BYTES = 64 * 1024
MAX_TAG_NUMBER = 1 << 28


class SecurityLevel(enum.IntEnum):
    """``SecurityLevel`` of the KeyDescription."""

    SOFTWARE = 0
    TRUSTED_ENVIRONMENT = 1
    STRONGBOX = 2

    @property
    def label(self) -> str:
        """The AttestationResult level: ``software``, ``tee`` or ``strongbox``."""
        return _LEVEL_LABELS[self]


_LEVEL_LABELS = {
    SecurityLevel.SOFTWARE: "software",
    SecurityLevel.TRUSTED_ENVIRONMENT: "tee",
    SecurityLevel.STRONGBOX: "strongbox",
}


class VerifiedBootState(enum.IntEnum):
    """``VerifiedBootState`` of the RootOfTrust."""

    VERIFIED = 0
    SELF_SIGNED = 1
    UNVERIFIED = 2
    FAILED = 3


class KeyPurpose(enum.IntEnum):
    """KeyMint ``KeyPurpose`` values (tag ``purpose`` [1])."""

    ENCRYPT = 0
    DECRYPT = 1
    SIGN = 2
    VERIFY = 3
    WRAP_KEY = 5
    AGREE_KEY = 6
    ATTEST_KEY = 7


class Algorithm(enum.IntEnum):
    """KeyMint ``Algorithm`` values (tag ``algorithm`` [2])."""

    RSA = 1
    EC = 3
    AES = 32
    TRIPLE_DES = 33
    HMAC = 128


class ECCurve(enum.IntEnum):
    """KeyMint ``EcCurve`` values (tag ``ecCurve`` [10])."""

    P_224 = 0
    P_256 = 1
    P_384 = 2
    P_521 = 3
    CURVE_25519 = 4


class KeyOrigin(enum.IntEnum):
    """KeyMint ``KeyOrigin`` values (tag ``origin`` [702])."""

    GENERATED = 0
    DERIVED = 1
    IMPORTED = 2
    RESERVED = 3
    SECURELY_IMPORTED = 4


# --- the pyasn1 schema -------------------------------------------------------------------------


class _AuthorizationListElements(univ.SequenceOf):  # type: ignore[misc]
    """An AuthorizationList read as its raw elements (each one full TLV)."""

    componentType = univ.Any()  # noqa: N815 (pyasn1 API)


class _KeyDescriptionSchema(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(  # noqa: N815 (pyasn1 API)
        namedtype.NamedType("attestationVersion", univ.Integer()),
        namedtype.NamedType("attestationSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("keyMintVersion", univ.Integer()),
        namedtype.NamedType("keyMintSecurityLevel", univ.Enumerated()),
        namedtype.NamedType("attestationChallenge", univ.OctetString()),
        namedtype.NamedType("uniqueId", univ.OctetString()),
        namedtype.NamedType("softwareEnforced", _AuthorizationListElements()),
        namedtype.NamedType("hardwareEnforced", _AuthorizationListElements()),
    )


class _RootOfTrustSchema(univ.Sequence):  # type: ignore[misc]
    # verifiedBootHash arrived with attestation version 3.
    componentType = namedtype.NamedTypes(  # noqa: N815 (pyasn1 API)
        namedtype.NamedType("verifiedBootKey", univ.OctetString()),
        namedtype.NamedType("deviceLocked", univ.Boolean()),
        namedtype.NamedType("verifiedBootState", univ.Enumerated()),
        namedtype.OptionalNamedType("verifiedBootHash", univ.OctetString()),
    )


class _PackageInfoSchema(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(  # noqa: N815 (pyasn1 API)
        namedtype.NamedType("packageName", univ.OctetString()),
        namedtype.NamedType("version", univ.Integer()),
    )


class _ApplicationIdSchema(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(  # noqa: N815 (pyasn1 API)
        namedtype.NamedType("packageInfos", univ.SetOf(componentType=_PackageInfoSchema())),
        namedtype.NamedType("signatureDigests", univ.SetOf(componentType=univ.OctetString())),
    )


def _int_set() -> Any:
    return univ.SetOf(componentType=univ.Integer())


# The AuthorizationList tags this module decodes, with their inner types.
_TAG_TYPES: dict[int, Any] = {
    1: _int_set(),  # purpose
    2: univ.Integer(),  # algorithm
    3: univ.Integer(),  # keySize
    5: _int_set(),  # digest
    6: _int_set(),  # padding
    10: univ.Integer(),  # ecCurve
    200: univ.Integer(),  # rsaPublicExponent
    503: univ.Null(),  # noAuthRequired
    701: univ.Integer(),  # creationDateTime
    702: univ.Integer(),  # origin
    704: _RootOfTrustSchema(),  # rootOfTrust
    705: univ.Integer(),  # osVersion
    706: univ.Integer(),  # osPatchLevel
    709: univ.OctetString(),  # attestationApplicationId (DER inside)
    718: univ.Integer(),  # vendorPatchLevel
    719: univ.Integer(),  # bootPatchLevel
    720: univ.Null(),  # deviceUniqueAttestation
    724: univ.OctetString(),  # moduleHash
}

_TAG_NAMES = {
    1: "purpose",
    2: "algorithm",
    3: "keySize",
    5: "digest",
    6: "padding",
    10: "ecCurve",
    200: "rsaPublicExponent",
    503: "noAuthRequired",
    701: "creationDateTime",
    702: "origin",
    704: "rootOfTrust",
    705: "osVersion",
    706: "osPatchLevel",
    709: "attestationApplicationId",
    718: "vendorPatchLevel",
    719: "bootPatchLevel",
    720: "deviceUniqueAttestation",
    724: "moduleHash",
}


# --- parsed values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootOfTrust:
    """The verified-boot state the bootloader reported to the TEE."""

    verified_boot_key: bytes
    device_locked: bool
    verified_boot_state: int
    verified_boot_hash: bytes | None


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """One package of an ``AttestationApplicationId`` (several for a shared UID)."""

    name: str
    version: int


@dataclass(frozen=True, slots=True)
class ApplicationId:
    """``AttestationApplicationId``: the packages of the calling UID and their signers.

    Attributes:
        packages: Package names and version codes, in encoded order.
        signature_digests: SHA-256 digests of the signing certificates, in encoded order.
    """

    packages: tuple[PackageInfo, ...]
    signature_digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AuthorizationList:
    """The fields of one AuthorizationList that modelseal reads (``None``: absent).

    Attributes:
        unknown_tags: Tag numbers present but not decoded here (newer versions).
        repeated_tags: Tag numbers that appeared more than once with identical bytes.
        tags_ordered: Whether the tags appeared in ascending order, as DER requires.
    """

    purposes: frozenset[int] | None = None
    algorithm: int | None = None
    key_size: int | None = None
    digests: frozenset[int] | None = None
    paddings: frozenset[int] | None = None
    ec_curve: int | None = None
    rsa_public_exponent: int | None = None
    no_auth_required: bool = False
    creation_datetime_ms: int | None = None
    origin: int | None = None
    root_of_trust: RootOfTrust | None = None
    os_version: int | None = None
    os_patch_level: int | None = None
    application_id: ApplicationId | None = None
    vendor_patch_level: int | None = None
    boot_patch_level: int | None = None
    device_unique_attestation: bool = False
    module_hash: bytes | None = None
    unknown_tags: tuple[int, ...] = ()
    repeated_tags: tuple[int, ...] = ()
    tags_ordered: bool = True


@dataclass(frozen=True, slots=True)
class KeyDescription:
    """A parsed KeyDescription (see the module docstring for the schema)."""

    attestation_version: int
    attestation_security_level: int
    keymint_version: int
    keymint_security_level: int
    attestation_challenge: bytes
    unique_id: bytes
    software_enforced: AuthorizationList
    hardware_enforced: AuthorizationList


# --- parsing -----------------------------------------------------------------------------------


def parse_key_description(der: bytes) -> KeyDescription:
    """Parse the DER value of the KeyDescription extension.

    Raises:
        AttestationMalformedError: The bytes are not a DER KeyDescription; the message
            names the field.
    """
    if not isinstance(der, bytes | bytearray | memoryview):
        raise AttestationMalformedError("KeyDescription must be bytes")
    der = bytes(der)
    if not der or len(der) > MAX_KEY_DESCRIPTION_BYTES:
        raise AttestationMalformedError(
            f"KeyDescription must be 1..{MAX_KEY_DESCRIPTION_BYTES} bytes, got {len(der)}"
        )
    record = _decode_exact(der, _KeyDescriptionSchema(), "KeyDescription")
    # pyasn1's DER decoder accepts some BER; a byte-exact re-encoding proves DER.
    try:
        canonical = encoder.encode(record) == der
    except PyAsn1Error:
        canonical = False
    if not canonical:
        raise AttestationMalformedError("KeyDescription is not DER-encoded")
    return KeyDescription(
        attestation_version=int(record["attestationVersion"]),
        attestation_security_level=int(record["attestationSecurityLevel"]),
        keymint_version=int(record["keyMintVersion"]),
        keymint_security_level=int(record["keyMintSecurityLevel"]),
        attestation_challenge=bytes(record["attestationChallenge"]),
        unique_id=bytes(record["uniqueId"]),
        software_enforced=_authorization_list(record["softwareEnforced"], "softwareEnforced"),
        hardware_enforced=_authorization_list(record["hardwareEnforced"], "hardwareEnforced"),
    )


def parse_application_id(der: bytes) -> ApplicationId:
    """Parse the DER ``AttestationApplicationId`` carried inside tag [709].

    Raises:
        AttestationMalformedError: The bytes are not a DER AttestationApplicationId.
    """
    value = _decode_exact(bytes(der), _ApplicationIdSchema(), "attestationApplicationId")
    packages = []
    for info in value["packageInfos"]:
        try:
            name = bytes(info["packageName"]).decode("utf-8")
        except UnicodeDecodeError:
            raise AttestationMalformedError(
                "attestationApplicationId: package name is not UTF-8"
            ) from None
        packages.append(PackageInfo(name=name, version=int(info["version"])))
    digests = tuple(bytes(d) for d in value["signatureDigests"])
    return ApplicationId(packages=tuple(packages), signature_digests=digests)


def _decode_exact(der: bytes, spec: Any, what: str) -> Any:
    """Decode ``der`` against ``spec`` with nothing left over."""
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
    except PyAsn1Error:
        raise AttestationMalformedError(f"{what} does not decode as DER") from None
    except (ValueError, TypeError, IndexError, OverflowError, RecursionError):
        # pyasn1 lets a few built-in errors escape on hostile input; same meaning.
        raise AttestationMalformedError(f"{what} does not decode as DER") from None
    if rest:
        raise AttestationMalformedError(f"{what} has {len(rest)} trailing bytes")
    if not value.isValue:
        raise AttestationMalformedError(f"{what} is incomplete")
    return value


def _context_tag_number(tlv: bytes, where: str) -> int:
    """Return the number of the context-specific constructed tag that starts ``tlv``."""
    first = tlv[0]
    if first & 0xE0 != 0xA0:
        raise AttestationMalformedError(f"{where}: element is not an EXPLICIT context tag")
    number = first & 0x1F
    if number != 0x1F:
        return number
    number = 0
    for index in range(1, min(len(tlv), 6)):
        octet = tlv[index]
        if index == 1 and octet == 0x80:
            raise AttestationMalformedError(f"{where}: tag number is not minimally encoded")
        number = (number << 7) | (octet & 0x7F)
        if not octet & 0x80:
            if number < 0x1F:
                raise AttestationMalformedError(f"{where}: tag number is not minimally encoded")
            return number
    raise AttestationMalformedError(f"{where}: tag number is too long")


def _authorization_list(elements: Any, where: str) -> AuthorizationList:
    seen: dict[int, bytes] = {}
    values: dict[int, Any] = {}
    unknown: list[int] = []
    repeated: list[int] = []
    ordered = True
    previous = -1
    for element in elements:
        tlv = bytes(element)
        number = _context_tag_number(tlv, where)
        if number < previous:
            ordered = False
        previous = number
        if number in seen:
            if seen[number] != tlv:
                raise AttestationMalformedError(
                    f"{where}: tag [{number}] appears twice with different values"
                )
            repeated.append(number)
            continue
        seen[number] = tlv
        inner = _TAG_TYPES.get(number)
        if inner is None:
            unknown.append(number)
            continue
        spec = inner.subtype(
            explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number)
        )
        values[number] = _decode_exact(tlv, spec, f"{where}.{_TAG_NAMES[number]}")
    return _build_list(values, where, tuple(unknown), tuple(repeated), ordered)


def _build_list(
    values: dict[int, Any],
    where: str,
    unknown: tuple[int, ...],
    repeated: tuple[int, ...],
    ordered: bool,
) -> AuthorizationList:
    def integer(number: int) -> int | None:
        return int(values[number]) if number in values else None

    def int_set(number: int) -> frozenset[int] | None:
        if number not in values:
            return None
        return frozenset(int(item) for item in values[number])

    root: RootOfTrust | None = None
    if 704 in values:
        rot = values[704]
        boot_hash = rot["verifiedBootHash"]
        root = RootOfTrust(
            verified_boot_key=bytes(rot["verifiedBootKey"]),
            device_locked=bool(rot["deviceLocked"]),
            verified_boot_state=int(rot["verifiedBootState"]),
            verified_boot_hash=bytes(boot_hash) if boot_hash.isValue else None,
        )
    app_id: ApplicationId | None = None
    if 709 in values:
        app_id = parse_application_id(bytes(values[709]))
    return AuthorizationList(
        purposes=int_set(1),
        algorithm=integer(2),
        key_size=integer(3),
        digests=int_set(5),
        paddings=int_set(6),
        ec_curve=integer(10),
        rsa_public_exponent=integer(200),
        no_auth_required=503 in values,
        creation_datetime_ms=integer(701),
        origin=integer(702),
        root_of_trust=root,
        os_version=integer(705),
        os_patch_level=integer(706),
        application_id=app_id,
        vendor_patch_level=integer(718),
        boot_patch_level=integer(719),
        device_unique_attestation=720 in values,
        module_hash=bytes(values[724]) if 724 in values else None,
        unknown_tags=unknown,
        repeated_tags=repeated,
        tags_ordered=ordered,
    )
