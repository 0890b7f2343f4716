"""Honey tokens: configuration, checks, decoy generation, and use as a stop factor."""

from __future__ import annotations

import pickle

import pytest

from modelseal.errors import UsageError
from modelseal.fraud import HoneyKind, HoneyTokens, RuleSet, Verdict, assess
from modelseal.fraud.honey import (
    generate_decoy_account_name,
    generate_decoy_device_key,
    generate_decoy_model_id,
)
from modelseal.keys import KEM
from modelseal.keys.jwk import jwk_to_key
from modelseal.keys.kem import RecipientPrivateKey, RecipientPublicKey
from tests.fraud.conftest import NOW, ev

KID = "0123456789abcdef0123456789abcdef"


def test_configured_decoys_are_recognised_and_nothing_else() -> None:
    honey = HoneyTokens.from_config(
        model_ids=["face-v9"], account_names=["svc-backup"], device_key_kids=[KID]
    )
    assert honey.is_honey_model("face-v9")
    assert not honey.is_honey_model("face-v8")
    assert honey.is_honey_account("svc-backup")
    assert not honey.is_honey_account("alice")
    assert honey.is_honey_device_kid(KID)
    assert not honey.is_honey_device_kid(KID[::-1])
    assert honey.matches(HoneyKind.MODEL_ID, "face-v9")
    assert not honey.matches(HoneyKind.ACCOUNT, "face-v9")  # kinds do not mix
    assert honey.matches(HoneyKind.DEVICE_KEY, KID)
    assert honey
    assert not HoneyTokens()


def test_decoys_never_appear_in_repr() -> None:
    honey = HoneyTokens.from_config(
        model_ids=["face-v9"], account_names=["svc-backup"], device_key_kids=[KID]
    )
    text = repr(honey)
    assert "face-v9" not in text
    assert "svc-backup" not in text
    assert KID not in text
    assert "model_ids=1" in text


@pytest.mark.parametrize(
    "config",
    [
        {"model_ids": [""]},
        {"model_ids": ["has space"]},
        {"account_names": ["-leading"]},
        {"device_key_kids": ["0123"]},
        {"device_key_kids": [KID.upper()]},
        {"model_ids": [7]},
    ],
)
def test_malformed_decoys_are_refused(config: dict[str, list[object]]) -> None:
    with pytest.raises(UsageError):
        HoneyTokens.from_config(**config)  # type: ignore[arg-type]


@pytest.mark.parametrize("kem", list(KEM))
def test_a_decoy_device_key_is_a_real_key_with_its_kid(kem: KEM) -> None:
    decoy = generate_decoy_device_key(kem)
    public = jwk_to_key(decoy.public_jwk)
    private = jwk_to_key(decoy.private_jwk)
    assert isinstance(public, RecipientPublicKey)
    assert public.kid == decoy.kid
    assert isinstance(private, RecipientPrivateKey)
    assert private.kid == decoy.kid
    assert HoneyTokens.from_config(device_key_kids=[decoy.kid]).is_honey_device_kid(decoy.kid)
    assert "d" not in decoy.public_jwk
    assert repr(decoy) == f"DecoyDeviceKey(kid={decoy.kid})"
    with pytest.raises(TypeError):
        pickle.dumps(decoy)


def test_decoys_are_fresh_each_time() -> None:
    assert generate_decoy_device_key().kid != generate_decoy_device_key().kid
    assert generate_decoy_model_id() != generate_decoy_model_id()
    name = generate_decoy_account_name("backup")
    assert name.startswith("backup-")
    assert HoneyTokens.from_config(account_names=[name]).is_honey_account(name)
    with pytest.raises(UsageError):
        generate_decoy_model_id("bad prefix")


@pytest.mark.parametrize("kind", list(HoneyKind))
def test_any_honey_token_use_is_malicious_at_once(kind: HoneyKind) -> None:
    result = assess([ev("honey_token_used", NOW - 3600, kind=kind.value)], RuleSet.default(), NOW)
    assert result.verdict is Verdict.MALICIOUS
    assert result.stop_factors[0].rule_id == "honey_token_used"
