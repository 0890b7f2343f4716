"""The container header (docs/FORMAT.md §4): strict I-JSON parsing, validation and encoding.

Parsing refuses, before any cryptographic call: invalid UTF-8, a byte-order
mark, duplicate member names at any depth, ``NaN``/``Infinity``, integers
outside the I-JSON safe range, lone surrogates, nesting deeper than
:data:`MAX_DEPTH`, unknown top-level members, missing or mistyped members, and
integers outside their stated range.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from modelseal._ijson import MAX_SAFE_INTEGER, decode_object, json_type
from modelseal.errors import HeaderError, UnsupportedAlgorithmError, UnsupportedSuiteError
from modelseal.keys.issuer import SignatureAlgorithm
from modelseal.keys.kem import KEM

__all__ = [
    "MAX_DEPTH",
    "MAX_PLAINTEXT_BYTES",
    "Claims",
    "Header",
    "RType",
    "SignatureRef",
    "parse_header",
]

KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
# C2SP allows at most 2^38 chunks; with a short final chunk that is 2^52 - 1 bytes.
MAX_PLAINTEXT_BYTES = (1 << 52) - 1
MAX_DEPTH = 16
MAX_STRING_CLAIM_CHARS = 255
RCPT_MAX_CHARS = 64
_KID = re.compile(r"[0-9a-f]{32}")
_TOP_LEVEL = frozenset({"rtype", "suite", "rcpt", "sig", "len", "ctype", "claims"})
REQUIRED_STRING_CLAIMS = ("iss", "sub", "aud", "mid", "jti")


class RType(enum.StrEnum):
    """How the DEK is wrapped (FORMAT §4)."""

    HPKE = "hpke"
    KEK = "kek"


@dataclass(frozen=True, slots=True)
class SignatureRef:
    """The header's ``sig`` member: which issuer key signed the package."""

    alg: SignatureAlgorithm
    kid: str


@dataclass(frozen=True, slots=True)
class Claims:
    """Issuance claims (FORMAT §3). ``extra`` holds members unknown to FORMAT v1."""

    iss: str
    sub: str
    aud: str
    mid: str
    jti: str
    iat: int
    exp: int
    lexp: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in REQUIRED_STRING_CLAIMS:
            _check_string(getattr(self, name), f"claims.{name}", max_chars=MAX_STRING_CLAIM_CHARS)
        for name in ("iat", "exp"):
            _check_int(getattr(self, name), f"claims.{name}", 0, MAX_SAFE_INTEGER)
        if self.lexp is not None:
            _check_int(self.lexp, "claims.lexp", 0, MAX_SAFE_INTEGER)
        if not self.iat < self.exp:
            raise HeaderError(
                f"claims.iat must be less than claims.exp, got {self.iat} >= {self.exp}"
            )
        for name in self.extra:
            if name in _KNOWN_CLAIMS:
                raise HeaderError(f"claims.extra must not redefine {name!r}")
        # Refuse, at sealing time, any extra value that a reader would refuse, so that a
        # sealer can never produce a package nobody can open.
        try:
            encoded = json.dumps(dict(self.extra), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise HeaderError(f"claims.extra is not valid I-JSON: {exc}") from None
        if _decode_json(encoded.encode("utf-8", "surrogatepass"), depth=1) != dict(self.extra):
            raise HeaderError("claims.extra does not survive a JSON round trip")
        # Freeze a private copy so callers cannot mutate signed content afterwards.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the header."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _KNOWN_CLAIMS}
        if self.lexp is None:
            del out["lexp"]
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: object) -> Claims:
        """Validate a parsed ``claims`` object."""
        if not isinstance(obj, dict):
            raise HeaderError(f"claims must be an object, got {json_type(obj)}")
        missing = [name for name in (*REQUIRED_STRING_CLAIMS, "iat", "exp") if name not in obj]
        if missing:
            raise HeaderError(f"claims is missing required member {missing[0]!r}")
        extra = {k: v for k, v in obj.items() if k not in _KNOWN_CLAIMS}
        return cls(
            iss=obj["iss"],
            sub=obj["sub"],
            aud=obj["aud"],
            mid=obj["mid"],
            jti=obj["jti"],
            iat=obj["iat"],
            exp=obj["exp"],
            lexp=_check_int(obj["lexp"], "claims.lexp", 0, MAX_SAFE_INTEGER)
            if "lexp" in obj
            else None,
            extra=extra,
        )


_KNOWN_CLAIMS = ("iss", "sub", "aud", "mid", "jti", "iat", "exp", "lexp")


@dataclass(frozen=True, slots=True)
class Header:
    """A validated FORMAT v1 header.

    Attributes:
        rtype: ``hpke`` (issued) or ``kek`` (device at rest).
        rcpt: Recipient key id (hpke) or KEK label (kek).
        length: Total plaintext length (the ``len`` member).
        ctype: Media type of the plaintext.
        kem: The HPKE KEM (hpke only).
        sig: The signing issuer key (hpke only).
        claims: Issuance claims (required for hpke, optional for kek).
    """

    rtype: RType
    rcpt: str
    length: int
    ctype: str
    kem: KEM | None = None
    sig: SignatureRef | None = None
    claims: Claims | None = None

    def __post_init__(self) -> None:
        _check_string(self.rcpt, "rcpt", max_chars=RCPT_MAX_CHARS)
        _check_int(self.length, "len", 0, MAX_PLAINTEXT_BYTES)
        _check_string(self.ctype, "ctype", max_chars=255)
        if self.rtype is RType.HPKE:
            if self.kem is None or self.sig is None or self.claims is None:
                raise HeaderError("an hpke header requires suite, sig and claims")
        elif self.kem is not None or self.sig is not None:
            raise HeaderError("a kek header must not carry suite or sig")

    def to_json(self) -> dict[str, Any]:
        """The header as a JSON-ready dict, members in FORMAT §3 order."""
        out: dict[str, Any] = {"rtype": str(self.rtype)}
        if self.kem is not None:
            out["suite"] = {"kem": int(self.kem), "kdf": KDF_HKDF_SHA256, "aead": AEAD_AES_256_GCM}
        out["rcpt"] = self.rcpt
        if self.sig is not None:
            out["sig"] = {"alg": str(self.sig.alg), "kid": self.sig.kid}
        out["len"] = self.length
        out["ctype"] = self.ctype
        if self.claims is not None:
            out["claims"] = self.claims.to_json()
        return out

    def encode(self) -> bytes:
        """Compact UTF-8 JSON; the exact bytes are what gets signed."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def _check_string(value: object, name: str, *, max_chars: int) -> str:
    if not isinstance(value, str):
        raise HeaderError(f"{name} must be a string, got {json_type(value)}")
    if not 1 <= len(value) <= max_chars:
        raise HeaderError(f"{name} must be 1..{max_chars} characters, got {len(value)}")
    return value


def _check_int(value: object, name: str, low: int, high: int) -> int:
    # bool is a subclass of int in Python but a distinct type in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeaderError(f"{name} must be an integer, got {json_type(value)}")
    if not low <= value <= high:
        raise HeaderError(f"{name} must be {low}..{high}, got {value}")
    return value


def _decode_json(data: bytes, *, depth: int = 0) -> dict[str, Any]:
    return decode_object(data, what="header", error=HeaderError, max_depth=MAX_DEPTH, depth=depth)


def _parse_suite(obj: object) -> KEM:
    if not isinstance(obj, dict):
        raise HeaderError(f"suite must be an object, got {json_type(obj)}")
    if set(obj) != {"kem", "kdf", "aead"}:
        raise HeaderError(f"suite must have exactly kem, kdf, aead; got {sorted(obj)}")
    kem, kdf, aead = (_check_int(obj[n], f"suite.{n}", 0, 0xFFFF) for n in ("kem", "kdf", "aead"))
    if kdf != KDF_HKDF_SHA256 or aead != AEAD_AES_256_GCM or kem not in KEM._value2member_map_:
        raise UnsupportedSuiteError(f"unsupported HPKE suite kem={kem} kdf={kdf} aead={aead}")
    return KEM(kem)


def _parse_sig(obj: object) -> SignatureRef:
    if not isinstance(obj, dict):
        raise HeaderError(f"sig must be an object, got {json_type(obj)}")
    if set(obj) != {"alg", "kid"}:
        raise HeaderError(f"sig must have exactly alg and kid; got {sorted(obj)}")
    alg = _check_string(obj["alg"], "sig.alg", max_chars=64)
    kid = _check_string(obj["kid"], "sig.kid", max_chars=64)
    if not _KID.fullmatch(kid):
        raise HeaderError("sig.kid must be 32 lowercase hex characters")
    try:
        return SignatureRef(SignatureAlgorithm(alg), kid)
    except ValueError:
        raise UnsupportedAlgorithmError(f"unsupported signature algorithm {alg!r}") from None


def parse_header(data: bytes) -> Header:
    """Parse and validate header bytes.

    Raises:
        HeaderError: The header is not valid (docs/FORMAT.md §4).
        UnsupportedSuiteError: The HPKE suite is not one FORMAT v1 accepts.
        UnsupportedAlgorithmError: The signature algorithm is not Ed25519 or ES256.
    """
    obj = _decode_json(data)
    unknown = sorted(set(obj) - _TOP_LEVEL)
    if unknown:
        raise HeaderError(f"unknown header member {unknown[0]!r}")
    for name in ("rtype", "rcpt", "len", "ctype"):
        if name not in obj:
            raise HeaderError(f"header is missing required member {name!r}")
    rtype_text = _check_string(obj["rtype"], "rtype", max_chars=8)
    try:
        rtype = RType(rtype_text)
    except ValueError:
        raise HeaderError(f"rtype must be 'hpke' or 'kek', got {rtype_text!r}") from None
    if rtype is RType.HPKE:
        for name in ("suite", "sig", "claims"):
            if name not in obj:
                raise HeaderError(f"an hpke header is missing required member {name!r}")
        kem: KEM | None = _parse_suite(obj["suite"])
        sig: SignatureRef | None = _parse_sig(obj["sig"])
        if not _KID.fullmatch(_check_string(obj["rcpt"], "rcpt", max_chars=RCPT_MAX_CHARS)):
            raise HeaderError("rcpt of an hpke header must be 32 lowercase hex characters")
    else:
        for name in ("suite", "sig"):
            if name in obj:
                raise HeaderError(f"a kek header must not have member {name!r}")
        kem, sig = None, None
    claims = Claims.from_json(obj["claims"]) if "claims" in obj else None
    return Header(
        rtype=rtype,
        rcpt=obj["rcpt"],
        length=obj["len"],
        ctype=obj["ctype"],
        kem=kem,
        sig=sig,
        claims=claims,
    )
