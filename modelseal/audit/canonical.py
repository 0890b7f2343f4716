"""Canonical JSON for audit entries: the RFC 8785 JSON Canonicalization Scheme (JCS).

The bytes of an entry are what the Merkle tree commits to, so one value must have
exactly one encoding:

* objects: members sorted by key, compared as UTF-16 code units (RFC 8785 §3.2.3);
  keys are strings; no duplicates (a ``Mapping`` cannot have any);
* no insignificant whitespace; separators ``,`` and ``:``;
* strings: UTF-8, escaping only ``"``, ``\\``, and U+0000..U+001F (as ``\\b \\t \\n \\f \\r``
  where those exist, else ``\\u00xx`` in lower-case hex), as RFC 8785 §3.2.2.2 requires;
  lone surrogates are refused;
* numbers: as RFC 8785 §3.2.2.3 (ECMAScript ``Number.prototype.toString``): the
  shortest digits that round-trip the IEEE 754 double, plain notation for
  1e-6 <= |x| < 1e21, else ``d.ddde±x``; ``-0`` is ``0``; NaN and infinities are
  refused. Python integers must lie within ±(2**53 - 1) (I-JSON, RFC 7493) so that
  they are exact doubles; larger ones are refused rather than rounded. Callers should
  prefer integers (a float such as a fraud score is fine, but is a double);
* ``true``, ``false``, ``null``; arrays in their given order.

:func:`parse_canonical` accepts exactly the bytes :func:`canonical_json` produces.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring as _encode_basestring  # C-accelerated
from typing import Any

from modelseal.audit.errors import CanonicalJSONError

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "parse_canonical"]

MAX_SAFE_INTEGER = 2**53 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DEPTH = 32


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _string(text: str, where: str) -> str:
    if _SURROGATE.search(text):
        raise CanonicalJSONError(f"{where}: string is not valid Unicode (lone surrogate)")
    # The same escaping as RFC 8785 §3.2.2.2 (short escapes, else lower-case \u00xx).
    return _encode_basestring(text)


def _number(value: float, where: str) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 §3.2.2.3)."""
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError(f"{where}: NaN and infinities are not JSON")
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _number(-value, where)
    # repr() gives the shortest digits that round-trip, as ECMAScript requires.
    mantissa, _, exp_text = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    raw = whole + fraction
    stripped = raw.lstrip("0")
    # The decimal point sits after position n of the significant digits.
    n = len(whole) + int(exp_text or "0") - (len(raw) - len(stripped))
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    sign = "+" if exponent >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(exponent)}"


def _encode(value: object, where: str, depth: int, out: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise CanonicalJSONError(f"{where}: nested deeper than {_MAX_DEPTH}")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"{where}: integer outside ±(2**53-1)")
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_number(value, where))
    elif isinstance(value, str):
        out.append(_string(value, where))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{where}: object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(keys, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(key, where))
            out.append(":")
            _encode(value[key], f"{where}.{key}", depth + 1, out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, f"{where}[{i}]", depth + 1, out)
        out.append("]")
    else:
        raise CanonicalJSONError(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_json(value: object) -> bytes:
    """The canonical UTF-8 encoding of ``value``.

    Raises:
        CanonicalJSONError: ``value`` holds a float, an integer beyond ±(2**53-1), a
            non-string key, a lone surrogate, or a non-JSON type.
    """
    out: list[str] = []
    _encode(value, "$", 0, out)
    return "".join(out).encode("utf-8")


def parse_canonical(data: bytes) -> Any:
    """Parse ``data`` and check that it is canonical.

    The bytes are parsed leniently and must then equal the canonical encoding of
    what was parsed, which also refuses duplicate keys (the encoding has one fewer
    member), NaN, and integers beyond ±(2**53 - 1).

    Raises:
        CanonicalJSONError: Not UTF-8 JSON, or not in canonical form.
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CanonicalJSONError("not UTF-8 JSON") from None
    if canonical_json(value) != data:
        raise CanonicalJSONError("JSON is not in canonical form")
    return value
