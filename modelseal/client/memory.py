"""Plaintext buffers that can be wiped, including the ``bytes`` ONNX Runtime insists on.

ONNX Runtime's Python API takes a model only as a file path or as a ``bytes``
object, and its ``InferenceSession`` keeps a reference to that object for its whole
life (to re-create the session on a provider fallback). A ``bytes`` object cannot
be cleared from Python, so an ordinary ``bytes(plaintext)`` would leave a copy of
the model in the process heap until the allocator happens to reuse the memory.

:class:`WipeableBytes` instead allocates an uninitialised ``bytes`` object through
the C API (``PyBytes_FromStringAndSize(NULL, n)``, which CPython documents for
exactly this: the caller fills the contents afterwards) and exposes its storage as
a writable memoryview. The envelope decrypts straight into it (one plaintext copy
instead of two), the runtime builds its session from it, and :meth:`wipe` then
overwrites it with zeros. The object is never hashed, interned or shared before it
is wiped, which is what makes writing into it sound. Large buffers are advised to
use transparent huge pages (Linux ``madvise``), which makes filling them cheaper.

On Python implementations other than CPython this falls back to a ``bytearray``
and a copy that cannot be wiped; :attr:`WipeableBytes.wipeable` says which.
What a runtime copies into its own memory is beyond any of this.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import sys
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn

__all__ = ["WipeableBytes", "release_pages", "wipe"]

_CPYTHON = sys.implementation.name == "cpython"
# Offset of ob_sval (the bytes' storage) inside a PyBytesObject: the size of an
# empty bytes object minus its one terminating NUL byte.
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1

if _CPYTHON:
    _bytes_from_size = ctypes.pythonapi.PyBytes_FromStringAndSize
    _bytes_from_size.restype = ctypes.py_object
    _bytes_from_size.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]

# Transparent huge pages for large buffers: the first touch of 100 MB of fresh memory
# costs about 70 ms in 4 KiB page faults here, and about 13 ms in 2 MiB ones.
HUGE_PAGE_BYTES = 2 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
_madvise: Callable[[int, int, int], int] | None = None
if _MADV_HUGEPAGE is not None and sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.madvise.restype = ctypes.c_int
        _madvise = _libc.madvise


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
PAGE_BYTES = mmap.PAGESIZE


def release_pages(address: int, length: int) -> None:
    """Give the whole pages inside a zeroed buffer back to the kernel (Linux ``MADV_DONTNEED``).

    The buffer stays mapped and reads as zeros afterwards (private anonymous memory);
    only its resident memory goes. Call it only on a buffer already wiped: the pages
    at its two ends that it shares with other objects are left alone. A no-op where
    ``madvise`` is unavailable.
    """
    _advise_whole_pages(address, length, PAGE_BYTES, _MADV_DONTNEED)


def _advise_huge_pages(address: int, length: int) -> None:
    """Ask for huge pages on the whole 2 MiB pages inside a buffer (advice only)."""
    _advise_whole_pages(address, length, HUGE_PAGE_BYTES, _MADV_HUGEPAGE)


def _advise_whole_pages(address: int, length: int, page_bytes: int, advice: int | None) -> None:
    """``madvise`` the ``page_bytes``-aligned pages lying wholly inside a buffer.

    A no-op where ``madvise`` or ``advice`` is unavailable, or for buffers shorter
    than two pages.
    """
    if _madvise is None or advice is None or length < 2 * page_bytes:
        return
    start = -(-address // page_bytes) * page_bytes
    stop = (address + length) // page_bytes * page_bytes
    if stop > start:
        _madvise(start, stop - start, advice)


def wipe(buffer: bytearray | memoryview) -> None:
    """Overwrite a writable buffer with zeros, in place (``memset``, no temporary copy)."""
    view = memoryview(buffer).cast("B")
    if not view.nbytes:
        return
    if view.readonly or not view.c_contiguous:
        raise ValueError("only a writable, contiguous buffer can be wiped")
    target = (ctypes.c_char * view.nbytes).from_buffer(view)
    ctypes.memset(ctypes.addressof(target), 0, view.nbytes)
    del target


class WipeableBytes:
    """A ``bytes`` object of a fixed size, filled through :attr:`view`, zeroed by :meth:`wipe`.

    A context manager: leaving the block wipes it.
    """

    __slots__ = ("_fallback", "_length", "_storage", "_value", "_view", "_wiped")

    def __init__(self, length: int) -> None:
        """Allocate ``length`` bytes (contents undefined until written).

        Raises:
            ValueError: ``length`` is negative.
        """
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self._length = length
        self._wiped = False
        self._fallback: bytearray | None = None
        self._storage: ctypes.Array[ctypes.c_char] | None = None
        if _CPYTHON and length > 1:
            # Sizes 0 and 1 may return shared singletons; they are never written here.
            value: bytes = _bytes_from_size(None, length)
            storage = (ctypes.c_char * length).from_address(id(value) + _BYTES_DATA_OFFSET)
            self._value: bytes | None = value
            self._storage = storage
            _advise_huge_pages(ctypes.addressof(storage), length)
            self._view = memoryview(storage).cast("B")
        else:
            self._fallback = bytearray(length)
            self._value = None
            self._view = memoryview(self._fallback)

    @property
    def wipeable(self) -> bool:
        """Whether :attr:`value` itself is wiped (False: a copy the wipe cannot reach)."""
        return self._fallback is None

    @property
    def view(self) -> memoryview:
        """The writable storage (valid until :meth:`wipe`)."""
        if self._wiped:
            raise ValueError("buffer has been wiped")
        return self._view

    @property
    def value(self) -> bytes:
        """The ``bytes`` object itself (a copy when :attr:`wipeable` is False)."""
        if self._wiped:
            raise ValueError("buffer has been wiped")
        if self._value is None:
            assert self._fallback is not None
            self._value = bytes(self._fallback)
        return self._value

    def wipe(self) -> None:
        """Zero the storage; idempotent."""
        if self._wiped:
            return
        self._wiped = True
        if self._storage is not None:
            address = ctypes.addressof(self._storage)
            ctypes.memset(address, 0, self._length)
            # The runtime may keep this object referenced for the session's life
            # (module docstring): keep the zeros, not the resident memory.
            release_pages(address, self._length)
        else:
            wipe(self._view)
            self._value = None
        # Views handed out (numpy arrays over :attr:`view`) may still exist; the
        # memory is zero either way, and stays allocated as long as they do.
        with contextlib.suppress(BufferError):
            self._view.release()

    def __len__(self) -> int:
        return self._length

    def __enter__(self) -> WipeableBytes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __repr__(self) -> str:
        state = "wiped" if self._wiped else "live"
        return f"WipeableBytes({self._length} bytes, {state})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("plaintext buffers cannot be pickled")
