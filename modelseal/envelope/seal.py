"""Sealing: build a FORMAT v1 package from plaintext, as a stream, in memory, or file to file.

Every package gets a fresh random 32-byte DEK and a fresh random 24-byte salt
from the OS CSPRNG; neither is ever reused or returned to the caller.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelseal.envelope.atomic import AtomicOutput
from modelseal.envelope.body import (
    BODY_PREFIX_BYTES,
    SALT_BYTES,
    BodyCipher,
    body_length,
    transform_parallel,
)
from modelseal.envelope.container import (
    BODY_CONTEXT_LABEL,
    DEK_BYTES,
    encode_prelude,
    sign_package,
    wrap_dek_hpke,
    wrap_dek_kek,
)
from modelseal.envelope.header import MAX_PLAINTEXT_BYTES, Claims, Header, RType, SignatureRef
from modelseal.envelope.pipeline import (
    ProgressCallback,
    Segment,
    plan_segments,
    read_fully,
    run_segments,
    write_fully,
)
from modelseal.errors import UsageError
from modelseal.keys.issuer import Signer
from modelseal.keys.kek import KEKWrapper
from modelseal.keys.kem import RecipientPublicKey

__all__ = [
    "DEFAULT_CTYPE",
    "AtRest",
    "IssueTo",
    "SealResult",
    "seal_bytes",
    "seal_file",
    "seal_into",
    "seal_stream",
    "sealed_size",
]

DEFAULT_CTYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class IssueTo:
    """Seal an issued package (rtype ``hpke``): to a device key, signed by an issuer."""

    recipient: RecipientPublicKey
    signer: Signer
    claims: Claims


@dataclass(frozen=True, slots=True)
class AtRest:
    """Seal a device at-rest copy (rtype ``kek``) under a KEK, keeping issued claims."""

    kek: KEKWrapper
    claims: Claims | None = None


Destination = IssueTo | AtRest


@dataclass(frozen=True, slots=True)
class SealResult:
    """What a seal produced (no secrets).

    Attributes:
        header: The header written.
        package_id: Hex SHA256(prelude || keyblock), the package's stable identity.
        size: Total container size in bytes.
    """

    header: Header
    package_id: str
    size: int


def _header_for(to: Destination, length: int, ctype: str) -> Header:
    if isinstance(to, IssueTo):
        return Header(
            rtype=RType.HPKE,
            rcpt=to.recipient.kid,
            length=length,
            ctype=ctype,
            kem=to.recipient.kem,
            sig=SignatureRef(to.signer.alg, to.signer.kid),
            claims=to.claims,
        )
    return Header(rtype=RType.KEK, rcpt=to.kek.label, length=length, ctype=ctype, claims=to.claims)


def _check_length(length: int) -> None:
    if not 0 <= length <= MAX_PLAINTEXT_BYTES:
        raise UsageError(f"plaintext length must be 0..2^52-1, got {length}")


def _start(to: Destination, length: int, ctype: str) -> tuple[Header, bytes, BodyCipher, str]:
    """Build everything before the body; return (header, bytes before body, cipher, id)."""
    _check_length(length)
    header = _header_for(to, length, ctype)
    prelude = encode_prelude(header)
    dek = os.urandom(DEK_BYTES)
    if isinstance(to, IssueTo):
        keyblock = wrap_dek_hpke(prelude, dek, to.recipient)
        signature = sign_package(prelude, keyblock, to.signer)
    else:
        keyblock = wrap_dek_kek(prelude, dek, to.kek)
        signature = b"\x00\x00"
    context = BODY_CONTEXT_LABEL + hashlib.sha256(prelude).digest()
    cipher = BodyCipher(dek, os.urandom(SALT_BYTES), context)
    package_id = hashlib.sha256(prelude + keyblock).hexdigest()
    return header, prelude + keyblock + signature + cipher.prefix(), cipher, package_id


def sealed_size(to: Destination, length: int, ctype: str = DEFAULT_CTYPE) -> int:
    """The exact container size for a plaintext of ``length`` bytes.

    Raises:
        UsageError: ``length`` is outside 0..2^52-1.
    """
    _check_length(length)
    header = _header_for(to, length, ctype)
    head = len(encode_prelude(header))
    if isinstance(to, IssueTo):
        keyblock = 4 + to.recipient.kem.enc_length + 48
        sig = 2 + 64
    else:
        keyblock, sig = 4 + 12 + 48, 2
    return head + keyblock + sig + body_length(length)


def seal_into(
    plaintext: bytes | bytearray | memoryview,
    out: bytearray | memoryview,
    to: Destination,
    *,
    ctype: str = DEFAULT_CTYPE,
    threads: int = 1,
) -> SealResult:
    """Seal an in-memory plaintext into a preallocated buffer of :func:`sealed_size` bytes.

    This is the allocation-free in-memory path: no copy of the plaintext is made.
    With ``threads > 1`` large bodies are encrypted by that many threads, each on a
    contiguous range of chunks.
    """
    src = memoryview(plaintext).cast("B")
    dst = memoryview(out).cast("B")
    header, head, cipher, package_id = _start(to, len(src), ctype)
    total = len(head) + body_length(len(src)) - BODY_PREFIX_BYTES
    if len(dst) < total:
        raise UsageError(f"output buffer must hold {total} bytes, got {len(dst)}")
    dst[: len(head)] = head
    written = transform_parallel(
        cipher, src, dst[len(head) : total], decrypt=False, threads=threads
    )
    return SealResult(header, package_id, len(head) + written)


def seal_bytes(
    plaintext: bytes | bytearray | memoryview, to: Destination, *, ctype: str = DEFAULT_CTYPE
) -> bytes:
    """Seal an in-memory plaintext and return the container bytes."""
    length = memoryview(plaintext).nbytes
    out = bytearray(sealed_size(to, length, ctype))
    result = seal_into(plaintext, out, to, ctype=ctype)
    if result.size != len(out):  # sealed_size and seal_into agree by construction
        raise UsageError("internal size mismatch")
    return bytes(out)


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    to: Destination,
    *,
    length: int,
    ctype: str = DEFAULT_CTYPE,
    overlap_io: bool = True,
    progress: ProgressCallback | None = None,
) -> SealResult:
    """Seal ``length`` bytes read from ``src`` into ``dst``, in constant memory.

    ``src`` must deliver exactly ``length`` bytes (the header states the length
    before the body). Reads and writes happen in 4 MiB segments.

    Raises:
        UsageError: ``src`` ended early or holds more than ``length`` bytes. Bytes
            already written to ``dst`` must then be discarded; :func:`seal_file`
            does that for you.
    """
    header, head, cipher, package_id = _start(to, length, ctype)
    write_fully(dst, memoryview(head))
    consumed = 0

    def read(segment: Segment, view: memoryview) -> None:
        nonlocal consumed
        got = read_fully(src, view)
        consumed += got
        if got != len(view):
            raise UsageError(f"source ended after {consumed} bytes, expected {length}")

    def transform(segment: Segment, data: memoryview, out: memoryview) -> int:
        return cipher.encrypt_chunks(segment.first, data, out, final=segment.final)

    run_segments(
        plan_segments(length),
        read=read,
        transform=transform,
        write=lambda view: write_fully(dst, view),
        input_size=lambda s: s.plaintext_bytes,
        output_size=lambda s: s.ciphertext_bytes,
        overlap_io=overlap_io,
        progress=progress,
    )
    if src.read(1):
        raise UsageError(f"source holds more than the declared {length} bytes")
    return SealResult(header, package_id, len(head) + body_length(length) - BODY_PREFIX_BYTES)


def seal_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    to: Destination,
    *,
    ctype: str = DEFAULT_CTYPE,
    progress: ProgressCallback | None = None,
    fsync: bool = True,
) -> SealResult:
    """Seal a file to a new file, atomically: a temp file beside ``out_path``, then rename.

    On any failure the temp file is removed and ``out_path`` is untouched.
    """
    target = Path(out_path)
    with open(in_path, "rb", buffering=0) as src:
        length = os.fstat(src.fileno()).st_size
        with AtomicOutput(target, fsync=fsync) as dst:
            return seal_stream(src, dst, to, length=length, ctype=ctype, progress=progress)
