"""The manifest's optional ``seed`` member: what the issuance server sends the device."""

from __future__ import annotations

import numpy as np
import pytest

from modelseal.errors import UsageError
from modelseal.models import binding
from modelseal.models.errors import BindingMismatchError, BundleError

DEVICE_SECRET = bytes(range(32, 64))
JTI = "jti-seed-0001"


def test_a_seed_gives_the_same_transform_as_the_device_secret() -> None:
    seed = binding.derive_seed(DEVICE_SECRET, JTI)
    from_secret = binding.derive_transform(DEVICE_SECRET, JTI)
    from_seed = binding.transform_from_seed(seed, JTI)
    np.testing.assert_array_equal(from_seed.matrix, from_secret.matrix)
    assert from_seed.check == from_secret.check
    obj = binding.binding_manifest(from_seed, seed=seed)
    assert set(obj) == {"type", "input", "dim", "jti", "check", "seed"}
    rebuilt = binding.transform_from_manifest(obj)  # no device secret needed
    np.testing.assert_array_equal(rebuilt.matrix, from_secret.matrix)
    # A device secret given alongside is ignored: the seed decides.
    ignored = binding.transform_from_manifest(obj, bytes(32))
    np.testing.assert_array_equal(ignored.matrix, from_secret.matrix)


def test_the_manifest_refuses_a_seed_of_another_transform() -> None:
    transform = binding.derive_transform(DEVICE_SECRET, JTI)
    with pytest.raises(UsageError, match="seed"):
        binding.binding_manifest(transform, seed=binding.derive_seed(DEVICE_SECRET, "other"))
    with pytest.raises(UsageError, match="seed"):
        binding.binding_manifest(transform, seed=b"short")


def test_a_seed_that_does_not_give_the_check_is_a_mismatch() -> None:
    seed = binding.derive_seed(DEVICE_SECRET, JTI)
    obj = dict(binding.binding_manifest(binding.transform_from_seed(seed, JTI), seed=seed))
    obj["seed"] = binding.binding_manifest(
        binding.transform_from_seed(bytes(32), JTI), seed=bytes(32)
    )["seed"]
    with pytest.raises(BindingMismatchError) as caught:
        binding.transform_from_manifest(obj)
    assert caught.value.code == "binding_mismatch"


@pytest.mark.parametrize(
    "seed",
    [
        "AAAA",  # 3 bytes
        "A" * 43 + "=",  # padded
        "A" * 42 + "B",  # non-canonical final character
        "A" * 42 + "+",  # not the url alphabet
        7,
    ],
)
def test_a_malformed_seed_is_a_bundle_error(seed: object) -> None:
    obj: dict[str, object] = dict(
        binding.binding_manifest(binding.derive_transform(DEVICE_SECRET, JTI))
    )
    obj["seed"] = seed
    with pytest.raises(BundleError, match="seed") as caught:
        binding.transform_from_manifest(obj)
    assert caught.value.code == "bundle_invalid"


def test_without_a_seed_the_device_secret_is_required() -> None:
    obj = binding.binding_manifest(binding.derive_transform(DEVICE_SECRET, JTI))
    with pytest.raises(UsageError, match="no seed"):
        binding.transform_from_manifest(obj)


def test_binding_mismatch_error_is_importable_from_both_modules() -> None:
    assert binding.BindingMismatchError is BindingMismatchError
