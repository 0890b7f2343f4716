"""The whole flow in-process: register, request, poll, download, open, ack, gone."""

from __future__ import annotations

import hashlib
import json

from modelseal.keys import KEM
from modelseal.server.generators import GenerationRequest, deterministic_test_generator

from .conftest import MODEL_SIZE_BYTES, Harness


def expected_plaintext(harness: Harness, user: str, model_id: str, size: int) -> bytes:
    info = harness.services.accounts.find_user(user)
    request = GenerationRequest(info.subject, model_id, "-", "-", {"size_bytes": size})
    return bytes(deterministic_test_generator(request))


def test_device_receives_a_package_it_can_open_and_ack_deletes_it(server: Harness) -> None:
    token = server.user("alice")
    device = server.register(token, "phone-1")
    job = server.issue(token, device)
    assert job["download_url"].startswith("/v1/downloads/")
    response = server.client.get(job["download_url"], headers=server.auth(token, "phone-1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.modelseal.package"
    assert response.headers["cache-control"] == "no-store"
    opened = server.open(response.content, device)
    assert opened.plaintext == expected_plaintext(server, "alice", "m1", MODEL_SIZE_BYTES)
    claims = opened.header.claims
    assert claims is not None
    assert claims.aud == "phone-1"
    assert claims.mid == "m1"
    assert claims.jti == job["jti"]
    assert claims.sub == server.services.accounts.find_user("alice").subject
    assert claims.sub != "alice"
    assert claims.exp == claims.iat + 900
    assert claims.lexp == claims.iat + 86400
    assert opened.header.ctype == "application/vnd.modelseal.test"

    ack = server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=server.auth(token))
    assert ack.status_code == 204
    assert list(server.services.blobs.keys()) == []
    again = server.client.get(f"/v1/jobs/{job['job_id']}", headers=server.auth(token))
    assert again.json()["download_url"] is None


def test_every_kem_receives_an_openable_package(server: Harness) -> None:
    token = server.user("bob")
    for kem in KEM:
        device = server.register(token, f"dev-{kem.label}", kem)
        job = server.issue(token, device, "m2")
        body = server.client.get(
            job["download_url"], headers=server.auth(token, device.device_id)
        ).content
        opened = server.open(body, device)
        assert (
            hashlib.sha256(opened.plaintext).digest()
            == hashlib.sha256(expected_plaintext(server, "bob", "m2", 100)).digest()
        )


def test_interrupted_download_resumes_with_a_range_and_the_link_then_is_used(
    server: Harness,
) -> None:
    token = server.user("carol")
    device = server.register(token, "tablet")
    job = server.issue(token, device)
    url, headers = job["download_url"], server.auth(token, "tablet")
    head = server.client.get(url, headers={**headers, "Range": "bytes=0-999"})
    assert head.status_code == 206
    total = int(head.headers["content-range"].split("/")[1])
    assert head.headers["content-range"] == f"bytes 0-999/{total}"
    assert len(head.content) == 1000
    tail = server.client.get(url, headers={**headers, "Range": "bytes=1000-"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 1000-{total - 1}/{total}"
    opened = server.open(head.content + tail.content, device)
    assert len(opened.plaintext) == MODEL_SIZE_BYTES
    used = server.client.get(url, headers=headers)
    assert used.status_code == 410
    assert used.json()["error"]["code"] == "link_used"
    assert used.headers["content-type"] == "application/json"


def test_a_ready_job_hands_out_a_fresh_link_after_the_first_is_used(server: Harness) -> None:
    token = server.user("dave")
    device = server.register(token, "phone")
    job = server.issue(token, device)
    first = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    assert first.status_code == 200
    again = server.wait_job(token, job["job_id"])
    assert again["download_url"] != job["download_url"]
    second = server.client.get(again["download_url"], headers=server.auth(token, "phone"))
    assert second.status_code == 200
    assert second.content == first.content


def test_polling_a_ready_job_reuses_a_fresh_link_and_the_mint_count_is_bounded(
    server: Harness,
) -> None:
    token = server.user("erin")
    device = server.register(token, "phone")
    job = server.issue(token, device)
    assert server.wait_job(token, job["job_id"])["download_url"] == job["download_url"]
    # Past half its lifetime a link is replaced; the replacements are bounded.
    for _ in range(server.settings.max_links_per_issuance - 1):
        server.clock.advance(200)
        assert server.wait_job(token, job["job_id"])["download_url"]
    server.clock.advance(200)
    response = server.client.get(f"/v1/jobs/{job['job_id']}", headers=server.auth(token))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_links"


def test_metrics_count_issuances_downloads_and_jobs(server: Harness) -> None:
    token = server.user("fay")
    device = server.register(token, "phone")
    job = server.issue(token, device, "m2")
    server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    text = server.client.get("/metrics").text
    assert 'issuances_total{model="m2"} 1.0' in text
    assert "downloads_total 1.0" in text
    assert 'access_errors_total{reason="link_used"} 1.0' in text
    assert "job_latency_seconds_count 1.0" in text
    assert "jobs_in_flight 0.0" in text


def test_openapi_document_lists_the_endpoints(server: Harness) -> None:
    paths = server.client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/devices",
        "/v1/devices/{device_id}",
        "/v1/imls",
        "/v1/jobs/{job_id}",
        "/v1/issuances/{jti}/ack",
        "/v1/downloads/{token}",
        "/.well-known/modelseal/issuer-jwks.json",
    ):
        assert path in paths


def test_request_log_lines_carry_the_route_template_and_request_id(server: Harness) -> None:
    token = server.user("gus")
    device = server.register(token, "phone")
    job = server.issue(token, device, "m2")
    response = server.client.get(
        job["download_url"], headers={**server.auth(token, "phone"), "X-Request-ID": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    lines = [json.loads(line) for line in server.logs.getvalue().splitlines()]
    downloads = [line for line in lines if line.get("route") == "/v1/downloads/{token}"]
    assert downloads
    assert downloads[-1]["request_id"] == "abc-123"
    assert downloads[-1]["status"] == 200
    assert downloads[-1]["method"] == "GET"
    assert "duration_ms" in downloads[-1]
    assert job["download_url"].split("/")[-1] not in server.logs.getvalue()
