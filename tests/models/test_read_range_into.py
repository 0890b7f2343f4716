"""Package.read_range_into: any plaintext range, decrypted straight into the caller's buffer."""

from __future__ import annotations

import io
import os

import pytest

from modelseal.envelope import CHUNK_SIZE_BYTES, AtRest, OpenPolicy, open_stream, seal_bytes
from modelseal.errors import ChunkTagError, UsageError
from modelseal.keys import KEK

C = CHUNK_SIZE_BYTES
LENGTHS = [0, 1, C - 1, C, C + 1, 3 * C + 5, 300 * C + 3]


def _package(length: int) -> tuple[bytes, bytes, KEK]:
    kek = KEK.generate("models")
    plaintext = os.urandom(length)
    return plaintext, seal_bytes(plaintext, AtRest(kek)), kek


def _points(length: int) -> list[int]:
    candidates = {0, 1, C - 1, C, C + 1, 2 * C, length // 2, length - C, length - 1, length}
    return sorted(p for p in candidates if 0 <= p <= length)


@pytest.mark.parametrize("length", LENGTHS)
def test_every_boundary_range_reads_exactly_the_plaintext(length: int) -> None:
    plaintext, sealed, kek = _package(length)
    package = open_stream(io.BytesIO(sealed), kek, OpenPolicy())
    points = _points(length)
    for start in points:
        for stop in points:
            if stop < start:
                continue
            out = bytearray(stop - start)
            assert package.read_range_into(start, out) == stop - start
            assert out == plaintext[start:stop], (start, stop)


def test_a_range_longer_than_one_read_piece_is_read_whole() -> None:
    plaintext, sealed, kek = _package(600 * C + 77)
    package = open_stream(io.BytesIO(sealed), kek, OpenPolicy())
    out = bytearray(len(plaintext) - 10)
    package.read_range_into(5, memoryview(out))
    assert out == plaintext[5:-5]


def test_a_tampered_chunk_fails_and_leaves_the_buffer_zeroed() -> None:
    _, sealed, kek = _package(4 * C)
    damaged = bytearray(sealed)
    damaged[-(2 * (C + 16))] ^= 1  # inside the third chunk of four
    package = open_stream(io.BytesIO(bytes(damaged)), kek, OpenPolicy())
    out = bytearray(b"\xff" * (3 * C))
    with pytest.raises(ChunkTagError):
        package.read_range_into(C // 2, out)
    assert not any(out)


@pytest.mark.parametrize(("start", "size"), [(-1, 1), (0, 4 * C + 1), (4 * C, 1)])
def test_a_range_outside_the_plaintext_is_refused(start: int, size: int) -> None:
    _, sealed, kek = _package(4 * C)
    package = open_stream(io.BytesIO(sealed), kek, OpenPolicy())
    with pytest.raises(UsageError, match="range must satisfy"):
        package.read_range_into(start, bytearray(size))


def test_a_read_only_buffer_is_refused() -> None:
    _, sealed, kek = _package(100)
    package = open_stream(io.BytesIO(sealed), kek, OpenPolicy())
    with pytest.raises(UsageError, match="writable"):
        package.read_range_into(0, memoryview(bytes(10)))
