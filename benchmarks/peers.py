"""Peer encryptors for the throughput benchmark.

Each peer encrypts or decrypts one file to another file and raises on failure, so the benchmark
can time modelseal against other tools on the same input in the same run:

* ``age`` CLI (Debian package ``age``) with an X25519 recipient, via :mod:`subprocess`.
* ``pyrage`` (PyPI), Python bindings to the Rust ``age`` implementation.
* ``tink`` (PyPI) Streaming AEAD, template ``AES256_GCM_HKDF_1MB``.
* Raw pyca ``AESGCM.encrypt_into`` / ``decrypt_into`` over an in-memory buffer in 16 KiB calls:
  the speed ceiling for modelseal's chunk size (no file I/O, no framing, no key schedule).

``pyrage`` and ``tink`` are imported lazily, so this module imports without them and a benchmark
can skip a peer whose package is missing.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from tink.streaming_aead import StreamingAead

StrPath = str | os.PathLike[str]

AESGCM_TAG_SIZE = 16
"""Bytes the GCM tag adds to each sealed chunk."""

TINK_READ_SIZE = 1 << 20
"""Plaintext bytes handed to tink per write, and requested per read when decrypting."""

# Fixed key and nonce for the throughput ceiling only. Reusing a GCM nonce under one key is
# insecure; the ceiling's output is never stored or sent, it only measures cipher speed.
_CEILING_KEY = bytes(range(32))
_CEILING_NONCE = bytes(12)


def _run(argv: list[str]) -> bytes:
    """Run a command, raising with its stderr if it fails.

    Args:
        argv: Program and arguments.

    Returns:
        The command's stdout.

    Raises:
        RuntimeError: The command exited non-zero.
    """
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {stderr}")
    return proc.stdout


def _tool(name: str) -> str:
    """Return the absolute path of an executable on PATH.

    Args:
        name: Executable name.

    Returns:
        Its absolute path.

    Raises:
        FileNotFoundError: Not on PATH (install Debian package ``age``).
    """
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH (apt-get install age)")
    return path


# --- age CLI --------------------------------------------------------------------------------------


def age_keygen(directory: StrPath) -> tuple[str, Path]:
    """Create an X25519 identity file with ``age-keygen``.

    Args:
        directory: Existing directory to write ``age-identity.txt`` into. age-keygen refuses to
            overwrite, so the file must not exist yet.

    Returns:
        The recipient (``age1...``) and the identity file path (mode 0600, as age-keygen writes
        it). The identity file works for both :func:`age_cli_decrypt` and :func:`pyrage_decrypt`.

    Raises:
        RuntimeError: age-keygen failed.
        FileNotFoundError: age-keygen is not installed.
    """
    keygen = _tool("age-keygen")
    identity = Path(directory) / "age-identity.txt"
    _run([keygen, "-o", os.fspath(identity)])
    recipient = _run([keygen, "-y", os.fspath(identity)]).decode().strip()
    return recipient, identity


def age_cli_encrypt(src: StrPath, dst: StrPath, recipient: str) -> None:
    """Encrypt ``src`` to ``dst`` with the ``age`` CLI (binary output, one X25519 recipient).

    Args:
        src: Plaintext file.
        dst: Ciphertext file, overwritten.
        recipient: X25519 recipient, ``age1...``.

    Raises:
        RuntimeError: age failed.
        FileNotFoundError: age is not installed.
    """
    _run([_tool("age"), "-e", "-r", recipient, "-o", os.fspath(dst), os.fspath(src)])


def age_cli_decrypt(src: StrPath, dst: StrPath, identity_file: StrPath) -> None:
    """Decrypt ``src`` to ``dst`` with the ``age`` CLI.

    Args:
        src: Ciphertext file.
        dst: Plaintext file, overwritten.
        identity_file: Identity file holding the ``AGE-SECRET-KEY-1...`` line.

    Raises:
        RuntimeError: age failed (including authentication failure).
        FileNotFoundError: age is not installed.
    """
    _run([_tool("age"), "-d", "-i", os.fspath(identity_file), "-o", os.fspath(dst), os.fspath(src)])


# --- pyrage ---------------------------------------------------------------------------------------
# pyrage.encrypt_file / decrypt_file stream file to file inside Rust (std::io::copy through
# buffered readers/writers into rage's STREAM writer of 64 KiB chunks), so memory stays constant
# whatever the file size, and no bytes cross into Python. pyrage.encrypt / decrypt would instead
# take and return whole `bytes` (input + output both resident: >2 GiB for a 1 GiB file), and
# encrypt_io / decrypt_io stream through Python file objects, paying a Python call per buffer.
# The GIL is held for the whole call.


def _read_identity(identity_file: StrPath) -> str:
    """Return the first ``AGE-SECRET-KEY-1...`` line of an age identity file.

    Args:
        identity_file: File written by age-keygen.

    Returns:
        The secret key string.

    Raises:
        ValueError: No X25519 secret key in the file.
    """
    for line in Path(identity_file).read_text().splitlines():
        if line.startswith("AGE-SECRET-KEY-1"):
            return line.strip()
    raise ValueError(f"no AGE-SECRET-KEY-1 line in {identity_file}")


def pyrage_encrypt(src: StrPath, dst: StrPath, recipient: str) -> None:
    """Encrypt ``src`` to ``dst`` with ``pyrage.encrypt_file`` (streaming, in Rust).

    Args:
        src: Plaintext file.
        dst: Ciphertext file, overwritten. Readable by the age CLI.
        recipient: X25519 recipient, ``age1...``.

    Raises:
        pyrage.EncryptError: Encryption failed.
        pyrage.RecipientError: Bad recipient string.
        OSError: A file could not be opened.
    """
    import pyrage

    rcpt = pyrage.x25519.Recipient.from_str(recipient)
    pyrage.encrypt_file(os.fspath(src), os.fspath(dst), [rcpt])


def pyrage_decrypt(src: StrPath, dst: StrPath, identity_file: StrPath) -> None:
    """Decrypt ``src`` to ``dst`` with ``pyrage.decrypt_file`` (streaming, in Rust).

    Args:
        src: Ciphertext file (from pyrage or the age CLI).
        dst: Plaintext file, overwritten.
        identity_file: age identity file, as written by :func:`age_keygen`.

    Raises:
        pyrage.DecryptError: The header did not open (wrong identity, bad header MAC).
        pyrage.IdentityError: Bad identity.
        OSError: A file could not be opened or written, or a payload chunk failed
            authentication (pyrage 1.4.0 surfaces that as ``OSError: decryption error``).
    """
    import pyrage

    ident = pyrage.x25519.Identity.from_str(_read_identity(identity_file))
    pyrage.decrypt_file(os.fspath(src), os.fspath(dst), [ident])


# --- tink Streaming AEAD --------------------------------------------------------------------------


def tink_new_streaming_aead() -> StreamingAead:
    """Generate a fresh ``AES256_GCM_HKDF_1MB`` keyset and return its Streaming AEAD primitive.

    Returns:
        A primitive for :func:`tink_streaming_encrypt` and :func:`tink_streaming_decrypt`. The
        keyset lives only in memory.
    """
    import tink
    from tink import streaming_aead

    streaming_aead.register()
    template = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
    handle = tink.new_keyset_handle(template)
    return handle.primitive(streaming_aead.StreamingAead)


def tink_streaming_encrypt(
    src: StrPath,
    dst: StrPath,
    primitive: StreamingAead,
    associated_data: bytes = b"",
    read_size: int = TINK_READ_SIZE,
) -> None:
    """Encrypt ``src`` to ``dst`` through tink's encrypting stream, ``read_size`` bytes a write.

    Args:
        src: Plaintext file.
        dst: Ciphertext file, overwritten.
        primitive: From :func:`tink_new_streaming_aead`.
        associated_data: Bound to the ciphertext; decryption must pass the same bytes.
        read_size: Plaintext bytes read from ``src`` and written to tink per call.

    Raises:
        tink.TinkError: Encryption failed.
        OSError: File I/O failed.
    """
    buf = bytearray(read_size)
    view = memoryview(buf)
    # Closing the encrypting stream writes the final segment and closes ``fout``.
    with (
        open(src, "rb", buffering=0) as fin,
        open(dst, "wb") as fout,
        primitive.new_encrypting_stream(fout, associated_data) as enc,
    ):
        while n := fin.readinto(buf):
            enc.write(view[:n])


def tink_streaming_decrypt(
    src: StrPath,
    dst: StrPath,
    primitive: StreamingAead,
    associated_data: bytes = b"",
    read_size: int = TINK_READ_SIZE,
) -> None:
    """Decrypt ``src`` to ``dst`` through tink's decrypting stream, ``read_size`` bytes a read.

    Args:
        src: Ciphertext file from :func:`tink_streaming_encrypt`.
        dst: Plaintext file, overwritten.
        primitive: The primitive that encrypted ``src``.
        associated_data: The associated data used to encrypt.
        read_size: Plaintext bytes requested from tink per read.

    Raises:
        tink.TinkError: Decryption or authentication failed (including truncation).
        OSError: File I/O failed.
    """
    buf = bytearray(read_size)
    view = memoryview(buf)
    with (
        open(src, "rb") as fin,
        open(dst, "wb") as fout,
        primitive.new_decrypting_stream(fin, associated_data) as dec,
    ):
        while n := dec.readinto(buf):
            fout.write(view[:n])


# --- raw AES-GCM ceiling ------------------------------------------------------------------------


def aesgcm_sealed_size(plaintext_len: int, chunk: int = 16384) -> int:
    """Return the ``buf_out`` size :func:`aesgcm_ceiling` needs for a plaintext length.

    Args:
        plaintext_len: Bytes in ``buf_in``.
        chunk: Plaintext bytes per AES-GCM call.

    Returns:
        ``plaintext_len`` plus one 16-byte tag per chunk (the last chunk may be short).
    """
    return plaintext_len + -(-plaintext_len // chunk) * AESGCM_TAG_SIZE


def _chunk_views(
    src: memoryview, dst: memoryview, src_step: int, dst_step: int
) -> list[tuple[memoryview, memoryview]]:
    """Pair up matching slices of ``src`` and ``dst`` so the timed loop only calls the cipher.

    Args:
        src: Input buffer.
        dst: Output buffer.
        src_step: Input bytes per call.
        dst_step: Output bytes per call (input step plus or minus the tag).

    Returns:
        ``(input slice, output slice)`` per call, the last pair possibly short.
    """
    pairs = []
    delta = dst_step - src_step
    for i, start in enumerate(range(0, len(src), src_step)):
        piece = src[start : start + src_step]
        out_start = i * dst_step
        pairs.append((piece, dst[out_start : out_start + len(piece) + delta]))
    return pairs


def _as_bytes_view(buf: memoryview) -> memoryview:
    """Return ``buf`` as a flat unsigned-byte view, so slicing counts bytes."""
    return buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf


def aesgcm_ceiling(buf_in: memoryview, buf_out: memoryview, chunk: int = 16384) -> float:
    """Time raw ``AESGCM.encrypt_into`` over ``buf_in`` in ``chunk``-byte calls.

    Every call uses the same fixed key and nonce and no associated data, writing
    ``chunk + 16`` bytes into the next slot of ``buf_out``; slices are prepared before the clock
    starts, so the timed loop allocates no output buffers. Nothing is read from or written to disk.

    Args:
        buf_in: Plaintext, e.g. ``memoryview(bytearray(1 << 30))`` filled with random bytes.
        buf_out: Writable, at least :func:`aesgcm_sealed_size` bytes. Afterwards it holds
            ``ciphertext || tag`` per chunk, the input of :func:`aesgcm_ceiling_decrypt`.
        chunk: Plaintext bytes per call.

    Returns:
        Wall-clock seconds spent in the encrypt calls.

    Raises:
        ValueError: ``buf_out`` is too small.
    """
    src, dst = _as_bytes_view(buf_in), _as_bytes_view(buf_out)
    need = aesgcm_sealed_size(len(src), chunk)
    if len(dst) < need:
        raise ValueError(f"buf_out needs {need} bytes, has {len(dst)}")
    aead = AESGCM(_CEILING_KEY)
    encrypt_into = aead.encrypt_into
    nonce = _CEILING_NONCE
    pairs = _chunk_views(src, dst, chunk, chunk + AESGCM_TAG_SIZE)
    start = time.perf_counter()
    for piece, slot in pairs:
        encrypt_into(nonce, piece, None, slot)
    return time.perf_counter() - start


def aesgcm_ceiling_decrypt(buf_in: memoryview, buf_out: memoryview, chunk: int = 16384) -> float:
    """Time raw ``AESGCM.decrypt_into`` over the output of :func:`aesgcm_ceiling`.

    Args:
        buf_in: Sealed chunks exactly as :func:`aesgcm_ceiling` wrote them, sliced to
            :func:`aesgcm_sealed_size` bytes.
        buf_out: Writable, at least ``len(buf_in)`` minus the tags; receives the plaintext.
        chunk: Plaintext bytes per call, as used to encrypt.

    Returns:
        Wall-clock seconds spent in the decrypt calls (each verifies its tag).

    Raises:
        ValueError: ``buf_out`` is too small.
        cryptography.exceptions.InvalidTag: ``buf_in`` is not what :func:`aesgcm_ceiling` wrote.
    """
    src, dst = _as_bytes_view(buf_in), _as_bytes_view(buf_out)
    sealed = chunk + AESGCM_TAG_SIZE
    need = len(src) - -(-len(src) // sealed) * AESGCM_TAG_SIZE
    if len(dst) < need:
        raise ValueError(f"buf_out needs {need} bytes, has {len(dst)}")
    aead = AESGCM(_CEILING_KEY)
    decrypt_into = aead.decrypt_into
    nonce = _CEILING_NONCE
    pairs = _chunk_views(src, dst, sealed, chunk)
    start = time.perf_counter()
    for piece, slot in pairs:
        decrypt_into(nonce, piece, None, slot)
    return time.perf_counter() - start


# --- versions -------------------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    """Return an installed distribution's version, or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _age_version() -> str:
    """Return ``age --version`` output, or why it could not be had."""
    path = shutil.which("age")
    if path is None:
        return "not installed"
    proc = subprocess.run([path, "--version"], capture_output=True, check=False)
    if proc.returncode != 0:
        return f"error: age --version exited {proc.returncode}"
    return proc.stdout.decode().strip()


def tool_versions() -> dict[str, str]:
    """Report the versions of every peer, for the benchmark's results header.

    Returns:
        ``age`` (the CLI's own ``--version``), ``pyrage``, ``tink`` and ``cryptography``
        (distribution versions), and ``openssl`` (the OpenSSL that cryptography runs on, which
        sets the AES-GCM ceiling). A missing tool is reported as ``"not installed"``, not raised.
    """
    from cryptography.hazmat.backends.openssl import backend

    return {
        "age": _age_version(),
        "pyrage": _dist_version("pyrage"),
        "tink": _dist_version("tink"),
        "cryptography": _dist_version("cryptography"),
        "openssl": backend.openssl_version_text(),
    }
