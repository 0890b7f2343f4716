"""Opening: verify a FORMAT v1 package and decrypt it, whole, streamed, or by random access.

Checks run in this order, and each failure raises its own error class before
any later step runs (docs/FORMAT.md §10 and §12):

1. framing: magic, ``header_len``, header, suite/alg, ``enc_len``, ``wrap_len``,
   ``sig_len`` (no cryptography yet); then the kind of key offered must suit the
   rtype (a device key for ``hpke``, a KEK for ``kek``);
2. issuer signature against the pinned set (``hpke``);
3. claims: audience and delivery deadline (``hpke``), licence expiry (both);
4. recipient: ``rcpt`` and KEM (or the KEK label) match the key offered;
5. DEK unwrap (HPKE or KEK);
6. body length against ``len`` (when the input's size is known) and key commitment;
7. chunks, each authenticated before its plaintext is released.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from typing_extensions import TypeIs

from modelseal.envelope.atomic import AtomicOutput
from modelseal.envelope.body import (
    BODY_PREFIX_BYTES,
    CHUNK_SIZE_BYTES,
    ENCRYPTED_CHUNK_BYTES,
    SALT_BYTES,
    BodyCipher,
    body_length,
    chunk_count,
    transform_parallel,
)
from modelseal.envelope.container import Framing, read_framing
from modelseal.envelope.header import Header, RType
from modelseal.envelope.pipeline import (
    ProgressCallback,
    Segment,
    Sink,
    plan_segments,
    read_fully,
    run_segments,
    write_fully,
)
from modelseal.errors import (
    AudienceError,
    BodyLengthError,
    ExpiredError,
    LicenceExpiredError,
    ModelSealError,
    RecipientMismatchError,
    UsageError,
)
from modelseal.keys.issuer import IssuerKeySet
from modelseal.keys.kek import KEKWrapper
from modelseal.keys.kem import HPKERecipient, is_hpke_recipient

__all__ = [
    "MAX_LEEWAY_SECONDS",
    "OpenPolicy",
    "OpenedPackage",
    "Package",
    "inspect",
    "open_bytes",
    "open_file",
    "open_into",
    "open_stream",
]

MAX_LEEWAY_SECONDS = 300
_RANGE_PIECE_CHUNKS = 256
"""Chunks :meth:`Package.read_range_into` decrypts per read: 4 MiB of ciphertext."""
# The largest possible framing: magic, header_len, a 64 KiB header, the X-Wing keyblock
# and a signature. Parsing an in-memory package looks at no more than this.
MAX_FRAMING_BYTES = 8 + 4 + 65536 + 2 + 1120 + 2 + 48 + 2 + 64


@dataclass(frozen=True, slots=True)
class OpenPolicy:
    """What a reader checks besides the cryptography.

    Attributes:
        issuers: Pinned issuer keys; required to open an ``hpke`` package.
        audience: This device's id; required to open an ``hpke`` package.
        now: Unix time to check against (default: the system clock).
        leeway_seconds: Clock skew allowed on ``exp`` and ``lexp`` (0..300).
    """

    issuers: IssuerKeySet | None = None
    audience: str | None = None
    now: int | None = None
    leeway_seconds: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise UsageError(
                f"leeway_seconds must be 0..{MAX_LEEWAY_SECONDS}, got {self.leeway_seconds}"
            )

    def clock(self) -> int:
        """The time to check claims against."""
        return int(time.time()) if self.now is None else self.now


Key = HPKERecipient | KEKWrapper


def _is_kek(key: object) -> TypeIs[KEKWrapper]:
    return isinstance(getattr(key, "label", None), str) and callable(getattr(key, "unwrap", None))


def _check_licence(header: Header, now: int, policy: OpenPolicy) -> None:
    lexp = header.claims.lexp if header.claims is not None else None
    if lexp is not None and now > lexp + policy.leeway_seconds:
        raise LicenceExpiredError(f"licence expired at {lexp} (now {now}); fetch the model again")


def _verify_and_unwrap(framing: Framing, key: Key, policy: OpenPolicy) -> bytes:
    """Run checks 2-5 of the module docstring and return the DEK.

    Claims are only ever judged once they are authenticated: an issued package's
    header by the issuer signature, an at-rest package's header by the KEK unwrap
    (its AAD binds H), so an at-rest ``lexp`` is checked after the unwrap.
    """
    header = framing.header
    now = policy.clock()
    if header.rtype is RType.KEK:
        if not _is_kek(key):
            raise RecipientMismatchError("an at-rest (kek) package needs a KEK")
        if header.rcpt != key.label:
            raise RecipientMismatchError("package is wrapped under another KEK")
        dek = framing.unwrap_dek(key)
        _check_licence(header, now, policy)
        return dek
    if not is_hpke_recipient(key):
        raise RecipientMismatchError("an issued (hpke) package needs a device key, not a KEK")
    if policy.issuers is None or policy.audience is None:
        raise UsageError("opening an issued package needs pinned issuers and an audience")
    framing.verify_signature(policy.issuers)
    claims = header.claims
    if claims is None:  # Header validation guarantees claims for hpke.
        raise UsageError("issued package without claims")
    if claims.aud != policy.audience:
        raise AudienceError("package audience does not match this device")
    if now > claims.exp + policy.leeway_seconds:
        raise ExpiredError(f"package expired at {claims.exp} (now {now})")
    _check_licence(header, now, policy)
    if header.kem != key.kem or header.rcpt != key.kid:
        raise RecipientMismatchError("package is addressed to another device key")
    return framing.unwrap_dek(key)


def _plain_file_descriptor(src: BinaryIO) -> int | None:
    """The descriptor to ``pread`` from, only when it holds exactly the bytes ``src`` reads.

    Wrappers such as ``gzip.GzipFile`` expose the descriptor of the file *under*
    them, which holds other bytes; those are read through ``seek``/``readinto``.
    """
    raw = src.raw if isinstance(src, io.BufferedReader) else src
    if isinstance(raw, io.FileIO):
        return raw.fileno()
    return None


class Package:
    """A verified package whose body can be decrypted whole, streamed, or by random access.

    Obtain one from :func:`open_stream`. The signature, claims, recipient, DEK and
    key commitment have been checked; chunk tags are checked as chunks are read.
    After any error, every later call raises that same error again.
    """

    def __init__(
        self, framing: Framing, cipher: BodyCipher, src: BinaryIO, body_start: int | None
    ) -> None:
        self._framing = framing
        self._cipher = cipher
        self._src = src
        self._body_start = body_start  # None: a one-pass, non-seekable stream
        self._consumed = False
        self._error: ModelSealError | None = None

    @property
    def header(self) -> Header:
        """The verified header."""
        return self._framing.header

    @property
    def package_id(self) -> str:
        """Hex SHA256(prelude || keyblock)."""
        return self._framing.package_id

    @property
    def length(self) -> int:
        """Plaintext length in bytes."""
        return self._framing.header.length

    @property
    def chunk_count(self) -> int:
        """Number of chunks in the body."""
        return chunk_count(self.length)

    def _guard(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: ModelSealError) -> ModelSealError:
        self._error = error
        return error

    def _pread(self, offset: int, view: memoryview) -> None:
        assert self._body_start is not None
        position = self._body_start + offset
        fileno = _plain_file_descriptor(self._src)
        if fileno is None:
            self._src.seek(position)
            got = read_fully(self._src, view)
        else:
            got = 0
            while got < len(view):
                n = os.preadv(fileno, [view[got:]], position + got)
                if n == 0:
                    break
                got += n
        if got != len(view):
            raise BodyLengthError("body is shorter than its header's len")

    def read_chunk(self, index: int) -> bytes:
        """Decrypt and return chunk ``index`` alone (random access).

        Raises:
            ChunkTagError: The chunk failed authentication.
            UsageError: The index is out of range or the input is not seekable.
        """
        self._guard()
        if not 0 <= index < self.chunk_count:
            raise UsageError(f"chunk index must be 0..{self.chunk_count - 1}, got {index}")
        out = bytearray(CHUNK_SIZE_BYTES)
        n = self._decrypt_chunks(index, 1, memoryview(out))
        return bytes(out[:n])

    def _decrypt_chunks(self, first: int, count: int, out: memoryview) -> int:
        if self._body_start is None:
            raise UsageError("random access needs a seekable input")
        last = self.chunk_count - 1
        final = first + count - 1 == last
        start = BODY_PREFIX_BYTES + first * ENCRYPTED_CHUNK_BYTES
        size = body_length(self.length) - start if final else count * ENCRYPTED_CHUNK_BYTES
        buf = memoryview(bytearray(size))
        try:
            self._pread(start, buf)
            return self._cipher.decrypt_chunks(first, buf, out, final=final)
        except ModelSealError as exc:
            raise self._fail(exc) from None

    def read_range(self, start: int, stop: int) -> bytes:
        """Return plaintext bytes ``[start, stop)``, decrypting only the chunks they span.

        Raises:
            ChunkTagError: A spanned chunk failed authentication.
            UsageError: The range is not within 0..len.
        """
        self._guard()
        if not 0 <= start <= stop <= self.length:
            raise UsageError(f"range must satisfy 0 <= start <= stop <= {self.length}")
        if start == stop:
            return b""
        first = start // CHUNK_SIZE_BYTES
        last = min((stop - 1) // CHUNK_SIZE_BYTES, self.chunk_count - 1)
        out = bytearray((last - first + 1) * CHUNK_SIZE_BYTES)
        self._decrypt_chunks(first, last - first + 1, memoryview(out))
        offset = start - first * CHUNK_SIZE_BYTES
        return bytes(out[offset : offset + (stop - start)])

    def read_range_into(self, start: int, out: bytearray | memoryview) -> int:
        """Decrypt plaintext bytes ``[start, start + len(out))`` straight into ``out``.

        Chunks that lie wholly inside the range are decrypted in place into ``out``,
        at most :data:`_RANGE_PIECE_CHUNKS` at a time, so memory stays constant for any
        range length; a chunk the range only partly covers goes through a one-chunk
        scratch buffer that is zeroed afterwards. This is how a caller decrypts one
        tensor into the buffer its runtime will use, with no other plaintext copy.

        Returns:
            The number of bytes written (``len(out)``).

        Raises:
            ChunkTagError: A spanned chunk failed authentication; ``out`` is zeroed.
            UsageError: The range is not within 0..len, ``out`` is read-only, or the
                input is not seekable.
        """
        self._guard()
        view = memoryview(out).cast("B")
        stop = start + len(view)
        if not 0 <= start <= stop <= self.length:
            raise UsageError(f"range must satisfy 0 <= start <= stop <= {self.length}")
        if view.readonly:
            raise UsageError("the output buffer must be writable")
        scratch: bytearray | None = None
        pos = start
        try:
            while pos < stop:
                index, skip = divmod(pos, CHUNK_SIZE_BYTES)
                if stop == self.length:
                    whole = self.chunk_count - index
                else:
                    whole = (stop - pos) // CHUNK_SIZE_BYTES
                if skip == 0 and whole > 0:
                    count = min(whole, _RANGE_PIECE_CHUNKS)
                    at = pos - start
                    pos += self._decrypt_chunks(
                        index, count, view[at : at + count * CHUNK_SIZE_BYTES]
                    )
                    continue
                if scratch is None:
                    scratch = bytearray(CHUNK_SIZE_BYTES)
                got = self._decrypt_chunks(index, 1, memoryview(scratch))
                take = min(index * CHUNK_SIZE_BYTES + got, stop) - pos
                view[pos - start : pos - start + take] = scratch[skip : skip + take]
                pos += take
        except BaseException:
            view[:] = bytes(len(view))
            raise
        finally:
            if scratch is not None:
                scratch[:] = bytes(len(scratch))
        return len(view)

    def decrypt_to(
        self, dst: Sink, *, overlap_io: bool = True, progress: ProgressCallback | None = None
    ) -> int:
        """Stream the whole plaintext into ``dst``, writing each segment once its chunks verify.

        On an error ``dst`` holds only verified plaintext from before the failing
        chunk; a caller that needs all-or-nothing uses :func:`open_file` or
        :meth:`read_all`.

        Raises:
            ChunkTagError, BodyLengthError.
        """
        self._guard()
        if self._body_start is None:
            if self._consumed:
                raise UsageError("a one-pass stream can be decrypted only once")
            self._consumed = True

        def read(segment: Segment, view: memoryview) -> None:
            if self._body_start is not None:
                self._pread(BODY_PREFIX_BYTES + segment.first * ENCRYPTED_CHUNK_BYTES, view)
                return
            if read_fully(self._src, view) != len(view):
                raise BodyLengthError("body is shorter than its header's len")
            # One-pass input: look one byte past the final chunk before it is opened,
            # so a body longer than len is reported as such, not as a tag failure.
            if segment.final and self._src.read(1):
                raise BodyLengthError("data follows the final chunk")

        def transform(segment: Segment, data: memoryview, out: memoryview) -> int:
            return self._cipher.decrypt_chunks(segment.first, data, out, final=segment.final)

        try:
            run_segments(
                plan_segments(self.length),
                read=read,
                transform=transform,
                write=lambda view: write_fully(dst, view),
                input_size=lambda s: s.ciphertext_bytes,
                output_size=lambda s: s.plaintext_bytes,
                overlap_io=overlap_io,
                progress=progress,
            )
        except ModelSealError as exc:
            raise self._fail(exc) from None
        return self.length

    def readinto(self, out: bytearray | memoryview) -> int:
        """Decrypt the whole plaintext into ``out`` (at least ``len`` bytes); all-or-nothing.

        On failure ``out`` is zeroed, so no unverified or partial plaintext remains.
        """
        view = memoryview(out).cast("B")
        if len(view) < self.length:
            raise UsageError(f"output buffer must hold {self.length} bytes, got {len(view)}")
        sink = _BufferSink(view)
        try:
            self.decrypt_to(sink, overlap_io=False)
        except BaseException:
            view[: self.length] = bytes(self.length)
            raise
        return self.length

    def read_all(self) -> bytes:
        """Decrypt and return the whole plaintext, only after every chunk has verified.

        For seekable input the body's size was checked against ``len`` when the
        package was opened, so the output is allocated at once. A one-pass stream
        grows the output with the verified segments instead, so that a ``len`` the
        stream cannot back never turns into one huge allocation.
        """
        if self._body_start is not None:
            out = bytearray(self.length)
            self.readinto(out)
            return bytes(out)
        sink = io.BytesIO()
        try:
            self.decrypt_to(sink, overlap_io=False)
        except BaseException:
            view = sink.getbuffer()
            view[:] = bytes(len(view))
            view.release()
            raise
        return sink.getvalue()


class _BufferSink:
    """A write-only file-like object that fills a buffer in order."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def write(self, data: memoryview, /) -> int:
        n = len(data)
        self._view[self._pos : self._pos + n] = data
        self._pos += n
        return n


def open_stream(src: BinaryIO, key: Key, policy: OpenPolicy) -> Package:
    """Verify a package read from ``src`` and return a :class:`Package` for its body.

    A seekable ``src`` allows random access and has its total size checked against
    the header's ``len`` before any chunk is opened; a one-pass stream is checked as
    it is read.

    Raises:
        Any :class:`~modelseal.errors.ModelSealError` of docs/FORMAT.md §12.
    """
    try:
        seekable = src.seekable()
    except (AttributeError, OSError):
        seekable = False
    origin = src.tell() if seekable else 0
    framing = read_framing(src)
    dek = _verify_and_unwrap(framing, key, policy)
    length = framing.header.length
    body_start: int | None = None
    if seekable:
        body_start = origin + framing.body_offset
        end = src.seek(0, io.SEEK_END)
        if end - body_start != body_length(length):
            raise BodyLengthError(
                f"body is {end - body_start} bytes, but len={length} needs {body_length(length)}"
            )
        src.seek(body_start)
    prefix = bytearray(BODY_PREFIX_BYTES)
    if read_fully(src, memoryview(prefix)) != BODY_PREFIX_BYTES:
        raise BodyLengthError("body is shorter than its salt and commitment")
    cipher = BodyCipher(dek, bytes(prefix[:SALT_BYTES]), framing.body_context())
    cipher.check_commitment(prefix[SALT_BYTES:])
    return Package(framing, cipher, src, body_start)


@dataclass(frozen=True, slots=True)
class OpenedPackage:
    """A fully verified package and its plaintext (kept out of ``repr``)."""

    header: Header
    package_id: str
    plaintext: bytes = field(repr=False)


def _open_memory(
    data: bytes | bytearray | memoryview, key: Key, policy: OpenPolicy
) -> tuple[Framing, BodyCipher, memoryview]:
    """Verify an in-memory package up to the commitment; return its framing, cipher, chunks."""
    view = memoryview(data).cast("B")
    framing = read_framing(io.BytesIO(view[:MAX_FRAMING_BYTES].tobytes()))
    dek = _verify_and_unwrap(framing, key, policy)
    length = framing.header.length
    body = view[framing.body_offset :]
    if len(body) != body_length(length):
        raise BodyLengthError(
            f"body is {len(body)} bytes, but len={length} needs {body_length(length)}"
        )
    cipher = BodyCipher(dek, bytes(body[:SALT_BYTES]), framing.body_context())
    cipher.check_commitment(body[SALT_BYTES:BODY_PREFIX_BYTES])
    return framing, cipher, body[BODY_PREFIX_BYTES:]


def _decrypt_memory(
    cipher: BodyCipher, chunks: memoryview, out: memoryview, length: int, threads: int
) -> None:
    try:
        transform_parallel(cipher, chunks, out[:length], decrypt=True, threads=threads)
    except BaseException:
        out[:length] = bytes(length)
        raise


def open_into(
    data: bytes | bytearray | memoryview,
    out: bytearray | memoryview,
    key: Key,
    policy: OpenPolicy,
    *,
    threads: int = 1,
) -> Header:
    """Verify an in-memory package and decrypt it into ``out``; all-or-nothing, no extra copy.

    On failure ``out`` is zeroed. ``threads > 1`` decrypts large bodies in parallel.
    """
    framing, cipher, chunks = _open_memory(data, key, policy)
    length = framing.header.length
    dst = memoryview(out).cast("B")
    if len(dst) < length:
        raise UsageError(f"output buffer must hold {length} bytes, got {len(dst)}")
    _decrypt_memory(cipher, chunks, dst, length, threads)
    return framing.header


def open_bytes(
    data: bytes | bytearray | memoryview, key: Key, policy: OpenPolicy, *, threads: int = 1
) -> OpenedPackage:
    """Verify an in-memory package and return its plaintext (all-or-nothing).

    The output buffer is allocated only after the signature, claims, DEK, body
    length and commitment have all checked out, so a forged ``len`` cannot make
    the reader allocate memory.
    """
    framing, cipher, chunks = _open_memory(data, key, policy)
    length = framing.header.length
    out = bytearray(length)
    _decrypt_memory(cipher, chunks, memoryview(out), length, threads)
    return OpenedPackage(framing.header, framing.package_id, bytes(out))


def open_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    key: Key,
    policy: OpenPolicy,
    *,
    progress: ProgressCallback | None = None,
    fsync: bool = True,
) -> Package:
    """Open a package file into ``out_path``, atomically.

    Plaintext goes only to a temp file (mode 0600) in the target directory, which is
    renamed into place after the final chunk has verified. On any failure the temp
    file is removed and nothing is left behind.
    """
    with open(in_path, "rb", buffering=0) as src:
        package = open_stream(src, key, policy)
        with AtomicOutput(out_path, fsync=fsync) as dst:
            package.decrypt_to(dst, progress=progress)
    return package


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """What :func:`inspect` can tell without any key. Never holds a secret."""

    header: Header
    package_id: str
    header_bytes: int
    enc_bytes: int
    signature_bytes: int
    body_offset: int
    body_bytes: int | None
    expected_body_bytes: int


def inspect(src: BinaryIO) -> PackageInfo:
    """Parse the framing of a package without verifying or decrypting anything.

    Raises:
        The framing errors of docs/FORMAT.md §12 (bad magic, lengths, header).
    """
    try:
        seekable = src.seekable()
    except (AttributeError, OSError):
        seekable = False
    origin = src.tell() if seekable else 0
    framing = read_framing(src)
    body_bytes: int | None = None
    if seekable:
        body_bytes = src.seek(0, io.SEEK_END) - origin - framing.body_offset
    return PackageInfo(
        header=framing.header,
        package_id=framing.package_id,
        header_bytes=len(framing.prelude) - 12,
        enc_bytes=len(framing.enc),
        signature_bytes=len(framing.signature),
        body_offset=framing.body_offset,
        body_bytes=body_bytes,
        expected_body_bytes=body_length(framing.header.length),
    )
