"""Fuzzing the Android parsers with hypothesis: nothing escapes but declared errors.

Two targets, each fed random bytes and mutations of real and synthetic inputs:

* ``parse_key_description`` may raise only ``AttestationMalformedError``;
* the whole verifier on chain evidence may raise only ``AttestationError`` subclasses.

The default run tries a few hundred inputs per target. The ``slow`` run tries 100 000
per target: ``pytest -m slow tests/attestation/test_android_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.attestation import AttestationError, AttestationMalformedError
from modelseal.attestation.android import AndroidKeyVerifier
from modelseal.attestation.android_asn1 import parse_key_description
from modelseal.attestation.android_chain import _parse_leaf
from tests.attestation.android_fixtures import (
    GOOGLE_CHAINS,
    SYNTHETIC_CHALLENGE,
    SYNTHETIC_NOW,
    KeyDescriptionSpec,
    SyntheticPKI,
    device_public,
    google_chain,
    keyattestation_chain,
    make_leaf,
    real_verifier,
    synthetic_evidence,
    synthetic_verifier,
)

SHORT_EXAMPLES = 300
LONG_EXAMPLES = 100_000
CHALLENGE = SYNTHETIC_CHALLENGE

_REAL_CHAINS = [google_chain(a, lvl) for a, lvl in GOOGLE_CHAINS] + [
    keyattestation_chain("TEE_EC_2026_ROOT"),
    keyattestation_chain("SB_EC_2026_ROOT"),
]
_PKI = SyntheticPKI.create()
_SYNTHETIC_LEAF, _SYNTHETIC_KEY = make_leaf(_PKI, KeyDescriptionSpec())
_SYNTHETIC_EVIDENCE = synthetic_evidence(_PKI, _SYNTHETIC_LEAF)

RECORD_SEEDS = [_parse_leaf(c.certificates[0]).key_description for c in _REAL_CHAINS] + [
    KeyDescriptionSpec(challenge=CHALLENGE).encode(),
    KeyDescriptionSpec(challenge=b"", ec_curve=None, hardware_in_software_list=True).encode(),
]
CHAIN_SEEDS = [c.evidence for c in _REAL_CHAINS] + [_SYNTHETIC_EVIDENCE]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1-6 edits: bit flips, byte sets, deletions, insertions, truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        operation = draw(st.integers(0, 5))
        if operation == 0 and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == 1 and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == 2:
            del data[position : position + draw(st.integers(1, 64))]
        elif operation == 3:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == 4:
            del data[position:]
        else:
            # Length-field edits: small adjustments where DER lengths live.
            if data:
                data[position] = (data[position] + draw(st.sampled_from([1, -1, 0x80]))) % 256
    return bytes(data)


def _inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2048), mutated(seeds))


def _record_target(data: bytes) -> None:
    with contextlib.suppress(AttestationMalformedError):
        parse_key_description(data)


def _chain_targets(
    directory: Path,
) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
    chain = _REAL_CHAINS[0]
    real: AndroidKeyVerifier = real_verifier(chain, directory)
    synthetic = synthetic_verifier(_PKI, directory)
    device_key = device_public(_SYNTHETIC_KEY)

    def target_real(data: bytes) -> None:
        with contextlib.suppress(AttestationError):
            real.verify(data, challenge=chain.challenge, device_key=None, now=chain.now)

    def target_synthetic(data: bytes) -> None:
        with contextlib.suppress(AttestationError):
            synthetic.verify(data, challenge=CHALLENGE, device_key=device_key, now=SYNTHETIC_NOW)

    return target_real, target_synthetic


def _run(examples: int, directory: Path) -> dict[str, int]:
    counts = {"record": 0, "chain": 0}
    chain_real, chain_synthetic = _chain_targets(directory)
    common = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @common
    @given(_inputs(RECORD_SEEDS))
    def fuzz_record(data: bytes) -> None:
        counts["record"] += 1
        _record_target(data)

    @common
    @given(_inputs(CHAIN_SEEDS), st.booleans())
    def fuzz_chain(data: bytes, synthetic: bool) -> None:
        counts["chain"] += 1
        (chain_synthetic if synthetic else chain_real)(data)

    fuzz_record()
    fuzz_chain()
    return counts


def test_fuzz_parsers_short(tmp_path: Path) -> None:
    counts = _run(SHORT_EXAMPLES, tmp_path)
    assert counts["record"] >= SHORT_EXAMPLES
    assert counts["chain"] >= SHORT_EXAMPLES


@pytest.mark.slow
def test_fuzz_parsers_100k(tmp_path: Path) -> None:
    examples = int(os.environ.get("MODELSEAL_FUZZ_EXAMPLES", LONG_EXAMPLES))
    counts = _run(examples, tmp_path)
    print(f"android fuzz: {counts}")
    assert counts["record"] >= examples
    assert counts["chain"] >= examples


def test_seeds_are_valid_inputs(tmp_path: Path) -> None:
    # The mutations start from inputs that parse and verify, so they reach deep code paths.
    for seed in RECORD_SEEDS:
        parse_key_description(seed)
    result = synthetic_verifier(_PKI, tmp_path).verify(
        _SYNTHETIC_EVIDENCE,
        challenge=CHALLENGE,
        device_key=device_public(_SYNTHETIC_KEY),
        now=SYNTHETIC_NOW,
    )
    assert result.level == "tee"
