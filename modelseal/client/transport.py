"""HTTPS to the issuance server: certificate checks, optional SPKI pinning, error bodies.

Trust: the server's certificate is verified against the system trust store
(OpenSSL's default paths, which honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``), or
against a configured CA bundle instead. A self-signed server certificate is
trusted by giving the certificate itself as the CA bundle.

Pinning: optionally, the SHA-256 of the server certificate's SubjectPublicKeyInfo
must be one of a set of pins, written ``sha256/<base64>`` as in RFC 7469 (several
pins let a server rotate its key). The pin is checked in addition to the
certificate, at two points:

1. right after the TLS handshake, before a single byte of the request (and so the
   bearer token) is written: httpcore reports ``connection.start_tls.complete`` to
   the request's ``trace`` extension with the new stream, whose ``ssl_object`` gives
   the peer certificate; a mismatch closes the connection and raises
   :class:`~modelseal.client.errors.TLSPinMismatchError`;
2. again on every response, from ``response.extensions["network_stream"]``, before
   anything in the response is used. This also covers connections taken from the
   pool. It must run while the connection is open (a response hook does): once
   httpcore has closed the connection the stream no longer has an SSL object, and
   the check fails closed.

Plain ``http://`` is accepted for loopback hosts only (local development and the
demo), and never together with pins.

Every request's body is read with a size cap, and error bodies
(``{"error": {"code", "message"}}``) become
:class:`~modelseal.client.errors.ServerRefusedError` with the server's code.
Messages never carry download link tokens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from modelseal import __version__
from modelseal.client.errors import (
    InsecureTransportError,
    ProtocolError,
    ServerRefusedError,
    TLSError,
    TLSPinMismatchError,
    TransportError,
)
from modelseal.errors import UsageError

__all__ = [
    "MAX_JSON_BYTES",
    "PIN_PREFIX",
    "StreamedResponse",
    "Transport",
    "TransportSettings",
    "check_server_url",
    "format_pin",
    "parse_pin",
    "raise_for_error",
    "spki_digest",
    "spki_pin",
]

PIN_PREFIX = "sha256/"
MAX_JSON_BYTES = 1 << 20
MAX_ERROR_BODY_BYTES = 64 * 1024
USER_AGENT = f"modelseal-client/{__version__}"
_START_TLS_COMPLETE = "connection.start_tls.complete"
_LINK_IN_TEXT = re.compile(r"/v1/downloads/[^\s'\"/?#]+")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def parse_pin(text: str) -> bytes:
    """Decode a ``sha256/<base64>`` pin into its 32-byte digest.

    Raises:
        UsageError: Not ``sha256/`` followed by the canonical base64 of 32 bytes.
    """
    if isinstance(text, str) and text.startswith(PIN_PREFIX):
        encoded = text[len(PIN_PREFIX) :]
        try:
            digest = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) == 32 and base64.b64encode(digest).decode("ascii") == encoded:
            return digest
    raise UsageError(f"a pin must be 'sha256/' and the base64 of 32 bytes, got {text!r}")


def format_pin(digest: bytes) -> str:
    """``sha256/<base64>`` for a 32-byte SPKI digest."""
    return PIN_PREFIX + base64.b64encode(digest).decode("ascii")


def spki_digest(certificate_der: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of a DER certificate."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def spki_pin(certificate_der: bytes) -> str:
    """The ``sha256/<base64>`` pin of a DER certificate's public key."""
    return format_pin(spki_digest(certificate_der))


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_server_url(url: str) -> str:
    """Check and normalise a server base URL (no trailing slash).

    Raises:
        UsageError: Not an absolute http(s) URL, or it has credentials, a query or a
            fragment.
        InsecureTransportError: ``http://`` to a host that is not loopback.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise UsageError(f"server URL is not a valid URL: {url!r}") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise UsageError(f"server URL must be https://host[:port][/path], got {url!r}")
    if parsed.userinfo or parsed.query or parsed.fragment:
        raise UsageError("server URL must not carry credentials, a query or a fragment")
    if parsed.scheme == "http" and not _is_loopback(parsed.host):
        raise InsecureTransportError(
            f"plain http is accepted for loopback hosts only; use https for {parsed.host}"
        )
    return str(parsed).rstrip("/")


def _redact(text: str) -> str:
    return _LINK_IN_TEXT.sub("/v1/downloads/<link>", text)


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """How to reach and trust one server.

    Attributes:
        server: Base URL (see :func:`check_server_url`).
        ca_file: PEM CA bundle used instead of the system trust store.
        pins: ``sha256/<base64>`` SPKI pins; empty for no pinning.
        timeout_seconds: Read/write/pool timeout of each request.
        connect_timeout_seconds: Connect timeout (TCP and TLS).
    """

    server: str
    ca_file: Path | None = None
    pins: tuple[str, ...] = ()
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        if ca_file is None:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot load the CA bundle {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _PinCheck:
    """Checks the peer certificate of a TLS stream against the pins (see module docstring)."""

    def __init__(self, pins: frozenset[bytes], host: str) -> None:
        self._pins = pins
        self._host = host
        self.observed: str | None = None

    def check(self, stream: Any) -> None:
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        certificate = ssl_object.getpeercert(True) if ssl_object is not None else None
        if not certificate:
            if not self._pins:
                return  # nothing to enforce; the key is only reported when it can be read
            raise TLSPinMismatchError(
                "no TLS peer certificate to check the pins against", self._host
            )
        digest = spki_digest(certificate)
        self.observed = format_pin(digest)
        if self._pins and not any(hmac.compare_digest(digest, pin) for pin in self._pins):
            raise TLSPinMismatchError(
                f"the TLS key of {self._host} ({self.observed}) is not pinned",
                self._host,
                self.observed,
            )

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event != _START_TLS_COMPLETE:
            return
        stream = info.get("return_value")
        try:
            self.check(stream)
        except TLSPinMismatchError:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
            raise

    def on_request(self, request: httpx.Request) -> None:
        if self._pins and request.url.scheme == "https":
            request.extensions["trace"] = self.trace

    def on_response(self, response: httpx.Response) -> None:
        if response.request.url.scheme == "https":
            self.check(response.extensions.get("network_stream"))


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"response body of {declared} bytes exceeds {limit}")
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > limit:
            raise ProtocolError(f"response body exceeds {limit} bytes")
    return bytes(body)


def raise_for_error(response: httpx.Response, body: bytes) -> NoReturn:
    """Raise the error a non-2xx response carries.

    Raises:
        ServerRefusedError: With the server's ``code`` and ``message``, or
            ``http_<status>`` when the body is not the API's error shape.
    """
    code, message = f"http_{response.status_code}", f"HTTP {response.status_code}"
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        got_code, got_message = error.get("code"), error.get("message")
        if isinstance(got_code, str) and re.fullmatch(r"[a-z0-9_]{1,64}", got_code):
            code = got_code
            message = got_message if isinstance(got_message, str) else code
    raise ServerRefusedError(code, _redact(message), response.status_code)


class Transport:
    """One keep-alive HTTP client for one server, with the checks above on every request.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, settings: TransportSettings, *, token: str | None = None) -> None:
        """Prepare the client (nothing is connected yet).

        Raises:
            UsageError, InsecureTransportError: The URL or pins are unusable.
            TLSError: The CA bundle cannot be loaded.
        """
        self._settings = settings
        base = check_server_url(settings.server)
        url = httpx.URL(base)
        pins = frozenset(parse_pin(pin) for pin in settings.pins)
        if pins and url.scheme != "https":
            raise UsageError("TLS pins need an https:// server URL")
        self._host = url.host
        self._pin_check = _PinCheck(pins, url.host)
        # No content coding: byte ranges must count the package's own bytes.
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=base,
            verify=_ssl_context(settings.ca_file) if url.scheme == "https" else True,
            timeout=httpx.Timeout(
                settings.timeout_seconds, connect=settings.connect_timeout_seconds
            ),
            headers=headers,
            # No proxies, netrc or certifi from the environment: the trust decisions
            # above are the only ones.
            trust_env=False,
            follow_redirects=False,
            event_hooks={
                "request": [self._pin_check.on_request],
                "response": [self._pin_check.on_response],
            },
        )

    @property
    def server(self) -> str:
        """The normalised base URL."""
        return str(self._client.base_url).rstrip("/")

    @property
    def host(self) -> str:
        """The server's host name."""
        return self._host

    @property
    def observed_pin(self) -> str | None:
        """The ``sha256/...`` pin of the TLS key the server last presented (https only)."""
        return self._pin_check.observed

    def set_token(self, token: str) -> None:
        """Send ``Authorization: Bearer <token>`` from now on."""
        self._client.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise TransportError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.RequestError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, ssl.SSLError):
                cause = cause.__cause__ or cause.__context__
            reason = _redact(str(exc) or type(exc).__name__)
            if cause is not None:
                raise TLSError(f"{what}: TLS failed with {self._host}: {reason}") from None
            raise TransportError(f"{what}: cannot reach {self._host}: {reason}") from None

    def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Collection[int] = (200,),
    ) -> dict[str, Any] | None:
        """Send a request and return its JSON object body (None for an empty body).

        Raises:
            ServerRefusedError: A status outside ``expect``.
            ProtocolError: The body is not a JSON object.
            TransportError, TLSError, TLSPinMismatchError: The connection failed.
        """
        with (
            self._errors(f"{method} {_redact(path)}"),
            self._client.stream(method, path, json=json_body, headers=headers) as response,
        ):
            if response.status_code not in expect:
                raise_for_error(response, _read_capped(response, MAX_ERROR_BODY_BYTES))
            body = _read_capped(response, MAX_JSON_BYTES)
        if not body:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            raise ProtocolError(f"{method} {_redact(path)}: the body is not JSON") from None
        if not isinstance(document, dict):
            raise ProtocolError(f"{method} {_redact(path)}: the body is not a JSON object")
        return document

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None
    ) -> Iterator[StreamedResponse]:
        """Send a request and yield its response for the body to be read piece by piece.

        Error statuses (>= 300) are raised before the body is offered.

        Raises:
            ServerRefusedError, TransportError, TLSError, TLSPinMismatchError.
        """
        what = f"{method} {_redact(path)}"
        with self._errors(what), self._client.stream(method, path, headers=headers) as response:
            if response.status_code >= 300:
                raise_for_error(response, _read_capped(response, MAX_ERROR_BODY_BYTES))
            yield StreamedResponse(response, self._errors, what)


class StreamedResponse:
    """A successful response whose body is read in pieces; transport errors are mapped."""

    def __init__(
        self,
        response: httpx.Response,
        errors: Callable[[str], contextlib.AbstractContextManager[None]],
        what: str,
    ) -> None:
        self._response = response
        self._errors = errors
        self._what = what

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        """The response headers."""
        return self._response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives (nothing is held back when it breaks)."""
        with self._errors(self._what):
            yield from self._response.iter_bytes()
