"""Canonical JSON: RFC 8785 number and ordering examples, and strict parsing."""

from __future__ import annotations

import struct

import pytest

from modelseal.audit.canonical import canonical_json, parse_canonical
from modelseal.audit.errors import CanonicalJSONError

# RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_numbers_serialize_as_rfc8785_appendix_b(bits: str, expected: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json(value) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinities_are_refused(bits: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


def test_keys_sort_by_utf16_code_units_as_rfc8785_section_3_2_3() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = list(parse_canonical(canonical_json(value)))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_strings_use_the_rfc8785_escapes() -> None:
    text = '\u0000\u0008\t\n\u000c\r\u001f"\\/\u007f\u2028é'
    expected = '"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\/\u007f\u2028é"'.encode()
    assert canonical_json(text) == expected


@pytest.mark.parametrize(
    "value",
    [2**53, -(2**53), "\udc00", {1: "x"}, b"bytes", object(), float("nan")],
)
def test_values_json_cannot_carry_exactly_are_refused(value: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"b":1,"a":2}',  # unsorted
        b'{"a": 1}',  # whitespace
        b"1.0",  # not the shortest form
        b"1E5",
        b'"\\u00e9"',  # needless escape
        b'"\\u001F"',  # upper-case hex
        b'{"a":1,"a":1}',  # duplicate key
        b"NaN",
        b"\xff",  # not UTF-8
        b"9007199254740993",  # not a double exactly
        b"[1,]",
    ],
)
def test_parse_refuses_anything_but_the_canonical_bytes(data: bytes) -> None:
    with pytest.raises(CanonicalJSONError):
        parse_canonical(data)


def test_parse_round_trips_canonical_bytes() -> None:
    value = {"z": [1, -2, True, None, "é"], "a": {"y": 0.5, "x": 1e21}, "": ""}
    data = canonical_json(value)
    assert parse_canonical(data) == value
    assert canonical_json(parse_canonical(data)) == data
