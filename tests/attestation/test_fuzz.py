"""Fuzzing: every parser raises only declared AttestationError types, on any input.

Three input families per parser: random bytes, mutations of genuine objects (bit flips,
truncations, insertions, splices), and structurally valid containers (CBOR maps with
the right keys, correctly encrypted and signed tokens) holding arbitrary values.

The default run uses a few thousand inputs per parser; ``-m slow`` runs 100 000 each
(``FUZZ_EXAMPLES`` overrides the count).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from modelseal.attestation import AttestationError, client_data, client_data_hash
from modelseal.attestation.apple import AppleAppAttestVerifier
from modelseal.attestation.dev import InsecureDevAttester, InsecureDevVerifier
from modelseal.attestation.play_integrity import PlayIntegrityVerifier, expected_request_binding
from modelseal.keys import KEM, RecipientPrivateKey
from tests.attestation.apple_factory import APP_ID, NOW, AppleFactory, p256_point
from tests.attestation.play_factory import PACKAGE, PlayKeys, verdict

DEFAULT_EXAMPLES = 1000
SLOW_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100000"))
CHALLENGE = bytes(range(32))
DEVICE = RecipientPrivateKey.generate(KEM.P256).public_key()

FACTORY = AppleFactory()
APPLE = AppleAppAttestVerifier([APP_ID], roots=[FACTORY.root.cert])
APPLE_SEEDS = [FACTORY.attestation(client_data_hash(CHALLENGE, DEVICE))[0] for _ in range(3)]
APP_KEY = ec.generate_private_key(ec.SECP256R1())
APP_POINT = p256_point(APP_KEY)
ASSERT_DATA = client_data(CHALLENGE, DEVICE)
ASSERT_SEEDS = [AppleFactory.assertion(APP_KEY, ASSERT_DATA, n) for n in (1, 2, 300)]

KEYS = PlayKeys()
PLAY = PlayIntegrityVerifier(
    [PACKAGE],
    decryption_key=KEYS.decryption_key,
    verification_key=KEYS.signing_key.public_key(),
    backend_key=KEYS.backend_key.public_key(),
)
BINDING = expected_request_binding(CHALLENGE, DEVICE)
PLAY_SEEDS = [
    KEYS.classic(verdict(BINDING, NOW)),
    KEYS.backend(verdict(BINDING, NOW, hash_field="requestHash")),
]
DEV = InsecureDevVerifier(production=False)
DEV_SEEDS = [InsecureDevAttester().attest(CHALLENGE, DEVICE)]

COUNTS: dict[str, int] = {}


# --- strategies -----------------------------------------------------------------------------


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Genuine inputs with a few random edits."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "truncate":
                del data[at:]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "delete":
                del data[at : at + draw(st.integers(1, 64))]
            elif kind == "set" and data:
                data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x9F, 0xBF, 0xFB, 0xC0]))
        return bytes(data)

    return build()


CBOR_SCALARS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=16),
    st.integers(-(2**64) + 1, 2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
CBOR_KEYS = st.sampled_from(
    [
        "fmt",
        "attStmt",
        "authData",
        "x5c",
        "receipt",
        "signature",
        "authenticatorData",
        "apple-appattest",
    ]
)
CBOR_VALUES = st.recursive(
    CBOR_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(CBOR_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def apple_structured(draw: st.DrawFn) -> bytes:
    """A CBOR map with the right keys and arbitrary values, or genuine parts recombined."""
    seed = cbor2.loads(draw(st.sampled_from(APPLE_SEEDS))[32:])
    obj: dict[str, Any] = {
        "fmt": draw(st.one_of(st.just("apple-appattest"), CBOR_VALUES)),
        "attStmt": draw(
            st.one_of(
                st.just(seed["attStmt"]),
                st.fixed_dictionaries(
                    {
                        "x5c": st.one_of(
                            st.lists(
                                st.one_of(
                                    st.sampled_from(seed["attStmt"]["x5c"]),
                                    mutated(seed["attStmt"]["x5c"]),
                                ),
                                max_size=5,
                            ),
                            CBOR_VALUES,
                        ),
                        "receipt": CBOR_VALUES,
                    }
                ),
                CBOR_VALUES,
            )
        ),
        "authData": draw(st.one_of(mutated([seed["authData"]]), CBOR_VALUES)),
    }
    for key in draw(st.sets(st.sampled_from(list(obj)), max_size=1)):
        del obj[key]
    key_id = draw(
        st.one_of(st.just(hashlib.sha256(b"x").digest()), st.binary(min_size=32, max_size=32))
    )
    return key_id + cbor2.dumps(obj)


@st.composite
def assertion_structured(draw: st.DrawFn) -> bytes:
    seed = cbor2.loads(draw(st.sampled_from(ASSERT_SEEDS)))
    obj: dict[str, Any] = {
        "signature": draw(st.one_of(mutated([seed["signature"]]), CBOR_VALUES)),
        "authenticatorData": draw(st.one_of(mutated([seed["authenticatorData"]]), CBOR_VALUES)),
    }
    if draw(st.booleans()):
        obj[draw(CBOR_KEYS)] = draw(CBOR_VALUES)
    return cbor2.dumps(obj)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=12),
        st.sampled_from(
            [
                "PLAY_RECOGNIZED",
                "UNRECOGNIZED_VERSION",
                "UNEVALUATED",
                "MEETS_DEVICE_INTEGRITY",
                "LICENSED",
                PACKAGE,
                BINDING,
                str(NOW * 1000),
            ]
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "requestDetails",
                    "appIntegrity",
                    "deviceIntegrity",
                    "accountDetails",
                    "nonce",
                    "requestHash",
                    "requestPackageName",
                    "timestampMillis",
                    "appRecognitionVerdict",
                    "packageName",
                    "deviceRecognitionVerdict",
                    "appLicensingVerdict",
                    "tokenPayloadExternal",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=16,
)


@st.composite
def play_structured(draw: st.DrawFn) -> bytes:
    """Correctly encrypted and signed tokens around arbitrary JSON (or a mutated verdict)."""
    base = verdict(BINDING, NOW)
    if draw(st.booleans()):
        payload: Any = draw(JSON_VALUES)
    else:
        payload = json.loads(json.dumps(base))
        section = draw(st.sampled_from(list(payload)))
        if draw(st.booleans()):
            payload[section] = draw(JSON_VALUES)
        else:
            inner = payload[section]
            if isinstance(inner, dict) and inner:
                inner[draw(st.sampled_from(sorted(inner)))] = draw(JSON_VALUES)
    if not isinstance(payload, dict):
        payload = {"requestDetails": payload}
    return KEYS.classic(payload) if draw(st.booleans()) else KEYS.backend(payload)


def _token_text() -> st.SearchStrategy[bytes]:
    alphabet = st.sampled_from(
        list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/")
    )
    return st.lists(alphabet, max_size=300).map(lambda chars: "".join(chars).encode())


# --- fast generators (plain Python randomness, driven by hypothesis) -------------------------
#
# The 100k runs draw one true-random ``Random`` per example from hypothesis and build the
# input from it: hypothesis's own draws cost about a millisecond per composite example,
# more than most verifications, so this keeps the same input families at a tenth of the cost.


def _fast_mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(max(len(out), 1))
        if kind == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[at:]
        elif kind == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3:
            del out[at : at + rng.randint(1, 64)]
        elif out:
            out[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x9F, 0xBF, 0xFB, 0xC0])
    return bytes(out)


_FAST_KEYS = [
    "fmt",
    "attStmt",
    "authData",
    "x5c",
    "receipt",
    "signature",
    "authenticatorData",
    "requestDetails",
    "appIntegrity",
    "deviceIntegrity",
    "accountDetails",
    "nonce",
    "requestHash",
    "requestPackageName",
    "timestampMillis",
    "appRecognitionVerdict",
    "deviceRecognitionVerdict",
    "appLicensingVerdict",
]
_FAST_STRINGS = [
    "apple-appattest",
    "PLAY_RECOGNIZED",
    "UNEVALUATED",
    "MEETS_DEVICE_INTEGRITY",
    "LICENSED",
    PACKAGE,
    BINDING,
    str(NOW * 1000),
    "",
    "\u0000",
]


def _fast_value(rng: random.Random, depth: int = 0, *, json_safe: bool = False) -> Any:
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 64)) if not json_safe else rng.randbytes(8).hex()
    if kind == 1:
        return rng.choice(_FAST_STRINGS)
    if kind == 2:
        return rng.randint(-(2**64) + 1, 2**64 - 1)
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return (
            rng.choice([0.5, -1e308, 1e308])
            if json_safe
            else rng.choice([0.5, float("nan"), float("inf")])
        )
    if kind == 5:
        return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 12)))
    if kind == 6:
        return rng.randint(0, 2**53)
    if kind == 7:
        return [_fast_value(rng, depth + 1, json_safe=json_safe) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(_FAST_KEYS): _fast_value(rng, depth + 1, json_safe=json_safe)
        for _ in range(rng.randint(0, 4))
    }


def fast_apple(rng: random.Random) -> bytes:
    family = rng.randrange(4)
    if family == 0:
        return rng.randbytes(rng.randint(0, 512))
    if family == 1:
        return bytes(32) + rng.randbytes(rng.randint(0, 256))
    seed = rng.choice(APPLE_SEEDS)
    if family == 2:
        return _fast_mutate(rng, seed)
    parts = cbor2.loads(seed[32:])
    x5c = list(parts["attStmt"]["x5c"])
    obj: dict[str, Any] = {
        "fmt": "apple-appattest",
        "attStmt": {"x5c": x5c, "receipt": parts["attStmt"]["receipt"]},
        "authData": parts["authData"],
    }
    # Perturb one component and keep the rest genuine, to reach the deeper checks.
    which = rng.randrange(8)
    if which == 0:
        obj["fmt"] = _fast_value(rng)
    elif which == 1:
        obj["attStmt"] = _fast_value(rng)
    elif which == 2:
        obj["attStmt"]["receipt"] = _fast_value(rng)
    elif which == 3:
        i = rng.randrange(len(x5c))
        x5c[i] = _fast_mutate(rng, x5c[i])
    elif which == 4:
        rng.shuffle(x5c)
        x5c[rng.randrange(len(x5c)) :] = [rng.choice(parts["attStmt"]["x5c"])] * rng.randint(0, 3)
    elif which == 5:
        auth = bytearray(parts["authData"])
        at = rng.randrange(len(auth))
        auth[at] = rng.randrange(256)
        obj["authData"] = bytes(auth)
    elif which == 6:
        obj["authData"] = _fast_mutate(rng, parts["authData"])
    else:
        del obj[rng.choice(list(obj))]
    key_id = seed[:32] if rng.random() < 0.8 else rng.randbytes(32)
    return key_id + cbor2.dumps(obj)


def fast_assertion(rng: random.Random) -> bytes:
    family = rng.randrange(3)
    if family == 0:
        return rng.randbytes(rng.randint(0, 256))
    seed = rng.choice(ASSERT_SEEDS)
    if family == 1:
        return _fast_mutate(rng, seed)
    parts = cbor2.loads(seed)
    obj: dict[str, Any] = dict(parts)
    which = rng.randrange(5)
    if which == 0:
        obj["signature"] = _fast_mutate(rng, parts["signature"])
    elif which == 1:
        auth = bytearray(parts["authenticatorData"])
        auth[rng.randrange(len(auth))] = rng.randrange(256)
        obj["authenticatorData"] = bytes(auth)
    elif which == 2:
        obj[rng.choice(list(obj))] = _fast_value(rng)
    elif which == 3:
        obj[rng.choice(_FAST_KEYS)] = _fast_value(rng)
    else:
        obj["authenticatorData"] = _fast_mutate(rng, parts["authenticatorData"])
    return cbor2.dumps(obj)


def fast_play(rng: random.Random) -> bytes:
    family = rng.randrange(4)
    if family == 0:
        return rng.randbytes(rng.randint(0, 256))
    if family == 1:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))).encode()
    if family == 2:
        return _fast_mutate(rng, rng.choice(PLAY_SEEDS))
    payload: Any = json.loads(json.dumps(verdict(BINDING, NOW)))
    if rng.random() < 0.3:
        payload = _fast_value(rng, json_safe=True)
    else:
        section = rng.choice(list(payload))
        inner = payload[section]
        if rng.random() < 0.5 or not inner:
            payload[section] = _fast_value(rng, json_safe=True)
        else:
            inner[rng.choice(sorted(inner))] = _fast_value(rng, json_safe=True)
    if not isinstance(payload, dict):
        payload = {"requestDetails": payload}
    return KEYS.classic(payload) if rng.random() < 0.5 else KEYS.backend(payload)


def fast_dev(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 128))
    return _fast_mutate(rng, DEV_SEEDS[0])


# --- targets --------------------------------------------------------------------------------


def _apple(data: bytes) -> None:
    APPLE.verify(data, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def _assertion(data: bytes) -> None:
    APPLE.verify_assertion(
        data, client_data=ASSERT_DATA, public_key=APP_POINT, app_id=APP_ID, stored_count=0
    )


def _play(data: bytes) -> None:
    PLAY.verify(data, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


def _dev(data: bytes) -> None:
    DEV.verify(data, challenge=CHALLENGE, device_key=DEVICE, now=NOW)


TARGETS: dict[str, tuple[Callable[[bytes], None], st.SearchStrategy[bytes]]] = {
    "apple_attestation": (
        _apple,
        st.one_of(
            st.binary(max_size=512),
            st.binary(max_size=256).map(lambda b: bytes(32) + b),
            mutated(APPLE_SEEDS),
            apple_structured(),
        ),
    ),
    "apple_assertion": (
        _assertion,
        st.one_of(st.binary(max_size=256), mutated(ASSERT_SEEDS), assertion_structured()),
    ),
    "play_integrity": (
        _play,
        st.one_of(st.binary(max_size=256), _token_text(), mutated(PLAY_SEEDS), play_structured()),
    ),
    "insecure_dev": (_dev, st.one_of(st.binary(max_size=128), mutated(DEV_SEEDS))),
}


FAST: dict[str, Callable[[random.Random], bytes]] = {
    "apple_attestation": fast_apple,
    "apple_assertion": fast_assertion,
    "play_integrity": fast_play,
    "insecure_dev": fast_dev,
}


def _run(name: str, examples: int, *, fast: bool = False) -> int:
    target, native = TARGETS[name]
    build = FAST[name]
    strategy = st.randoms(use_true_random=True).map(build) if fast else native
    count = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        # No shrinking or targeting: a failure is reported with its input as generated.
        phases=(Phase.explicit, Phase.generate),
    )
    @given(strategy)
    def fuzz(data: bytes) -> None:
        nonlocal count
        count += 1
        if count % 10_000 == 0 and examples >= 10_000:
            print(f"fuzz {name}: {count} inputs", flush=True)
        try:
            target(data)
        except AttestationError as exc:
            code = exc.code
        else:
            code = "attestation_accepted"
        assert code.startswith("attestation_")

    fuzz()
    return count


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parsers_raise_only_declared_errors(name: str) -> None:
    examples = 300 if name == "insecure_dev" else DEFAULT_EXAMPLES
    assert _run(name, examples) >= examples


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parsers_raise_only_declared_errors_fast_generators(name: str) -> None:
    assert _run(name, DEFAULT_EXAMPLES, fast=True) >= DEFAULT_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parsers_raise_only_declared_errors_100k(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    count = _run(name, SLOW_EXAMPLES, fast=True)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfuzz {name}: {count} inputs in {elapsed:.1f} s")
    assert count >= SLOW_EXAMPLES
