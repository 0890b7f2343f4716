"""Files, streams and random access: all-or-nothing output, one-pass inputs, constant memory.

* ``open_file`` writes plaintext only to a private temp file beside the target and renames it
  into place after the final chunk has verified; on any failure nothing new is left in the
  directory and a file already at the target is untouched.
* ``seal_file`` does the same when its source changes size while it is being read.
* ``Package.read_chunk`` and ``read_range`` equal slicing, on in-memory and on real files; a
  corrupted chunk fails alone, with its index, and from then on the package keeps raising that
  same error.
* A one-pass (non-seekable) source decrypts, and truncation or trailing data is reported as
  ``body_length``.
* Sealing and opening a 256 MiB stream that never exists in memory as a whole stays within a
  small, fixed amount of Python memory.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import random
import stat
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import psutil
import pytest

from modelseal.envelope import (
    Claims,
    IssueTo,
    OpenPolicy,
    Package,
    open_file,
    open_stream,
    seal_bytes,
    seal_file,
    seal_stream,
)
from modelseal.envelope.pipeline import SEGMENT_CHUNKS
from modelseal.errors import (
    AudienceError,
    BadMagicError,
    BadSignatureError,
    BodyLengthError,
    ChunkTagError,
    CommitmentMismatchError,
    ExpiredError,
    ModelSealError,
    RecipientMismatchError,
    TruncatedError,
    UsageError,
)
from modelseal.keys import (
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
)

NOW = 1_800_000_000
AUDIENCE = "device-7f3a"
CHUNK = 16384
SEALED_CHUNK = CHUNK + 16
SEGMENT_BYTES = SEGMENT_CHUNKS * CHUNK  # the reader and sealer move data in segments
THREE_CHUNKS = 2 * CHUNK + 1000
TWO_SEGMENTS = SEGMENT_BYTES + 2 * CHUNK + 1000

DEVICE = RecipientPrivateKey.generate(KEM.X25519)
OTHER_DEVICE = RecipientPrivateKey.generate(KEM.X25519)
ISSUER = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
POLICY = OpenPolicy(issuers=IssuerKeySet([ISSUER.public_key()]), audience=AUDIENCE, now=NOW)


def _claims() -> Claims:
    return Claims(
        iss="issuer.example",
        sub="u-5b1e",
        aud=AUDIENCE,
        mid="model-llm-small",
        jti="jti-0001",
        iat=NOW - 10,
        exp=NOW + 3600,
    )


TO_DEVICE = IssueTo(DEVICE.public_key(), ISSUER, _claims())


@dataclass(frozen=True)
class Sealed:
    """A package, its plaintext and where its body and chunks start."""

    data: bytes
    plaintext: bytes

    @property
    def body_offset(self) -> int:
        chunks = len(self.plaintext) // CHUNK + 1
        return len(self.data) - (56 + len(self.plaintext) + 16 * chunks)

    def chunk_offset(self, index: int) -> int:
        return self.body_offset + 56 + index * SEALED_CHUNK

    def with_flip(self, offset: int) -> bytes:
        data = bytearray(self.data)
        data[offset] ^= 0x01
        return bytes(data)

    def with_chunk_corrupted(self, index: int) -> bytes:
        return self.with_flip(self.chunk_offset(index) + 5)


@functools.cache
def _sealed(size: int) -> Sealed:
    plaintext = random.Random(size).randbytes(size)
    return Sealed(seal_bytes(plaintext, TO_DEVICE), plaintext)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- open_file: all or nothing ------------------------------------------------------------------


def test_open_file_renames_the_plaintext_into_place_only_after_the_final_chunk(
    tmp_path: Path,
) -> None:
    sealed = _sealed(TWO_SEGMENTS)
    source = _write(tmp_path / "package.mseal", sealed.data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.bin"
    seen: list[list[tuple[str, int]]] = []

    def progress(done: int) -> None:
        seen.append([(p.name, stat.S_IMODE(p.stat().st_mode)) for p in out_dir.iterdir()])

    open_file(source, target, DEVICE, POLICY, progress=progress)

    assert len(seen) == 2  # one call per segment
    for listing in seen:
        assert len(listing) == 1, listing
        ((name, mode),) = listing
        assert name.startswith(".model.bin.")
        assert name.endswith(".part")
        assert mode == 0o600
    assert [p.name for p in out_dir.iterdir()] == ["model.bin"]
    assert target.read_bytes() == sealed.plaintext


@dataclass(frozen=True)
class Failure:
    """A way to make ``open_file`` fail, and the error it must raise."""

    make: Callable[[Sealed], bytes]
    error: type[ModelSealError]
    key: RecipientPrivateKey = DEVICE
    policy: OpenPolicy = POLICY


def _final_chunk_offset(sealed: Sealed) -> int:
    return sealed.chunk_offset(len(sealed.plaintext) // CHUNK)


FAILURES = {
    "bad-magic": Failure(lambda s: s.with_flip(0), BadMagicError),
    "truncated-framing": Failure(lambda s: s.data[: s.body_offset - 1], TruncatedError),
    "bad-signature": Failure(lambda s: s.with_flip(s.body_offset - 1), BadSignatureError),
    "wrong-audience": Failure(
        lambda s: s.data,
        AudienceError,
        policy=OpenPolicy(issuers=POLICY.issuers, audience="device-0000", now=NOW),
    ),
    "expired": Failure(
        lambda s: s.data,
        ExpiredError,
        policy=OpenPolicy(issuers=POLICY.issuers, audience=AUDIENCE, now=NOW + 3600 + 61),
    ),
    "another-device": Failure(lambda s: s.data, RecipientMismatchError, key=OTHER_DEVICE),
    "altered-salt": Failure(lambda s: s.with_flip(s.body_offset), CommitmentMismatchError),
    "first-chunk": Failure(lambda s: s.with_chunk_corrupted(0), ChunkTagError),
    # The final chunk lives in the second segment: the first was already written to the
    # temp file when this one fails.
    "final-chunk": Failure(lambda s: s.with_flip(len(s.data) - 1), ChunkTagError),
    "final-chunk-cut-short": Failure(lambda s: s.data[:-1], BodyLengthError),
    "final-chunk-dropped": Failure(lambda s: s.data[: _final_chunk_offset(s)], BodyLengthError),
    "trailing-byte": Failure(lambda s: s.data + b"\x00", BodyLengthError),
}


@pytest.mark.parametrize("existing", [False, True], ids=["no-target", "existing-target"])
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_open_file_leaves_nothing_behind_when_it_fails(
    failure: Failure, existing: bool, tmp_path: Path
) -> None:
    sealed = _sealed(TWO_SEGMENTS)
    source = _write(tmp_path / "package.mseal", failure.make(sealed))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.bin"
    before = None
    if existing:
        target.write_bytes(b"the previous model")
        before = target.stat()

    with pytest.raises(failure.error) as raised:
        open_file(source, target, failure.key, failure.policy)

    assert raised.value.code == failure.error.code
    if existing:
        assert before is not None
        assert sorted(p.name for p in out_dir.iterdir()) == ["model.bin"]
        assert target.read_bytes() == b"the previous model"
        after = target.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    else:
        assert list(out_dir.iterdir()) == []


# --- seal_file: a source that changes size ------------------------------------------------------


def _seal_file_while(
    tmp_path: Path, size: int, change: Callable[[Path], None], *, existing: bool
) -> tuple[Path, pytest.ExceptionInfo[UsageError]]:
    source = _write(tmp_path / "model.bin", random.Random(size).randbytes(size))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.mseal"
    if existing:
        target.write_bytes(b"the previous package")
    changed: list[int] = []

    def progress(done: int) -> None:
        if not changed:
            change(source)
            changed.append(done)

    with pytest.raises(UsageError) as raised:
        seal_file(source, target, TO_DEVICE, progress=progress)
    assert changed
    return out_dir, raised


@pytest.mark.parametrize("existing", [False, True], ids=["no-target", "existing-target"])
def test_seal_file_of_a_source_that_grows_leaves_nothing_behind(
    tmp_path: Path, existing: bool
) -> None:
    def grow(path: Path) -> None:
        with path.open("ab") as f:
            f.write(b"\x00")

    out_dir, raised = _seal_file_while(tmp_path, SEGMENT_BYTES + 1000, grow, existing=existing)
    assert raised.value.code == "usage_error"
    if existing:
        assert [p.name for p in out_dir.iterdir()] == ["model.mseal"]
        assert (out_dir / "model.mseal").read_bytes() == b"the previous package"
    else:
        assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["no-target", "existing-target"])
def test_seal_file_of_a_source_that_shrinks_leaves_nothing_behind(
    tmp_path: Path, existing: bool
) -> None:
    # Five segments, cut back to one as soon as the first is sealed: the sealer reads at most
    # one segment ahead, so it meets the cut whatever the exact timing.
    def shrink(path: Path) -> None:
        os.truncate(path, SEGMENT_BYTES + 10)

    size = 4 * SEGMENT_BYTES + CHUNK * 3
    out_dir, raised = _seal_file_while(tmp_path, size, shrink, existing=existing)
    assert raised.value.code == "usage_error"
    if existing:
        assert [p.name for p in out_dir.iterdir()] == ["model.mseal"]
        assert (out_dir / "model.mseal").read_bytes() == b"the previous package"
    else:
        assert list(out_dir.iterdir()) == []


def test_seal_file_output_opens_and_leaves_only_the_package(tmp_path: Path) -> None:
    plaintext = random.Random(3).randbytes(THREE_CHUNKS)
    source = _write(tmp_path / "model.bin", plaintext)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seal_file(source, out_dir / "model.mseal", TO_DEVICE)
    assert [p.name for p in out_dir.iterdir()] == ["model.mseal"]
    assert stat.S_IMODE((out_dir / "model.mseal").stat().st_mode) == 0o600
    package = open_stream(io.BytesIO((out_dir / "model.mseal").read_bytes()), DEVICE, POLICY)
    assert package.read_all() == plaintext


# --- Random access -----------------------------------------------------------------------------

SOURCES = ["bytes-io", "file"]


@pytest.fixture
def files() -> Iterator[ExitStack]:
    """Closes the package files that tests keep open for their Package's lifetime."""
    with ExitStack() as stack:
        yield stack


def _open_at(sealed_bytes: bytes, source: str, tmp_path: Path, files: ExitStack) -> Package:
    if source == "bytes-io":
        return open_stream(io.BytesIO(sealed_bytes), DEVICE, POLICY)
    path = _write(tmp_path / "package.mseal", sealed_bytes)
    return open_stream(files.enter_context(path.open("rb", buffering=0)), DEVICE, POLICY)


def _boundaries(length: int) -> list[int]:
    points = {0, 1, length - 1, length}
    for k in range(1, length // CHUNK + 1):
        points |= {k * CHUNK - 1, k * CHUNK, k * CHUNK + 1}
    return sorted(p for p in points if 0 <= p <= length)


RANDOM_ACCESS_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, THREE_CHUNKS]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("size", RANDOM_ACCESS_SIZES)
def test_read_chunk_returns_each_chunk_alone(
    size: int, source: str, tmp_path: Path, files: ExitStack
) -> None:
    sealed = _sealed(size)
    package = _open_at(sealed.data, source, tmp_path, files)
    assert package.chunk_count == size // CHUNK + 1
    # Backwards, so that no chunk is read after its predecessor by accident of order.
    for k in reversed(range(package.chunk_count)):
        assert package.read_chunk(k) == sealed.plaintext[k * CHUNK : (k + 1) * CHUNK]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("size", RANDOM_ACCESS_SIZES)
def test_read_range_equals_slicing_at_every_pair_of_boundaries(
    size: int, source: str, tmp_path: Path, files: ExitStack
) -> None:
    sealed = _sealed(size)
    package = _open_at(sealed.data, source, tmp_path, files)
    points = _boundaries(size)
    for start in points:
        for stop in points:
            if start <= stop:
                assert package.read_range(start, stop) == sealed.plaintext[start:stop], (
                    start,
                    stop,
                )


def test_read_range_and_read_chunk_refuse_positions_outside_the_plaintext() -> None:
    sealed = _sealed(THREE_CHUNKS)
    package = open_stream(io.BytesIO(sealed.data), DEVICE, POLICY)
    misuses: list[Callable[[], object]] = [
        lambda: package.read_chunk(-1),
        lambda: package.read_chunk(3),
        lambda: package.read_range(10, 9),
        lambda: package.read_range(-1, 5),
        lambda: package.read_range(0, THREE_CHUNKS + 1),
    ]
    for misuse in misuses:
        with pytest.raises(UsageError) as raised:
            misuse()
        assert raised.value.code == "usage_error"
    # Usage errors are the caller's, not the package's: it still works afterwards.
    assert package.read_range(0, 3) == sealed.plaintext[:3]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("corrupted", [0, 1, 2])
def test_a_corrupted_chunk_fails_alone_with_its_index(
    corrupted: int, source: str, tmp_path: Path, files: ExitStack
) -> None:
    sealed = _sealed(THREE_CHUNKS)
    package = _open_at(sealed.with_chunk_corrupted(corrupted), source, tmp_path, files)
    for k in range(3):
        if k != corrupted:
            assert package.read_chunk(k) == sealed.plaintext[k * CHUNK : (k + 1) * CHUNK]
    with pytest.raises(ChunkTagError) as raised:
        package.read_chunk(corrupted)
    assert raised.value.code == "chunk_tag_failed"
    assert raised.value.index == corrupted


@pytest.mark.parametrize(
    ("start", "stop"),
    [(CHUNK - 10, CHUNK + 10), (0, THREE_CHUNKS), (CHUNK, CHUNK + 1), (2 * CHUNK - 1, 2 * CHUNK)],
)
def test_a_range_touching_a_corrupted_chunk_fails_with_its_index(start: int, stop: int) -> None:
    sealed = _sealed(THREE_CHUNKS)
    package = open_stream(io.BytesIO(sealed.with_chunk_corrupted(1)), DEVICE, POLICY)
    assert package.read_range(2 * CHUNK, THREE_CHUNKS) == sealed.plaintext[2 * CHUNK :]
    with pytest.raises(ChunkTagError) as raised:
        package.read_range(start, stop)
    assert raised.value.index == 1


FIRST_FAILURES: dict[str, Callable[[Package], Any]] = {
    "read_chunk": lambda p: p.read_chunk(1),
    "read_range": lambda p: p.read_range(CHUNK, CHUNK + 1),
    "decrypt_to": lambda p: p.decrypt_to(io.BytesIO()),
    "read_all": lambda p: p.read_all(),
    "readinto": lambda p: p.readinto(bytearray(THREE_CHUNKS)),
}


@pytest.mark.parametrize("first", FIRST_FAILURES.values(), ids=FIRST_FAILURES.keys())
def test_after_an_error_the_package_keeps_raising_the_same_error(
    first: Callable[[Package], Any],
) -> None:
    sealed = _sealed(THREE_CHUNKS)
    package = open_stream(io.BytesIO(sealed.with_chunk_corrupted(1)), DEVICE, POLICY)
    with pytest.raises(ChunkTagError) as raised:
        first(package)
    error = raised.value
    assert error.index == 1
    out = bytearray(b"\xa5" * THREE_CHUNKS)
    later_calls: list[Callable[[Package], object]] = [
        *FIRST_FAILURES.values(),
        lambda p: p.read_chunk(0),
        lambda p: p.readinto(out),
    ]
    for later in later_calls:
        with pytest.raises(ChunkTagError) as again:
            later(package)
        assert again.value is error
    # readinto wiped its buffer rather than leave the verified chunk 0 in it.
    assert out == bytes(THREE_CHUNKS)


# --- One-pass (non-seekable) sources -------------------------------------------------------------


class OneWay(io.RawIOBase):
    """A read-only, non-seekable stream over bytes (like a socket), with short reads."""

    def __init__(self, data: bytes, max_read: int = 1 << 30) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._max_read = max_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._data) - self._pos, self._max_read)
        view[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("max_read", [1 << 30, 1000], ids=["whole-reads", "short-reads"])
@pytest.mark.parametrize("size", [0, CHUNK, THREE_CHUNKS, TWO_SEGMENTS])
def test_a_one_way_stream_decrypts_into_a_sink(size: int, max_read: int) -> None:
    sealed = _sealed(size)
    package = open_stream(OneWay(sealed.data, max_read), DEVICE, POLICY)  # type: ignore[arg-type]
    sink = io.BytesIO()
    assert package.decrypt_to(sink) == size
    assert sink.getvalue() == sealed.plaintext


def test_a_one_way_stream_has_no_random_access_and_decrypts_once() -> None:
    sealed = _sealed(THREE_CHUNKS)
    package = open_stream(OneWay(sealed.data), DEVICE, POLICY)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        package.read_chunk(0)
    with pytest.raises(UsageError):
        package.read_range(0, 1)
    package.decrypt_to(io.BytesIO())
    with pytest.raises(UsageError) as raised:
        package.decrypt_to(io.BytesIO())
    assert raised.value.code == "usage_error"


def _cut_points(sealed: Sealed) -> dict[str, tuple[int, type[ModelSealError]]]:
    body = sealed.body_offset
    final = _final_chunk_offset(sealed)
    return {
        "in-the-framing": (body - 1, TruncatedError),
        "in-the-salt": (body + 10, BodyLengthError),
        "after-the-commitment": (body + 56, BodyLengthError),
        "in-chunk-0": (body + 56 + 100, BodyLengthError),
        "at-a-chunk-boundary": (sealed.chunk_offset(1), BodyLengthError),
        "in-the-second-segment": (sealed.chunk_offset(SEGMENT_CHUNKS + 1) + 3, BodyLengthError),
        "before-the-final-chunk": (final, BodyLengthError),
        "inside-the-final-tag": (len(sealed.data) - 8, BodyLengthError),
        "one-byte-short": (len(sealed.data) - 1, BodyLengthError),
    }


def _open_one_way(data: bytes, sink: io.BytesIO) -> None:
    open_stream(OneWay(data), DEVICE, POLICY).decrypt_to(sink)  # type: ignore[arg-type]


CUTS = list(_cut_points(_sealed(TWO_SEGMENTS)))


@pytest.mark.parametrize("cut", CUTS)
def test_a_truncated_one_way_stream_is_rejected(cut: str) -> None:
    sealed = _sealed(TWO_SEGMENTS)
    size, error = _cut_points(sealed)[cut]
    sink = io.BytesIO()
    with pytest.raises(error) as raised:
        _open_one_way(sealed.data[:size], sink)
    assert raised.value.code == error.code
    # A one-pass sink may hold whole verified segments, never anything else.
    released = sink.getvalue()
    assert len(released) % SEGMENT_BYTES == 0
    assert released == sealed.plaintext[: len(released)]


@pytest.mark.parametrize(
    "extra",
    [b"\x00", b"\x00" * SEALED_CHUNK, random.Random(5).randbytes(100)],
    ids=["one-byte", "a-chunk", "garbage"],
)
@pytest.mark.parametrize("one_way", [True, False], ids=["one-way", "seekable"])
def test_trailing_data_after_the_final_chunk_is_rejected(extra: bytes, one_way: bool) -> None:
    sealed = _sealed(THREE_CHUNKS)
    data = sealed.data + extra
    src: Any = OneWay(data) if one_way else io.BytesIO(data)
    with pytest.raises(BodyLengthError) as raised:
        open_stream(src, DEVICE, POLICY).decrypt_to(io.BytesIO())
    assert raised.value.code == "body_length"


# --- Constant memory ---------------------------------------------------------------------------

STREAM_BYTES = 256 * 1024 * 1024
PYTHON_PEAK_LIMIT_BYTES = 40 * 1024 * 1024


RSS_GROWTH_LIMIT_BYTES = 96 * 1024 * 1024


class RSSWatch:
    """Samples this process's resident set size every 5 ms while in use."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._baseline = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> RSSWatch:
        self._baseline = self._peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        """Peak resident set size above the size on entry."""
        return self._peak - self._baseline


class Generated(io.RawIOBase):
    """``size`` pseudo-random bytes made on demand from a 64 KiB pool; hashes what it gives."""

    def __init__(self, size: int) -> None:
        self._pool = memoryview(random.Random(11).randbytes(2 * 65536))
        self._remaining = size
        self._turn = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._remaining)
        done = 0
        while done < n:
            # A start that moves by an odd step, so that neighbouring chunks differ.
            self._turn = (self._turn + 4093) % 65536
            step = min(n - done, 65536)
            view[done : done + step] = self._pool[self._turn : self._turn + step]
            done += step
        self.digest.update(view[:n])
        self._remaining -= n
        return n


class HashingSink:
    """Discards what it is given, keeping only its hash and size."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: memoryview, /) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def test_sealing_and_opening_a_256_mib_stream_runs_in_constant_memory() -> None:
    source = Generated(STREAM_BYTES)
    sink = HashingSink()
    read_fd, write_fd = os.pipe()

    def seal() -> None:
        with open(write_fd, "wb") as pipe_in:
            seal_stream(cast(BinaryIO, source), pipe_in, TO_DEVICE, length=STREAM_BYTES)

    rss = RSSWatch()
    tracemalloc.start()
    try:
        with rss, ThreadPoolExecutor(max_workers=1) as sealer:
            sealed = sealer.submit(seal)
            # Closing the read end, even on failure, ends a sealer blocked on a full pipe.
            with open(read_fd, "rb", buffering=0) as pipe_out:
                package = open_stream(pipe_out, DEVICE, POLICY)
                package.decrypt_to(sink)
            sealed.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == STREAM_BYTES
    assert sink.digest.digest() == source.digest.digest()
    assert peak < PYTHON_PEAK_LIMIT_BYTES, f"peak Python allocation {peak / 2**20:.1f} MiB"
    # tracemalloc does not see the segment buffers (mmap) or pyca's own allocations; the
    # resident set does. Whole-stream buffering would add at least 256 MiB here.
    assert rss.growth < RSS_GROWTH_LIMIT_BYTES, f"resident set grew {rss.growth / 2**20:.1f} MiB"
