"""API rate limits: per user, device and address, with one event per flood, across processes."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from modelseal.server.container import build_services
from modelseal.server.services.ratelimit import RateLimits
from modelseal.server.settings import AbuseSettings, load_settings
from tests.server.conftest import FAST_ARGON2, TEST_GENERATOR, Harness
from tests.server.test_uvicorn import start_server

from .conftest import abuse_overrides, start

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def limited(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    overrides = abuse_overrides(
        user_rate_limit="5/minute", device_rate_limit="3/minute", auth_failure_limit="3/minute"
    )
    yield from start(tmp_path, log_stream, **overrides)


def test_the_user_limit_answers_429_with_retry_after_and_one_event(limited: Harness) -> None:
    token = limited.user("alice")
    codes = [
        limited.client.get("/v1/devices", headers=limited.auth(token)).status_code
        for _ in range(12)
    ]
    assert codes == [200] * 5 + [429] * 7
    response = limited.client.get("/v1/devices", headers=limited.auth(token))
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Eight refusals, one stored event: floods do not write a row per request.
    assert limited.event_types().count("rate_limited") == 1
    other = limited.user("bob")
    assert limited.client.get("/v1/devices", headers=limited.auth(other)).status_code == 200


def test_the_device_limit_counts_each_users_device_apart(limited: Harness) -> None:
    alice, bob = limited.user("alice"), limited.user("bob")
    codes = [
        limited.client.get("/v1/devices", headers=limited.auth(alice, "phone")).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    # Alice's other device, and Bob's device of the same name, have buckets of their own.
    assert limited.client.get("/v1/devices", headers=limited.auth(alice, "tab")).status_code == 200
    assert limited.client.get("/v1/devices", headers=limited.auth(bob, "phone")).status_code == 200


def test_failed_authentications_lock_the_address_out_before_any_check(limited: Harness) -> None:
    token = limited.user("alice")
    wrong = "ms_" + secrets.token_hex(8) + "_" + "a" * 43
    codes = [
        limited.client.get("/v1/devices", headers=limited.auth(wrong)).status_code for _ in range(3)
    ]
    assert codes == [401] * 3
    # Even the right token is refused now: stuffing costs the address, not Argon2 time.
    response = limited.client.get("/v1/devices", headers=limited.auth(token))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"


def test_a_lockout_spares_a_token_verified_recently_and_nothing_else(limited: Harness) -> None:
    # An honest client behind the same NAT as a credential stuffer.
    token = limited.user("alice")
    assert limited.client.get("/v1/devices", headers=limited.auth(token)).status_code == 200
    other = limited.user("bob")  # never verified by this process
    wrong = "ms_" + secrets.token_hex(8) + "_" + "a" * 43
    for _ in range(3):
        limited.client.get("/v1/devices", headers=limited.auth(wrong))
    assert limited.client.get("/v1/devices", headers=limited.auth(token)).status_code == 200
    for refused in (other, wrong, token[:-1] + ("A" if token[-1] != "A" else "B")):
        response = limited.client.get("/v1/devices", headers=limited.auth(refused))
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
    # A token revoked since it was verified is refused too.
    limited.services.accounts.revoke_token(token.split("_")[1])
    assert limited.client.get("/v1/devices", headers=limited.auth(token)).status_code == 429


def test_an_ipv6_client_cannot_escape_the_address_limits_by_rotating_within_its_64() -> None:
    limits = RateLimits(
        AbuseSettings(user_rate_limit=None, ip_rate_limit="2/minute", auth_failure_limit="2/minute")
    )

    def hit(ip: str) -> str | None:
        refusal = limits.hit(user_id=1, device_id=None, ip=ip, suspicious=False)
        return None if refusal is None else refusal.scope

    assert [hit(f"2001:db8:1:2::{i:x}") for i in range(1, 4)] == [None, None, "ip"]
    assert hit("2001:db8:1:3::1") is None  # another /64: another subscriber
    assert [hit(ip) for ip in ("::ffff:192.0.2.1", "192.0.2.1", "::ffff:192.0.2.1")] == [
        None,
        None,
        "ip",
    ]
    for i in range(2):
        limits.auth_failed(f"2001:db8:9:9:{i}::1")
    assert limits.auth_refused("2001:db8:9:9:ffff::1") is not None
    assert limits.auth_refused("2001:db8:9:a::1") is None


def test_a_failing_shared_storage_lets_requests_through() -> None:
    limits = RateLimits(
        AbuseSettings(rate_limit_storage="redis://127.0.0.1:1", user_rate_limit="1/minute")
    )
    for _ in range(3):
        assert limits.hit(user_id=1, device_id=None, ip=None, suspicious=False) is None


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = "ms-test-" + secrets.token_hex(6)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def test_the_rate_limits_hold_across_two_server_processes_sharing_redis(
    tmp_path: Path, redis_prefix: str
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[auth]\n" + "".join(f"{k} = {v}\n" for k, v in FAST_ARGON2.items()) + "[abuse]\n"
        f'rate_limit_storage = "{REDIS_URL}"\n'
        f'rate_limit_key_prefix = "{redis_prefix}"\n'
        'user_rate_limit = "6/minute"\n'
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
    services = build_services(load_settings(config))
    _, token = services.accounts.create_user("alice")
    services.close()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        bases = []
        for name in ("a", "b"):
            log_path = tmp_path / f"server-{name}.log"
            with log_path.open("w") as log_file:
                process, base = start_server(config, log_file, log_path, env)
            processes.append(process)
            bases.append(base)
        auth = {"Authorization": f"Bearer {token}"}
        codes = []
        for i in range(14):
            response = httpx.get(f"{bases[i % 2]}/v1/devices", headers=auth, timeout=10)
            codes.append(response.status_code)
        # One shared window: 6 requests in all, whichever process served them.
        assert codes == [200] * 6 + [429] * 8, codes
        keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{redis_prefix}*"))
        assert keys, "the limits were not kept in Redis"
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    services = build_services(load_settings(config))
    try:
        types = [e.type for e in services.events.recent(limit=100)]
    finally:
        services.close()
    # Eight refusals on two processes: the throttle is shared too, so one event.
    assert types.count("rate_limited") == 1
