"""Bad input gets a 4xx with a stable error code, never a 500."""

from __future__ import annotations

import json

import pytest

from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk

from .conftest import Harness


def error_code(response: object) -> tuple[int, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"]  # type: ignore[attr-defined]


@pytest.fixture
def alice(server: Harness) -> str:
    token = server.user("alice")
    server.register(token, "phone")
    return token


def test_an_unknown_model_is_404_unknown_model(server: Harness, alice: str) -> None:
    response = server.client.post(
        "/v1/imls", json={"model_id": "nope", "device_id": "phone"}, headers=server.auth(alice)
    )
    assert error_code(response) == (404, "unknown_model")


def test_an_unknown_device_is_404(server: Harness, alice: str) -> None:
    response = server.client.post(
        "/v1/imls", json={"model_id": "m1", "device_id": "other"}, headers=server.auth(alice)
    )
    assert error_code(response) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"device_id": "phone"}, "model_id"),
        ({"model_id": "m1"}, "device_id"),
        ({"model_id": "m1", "device_id": "phone", "extra": 1}, "extra"),
        ({"model_id": 5, "device_id": "phone"}, "model_id"),
        ({"model_id": "m1", "device_id": "bad id/../x"}, "device_id"),
        ({"model_id": "m1", "device_id": "x" * 200}, "device_id"),
        ([], "body"),
    ],
)
def test_invalid_iml_requests_name_the_field(
    server: Harness, alice: str, body: object, field: str
) -> None:
    response = server.client.post("/v1/imls", json=body, headers=server.auth(alice))
    assert error_code(response) == (422, "invalid_request")
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "p", "app_version": "1"},
        {"device_id": "p", "app_version": "1", "public_key": "not an object"},
        {"device_id": "p", "app_version": "", "public_key": {}},
        {"device_id": "", "app_version": "1", "public_key": {}},
    ],
)
def test_invalid_device_registrations_are_422(server: Harness, alice: str, body: object) -> None:
    response = server.client.post("/v1/devices", json=body, headers=server.auth(alice))
    assert error_code(response) == (422, "invalid_request")


def test_invalid_json_is_422_invalid_request(server: Harness, alice: str) -> None:
    response = server.client.post(
        "/v1/imls",
        content=b'{"model_id": "m1",',
        headers={**server.auth(alice), "Content-Type": "application/json"},
    )
    assert error_code(response) == (422, "invalid_request")


def test_a_body_that_is_not_json_is_415(server: Harness, alice: str) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = server.auth(alice)
        if content_type:
            headers["Content-Type"] = content_type
        response = server.client.post(
            "/v1/imls", content=b'{"model_id":"m1","device_id":"phone"}', headers=headers
        )
        assert error_code(response) == (415, "unsupported_media_type")


def test_an_oversized_body_is_413_before_parsing(server: Harness, alice: str) -> None:
    big = {
        "device_id": "p",
        "app_version": "1",
        "public_key": key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key()),
        "pad": "x" * (server.settings.max_body_bytes + 1),
    }
    response = server.client.post("/v1/devices", json=big, headers=server.auth(alice))
    assert error_code(response) == (413, "body_too_large")


def test_an_oversized_chunked_body_is_413(server: Harness, alice: str) -> None:
    piece = b" " * 16384

    def chunks():  # type: ignore[no-untyped-def]
        yield b"{"
        for _ in range(8):
            yield piece
        yield b"}"

    response = server.client.post(
        "/v1/imls",
        content=chunks(),
        headers={**server.auth(alice), "Content-Type": "application/json"},
    )
    assert error_code(response) == (413, "body_too_large")


def test_a_body_within_the_limit_with_charset_is_accepted(server: Harness, alice: str) -> None:
    response = server.client.post(
        "/v1/imls",
        content=json.dumps({"model_id": "m2", "device_id": "phone"}).encode(),
        headers={**server.auth(alice), "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202


def test_unknown_routes_and_methods_use_the_error_shape(server: Harness, alice: str) -> None:
    assert error_code(server.client.get("/nope")) == (404, "not_found")
    assert error_code(server.client.put("/v1/imls", headers=server.auth(alice))) == (
        405,
        "method_not_allowed",
    )


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs/" + "x" * 200, "/v1/jobs/a%20b", "/v1/issuances/..%2f/ack", "/v1/jobs/j_unknown"],
)
def test_odd_ids_are_4xx(server: Harness, alice: str, path: str) -> None:
    method = "POST" if path.endswith("/ack") else "GET"
    response = server.client.request(method, path, headers=server.auth(alice))
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] in ("invalid_request", "not_found")


def test_a_generator_failure_fails_the_job_not_the_request(tmp_path, log_stream) -> None:  # type: ignore[no-untyped-def]
    from .conftest import TEST_GENERATOR, start

    models = [{"id": "bad", "generator": TEST_GENERATOR, "options": {"size_bytes": -1}}]
    for server in start(tmp_path, log_stream, models=models):
        token = server.user("alice")
        device = server.register(token, "phone")
        response = server.client.post(
            "/v1/imls",
            json={"model_id": "bad", "device_id": device.device_id},
            headers=server.auth(token),
        )
        job = server.wait_job(token, response.json()["job_id"])
        assert (job["status"], job["error_code"]) == ("failed", "generation_failed")
        assert list(server.services.blobs.keys()) == []


def test_an_unexpected_failure_is_a_logged_500_internal_error(server: Harness, alice: str) -> None:
    from fastapi.testclient import TestClient

    def broken(principal: object) -> list[object]:
        raise RuntimeError("bug with ms_0123456789abcdef_secretsecretsecretsecretsecret00")

    server.services.devices.list_for = broken  # type: ignore[method-assign]
    client = TestClient(server.client.app, raise_server_exceptions=False)
    response = client.get("/v1/devices", headers=server.auth(alice))
    assert error_code(response) == (500, "internal_error")
    assert "bug" not in response.text
    logs = server.logs.getvalue()
    assert '"event": "unhandled_exception"' in logs
    assert "secretsecret" not in logs


def test_failed_authentication_is_counted(server: Harness) -> None:
    server.client.get("/v1/devices", headers={"Authorization": "Bearer nope"})
    text = server.client.get("/metrics").text
    assert 'access_errors_total{reason="unauthenticated"} 1.0' in text
