"""Round trips through every KEM, signature algorithm and rtype at the chunk boundaries."""

from __future__ import annotations

import io

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
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
)

NOW = 1_800_000_000
SIZES = [0, 1, 16383, 16384, 16385, 3 * 16384 + 7]


def _claims() -> Claims:
    return Claims(
        iss="issuer", sub="user-1", aud="device-1", mid="model-1", jti="j-1", iat=NOW, exp=NOW + 600
    )


@pytest.mark.parametrize("kem", list(KEM))
@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
@pytest.mark.parametrize("size", SIZES)
def test_issued_package_round_trips(kem: KEM, alg: SignatureAlgorithm, size: int) -> None:
    device = RecipientPrivateKey.generate(kem)
    issuer = IssuerPrivateKey.generate(alg)
    plaintext = bytes((i * 7) % 251 for i in range(size))
    package = seal_bytes(plaintext, IssueTo(device.public_key(), issuer, _claims()))
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience="device-1", now=NOW)
    assert open_bytes(package, device, policy).plaintext == plaintext
    reader = open_stream(io.BytesIO(package), device, policy)
    assert reader.read_all() == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_at_rest_package_round_trips(size: int) -> None:
    kek = KEK.generate("device-kek")
    plaintext = b"\xa5" * size
    package = seal_bytes(plaintext, AtRest(kek, _claims()))
    assert open_bytes(package, kek, OpenPolicy(now=NOW)).plaintext == plaintext
