"""Test certificates (a CA, a leaf it signs, a self-signed leaf) and small TLS servers.

Certificates are made with pyca/cryptography for 127.0.0.1 and localhost.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelseal.client.transport import spki_pin


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one server identity and the pin of its key."""

    cert: Path
    key: Path
    ca: Path
    pin: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _server_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
        critical=False,
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def ca_signed(directory: Path, stem: str = "server") -> CertFiles:
    """A test CA and a server certificate it signs."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _builder(f"{stem} test CA", f"{stem} test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _server_extensions(_builder("127.0.0.1", f"{stem} test CA", key.public_key()))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, _ = _write(directory, f"{stem}-ca", ca_cert, ca_key)
    cert_path, key_path = _write(directory, stem, cert, key)
    return CertFiles(
        cert_path, key_path, ca_path, spki_pin(cert.public_bytes(serialization.Encoding.DER))
    )


def self_signed(directory: Path, stem: str = "selfsigned") -> CertFiles:
    """A self-signed server certificate; it is its own CA bundle."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _server_extensions(_builder("127.0.0.1", "127.0.0.1", key.public_key()))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = _write(directory, stem, cert, key)
    return CertFiles(
        cert_path, key_path, cert_path, spki_pin(cert.public_bytes(serialization.Encoding.DER))
    )


@dataclass
class RawTLSListener:
    """Accepts TLS connections and records every application byte a client sends."""

    port: int
    received: list[bytes] = field(default_factory=list)
    handshakes: int = 0


@contextmanager
def raw_tls_listener(certs: CertFiles, reply: bytes = b"") -> Iterator[RawTLSListener]:
    """A TLS server on a free loopback port; ``reply`` is sent after the first read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    listener = RawTLSListener(sock.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    listener.handshakes += 1
                    tls.settimeout(2)
                    data = b""
                    try:
                        while b"\r\n\r\n" not in data:
                            piece = tls.recv(65536)
                            if not piece:
                                break
                            data += piece
                    except (TimeoutError, OSError, ssl.SSLError):
                        pass
                    listener.received.append(data)
                    if data and reply:
                        tls.sendall(reply)
            except (OSError, ssl.SSLError):
                listener.received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        sock.close()
        thread.join(5)


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextmanager
def https_server(certs: CertFiles | None, handler: Handler) -> Iterator[str]:
    """An HTTP/1.1 server (HTTPS when ``certs`` is given) calling ``handler`` per request."""

    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            handler(self)

        def do_POST(self) -> None:
            handler(self)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    scheme = "http"
    if certs is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def respond(
    request: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """Send a complete response."""
    request.send_response(status)
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    if "Content-Length" not in (headers or {}):
        request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if body:
        request.wfile.write(body)
