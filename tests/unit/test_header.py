"""The header (FORMAT §3) is the only thing wrong: every field, at and past its limits.

Each case writes a header by hand (as JSON text, so that invalid I-JSON can be written too) and
builds an otherwise correct package around it with the container's own helpers: the key block
is sealed to the device over that exact header, the issuer signs it, and the body is encrypted
under the resulting context. A reader that rejects such a package can only be objecting to the
header. The unmodified header opens (``test_hand_built_package_with_the_plain_header_opens``),
which shows the builder is sound.

Rejections must come early. Spies on the signature check, the HPKE open, the KEK unwrap and the
body cipher (each still runs the real code) show how far the reader got:

* ``NO_CRYPTO``: nothing cryptographic ran (malformed header, unsupported suite or algorithm,
  wrong ``enc_len`` for the suite, an at-rest package for another KEK);
* ``NO_UNWRAP``: no HPKE, KEK or body call (unknown issuer, pinned algorithm mismatch);
* ``AFTER_SIGNATURE``: the signature was verified once, nothing else ran (audience, expiry,
  licence expiry, recipient);
* ``AFTER_UNWRAP``: the DEK was unwrapped once but no body key was derived: the header is valid
  but its ``len`` disagrees with the body, which FORMAT §9 checks after the unwrap.

For each member the cases are: 0 (or the empty string), the maximum, the maximum plus one, a
wrong JSON type, a duplicate member, and unknown or out-of-policy values. For enumerated strings
(``rtype``, ``sig.alg``) "maximum" is the longest string the reader looks at. Members whose
content the reader does not judge (``ctype``, ``iss``, ``sub``, ``mid``, ``jti``, ``iat`` in the
future) open with any well-formed value; those cases assert that they do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelseal.envelope import OpenPolicy, open_bytes, open_stream
from modelseal.envelope.body import BodyCipher, body_length
from modelseal.envelope.container import (
    BODY_CONTEXT_LABEL,
    MAGIC,
    sign_package,
    wrap_dek_hpke,
    wrap_dek_kek,
)
from modelseal.errors import (
    AudienceError,
    BadSignatureError,
    BodyLengthError,
    EncLengthError,
    ExpiredError,
    HeaderError,
    HeaderLengthError,
    LicenceExpiredError,
    ModelSealError,
    RecipientMismatchError,
    UnknownIssuerError,
    UnsupportedAlgorithmError,
    UnsupportedSuiteError,
)
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    IssuerPublicKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
)

NOW = 1_800_000_000
LEEWAY = 60
AUDIENCE = "device-7f3a"
PLAINTEXT = bytes(range(256)) * 70  # 17920 bytes: one full chunk and a short final one
# C2SP chunked encryption allows 2^38 chunks, the last one short: at most 2^52 - 1 bytes.
MAX_LEN = (1 << 52) - 1
MAX_INT = (1 << 53) - 1
MAX_STRING = 255
MAX_RCPT = 64

DEVICE = RecipientPrivateKey.generate(KEM.X25519)
OTHER_DEVICE = RecipientPrivateKey.generate(KEM.X25519)
ISSUER = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
UNPINNED_ISSUER = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
DEVICE_KEK = KEK.generate("kek-" + "k" * 60)
POLICY = OpenPolicy(issuers=IssuerKeySet([ISSUER.public_key()]), audience=AUDIENCE, now=NOW)


# --- Writing JSON by hand ----------------------------------------------------------------------


class Raw(str):
    """JSON text emitted verbatim (NaN, 1.0, big integers, escapes)."""


@dataclass(frozen=True)
class RawBytes:
    """Bytes emitted verbatim, even when they are not UTF-8."""

    data: bytes


class Members(list[tuple[str, Any]]):
    """A JSON object as an ordered list of members, so that names may repeat."""


def _encode(value: Any) -> bytes:
    if isinstance(value, RawBytes):
        return value.data
    if isinstance(value, Raw):
        return str(value).encode()
    if isinstance(value, dict):
        value = Members(value.items())
    if isinstance(value, Members):
        members = (_encode(name) + b":" + _encode(item) for name, item in value)
        return b"{" + b",".join(members) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_encode(item) for item in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode()


def _plain_header(**top: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "rtype": "hpke",
        "suite": {"kem": int(KEM.X25519), "kdf": 1, "aead": 2},
        "rcpt": DEVICE.kid,
        "sig": {"alg": "Ed25519", "kid": ISSUER.kid},
        "len": len(PLAINTEXT),
        "ctype": "application/vnd.modelseal.bundle",
        "claims": {
            "iss": "issuer.example",
            "sub": "u-5b1e",
            "aud": AUDIENCE,
            "mid": "model-llm-small",
            "jti": "jti-0001",
            "iat": NOW - 10,
            "exp": NOW + 3600,
        },
    }
    header.update(top)
    return header


MemberPath = tuple[str, ...]
_DELETE = object()


# --- Building a re-signed package around a given header -------------------------------------


def _build(header: Any, *, kek: bool = False, plaintext: bytes = PLAINTEXT) -> bytes:
    header_bytes = _encode(header)
    prelude = MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes
    dek = os.urandom(32)
    if kek:
        keyblock = wrap_dek_kek(prelude, dek, DEVICE_KEK)
        signature = b"\x00\x00"
    else:
        keyblock = wrap_dek_hpke(prelude, dek, DEVICE.public_key())
        signature = sign_package(prelude, keyblock, ISSUER)
    context = BODY_CONTEXT_LABEL + hashlib.sha256(prelude).digest()
    cipher = BodyCipher(dek, os.urandom(24), context)
    chunks = bytearray(body_length(len(plaintext)) - 56)
    cipher.encrypt_chunks(0, memoryview(plaintext), memoryview(chunks), final=True)
    return prelude + keyblock + signature + cipher.prefix() + bytes(chunks)


# --- Spies: how far did the reader get? -------------------------------------------------------


@dataclass
class Calls:
    """How often each cryptographic step ran during one open."""

    verify: int = 0
    hpke_open: int = 0
    kek_unwrap: int = 0
    body_cipher: int = 0
    chunks: int = 0

    def reset(self) -> None:
        self.verify = self.hpke_open = self.kek_unwrap = self.body_cipher = self.chunks = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Count real calls to signature verification, DEK unwrap and body decryption."""
    counts = Calls()
    real_verify = IssuerPublicKey.verify
    real_open = RecipientPrivateKey.hpke_open
    real_unwrap = KEK.unwrap
    real_init = BodyCipher.__init__
    real_check = BodyCipher.check_commitment
    real_decrypt = BodyCipher.decrypt_chunks

    def verify(self: IssuerPublicKey, message: bytes, signature: bytes) -> None:
        counts.verify += 1
        real_verify(self, message, signature)

    def hpke_open(self: RecipientPrivateKey, enc: bytes, ct: bytes, info: bytes) -> bytes:
        counts.hpke_open += 1
        return real_open(self, enc, ct, info)

    def unwrap(self: KEK, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        counts.kek_unwrap += 1
        return real_unwrap(self, nonce, wrapped, aad)

    def init(self: BodyCipher, input_key: bytes, salt: bytes, context: bytes) -> None:
        counts.body_cipher += 1
        real_init(self, input_key, salt, context)

    def check(self: BodyCipher, commitment: bytes | memoryview) -> None:
        counts.body_cipher += 1
        real_check(self, commitment)

    def decrypt(self: BodyCipher, *args: Any, **kwargs: Any) -> int:
        counts.chunks += 1
        return real_decrypt(self, *args, **kwargs)

    monkeypatch.setattr(IssuerPublicKey, "verify", verify)
    monkeypatch.setattr(RecipientPrivateKey, "hpke_open", hpke_open)
    monkeypatch.setattr(KEK, "unwrap", unwrap)
    monkeypatch.setattr(BodyCipher, "__init__", init)
    monkeypatch.setattr(BodyCipher, "check_commitment", check)
    monkeypatch.setattr(BodyCipher, "decrypt_chunks", decrypt)
    return counts


NO_CRYPTO = "no-crypto"  # refused from the header alone
NO_UNWRAP = "no-unwrap"  # the issuer check may have run, nothing after it
AFTER_SIGNATURE = "after-signature"  # signature verified, then refused by policy
AFTER_UNWRAP = "after-unwrap"  # DEK unwrapped, then refused before any body key


def _assert_stage(stage: str, seen: Calls) -> None:
    body = seen.body_cipher + seen.chunks
    if stage == NO_CRYPTO:
        assert (seen.verify, seen.hpke_open, seen.kek_unwrap, body) == (0, 0, 0, 0), seen
    elif stage == NO_UNWRAP:
        assert (seen.hpke_open, seen.kek_unwrap, body) == (0, 0, 0), seen
    elif stage == AFTER_SIGNATURE:
        assert (seen.verify, seen.hpke_open, seen.kek_unwrap, body) == (1, 0, 0, 0), seen
    else:
        assert stage == AFTER_UNWRAP
        assert seen.hpke_open + seen.kek_unwrap == 1, seen
        assert body == 0, seen


Opener = Callable[[bytes, Any, OpenPolicy], Any]


def _open_bytes(data: bytes, key: Any, policy: OpenPolicy) -> bytes:
    return open_bytes(data, key, policy).plaintext


def _open_stream(data: bytes, key: Any, policy: OpenPolicy) -> bytes:
    return open_stream(io.BytesIO(data), key, policy).read_all()


OPENERS = [pytest.param(_open_bytes, id="open_bytes"), pytest.param(_open_stream, id="open_stream")]


# --- The cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One header, and what opening a package built around it must do."""

    name: str
    header: Any
    error: type[ModelSealError] | None  # None: the package opens
    stage: str = NO_CRYPTO
    kek: bool = False
    policy: OpenPolicy = field(default=POLICY)


AT_REST_POLICY = OpenPolicy(now=NOW)


def _invalid(name: str, header: Any, **kwargs: Any) -> Case:
    return Case(name, header, HeaderError, **kwargs)


def _opens(name: str, header: Any, **kwargs: Any) -> Case:
    return Case(name, header, None, **kwargs)


def _after_signature(name: str, header: Any, error: type[ModelSealError]) -> Case:
    return Case(name, header, error, AFTER_SIGNATURE)


def _set(path: MemberPath, value: Any, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain header with the member at ``path`` set (or removed, for ``_DELETE``)."""
    header = _plain_header() if header is None else header
    parent = header
    for name in path[:-1]:
        parent = parent[name]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return header


def _twice(path: MemberPath, value: Any = _DELETE) -> Any:
    """The plain header with the member at ``path`` written twice (a copy first).

    ``value`` adds an optional member that the plain header lacks.
    """
    header = _plain_header() if value is _DELETE else _set(path, value)

    def rebuild(node: dict[str, Any], rest: MemberPath) -> Members:
        members = Members(
            (name, rebuild(item, rest[1:]) if len(rest) > 1 and name == rest[0] else item)
            for name, item in node.items()
        )
        if len(rest) == 1:
            members.insert(0, (rest[0], node[rest[0]]))
        return members

    return rebuild(header, path)


def _string_member(path: MemberPath, maximum: int) -> Iterator[Case]:
    dotted = ".".join(path)
    yield _invalid(f"{dotted}-empty", _set(path, ""))
    yield _invalid(f"{dotted}-one-past-the-maximum-length", _set(path, "x" * (maximum + 1)))
    yield _invalid(f"{dotted}-as-a-number", _set(path, 0))
    yield _invalid(f"{dotted}-as-true", _set(path, True))
    yield _invalid(f"{dotted}-as-null", _set(path, None))
    yield _invalid(f"{dotted}-as-an-array", _set(path, ["x"]))
    yield _invalid(f"{dotted}-twice", _twice(path))
    yield _invalid(f"{dotted}-missing", _set(path, _DELETE))


def _integer_member(path: MemberPath, good: int) -> Iterator[Case]:
    dotted = ".".join(path)
    yield _invalid(f"{dotted}-as-a-string", _set(path, str(good)))
    yield _invalid(f"{dotted}-as-true", _set(path, True))
    yield _invalid(f"{dotted}-as-null", _set(path, None))
    yield _invalid(f"{dotted}-as-a-float", _set(path, Raw(f"{good}.0")))
    yield _invalid(f"{dotted}-in-exponent-form", _set(path, Raw("1e3")))
    yield _invalid(f"{dotted}-negative", _set(path, -1))


def _rtype_cases() -> Iterator[Case]:
    yield from _string_member(("rtype",), 8)
    yield _invalid("rtype-unknown", _set(("rtype",), "hpke2"))
    yield _invalid("rtype-in-capitals", _set(("rtype",), "HPKE"))
    yield _invalid("rtype-longest-read-but-unknown", _set(("rtype",), "hpkehpke"))
    yield _invalid("rtype-kek-with-suite-and-sig", _set(("rtype",), "kek"))


def _suite_cases() -> Iterator[Case]:
    for name, good, unknown in (("kem", 32, 0x11), ("kdf", 1, 2), ("aead", 2, 1)):
        path = ("suite", name)
        yield Case(f"suite.{name}-zero", _set(path, 0), UnsupportedSuiteError)
        yield Case(f"suite.{name}-maximum", _set(path, 0xFFFF), UnsupportedSuiteError)
        # Past the 16-bit registry space the value is malformed, not merely unsupported.
        yield _invalid(f"suite.{name}-one-past-the-maximum", _set(path, 0x10000))
        yield Case(f"suite.{name}-unknown", _set(path, unknown), UnsupportedSuiteError)
        yield _invalid(f"suite.{name}-missing", _set(path, _DELETE))
        yield _invalid(f"suite.{name}-twice", _twice(path))
        yield from _integer_member(path, good)
    yield Case("suite.aead-chacha20poly1305", _set(("suite", "aead"), 3), UnsupportedSuiteError)
    yield Case("suite.kdf-hkdf-sha512", _set(("suite", "kdf"), 3), UnsupportedSuiteError)
    # v1 KEMs that do not match the X25519 key block: enc_len is then out of range.
    yield Case("suite.kem-p256-over-an-x25519-keyblock", _set(("suite", "kem"), 16), EncLengthError)
    yield Case(
        "suite.kem-xwing-over-an-x25519-keyblock", _set(("suite", "kem"), 0x647A), EncLengthError
    )
    yield _invalid("suite-with-an-extra-member", _set(("suite", "mode"), 0))
    yield _invalid("suite-as-an-array", _set(("suite",), [32, 1, 2]))
    yield _invalid("suite-missing", _set(("suite",), _DELETE))
    yield _invalid("suite-twice", _twice(("suite",)))


def _rcpt_cases() -> Iterator[Case]:
    yield from _string_member(("rcpt",), MAX_RCPT)
    # In an hpke header rcpt is a kid: exactly 32 lowercase hex characters.
    yield _invalid("rcpt-maximum-length", _set(("rcpt",), "a" * MAX_RCPT))
    yield _invalid("rcpt-in-capitals", _set(("rcpt",), DEVICE.kid.upper()))
    yield _invalid("rcpt-one-short", _set(("rcpt",), DEVICE.kid[:-1]))
    yield _after_signature(
        "rcpt-of-another-device", _set(("rcpt",), OTHER_DEVICE.kid), RecipientMismatchError
    )


def _sig_cases() -> Iterator[Case]:
    alg, kid = ("sig", "alg"), ("sig", "kid")
    yield from _string_member(alg, 64)
    yield Case("sig.alg-longest-read-but-unknown", _set(alg, "A" * 64), UnsupportedAlgorithmError)
    for name in ("EdDSA", "ed25519", "ES384", "RS256", "none", "HS256"):
        yield Case(f"sig.alg-{name}", _set(alg, name), UnsupportedAlgorithmError)
    # A known algorithm that is not the pinned key's: the pinned key decides (FORMAT §7).
    yield Case("sig.alg-ES256-for-an-Ed25519-key", _set(alg, "ES256"), BadSignatureError, NO_UNWRAP)
    yield from _string_member(kid, 64)
    yield _invalid("sig.kid-maximum-length", _set(kid, "a" * 64))
    yield _invalid("sig.kid-in-capitals", _set(kid, ISSUER.kid.upper()))
    yield Case("sig.kid-unpinned", _set(kid, UNPINNED_ISSUER.kid), UnknownIssuerError, NO_UNWRAP)
    yield _invalid("sig-with-an-extra-member", _set(("sig", "x5c"), "x"))
    yield _invalid("sig-as-a-string", _set(("sig",), "Ed25519"))
    yield _invalid("sig-missing", _set(("sig",), _DELETE))
    yield _invalid("sig-twice", _twice(("sig",)))


def _len_cases() -> Iterator[Case]:
    path = ("len",)
    # Valid values that disagree with the body are found after the unwrap (FORMAT §9 order).
    yield Case("len-zero", _set(path, 0), BodyLengthError, AFTER_UNWRAP)
    yield Case("len-maximum", _set(path, MAX_LEN), BodyLengthError, AFTER_UNWRAP)
    yield Case("len-one-more", _set(path, len(PLAINTEXT) + 1), BodyLengthError, AFTER_UNWRAP)
    yield Case(
        "len-one-chunk-less", _set(path, len(PLAINTEXT) - 16384), BodyLengthError, AFTER_UNWRAP
    )
    yield _invalid("len-one-past-the-maximum", _set(path, MAX_LEN + 1))
    yield _invalid("len-missing", _set(path, _DELETE))
    yield _invalid("len-twice", _twice(path))
    yield from _integer_member(path, len(PLAINTEXT))


def _ctype_cases() -> Iterator[Case]:
    yield from _string_member(("ctype",), MAX_STRING)
    yield _opens("ctype-maximum-length", _set(("ctype",), "x" * MAX_STRING))
    yield _opens("ctype-unknown-media-type", _set(("ctype",), "application/x-never-heard-of"))


def _string_claim_cases() -> Iterator[Case]:
    for name in ("iss", "sub", "mid", "jti"):
        path = ("claims", name)
        yield from _string_member(path, MAX_STRING)
        yield _opens(f"claims.{name}-maximum-length", _set(path, "x" * MAX_STRING))
        yield _opens(f"claims.{name}-unknown-value", _set(path, "\u00e9t\u00e9-\U0001f600"))
    aud = ("claims", "aud")
    yield from _string_member(aud, MAX_STRING)
    yield _after_signature("claims.aud-maximum-length", _set(aud, "d" * MAX_STRING), AudienceError)
    yield _opens(
        "claims.aud-maximum-length-for-this-device",
        _set(aud, "d" * MAX_STRING),
        policy=OpenPolicy(issuers=POLICY.issuers, audience="d" * MAX_STRING, now=NOW),
    )
    yield _after_signature("claims.aud-another-device", _set(aud, "device-0000"), AudienceError)
    yield _after_signature("claims.aud-in-capitals", _set(aud, AUDIENCE.upper()), AudienceError)


def _time_claim_cases() -> Iterator[Case]:
    iat, exp, lexp = ("claims", "iat"), ("claims", "exp"), ("claims", "lexp")
    yield _opens("claims.iat-zero", _set(iat, 0))
    yield _invalid("claims.iat-maximum-is-not-before-exp", _set(iat, MAX_INT))
    yield _invalid("claims.iat-one-past-the-maximum", _set(iat, MAX_INT + 1))
    yield _invalid("claims.iat-equal-to-exp", _set(iat, NOW + 3600))
    yield _invalid("claims.iat-missing", _set(iat, _DELETE))
    yield _invalid("claims.iat-twice", _twice(iat))
    # The reader does not judge iat against its clock; FORMAT §3 asks only iat < exp.
    yield _opens("claims.iat-in-the-future", _set(iat, NOW + 3000))
    yield from _integer_member(iat, NOW)

    yield _invalid("claims.exp-zero-is-not-after-iat", _set(exp, 0))
    yield _opens("claims.exp-maximum", _set(exp, MAX_INT))
    yield _invalid("claims.exp-one-past-the-maximum", _set(exp, MAX_INT + 1))
    yield _invalid("claims.exp-missing", _set(exp, _DELETE))
    yield _invalid("claims.exp-twice", _twice(exp))
    # Issued two hours ago, so that an exp in the past still follows iat.
    yield _opens(
        "claims.exp-at-the-end-of-the-leeway", _set(exp, NOW - LEEWAY, _set(iat, NOW - 7200))
    )
    yield _after_signature(
        "claims.exp-past-the-leeway",
        _set(exp, NOW - LEEWAY - 1, _set(iat, NOW - 7200)),
        ExpiredError,
    )
    yield from _integer_member(exp, NOW)

    yield _after_signature("claims.lexp-zero", _set(lexp, 0), LicenceExpiredError)
    yield _opens("claims.lexp-maximum", _set(lexp, MAX_INT))
    yield _invalid("claims.lexp-one-past-the-maximum", _set(lexp, MAX_INT + 1))
    yield _invalid("claims.lexp-twice", _twice(lexp, NOW + 10))
    yield _opens("claims.lexp-at-the-end-of-the-leeway", _set(lexp, NOW - LEEWAY))
    yield _after_signature(
        "claims.lexp-past-the-leeway", _set(lexp, NOW - LEEWAY - 1), LicenceExpiredError
    )
    yield from _integer_member(lexp, NOW)

    yield _opens("claims-with-an-unknown-member", _set(("claims", "tier"), "pro"))
    yield _invalid("claims-as-an-array", _set(("claims",), []))
    yield _invalid("claims-empty", _set(("claims",), {}))
    yield _invalid("claims-missing", _set(("claims",), _DELETE))
    yield _invalid("claims-twice", _twice(("claims",)))


def _top_level_cases() -> Iterator[Case]:
    yield _invalid("unknown-top-level-member", _plain_header(kid="x"))
    yield _invalid("top-level-member-that-belongs-in-claims", _plain_header(aud=AUDIENCE))
    yield _invalid("top-level-array", [_plain_header()])
    yield _invalid("top-level-string", "hpke")
    yield _invalid("top-level-null", None)
    yield _invalid("empty-object", {})
    yield _invalid("whitespace-only", RawBytes(b" "))


def _nested_arrays(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _nested_objects(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _strict_json_cases() -> Iterator[Case]:
    plain = _encode(_plain_header())
    ctype = ("ctype",)
    yield _invalid("invalid-utf8-byte", _set(ctype, RawBytes(b'"appl\xffication/x"')))
    yield _invalid("overlong-utf8-encoding", _set(ctype, RawBytes(b'"application\xc0\xafx"')))
    yield _invalid("utf8-encoded-surrogate", _set(ctype, RawBytes(b'"a\xed\xa0\x80b"')))
    yield _invalid("truncated-utf8-sequence", _set(ctype, RawBytes(b'"a\xe2\x82"')))
    yield _invalid("raw-control-character-in-a-string", _set(ctype, RawBytes(b'"a\x01b"')))
    yield _invalid("byte-order-mark", RawBytes(b"\xef\xbb\xbf" + plain))
    for constant in ("NaN", "Infinity", "-Infinity"):
        yield _invalid(f"len-as-{constant}", _set(("len",), Raw(constant)))
    yield _invalid("nan-in-an-unknown-claim", _set(("claims", "score"), Raw("NaN")))
    yield _invalid("integer-past-2^53-1", _set(("claims", "iat"), Raw(str(MAX_INT + 1))))
    yield _invalid("integer-below-minus-2^53+1", _set(("claims", "n"), Raw(str(-MAX_INT - 1))))
    yield _invalid("huge-integer-in-an-unknown-claim", _set(("claims", "n"), Raw("9" * 400)))
    yield _opens("largest-safe-integer-in-an-unknown-claim", _set(("claims", "n"), MAX_INT))
    yield _invalid("lone-high-surrogate-escape", _set(("claims", "sub"), Raw('"u\\ud800"')))
    yield _invalid("lone-low-surrogate-escape", _set(("claims", "x"), Raw('"\\udc00"')))
    yield _invalid(
        "lone-surrogate-in-a-member-name",
        _set(("claims",), Members([*_plain_header()["claims"].items(), (Raw('"\\ud800"'), 1)])),
    )
    yield _opens("escaped-surrogate-pair", _set(("claims", "sub"), Raw('"u\\ud83d\\ude00"')))
    # Depth counts from the top-level object (0): claims is at 1, a claim's value at 2.
    yield _opens("value-nested-at-depth-16", _set(("claims", "deep"), _nested_arrays(15)))
    yield _invalid("value-nested-at-depth-17", _set(("claims", "deep"), _nested_arrays(16)))
    yield _invalid("object-nested-at-depth-17", _set(("claims", "deep"), _nested_objects(16)))
    yield _invalid(
        "nested-ten-thousand-levels", _set(("claims", "deep"), Raw("[" * 10_000 + "]" * 10_000))
    )
    yield _invalid(
        "duplicate-name-spelled-with-an-escape",
        Members([*_plain_header().items(), (Raw('"\\u006cen"'), len(PLAINTEXT))]),
    )
    yield _invalid(
        "duplicate-name-inside-an-unknown-claim",
        _set(("claims", "meta"), Members([("a", 1), ("a", 1)])),
    )
    yield _invalid("trailing-data-after-the-object", RawBytes(plain + b"x"))
    yield _invalid("two-objects", RawBytes(plain + plain))
    yield _invalid("object-missing-its-closing-brace", RawBytes(plain[:-1]))


def _kek_cases() -> Iterator[Case]:
    at_rest = {"rtype": "kek", "rcpt": DEVICE_KEK.label, "len": len(PLAINTEXT), "ctype": "a/b"}
    issued = _plain_header()
    common: dict[str, Any] = {"kek": True, "policy": AT_REST_POLICY}
    yield _opens("kek-header-without-claims", dict(at_rest), **common)
    yield _opens("kek-header-with-issued-claims", {**at_rest, "claims": issued["claims"]}, **common)
    yield _opens("kek-rcpt-maximum-length", {**at_rest, "rcpt": DEVICE_KEK.label}, **common)
    yield _invalid("kek-header-with-a-suite", {**at_rest, "suite": issued["suite"]}, **common)
    yield _invalid("kek-header-with-a-sig", {**at_rest, "sig": issued["sig"]}, **common)
    yield _invalid("kek-rcpt-one-past-the-maximum", {**at_rest, "rcpt": "k" * 65}, **common)
    yield _invalid("kek-rcpt-empty", {**at_rest, "rcpt": ""}, **common)
    yield _invalid(
        "kek-claims-missing-exp",
        {**at_rest, "claims": {k: v for k, v in issued["claims"].items() if k != "exp"}},
        **common,
    )
    yield Case(
        "kek-rcpt-of-another-kek",
        {**at_rest, "rcpt": "kek-other"},
        RecipientMismatchError,
        **common,
    )
    yield Case("kek-len-zero", {**at_rest, "len": 0}, BodyLengthError, AFTER_UNWRAP, **common)
    # An at-rest header is authenticated only by the KEK unwrap (its AAD binds H), so
    # its licence is judged after the unwrap, never on unauthenticated bytes.
    yield Case(
        "kek-licence-expired",
        {**at_rest, "claims": {**issued["claims"], "lexp": NOW - LEEWAY - 1}},
        LicenceExpiredError,
        AFTER_UNWRAP,
        **common,
    )


CASES = [
    *_rtype_cases(),
    *_suite_cases(),
    *_rcpt_cases(),
    *_sig_cases(),
    *_len_cases(),
    *_ctype_cases(),
    *_string_claim_cases(),
    *_time_claim_cases(),
    *_top_level_cases(),
    *_strict_json_cases(),
    *_kek_cases(),
]
REJECTED = [case for case in CASES if case.error is not None]
ACCEPTED = [case for case in CASES if case.error is None]


def test_hand_built_package_with_the_plain_header_opens(calls: Calls) -> None:
    data = _build(_plain_header())
    calls.reset()
    assert open_bytes(data, DEVICE, POLICY).plaintext == PLAINTEXT
    # Sanity of the spies: a full open runs every step they watch.
    assert (calls.verify, calls.hpke_open) == (1, 1)
    assert calls.body_cipher >= 2
    assert calls.chunks >= 1


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("case", REJECTED, ids=[case.name for case in REJECTED])
def test_a_header_fault_is_rejected_with_its_own_error_before_later_steps(
    case: Case, opener: Opener, calls: Calls
) -> None:
    assert case.error is not None
    data = _build(case.header, kek=case.kek)
    calls.reset()
    with pytest.raises(case.error) as raised:
        opener(data, DEVICE_KEK if case.kek else DEVICE, case.policy)
    assert type(raised.value) is case.error
    assert raised.value.code == case.error.code
    _assert_stage(case.stage, calls)


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("case", ACCEPTED, ids=[case.name for case in ACCEPTED])
def test_a_well_formed_header_value_opens(case: Case, opener: Opener) -> None:
    data = _build(case.header, kek=case.kek)
    assert opener(data, DEVICE_KEK if case.kek else DEVICE, case.policy) == PLAINTEXT


def test_unknown_claims_are_handed_to_the_application() -> None:
    header = _set(("claims", "tier"), "pro")
    _set(("claims", "seats"), 3, header)
    opened = open_bytes(_build(header), DEVICE, POLICY)
    assert opened.header.claims is not None
    assert dict(opened.header.claims.extra) == {"tier": "pro", "seats": 3}


# --- header_len (FORMAT §2: 1 <= header_len <= 65536) -------------------------------------------


def _padded_header(size: int) -> bytes:
    """The plain header padded with an unknown claim to exactly ``size`` bytes."""
    base = len(_encode(_set(("claims", "pad"), "")))
    header = _encode(_set(("claims", "pad"), "p" * (size - base)))
    assert len(header) == size
    return header


@pytest.mark.parametrize("size", [65535, 65536])
def test_a_header_up_to_64_kib_opens(size: int) -> None:
    data = _build(RawBytes(_padded_header(size)))
    assert struct.unpack_from(">I", data, 8) == (size,)
    assert open_bytes(data, DEVICE, POLICY).plaintext == PLAINTEXT


@pytest.mark.parametrize("declared", [0, 65537, 1 << 31, (1 << 32) - 1])
def test_a_header_len_out_of_range_is_rejected_before_the_header_is_read(
    declared: int, calls: Calls
) -> None:
    data = bytearray(_build(RawBytes(_padded_header(65536))))
    data[8:12] = struct.pack(">I", declared)
    calls.reset()
    for opener in (_open_bytes, _open_stream):
        with pytest.raises(HeaderLengthError) as raised:
            opener(bytes(data), DEVICE, POLICY)
        assert raised.value.code == "header_length"
    _assert_stage(NO_CRYPTO, calls)


def test_a_65537_byte_header_is_rejected_by_its_length(calls: Calls) -> None:
    data = _build(RawBytes(_padded_header(65537)))
    calls.reset()
    for opener in (_open_bytes, _open_stream):
        with pytest.raises(HeaderLengthError) as raised:
            opener(data, DEVICE, POLICY)
        assert raised.value.code == "header_length"
    _assert_stage(NO_CRYPTO, calls)
