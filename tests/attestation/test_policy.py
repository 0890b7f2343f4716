"""Model attestation policies: which recorded attestation meets which requirement."""

from __future__ import annotations

import pytest

from modelseal.server.services.attestation import satisfies
from modelseal.server.settings import AttestationPolicy


@pytest.mark.parametrize(
    ("required", "platform", "level", "expected"),
    [
        ([], None, None, True),
        (["android-key:tee"], "android-key", "strongbox", True),
        (["android-key:tee"], "android-key", "tee", True),
        (["android-key:tee"], "android-key", "software", False),
        (["android-key:strongbox"], "android-key", "tee", False),
        (["play-integrity:device"], "play-integrity", "strong", True),
        (["play-integrity:device"], "play-integrity", "basic", False),
        (["apple-appattest:production"], "apple-appattest", "development", False),
        (["apple-appattest"], "apple-appattest", "development", True),
        (["apple-appattest:production", "android-key:tee"], "android-key", "tee", True),
        (["android-key:tee"], "apple-appattest", "production", False),
        (["insecure-dev"], "insecure-dev", "insecure-dev", True),
        (["insecure-dev"], None, None, False),
        (["android-key:bogus"], "android-key", "strongbox", False),
        (["other:gold"], "other", "gold", True),
        (["other:gold"], "other", "silver", False),
    ],
)
def test_requirements_are_met_by_that_level_or_a_stronger_one(
    required: list[str], platform: str | None, level: str | None, expected: bool
) -> None:
    assert satisfies(AttestationPolicy(required=required), platform, level) is expected


@pytest.mark.parametrize("entry", ["", "Apple", "apple:prod:x", "a b", "x" * 40])
def test_malformed_requirements_are_refused(entry: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        AttestationPolicy(required=[entry])
