"""Fixtures for the abuse-control tests: servers with quotas, decoys and an admin token."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.pg import fresh_database
from tests.server.conftest import TEST_GENERATOR, Harness, log_stream, start

__all__ = ["ADMIN_TOKEN", "HONEY_KID", "QUOTA", "abuse_overrides", "log_stream", "start"]

QUOTA = 10
ADMIN_TOKEN = "msa_" + secrets.token_urlsafe(32)
# Light Argon2id parameters: the tests verify the admin token many times.
ADMIN_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(ADMIN_TOKEN)
HONEY_KID = "0f" * 16


def abuse_overrides(**abuse: Any) -> dict[str, Any]:
    """Settings overrides: a quota'd model, a decoy model, a decoy account, the admin token."""
    section: dict[str, Any] = {
        "honey_model_ids": ["m-decoy"],
        "honey_account_names": ["svc-decoy"],
        "honey_device_kids": [HONEY_KID],
        "admin_token_hash": ADMIN_HASH,
    }
    section.update(abuse)
    return {
        "abuse": section,
        "models": [
            {
                "id": "m1",
                "generator": TEST_GENERATOR,
                "options": {"size_bytes": 2000},
                "quota": {"limit": QUOTA, "period": "day", "suspicious_limit": 2},
            },
            {"id": "m2", "generator": TEST_GENERATOR, "options": {"size_bytes": 100}},
            {
                "id": "m-fail",
                "generator": "tests.abuse.helpers:failing_generator",
                "quota": {"limit": 3, "period": "hour"},
            },
        ],
    }


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A fresh server with the abuse settings above."""
    yield from start(tmp_path, log_stream, **abuse_overrides())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    with fresh_database("ms_abuse") as url:
        yield url
