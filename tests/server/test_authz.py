"""Authorization matrix: user B can read, download, ack, list or revoke nothing of user A's."""

from __future__ import annotations

from .conftest import Harness


def test_another_user_cannot_touch_anything_of_mine(server: Harness) -> None:
    alice = server.user("alice")
    bob = server.user("bob")
    device = server.register(alice, "alice-phone")
    server.register(bob, "bob-phone")
    job = server.issue(alice, device)
    as_bob = server.auth(bob, "bob-phone")

    response = server.client.get(f"/v1/jobs/{job['job_id']}", headers=as_bob)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")

    response = server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=as_bob)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")

    response = server.client.delete("/v1/devices/alice-phone", headers=as_bob)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")

    response = server.client.get("/v1/devices", headers=as_bob)
    assert [d["device_id"] for d in response.json()["devices"]] == ["bob-phone"]

    response = server.client.post(
        "/v1/imls", json={"model_id": "m1", "device_id": "alice-phone"}, headers=as_bob
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")

    for headers in (as_bob, server.auth(bob, "alice-phone")):
        response = server.client.get(job["download_url"], headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "link_wrong_device"
        assert b"MSEAL/1" not in response.content

    # Nothing of Alice's changed: her device is active, her package downloadable.
    mine = server.client.get("/v1/devices", headers=server.auth(alice)).json()["devices"]
    assert [(d["device_id"], d["status"]) for d in mine] == [("alice-phone", "active")]
    response = server.client.get(job["download_url"], headers=server.auth(alice, "alice-phone"))
    assert response.status_code == 200


def test_every_iml_endpoint_requires_authentication(server: Harness) -> None:
    calls = [
        ("GET", "/v1/devices"),
        ("POST", "/v1/devices"),
        ("DELETE", "/v1/devices/x"),
        ("POST", "/v1/imls"),
        ("GET", "/v1/jobs/j_1"),
        ("POST", "/v1/issuances/abc/ack"),
        ("GET", "/v1/downloads/abc.def"),
    ]
    for credentials in (None, "Bearer ms_0123456789abcdef_" + "x" * 43, "Basic YTpi", "Bearer"):
        headers = {"Authorization": credentials} if credentials else {}
        for method, path in calls:
            response = server.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, credentials)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_token_no_longer_authenticates(server: Harness) -> None:
    token = server.user("alice")
    assert server.client.get("/v1/devices", headers=server.auth(token)).status_code == 200
    server.services.accounts.revoke_token(token.split("_")[1])
    response = server.client.get("/v1/devices", headers=server.auth(token))
    assert response.status_code == 401


def test_a_token_with_a_wrong_secret_does_not_authenticate(server: Harness) -> None:
    token = server.user("alice")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert server.client.get("/v1/devices", headers=server.auth(wrong)).status_code == 401


def test_a_revoked_device_cannot_request_an_iml(server: Harness) -> None:
    token = server.user("alice")
    server.register(token, "phone")
    server.client.delete("/v1/devices/phone", headers=server.auth(token))
    response = server.client.post(
        "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=server.auth(token)
    )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "device_revoked")
