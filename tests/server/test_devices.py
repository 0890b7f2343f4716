"""Device registration: keys pinned to (user, device); key reuse is refused and recorded."""

from __future__ import annotations

import pytest

from modelseal.errors import KeyFormatError
from modelseal.keys import (
    KEM,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
    key_to_jwk,
)
from modelseal.keys.jwk import b64u_encode
from modelseal.server.services.devices import parse_device_key

from .conftest import Harness


def register(server: Harness, token: str, device_id: str, jwk: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = server.client.post(
        "/v1/devices",
        json={"device_id": device_id, "app_version": "1.0", "public_key": jwk},
        headers=server.auth(token),
    )
    return response.status_code, response.json()


def same_key_events(server: Harness) -> list[dict]:  # type: ignore[type-arg]
    return [
        dict(e.details) | {"device_id": e.device_id, "user_id": e.user_id}
        for e in server.services.events.recent(type_="same_key_other_device")
    ]


def test_the_same_key_for_another_device_of_the_same_user_is_refused(server: Harness) -> None:
    token = server.user("alice")
    jwk = key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())
    assert register(server, token, "phone", jwk)[0] == 201
    status, body = register(server, token, "tablet", jwk)
    assert (status, body["error"]["code"]) == (409, "key_already_registered")
    events = same_key_events(server)
    assert len(events) == 1
    assert events[0]["device_id"] == "tablet"
    assert events[0]["other_user"] is False
    assert events[0]["kid"] == jwk["kid"]


def test_the_same_key_for_another_user_is_refused_and_recorded(server: Harness) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    jwk = key_to_jwk(RecipientPrivateKey.generate(KEM.P256).public_key())
    assert register(server, alice, "phone", jwk)[0] == 201
    status, body = register(server, bob, "phone", jwk)
    assert (status, body["error"]["code"]) == (409, "key_already_registered")
    events = same_key_events(server)
    assert [e["other_user"] for e in events] == [True]
    assert events[0]["user_id"] == server.services.accounts.find_user("bob").id
    # Bob learns nothing of Alice's device from the response.
    assert "phone" not in body["error"]["message"]


def test_a_device_id_keeps_its_key(server: Harness) -> None:
    token = server.user("alice")
    first = key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())
    second = key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())
    assert register(server, token, "phone", first)[0] == 201
    assert register(server, token, "phone", first)[0] == 200
    status, body = register(server, token, "phone", second)
    assert (status, body["error"]["code"]) == (409, "device_key_pinned")


def test_a_revoked_device_id_cannot_be_registered_again(server: Harness) -> None:
    token = server.user("alice")
    jwk = key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())
    register(server, token, "phone", jwk)
    response = server.client.delete("/v1/devices/phone", headers=server.auth(token))
    assert response.json()["status"] == "revoked"
    fresh = key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())
    status, body = register(server, token, "phone", fresh)
    assert (status, body["error"]["code"]) == (409, "device_key_pinned")
    assert register(server, token, "phone-2", fresh)[0] == 201


def test_devices_are_listed_with_their_pinned_key(server: Harness) -> None:
    token = server.user("alice")
    key = RecipientPrivateKey.generate(KEM.XWING)
    register(server, token, "phone", key_to_jwk(key.public_key()))
    devices = server.client.get("/v1/devices", headers=server.auth(token)).json()["devices"]
    assert len(devices) == 1
    assert devices[0]["kid"] == key.kid
    assert devices[0]["kem"] == "xwing"
    assert devices[0]["public_key"] == key_to_jwk(key.public_key())
    assert "priv" not in devices[0]["public_key"]


LOW_ORDER_X25519 = {
    "kty": "OKP",
    "crv": "X25519",
    "alg": "HPKE-X25519-SHA256-A256GCM",
    "use": "enc",
    "x": b64u_encode(bytes(32)),
}


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        (LOW_ORDER_X25519, "low-order point"),
        ({"kty": "OKP", "crv": "X25519", "alg": "HPKE-X25519-SHA256-A256GCM", "x": "!!"}, "b64"),
        ({"kty": "OKP", "alg": [1]}, "alg of the wrong type"),
        (
            {"kty": "EC", "crv": "P-256", "alg": "HPKE-P256-SHA256-A256GCM", "x": "AA", "y": "AA"},
            "short",
        ),
        ({}, "empty"),
        (
            key_to_jwk(IssuerPrivateKey.generate(SignatureAlgorithm.ED25519).public_key()),
            "issuer key",
        ),
        (
            key_to_jwk(RecipientPrivateKey.generate(KEM.X25519), include_private=True),
            "private key",
        ),
        ({"kty": "oct", "alg": "A256GCMKW", "kid": "k", "k": b64u_encode(bytes(32))}, "KEK"),
    ],
)
def test_unusable_device_keys_are_refused_with_key_invalid(
    server: Harness,
    jwk: dict,
    reason: str,  # type: ignore[type-arg]
) -> None:
    token = server.user("alice")
    status, body = register(server, token, "phone", jwk)
    assert (status, body["error"]["code"]) == (422, "key_invalid"), reason
    assert server.client.get("/v1/devices", headers=server.auth(token)).json()["devices"] == []


def test_parse_device_key_refuses_a_low_order_x25519_point() -> None:
    with pytest.raises(KeyFormatError, match="not usable") as info:
        parse_device_key(LOW_ORDER_X25519)
    assert info.value.code == "key_invalid"
