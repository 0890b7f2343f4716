"""Download links: expiry, reuse, tampering, binding to user and device, ranges."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from modelseal.server.errors import LinkInvalidError
from modelseal.server.services.downloads import STREAM_PIECE_BYTES
from modelseal.server.services.links import LinkPayload, LinkSigner

from .conftest import Device, Harness


def ready(
    server: Harness, name: str = "alice", device_id: str = "phone"
) -> tuple[str, Device, str]:
    token = server.user(name)
    device = server.register(token, device_id)
    return token, device, server.issue(token, device)["download_url"]


def assert_refused(response: object, status: int, code: str, package_start: bytes) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json() == {  # type: ignore[attr-defined]
        "error": {"code": code, "message": response.json()["error"]["message"]}  # type: ignore[attr-defined]
    }
    assert package_start not in response.content  # type: ignore[attr-defined]
    assert b"MSEAL/1" not in response.content  # type: ignore[attr-defined]


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def test_an_expired_link_is_refused_and_counted(server: Harness) -> None:
    token, _, url = ready(server)
    server.clock.advance(301)
    response = server.client.get(url, headers=server.auth(token, "phone"))
    assert_refused(response, 410, "link_expired", b"MSEAL/1")
    assert 'access_errors_total{reason="link_expired"} 1.0' in server.client.get("/metrics").text
    assert "access_error" in server.event_types()


def test_a_link_is_valid_until_its_expiry_second(server: Harness) -> None:
    token, _, url = ready(server)
    server.clock.advance(299)
    assert server.client.get(url, headers=server.auth(token, "phone")).status_code == 200


def test_a_reused_link_is_refused_after_a_complete_download(server: Harness) -> None:
    token, _, url = ready(server)
    assert server.client.get(url, headers=server.auth(token, "phone")).status_code == 200
    response = server.client.get(url, headers=server.auth(token, "phone"))
    assert_refused(response, 410, "link_used", b"MSEAL/1")


@pytest.mark.parametrize("part", ["payload", "mac"])
def test_a_link_with_a_flipped_character_is_refused(server: Harness, part: str) -> None:
    token, _, url = ready(server)
    prefix, link = url.rsplit("/", 1)
    payload, mac = link.split(".")
    link = flip(payload, 5) + "." + mac if part == "payload" else payload + "." + flip(mac, 5)
    response = server.client.get(f"{prefix}/{link}", headers=server.auth(token, "phone"))
    assert_refused(response, 403, "link_invalid", b"MSEAL/1")
    assert 'access_errors_total{reason="link_invalid"} 1.0' in server.client.get("/metrics").text


def test_a_link_whose_payload_is_rewritten_without_the_key_is_refused(server: Harness) -> None:
    token, _, url = ready(server)
    prefix, link = url.rsplit("/", 1)
    payload, mac = link.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=="))
    document["exp"] += 3600
    forged = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    response = server.client.get(f"{prefix}/{forged}.{mac}", headers=server.auth(token, "phone"))
    assert_refused(response, 403, "link_invalid", b"MSEAL/1")


@pytest.mark.parametrize("garbage", ["x", "a.b.c", "....", "eyJ.", "%00", "a" * 1025])
def test_malformed_links_are_refused_not_crashed_on(server: Harness, garbage: str) -> None:
    token = server.user("alice")
    server.register(token, "phone")
    response = server.client.get(f"/v1/downloads/{garbage}", headers=server.auth(token, "phone"))
    assert response.status_code in (403, 422)
    assert response.json()["error"]["code"] in ("link_invalid", "invalid_request")


def test_a_link_presented_with_another_device_header_is_refused(server: Harness) -> None:
    token, _, url = ready(server)
    server.register(token, "other-phone")
    for headers in (server.auth(token, "other-phone"), server.auth(token)):
        response = server.client.get(url, headers=headers)
        assert_refused(response, 403, "link_wrong_device", b"MSEAL/1")


def test_a_link_presented_by_another_user_is_refused(server: Harness) -> None:
    _, _, url = ready(server)
    mallory = server.user("mallory")
    server.register(mallory, "phone")
    response = server.client.get(url, headers=server.auth(mallory, "phone"))
    assert_refused(response, 403, "link_wrong_device", b"MSEAL/1")


def test_a_link_of_a_revoked_device_serves_nothing(server: Harness) -> None:
    token, _, url = ready(server)
    assert server.client.delete("/v1/devices/phone", headers=server.auth(token)).status_code == 200
    response = server.client.get(url, headers=server.auth(token, "phone"))
    assert_refused(response, 403, "device_revoked", b"MSEAL/1")
    # Revocation also deleted the device's stored packages.
    assert list(server.services.blobs.keys()) == []


def test_a_link_after_ack_finds_the_object_gone(server: Harness) -> None:
    token = server.user("alice")
    device = server.register(token, "phone")
    job = server.issue(token, device)
    server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=server.auth(token))
    response = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    assert_refused(response, 410, "object_gone", b"MSEAL/1")


def test_a_swept_object_is_gone(server: Harness) -> None:
    token, _, url = ready(server)
    server.clock.advance(3600)
    assert server.services.sweep.run_once().expired == 1
    assert list(server.services.blobs.keys()) == []
    server.clock.now -= 3600 - 10  # back within the link's lifetime
    response = server.client.get(url, headers=server.auth(token, "phone"))
    assert_refused(response, 410, "object_gone", b"MSEAL/1")


@pytest.mark.parametrize(
    "value",
    ["bytes=999999999-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=-0", "bytes=x-"],
)
def test_unsatisfiable_ranges_get_416_and_do_not_consume_the_link(
    server: Harness, value: str
) -> None:
    token, _, url = ready(server)
    headers = server.auth(token, "phone")
    response = server.client.get(url, headers={**headers, "Range": value})
    assert_refused(response, 416, "range_not_satisfiable", b"MSEAL/1")
    assert server.client.get(url, headers=headers).status_code == 200


def test_a_suffix_range_returns_the_last_bytes_and_consumes_the_link(server: Harness) -> None:
    token, _, url = ready(server)
    headers = server.auth(token, "phone")
    whole_size = server.services.issuance.recent()[0].size
    response = server.client.get(url, headers={**headers, "Range": "bytes=-10"})
    assert response.status_code == 206
    assert (
        response.headers["content-range"]
        == f"bytes {whole_size - 10}-{whole_size - 1}/{whole_size}"
    )
    assert server.client.get(url, headers=headers).status_code == 410


def test_link_signer_refuses_a_token_minted_under_another_key() -> None:
    payload = LinkPayload(lid="l", jti="j", uid="u", did="d", exp=1)
    token = LinkSigner(secrets.token_bytes(32)).mint(payload)
    assert LinkSigner(b"k" * 32).mint(payload) != token
    with pytest.raises(LinkInvalidError) as info:
        LinkSigner(secrets.token_bytes(32)).verify(token)
    assert info.value.code == "link_invalid"


def test_link_signer_round_trips_and_refuses_non_canonical_base64() -> None:
    signer = LinkSigner(secrets.token_bytes(32))
    payload = LinkPayload(lid="l", jti="j", uid="u", did="d", exp=7)
    token = signer.mint(payload)
    assert signer.verify(token) == payload
    with pytest.raises(LinkInvalidError, match="malformed") as info:
        signer.verify(token + "=")
    assert info.value.code == "link_invalid"


def test_a_416_tells_the_object_size(server: Harness) -> None:
    token, _, url = ready(server)
    size = server.services.issuance.recent()[0].size
    response = server.client.get(
        url, headers={**server.auth(token, "phone"), "Range": f"bytes={size}-"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"


def test_two_racing_downloads_of_one_link_deliver_the_final_byte_only_once(
    server: Harness,
) -> None:
    from modelseal.server.errors import LinkUsedError

    token, _, url = ready(server)
    principal = server.services.authenticator.authenticate(token)
    link = url.rsplit("/", 1)[1]
    first = server.services.downloads.open(principal, link, "phone", None)
    second = server.services.downloads.open(principal, link, "phone", None)
    delivered = b"".join(first.chunks)
    assert len(delivered) == first.total
    received = [next(second.chunks) for _ in range(second.total // STREAM_PIECE_BYTES)]
    assert sum(map(len, received)) < second.total
    # The piece with the final byte is never produced for the second response.
    with pytest.raises(LinkUsedError) as info:
        next(second.chunks)
    assert info.value.code == "link_used"
