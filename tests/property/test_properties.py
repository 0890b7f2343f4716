"""Properties of sealing and opening, checked on generated inputs (Hypothesis).

* Every plaintext size round trips, whole and streamed, for every KEM, signature algorithm and
  rtype, with sizes drawn both from the chunk boundaries and from anywhere up to 70 000 bytes.
* No two packages share a DEK, a salt or an HPKE encapsulation, even for the same plaintext,
  recipient and claims.
* ``read_range`` equals slicing, for arbitrary ranges of arbitrary sizes.
* Changing any one byte of any package makes it fail to open.
"""

from __future__ import annotations

import functools
import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.envelope import (
    AtRest,
    Claims,
    IssueTo,
    OpenPolicy,
    inspect,
    open_bytes,
    open_stream,
    seal_bytes,
    sealed_size,
)
from modelseal.envelope.container import read_framing
from modelseal.errors import ModelSealError
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
)

NOW = 1_800_000_000
AUDIENCE = "device-7f3a"
CHUNK = 16384
SALT_BYTES = 24
BOUNDARY_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1]
SIZES = st.sampled_from(BOUNDARY_SIZES) | st.integers(0, 70_000)
CLAIMS = Claims(
    iss="issuer.example",
    sub="u-5b1e",
    aud=AUDIENCE,
    mid="model-llm-small",
    jti="jti-0001",
    iat=NOW - 10,
    exp=NOW + 3600,
)


@functools.cache
def _device(kem: KEM) -> RecipientPrivateKey:
    return RecipientPrivateKey.generate(kem)


@functools.cache
def _issuer(alg: SignatureAlgorithm) -> IssuerPrivateKey:
    return IssuerPrivateKey.generate(alg)


@functools.cache
def _kek() -> KEK:
    return KEK.generate("device-kek")


def _policy(alg: SignatureAlgorithm) -> OpenPolicy:
    return OpenPolicy(issuers=IssuerKeySet([_issuer(alg).public_key()]), audience=AUDIENCE, now=NOW)


class OneWay(io.RawIOBase):
    """A non-seekable reader over bytes."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._src.readinto(buffer)


@settings(max_examples=80, deadline=None)
@given(
    size=SIZES,
    kem=st.sampled_from(list(KEM)),
    alg=st.sampled_from(list(SignatureAlgorithm)),
    rtype=st.sampled_from(["hpke", "kek"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_size_round_trips_for_every_kem_algorithm_and_rtype(
    size: int, kem: KEM, alg: SignatureAlgorithm, rtype: str, seed: int
) -> None:
    plaintext = random.Random(seed).randbytes(size)
    if rtype == "hpke":
        to: IssueTo | AtRest = IssueTo(_device(kem).public_key(), _issuer(alg), CLAIMS)
        key: RecipientPrivateKey | KEK = _device(kem)
        policy = _policy(alg)
    else:
        to, key, policy = AtRest(_kek(), CLAIMS), _kek(), OpenPolicy(now=NOW)
    package = seal_bytes(plaintext, to)

    assert len(package) == sealed_size(to, size)
    assert inspect(io.BytesIO(package)).header.length == size
    assert open_bytes(package, key, policy).plaintext == plaintext
    assert open_stream(io.BytesIO(package), key, policy).read_all() == plaintext
    sink = io.BytesIO()
    open_stream(OneWay(package), key, policy).decrypt_to(sink)  # type: ignore[arg-type]
    assert sink.getvalue() == plaintext


def test_no_two_packages_share_a_dek_a_salt_or_an_encapsulation() -> None:
    count = 200
    device, issuer = _device(KEM.X25519), _issuer(SignatureAlgorithm.ED25519)
    to = IssueTo(device.public_key(), issuer, CLAIMS)
    deks, salts, encs = set(), set(), set()
    for _ in range(count):
        package = seal_bytes(b"the same plaintext every time", to)
        framing = read_framing(io.BytesIO(package))
        salts.add(package[framing.body_offset : framing.body_offset + SALT_BYTES])
        deks.add(framing.unwrap_dek(device))
        encs.add(framing.enc)
    assert (len(deks), len(salts), len(encs)) == (count, count, count)
    assert all(len(dek) == 32 for dek in deks)


def test_no_two_at_rest_packages_share_a_dek_a_salt_or_a_wrap_nonce() -> None:
    count = 200
    deks, salts, nonces = set(), set(), set()
    for _ in range(count):
        package = seal_bytes(b"the same plaintext every time", AtRest(_kek(), CLAIMS))
        framing = read_framing(io.BytesIO(package))
        salts.add(package[framing.body_offset : framing.body_offset + SALT_BYTES])
        deks.add(framing.unwrap_dek(_kek()))
        nonces.add(framing.enc)
    assert (len(deks), len(salts), len(nonces)) == (count, count, count)


@functools.cache
def _package(size: int) -> tuple[bytes, bytes]:
    plaintext = random.Random(size).randbytes(size)
    to = IssueTo(_device(KEM.X25519).public_key(), _issuer(SignatureAlgorithm.ED25519), CLAIMS)
    return plaintext, seal_bytes(plaintext, to)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), size=SIZES)
def test_read_range_equals_slicing(data: st.DataObject, size: int) -> None:
    plaintext, package = _package(size)
    opened = open_stream(
        io.BytesIO(package), _device(KEM.X25519), _policy(SignatureAlgorithm.ED25519)
    )
    for _ in range(5):
        start = data.draw(st.integers(0, size), label="start")
        stop = data.draw(st.integers(start, size), label="stop")
        assert opened.read_range(start, stop) == plaintext[start:stop]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), size=st.sampled_from([0, 1, CHUNK, 2 * CHUNK + 1000]))
def test_changing_any_one_byte_makes_a_package_fail_to_open(data: st.DataObject, size: int) -> None:
    _, package = _package(size)
    offset = data.draw(st.integers(0, len(package) - 1), label="offset")
    delta = data.draw(st.integers(1, 255), label="xor")
    mutated = bytearray(package)
    mutated[offset] ^= delta
    device, policy = _device(KEM.X25519), _policy(SignatureAlgorithm.ED25519)
    try:
        open_bytes(mutated, device, policy)
    except ModelSealError:
        return
    raise AssertionError(f"a package with byte {offset} changed by {delta:#04x} opened")
