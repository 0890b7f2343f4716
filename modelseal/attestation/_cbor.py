"""A strict CBOR reader for attestation evidence: plain data only, small, bounded.

Attestation objects and assertions are maps of byte and text strings. Everything
else CBOR can say (tags, floats, indefinite lengths, duplicate keys, deep nesting) is
refused, so that a hostile input can neither instantiate a Python object of cbor2's
choosing nor hide a second value behind a duplicate key.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from modelseal.attestation.base import AttestationMalformedError

__all__ = ["decode_map", "require_bytes", "require_list"]

MAX_DEPTH = 6


def _reject_tag(*_args: Any) -> Any:
    raise cbor2.CBORDecodeError("CBOR tags are not allowed")


# cbor2 decodes its built-in semantic tags itself; map each to the rejecting hook.
_NO_SEMANTIC_TAGS: dict[int, Callable[..., Any]] = dict.fromkeys(range(0, 1024), _reject_tag)
_NO_SEMANTIC_TAGS[55799] = _reject_tag


def decode_map(
    data: bytes, *, what: str, max_bytes: int, integer_keys: bool = False
) -> Mapping[Any, Any]:
    """Decode ``data`` as one CBOR map of plain values, with nothing after it.

    Map keys must be text or byte strings, or also integers with ``integer_keys`` (COSE).

    Raises:
        AttestationMalformedError: Too long, not CBOR, not a map, or uses a refused feature.
    """
    if len(data) > max_bytes:
        raise AttestationMalformedError(
            f"{what} must be at most {max_bytes} bytes, got {len(data)}"
        )
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=not integer_keys,
        ).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        raise AttestationMalformedError(f"{what} is not valid CBOR") from None
    if stream.tell() != len(data):
        raise AttestationMalformedError(f"{what} has trailing bytes after the CBOR map")
    if not isinstance(value, dict):
        raise AttestationMalformedError(f"{what} must be a CBOR map")
    return value


def require_bytes(value: object, *, what: str, min_len: int = 1, max_len: int) -> bytes:
    """``value`` as bytes of a length in ``min_len..max_len``.

    Raises:
        AttestationMalformedError: Not a byte string, or out of range.
    """
    if not isinstance(value, bytes):
        raise AttestationMalformedError(f"{what} must be a byte string")
    if not min_len <= len(value) <= max_len:
        raise AttestationMalformedError(
            f"{what} must be {min_len}..{max_len} bytes, got {len(value)}"
        )
    return value


def require_list(value: object, *, what: str, min_len: int, max_len: int) -> list[Any]:
    """``value`` as a list of ``min_len..max_len`` items.

    Raises:
        AttestationMalformedError: Not an array, or out of range.
    """
    if not isinstance(value, list):
        raise AttestationMalformedError(f"{what} must be an array")
    if not min_len <= len(value) <= max_len:
        raise AttestationMalformedError(
            f"{what} must have {min_len}..{max_len} items, got {len(value)}"
        )
    return value
