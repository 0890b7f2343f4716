"""Android Key Attestation verifier (platform ``"android-key"``).

What it proves. The device generated the attested key inside its TEE or StrongBox. The
device's secure hardware then signed a certificate for it, through a chain that ends at a
pinned Google root. That certificate states the key's properties, the app that asked for
it, and the boot state the bootloader reported. Since the attested key *is* the device's
HPKE P-256 key, a verified attestation binds that key to genuine hardware and to this app.

Evidence: the certificate chain from ``KeyStore.getCertificateChain``, DER concatenated,
leaf first (:func:`~modelseal.attestation.android_chain.encode_chain`). The key must have
been generated with ``setAttestationChallenge(c)``, where ``c`` depends on the verifier's
``challenge_binding``:

* ``"client-data-hash"`` (the default) means ``c = SHA256(client_data(challenge, device
  key))``. This is the same value every modelseal platform signs
  (:func:`~modelseal.attestation.base.client_data_hash`), so the app follows one rule on
  all platforms.
* ``"raw"`` means ``c`` is the 32-byte server challenge itself. Here the attested key is
  compared with the device key directly, so nothing is lost. Use it for clients that
  cannot hash, or for the published sample chains.

Checks, in order (each failure raises the :class:`AttestationError` subclass named):

1. the chain verifies to a pinned root (:mod:`.android_chain`): malformed, root, expired
   or chain errors;
2. no certificate serial is on the status list (:mod:`.revocation`): revoked or unavailable;
3. the KeyDescription parses (:mod:`.android_asn1`): malformed;
4. ``attestationChallenge`` equals the expected value (above), compared in constant
   time: challenge mismatch;
5. the leaf's key is the registered device key: key mismatch;
6. policy (:class:`AndroidPolicy`), all policy errors:
   - attestation and KeyMint security levels;
   - the attestation version;
   - key algorithm, curve and size, purposes, and origin GENERATED (read from the
     hardware-enforced list);
   - verified boot state and device lock;
   - package names and signing-certificate digests;
   - minimum OS version and patch levels.

Signals are reported on success: ``unlocked_bootloader``, ``unverified_boot``,
``software_key``, ``os_outdated``, ``patch_outdated`` and ``revocation_unchecked``. Key
attestation carries no installer information, so ``not_from_store`` never comes from
this verifier (Play Integrity's app verdict reports it).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from modelseal.attestation.android_asn1 import (
    Algorithm,
    AuthorizationList,
    ECCurve,
    KeyDescription,
    KeyOrigin,
    KeyPurpose,
    SecurityLevel,
    VerifiedBootState,
    parse_key_description,
)
from modelseal.attestation.android_chain import (
    ChainQuirk,
    ChainVerifier,
    VerifiedChain,
    split_der_chain,
)
from modelseal.attestation.base import (
    AttestationChallengeError,
    AttestationConfigError,
    AttestationKeyMismatchError,
    AttestationPolicyError,
    AttestationResult,
    Signal,
    client_data_hash,
    load_pem_certificates,
)
from modelseal.attestation.revocation import RevocationChecker, RevocationOutcome
from modelseal.errors import UsageError
from modelseal.keys import KEM, RecipientPublicKey

__all__ = [
    "CHALLENGE_BINDINGS",
    "PLATFORM",
    "SIGNAL_OS_OUTDATED",
    "SIGNAL_PATCH_OUTDATED",
    "SIGNAL_REVOCATION_UNCHECKED",
    "AndroidKeyVerifier",
    "AndroidPolicy",
    "default_android_roots",
]

PLATFORM = "android-key"
SIGNAL_OS_OUTDATED = "os_outdated"
SIGNAL_PATCH_OUTDATED = "patch_outdated"
SIGNAL_REVOCATION_UNCHECKED = "revocation_unchecked"
SHA256_BYTES = 32
KEY_TYPES = frozenset({"ec-p256", "rsa"})
LEVELS = frozenset({"software", "tee", "strongbox"})
MIN_RSA_BITS = 2048
CHALLENGE_BINDINGS = frozenset({"client-data-hash", "raw"})


def default_android_roots() -> tuple[x509.Certificate, ...]:
    """Load every PEM file packaged in ``modelseal/attestation/roots/android/``.

    Raises:
        AttestationConfigError: The directory holds no readable root.
    """
    folder = resources.files("modelseal.attestation").joinpath("roots", "android")
    roots: list[x509.Certificate] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".pem"):
            roots.extend(load_pem_certificates(entry.read_bytes(), source=entry.name))
    if not roots:
        raise AttestationConfigError("no packaged Android attestation root")
    return tuple(roots)


def _yyyymm(value: int | None) -> int | None:
    """Normalise a patch level (YYYYMM or YYYYMMDD) to YYYYMM."""
    if value is None:
        return None
    return value // 100 if value > 999_999 else value


@dataclass(frozen=True, slots=True)
class AndroidPolicy:
    """What an Android attestation must show to be accepted.

    Attributes:
        packages: Allowed package names, each with the SHA-256 digests of the signing
            certificates it may be signed with. Every package of the attesting UID must
            be listed, and every digest must be allowed for one of them.
        allowed_levels: Accepted ``attestationSecurityLevel`` labels.
        required_purposes: KeyMint purposes the key must have (AGREE_KEY for HPKE).
        key_types: ``"ec-p256"`` (the device HPKE key) and, for tests, ``"rsa"``.
        require_generated: The key's origin must be GENERATED: created in the hardware,
            never imported.
        allowed_boot_states: Accepted verified-boot states.
        require_device_locked: The bootloader must be locked.
        min_attestation_version: The oldest attestation format accepted (3 = Android 9).
        min_os_version: Minimum ``osVersion`` (e.g. 130000 for Android 13), or ``None``.
        min_os_patch_level: Minimum ``osPatchLevel`` as YYYYMM, or ``None``.
        min_vendor_patch_level: Minimum vendor patch level as YYYYMM, or ``None``.
        min_boot_patch_level: Minimum boot patch level as YYYYMM, or ``None``.
        os_outdated_below: Signal ``os_outdated`` below this ``osVersion``.
        patch_outdated_months: Signal ``patch_outdated`` when the OS patch level is more
            than this many months before ``now``.
        require_device_key: Refuse when no device key is given to compare with.
    """

    packages: Mapping[str, frozenset[bytes]]
    allowed_levels: frozenset[str] = frozenset({"tee", "strongbox"})
    required_purposes: frozenset[int] = frozenset({KeyPurpose.AGREE_KEY})
    key_types: frozenset[str] = frozenset({"ec-p256"})
    require_generated: bool = True
    allowed_boot_states: frozenset[int] = frozenset({VerifiedBootState.VERIFIED})
    require_device_locked: bool = True
    min_attestation_version: int = 3
    min_os_version: int | None = None
    min_os_patch_level: int | None = None
    min_vendor_patch_level: int | None = None
    min_boot_patch_level: int | None = None
    os_outdated_below: int | None = None
    patch_outdated_months: int | None = 12
    require_device_key: bool = True

    def __post_init__(self) -> None:
        if not self.packages:
            raise AttestationConfigError("Android policy needs at least one allowed package")
        for name, digests in self.packages.items():
            if not name or not digests:
                raise AttestationConfigError(
                    f"package {name[:80]!r} needs at least one signing-certificate digest"
                )
            if any(len(d) != SHA256_BYTES for d in digests):
                raise AttestationConfigError(
                    f"package {name[:80]!r}: signing digests must be 32-byte SHA-256"
                )
        if not self.allowed_levels or not self.allowed_levels <= LEVELS:
            raise AttestationConfigError(f"allowed_levels must be a subset of {sorted(LEVELS)}")
        if not self.key_types or not self.key_types <= KEY_TYPES:
            raise AttestationConfigError(f"key_types must be a subset of {sorted(KEY_TYPES)}")
        if not self.allowed_boot_states:
            raise AttestationConfigError("allowed_boot_states must not be empty")

    @classmethod
    def from_hex(cls, packages: Mapping[str, Iterable[str]], **options: Any) -> AndroidPolicy:
        """Build a policy from package names mapped to hex SHA-256 digests (config files).

        Raises:
            AttestationConfigError: A digest is not hex or the policy is invalid.
        """
        parsed: dict[str, frozenset[bytes]] = {}
        for name, digests in packages.items():
            try:
                parsed[name] = frozenset(bytes.fromhex(d.replace(":", "")) for d in digests)
            except ValueError:
                raise AttestationConfigError(
                    f"package {name[:80]!r}: signing digest is not hex"
                ) from None
        return cls(packages=parsed, **options)


class AndroidKeyVerifier:
    """The ``android-key`` :class:`~modelseal.attestation.base.Verifier`."""

    platform = PLATFORM

    def __init__(
        self,
        *,
        policy: AndroidPolicy,
        revocation: RevocationChecker,
        roots: Sequence[x509.Certificate] | None = None,
        allowed_quirks: Iterable[ChainQuirk | str] = tuple(ChainQuirk),
        challenge_binding: str = "client-data-hash",
    ) -> None:
        """Configure the verifier.

        Args:
            policy: What an attestation must show.
            revocation: The status-list checker (:class:`~.revocation.StatusListCache`).
            roots: Pinned roots; ``None`` loads the packaged Google roots.
            allowed_quirks: Leaf quirks that may use the per-link chain check.
            challenge_binding: ``"client-data-hash"`` or ``"raw"`` (module docstring).

        Raises:
            AttestationConfigError: Bad roots or an unknown challenge binding.
        """
        if challenge_binding not in CHALLENGE_BINDINGS:
            raise AttestationConfigError(
                f"challenge_binding must be one of {sorted(CHALLENGE_BINDINGS)}, "
                f"got {challenge_binding[:40]!r}"
            )
        self.challenge_binding = challenge_binding
        self.policy = policy
        self._revocation = revocation
        self._chain = ChainVerifier(
            default_android_roots() if roots is None else roots, allowed_quirks=allowed_quirks
        )

    @classmethod
    def from_root_files(
        cls, paths: Sequence[str | Path], *, policy: AndroidPolicy, revocation: RevocationChecker
    ) -> AndroidKeyVerifier:
        """Build a verifier pinned to the roots in the PEM files ``paths``.

        Raises:
            AttestationConfigError: A file is missing or malformed.
        """
        roots: list[x509.Certificate] = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError:
                raise AttestationConfigError(f"cannot read Android root file {path!s}") from None
            roots.extend(load_pem_certificates(data, source=str(path)))
        return cls(policy=policy, revocation=revocation, roots=roots)

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        """Verify an attestation chain for ``challenge`` and the device's HPKE key.

        Raises:
            AttestationError: A check failed; the subclass says which (module docstring).
        """
        if self.challenge_binding == "raw":
            expected = bytes(challenge)
        else:
            expected = client_data_hash(challenge, device_key)
        registered: ec.EllipticCurvePublicKey | None = None
        if device_key is not None:
            if device_key.kem is not KEM.P256:
                raise AttestationKeyMismatchError(
                    f"Android Keystore attests P-256 keys; the device key is {device_key.kem.label}"
                )
            registered = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), device_key.raw
            )
        return self.verify_chain(
            split_der_chain(evidence),
            expected_challenge=expected,
            registered_key=registered,
            now=now,
        )

    def verify_chain(
        self,
        certificates: Sequence[bytes],
        *,
        expected_challenge: bytes,
        registered_key: CertificatePublicKeyTypes | None,
        now: int,
    ) -> AttestationResult:
        """Verify a split chain for an exact ``attestationChallenge`` and any public key.

        :meth:`verify` calls this after computing the challenge binding; tests call it
        directly for RSA sample chains, whose keys cannot be a device key.

        Raises:
            AttestationError: A check failed; the subclass says which.
            UsageError: ``now`` is not a representable unix time (a caller bug).
        """
        try:
            when = dt.datetime.fromtimestamp(now, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise UsageError(f"now must be a unix time, got {now!r}") from None
        chain = self._chain.verify(certificates, when)
        outcome = self._revocation.check(chain.serial_numbers, now=now)
        description = parse_key_description(chain.leaf.key_description)
        if not expected_challenge or not hmac.compare_digest(
            description.attestation_challenge, bytes(expected_challenge)
        ):
            raise AttestationChallengeError("attestationChallenge is not the server challenge")
        self._check_key_binding(chain, registered_key)
        signals = self._check_policy(description, chain, when)
        if not outcome.checked:
            signals.append(SIGNAL_REVOCATION_UNCHECKED)
        return AttestationResult(
            platform=PLATFORM,
            level=SecurityLevel(description.attestation_security_level).label,
            key_id=None,
            facts=_facts(description, chain, outcome),
            signals=tuple(signals),
        )

    # --- checks --------------------------------------------------------------------------------

    def _check_key_binding(
        self, chain: VerifiedChain, registered_key: CertificatePublicKeyTypes | None
    ) -> None:
        if registered_key is None:
            if self.policy.require_device_key:
                raise AttestationKeyMismatchError("no device key to compare the attested key with")
            return
        expected = registered_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not hmac.compare_digest(chain.leaf.spki_der, expected):
            raise AttestationKeyMismatchError("the attested key is not the registered device key")

    def _check_policy(
        self, description: KeyDescription, chain: VerifiedChain, now: dt.datetime
    ) -> list[str]:
        policy = self.policy
        signals: list[str] = []
        level = _level_label(description.attestation_security_level)
        keymint_level = _level_label(description.keymint_security_level)
        if level not in policy.allowed_levels or keymint_level not in policy.allowed_levels:
            raise AttestationPolicyError(
                f"attestation security level {level}/{keymint_level} is not allowed"
            )
        if level == "software":
            signals.append(Signal.SOFTWARE_KEY.value)
        if description.attestation_version < policy.min_attestation_version:
            raise AttestationPolicyError(
                f"attestation version {description.attestation_version} is below "
                f"{policy.min_attestation_version}"
            )
        # Hardware-enforced values are the ones the TEE vouches for; a software-level
        # attestation (only if the policy allows it) has nothing else.
        enforced = (
            description.software_enforced if level == "software" else description.hardware_enforced
        )
        self._check_key(enforced, chain)
        signals.extend(self._check_boot(enforced))
        self._check_application(description)
        signals.extend(self._check_versions(enforced, now))
        return signals

    def _check_key(self, enforced: AuthorizationList, chain: VerifiedChain) -> None:
        policy = self.policy
        key = chain.leaf.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            if "ec-p256" not in policy.key_types or not isinstance(key.curve, ec.SECP256R1):
                raise AttestationPolicyError("attested key is not an allowed EC curve")
            if enforced.algorithm != Algorithm.EC:
                raise AttestationPolicyError("hardware-enforced algorithm is not EC")
            if enforced.ec_curve is not None:
                if enforced.ec_curve != ECCurve.P_256:
                    raise AttestationPolicyError("hardware-enforced ecCurve is not P-256")
            elif enforced.key_size != 256:
                raise AttestationPolicyError("hardware-enforced key size is not 256")
        elif isinstance(key, rsa.RSAPublicKey):
            if "rsa" not in policy.key_types or key.key_size < MIN_RSA_BITS:
                raise AttestationPolicyError("attested RSA key is not allowed")
            if enforced.algorithm != Algorithm.RSA or enforced.key_size != key.key_size:
                raise AttestationPolicyError("hardware-enforced algorithm is not RSA")
        else:  # pragma: no cover - the chain parser admits only EC and RSA leaves
            raise AttestationPolicyError("attested key type is not allowed")
        purposes = enforced.purposes or frozenset()
        missing = sorted(p for p in policy.required_purposes if p not in purposes)
        if missing:
            raise AttestationPolicyError(f"key lacks required purpose {_purpose_name(missing[0])}")
        if policy.require_generated and enforced.origin != KeyOrigin.GENERATED:
            raise AttestationPolicyError("key origin is not GENERATED (imported or unknown)")

    def _check_boot(self, enforced: AuthorizationList) -> list[str]:
        root = enforced.root_of_trust
        if root is None:
            raise AttestationPolicyError("hardware-enforced rootOfTrust is missing")
        signals: list[str] = []
        if not root.device_locked:
            if self.policy.require_device_locked:
                raise AttestationPolicyError("the device bootloader is unlocked")
            signals.append(Signal.UNLOCKED_BOOTLOADER.value)
        if root.verified_boot_state != VerifiedBootState.VERIFIED:
            if root.verified_boot_state not in self.policy.allowed_boot_states:
                raise AttestationPolicyError(
                    f"verified boot state {_boot_name(root.verified_boot_state)} is not allowed"
                )
            signals.append(Signal.UNVERIFIED_BOOT.value)
        return signals

    def _check_application(self, description: KeyDescription) -> None:
        app = (
            description.software_enforced.application_id
            or description.hardware_enforced.application_id
        )
        if app is None or not app.packages:
            raise AttestationPolicyError("attestationApplicationId is missing")
        allowed_digests: set[bytes] = set()
        for package in app.packages:
            digests = self.policy.packages.get(package.name)
            if digests is None:
                raise AttestationPolicyError(f"package {package.name[:100]!r} is not allowed")
            allowed_digests |= digests
        if not app.signature_digests:
            raise AttestationPolicyError("attestationApplicationId has no signing digest")
        for digest in app.signature_digests:
            if digest not in allowed_digests:
                raise AttestationPolicyError("app signing-certificate digest is not allowed")

    def _check_versions(self, enforced: AuthorizationList, now: dt.datetime) -> list[str]:
        policy = self.policy
        checks = (
            ("osVersion", enforced.os_version, policy.min_os_version),
            ("osPatchLevel", enforced.os_patch_level, policy.min_os_patch_level),
            (
                "vendorPatchLevel",
                _yyyymm(enforced.vendor_patch_level),
                policy.min_vendor_patch_level,
            ),
            ("bootPatchLevel", _yyyymm(enforced.boot_patch_level), policy.min_boot_patch_level),
        )
        for name, value, minimum in checks:
            if minimum is not None and (value is None or value < minimum):
                raise AttestationPolicyError(f"{name} {value} is below the minimum {minimum}")
        signals: list[str] = []
        os_version = enforced.os_version
        if policy.os_outdated_below is not None and (
            os_version is None or os_version < policy.os_outdated_below
        ):
            signals.append(SIGNAL_OS_OUTDATED)
        patch = enforced.os_patch_level
        if policy.patch_outdated_months is not None:
            age = (
                None
                if patch is None
                else (now.year * 12 + now.month) - ((patch // 100) * 12 + patch % 100)
            )
            if age is None or age > policy.patch_outdated_months:
                signals.append(SIGNAL_PATCH_OUTDATED)
        return signals


def _level_label(value: int) -> str:
    try:
        return SecurityLevel(value).label
    except ValueError:
        return f"unknown({value})"


def _boot_name(value: int) -> str:
    try:
        return VerifiedBootState(value).name.lower()
    except ValueError:
        return f"unknown({value})"


def _purpose_name(value: int) -> str:
    try:
        return KeyPurpose(value).name
    except ValueError:
        return str(value)


def _facts(
    description: KeyDescription, chain: VerifiedChain, outcome: RevocationOutcome
) -> dict[str, Any]:
    """JSON-serialisable facts for the device record (no uniqueId: it tracks users)."""
    enforced = description.hardware_enforced
    if _level_label(description.attestation_security_level) == "software":
        enforced = description.software_enforced
    app = (
        description.software_enforced.application_id or description.hardware_enforced.application_id
    )
    root = enforced.root_of_trust
    return {
        "attestation_version": description.attestation_version,
        "keymint_version": description.keymint_version,
        "attestation_security_level": _level_label(description.attestation_security_level),
        "keymint_security_level": _level_label(description.keymint_security_level),
        "chain_method": chain.method,
        "chain_quirks": list(chain.quirks),
        "chain_length": 1 + len(chain.certificates),
        "root_subject": chain.anchor.subject.rfc4514_string(),
        "purposes": sorted(enforced.purposes or ()),
        "origin": enforced.origin,
        "verified_boot_state": None if root is None else _boot_name(root.verified_boot_state),
        "device_locked": None if root is None else root.device_locked,
        "verified_boot_key": None if root is None else root.verified_boot_key.hex(),
        "os_version": enforced.os_version,
        "os_patch_level": enforced.os_patch_level,
        "vendor_patch_level": enforced.vendor_patch_level,
        "boot_patch_level": enforced.boot_patch_level,
        "packages": []
        if app is None
        else [{"name": p.name, "version": p.version} for p in app.packages],
        "signing_digests": [] if app is None else [d.hex() for d in app.signature_digests],
        "revocation_checked": outcome.checked,
        "unknown_tags": sorted(
            set(description.hardware_enforced.unknown_tags)
            | set(description.software_enforced.unknown_tags)
        ),
    }
