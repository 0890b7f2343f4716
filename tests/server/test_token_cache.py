"""The verified-token cache: Argon2id once per token, revocation still immediate."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update

from modelseal.server.db.models import User
from modelseal.server.errors import AuthenticationError
from modelseal.server.services import accounts
from modelseal.server.services.accounts import TokenAuthenticator
from modelseal.server.settings import AuthSettings

from .conftest import FAST_ARGON2, Harness


class CountingHasher(PasswordHasher):
    """Argon2id as configured, counting verifications."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.calls += 1
        return super().verify(hash, password)


def make(server: Harness, **settings: Any) -> tuple[TokenAuthenticator, CountingHasher]:
    config = AuthSettings(**{**FAST_ARGON2, **settings})
    authenticator = TokenAuthenticator(server.services.sessions, config)
    hasher = CountingHasher(
        time_cost=config.argon2_time_cost,
        memory_cost=config.argon2_memory_kib,
        parallelism=config.argon2_parallelism,
    )
    authenticator._hasher = hasher
    return authenticator, hasher


def wrong_secret(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_token_pays_argon2_once_then_matches_the_cached_digest(server: Harness) -> None:
    authenticator, calls = make(server)
    token = server.user("alice")
    principals = [authenticator.authenticate(token) for _ in range(5)]
    assert calls.calls == 1
    assert {p.user_id for p in principals} == {principals[0].user_id}


def test_a_wrong_secret_under_a_cached_token_id_is_refused(server: Harness) -> None:
    authenticator, calls = make(server)
    token = server.user("alice")
    authenticator.authenticate(token)
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(wrong_secret(token))
    assert calls.calls == 2  # the wrong secret went to Argon2id, and failed there
    authenticator.authenticate(token)
    assert calls.calls == 2


@pytest.mark.parametrize("how", ["revoke token", "disable user"])
def test_revocation_takes_effect_on_the_next_request_despite_the_cache(
    server: Harness, how: str
) -> None:
    authenticator, _ = make(server)
    token = server.user("alice")
    authenticator.authenticate(token)
    if how == "revoke token":
        server.services.accounts.revoke_token(token.split("_")[1])
    else:
        with server.services.sessions.begin() as session:
            session.execute(update(User).where(User.name == "alice").values(disabled_at=1))
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(token)


def test_cached_entries_expire(server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(accounts.time, "monotonic", lambda: now[0])
    authenticator, calls = make(server, token_cache_seconds=60)
    token = server.user("alice")
    authenticator.authenticate(token)
    now[0] += 59
    authenticator.authenticate(token)
    assert calls.calls == 1
    now[0] += 2
    authenticator.authenticate(token)
    assert calls.calls == 2


def test_the_cache_holds_at_most_its_entries(server: Harness) -> None:
    authenticator, calls = make(server, token_cache_entries=2)
    tokens = [server.user(name) for name in ("a1", "a2", "a3")]
    for token in tokens:
        authenticator.authenticate(token)
    assert len(authenticator._verified) == 2
    authenticator.authenticate(tokens[2])
    authenticator.authenticate(tokens[1])
    assert calls.calls == 3
    authenticator.authenticate(tokens[0])  # the least recently used was dropped
    assert calls.calls == 4


def test_a_zero_lifetime_disables_the_cache(server: Harness) -> None:
    authenticator, calls = make(server, token_cache_seconds=0)
    token = server.user("alice")
    for _ in range(3):
        authenticator.authenticate(token)
    assert calls.calls == 3
    assert not authenticator._verified


def test_the_cache_holds_digests_not_secrets(server: Harness) -> None:
    authenticator, _ = make(server)
    token = server.user("alice")
    authenticator.authenticate(token)
    secret = token.split("_", 2)[2]
    ((token_id, (digest, _expiry)),) = authenticator._verified.items()
    assert token_id == token.split("_")[1]
    assert len(digest) == 32
    assert secret.encode() not in digest
