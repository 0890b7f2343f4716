"""The FORMAT v1 decryption vectors in tests/vectors/testdata, through every reader entry point.

Each file is opened with :func:`open_bytes`, :func:`open_into`, and :func:`open_stream` over a
seekable and over a one-pass input. A ``success`` vector must yield the plaintext whose SHA-256
the file states; any other vector must raise the error class whose ``code`` the file states and
release no plaintext. The file format is described in tests/vectors/README.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelseal.envelope import OpenPolicy, RType, inspect, open_bytes, open_into, open_stream
from modelseal.errors import ModelSealError
from modelseal.keys import (
    KEK,
    KEM,
    SignatureAlgorithm,
    jwk_to_key,
    parse_jwks,
)

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
TESTDATA = VECTORS_DIR / "testdata"

HEADER_KEYS = frozenset(
    {
        "expect",
        "payload",
        "identity",
        "issuers",
        "audience",
        "now",
        "leeway",
        "compressed",
        "comment",
    }
)
# Every error code of docs/FORMAT.md §12 that a package can cause: the corpus must have each.
REQUIRED_CODES = frozenset(
    {
        "bad_magic",
        "truncated",
        "header_length",
        "enc_length",
        "wrap_length",
        "sig_length",
        "header_invalid",
        "unsupported_suite",
        "unsupported_alg",
        "unknown_issuer",
        "bad_signature",
        "expired",
        "wrong_audience",
        "licence_expired",
        "recipient_mismatch",
        "dek_unwrap_failed",
        "commitment_mismatch",
        "chunk_tag_failed",
        "body_length",
    }
)
BOUNDARY_LENGTHS = frozenset({0, 16383, 16384, 16385})
# More than one 4 MiB segment of the reader's pipeline.
MULTI_MIB_BYTES = 4 * 1024 * 1024 + 1
MIN_INVALID_VECTORS = 40


def _error_classes() -> dict[str, type[ModelSealError]]:
    classes: dict[str, type[ModelSealError]] = {}
    pending: list[type[ModelSealError]] = [ModelSealError]
    while pending:
        cls = pending.pop()
        classes[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return classes


ERROR_CLASSES = _error_classes()


@dataclass(frozen=True)
class VectorFile:
    """A parsed test vector."""

    name: str
    expect: str
    payload: str | None
    identity: dict[str, Any]
    issuers: dict[str, Any] | None
    audience: str | None
    now: int
    leeway: int
    comment: str
    container: bytes

    def key(self) -> Any:
        return jwk_to_key(self.identity)

    def policy(self) -> OpenPolicy:
        issuers = parse_jwks(self.issuers) if self.issuers is not None else None
        return OpenPolicy(
            issuers=issuers, audience=self.audience, now=self.now, leeway_seconds=self.leeway
        )


_LINE = re.compile(r"([a-z]+): (.+)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def parse_vector(name: str, data: bytes) -> VectorFile:
    """Parse a vector file strictly: unknown, repeated, missing or malformed keys are errors.

    Raises:
        ValueError: The file does not follow tests/vectors/README.md.
    """
    head, separator, body = data.partition(b"\n\n")
    if not separator:
        raise ValueError("no blank line between the header and the container")
    fields: dict[str, str] = {}
    for line in head.decode("ascii").split("\n"):
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"malformed header line {line!r}")
        key, value = match.groups()
        if key not in HEADER_KEYS:
            raise ValueError(f"unknown header key {key!r}")
        if key in fields:
            raise ValueError(f"header key {key!r} repeated")
        fields[key] = value
    for required in ("expect", "identity", "now", "comment"):
        if required not in fields:
            raise ValueError(f"header key {required!r} missing")

    expect = fields["expect"]
    if expect != "success" and expect not in ERROR_CLASSES:
        raise ValueError(f"expect {expect!r} is neither success nor an error code")
    payload = fields.get("payload")
    if (payload is not None) != (expect == "success"):
        raise ValueError("payload must be given exactly when expect is success")
    if payload is not None and not _SHA256_HEX.fullmatch(payload):
        raise ValueError("payload must be a lowercase hex SHA-256")

    identity = json.loads(fields["identity"])
    is_kek = identity.get("kty") == "oct"
    for member in ("issuers", "audience"):
        if (member in fields) == is_kek:
            raise ValueError(f"{member} must be given exactly when identity is not a KEK")
    compressed = fields.get("compressed")
    if compressed not in (None, "zlib"):
        raise ValueError(f"compressed must be zlib, got {compressed!r}")
    for member in ("now", "leeway"):
        if member in fields and not fields[member].isdigit():
            raise ValueError(f"{member} must be a non-negative decimal integer")
    return VectorFile(
        name=name,
        expect=expect,
        payload=payload,
        identity=identity,
        issuers=json.loads(fields["issuers"]) if "issuers" in fields else None,
        audience=fields.get("audience"),
        now=int(fields["now"]),
        leeway=int(fields.get("leeway", "0")),
        comment=fields["comment"],
        container=zlib.decompress(body) if compressed == "zlib" else body,
    )


def load(path: Path) -> VectorFile:
    return parse_vector(path.name, path.read_bytes())


VECTOR_PATHS = sorted(TESTDATA.iterdir()) if TESTDATA.is_dir() else []


def vector_params() -> list[Any]:
    """One pytest parameter per vector file, named after it."""
    return [pytest.param(path, id=path.name) for path in VECTOR_PATHS]


def assert_outcome(vector: VectorFile, open_plaintext: Callable[[], bytes]) -> None:
    """Open the vector and check the outcome it states."""
    if vector.expect == "success":
        plaintext = open_plaintext()
        assert hashlib.sha256(plaintext).hexdigest() == vector.payload
        return
    released: bytes | None = None
    with pytest.raises(ModelSealError) as info:
        released = open_plaintext()
    assert released is None
    assert info.value.code == vector.expect, f"{vector.name}: {info.value!r}"
    assert type(info.value) is ERROR_CLASSES[info.value.code]


class OnePassReader(io.RawIOBase):
    """A non-seekable input, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


@pytest.mark.parametrize("path", vector_params())
def test_open_bytes_matches_vector(path: Path) -> None:
    vector = load(path)
    assert_outcome(
        vector, lambda: open_bytes(vector.container, vector.key(), vector.policy()).plaintext
    )


@pytest.mark.parametrize("path", vector_params())
def test_open_into_matches_vector_and_leaves_no_plaintext_on_failure(path: Path) -> None:
    vector = load(path)
    # A plaintext is never longer than its container, so this buffer always suffices.
    out = bytearray(len(vector.container))

    def run() -> bytes:
        header = open_into(vector.container, out, vector.key(), vector.policy())
        return bytes(out[: header.length])

    assert_outcome(vector, run)
    if vector.expect != "success":
        assert not any(out), "plaintext left in the output buffer after a failure"


@pytest.mark.parametrize("path", vector_params())
def test_open_stream_matches_vector(path: Path) -> None:
    vector = load(path)
    assert_outcome(
        vector,
        lambda: open_stream(io.BytesIO(vector.container), vector.key(), vector.policy()).read_all(),
    )


@pytest.mark.parametrize("path", vector_params())
def test_one_pass_stream_matches_vector(path: Path) -> None:
    vector = load(path)

    def run() -> bytes:
        src = io.BufferedReader(OnePassReader(vector.container))
        return open_stream(src, vector.key(), vector.policy()).read_all()

    assert_outcome(vector, run)


def test_every_vector_is_named_after_its_expected_outcome() -> None:
    for path in VECTOR_PATHS:
        vector = load(path)
        assert path.name.startswith(vector.expect + "_"), path.name


def test_readme_coverage_table_lists_every_vector() -> None:
    readme = (VECTORS_DIR / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z0-9_]+)`", readme))
    missing = sorted(path.name for path in VECTOR_PATHS if path.name not in listed)
    assert not missing, f"README.md does not list {missing}"


def test_corpus_has_at_least_40_invalid_vectors() -> None:
    invalid = [path for path in VECTOR_PATHS if load(path).expect != "success"]
    assert len(invalid) >= MIN_INVALID_VECTORS


def test_corpus_covers_every_container_error_code() -> None:
    codes = {load(path).expect for path in VECTOR_PATHS}
    assert sorted(REQUIRED_CODES - codes) == []


def test_corpus_covers_every_kem_signature_algorithm_rtype_and_boundary_length() -> None:
    kems: set[KEM] = set()
    algs: set[SignatureAlgorithm] = set()
    lengths: dict[RType, set[int]] = {RType.HPKE: set(), RType.KEK: set()}
    for path in VECTOR_PATHS:
        vector = load(path)
        if vector.expect != "success":
            continue
        header = inspect(io.BytesIO(vector.container)).header
        lengths[header.rtype].add(header.length)
        if header.rtype is RType.HPKE:
            assert header.kem is not None
            assert header.sig is not None
            kems.add(header.kem)
            algs.add(header.sig.alg)
    assert kems == set(KEM)
    assert algs == set(SignatureAlgorithm)
    for rtype, seen in lengths.items():
        assert seen >= BOUNDARY_LENGTHS, f"{rtype}: {sorted(BOUNDARY_LENGTHS - seen)} missing"
        assert max(seen) >= MULTI_MIB_BYTES, f"{rtype}: no multi-MiB vector"


def _synthetic(header: str, body: bytes = b"MSEAL/1\n") -> bytes:
    return header.encode("ascii") + b"\n\n" + body


_KEK_IDENTITY = json.dumps({"kty": "oct", "alg": "A256GCMKW", "kid": "k", "k": "A" * 43})


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"expect: truncated\nidentity: {_KEK_IDENTITY}\nnow: 1\ncomment: c\nextra: x",
         "unknown header key"),
        (f"expect: truncated\nexpect: truncated\nidentity: {_KEK_IDENTITY}\nnow: 1\ncomment: c",
         "repeated"),
        (f"expect: truncated\nidentity: {_KEK_IDENTITY}\ncomment: c", "'now' missing"),
        (f"expect: success\nidentity: {_KEK_IDENTITY}\nnow: 1\ncomment: c", "payload"),
        (f"expect: no_such_code\nidentity: {_KEK_IDENTITY}\nnow: 1\ncomment: c", "expect"),
        (f"expect: truncated\nidentity: {_KEK_IDENTITY}\naudience: d\nnow: 1\ncomment: c",
         "audience"),
        (f"expect: truncated\nidentity: {_KEK_IDENTITY}\nnow: -1\ncomment: c", "now"),
        (f"expect: truncated\nidentity: {_KEK_IDENTITY}\nnow: 1\ncompressed: gzip\ncomment: c",
         "compressed"),
    ],
)  # fmt: skip
def test_vector_parser_rejects_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vector("synthetic", _synthetic(header))


def test_vector_parser_accepts_a_well_formed_kek_vector() -> None:
    header = f"expect: truncated\nidentity: {_KEK_IDENTITY}\nnow: 5\ncomment: c"
    vector = parse_vector("synthetic", _synthetic(header))
    assert (vector.expect, vector.now, vector.leeway) == ("truncated", 5, 0)
    assert vector.container == b"MSEAL/1\n"
    assert vector.issuers is None
    assert vector.audience is None
    assert isinstance(vector.key(), KEK)
