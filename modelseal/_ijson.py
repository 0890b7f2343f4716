"""Strict I-JSON (RFC 7493) decoding, shared by every JSON document modelseal reads.

The container header, the bundle manifest and safetensors headers go through
:func:`decode_object`. Refused: invalid UTF-8, a byte-order mark, duplicate member
names, ``NaN`` and ``Infinity``, integers outside +-(2**53 - 1), lone surrogates and
nesting deeper than a limit. Files that only need duplicate members refused (key
files, client state) use :func:`no_duplicate_members` as their ``object_pairs_hook``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NoReturn

from modelseal.errors import ModelSealError

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32

ErrorFactory = Callable[[str], ModelSealError]


def json_type(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def no_duplicate_members(
    error: Callable[[str], Exception],
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` that refuses a repeated member name with ``error(name)``."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise error(key)
            out[key] = value
        return out

    return hook


def decode_object(
    data: bytes,
    *,
    what: str,
    base_offset: int = 0,
    error: ErrorFactory,
    max_depth: int = MAX_DEPTH,
    depth: int = 0,
) -> dict[str, Any]:
    """Decode ``data`` as one strict I-JSON object.

    Args:
        data: The UTF-8 bytes.
        what: The name used in messages, such as ``"manifest"``.
        base_offset: Where ``data`` starts in the enclosing file, so messages give file offsets.
        error: Builds the exception to raise from a message.
        max_depth: The deepest nesting accepted.
        depth: The nesting depth ``data`` itself sits at (for documents embedded in others).

    Raises:
        ModelSealError: Of the kind ``error`` builds, naming the offset where parsing failed.
    """

    def fail(message: str) -> NoReturn:
        raise error(f"{what} {message}")

    def duplicate(key: str) -> ModelSealError:
        return error(f"{what} has duplicate member {key!r}")

    def reject_constant(name: str) -> Any:
        fail(f"contains {name}, which is not I-JSON")

    def parse_int(text: str) -> int:
        # 2**53 - 1 has 16 digits; refusing longer literals first also keeps int() from
        # raising its own ValueError past 4300 digits (sys.set_int_max_str_digits).
        if len(text.lstrip("-")) > 16:
            fail(f"contains integer {text[:32]} outside the I-JSON range")
        value = int(text)
        if abs(value) > MAX_SAFE_INTEGER:
            fail(f"contains integer {text[:32]} outside the I-JSON range")
        return value

    def parse_float(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            fail(f"contains number {text[:32]} outside the I-JSON range")
        return value

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"is not valid UTF-8 at offset {base_offset + exc.start}")
    if text.startswith("\ufeff"):
        fail(f"starts with a byte-order mark at offset {base_offset}")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=no_duplicate_members(duplicate),
            parse_constant=reject_constant,
            parse_int=parse_int,
            parse_float=parse_float,
        )
    except json.JSONDecodeError as exc:
        # exc.pos counts characters; convert to a byte offset for the message.
        byte_pos = len(text[: exc.pos].encode("utf-8"))
        fail(f"is not JSON: {exc.msg} at offset {base_offset + byte_pos}")
    except RecursionError:
        fail(f"nests deeper than {max_depth} levels")
    except ValueError as exc:  # a number literal int()/float() refuses; not expected
        fail(f"holds an unparseable number: {str(exc)[:80]}")
    _check_tree(obj, depth, max_depth, fail)
    if not isinstance(obj, dict):
        fail(f"must be a JSON object, got {json_type(obj)}")
    return obj


def _check_tree(value: object, depth: int, max_depth: int, fail: Callable[[str], NoReturn]) -> None:
    if depth > max_depth:
        fail(f"nests deeper than {max_depth} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail("contains a lone surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_tree(key, depth + 1, max_depth, fail)
            _check_tree(item, depth + 1, max_depth, fail)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1, max_depth, fail)
