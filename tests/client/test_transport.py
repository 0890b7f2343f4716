"""The client transport: certificate checks, SPKI pinning before any byte is sent, error bodies."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from modelseal.client.errors import (
    InsecureTransportError,
    ProtocolError,
    ServerRefusedError,
    TLSError,
    TLSPinMismatchError,
    TransportError,
)
from modelseal.client.transport import (
    Transport,
    TransportSettings,
    _PinCheck,
    check_server_url,
    format_pin,
    parse_pin,
    spki_pin,
)
from modelseal.errors import UsageError

from .tlsutil import CertFiles, ca_signed, https_server, raw_tls_listener, respond, self_signed

OTHER_PIN = format_pin(hashlib.sha256(b"some other key").digest())
OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return ca_signed(tmp_path_factory.mktemp("certs"))


def json_handler(request: http.server.BaseHTTPRequestHandler) -> None:
    body = json.dumps({"path": request.path, "auth": request.headers.get("Authorization")})
    respond(request, 200, body.encode(), {"Content-Type": "application/json"})


def transport(url: str, certs: CertFiles | None, *pins: str, token: str | None = None) -> Transport:
    settings = TransportSettings(
        server=url, ca_file=None if certs is None else certs.ca, pins=pins, timeout_seconds=5
    )
    return Transport(settings, token=token)


# --- pins and URLs -----------------------------------------------------------------------------


def test_pins_are_sha256_and_canonical_base64_of_32_bytes() -> None:
    digest = hashlib.sha256(b"key").digest()
    pin = format_pin(digest)
    assert pin == "sha256/" + base64.b64encode(digest).decode()
    assert parse_pin(pin) == digest
    for bad in (
        "",
        "sha256/",
        "sha1/" + pin[7:],
        pin[:-2],
        pin + "=",
        pin.replace("/", "_", 1),
        "sha256/" + base64.b64encode(digest[:31]).decode(),
        pin[7:],
    ):
        with pytest.raises(UsageError, match="pin must be") as caught:
            parse_pin(bad)
        assert caught.value.code == "usage_error"


def test_plain_http_is_accepted_only_for_loopback_hosts() -> None:
    assert check_server_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_server_url("http://localhost:8000") == "http://localhost:8000"
    assert check_server_url("http://[::1]:8000") == "http://[::1]:8000"
    assert check_server_url("https://models.example/api/") == "https://models.example/api"
    for url in ("http://models.example", "http://10.0.0.1:8000", "http://127.0.0.1.example"):
        with pytest.raises(InsecureTransportError, match="loopback") as caught:
            check_server_url(url)
        assert caught.value.code == "insecure_transport"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host",
        "models.example",
        "https://user:pw@host",
        "https://host/?q=1",
        "https://host/#f",
        "https://",
    ],
)
def test_server_urls_with_credentials_queries_or_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_server_url(url)
    assert caught.value.code == "usage_error"


def test_pins_need_an_https_server() -> None:
    with pytest.raises(UsageError, match="https"):
        transport("http://127.0.0.1:9", None, OTHER_PIN)


# --- certificate checks and pinning -----------------------------------------------------------


def test_a_pinned_server_is_reached_and_its_key_pin_is_observed(certs: CertFiles) -> None:
    with (
        https_server(certs, json_handler) as url,
        transport(url, certs, OTHER_PIN, certs.pin, token="ms_secret") as t,
    ):
        assert t.request_json("GET", "/v1/ping") == {"path": "/v1/ping", "auth": "Bearer ms_secret"}
        assert t.observed_pin == certs.pin


def test_a_pin_mismatch_refuses_before_any_request_byte_reaches_the_server(
    certs: CertFiles,
) -> None:
    with raw_tls_listener(certs, reply=OK_REPLY) as listener:
        url = f"https://127.0.0.1:{listener.port}"
        with (
            transport(url, certs, OTHER_PIN, token="ms_secret_token") as t,
            pytest.raises(TLSPinMismatchError, match="is not pinned") as caught,
        ):
            t.request_json("GET", "/v1/jobs/j_1")
        assert caught.value.code == "tls_pin_mismatch"
        assert caught.value.observed_pin == certs.pin
        assert caught.value.host == "127.0.0.1"
        # Control: with the right pin the same listener sees the request and its token.
        with transport(url, certs, certs.pin, token="ms_secret_token") as t:
            assert t.request_json("GET", "/v1/jobs/j_1") == {}
    assert listener.handshakes == 2
    refused, accepted = listener.received
    assert refused == b""
    assert b"GET /v1/jobs/j_1 HTTP/1.1" in accepted
    assert b"Authorization: Bearer ms_secret_token" in accepted


def test_the_peer_certificate_is_readable_from_the_response_stream_while_it_is_open(
    certs: CertFiles,
) -> None:
    # What the response-side pin check relies on, in the installed httpx/httpcore.
    context = ssl.create_default_context(cafile=str(certs.ca))
    with https_server(certs, json_handler) as url, httpx.Client(verify=context) as client:
        with client.stream("GET", url + "/x") as response:
            stream = response.extensions["network_stream"]
            ssl_object = stream.get_extra_info("ssl_object")
            assert ssl_object is not None
            assert spki_pin(ssl_object.getpeercert(True)) == certs.pin
            response.read()
        client.close()
        assert stream.get_extra_info("ssl_object") is None


def test_a_stream_without_a_tls_session_fails_the_pin_check_closed() -> None:
    check = _PinCheck(frozenset({parse_pin(OTHER_PIN)}), "host")
    with pytest.raises(TLSPinMismatchError, match="no TLS peer certificate") as caught:
        check.check(None)
    assert caught.value.code == "tls_pin_mismatch"
    assert caught.value.observed_pin is None
    unpinned = _PinCheck(frozenset(), "host")
    unpinned.check(None)  # without pins there is nothing to enforce
    assert unpinned.observed is None


def test_any_of_several_pins_is_accepted_for_key_rotation(certs: CertFiles) -> None:
    with https_server(certs, json_handler) as url:
        for pins in ((certs.pin,), (OTHER_PIN, certs.pin), (certs.pin, OTHER_PIN)):
            with transport(url, certs, *pins) as t:
                assert t.request_json("GET", "/")


def test_a_certificate_from_an_untrusted_ca_is_a_tls_error(
    certs: CertFiles, tmp_path: Path
) -> None:
    other = ca_signed(tmp_path / "other", "other")
    with https_server(certs, json_handler) as url:
        for ca in (None, other):  # the system store, and another CA
            with transport(url, ca) as t, pytest.raises(TLSError, match="TLS failed") as caught:
                t.request_json("GET", "/")
            assert caught.value.code == "tls_error"


def test_a_self_signed_server_is_trusted_through_its_own_certificate_and_pinned(
    tmp_path: Path,
) -> None:
    own = self_signed(tmp_path / "self")
    with https_server(own, json_handler) as url, transport(url, own, own.pin) as t:
        assert t.request_json("GET", "/a")["path"] == "/a"  # type: ignore[index]


def test_a_missing_ca_bundle_is_a_tls_error(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="cannot load the CA bundle") as caught:
        Transport(TransportSettings("https://127.0.0.1:9", ca_file=tmp_path / "absent.pem"))
    assert caught.value.code == "tls_error"


def test_an_unreachable_server_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        transport(f"http://127.0.0.1:{port}", None) as t,
        pytest.raises(TransportError, match=r"cannot reach 127\.0\.0\.1") as caught,
    ):
        t.request_json("GET", "/")
    assert type(caught.value) is TransportError
    assert caught.value.code == "network_error"


# --- responses ---------------------------------------------------------------------------------


def error_handler(request: http.server.BaseHTTPRequestHandler) -> None:
    if request.path == "/api-error":
        body = {"error": {"code": "device_revoked", "message": "the device is revoked"}}
        respond(request, 403, json.dumps(body).encode(), {"Content-Type": "application/json"})
    elif request.path == "/leaky-error":
        message = "bad link /v1/downloads/eyJsaWQiOiJ4In0.c2VjcmV0 here"
        body = {"error": {"code": "link_invalid", "message": message}}
        respond(request, 403, json.dumps(body).encode())
    elif request.path == "/html-error":
        respond(request, 502, b"<html>bad gateway</html>")
    elif request.path == "/array":
        respond(request, 200, b"[1, 2]")
    elif request.path == "/huge":
        respond(request, 200, b" " * (2 << 20))
    else:
        respond(request, 200, b"not json")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/api-error", 403, "device_revoked"), ("/html-error", 502, "http_502")],
)
def test_error_statuses_raise_with_the_servers_code(path: str, status: int, code: str) -> None:
    with (
        https_server(None, error_handler) as url,
        transport(url, None) as t,
        pytest.raises(ServerRefusedError) as caught,
    ):
        t.request_json("GET", path)
    assert caught.value.code == code
    assert caught.value.status == status


def test_link_tokens_never_appear_in_error_messages() -> None:
    with (
        https_server(None, error_handler) as url,
        transport(url, None) as t,
        pytest.raises(ServerRefusedError) as caught,
    ):
        t.request_json("GET", "/leaky-error")
    assert caught.value.code == "link_invalid"
    assert "eyJ" not in caught.value.message
    assert "/v1/downloads/<link>" in caught.value.message


@pytest.mark.parametrize(
    ("path", "match"),
    [("/array", "not a JSON object"), ("/text", "not JSON"), ("/huge", "exceeds")],
)
def test_bodies_that_are_not_bounded_json_objects_are_protocol_errors(
    path: str, match: str
) -> None:
    with (
        https_server(None, error_handler) as url,
        transport(url, None) as t,
        pytest.raises(ProtocolError, match=match) as caught,
    ):
        t.request_json("GET", path)
    assert caught.value.code == "server_protocol_error"
