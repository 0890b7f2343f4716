"""Errors of the device client, each with a stable ``code``.

They extend the one hierarchy of :mod:`modelseal.errors`. Errors the server sends
back (``{"error": {"code", "message"}}``) surface as :class:`ServerRefusedError`
carrying the server's own code (``device_revoked``, ``link_expired``, ...), so an
app can branch on exactly what the server said.

The tree::

    ModelSealError
    ├── ClientError                       client_error
    │   ├── ClientStateError              client_state_invalid
    │   │   ├── NotInitializedError       client_not_initialized
    │   │   ├── AlreadyInitializedError   client_exists
    │   │   ├── NotEnrolledError          not_enrolled
    │   │   └── AlreadyEnrolledError      already_enrolled
    │   ├── ClientBusyError               client_busy
    │   ├── ModelNotStoredError           model_not_found
    │   ├── ModelUnsupportedError         model_unsupported
    │   ├── TransportError                network_error
    │   │   ├── InsecureTransportError    insecure_transport
    │   │   ├── TLSError                  tls_error
    │   │   └── TLSPinMismatchError       tls_pin_mismatch
    │   ├── ServerRefusedError            <the server's code>
    │   ├── ProtocolError                 server_protocol_error
    │   ├── DownloadTooLargeError         download_too_large
    │   ├── JobFailedError                job_failed
    │   └── JobTimeoutError               job_timeout
    ├── ClaimsError
    │   └── PackageMismatchError          package_mismatch
    ├── VerificationError
    │   └── IssuerKeyRevokedError         issuer_key_revoked
    └── UsageError
        └── InputError                    input_invalid
"""

from __future__ import annotations

from modelseal.errors import ClaimsError, ModelSealError, UsageError, VerificationError

__all__ = [
    "AlreadyEnrolledError",
    "AlreadyInitializedError",
    "ClientBusyError",
    "ClientError",
    "ClientStateError",
    "DownloadTooLargeError",
    "InputError",
    "InsecureTransportError",
    "IssuerKeyRevokedError",
    "JobFailedError",
    "JobTimeoutError",
    "ModelNotStoredError",
    "ModelUnsupportedError",
    "NotEnrolledError",
    "NotInitializedError",
    "PackageMismatchError",
    "ProtocolError",
    "ServerRefusedError",
    "TLSError",
    "TLSPinMismatchError",
    "TransportError",
]

MAX_SERVER_MESSAGE_CHARS = 300


class ClientError(ModelSealError):
    """Base of the errors the device client raises on purpose."""

    code = "client_error"


class ClientStateError(ClientError):
    """A file in the client's data directory is malformed or unsafe."""

    code = "client_state_invalid"


class NotInitializedError(ClientStateError):
    """The data directory has no client in it yet (``modelseal device init``)."""

    code = "client_not_initialized"


class AlreadyInitializedError(ClientStateError):
    """The data directory already holds a client."""

    code = "client_exists"


class NotEnrolledError(ClientStateError):
    """The device has not been enrolled with a server yet."""

    code = "not_enrolled"


class AlreadyEnrolledError(ClientStateError):
    """The device is already enrolled; enrolment is done once per data directory."""

    code = "already_enrolled"


class ClientBusyError(ClientError):
    """Another process is changing this data directory right now."""

    code = "client_busy"


class ModelNotStoredError(ClientError):
    """No model with that id is stored on this device."""

    code = "model_not_found"


class ModelUnsupportedError(ClientError):
    """The stored model's content type cannot be loaded into ONNX Runtime."""

    code = "model_unsupported"


class TransportError(ClientError):
    """The server could not be reached, or the connection broke."""

    code = "network_error"


class InsecureTransportError(TransportError):
    """Plain HTTP to a host other than the loopback interface is refused."""

    code = "insecure_transport"


class TLSError(TransportError):
    """The TLS handshake failed: certificate not trusted, wrong host name, old protocol."""

    code = "tls_error"


class TLSPinMismatchError(TransportError):
    """The server's certificate key is not one of the pinned keys.

    Attributes:
        host: The host the client connected to.
        observed_pin: The ``sha256/...`` pin of the key the server presented, or
            None when no certificate could be read.
    """

    code = "tls_pin_mismatch"

    def __init__(self, message: str, host: str = "", observed_pin: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.observed_pin = observed_pin

    def __reduce__(self) -> tuple[type[TLSPinMismatchError], tuple[str, str, str | None]]:  # type: ignore[override]
        return (type(self), (self.message, self.host, self.observed_pin))


class ServerRefusedError(ClientError):
    """The server answered with an error body; ``code`` is the server's code.

    Attributes:
        status: The HTTP status.
    """

    code = "server_refused"

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message[:MAX_SERVER_MESSAGE_CHARS])
        self.code = code
        self.status = status

    def __reduce__(self) -> tuple[type[ServerRefusedError], tuple[str, str, int]]:  # type: ignore[override]
        return (type(self), (self.code, self.message, self.status))


class ProtocolError(ClientError):
    """The server's answer does not follow the API (missing field, bad range, ...)."""

    code = "server_protocol_error"


class DownloadTooLargeError(ClientError):
    """The package is larger than the client accepts (``max_package_bytes``)."""

    code = "download_too_large"


class JobFailedError(ClientError):
    """The server could not generate the model.

    Attributes:
        server_code: The job's ``error_code`` as the server reported it.
    """

    code = "job_failed"

    def __init__(self, message: str, server_code: str | None = None) -> None:
        super().__init__(message)
        self.server_code = server_code

    def __reduce__(self) -> tuple[type[JobFailedError], tuple[str, str | None]]:  # type: ignore[override]
        return (type(self), (self.message, self.server_code))


class JobTimeoutError(ClientError):
    """The model was not ready within the client's deadline."""

    code = "job_timeout"


class PackageMismatchError(ClaimsError):
    """A genuine package that is not the one asked for (other model or issuance)."""

    code = "package_mismatch"


class InputError(UsageError):
    """An inference input file is missing, malformed, or does not fit the model."""

    code = "input_invalid"


class IssuerKeyRevokedError(VerificationError):
    """The issuer key that signed a stored model has been revoked (pinned ``revoked`` list)."""

    code = "issuer_key_revoked"
