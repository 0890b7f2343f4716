"""JWK (RFC 7517, RFC 8037) encoding of modelseal keys, and key files.

The encodings, normative in ``docs/KEYS.md``:

=====================  ===========================================================
key                    JWK members
=====================  ===========================================================
X25519 recipient       ``kty=OKP crv=X25519 x [d]``, ``alg=HPKE-X25519-SHA256-A256GCM``
P-256 recipient        ``kty=EC crv=P-256 x y [d]``, ``alg=HPKE-P256-SHA256-A256GCM``
X-Wing recipient       ``kty=AKP pub [priv]``, ``alg=HPKE-XWING-SHA256-A256GCM``
Ed25519 issuer         ``kty=OKP crv=Ed25519 x [d]``, ``alg=Ed25519``
ES256 issuer           ``kty=EC crv=P-256 x y [d]``, ``alg=ES256``
KEK                    ``kty=oct k``, ``alg=A256GCMKW``, ``kid`` = the label
=====================  ===========================================================

Recipient keys carry ``use=enc``, issuer keys ``use=sig``. ``kid`` is the
FORMAT §6 key id; a JWK whose ``kid`` disagrees with its key is refused. X-Wing
follows the "AKP" (algorithm key pair) shape: ``pub`` is the 1216-byte public
key, ``priv`` the 32-byte seed. All binary members are base64url without
padding, decoded strictly (no padding, no stray characters, canonical trailing
bits).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelseal._ijson import no_duplicate_members
from modelseal.errors import KeyFormatError
from modelseal.keys.issuer import (
    IssuerKeySet,
    IssuerPrivateKey,
    IssuerPublicKey,
    SignatureAlgorithm,
)
from modelseal.keys.kek import KEK
from modelseal.keys.kem import KEM, RecipientPrivateKey, RecipientPublicKey

__all__ = [
    "Key",
    "b64u_decode",
    "b64u_encode",
    "jwk_to_key",
    "key_to_jwk",
    "load_issuer_key_set",
    "load_key",
    "parse_jwks",
    "save_key",
    "write_private_file",
]

Key = RecipientPublicKey | RecipientPrivateKey | IssuerPublicKey | IssuerPrivateKey | KEK

_HPKE_ALGS = {
    KEM.X25519: "HPKE-X25519-SHA256-A256GCM",
    KEM.P256: "HPKE-P256-SHA256-A256GCM",
    KEM.XWING: "HPKE-XWING-SHA256-A256GCM",
}
_KEM_BY_ALG = {alg: kem for kem, alg in _HPKE_ALGS.items()}
KEK_ALG = "A256GCMKW"
_B64U = re.compile(r"[A-Za-z0-9_-]*")
MAX_KEY_FILE_BYTES = 1 << 20


_no_duplicates = no_duplicate_members(
    lambda name: KeyFormatError(f"duplicate JSON member {name!r} in key file")
)


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: object, member: str) -> bytes:
    """Strictly decode base64url without padding; ``member`` names the field in errors."""
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise KeyFormatError(f"JWK member {member!r} must be unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"JWK member {member!r} must be unpadded base64url") from None
    if b64u_encode(raw) != text:
        raise KeyFormatError(f"JWK member {member!r} is not canonical base64url")
    return raw


def key_to_jwk(key: Key, *, include_private: bool = False) -> dict[str, str]:
    """Encode ``key`` as a JWK; private members only with ``include_private=True``."""
    if isinstance(key, KEK):
        if not include_private:
            raise KeyFormatError("a KEK has no public form")
        return {
            "kty": "oct",
            "alg": KEK_ALG,
            "use": "enc",
            "kid": key.label,
            "k": b64u_encode(key.secret_bytes()),
        }
    if isinstance(key, RecipientPrivateKey | IssuerPrivateKey):
        jwk = key_to_jwk(key.public_key())
        if include_private:
            member = "priv" if jwk["kty"] == "AKP" else "d"
            jwk[member] = b64u_encode(key.secret_bytes())
        return jwk
    if isinstance(key, RecipientPublicKey):
        base = {"use": "enc", "alg": _HPKE_ALGS[key.kem], "kid": key.kid}
        if key.kem is KEM.X25519:
            return {"kty": "OKP", "crv": "X25519", "x": b64u_encode(key.raw), **base}
        if key.kem is KEM.P256:
            return {
                "kty": "EC",
                "crv": "P-256",
                "x": b64u_encode(key.raw[1:33]),
                "y": b64u_encode(key.raw[33:]),
                **base,
            }
        return {"kty": "AKP", "pub": b64u_encode(key.raw), **base}
    base = {"use": "sig", "alg": str(key.alg), "kid": key.kid}
    if key.alg is SignatureAlgorithm.ED25519:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64u_encode(key.raw), **base}
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u_encode(key.raw[1:33]),
        "y": b64u_encode(key.raw[33:]),
        **base,
    }


def _member(jwk: Mapping[str, Any], name: str) -> Any:
    if name not in jwk:
        raise KeyFormatError(f"JWK is missing member {name!r}")
    return jwk[name]


def _expect(jwk: Mapping[str, Any], name: str, value: str) -> None:
    if jwk.get(name, value) != value:
        raise KeyFormatError(f"JWK member {name!r} must be {value!r}, got {jwk[name]!r}")


def jwk_to_key(jwk: Mapping[str, Any]) -> Key:
    """Decode a JWK produced by :func:`key_to_jwk` (or an equivalent one).

    ``alg`` is required: it decides whether an ``OKP``/``EC`` key is a recipient or an
    issuer key, so one key can never be used in both roles by accident.

    Raises:
        KeyFormatError: The JWK is malformed, of an unknown kind, or its ``kid`` is wrong.
    """
    if not isinstance(jwk, Mapping):
        raise KeyFormatError("a JWK must be a JSON object")
    kty, alg = _member(jwk, "kty"), _member(jwk, "alg")
    if not isinstance(kty, str) or not isinstance(alg, str):
        raise KeyFormatError("JWK members 'kty' and 'alg' must be strings")
    key: Key
    if kty == "oct":
        _expect(jwk, "alg", KEK_ALG)
        _expect(jwk, "use", "enc")
        label = _member(jwk, "kid")
        if not isinstance(label, str):
            raise KeyFormatError("KEK kid must be a string")
        return KEK(label, b64u_decode(_member(jwk, "k"), "k"))
    if alg in _KEM_BY_ALG:
        kem = _KEM_BY_ALG[alg]
        _expect(jwk, "use", "enc")
        secret_member = "priv" if kem is KEM.XWING else "d"
        stray = "d" if kem is KEM.XWING else "priv"
        if stray in jwk:
            raise KeyFormatError(f"JWK member {stray!r} does not belong to a {kem.label} key")
        if kem is KEM.X25519:
            _expect(jwk, "kty", "OKP")
            _expect(jwk, "crv", "X25519")
            raw = b64u_decode(_member(jwk, "x"), "x")
        elif kem is KEM.P256:
            raw = _ec_point(jwk)
        else:
            _expect(jwk, "kty", "AKP")
            raw = b64u_decode(_member(jwk, "pub"), "pub")
        public = RecipientPublicKey(kem, raw)
        if secret_member in jwk:
            key = RecipientPrivateKey(kem, b64u_decode(jwk[secret_member], secret_member))
            if key.public_key() != public:
                raise KeyFormatError("JWK private and public members do not match")
        else:
            key = public
    elif alg in ("Ed25519", "ES256"):
        sig_alg = SignatureAlgorithm.parse(alg)
        _expect(jwk, "use", "sig")
        if sig_alg is SignatureAlgorithm.ED25519:
            _expect(jwk, "kty", "OKP")
            _expect(jwk, "crv", "Ed25519")
            raw = b64u_decode(_member(jwk, "x"), "x")
        else:
            raw = _ec_point(jwk)
        if "priv" in jwk:
            raise KeyFormatError("JWK member 'priv' does not belong to an issuer key")
        ipub = IssuerPublicKey(sig_alg, raw)
        if "d" in jwk:
            key = IssuerPrivateKey(sig_alg, b64u_decode(jwk["d"], "d"))
            if key.public_key() != ipub:
                raise KeyFormatError("JWK private and public members do not match")
        else:
            key = ipub
    else:
        raise KeyFormatError(f"unsupported JWK alg {alg!r}")
    if "kid" in jwk and jwk["kid"] != key.kid:
        raise KeyFormatError(f"JWK kid {jwk['kid']!r} does not match the key ({key.kid})")
    return key


def _ec_point(jwk: Mapping[str, Any]) -> bytes:
    _expect(jwk, "kty", "EC")
    _expect(jwk, "crv", "P-256")
    x, y = b64u_decode(_member(jwk, "x"), "x"), b64u_decode(_member(jwk, "y"), "y")
    if len(x) != 32 or len(y) != 32:
        raise KeyFormatError("P-256 JWK coordinates must be 32 bytes each")
    return b"\x04" + x + y


def parse_jwks(document: Mapping[str, Any]) -> IssuerKeySet:
    """Parse a JWK Set of issuer public keys into a pinned :class:`IssuerKeySet`.

    Raises:
        KeyFormatError: Not a JWK Set, a member is not an issuer public key, or a
            member carries private key material.
    """
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list) or not keys:
        raise KeyFormatError("a JWK Set must have a non-empty 'keys' array")
    parsed: list[IssuerPublicKey] = []
    for index, jwk in enumerate(keys):
        if isinstance(jwk, Mapping) and ({"d", "priv", "k"} & set(jwk)):
            raise KeyFormatError(f"JWK Set member {index} carries private key material")
        key = jwk_to_key(jwk)
        if not isinstance(key, IssuerPublicKey):
            raise KeyFormatError(f"JWK Set member {index} is not an issuer public key")
        parsed.append(key)
    return IssuerKeySet(parsed)


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFormatError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFormatError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFormatError(f"key file {path} is not JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise KeyFormatError(f"key file {path} holds JSON this loader refuses") from None


def load_key(path: str | os.PathLike[str]) -> Key:
    """Load one JWK file."""
    return jwk_to_key(_read_json(Path(path)))


def load_issuer_key_set(path: str | os.PathLike[str]) -> IssuerKeySet:
    """Load pinned issuer keys from a JWK Set file, or from a single public JWK file."""
    document = _read_json(Path(path))
    if isinstance(document, Mapping) and "keys" in document:
        return parse_jwks(document)
    key = jwk_to_key(document) if isinstance(document, Mapping) else None
    if not isinstance(key, IssuerPublicKey):
        raise KeyFormatError(f"{path} holds neither a JWK Set nor an issuer public JWK")
    return IssuerKeySet([key])


def write_private_file(path: str | os.PathLike[str], data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` atomically with mode 0600: a temp file in the same directory, then rename.

    Raises:
        KeyFormatError: ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            # link() fails if the target exists, so an existing key is never replaced.
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise KeyFormatError(f"{target} already exists; refusing to overwrite") from None
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_key(path: str | os.PathLike[str], key: Key, *, overwrite: bool = False) -> None:
    """Save ``key`` as a JWK file (mode 0600; private members included for private keys)."""
    private = isinstance(key, RecipientPrivateKey | IssuerPrivateKey | KEK)
    document = key_to_jwk(key, include_private=private)
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    write_private_file(path, data, overwrite=overwrite)
