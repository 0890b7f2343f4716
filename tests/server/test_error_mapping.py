"""Errors from services the server depends on answer 503 with Retry-After, never 500."""

from __future__ import annotations

import pytest

from modelseal.errors import ModelSealError
from modelseal.keys.pkcs11 import TokenError
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice.kms import KMSError
from tests.server.raising_app import app_raising

SECRET_DETAIL = "slot 7 label issuer-hsm-prod"


@pytest.mark.parametrize("exc", [TokenError(SECRET_DETAIL), KMSError(SECRET_DETAIL)])
def test_a_key_backend_failure_is_503_with_its_code_and_no_internals(
    exc: ModelSealError,
) -> None:
    response = app_raising(exc).get("/boom")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == exc.code
    assert response.headers["retry-after"] == "30"
    assert SECRET_DETAIL not in response.text


def test_a_configuration_error_is_a_plain_500_without_details() -> None:
    response = app_raising(ConfigurationError(SECRET_DETAIL)).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert SECRET_DETAIL not in response.text
