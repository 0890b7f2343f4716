"""The body: C2SP chunked encryption, "Cobblestone-256" (FORMAT §5).

AES-256-GCM over 16 KiB chunks, keys derived with HKDF-Expand-SHA-512 from the
input key (the DEK), a 24-byte random salt and a context, with a 32-byte key
commitment. Chunk ``i`` uses the nonce ``base_nonce XOR i`` and empty AAD; the
final chunk is always shorter than 16 KiB, possibly empty.

This module works on buffers: the callers (:mod:`modelseal.envelope.seal`,
:mod:`modelseal.envelope.reader` and :mod:`modelseal.envelope.pipeline`) own the
I/O. Every chunk call writes into a caller-provided buffer with
``encrypt_into``/``decrypt_into``, so nothing is allocated per chunk.
"""

from __future__ import annotations

import hmac
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from modelseal.errors import ChunkTagError, CommitmentMismatchError, UsageError

__all__ = [
    "BODY_PREFIX_BYTES",
    "CHUNK_SIZE_BYTES",
    "ENCRYPTED_CHUNK_BYTES",
    "BodyCipher",
    "body_length",
    "chunk_count",
    "transform_parallel",
]

CHUNK_SIZE_BYTES = 16384
TAG_BYTES = 16
ENCRYPTED_CHUNK_BYTES = CHUNK_SIZE_BYTES + TAG_BYTES
SALT_BYTES = 24
COMMITMENT_BYTES = 32
BODY_PREFIX_BYTES = SALT_BYTES + COMMITMENT_BYTES
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_CHUNKS = 1 << 38
HKDF_LABEL = b"c2sp.org/chunked-encryption@v1+"
AEAD_NAME = b"AEAD_AES_256_GCM"


def chunk_count(plaintext_length: int) -> int:
    """Number of chunks for a plaintext of this length (the final one is always short)."""
    return plaintext_length // CHUNK_SIZE_BYTES + 1


def body_length(plaintext_length: int) -> int:
    """Exact body length for a plaintext length: 56 + len + 16 * chunks."""
    return BODY_PREFIX_BYTES + plaintext_length + TAG_BYTES * chunk_count(plaintext_length)


class BodyCipher:
    """Keys for one body, derived from (input key, salt, context).

    The derived key, base nonce and commitment never appear in ``repr`` and the
    object refuses pickling.
    """

    __slots__ = ("_aead", "_base_nonce", "_commitment", "salt")

    def __init__(self, input_key: bytes, salt: bytes, context: bytes) -> None:
        """Derive ``key || base_nonce || commitment`` with HKDF-Expand-SHA-512.

        Raises:
            UsageError: ``input_key`` is not 32 bytes or ``salt`` is not 24 bytes.
        """
        if len(input_key) != KEY_BYTES:
            raise UsageError(f"input key must be {KEY_BYTES} bytes, got {len(input_key)}")
        if len(salt) != SALT_BYTES:
            raise UsageError(f"salt must be {SALT_BYTES} bytes, got {len(salt)}")
        info = HKDF_LABEL + AEAD_NAME + b"\x00" + salt + context
        okm = HKDFExpand(
            algorithm=hashes.SHA512(), length=KEY_BYTES + NONCE_BYTES + COMMITMENT_BYTES, info=info
        ).derive(input_key)
        self.salt = bytes(salt)
        self._aead = AESGCM(okm[:KEY_BYTES])
        self._base_nonce = int.from_bytes(okm[KEY_BYTES : KEY_BYTES + NONCE_BYTES], "big")
        self._commitment = okm[KEY_BYTES + NONCE_BYTES :]

    def prefix(self) -> bytes:
        """The 56-byte body prefix: salt || commitment."""
        return self.salt + self._commitment

    def check_commitment(self, commitment: bytes | bytearray | memoryview) -> None:
        """Compare the stored commitment in constant time.

        Raises:
            CommitmentMismatchError: Wrong key, wrong context, or altered salt/commitment.
        """
        if not hmac.compare_digest(bytes(commitment), self._commitment):
            raise CommitmentMismatchError("body key commitment does not match")

    def _nonce(self, index: int) -> bytes:
        if not 0 <= index < MAX_CHUNKS:
            raise UsageError(f"chunk index must be 0..2^38-1, got {index}")
        return (self._base_nonce ^ index).to_bytes(NONCE_BYTES, "big")

    def encrypt_chunks(
        self, first_index: int, src: memoryview, dst: memoryview, *, final: bool
    ) -> int:
        """Encrypt consecutive chunks starting at ``first_index``; return bytes written.

        ``src`` holds whole 16 KiB chunks; when ``final`` is true its tail (shorter than
        16 KiB, possibly empty) becomes the final chunk. ``dst`` must have room for
        ``len(src)`` plus 16 bytes per chunk.
        """
        full, tail = divmod(len(src), CHUNK_SIZE_BYTES)
        if tail and not final:
            raise UsageError("only the final segment may end with a partial chunk")
        if first_index + full + (1 if final else 0) > MAX_CHUNKS:
            raise UsageError("message exceeds 2^38 chunks")
        encrypt_into, base = self._aead.encrypt_into, self._base_nonce
        src_off = dst_off = 0
        for index in range(first_index, first_index + full):
            encrypt_into(
                (base ^ index).to_bytes(NONCE_BYTES, "big"),
                src[src_off : src_off + CHUNK_SIZE_BYTES],
                None,
                dst[dst_off : dst_off + ENCRYPTED_CHUNK_BYTES],
            )
            src_off += CHUNK_SIZE_BYTES
            dst_off += ENCRYPTED_CHUNK_BYTES
        if final:
            encrypt_into(
                self._nonce(first_index + full),
                src[src_off:],
                None,
                dst[dst_off : dst_off + tail + TAG_BYTES],
            )
            dst_off += tail + TAG_BYTES
        return dst_off

    def decrypt_chunks(
        self, first_index: int, src: memoryview, dst: memoryview, *, final: bool
    ) -> int:
        """Decrypt consecutive encrypted chunks starting at ``first_index``; return bytes written.

        ``src`` holds whole 16400-byte encrypted chunks; when ``final`` is true its tail
        (16..16399 bytes) is the final chunk. Plaintext lands in ``dst`` chunk by chunk,
        and only verified chunks are written.

        Raises:
            ChunkTagError: A chunk failed authentication (naming its index). ``dst``
                then holds the verified chunks before it, which callers must discard
                unless they stream chunk by chunk.
        """
        full, tail = divmod(len(src), ENCRYPTED_CHUNK_BYTES)
        if final and tail < TAG_BYTES:
            raise UsageError("final chunk must be at least 16 bytes")
        if tail and not final:
            raise UsageError("only the final segment may end with a partial chunk")
        decrypt_into, base = self._aead.decrypt_into, self._base_nonce
        src_off = dst_off = 0
        index = first_index
        try:
            for index in range(first_index, first_index + full):
                decrypt_into(
                    (base ^ index).to_bytes(NONCE_BYTES, "big"),
                    src[src_off : src_off + ENCRYPTED_CHUNK_BYTES],
                    None,
                    dst[dst_off : dst_off + CHUNK_SIZE_BYTES],
                )
                src_off += ENCRYPTED_CHUNK_BYTES
                dst_off += CHUNK_SIZE_BYTES
            if final:
                index = first_index + full
                decrypt_into(
                    self._nonce(index),
                    src[src_off:],
                    None,
                    dst[dst_off : dst_off + tail - TAG_BYTES],
                )
                dst_off += tail - TAG_BYTES
        except InvalidTag:
            # decrypt_into may already have written the forged chunk's plaintext into
            # dst before checking the tag: wipe it so no unverified byte stays behind.
            failed = dst[dst_off : dst_off + CHUNK_SIZE_BYTES]
            failed[:] = bytes(len(failed))
            raise ChunkTagError(index) from None
        return dst_off

    def __repr__(self) -> str:
        return "BodyCipher(<secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("body keys cannot be pickled")


def transform_parallel(
    cipher: BodyCipher,
    src: memoryview,
    dst: memoryview,
    *,
    decrypt: bool,
    threads: int,
) -> int:
    """Encrypt or decrypt a whole body's chunks (``src`` without the 56-byte prefix).

    With ``threads > 1`` the chunks are split into contiguous ranges, one per
    thread; pyca releases the GIL inside each AES-GCM call. Returns the bytes
    written to ``dst``. On a tag failure the lowest failing chunk index is reported.
    """
    in_chunk = ENCRYPTED_CHUNK_BYTES if decrypt else CHUNK_SIZE_BYTES
    out_chunk = CHUNK_SIZE_BYTES if decrypt else ENCRYPTED_CHUNK_BYTES
    op = cipher.decrypt_chunks if decrypt else cipher.encrypt_chunks
    full = len(src) // in_chunk
    if decrypt and len(src) % in_chunk < TAG_BYTES:
        # The final chunk is always at least a tag long; a body ending on a full
        # chunk boundary has lost its final chunk.
        full -= 1
    if threads <= 1 or full < 64 * threads:
        return op(0, src, dst, final=True)
    bounds = [full * t // threads for t in range(threads)] + [full]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures: list[Future[int]] = []
        for t in range(threads):
            lo, hi = bounds[t], bounds[t + 1]
            last = t == threads - 1
            s = src[lo * in_chunk : (len(src) if last else hi * in_chunk)]
            d = dst[lo * out_chunk :]
            futures.append(pool.submit(op, lo, s, d, final=last))
        errors: list[ChunkTagError] = []
        written = 0
        for future in futures:
            try:
                written += future.result()
            except ChunkTagError as exc:
                errors.append(exc)
    if errors:
        raise min(errors, key=lambda e: e.index)
    return written
