"""The attestation status list: file and HTTP sources, TTL cache, fail-closed and fail-open.

The HTTP tests run a real HTTP server on 127.0.0.1 (no mocked transport).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelseal.attestation import AttestationConfigError, AttestationRevokedError
from modelseal.attestation.revocation import (
    RevocationUnavailableError,
    StatusList,
    StatusListCache,
    serial_key,
)

REVOKED = 0x14297399094464266078
LIST = {
    "entries": {
        "14297399094464266078": {"status": "REVOKED", "reason": "KEY_COMPROMISE"},
        "00C35D": {"status": "SUSPENDED", "reason": "SOFTWARE_FLAW"},
        "cc66e9a93713b6e643b26c15879786f7": {"status": "NEW_STATUS"},
    }
}


class _Server:
    def __init__(self) -> None:
        self.body = json.dumps(LIST).encode()
        self.status = 200
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(server.status)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/attestation/status"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def test_serial_keys_are_lowercase_hex_without_leading_zeros() -> None:
    assert serial_key(0xC35D) == "c35d"
    assert serial_key(1) == "1"
    parsed = StatusList.parse(json.dumps(LIST).encode())
    assert parsed.lookup(0xC35D) is not None
    assert parsed.lookup(REVOKED) is not None
    assert parsed.lookup(0xC35E) is None


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"entries": []}',
        b'{"entries": {"xyz": {"status": "REVOKED"}}}',
        b'{"entries": {"ab": {"reason": "x"}}}',
        b"\xff\xfe",
    ],
)
def test_malformed_lists_are_unavailable_not_empty(document: bytes, tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(document)
    with pytest.raises(RevocationUnavailableError):
        StatusListCache(path).check([1], now=0)


def test_listed_serials_are_refused_whatever_their_status(server: _Server) -> None:
    cache = StatusListCache(server.url)
    for serial, status in (
        (REVOKED, "REVOKED"),
        (0xC35D, "SUSPENDED"),
        (0xCC66E9A93713B6E643B26C15879786F7, "NEW_STATUS"),
    ):
        with pytest.raises(AttestationRevokedError, match=status) as err:
            cache.check([1, serial], now=1000)
        assert err.value.code == "attestation_revoked"
    outcome = cache.check([1, 2, 3], now=1000)
    assert outcome.checked
    assert outcome.list_age_seconds == 0
    assert server.hits == 1


def test_list_is_cached_for_its_ttl_then_refreshed(server: _Server) -> None:
    cache = StatusListCache(server.url, ttl_seconds=60)
    cache.check([1], now=1000)
    assert cache.check([1], now=1059).list_age_seconds == 59
    assert server.hits == 1
    server.body = json.dumps({"entries": {"1": {"status": "REVOKED"}}}).encode()
    with pytest.raises(AttestationRevokedError):
        cache.check([1], now=1060)
    assert server.hits == 2


def test_stale_list_serves_within_the_grace_period_then_fails_closed(server: _Server) -> None:
    cache = StatusListCache(server.url, ttl_seconds=60, max_stale_seconds=100)
    cache.check([1], now=0)
    server.status = 503
    outcome = cache.check([1], now=150)
    assert outcome.checked
    assert outcome.list_age_seconds == 150
    assert server.hits == 2
    with pytest.raises(AttestationRevokedError):
        cache.check([REVOKED], now=160)  # the stale list still refuses what it lists
    assert server.hits == 2  # no new attempt within retry_seconds of the failure
    with pytest.raises(RevocationUnavailableError):
        cache.check([1], now=161)


def test_unreachable_list_fails_closed_by_default_and_open_on_request(server: _Server) -> None:
    url = server.url
    server.close()
    with pytest.raises(RevocationUnavailableError, match="fail-closed"):
        StatusListCache(url, timeout_seconds=2).check([1], now=0)
    outcome = StatusListCache(url, timeout_seconds=2, fail_open=True).check([REVOKED], now=0)
    assert outcome.checked is False
    assert outcome.list_age_seconds is None


def test_http_error_status_is_a_failure_not_an_empty_list(server: _Server) -> None:
    server.status = 404
    with pytest.raises(RevocationUnavailableError):
        StatusListCache(server.url).check([1], now=0)


def test_file_source_is_read_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(LIST))
    cache = StatusListCache(path, ttl_seconds=10)
    with pytest.raises(AttestationRevokedError):
        cache.check([REVOKED], now=5)
    path.write_text(json.dumps({"entries": {}}))
    with pytest.raises(AttestationRevokedError):
        cache.check([REVOKED], now=14)  # still cached
    assert cache.check([REVOKED], now=15).checked
    assert cache.loads == 2


def test_bad_cache_settings_are_refused() -> None:
    with pytest.raises(AttestationConfigError):
        StatusListCache("x", ttl_seconds=-1)
    with pytest.raises(AttestationConfigError):
        StatusListCache("")
