"""Mutation fuzzing of the reader: whatever the bytes, only declared errors come out.

Each run mutates valid packages (both rtypes, small and 3-chunk bodies) with bit
flips, byte overwrites with boundary values, insertions, deletions, truncations
and splices of another package, then opens the result. The reader must either
return the exact original plaintext (a mutation can be a no-op) or raise a
:class:`~modelseal.errors.ModelSealError`; any other exception type, or a
success with different plaintext, fails the test.

The default run does 100,000 mutations split across the parametrized cases;
``pytest -m slow tests/fuzz`` runs 2,000,000 more.
"""

from __future__ import annotations

import contextlib
import io
import random

import pytest

from modelseal.envelope import (
    AtRest,
    Claims,
    IssueTo,
    OpenPolicy,
    open_bytes,
    open_stream,
    seal_bytes,
)
from modelseal.envelope.header import parse_header
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
BOUNDARY_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x7B, 0x7D, 0x30, 0x39]


def _corpus() -> list[tuple[str, bytes, bytes, object, OpenPolicy]]:
    claims = Claims(
        iss="issuer", sub="user", aud="device", mid="model", jti="j", iat=NOW, exp=NOW + 60
    )
    device = RecipientPrivateKey.generate(KEM.X25519)
    issuer = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience="device", now=NOW)
    kek = KEK.generate("kek-1")
    cases = []
    for size in (0, 100, 2 * 16384 + 100):
        plaintext = random.Random(size).randbytes(size)
        cases.append(
            (
                f"hpke-{size}",
                seal_bytes(plaintext, IssueTo(device.public_key(), issuer, claims)),
                plaintext,
                device,
                policy,
            )
        )
        cases.append(
            (
                f"kek-{size}",
                seal_bytes(plaintext, AtRest(kek, claims)),
                plaintext,
                kek,
                OpenPolicy(now=NOW),
            )
        )
    return cases


CORPUS = _corpus()


def _mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1) if buf else 0
        if op == 0 and buf:
            pos = min(pos, len(buf) - 1)
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            pos = min(pos, len(buf) - 1)
            buf[pos] = rng.choice(BOUNDARY_BYTES)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.choice((1, 2, 16, 100)))
        elif op == 3:
            del buf[pos : pos + rng.choice((1, 2, 16, 100, 16400))]
        elif op == 4:
            del buf[pos:]
        elif op == 5:
            # Splice a slice of another package in at the same offset.
            length = rng.choice((1, 8, 64, 1024))
            buf[pos : pos + length] = other[pos : pos + length]
        else:
            # Hit the u32/u16 length fields with boundary values.
            offset = rng.choice((8, 8, 8))
            buf[offset : offset + 4] = rng.choice(
                (b"\x00\x00\x00\x00", b"\x00\x01\x00\x00", b"\x00\x01\x00\x01", b"\xff\xff\xff\xff")
            )
    return bytes(buf)


def _check_one(
    data: bytes, genuine: set[bytes], key: object, policy: OpenPolicy, *, stream: bool
) -> None:
    """Open ``data``; it must fail with a declared error or yield a genuine plaintext.

    ``genuine`` holds the plaintexts really sealed under these keys: a splice can
    reproduce another genuine package wholesale, which must still open.
    """
    try:
        opened = open_bytes(data, key, policy)  # type: ignore[arg-type]
    except ModelSealError:
        pass
    else:
        assert opened.plaintext in genuine, "a mutated package opened to forged plaintext"
    if not stream:
        return
    try:
        package = open_stream(io.BytesIO(data), key, policy)  # type: ignore[arg-type]
        streamed = package.read_all()
    except ModelSealError:
        return
    assert streamed in genuine


GENUINE = {c[2] for c in CORPUS}


@pytest.mark.parametrize("case", range(len(CORPUS)), ids=[c[0] for c in CORPUS])
@pytest.mark.parametrize("shard", range(2))
def test_mutated_packages_raise_only_declared_errors(case: int, shard: int) -> None:
    name, data, _, key, policy = CORPUS[case]
    other = CORPUS[(case + 2) % len(CORPUS)][1]
    rng = random.Random(f"{name}-{shard}")
    # 6 cases x 2 shards x 8,400 = 100,800 mutations in the default run; every
    # eighth also goes through the streaming reader.
    for i in range(8400):
        _check_one(_mutate(rng, data, other), GENUINE, key, policy, stream=i % 8 == 0)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CORPUS)), ids=[c[0] for c in CORPUS])
def test_long_mutation_fuzz(case: int) -> None:
    name, data, _, key, policy = CORPUS[case]
    other = CORPUS[(case + 1) % len(CORPUS)][1]
    rng = random.Random(f"long-{name}")
    for _ in range(333_000):
        _check_one(_mutate(rng, data, other), GENUINE, key, policy, stream=True)


def test_random_headers_raise_only_declared_errors() -> None:
    rng = random.Random(7)
    alphabet = b'{}[]":,0123456789-+.eEtruefalsnul \\u"abcdkem\xff\xc3\xa9'
    seeds = [b'{"rtype":"kek","rcpt":"a","len":1,"ctype":"x"}', b"{}", b"[]"]
    for _ in range(20_000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(base) + 1)
            if rng.random() < 0.5 and base:
                del base[min(pos, len(base) - 1)]
            else:
                base[pos:pos] = bytes([rng.choice(alphabet)])
        with contextlib.suppress(ModelSealError):
            parse_header(bytes(base))
