"""The one exception hierarchy of modelseal.

Every error that modelseal raises on purpose is a :class:`ModelSealError`. Each
class carries a stable, machine-readable ``code`` that the CLI prints and the
HTTP API returns; codes never change meaning once released. Messages are for
people and may change.

The tree::

    ModelSealError
    ├── FormatError                 the container is not a valid FORMAT v1 package
    │   ├── BadMagicError
    │   ├── TruncatedError
    │   ├── FieldLengthError
    │   │   ├── HeaderLengthError, EncLengthError, WrapLengthError, SigLengthError
    │   ├── HeaderError
    │   ├── UnsupportedSuiteError, UnsupportedAlgorithmError
    │   └── BodyLengthError
    ├── VerificationError           a cryptographic check failed
    │   ├── UnknownIssuerError, BadSignatureError
    │   ├── RecipientMismatchError, DEKUnwrapError
    │   ├── CommitmentMismatchError, ChunkTagError
    ├── ClaimsError                 the package is genuine but not for here or now
    │   ├── ExpiredError, AudienceError, LicenceExpiredError
    ├── KeyFormatError              a key file or JWK is malformed
    └── UsageError                  an API was called with arguments it cannot accept

Verification errors say which check failed, never why in detail, and are
raised ``from None`` so that no library internals leak into logs.
"""

from __future__ import annotations

__all__ = [
    "AudienceError",
    "BadMagicError",
    "BadSignatureError",
    "BodyLengthError",
    "ChunkTagError",
    "ClaimsError",
    "CommitmentMismatchError",
    "DEKUnwrapError",
    "EncLengthError",
    "ExpiredError",
    "FieldLengthError",
    "FormatError",
    "HeaderError",
    "HeaderLengthError",
    "KeyFormatError",
    "LicenceExpiredError",
    "ModelSealError",
    "RecipientMismatchError",
    "SigLengthError",
    "TruncatedError",
    "UnknownIssuerError",
    "UnsupportedAlgorithmError",
    "UnsupportedSuiteError",
    "UsageError",
    "VerificationError",
    "WrapLengthError",
]


class ModelSealError(Exception):
    """Base of every error modelseal raises on purpose.

    Attributes:
        code: A stable, machine-readable identifier, such as ``"bad_signature"``.
    """

    code: str = "modelseal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[ModelSealError], tuple[str]]:
        # Subclasses with extra constructor arguments override this.
        return (type(self), (self.message,))


# --- Format errors: the bytes are not a FORMAT v1 package ------------------------------------


class FormatError(ModelSealError):
    """The input is not a well-formed FORMAT v1 container."""

    code = "format_error"


class BadMagicError(FormatError):
    """The file does not start with ``MSEAL/1\\n``."""

    code = "bad_magic"


class TruncatedError(FormatError):
    """The input ended inside the prelude or the key block."""

    code = "truncated"


class FieldLengthError(FormatError):
    """A length field of the layout is outside its allowed range."""

    code = "field_length"


class HeaderLengthError(FieldLengthError):
    """``header_len`` is outside 1..65536."""

    code = "header_length"


class EncLengthError(FieldLengthError):
    """``enc_len`` does not match the KEM (or 12 for ``kek``)."""

    code = "enc_length"


class WrapLengthError(FieldLengthError):
    """``wrap_len`` is not 48."""

    code = "wrap_length"


class SigLengthError(FieldLengthError):
    """``sig_len`` is not 64 for ``hpke`` or 0 for ``kek``."""

    code = "sig_length"


class HeaderError(FormatError):
    """The header is not valid UTF-8 I-JSON of the shape FORMAT §3 requires."""

    code = "header_invalid"


class UnsupportedSuiteError(FormatError):
    """The header names an HPKE suite this reader does not accept."""

    code = "unsupported_suite"


class UnsupportedAlgorithmError(FormatError):
    """The header names a signature algorithm this reader does not accept."""

    code = "unsupported_alg"


class BodyLengthError(FormatError):
    """The body's length does not match the header's ``len``."""

    code = "body_length"


# --- Verification errors: a cryptographic check failed ---------------------------------------


class VerificationError(ModelSealError):
    """A cryptographic check failed."""

    code = "verification_failed"


class UnknownIssuerError(VerificationError):
    """The header's issuer ``kid`` is not in the pinned issuer key set."""

    code = "unknown_issuer"


class BadSignatureError(VerificationError):
    """The issuer signature does not verify."""

    code = "bad_signature"


class RecipientMismatchError(VerificationError):
    """The package is addressed to another key (``rcpt`` or suite differ)."""

    code = "recipient_mismatch"


class DEKUnwrapError(VerificationError):
    """The wrapped DEK could not be opened with the recipient key or KEK."""

    code = "dek_unwrap_failed"


class CommitmentMismatchError(VerificationError):
    """The body's key commitment does not match the derived value."""

    code = "commitment_mismatch"


class ChunkTagError(VerificationError):
    """A body chunk failed authentication.

    Attributes:
        index: The zero-based index of the chunk that failed.
    """

    code = "chunk_tag_failed"

    def __init__(self, index: int) -> None:
        super().__init__(f"chunk {index} failed authentication")
        self.index = index

    def __reduce__(self) -> tuple[type[ChunkTagError], tuple[int]]:  # type: ignore[override]
        return (type(self), (self.index,))


# --- Claims errors: genuine, but not for this device or not now ------------------------------


class ClaimsError(ModelSealError):
    """The package is genuine but its claims forbid opening it here or now."""

    code = "claims_rejected"


class ExpiredError(ClaimsError):
    """``now`` is past the delivery deadline ``exp`` plus the leeway."""

    code = "expired"


class AudienceError(ClaimsError):
    """The package's ``aud`` is not this device's id."""

    code = "wrong_audience"


class LicenceExpiredError(ClaimsError):
    """``now`` is past the licence expiry ``lexp``: fetch the model again."""

    code = "licence_expired"


# --- Keys and usage ----------------------------------------------------------------------------


class KeyFormatError(ModelSealError):
    """A key, JWK or JWK Set is malformed or of the wrong kind."""

    code = "key_invalid"


class UsageError(ModelSealError):
    """An API was called with arguments it cannot accept (a caller bug, not bad input)."""

    code = "usage_error"
