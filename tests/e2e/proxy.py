"""A small HTTP/1.1 proxy on loopback that slows, corrupts or drops what passes through.

It understands just enough HTTP/1.1 for the client and server here: one request at
a time per connection, bodies framed by ``Content-Length`` (the server never
chunks its responses), and keep-alive. Controls, read on every piece forwarded:

* ``throttle_seconds``: sleep after each piece of a download response body;
* ``flip_download_byte``: the body offset of a download response at which one bit is
  flipped, once (then it resets to None);
* ``drop_paths_containing``: requests whose path contains it get no answer: the
  connection is closed instead.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

PIECE_BYTES = 16 * 1024


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            piece = self.sock.recv(65536)
            if not piece:
                if self.buffer:
                    raise ConnectionError("connection closed inside a message head")
                return b""
            self.buffer += piece
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def pieces(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining:
            if not self.buffer:
                self.buffer = self.sock.recv(min(PIECE_BYTES, remaining))
                if not self.buffer:
                    raise ConnectionError("connection closed inside a body")
            piece, self.buffer = self.buffer[:remaining], self.buffer[remaining:]
            remaining -= len(piece)
            yield piece


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


@dataclass
class Proxy:
    """A running proxy; ``url`` is what clients connect to."""

    url: str
    throttle_seconds: float = 0.0
    flip_download_byte: int | None = None
    drop_paths_containing: str | None = None
    requests: list[bytes] = field(default_factory=list)


@contextmanager
def http_proxy(upstream_port: int) -> Iterator[Proxy]:
    """Run a proxy to ``127.0.0.1:upstream_port`` on a free loopback port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    proxy = Proxy(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()
    connections: list[socket.socket] = []

    def relay(client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        connections.extend([client, upstream])
        from_client, from_server = _Reader(client), _Reader(upstream)
        try:
            while not stop.is_set():
                head = from_client.head()
                if not head:
                    return
                proxy.requests.append(head)
                request_line = head.split(b"\r\n", 1)[0]
                length = int(_header(head, b"content-length") or b"0")
                body = b"".join(from_client.pieces(length))
                drop = proxy.drop_paths_containing
                if drop is not None and drop.encode() in request_line:
                    return
                upstream.sendall(head + body)
                response = from_server.head()
                if not response:
                    return
                if _header(response, b"transfer-encoding") is not None:
                    raise AssertionError("the proxy does not relay chunked responses")
                status = int(response.split(b" ", 2)[1])
                length = (
                    0 if status in (204, 304) else int(_header(response, b"content-length") or b"0")
                )
                client.sendall(response)
                download = b" /v1/downloads/" in request_line
                offset = 0
                for piece in from_server.pieces(length):
                    flip = proxy.flip_download_byte
                    if download and flip is not None and offset <= flip < offset + len(piece):
                        changed = bytearray(piece)
                        changed[flip - offset] ^= 0x01
                        piece = bytes(changed)
                        proxy.flip_download_byte = None
                    client.sendall(piece)
                    offset += len(piece)
                    if download and proxy.throttle_seconds:
                        time.sleep(proxy.throttle_seconds)
        except (ConnectionError, OSError):
            return
        finally:
            client.close()
            upstream.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=relay, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        stop.set()
        listener.close()
        for sock in connections:
            with suppress(OSError):
                sock.close()
        thread.join(5)
