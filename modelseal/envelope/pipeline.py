"""Segment pipeline: move a body through the chunk cipher in large, reused buffers.

A *segment* is up to :data:`SEGMENT_CHUNKS` consecutive chunks. Each segment is
read with one ``readinto`` into a preallocated buffer, transformed chunk by
chunk with ``encrypt_into``/``decrypt_into`` into a second preallocated buffer,
and written with one ``write``. With ``overlap_io`` the next read and the
previous write run on a helper thread while the current segment is being
transformed (file syscalls release the GIL), so I/O and crypto overlap. Nothing
is allocated per chunk or per segment.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from modelseal.envelope.body import CHUNK_SIZE_BYTES, TAG_BYTES, chunk_count
from modelseal.errors import UsageError

__all__ = [
    "SEGMENT_CHUNKS",
    "Segment",
    "Sink",
    "plan_segments",
    "read_fully",
    "run_segments",
    "write_fully",
]

SEGMENT_CHUNKS = 256  # 4 MiB of plaintext per segment

ProgressCallback = Callable[[int], None]


class Sink(Protocol):
    """Where output bytes go: a binary file, or anything with a compatible ``write``."""

    def write(self, data: memoryview, /) -> int | None:
        """Write all of ``data``."""
        ...


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a body: chunks [first, first + count), the last possibly final."""

    first: int
    count: int
    final: bool
    plaintext_bytes: int

    @property
    def ciphertext_bytes(self) -> int:
        """Encrypted size of this segment."""
        return self.plaintext_bytes + TAG_BYTES * self.count


def plan_segments(plaintext_length: int, segment_chunks: int = SEGMENT_CHUNKS) -> Iterator[Segment]:
    """Split a body of ``plaintext_length`` bytes into segments; the last one is final."""
    total = chunk_count(plaintext_length)
    first = 0
    while first < total:
        count = min(segment_chunks, total - first)
        final = first + count == total
        size = plaintext_length - first * CHUNK_SIZE_BYTES if final else count * CHUNK_SIZE_BYTES
        yield Segment(first, count, final, size)
        first += count


def read_fully(src: BinaryIO, view: memoryview) -> int:
    """``readinto`` until ``view`` is full or the input ends; return the bytes read.

    Raises:
        UsageError: ``src`` is a non-blocking stream with no data ready (``None``).
    """
    got = 0
    size = len(view)
    while got < size:
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if n is None:
            raise UsageError("non-blocking streams are not supported")
        if not n:
            break
        got += n
    return got


def write_fully(dst: Sink, view: memoryview) -> None:
    """Write all of ``view``: unbuffered files and sockets may accept only part of it.

    A sink whose ``write`` returns ``None`` (a buffered or custom sink that takes
    everything) is trusted to have written it all. A write that makes no progress
    raises, so a full disk or a file-size limit is never a silent truncation.
    """
    done = 0
    while done < len(view):
        n = dst.write(view[done:])
        if n is None:
            return
        if n <= 0:
            raise OSError(f"write accepted no bytes after {done} of {len(view)}")
        done += n


def allocate(size: int) -> memoryview:
    """A page-aligned anonymous buffer (mmap), reused across segments."""
    return memoryview(mmap.mmap(-1, max(size, 1)))


Transform = Callable[[Segment, memoryview, memoryview], int]


def run_segments(
    segments: Iterator[Segment],
    *,
    read: Callable[[Segment, memoryview], None],
    transform: Transform,
    write: Callable[[memoryview], object],
    input_size: Callable[[Segment], int],
    output_size: Callable[[Segment], int],
    overlap_io: bool,
    progress: ProgressCallback | None = None,
) -> None:
    """Drive ``read -> transform -> write`` over segments with double buffering.

    ``read(segment, view)`` must fill ``view`` exactly or raise. ``transform``
    returns the number of output bytes. Exceptions propagate after in-flight I/O
    has finished, so no write happens after a failed transform.
    """
    # The plan is consumed lazily: a 2^52-byte body has 2^30 segments, which must
    # never be materialised. The first segment is the largest (all but the final
    # one are full), so it sizes the reused buffers.
    plan = iter(segments)
    segment = next(plan, None)
    if segment is None:
        return
    ins = [allocate(input_size(segment)) for _ in range(2)]
    outs = [allocate(output_size(segment)) for _ in range(2)]
    # One helper thread runs the I/O in submission order: write(n - 1), then read(n + 1),
    # while the calling thread transforms segment n.
    executor = ThreadPoolExecutor(max_workers=1) if overlap_io else None
    pending: list[Future[object]] = []
    try:
        read(segment, ins[0][: input_size(segment)])
        cur = 0
        while segment is not None:
            nxt = next(plan, None)
            if executor is not None and nxt is not None:
                pending.append(executor.submit(read, nxt, ins[1 - cur][: input_size(nxt)]))
            produced = transform(segment, ins[cur][: input_size(segment)], outs[cur])
            for future in pending:
                future.result()
            pending.clear()
            if executor is not None:
                pending.append(executor.submit(write, outs[cur][:produced]))
            else:
                write(outs[cur][:produced])
                if nxt is not None:
                    read(nxt, ins[1 - cur][: input_size(nxt)])
            if progress is not None:
                progress(segment.plaintext_bytes)
            segment, cur = nxt, 1 - cur
        for future in pending:
            future.result()
    finally:
        if executor is not None:
            # Let in-flight I/O finish before the buffers are wiped.
            executor.shutdown(wait=True)
        for view in (*ins, *outs):
            # The buffers may hold plaintext: zero them before they are freed.
            view[:] = bytes(len(view))
