"""Regression tests for hostile inputs and awkward streams found in review.

Each test names the failure it guards: a short write committed as success, a
number literal Python refuses, a wrapper stream whose descriptor holds other
bytes, plaintext in ``repr``, the wrong kind of key, and non-blocking streams.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
from pathlib import Path

import pytest

from modelseal.envelope import (
    AtRest,
    Claims,
    IssueTo,
    OpenPolicy,
    open_bytes,
    open_file,
    open_stream,
    seal_bytes,
    seal_file,
)
from modelseal.envelope.header import parse_header
from modelseal.errors import HeaderError, KeyFormatError, RecipientMismatchError, UsageError
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
    load_key,
)

NOW = 1_800_000_000
DEVICE = RecipientPrivateKey.generate(KEM.X25519)
ISSUER = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
CLAIMS = Claims(iss="i", sub="s", aud="device", mid="m", jti="j", iat=NOW, exp=NOW + 60)
POLICY = OpenPolicy(issuers=IssuerKeySet([ISSUER.public_key()]), audience="device", now=NOW)
PLAINTEXT = os.urandom(300_000)
PACKAGE = seal_bytes(PLAINTEXT, IssueTo(DEVICE.public_key(), ISSUER, CLAIMS))


def _with_file_size_limit(limit: int) -> tuple[int, int]:
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    return old


def test_open_file_never_commits_a_short_write_as_success(tmp_path: Path) -> None:
    src = tmp_path / "model.mseal"
    src.write_bytes(PACKAGE)
    out = tmp_path / "out" / "model.bin"
    out.parent.mkdir()
    old = _with_file_size_limit(200_000)
    try:
        with pytest.raises(OSError, match=r"File too large|accepted no bytes"):
            open_file(src, out, DEVICE, POLICY)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    assert list(out.parent.iterdir()) == []


def test_seal_file_never_commits_a_short_write_as_success(tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(PLAINTEXT)
    out = tmp_path / "out" / "model.mseal"
    out.parent.mkdir()
    old = _with_file_size_limit(200_000)
    try:
        with pytest.raises(OSError, match=r"File too large|accepted no bytes"):
            seal_file(src, out, IssueTo(DEVICE.public_key(), ISSUER, CLAIMS))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("literal", ["9" * 5000, "-" + "9" * 17, "1e99999", "9" * 5000 + ".5"])
def test_number_literals_python_refuses_are_header_invalid(literal: str) -> None:
    header = b'{"rtype":"kek","rcpt":"k","len":1,"ctype":"a","claims":{"x":' + literal.encode()
    with pytest.raises(HeaderError) as info:
        parse_header(header + b"}}")
    assert info.value.code == "header_invalid"


def test_a_gzip_wrapped_package_opens_through_seek_and_read(tmp_path: Path) -> None:
    path = tmp_path / "model.mseal.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(PACKAGE)
    with gzip.open(path, "rb") as handle:
        package = open_stream(handle, DEVICE, POLICY)  # type: ignore[arg-type]
        assert package.read_range(100, 70_000) == PLAINTEXT[100:70_000]
        assert package.read_all() == PLAINTEXT


def test_opened_package_repr_never_shows_the_plaintext() -> None:
    opened = open_bytes(PACKAGE, DEVICE, POLICY)
    assert PLAINTEXT[:16].hex() not in repr(opened)
    assert repr(PLAINTEXT[:16])[2:-1] not in repr(opened)


@pytest.mark.parametrize("key", [DEVICE.public_key(), ISSUER], ids=["public-key", "issuer-key"])
def test_an_at_rest_package_refuses_a_key_that_is_not_a_kek(key: object) -> None:
    package = seal_bytes(b"x" * 100, AtRest(KEK.generate("kek-1"), CLAIMS))
    with pytest.raises(RecipientMismatchError) as info:
        open_bytes(package, key, OpenPolicy(now=NOW))  # type: ignore[arg-type]
    assert info.value.code == "recipient_mismatch"


class _NonBlocking(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> None:  # type: ignore[override]
        return None


def test_a_non_blocking_stream_is_refused_not_reported_as_truncated() -> None:
    with pytest.raises(UsageError):
        open_stream(_NonBlocking(), DEVICE, POLICY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ['{"kty": 1e99999, "alg": "x"}', "[" * 100_000, '{"kty": ' + "9" * 5000 + "}"]
)
def test_key_files_python_cannot_parse_are_key_invalid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "key.jwk"
    path.write_text(text)
    with pytest.raises(KeyFormatError):
        load_key(path)
