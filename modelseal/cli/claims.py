"""Issuance claims from command-line options (FORMAT §3).

``seal`` sets the standard claims itself or from their own options: ``jti`` is
128 random bits, ``iat`` is now, ``exp`` and ``lexp`` are now plus a TTL. Extra
claims come from ``--claim NAME=VALUE``. Everything is checked here so that
``seal`` never writes a package that a strict I-JSON reader would refuse.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping

from modelseal.envelope import Claims
from modelseal.errors import HeaderError, UsageError

__all__ = [
    "JTI_BYTES",
    "MAX_SAFE_INTEGER",
    "STANDARD_CLAIMS",
    "at_rest_claims",
    "build_claims",
    "missing_options",
    "parse_claim_options",
]

STANDARD_CLAIMS = frozenset({"iss", "sub", "aud", "mid", "jti", "iat", "exp", "lexp"})
MAX_SAFE_INTEGER = (1 << 53) - 1
JTI_BYTES = 16


def _claim_value(name: str, raw: str) -> object:
    """A JSON scalar if ``raw`` is one, else ``raw`` itself as a string."""

    def refuse_constant(constant: str) -> object:
        raise ValueError(constant)

    try:
        value: object = json.loads(raw, parse_constant=refuse_constant)
    except ValueError:  # also json.JSONDecodeError, and NaN/Infinity spelled out
        return raw
    if isinstance(value, list | dict):
        return raw
    # I-JSON (RFC 7493) limits numbers to what an IEEE double holds exactly; readers
    # refuse anything else, so a package carrying it could never be opened.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        raise UsageError(f"--claim {name}: integer must be within +-(2^53 - 1), got {raw}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"--claim {name}: number must be finite, got {raw}")
    return value


def parse_claim_options(items: list[str]) -> dict[str, object]:
    """Parse repeated ``--claim NAME=VALUE`` options into extra claims.

    A value that is a JSON scalar (number, ``true``, ``false``, ``null``, a quoted
    string) keeps its JSON type; anything else is taken as a plain string.

    Raises:
        UsageError: Malformed item, repeated name, or a name that redefines a standard
            claim (those have their own options).
    """
    extra: dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--claim must be NAME=VALUE, got {item!r}")
        if name in STANDARD_CLAIMS:
            raise UsageError(
                f"--claim {name}: a standard claim is set by its own option or by modelseal,"
                f" not by --claim"
            )
        if name in extra:
            raise UsageError(f"--claim {name}: given more than once")
        extra[name] = _claim_value(name, raw)
    return extra


def build_claims(
    *,
    iss: str,
    sub: str,
    aud: str,
    mid: str,
    ttl_seconds: int,
    licence_ttl_seconds: int | None = None,
    extra: Mapping[str, object] | None = None,
    now: int | None = None,
) -> Claims:
    """Issuance claims: a fresh random 128-bit ``jti``, ``iat = now``, ``exp = now + ttl``.

    Raises:
        UsageError: A TTL is not positive or a claim is malformed (named in the message).
    """
    if ttl_seconds <= 0:
        raise UsageError(f"--ttl must be a positive number of seconds, got {ttl_seconds}")
    if licence_ttl_seconds is not None and licence_ttl_seconds <= 0:
        raise UsageError(
            f"--licence-ttl must be a positive number of seconds, got {licence_ttl_seconds}"
        )
    issued_at = int(time.time()) if now is None else now
    try:
        return Claims(
            iss=iss,
            sub=sub,
            aud=aud,
            mid=mid,
            jti=secrets.token_hex(JTI_BYTES),
            iat=issued_at,
            exp=issued_at + ttl_seconds,
            lexp=None if licence_ttl_seconds is None else issued_at + licence_ttl_seconds,
            extra=dict(extra or {}),
        )
    except HeaderError as exc:
        # The values came from the command line: a usage problem, not a malformed file.
        raise UsageError(f"invalid claims: {exc.message}") from None


def missing_options(purpose: str, options: Mapping[str, object]) -> UsageError:
    """The error for options that ``purpose`` requires but were not given."""
    missing = [name for name, value in options.items() if value is None]
    return UsageError(f"{purpose} needs {_and(list(options))} (missing {_and(missing)})")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def at_rest_claims(
    *,
    iss: str | None,
    sub: str | None,
    aud: str | None,
    mid: str | None,
    ttl: int | None,
    licence_ttl: int | None,
    extra: dict[str, object],
) -> Claims | None:
    """Optional claims for an at-rest package: none, or all of iss, sub, aud, mid and ttl.

    Raises:
        UsageError: Some claim options were given but not all the required ones.
    """
    given = {"--iss": iss, "--sub": sub, "--aud": aud, "--mid": mid, "--ttl": ttl}
    if all(value is None for value in given.values()) and licence_ttl is None and not extra:
        return None
    if iss is None or sub is None or aud is None or mid is None or ttl is None:
        raise missing_options("claims on an at-rest package", given)
    return build_claims(
        iss=iss,
        sub=sub,
        aud=aud,
        mid=mid,
        ttl_seconds=ttl,
        licence_ttl_seconds=licence_ttl,
        extra=extra,
    )
