"""Unit tests of modelseal.keys: key ids, JWK encoding, key files and secret hygiene.

Canonical public encodings and key ids are recomputed here from first principles
(hashlib, and pyca only for the curve arithmetic) rather than through modelseal, so the
tests check FORMAT §6 and not modelseal against itself.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import pickle
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519

from modelseal.errors import BadSignatureError, KeyFormatError, UnknownIssuerError
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    IssuerPublicKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
    jwk_to_key,
    key_id,
    key_to_jwk,
    load_issuer_key_set,
    load_key,
    parse_jwks,
    save_key,
)
from modelseal.keys.jwk import Key, b64u_decode, b64u_encode

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _secret(label: str) -> bytes:
    """A fixed 32-byte test secret; as a P-256 scalar it is far below the group order."""
    secret = hashlib.sha256(b"modelseal keys test: " + label.encode()).digest()
    assert 0 < int.from_bytes(secret, "big") < P256_N
    return secret


def _uncompressed(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _x25519_public(secret: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def _p256_public(secret: bytes) -> bytes:
    return _uncompressed(ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1()))


def _xwing_public(seed: bytes) -> bytes:
    # draft-connolly-cfrg-xwing-kem: SHAKE256(seed, 96) = ML-KEM-768 seed (64) || X25519 sk (32).
    expanded = hashlib.shake_256(seed).digest(96)
    mlkem_public = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
    return mlkem_public.public_bytes_raw() + _x25519_public(expanded[64:])


def _ed25519_public(seed: bytes) -> bytes:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


@dataclass(frozen=True)
class Kind:
    """One asymmetric key kind: how to build it, and its canonical public encoding."""

    name: str
    make: Callable[[bytes], RecipientPrivateKey | IssuerPrivateKey]
    canonical_public: Callable[[bytes], bytes]
    public_length: int
    jwk_members: frozenset[str]
    alg: str
    use: str
    secret_member: str


KINDS = [
    Kind(
        "x25519",
        lambda s: RecipientPrivateKey(KEM.X25519, s),
        _x25519_public,
        32,
        frozenset({"kty", "crv", "x", "use", "alg", "kid"}),
        "HPKE-X25519-SHA256-A256GCM",
        "enc",
        "d",
    ),
    Kind(
        "p256",
        lambda s: RecipientPrivateKey(KEM.P256, s),
        _p256_public,
        65,
        frozenset({"kty", "crv", "x", "y", "use", "alg", "kid"}),
        "HPKE-P256-SHA256-A256GCM",
        "enc",
        "d",
    ),
    Kind(
        "xwing",
        lambda s: RecipientPrivateKey(KEM.XWING, s),
        _xwing_public,
        1216,
        frozenset({"kty", "pub", "use", "alg", "kid"}),
        "HPKE-XWING-SHA256-A256GCM",
        "enc",
        "priv",
    ),
    Kind(
        "ed25519",
        lambda s: IssuerPrivateKey(SignatureAlgorithm.ED25519, s),
        _ed25519_public,
        32,
        frozenset({"kty", "crv", "x", "use", "alg", "kid"}),
        "Ed25519",
        "sig",
        "d",
    ),
    Kind(
        "es256",
        lambda s: IssuerPrivateKey(SignatureAlgorithm.ES256, s),
        _p256_public,
        65,
        frozenset({"kty", "crv", "x", "y", "use", "alg", "kid"}),
        "ES256",
        "sig",
        "d",
    ),
]
KIND_IDS = [kind.name for kind in KINDS]
KIND = {kind.name: kind for kind in KINDS}
RECIPIENT_KINDS = KINDS[:3]
RECIPIENT_IDS = KIND_IDS[:3]


def _private(kind: Kind, label: str = "a") -> RecipientPrivateKey | IssuerPrivateKey:
    return kind.make(_secret(f"{kind.name}/{label}"))


def _kek() -> KEK:
    return KEK("device-kek-1", _secret("kek"))


def _roundtrip_json(document: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(document))


def _assert_key_invalid(call: Callable[[], object], match: str | None = None) -> None:
    with pytest.raises(KeyFormatError, match=match) as caught:
        call()
    assert caught.value.code == "key_invalid"


# --- Key ids (FORMAT §6) ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_kid_is_hex_of_the_first_16_bytes_of_sha256_of_the_canonical_public_key(
    kind: Kind,
) -> None:
    secret = _secret(f"{kind.name}/a")
    canonical = kind.canonical_public(secret)
    assert len(canonical) == kind.public_length
    expected = hashlib.sha256(canonical).digest()[:16].hex()
    private = kind.make(secret)
    assert private.public_key().raw == canonical
    assert private.kid == private.public_key().kid == expected
    assert key_id(canonical) == expected
    assert key_to_jwk(private.public_key())["kid"] == expected
    assert len(expected) == 32
    assert expected == expected.lower()


def test_kid_of_the_rfc9180_x25519_recipient_key_is_pinned() -> None:
    # RFC 9180 A.1.1 pkRm; kid computed once with `xxd -r -p | sha256sum | cut -c1-32`.
    public = RecipientPublicKey(
        KEM.X25519,
        bytes.fromhex("430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c"),
    )
    assert public.kid == "69df8d73e7407153d44babaf63e78f7a"


# --- JWK round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_public_jwk_round_trips_with_the_documented_members(kind: Kind) -> None:
    public = _private(kind).public_key()
    jwk = key_to_jwk(public)
    assert set(jwk) == kind.jwk_members
    assert (jwk["alg"], jwk["use"], jwk["kid"]) == (kind.alg, kind.use, public.kid)
    decoded = jwk_to_key(_roundtrip_json(jwk))
    assert type(decoded) is type(public)
    assert decoded == public


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_private_jwk_round_trips_and_carries_the_secret_only_when_asked(kind: Kind) -> None:
    private = _private(kind)
    public_only = key_to_jwk(private)
    assert kind.secret_member not in public_only
    assert jwk_to_key(public_only) == private.public_key()

    jwk = key_to_jwk(private, include_private=True)
    assert set(jwk) == kind.jwk_members | {kind.secret_member}
    assert b64u_decode(jwk[kind.secret_member], kind.secret_member) == private.secret_bytes()
    decoded = jwk_to_key(_roundtrip_json(jwk))
    assert type(decoded) is type(private)
    assert isinstance(decoded, RecipientPrivateKey | IssuerPrivateKey)
    assert decoded.secret_bytes() == private.secret_bytes()
    assert decoded.public_key() == private.public_key()
    assert decoded.kid == private.kid


def test_kek_jwk_round_trips_with_its_label_as_kid() -> None:
    kek = _kek()
    jwk = key_to_jwk(kek, include_private=True)
    assert jwk == {
        "kty": "oct",
        "alg": "A256GCMKW",
        "use": "enc",
        "kid": "device-kek-1",
        "k": b64u_encode(_secret("kek")),
    }
    decoded = jwk_to_key(_roundtrip_json(jwk))
    assert isinstance(decoded, KEK)
    assert (decoded.label, decoded.secret_bytes()) == (kek.label, kek.secret_bytes())


def test_kek_has_no_public_jwk() -> None:
    _assert_key_invalid(lambda: key_to_jwk(_kek()), match="no public form")


# --- Strict base64url ---------------------------------------------------------------------


def _non_canonical_last_char(text: str) -> str:
    """Set an unused low bit of the last character: same bytes to a lenient decoder."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(text[-1])
    assert value & 0b11 == 0, "a 32-byte value leaves two unused bits in its last character"
    return text[:-1] + alphabet[value | 0b01]


B64_MUTATIONS: dict[str, Callable[[str], object]] = {
    "padding": lambda t: t + "=",
    "standard-alphabet plus": lambda t: "+" + t[1:],
    "standard-alphabet slash": lambda t: "/" + t[1:],
    "leading space": lambda t: " " + t,
    "trailing newline": lambda t: t + "\n",
    "inner space": lambda t: t[:10] + " " + t[10:],
    "inner tab": lambda t: t[:10] + "\t" + t[10:],
    "non-canonical trailing bits": _non_canonical_last_char,
    "length 1 mod 4": lambda t: t[:41],
    "non-ascii letter": lambda t: "\u00e9" + t[1:],
    "fullwidth digit": lambda t: "\uff10" + t[1:],
    "integer": lambda t: 12345,
    "null": lambda t: None,
    "array": lambda t: [t],
}


def _member_cases() -> Iterator[tuple[str, Callable[[], dict[str, str]], str]]:
    def x25519_public() -> dict[str, str]:
        return key_to_jwk(_private(KIND["x25519"]).public_key())

    def x25519_private() -> dict[str, str]:
        return key_to_jwk(_private(KIND["x25519"]), include_private=True)

    def p256_public() -> dict[str, str]:
        return key_to_jwk(_private(KIND["p256"]).public_key())

    def xwing_private() -> dict[str, str]:
        return key_to_jwk(_private(KIND["xwing"]), include_private=True)

    def ed25519_private() -> dict[str, str]:
        return key_to_jwk(_private(KIND["ed25519"]), include_private=True)

    def kek() -> dict[str, str]:
        return key_to_jwk(_kek(), include_private=True)

    yield "x25519 x", x25519_public, "x"
    yield "x25519 d", x25519_private, "d"
    yield "p256 y", p256_public, "y"
    yield "xwing priv", xwing_private, "priv"
    yield "ed25519 d", ed25519_private, "d"
    yield "kek k", kek, "k"


MEMBER_CASES = list(_member_cases())


@pytest.mark.parametrize(
    ("make_jwk", "member"),
    [(make, member) for _, make, member in MEMBER_CASES],
    ids=[name for name, _, _ in MEMBER_CASES],
)
@pytest.mark.parametrize("mutation", list(B64_MUTATIONS), ids=list(B64_MUTATIONS))
def test_jwk_binary_members_must_be_strict_unpadded_base64url(
    make_jwk: Callable[[], dict[str, Any]], member: str, mutation: str
) -> None:
    jwk: dict[str, Any] = make_jwk()
    original = jwk[member]
    assert isinstance(original, str)
    assert len(original) == 43  # all these members hold 32 bytes
    assert jwk_to_key(dict(jwk)) is not None  # the unmutated JWK is fine
    jwk[member] = B64_MUTATIONS[mutation](original)
    if mutation == "non-canonical trailing bits":
        # A lenient decoder maps both spellings to the same key: only strictness refuses it.
        lenient = base64.urlsafe_b64decode(jwk[member] + "=")
        assert lenient == base64.urlsafe_b64decode(original + "=")
    _assert_key_invalid(lambda: jwk_to_key(jwk))


def test_b64u_decode_accepts_every_canonical_length() -> None:
    for length in range(0, 40):
        data = bytes(range(length))
        text = b64u_encode(data)
        assert "=" not in text
        assert b64u_decode(text, "m") == data


def test_b64u_decode_errors_name_the_member() -> None:
    _assert_key_invalid(lambda: b64u_decode("AA==", "the_member"), match="'the_member'")


# --- JWK consistency checks ----------------------------------------------------------------


@pytest.mark.parametrize("include_private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_jwk_with_a_mismatched_kid_is_refused(kind: Kind, include_private: bool) -> None:
    jwk = key_to_jwk(_private(kind), include_private=include_private)
    jwk["kid"] = _private(kind, "other").kid
    _assert_key_invalid(lambda: jwk_to_key(jwk), match="does not match the key")


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_jwk_whose_private_and_public_members_disagree_is_refused(kind: Kind) -> None:
    jwk = key_to_jwk(_private(kind), include_private=True)
    other = key_to_jwk(_private(kind, "other"))
    for member in kind.jwk_members - {"kty", "crv", "use", "alg", "kid"}:
        jwk[member] = other[member]
    del jwk["kid"]
    _assert_key_invalid(lambda: jwk_to_key(jwk), match="private and public members do not match")


@pytest.mark.parametrize(
    ("member", "value"),
    [("use", "sig"), ("kty", "EC"), ("crv", "Ed25519"), ("alg", "HPKE-X448-SHA512-A256GCM")],
)
def test_jwk_with_a_wrong_descriptive_member_is_refused(member: str, value: str) -> None:
    jwk = key_to_jwk(_private(KIND["x25519"]).public_key())
    jwk[member] = value
    _assert_key_invalid(lambda: jwk_to_key(jwk))


@pytest.mark.parametrize("missing", ["kty", "alg", "x"])
def test_jwk_missing_a_required_member_is_refused(missing: str) -> None:
    jwk = key_to_jwk(_private(KIND["x25519"]).public_key())
    del jwk[missing]
    _assert_key_invalid(lambda: jwk_to_key(jwk), match=repr(missing))


@pytest.mark.parametrize("document", [[], "jwk", 7, None], ids=["list", "str", "int", "null"])
def test_jwk_that_is_not_an_object_is_refused(document: object) -> None:
    _assert_key_invalid(lambda: jwk_to_key(document))  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", [["Ed25519"], {"name": "Ed25519"}], ids=["array", "object"])
def test_jwk_whose_alg_is_not_a_string_is_refused(alg: object) -> None:
    jwk: dict[str, Any] = dict(key_to_jwk(_private(KIND["ed25519"]).public_key()))
    jwk["alg"] = alg
    _assert_key_invalid(lambda: jwk_to_key(jwk))


def test_p256_jwk_coordinates_must_be_32_bytes_each() -> None:
    jwk = key_to_jwk(_private(KIND["es256"]).public_key())
    jwk["x"] = b64u_encode(b"\x00" + b64u_decode(jwk["x"], "x"))
    _assert_key_invalid(lambda: jwk_to_key(jwk), match="32 bytes")


def test_p256_jwk_point_off_the_curve_is_refused() -> None:
    jwk = key_to_jwk(_private(KIND["p256"]).public_key())
    y = bytearray(b64u_decode(jwk["y"], "y"))
    y[-1] ^= 1
    jwk["y"] = b64u_encode(bytes(y))
    del jwk["kid"]
    _assert_key_invalid(lambda: jwk_to_key(jwk))


# --- JWK Sets of issuer keys ----------------------------------------------------------------


def _issuer_jwks(*keys: Mapping[str, Any]) -> dict[str, Any]:
    return {"keys": [dict(k) for k in keys]}


def test_jwks_of_issuer_public_keys_parses_into_a_pinned_set() -> None:
    ed, es = _private(KIND["ed25519"]).public_key(), _private(KIND["es256"]).public_key()
    key_set = parse_jwks(_roundtrip_json(_issuer_jwks(key_to_jwk(ed), key_to_jwk(es))))
    assert isinstance(key_set, IssuerKeySet)
    assert dict(key_set) == {ed.kid: ed, es.kid: es}
    assert key_set.require(es.kid) == es


def test_issuer_key_set_require_of_an_unknown_kid_raises_unknown_issuer() -> None:
    key_set = IssuerKeySet([IssuerPrivateKey.generate(SignatureAlgorithm.ED25519).public_key()])
    with pytest.raises(UnknownIssuerError) as caught:
        key_set.require("0" * 32)
    assert caught.value.code == "unknown_issuer"


def test_jwks_with_a_duplicate_key_is_refused() -> None:
    jwk = key_to_jwk(_private(KIND["ed25519"]).public_key())
    _assert_key_invalid(lambda: parse_jwks(_issuer_jwks(jwk, jwk)), match="duplicate")


@pytest.mark.parametrize("document", [{}, {"keys": []}, {"keys": {}}, [], "keys"])
def test_jwks_without_a_non_empty_keys_array_is_refused(document: object) -> None:
    _assert_key_invalid(lambda: parse_jwks(document))  # type: ignore[arg-type]


PRIVATE_MEMBER_JWKS: dict[str, Callable[[], dict[str, str]]] = {
    "ed25519 d": lambda: key_to_jwk(_private(KIND["ed25519"]), include_private=True),
    "es256 d": lambda: key_to_jwk(_private(KIND["es256"]), include_private=True),
    "xwing priv": lambda: key_to_jwk(_private(KIND["xwing"]), include_private=True),
    "kek k": lambda: key_to_jwk(_kek(), include_private=True),
}


@pytest.mark.parametrize("make_jwk", PRIVATE_MEMBER_JWKS.values(), ids=list(PRIVATE_MEMBER_JWKS))
def test_jwks_member_with_private_key_material_is_refused(
    make_jwk: Callable[[], dict[str, str]],
) -> None:
    good = key_to_jwk(_private(KIND["ed25519"], "good").public_key())
    document = _issuer_jwks(good, make_jwk())
    _assert_key_invalid(lambda: parse_jwks(document), match="member 1 carries private key")


@pytest.mark.parametrize("kind", RECIPIENT_KINDS, ids=RECIPIENT_IDS)
def test_recipient_jwk_is_refused_as_an_issuer_key_set_member(kind: Kind) -> None:
    document = _issuer_jwks(key_to_jwk(_private(kind).public_key()))
    _assert_key_invalid(lambda: parse_jwks(document), match="not an issuer public key")


def test_p256_recipient_jwk_relabelled_as_es256_is_still_refused_as_a_recipient() -> None:
    # Same kty and crv as an ES256 key; only alg and use tell the roles apart.
    jwk = key_to_jwk(_private(KIND["p256"]).public_key())
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    relabelled = {**jwk, "alg": "ES256"}  # use stays "enc"
    _assert_key_invalid(lambda: parse_jwks(_issuer_jwks(relabelled)), match="'use' must be 'sig'")


def test_load_issuer_key_set_reads_a_jwks_file_or_a_single_issuer_jwk(tmp_path: Path) -> None:
    ed, es = _private(KIND["ed25519"]).public_key(), _private(KIND["es256"]).public_key()
    jwks_path, single_path = tmp_path / "issuers.jwks", tmp_path / "issuer.pub.jwk"
    jwks_path.write_text(json.dumps(_issuer_jwks(key_to_jwk(ed), key_to_jwk(es))))
    single_path.write_text(json.dumps(key_to_jwk(es)))
    assert set(load_issuer_key_set(jwks_path)) == {ed.kid, es.kid}
    assert dict(load_issuer_key_set(single_path)) == {es.kid: es}


@pytest.mark.parametrize("kind", RECIPIENT_KINDS, ids=RECIPIENT_IDS)
def test_load_issuer_key_set_refuses_a_single_recipient_jwk(tmp_path: Path, kind: Kind) -> None:
    path = tmp_path / "device.pub.jwk"
    path.write_text(json.dumps(key_to_jwk(_private(kind).public_key())))
    _assert_key_invalid(lambda: load_issuer_key_set(path), match="neither")


# --- Key files ------------------------------------------------------------------------------


def _all_keys() -> list[tuple[str, Key]]:
    keys: list[tuple[str, Key]] = []
    for kind in KINDS:
        keys.append((f"{kind.name} private", _private(kind)))
        keys.append((f"{kind.name} public", _private(kind).public_key()))
    keys.append(("kek", _kek()))
    return keys


ALL_KEYS = _all_keys()


def _same_key(left: Key, right: Key) -> bool:
    if isinstance(left, KEK) and isinstance(right, KEK):
        return (left.label, left.secret_bytes()) == (right.label, right.secret_bytes())
    if isinstance(left, RecipientPrivateKey | IssuerPrivateKey):
        return (
            type(left) is type(right)
            and isinstance(right, RecipientPrivateKey | IssuerPrivateKey)
            and left.secret_bytes() == right.secret_bytes()
        )
    return type(left) is type(right) and left == right


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Run with umask 0, so a 0600 mode cannot come from the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_zero")
@pytest.mark.parametrize("key", [k for _, k in ALL_KEYS], ids=[n for n, _ in ALL_KEYS])
def test_save_key_writes_mode_0600_and_loads_back(tmp_path: Path, key: Key) -> None:
    path = tmp_path / "key.jwk"
    save_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same_key(load_key(path), key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.jwk"]


@pytest.mark.usefixtures("umask_zero")
def test_save_key_refuses_to_overwrite_by_default_and_leaves_the_file_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "device.jwk"
    path.write_bytes(b"original contents\n")
    path.chmod(0o640)
    before = path.stat()
    with pytest.raises(KeyFormatError, match="refusing to overwrite") as caught:
        save_key(path, _private(KIND["x25519"]))
    assert caught.value.code == "key_invalid"
    assert path.read_bytes() == b"original contents\n"
    after = path.stat()
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.jwk"]


def test_save_key_refuses_to_replace_a_symlink_and_leaves_its_target_alone(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"do not touch\n")
    link = tmp_path / "device.jwk"
    link.symlink_to(target)
    _assert_key_invalid(
        lambda: save_key(link, _private(KIND["x25519"])), match="refusing to overwrite"
    )
    assert link.is_symlink()
    assert target.read_bytes() == b"do not touch\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.jwk", "elsewhere"]


@pytest.mark.usefixtures("umask_zero")
def test_save_key_with_overwrite_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "device.jwk"
    path.write_bytes(b"old\n")
    path.chmod(0o644)
    key = _private(KIND["xwing"])
    save_key(path, key, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same_key(load_key(path), key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.jwk"]


def test_load_key_refuses_files_that_are_not_a_jwk(tmp_path: Path) -> None:
    cases = {
        "missing.jwk": None,
        "not-json.jwk": b"{not json",
        "not-utf8.jwk": b'{"kty": "\xff"}',
        "too-big.jwk": b" " * ((1 << 20) + 1),
        "array.jwk": b"[]",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        _assert_key_invalid(lambda path=path: load_key(path))  # type: ignore[misc]


# --- Secret hygiene ---------------------------------------------------------------------------


def _private_keys() -> list[tuple[str, RecipientPrivateKey | IssuerPrivateKey | KEK]]:
    keys: list[tuple[str, RecipientPrivateKey | IssuerPrivateKey | KEK]] = [
        (kind.name, _private(kind)) for kind in KINDS
    ]
    keys.append(("kek", _kek()))
    return keys


PRIVATE_KEYS = _private_keys()


@pytest.mark.parametrize("key", [k for _, k in PRIVATE_KEYS], ids=[n for n, _ in PRIVATE_KEYS])
def test_private_keys_refuse_pickling_and_copying(
    key: RecipientPrivateKey | IssuerPrivateKey | KEK,
) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(key)


@pytest.mark.parametrize("key", [k for _, k in PRIVATE_KEYS], ids=[n for n, _ in PRIVATE_KEYS])
def test_private_key_repr_does_not_reveal_the_secret(
    key: RecipientPrivateKey | IssuerPrivateKey | KEK,
) -> None:
    secret = key.secret_bytes()
    spellings = [
        secret.hex(),
        secret.hex().upper(),
        b64u_encode(secret),
        base64.b64encode(secret).decode(),
        repr(secret),
        str(int.from_bytes(secret, "big")),
        secret.hex()[:16],  # any sizeable fragment counts as a leak
    ]
    for text in (repr(key), str(key), f"{key!r}"):
        for spelling in spellings:
            assert spelling not in text


# --- Wrong-sized or out-of-range key material -------------------------------------------------


BAD_KEY_MATERIAL: dict[str, Callable[[], object]] = {
    "x25519 secret of 31 bytes": lambda: RecipientPrivateKey(KEM.X25519, bytes(31)),
    "xwing seed of 64 bytes": lambda: RecipientPrivateKey(KEM.XWING, bytes(64)),
    "p256 scalar zero": lambda: RecipientPrivateKey(KEM.P256, bytes(32)),
    "p256 scalar equal to the order": lambda: RecipientPrivateKey(
        KEM.P256, P256_N.to_bytes(32, "big")
    ),
    "p256 scalar all ones": lambda: RecipientPrivateKey(KEM.P256, b"\xff" * 32),
    "es256 scalar zero": lambda: IssuerPrivateKey(SignatureAlgorithm.ES256, bytes(32)),
    "ed25519 seed of 33 bytes": lambda: IssuerPrivateKey(SignatureAlgorithm.ED25519, bytes(33)),
    "x25519 public of 33 bytes": lambda: RecipientPublicKey(KEM.X25519, bytes(33)),
    "xwing public of 1215 bytes": lambda: RecipientPublicKey(KEM.XWING, bytes(1215)),
    "p256 compressed point": lambda: RecipientPublicKey(
        KEM.P256, b"\x02" + _p256_public(_secret("p"))[1:33]
    ),
    "es256 compressed point": lambda: IssuerPublicKey(
        SignatureAlgorithm.ES256, b"\x03" + _p256_public(_secret("p"))[1:33]
    ),
    "es256 point with a hybrid prefix": lambda: IssuerPublicKey(
        SignatureAlgorithm.ES256, b"\x06" + _p256_public(_secret("p"))[1:]
    ),
    "ed25519 public of 31 bytes": lambda: IssuerPublicKey(SignatureAlgorithm.ED25519, bytes(31)),
    "kek of 16 bytes": lambda: KEK("label", bytes(16)),
    "kek label with a space": lambda: KEK("my kek", bytes(32)),
    "empty kek label": lambda: KEK("", bytes(32)),
    "kek label of 65 characters": lambda: KEK("k" * 65, bytes(32)),
}


@pytest.mark.parametrize("build", BAD_KEY_MATERIAL.values(), ids=list(BAD_KEY_MATERIAL))
def test_malformed_key_material_is_refused_with_key_invalid(build: Callable[[], object]) -> None:
    _assert_key_invalid(build)


# --- Names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "kem"),
    [("x25519", KEM.X25519), ("P256", KEM.P256), ("XWing", KEM.XWING), ("xwing", KEM.XWING)],
)
def test_kem_from_label_is_case_insensitive(label: str, kem: KEM) -> None:
    assert KEM.from_label(label) is kem
    assert KEM.from_label(kem.label) is kem


@pytest.mark.parametrize("label", ["", "p-256", "P-256", "x448", " x25519", "x25519\n", "mlkem768"])
def test_kem_from_label_refuses_unknown_names(label: str) -> None:
    _assert_key_invalid(lambda: KEM.from_label(label), match="kem must be one of")


@pytest.mark.parametrize("name", ["Ed25519", "ES256"])
def test_signature_algorithm_parse_takes_the_exact_jose_names(name: str) -> None:
    assert SignatureAlgorithm.parse(name) == name


@pytest.mark.parametrize("name", ["", "ed25519", "ED25519", "es256", "EdDSA", "ES384", "ES256 "])
def test_signature_algorithm_parse_refuses_other_spellings(name: str) -> None:
    _assert_key_invalid(lambda: SignatureAlgorithm.parse(name), match="alg must be")


# --- Signature encoding -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [KIND["ed25519"], KIND["es256"]], ids=["ed25519", "es256"])
def test_issuer_signature_is_64_bytes_and_verifies(kind: Kind) -> None:
    signer = _private(kind)
    assert isinstance(signer, IssuerPrivateKey)
    signature = signer.sign(b"message")
    assert len(signature) == 64
    signer.public_key().verify(b"message", signature)
    with pytest.raises(BadSignatureError) as caught:
        signer.public_key().verify(b"messagE", signature)
    assert caught.value.code == "bad_signature"


def test_es256_signature_with_a_zero_padded_s_is_refused() -> None:
    # r || 0x00 || s parses to the same integers if only the split point is fixed, so the
    # exact 64-byte length is what keeps a second spelling of one signature out.
    signer = _private(KIND["es256"])
    assert isinstance(signer, IssuerPrivateKey)
    signature = signer.sign(b"message")
    padded = signature[:32] + b"\x00" + signature[32:]
    with pytest.raises(BadSignatureError) as caught:
        signer.public_key().verify(b"message", padded)
    assert caught.value.code == "bad_signature"
