"""Resumable downloads against servers that cut, ignore or misstate ranges."""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelseal.client.datadir import DataDir
from modelseal.client.download import Downloader, JobView, PollPolicy
from modelseal.client.errors import DownloadTooLargeError, ProtocolError, ServerRefusedError
from modelseal.client.store import ModelStore, PendingDownload
from modelseal.client.transport import Transport, TransportSettings

from .conftest import new_client
from .tlsutil import https_server, respond

PACKAGE = bytes(range(256)) * 4  # 1024 bytes
LINK = "/v1/downloads/first.link"
FRESH_LINK = "/v1/downloads/second.link"
POLL = PollPolicy(initial_seconds=0.001, max_seconds=0.002, timeout_seconds=5)


@dataclass
class FakeServer:
    """Serves PACKAGE at the links, misbehaving as each test asks."""

    behave: Callable[[http.server.BaseHTTPRequestHandler, int, str | None], bool]
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, request: http.server.BaseHTTPRequestHandler) -> None:
        range_header = request.headers.get("Range")
        self.seen.append((request.path, range_header))
        if request.path.startswith("/v1/jobs/"):
            body = {"job_id": "j_1", "status": "ready", "jti": "abc", "download_url": FRESH_LINK}
            respond(request, 200, json.dumps(body).encode())
            return
        if self.behave(request, len(self.seen), range_header):
            return
        first = int(range_header[6:-1]) if range_header else 0
        if first:
            headers = {"Content-Range": f"bytes {first}-{len(PACKAGE) - 1}/{len(PACKAGE)}"}
            respond(request, 206, PACKAGE[first:], headers)
        else:
            respond(request, 200, PACKAGE)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    root = tmp_path / "device"
    new_client(root)
    return ModelStore(DataDir(root))


@pytest.fixture
def serve(store: ModelStore) -> Iterator[Callable[[FakeServer], Downloader]]:
    servers = []

    def start(fake: FakeServer) -> Downloader:
        context = https_server(None, fake)
        url = context.__enter__()
        servers.append(context)
        transport = Transport(TransportSettings(url, timeout_seconds=5))
        return Downloader(
            transport, store, "d1", poll=POLL, max_package_bytes=4096, sleep=lambda _s: None
        )

    yield start
    for context in servers:
        context.__exit__(None, None, None)


def job() -> JobView:
    return JobView("j_1", "ready", "abc", LINK, None)


def state() -> PendingDownload:
    return PendingDownload("m1", "j_1", 1_800_000_000, "abc")


def normal(request: http.server.BaseHTTPRequestHandler, n: int, range_header: str | None) -> bool:
    return False


def test_a_whole_package_is_downloaded_and_reported(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    fake = FakeServer(normal)
    progress: list[tuple[int, int]] = []
    done = serve(fake).download(state(), job(), lambda d, t: progress.append((d, t)))
    assert done.total_bytes == len(PACKAGE)
    assert store.partial_path("m1").read_bytes() == PACKAGE
    assert progress[-1] == (len(PACKAGE), len(PACKAGE))
    assert store.pending("m1") == done


def test_an_interrupted_body_is_resumed_with_a_range_request(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    def cut_first(request: http.server.BaseHTTPRequestHandler, n: int, _r: str | None) -> bool:
        if n == 1:
            request.send_response(200)
            request.send_header("Content-Length", str(len(PACKAGE)))
            request.end_headers()
            request.wfile.write(PACKAGE[:300])
            request.close_connection = True
            return True
        return False

    fake = FakeServer(cut_first)
    serve(fake).download(state(), job(), None)
    assert store.partial_path("m1").read_bytes() == PACKAGE
    assert fake.seen == [(LINK, None), (LINK, "bytes=300-")]


def test_a_download_continues_from_the_bytes_already_on_disk(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    store.partial_path("m1").write_bytes(PACKAGE[:700])
    fake = FakeServer(normal)
    serve(fake).download(state(), job(), None)
    assert store.partial_path("m1").read_bytes() == PACKAGE
    assert fake.seen == [(LINK, "bytes=700-")]


def test_a_server_that_ignores_the_range_restarts_the_file(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    store.partial_path("m1").write_bytes(b"x" * 100)

    def ignore_range(request: http.server.BaseHTTPRequestHandler, _n: int, _r: str | None) -> bool:
        respond(request, 200, PACKAGE)
        return True

    serve(FakeServer(ignore_range)).download(state(), job(), None)
    assert store.partial_path("m1").read_bytes() == PACKAGE


def test_a_range_answer_that_starts_elsewhere_is_refused(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    store.partial_path("m1").write_bytes(PACKAGE[:100])

    def misplaced(request: http.server.BaseHTTPRequestHandler, _n: int, _r: str | None) -> bool:
        respond(request, 206, PACKAGE, {"Content-Range": f"bytes 0-1023/{len(PACKAGE)}"})
        return True

    with pytest.raises(ProtocolError, match="asked for bytes 100-") as caught:
        serve(FakeServer(misplaced)).download(state(), job(), None)
    assert caught.value.code == "server_protocol_error"


def test_a_package_over_the_size_limit_is_refused_before_anything_is_written(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    def huge(request: http.server.BaseHTTPRequestHandler, _n: int, _r: str | None) -> bool:
        respond(request, 200, b"y" * 5000)
        return True

    with pytest.raises(DownloadTooLargeError, match="at most 4096") as caught:
        serve(FakeServer(huge)).download(state(), job(), None)
    assert caught.value.code == "download_too_large"
    assert store.partial_size("m1") == 0


def test_an_expired_link_is_replaced_by_asking_the_job_again(
    serve: Callable[[FakeServer], Downloader], store: ModelStore
) -> None:
    def expire_first(request: http.server.BaseHTTPRequestHandler, n: int, _r: str | None) -> bool:
        if request.path == LINK:
            body = {"error": {"code": "link_expired", "message": "the link has expired"}}
            respond(request, 410, json.dumps(body).encode())
            return True
        return False

    fake = FakeServer(expire_first)
    serve(fake).download(state(), job(), None)
    assert store.partial_path("m1").read_bytes() == PACKAGE
    assert [path for path, _ in fake.seen] == [LINK, "/v1/jobs/j_1", FRESH_LINK]


def test_a_download_refusal_for_good_is_raised_with_the_server_code(
    serve: Callable[[FakeServer], Downloader],
) -> None:
    def revoked(request: http.server.BaseHTTPRequestHandler, _n: int, _r: str | None) -> bool:
        body = {"error": {"code": "device_revoked", "message": "the device is revoked"}}
        respond(request, 403, json.dumps(body).encode())
        return True

    with pytest.raises(ServerRefusedError) as caught:
        serve(FakeServer(revoked)).download(state(), job(), None)
    assert caught.value.code == "device_revoked"
