"""Build the ``android-key`` verifier from plain configuration values.

The server's settings hold an ``[attestation.android]`` table; its values (after
``model_dump()``) go to :func:`build_android_verifier`. Every key is optional but
``packages``; unknown keys are refused, so a typo cannot silently weaken the policy::

    [attestation.android]
    packages = { "com.example.app" = ["<hex SHA-256 of the signing certificate>"] }
    roots = []                          # empty: the packaged Google roots
    challenge_binding = "client-data-hash"
    allowed_levels = ["tee", "strongbox"]
    required_purposes = ["AGREE_KEY"]
    allowed_boot_states = ["verified"]
    require_device_locked = true
    min_os_version = 130000             # Android 13
    min_os_patch_level = 202401         # YYYYMM
    os_outdated_below = 140000
    patch_outdated_months = 12
    allow_chain_quirks = true           # the per-link fallback for known leaf quirks
    status_source = "https://android.googleapis.com/attestation/status"
    status_ttl_seconds = 3600
    status_max_stale_seconds = 86400
    status_fail_open = false            # default: false in production, true in development
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from modelseal.attestation.android import AndroidKeyVerifier, AndroidPolicy
from modelseal.attestation.android_asn1 import KeyPurpose, VerifiedBootState
from modelseal.attestation.android_chain import ChainQuirk
from modelseal.attestation.base import AttestationConfigError, load_roots
from modelseal.attestation.revocation import GOOGLE_STATUS_URL, StatusListCache

__all__ = ["build_android_verifier"]

_log = structlog.get_logger("modelseal.attestation.android")

_POLICY_INTS = (
    "min_attestation_version",
    "min_os_version",
    "min_os_patch_level",
    "min_vendor_patch_level",
    "min_boot_patch_level",
    "os_outdated_below",
    "patch_outdated_months",
)
_KEYS = frozenset(
    {
        "packages",
        "roots",
        "challenge_binding",
        "allowed_levels",
        "required_purposes",
        "allowed_boot_states",
        "require_device_locked",
        "require_generated",
        "allow_chain_quirks",
        "status_source",
        "status_ttl_seconds",
        "status_max_stale_seconds",
        "status_fail_open",
        *_POLICY_INTS,
    }
)


def _enum_set(values: Any, enum: type[KeyPurpose] | type[VerifiedBootState], key: str) -> Any:
    try:
        return frozenset(enum[str(v).upper()] if isinstance(v, str) else enum(v) for v in values)
    except (KeyError, ValueError, TypeError):
        raise AttestationConfigError(f"attestation.android.{key}: unknown value") from None


def build_android_verifier(config: Mapping[str, Any], *, production: bool) -> AndroidKeyVerifier:
    """Build the verifier and its policy from a configuration mapping.

    Args:
        config: The ``[attestation.android]`` values (module docstring).
        production: Whether the server runs in production mode; it sets the default of
            ``status_fail_open`` (closed in production).

    Raises:
        AttestationConfigError: An unknown key, a missing package list, or a bad value.
    """
    try:
        return _build(config, production=production)
    except (TypeError, ValueError, AttributeError):
        # A value of the wrong type (a string for a number, a number for a list...):
        # refused like any bad value, never a traceback at start.
        raise AttestationConfigError(
            "attestation.android: a value has the wrong type (see docs/ATTESTATION.md)"
        ) from None


def _build(config: Mapping[str, Any], *, production: bool) -> AndroidKeyVerifier:
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise AttestationConfigError(f"attestation.android: unknown setting {unknown[0][:40]!r}")
    if "packages" not in config or not isinstance(config["packages"], Mapping):
        raise AttestationConfigError("attestation.android.packages is required")
    options: dict[str, Any] = {}
    for key in _POLICY_INTS:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise AttestationConfigError(f"attestation.android.{key} must be an integer")
            options[key] = value
    if "allowed_levels" in config:
        options["allowed_levels"] = frozenset(str(v) for v in config["allowed_levels"])
    if "required_purposes" in config:
        options["required_purposes"] = _enum_set(
            config["required_purposes"], KeyPurpose, "required_purposes"
        )
    if "allowed_boot_states" in config:
        options["allowed_boot_states"] = _enum_set(
            config["allowed_boot_states"], VerifiedBootState, "allowed_boot_states"
        )
    for key in ("require_device_locked", "require_generated"):
        if key in config:
            options[key] = bool(config[key])
    policy = AndroidPolicy.from_hex(config["packages"], **options)

    fail_open = bool(config.get("status_fail_open", not production))
    if fail_open and production:
        _log.warning("android_status_list_fail_open_in_production")
    revocation = StatusListCache(
        config.get("status_source") or GOOGLE_STATUS_URL,
        ttl_seconds=int(config.get("status_ttl_seconds", 3600)),
        max_stale_seconds=int(config.get("status_max_stale_seconds", 24 * 3600)),
        fail_open=fail_open,
    )
    roots = config.get("roots") or None
    return AndroidKeyVerifier(
        policy=policy,
        revocation=revocation,
        roots=None if roots is None else load_roots(list(roots)),
        allowed_quirks=tuple(ChainQuirk) if config.get("allow_chain_quirks", True) else (),
        challenge_binding=str(config.get("challenge_binding", "client-data-hash")),
    )
