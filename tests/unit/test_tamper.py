"""Tamper resistance of an issued package: every mutation fails with the error of its region.

The package under attack is issued (rtype ``hpke``) with a three-chunk body: 2 * 16384 + 1000
bytes of plaintext, so two full chunks and a short final one. Its layout is parsed here by hand
from FORMAT §2 (not with the reader's own ``read_framing``), and every expectation is derived from
the format, region by region:

* magic: ``bad_magic``.
* header_len: ``header_length`` when the new value is 0 or above 65536; ``truncated`` when the
  header it announces runs past the end of the file; otherwise ``header_invalid``, because the
  header then ends inside the JSON text (a proper prefix of a JSON object never parses) or runs
  on into the binary key block (which is trailing data, or not UTF-8).
* header: an independent oracle decides each flip. Bytes that no longer decode as strict UTF-8
  JSON without duplicate names are ``header_invalid``. Otherwise the oracle finds which member
  changed and applies FORMAT §3, §7 and §9: a changed suite id is ``unsupported_suite``, a changed
  ``sig.alg`` ``unsupported_alg``, a changed ``sig.kid`` that is still a kid ``unknown_issuer``;
  any other well-formed change (rcpt, len, ctype, claims) breaks the signature, which the reader
  checks before claims, recipient or length, so it is ``bad_signature``. A change that leaves the
  parsed header equal (whitespace) is ``bad_signature`` too, since the signed bytes changed.
* enc_len, wrap_len, sig_len: ``enc_length``, ``wrap_length``, ``sig_length`` (each has exactly
  one allowed value, so any flip leaves the range).
* enc, wrapped_dek, signature: ``bad_signature``; the key block is signed, and the reader
  verifies before it unwraps.
* salt, commitment: ``commitment_mismatch``.
* chunk k: ``chunk_tag_failed`` with ``.index == k``.

Coverage. Opening a mutated package costs about 0.3 ms here (signature check, HPKE open, chunk
decryption), so flipping every bit of the 34 KiB file would take some 275 000 opens, about 85 s
of CPU. The sweep therefore flips every bit of everything before the chunks (magic, header_len,
header, key block, sig_len, signature, salt and commitment), and every bit of the first and last
64 bytes of each chunk; in the rest of each chunk it flips one bit per byte, rotating the bit
index with the offset so that all eight bit positions occur throughout. This loses nothing that
the omitted flips could find: in AES-GCM a flipped ciphertext or tag bit changes the expected tag
by a nonzero GHASH term, so each single-bit flip is detected on its own; what a reader could get
wrong is where it slices the chunks, and the chunk edges, where such slicing errors show, are
swept bit by bit. Regions are separate test cases, so ``pytest -n`` spreads them over workers.

No plaintext may leave the reader: ``open_bytes`` raises (so returns nothing), and for a sample of
each region's mutations ``open_into`` leaves its output buffer without plaintext and ``open_file``
leaves no output and no temp file behind.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelseal.envelope import (
    Claims,
    IssueTo,
    OpenPolicy,
    open_bytes,
    open_file,
    open_into,
    seal_bytes,
)
from modelseal.errors import (
    BadMagicError,
    BadSignatureError,
    BodyLengthError,
    ChunkTagError,
    CommitmentMismatchError,
    EncLengthError,
    HeaderError,
    HeaderLengthError,
    ModelSealError,
    SigLengthError,
    TruncatedError,
    UnknownIssuerError,
    UnsupportedAlgorithmError,
    UnsupportedSuiteError,
    WrapLengthError,
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
PLAINTEXT_BYTES = 2 * CHUNK + 1000
EDGE_BYTES = 64
MIDDLE_PARTS = 4
MAX_HEADER_BYTES = 65536
# C2SP chunked encryption allows 2^38 chunks, the last one short: at most 2^52 - 1 bytes.
MAX_LEN = (1 << 52) - 1
OPEN_FILE_SAMPLES_PER_REGION = 24
_KID = re.compile(r"[0-9a-f]{32}")

# --- The package under attack, and its layout parsed from FORMAT §2 ----------------------------


@dataclass(frozen=True)
class Layout:
    """Byte ranges [start, stop) of every region of a package."""

    regions: dict[str, tuple[int, int]]
    chunks: tuple[tuple[int, int], ...]
    header_len: int
    body_offset: int


@dataclass(frozen=True)
class Sealed:
    """A sealed package with everything needed to open it."""

    data: bytes
    plaintext: bytes
    device: RecipientPrivateKey
    issuer: IssuerPrivateKey
    policy: OpenPolicy
    layout: Layout
    header: dict[str, Any]


def _layout(data: bytes) -> Layout:
    regions: dict[str, tuple[int, int]] = {"magic": (0, 8), "header_len": (8, 12)}
    (header_len,) = struct.unpack_from(">I", data, 8)
    pos = 12 + header_len
    regions["header"] = (12, pos)
    for length_name, field_name in (
        ("enc_len", "enc"),
        ("wrap_len", "wrapped_dek"),
        ("sig_len", "signature"),
    ):
        (size,) = struct.unpack_from(">H", data, pos)
        regions[length_name] = (pos, pos + 2)
        regions[field_name] = (pos + 2, pos + 2 + size)
        pos += 2 + size
    body_offset = pos
    regions["salt"] = (pos, pos + 24)
    regions["commitment"] = (pos + 24, pos + 56)
    pos += 56
    chunks = []
    while len(data) - pos >= SEALED_CHUNK:
        chunks.append((pos, pos + SEALED_CHUNK))
        pos += SEALED_CHUNK
    chunks.append((pos, len(data)))
    return Layout(regions, tuple(chunks), header_len, body_offset)


def _claims(jti: str = "jti-0001") -> Claims:
    return Claims(
        iss="issuer.example",
        sub="u-5b1e",
        aud=AUDIENCE,
        mid="model-llm-small",
        jti=jti,
        iat=NOW - 10,
        exp=NOW + 3600,
    )


SUITES = {
    "x25519-ed25519": (KEM.X25519, SignatureAlgorithm.ED25519),
    "p256-es256": (KEM.P256, SignatureAlgorithm.ES256),
}


@functools.cache
def _keys(suite: str) -> tuple[RecipientPrivateKey, IssuerPrivateKey]:
    kem, alg = SUITES[suite]
    return RecipientPrivateKey.generate(kem), IssuerPrivateKey.generate(alg)


@functools.cache
def _sealed(suite: str, jti: str = "jti-0001") -> Sealed:
    device, issuer = _keys(suite)
    plaintext = random.Random(suite).randbytes(PLAINTEXT_BYTES)
    data = seal_bytes(
        plaintext,
        IssueTo(device.public_key(), issuer, _claims(jti)),
        ctype="application/vnd.modelseal.bundle",
    )
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience=AUDIENCE, now=NOW)
    layout = _layout(data)
    start, stop = layout.regions["header"]
    header = json.loads(data[start:stop])
    return Sealed(data, plaintext, device, issuer, policy, layout, header)


def test_package_under_attack_opens_and_has_three_chunks() -> None:
    sealed = _sealed("x25519-ed25519")
    assert open_bytes(sealed.data, sealed.device, sealed.policy).plaintext == sealed.plaintext
    assert [stop - start for start, stop in sealed.layout.chunks] == [
        SEALED_CHUNK,
        SEALED_CHUNK,
        1000 + 16,
    ]
    assert sealed.layout.chunks[-1][1] == len(sealed.data)


# --- Expected outcome of each mutation -------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What opening a package did: an error class (None: it opened) and a chunk index."""

    error: type[BaseException] | None
    index: int | None = None

    def describe(self) -> str:
        if self.error is None:
            return "opened"
        code = getattr(self.error, "code", "not a ModelSealError")
        suffix = "" if self.index is None else f"[{self.index}]"
        return f"{self.error.__name__}({code}){suffix}"


def _open_outcome(data: bytes | bytearray, sealed: Sealed) -> Outcome:
    try:
        open_bytes(data, sealed.device, sealed.policy)
    except ChunkTagError as exc:
        return Outcome(type(exc), exc.index)
    except ModelSealError as exc:
        return Outcome(type(exc))
    except Exception as exc:  # noqa: BLE001  A crash is a finding; record it and keep sweeping.
        return Outcome(type(exc))
    return Outcome(None)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member")
    return dict(pairs)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict):
        out: dict[tuple[str, ...], Any] = {}
        for name, item in value.items():
            out.update(_leaves(item, (*path, name)))
        return out
    return {path: value}


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _expected_for_header(mutated: bytes, original: dict[str, Any]) -> type[ModelSealError]:
    """FORMAT §3/§7/§9 applied to a header with one byte changed (see the module docstring)."""
    try:
        parsed = json.loads(mutated.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        return HeaderError
    if parsed == original:
        return BadSignatureError
    before, after = _leaves(original), _leaves(parsed)
    if before.keys() != after.keys():
        return HeaderError  # a member renamed: unknown member and a required one missing
    changed = [path for path in before if before[path] != after[path]]
    if len(changed) != 1:
        return HeaderError
    (path,) = changed
    value = after[path]
    if path == ("rtype",):
        return HeaderError
    if path[0] == "suite":
        return UnsupportedSuiteError if _is_int(value, 0, 0xFFFF) else HeaderError
    if path == ("sig", "alg"):
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            return HeaderError
        return BadSignatureError if value in ("Ed25519", "ES256") else UnsupportedAlgorithmError
    if path == ("sig", "kid"):
        return (
            UnknownIssuerError if isinstance(value, str) and _KID.fullmatch(value) else HeaderError
        )
    if path == ("rcpt",):
        return (
            BadSignatureError if isinstance(value, str) and _KID.fullmatch(value) else HeaderError
        )
    if path == ("len",):
        return BadSignatureError if _is_int(value, 0, MAX_LEN) else HeaderError
    if path in (("claims", "iat"), ("claims", "exp")):
        iat, exp = after[("claims", "iat")], after[("claims", "exp")]
        in_range = _is_int(iat, 0, (1 << 53) - 1) and _is_int(exp, 0, (1 << 53) - 1)
        return BadSignatureError if in_range and iat < exp else HeaderError
    # ctype and the string claims: 1..255 characters.
    if isinstance(value, str) and 1 <= len(value) <= 255:
        return BadSignatureError
    return HeaderError


def _expected_for_header_len(value: int, file_bytes: int) -> type[ModelSealError]:
    if not 1 <= value <= MAX_HEADER_BYTES:
        return HeaderLengthError
    if 12 + value > file_bytes:
        return TruncatedError
    return HeaderError


FIXED_REGION_ERRORS: dict[str, type[ModelSealError]] = {
    "magic": BadMagicError,
    "enc_len": EncLengthError,
    "enc": BadSignatureError,
    "wrap_len": WrapLengthError,
    "wrapped_dek": BadSignatureError,
    "sig_len": SigLengthError,
    "signature": BadSignatureError,
    "salt": CommitmentMismatchError,
    "commitment": CommitmentMismatchError,
}

Flip = tuple[int, int]  # (offset in the file, bit index)
Expect = Callable[[bytearray, int], Outcome]  # (mutated package, offset) -> expected outcome


def _every_bit(start: int, stop: int) -> Iterator[Flip]:
    for offset in range(start, stop):
        for bit in range(8):
            yield offset, bit


def _one_bit_per_byte(start: int, stop: int) -> Iterator[Flip]:
    for offset in range(start, stop):
        yield offset, offset % 8


def _region_plan(sealed: Sealed, region: str) -> tuple[list[Flip], Expect]:
    """The flips a region test makes and how to predict each outcome."""
    layout = sealed.layout
    if region.startswith("chunk"):
        index = int(region[5])
        start, stop = layout.chunks[index]
        outcome = Outcome(ChunkTagError, index)
        if region.endswith("edges"):
            flips = [*_every_bit(start, start + EDGE_BYTES), *_every_bit(stop - EDGE_BYTES, stop)]
        else:
            middle = list(_one_bit_per_byte(start + EDGE_BYTES, stop - EDGE_BYTES))
            part = int(region.rsplit("-", 1)[1]) if region.count("-") == 2 else 0
            parts = MIDDLE_PARTS if region.count("-") == 2 else 1
            flips = middle[part::parts]
        return flips, lambda data, offset: outcome
    start, stop = layout.regions[region]
    flips = list(_every_bit(start, stop))
    if region == "header_len":

        def expect_header_len(data: bytearray, offset: int) -> Outcome:
            (value,) = struct.unpack_from(">I", data, 8)
            return Outcome(_expected_for_header_len(value, len(data)))

        return flips, expect_header_len
    if region == "header":

        def expect_header(data: bytearray, offset: int) -> Outcome:
            return Outcome(_expected_for_header(bytes(data[start:stop]), sealed.header))

        return flips, expect_header
    error = FIXED_REGION_ERRORS[region]
    return flips, lambda data, offset: Outcome(error)


FRAMING_REGIONS = [
    "magic",
    "header_len",
    "header",
    "enc_len",
    "enc",
    "wrap_len",
    "wrapped_dek",
    "sig_len",
    "signature",
]
BODY_REGIONS = [
    "salt",
    "commitment",
    *(
        name
        for index in (0, 1)
        for name in (
            f"chunk{index}-edges",
            *(f"chunk{index}-middle-{part}" for part in range(MIDDLE_PARTS)),
        )
    ),
    "chunk2-edges",
    "chunk2-middle",
]
SWEEP_CASES = [
    *(("x25519-ed25519", region) for region in FRAMING_REGIONS + BODY_REGIONS),
    *(("p256-es256", region) for region in FRAMING_REGIONS),
]


def _sweep(sealed: Sealed, flips: list[Flip], expect: Expect) -> tuple[int, list[str]]:
    """Apply each flip alone; return how many ran and a line for each unexpected outcome."""
    data = bytearray(sealed.data)
    problems = []
    for offset, bit in flips:
        data[offset] ^= 1 << bit
        try:
            want = expect(data, offset)
            got = _open_outcome(data, sealed)
        finally:
            data[offset] ^= 1 << bit
        if got != want:
            problems.append(
                f"offset {offset} bit {bit}: expected {want.describe()}, got {got.describe()}"
            )
    return len(flips), problems


def _report(problems: list[str], total: int) -> str:
    shown = "\n".join(problems[:40])
    return f"{len(problems)} of {total} mutations misbehaved:\n{shown}"


@pytest.mark.parametrize(("suite", "region"), SWEEP_CASES, ids=[f"{s}-{r}" for s, r in SWEEP_CASES])
def test_every_bit_flip_is_rejected_with_the_error_of_its_region(suite: str, region: str) -> None:
    sealed = _sealed(suite)
    flips, expect = _region_plan(sealed, region)
    total, problems = _sweep(sealed, flips, expect)
    assert total > 0
    assert not problems, _report(problems, total)


def _assert_nothing_released(sealed: Sealed, data: bytes, tmp_path: Path, want: Outcome) -> None:
    error = want.error
    assert error is not None
    assert issubclass(error, ModelSealError)
    sentinel = b"\xa5" * len(sealed.plaintext)
    out = bytearray(sentinel)
    with pytest.raises(error) as raised:
        open_into(data, out, sealed.device, sealed.policy)
    assert raised.value.code == error.code
    # Either the reader never wrote (sentinel intact) or it wiped what it wrote.
    assert bytes(out) in (sentinel, bytes(len(out)))

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir(exist_ok=True)
    out_dir.mkdir(exist_ok=True)
    (in_dir / "package.mseal").write_bytes(data)
    with pytest.raises(error):
        open_file(
            in_dir / "package.mseal",
            out_dir / "model.bin",
            sealed.device,
            sealed.policy,
            fsync=False,
        )
    assert sorted(os.listdir(out_dir)) == []


@pytest.mark.parametrize(("suite", "region"), SWEEP_CASES, ids=[f"{s}-{r}" for s, r in SWEEP_CASES])
def test_bit_flips_release_no_plaintext_through_open_into_or_open_file(
    suite: str, region: str, tmp_path: Path
) -> None:
    sealed = _sealed(suite)
    flips, expect = _region_plan(sealed, region)
    stride = max(1, len(flips) // OPEN_FILE_SAMPLES_PER_REGION)
    sample = flips[::stride]
    assert sample
    for offset, bit in sample:
        data = bytearray(sealed.data)
        data[offset] ^= 1 << bit
        _assert_nothing_released(sealed, bytes(data), tmp_path, expect(data, offset))


# --- Truncation and appended bytes -------------------------------------------------------------

TRUNCATION_PARTS = 6


def _truncation_offsets(sealed: Sealed, part: str) -> list[int]:
    body = sealed.layout.body_offset
    if part == "framing":
        return list(range(body))
    index = int(part.rsplit("-", 1)[1])
    return list(range(body, len(sealed.data)))[index::TRUNCATION_PARTS]


@pytest.mark.parametrize(
    "part", ["framing", *(f"body-{index}" for index in range(TRUNCATION_PARTS))]
)
def test_truncation_at_every_offset_is_rejected(part: str) -> None:
    """Cut inside magic, prelude or key block: ``truncated``; inside the body: ``body_length``."""
    sealed = _sealed("x25519-ed25519")
    offsets = _truncation_offsets(sealed, part)
    want = Outcome(TruncatedError if part == "framing" else BodyLengthError)
    problems = []
    for size in offsets:
        got = _open_outcome(sealed.data[:size], sealed)
        if got != want:
            problems.append(
                f"truncated to {size}: expected {want.describe()}, got {got.describe()}"
            )
    assert offsets
    assert not problems, _report(problems, len(offsets))


def _appended(sealed: Sealed) -> dict[str, bytes]:
    first_chunk = slice(*sealed.layout.chunks[0])
    final_chunk = slice(*sealed.layout.chunks[-1])
    garbage = random.Random(7).randbytes(SEALED_CHUNK)
    return {
        "one-byte": b"\x00",
        "a-chunk-of-garbage": garbage,
        "a-copy-of-chunk-0": sealed.data[first_chunk],
        "a-copy-of-the-final-chunk": sealed.data[final_chunk],
        "the-whole-package-again": sealed.data,
    }


@pytest.mark.parametrize(
    "suffix",
    [
        "one-byte",
        "a-chunk-of-garbage",
        "a-copy-of-chunk-0",
        "a-copy-of-the-final-chunk",
        "the-whole-package-again",
    ],
)
def test_bytes_appended_after_the_final_chunk_are_rejected(suffix: str, tmp_path: Path) -> None:
    sealed = _sealed("x25519-ed25519")
    data = sealed.data + _appended(sealed)[suffix]
    with pytest.raises(BodyLengthError) as raised:
        open_bytes(data, sealed.device, sealed.policy)
    assert raised.value.code == "body_length"
    _assert_nothing_released(sealed, data, tmp_path, Outcome(BodyLengthError))


# --- Chunk surgery ----------------------------------------------------------------------------


def _with_chunks(sealed: Sealed, order: list[int]) -> bytes:
    """The package with its chunks replaced by the chunks ``order`` names, in that order."""
    chunks = [sealed.data[start:stop] for start, stop in sealed.layout.chunks]
    prefix = sealed.data[: sealed.layout.chunks[0][0]]
    return prefix + b"".join(chunks[index] for index in order)


CHUNK_SURGERY = [
    # (name, new chunk order, expected outcome). The same-length reorderings reach the chunk
    # tags; anything that changes the body length is caught before any chunk is opened.
    ("swap-chunks-0-and-1", [1, 0, 2], Outcome(ChunkTagError, 0)),
    ("swap-chunks-1-and-final", [0, 2, 1], Outcome(ChunkTagError, 1)),
    ("chunk-1-in-place-of-chunk-0", [1, 1, 2], Outcome(ChunkTagError, 0)),
    ("chunk-0-in-place-of-chunk-1", [0, 0, 2], Outcome(ChunkTagError, 1)),
    ("rotate-all-three", [2, 0, 1], Outcome(ChunkTagError, 0)),
    ("drop-chunk-0", [1, 2], Outcome(BodyLengthError)),
    ("drop-chunk-1", [0, 2], Outcome(BodyLengthError)),
    ("drop-the-final-chunk", [0, 1], Outcome(BodyLengthError)),
    ("drop-all-chunks", [], Outcome(BodyLengthError)),
    ("duplicate-chunk-0", [0, 0, 1, 2], Outcome(BodyLengthError)),
    ("duplicate-chunk-1", [0, 1, 1, 2], Outcome(BodyLengthError)),
    ("duplicate-the-final-chunk", [0, 1, 2, 2], Outcome(BodyLengthError)),
]


@pytest.mark.parametrize(
    ("order", "want"),
    [(o, w) for _, o, w in CHUNK_SURGERY],
    ids=[name for name, _, _ in CHUNK_SURGERY],
)
def test_swapped_dropped_or_duplicated_chunks_are_rejected(
    order: list[int], want: Outcome, tmp_path: Path
) -> None:
    sealed = _sealed("x25519-ed25519")
    data = _with_chunks(sealed, order)
    assert _open_outcome(data, sealed) == want
    _assert_nothing_released(sealed, data, tmp_path, want)


# --- Splicing two packages to the same device from the same issuer ----------------------------


def _parts(sealed: Sealed) -> dict[str, bytes]:
    regions = sealed.layout.regions
    return {
        "prelude": sealed.data[: regions["header"][1]],
        "keyblock": sealed.data[regions["enc_len"][0] : regions["wrapped_dek"][1]],
        "signature": sealed.data[regions["sig_len"][0] : regions["signature"][1]],
        "body": sealed.data[sealed.layout.body_offset :],
    }


def _splice(donors: dict[str, Sealed]) -> bytes:
    return b"".join(
        _parts(donors[name])[name] for name in ("prelude", "keyblock", "signature", "body")
    )


def test_two_packages_for_splicing_share_device_issuer_and_length_but_differ() -> None:
    a, b = _sealed("x25519-ed25519", "jti-a"), _sealed("x25519-ed25519", "jti-b")
    assert (a.device, a.issuer) == (b.device, b.issuer)
    assert a.layout.regions == b.layout.regions
    assert _parts(a)["prelude"] != _parts(b)["prelude"]
    assert _parts(a)["keyblock"] != _parts(b)["keyblock"]
    assert (
        open_bytes(
            _splice({"prelude": b, "keyblock": b, "signature": b, "body": b}), b.device, b.policy
        ).plaintext
        == b.plaintext
    )


@pytest.mark.parametrize(
    ("donor_of", "want"),
    [
        # The signature covers prelude || keyblock, so a foreign key block fails it.
        ({"keyblock": "a"}, BadSignatureError),
        # A's key block with A's own signature still fails: that signature covers A's header.
        ({"keyblock": "a", "signature": "a"}, BadSignatureError),
        ({"signature": "a"}, BadSignatureError),
        ({"prelude": "a"}, BadSignatureError),
        # B's framing opens B's DEK, whose commitment A's body (salt, commitment) cannot match.
        ({"body": "a"}, CommitmentMismatchError),
    ],
    ids=[
        "keyblock-of-a",
        "keyblock-and-signature-of-a",
        "signature-of-a",
        "header-of-a",
        "body-of-a",
    ],
)
def test_splicing_parts_of_package_a_into_package_b_is_rejected(
    donor_of: dict[str, str], want: type[ModelSealError], tmp_path: Path
) -> None:
    packages = {"a": _sealed("x25519-ed25519", "jti-a"), "b": _sealed("x25519-ed25519", "jti-b")}
    donors = {
        part: packages[donor_of.get(part, "b")]
        for part in ("prelude", "keyblock", "signature", "body")
    }
    data = _splice(donors)
    b = packages["b"]
    with pytest.raises(want) as raised:
        open_bytes(data, b.device, b.policy)
    assert raised.value.code == want.code
    _assert_nothing_released(b, data, tmp_path, Outcome(want))


def test_body_of_a_twin_with_an_identical_header_is_rejected_by_the_commitment() -> None:
    """Two packages with byte-identical headers still have different DEKs, so bodies don't mix."""
    device, issuer = _keys("x25519-ed25519")
    plaintext = b"\x42" * PLAINTEXT_BYTES
    to = IssueTo(device.public_key(), issuer, _claims("jti-twin"))
    a = seal_bytes(plaintext, to)
    b = seal_bytes(plaintext, to)
    layout = _layout(a)
    regions = layout.regions
    assert a[: regions["header"][1]] == b[: regions["header"][1]]
    policy = _sealed("x25519-ed25519").policy
    with pytest.raises(CommitmentMismatchError) as raised:
        open_bytes(b[: layout.body_offset] + a[layout.body_offset :], device, policy)
    assert raised.value.code == "commitment_mismatch"
    key_block = slice(regions["enc_len"][0], regions["wrapped_dek"][1])
    with pytest.raises(BadSignatureError) as raised_sig:
        open_bytes(b[: key_block.start] + a[key_block] + b[key_block.stop :], device, policy)
    assert raised_sig.value.code == "bad_signature"


# --- A forged header (no issuer key needed) ---------------------------------------------------


def _with_forged_header(sealed: Sealed, **changes: Any) -> bytes:
    """The package with its header rewritten (and header_len fixed up), signature kept."""
    header = json.dumps({**sealed.header, **changes}, separators=(",", ":")).encode()
    stop = sealed.layout.regions["header"][1]
    return sealed.data[:8] + struct.pack(">I", len(header)) + header + sealed.data[stop:]


@pytest.mark.parametrize("length", [0, 1, PLAINTEXT_BYTES - 1, MAX_LEN])
def test_a_forged_len_is_rejected_by_the_signature_before_anything_is_allocated(
    length: int,
) -> None:
    """Anyone who holds the file can rewrite ``len``; the reader must not act on it unverified.

    ``2^52 - 1`` is the largest value the header allows; a reader that sized a buffer from it
    before checking the signature would fail with ``MemoryError`` instead of ``bad_signature``.
    """
    sealed = _sealed("x25519-ed25519")
    data = _with_forged_header(sealed, len=length)
    for attempt in (
        lambda: open_bytes(data, sealed.device, sealed.policy),
        lambda: open_into(data, bytearray(PLAINTEXT_BYTES), sealed.device, sealed.policy),
    ):
        with pytest.raises(BadSignatureError) as raised:
            attempt()
        assert raised.value.code == "bad_signature"
