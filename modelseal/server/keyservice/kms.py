"""A cloud KMS backend, shaped after the AWS KMS API. UNTESTED against the real service.

It speaks to any client object with the method names and request/response shapes of
boto3's ``kms`` client (:class:`KMSClient`): ``create_key``, ``get_public_key``,
``sign``, ``generate_mac``, ``describe_key``, ``disable_key``,
``schedule_key_deletion``. It is tested only against the in-process fake in
``tests/keyservice/fake_kms.py``, never against AWS: the shapes follow AWS's published
API reference, and any difference in the real service's behaviour is not covered
(docs/KEY_SERVICE.md, "Cloud KMS"). Nothing here imports boto3; the operator builds
the client (credentials, region, retries) and passes it in.

* ``issuer`` and ``checkpoint`` keys are ``ECC_NIST_P256`` / ``SIGN_VERIFY`` keys.
  modelseal computes SHA-256 of the message and asks for ``ECDSA_SHA_256`` over that
  digest (``MessageType=DIGEST``), so a message of any size can be signed. KMS answers
  with an ASN.1 DER signature; modelseal's signers return raw ``r || s`` (64 bytes,
  FORMAT §7 and JWS ES256), so the signature is re-encoded, and checked against the
  public key before it is returned (a faulty or substituted answer is refused).
  Ed25519 is not offered.
* ``link`` keys are ``HMAC_256`` / ``GENERATE_VERIFY_MAC`` keys (``HMAC_SHA_256``).
* The public half is always read from KMS and its FORMAT §6 key id compared with the
  row's kid, so a row pointing at another key is refused.
* "Destroying" a key disables it at once and schedules its deletion after the
  shortest window KMS allows (7 days); a disabled key neither signs nor MACs.

KMS errors surface as :class:`KMSError` (``kms_error``) or, for a key that is gone or
disabled, :class:`~modelseal.server.keyservice.base.KeyNotFoundError`; messages carry
the KMS error code, never a request or a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
)

from modelseal.keys import IssuerPublicKey, SignatureAlgorithm, key_to_jwk
from modelseal.server.errors import ServerError
from modelseal.server.keyservice.base import (
    HMAC_SHA256,
    GeneratedKey,
    KeyNotFoundError,
    KeyPurpose,
    KeyUnsupportedError,
    MACKey,
    ManagedSigner,
)

__all__ = ["KMSBackend", "KMSClient", "KMSError", "KMSMACKey", "KMSSigner"]

_T = TypeVar("_T")
_MAC_BYTES = 32
_COORD_BYTES = 32
_DELETION_WINDOW_DAYS = 7
# AWS KMS error codes meaning "this key cannot be used" (gone, disabled, scheduled).
_GONE = frozenset(
    {"NotFoundException", "DisabledException", "KMSInvalidStateException", "InvalidArnException"}
)


class KMSError(ServerError):
    """The KMS refused or failed a request, or returned something unusable."""

    code = "kms_error"


class KMSClient(Protocol):
    """The subset of boto3's ``kms`` client this backend calls (keyword arguments only)."""

    def create_key(self, **kwargs: Any) -> Mapping[str, Any]:
        """``CreateKey``: ``KeySpec``, ``KeyUsage``, ``Description``, ``Tags``."""
        ...

    def get_public_key(self, **kwargs: Any) -> Mapping[str, Any]:
        """``GetPublicKey``: ``KeyId`` -> ``PublicKey`` (DER SPKI), ``KeySpec``, ``KeyUsage``."""
        ...

    def sign(self, **kwargs: Any) -> Mapping[str, Any]:
        """``Sign``: ``KeyId``, ``Message``, ``MessageType``, ``SigningAlgorithm``."""
        ...

    def generate_mac(self, **kwargs: Any) -> Mapping[str, Any]:
        """``GenerateMac``: ``KeyId``, ``Message``, ``MacAlgorithm`` -> ``Mac``."""
        ...

    def describe_key(self, **kwargs: Any) -> Mapping[str, Any]:
        """``DescribeKey``: ``KeyId`` -> ``KeyMetadata``."""
        ...

    def disable_key(self, **kwargs: Any) -> Mapping[str, Any]:
        """``DisableKey``: ``KeyId``."""
        ...

    def schedule_key_deletion(self, **kwargs: Any) -> Mapping[str, Any]:
        """``ScheduleKeyDeletion``: ``KeyId``, ``PendingWindowInDays``."""
        ...


def _error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ``ClientError`` (its ``response``), else the type."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping) and isinstance(error.get("Code"), str):
            return str(error["Code"])[:64]
    return type(exc).__name__


def _call(
    what: str, key: str, request: Callable[[], _T], *, gone: type[ServerError] = KeyNotFoundError
) -> _T:
    """Run one KMS request; map its failure to ``gone`` or KMSError.

    Raises:
        KeyNotFoundError: (``gone``) The key is gone, disabled or pending deletion.
        KMSError: Any other failure (network, permissions, throttling, ...).
    """
    try:
        return request()
    except Exception as exc:  # noqa: BLE001 - the client's errors are not ours to know
        code = _error_code(exc)
        if code in _GONE:
            raise gone(f"KMS key {key} is unusable ({code})") from None
        raise KMSError(f"KMS {what} failed for key {key}: {code}") from None


def _field(response: Mapping[str, Any], name: str, kind: type[_T], what: str) -> _T:
    value = response.get(name)
    if not isinstance(value, kind):
        raise KMSError(f"KMS {what} returned no usable {name}")
    return value


def _metadata(response: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    value = response.get("KeyMetadata")
    if not isinstance(value, Mapping):
        raise KMSError(f"KMS {what} returned no usable KeyMetadata")
    return value


class KMSSigner:
    """An ECDSA P-256 key in KMS; implements :class:`ManagedSigner` (raw r||s signatures)."""

    __slots__ = ("_client", "_key_id", "_public")

    def __init__(self, client: KMSClient, key_id: str) -> None:
        """Read the key's public half and check it is a P-256 signing key.

        Raises:
            KeyNotFoundError: The key is gone or disabled.
            KMSError: The request failed, or the key is not an ECC_NIST_P256 signing key.
        """
        response = _call("GetPublicKey", key_id, lambda: client.get_public_key(KeyId=key_id))
        if response.get("KeySpec") != "ECC_NIST_P256" or response.get("KeyUsage") != (
            "SIGN_VERIFY"
        ):
            raise KMSError(f"KMS key {key_id} is not an ECC_NIST_P256 signing key")
        der = _field(response, "PublicKey", bytes, "GetPublicKey")
        try:
            loaded = serialization.load_der_public_key(der)
        except ValueError:
            raise KMSError(f"KMS key {key_id}: the public key is not DER SPKI") from None
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise KMSError(f"KMS key {key_id}: the public key is not on P-256")
        point = loaded.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._client = client
        self._key_id = key_id
        self._public = IssuerPublicKey(SignatureAlgorithm.ES256, point)

    @property
    def alg(self) -> SignatureAlgorithm:
        """Always ES256."""
        return SignatureAlgorithm.ES256

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public half."""
        return self._public.kid

    @property
    def key_id(self) -> str:
        """The KMS KeyId (or ARN) this signer uses."""
        return self._key_id

    def public_key(self) -> IssuerPublicKey:
        """The verification key, as read from KMS."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(``message``), computed by KMS, as r||s (64 bytes).

        Raises:
            KMSError: The key is gone or disabled, the request failed, or the
                signature does not verify.
        """
        digest = hashlib.sha256(message).digest()
        response = _call(
            "Sign",
            self._key_id,
            lambda: self._client.sign(
                KeyId=self._key_id,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            ),
            gone=KMSError,
        )
        der = _field(response, "Signature", bytes, "Sign")
        try:
            r, s = decode_dss_signature(der)
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self._public.raw)
            point.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except (ValueError, InvalidSignature):
            raise KMSError(
                f"KMS Sign returned an invalid signature for key {self._key_id}"
            ) from None
        return r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")

    def __repr__(self) -> str:
        return f"KMSSigner(key_id={self._key_id!r}, kid={self.kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KMS signers cannot be pickled")


class KMSMACKey:
    """An HMAC_256 key in KMS; implements :class:`MACKey`."""

    __slots__ = ("_client", "_key_id", "_kid")

    def __init__(self, client: KMSClient, key_id: str, kid: str) -> None:
        """Use the KMS key ``key_id`` as the link key ``kid`` (checked to be HMAC_256).

        Raises:
            KeyNotFoundError: The key is gone or disabled.
            KMSError: The request failed, or the key is not an HMAC_256 MAC key.
        """
        response = _call("DescribeKey", key_id, lambda: client.describe_key(KeyId=key_id))
        metadata = _metadata(response, "DescribeKey")
        if metadata.get("KeyState") != "Enabled":
            raise KeyNotFoundError(f"KMS key {key_id} is not enabled")
        if metadata.get("KeySpec") != "HMAC_256" or metadata.get("KeyUsage") != (
            "GENERATE_VERIFY_MAC"
        ):
            raise KMSError(f"KMS key {key_id} is not an HMAC_256 MAC key")
        self._client = client
        self._key_id = key_id
        self._kid = kid

    @property
    def kid(self) -> str:
        """The link key id (random; says nothing about the secret)."""
        return self._kid

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 computed by KMS.

        Raises:
            KMSError: The key is gone or disabled, the request failed, or the MAC has
                the wrong length.
        """
        response = _call(
            "GenerateMac",
            self._key_id,
            lambda: self._client.generate_mac(
                KeyId=self._key_id, Message=message, MacAlgorithm="HMAC_SHA_256"
            ),
            gone=KMSError,
        )
        tag = _field(response, "Mac", bytes, "GenerateMac")
        if len(tag) != _MAC_BYTES:
            raise KMSError("KMS GenerateMac returned a MAC of the wrong length")
        return tag

    def __repr__(self) -> str:
        return f"KMSMACKey(key_id={self._key_id!r}, kid={self._kid})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KMS keys cannot be pickled")


class KMSBackend:
    """Keys in a cloud KMS (AWS-KMS-shaped client); implements :class:`KeyBackend`."""

    def __init__(self, client: KMSClient, *, description: str = "modelseal") -> None:
        """Use ``client`` (e.g. ``boto3.client("kms", region_name=...)``).

        Args:
            client: The KMS client.
            description: Prefix of each created key's description.
        """
        self._client = client
        self._description = description
        self._signers: dict[str, KMSSigner] = {}
        self._macs: dict[str, KMSMACKey] = {}

    @property
    def name(self) -> str:
        """Always ``kms``."""
        return "kms"

    def _create(self, purpose: KeyPurpose, spec: str, usage: str) -> str:
        response = _call(
            "CreateKey",
            "(new)",
            lambda: self._client.create_key(
                KeySpec=spec,
                KeyUsage=usage,
                Description=f"{self._description} {purpose} key",
                Tags=[{"TagKey": "modelseal-purpose", "TagValue": str(purpose)}],
            ),
        )
        metadata = _metadata(response, "CreateKey")
        key_id = metadata.get("KeyId")
        if not isinstance(key_id, str) or not 0 < len(key_id) <= 128:
            raise KMSError("KMS CreateKey returned no usable KeyId")
        return key_id

    def generate(self, purpose: KeyPurpose, alg: str) -> GeneratedKey:
        """Create a key of ``purpose`` in KMS.

        Raises:
            KeyUnsupportedError: Ed25519, or a link key that is not HS256.
            KMSError: KMS refused.
        """
        if purpose is KeyPurpose.LINK:
            if alg != HMAC_SHA256:
                raise KeyUnsupportedError(f"link keys are {HMAC_SHA256}, got {alg!r}")
            key_id = self._create(purpose, "HMAC_256", "GENERATE_VERIFY_MAC")
            kid = secrets.token_hex(16)
            self._macs[kid] = KMSMACKey(self._client, key_id, kid)
            return GeneratedKey(kid=kid, alg=HMAC_SHA256, handle=key_id)
        if alg != "ES256":
            raise KeyUnsupportedError(f"the KMS backend signs with ES256 only, got {alg!r}")
        key_id = self._create(purpose, "ECC_NIST_P256", "SIGN_VERIFY")
        signer = KMSSigner(self._client, key_id)
        self._signers[signer.kid] = signer
        return GeneratedKey(
            kid=signer.kid, alg="ES256", handle=key_id, public_jwk=key_to_jwk(signer.public_key())
        )

    def signer(self, purpose: KeyPurpose, kid: str, handle: str) -> ManagedSigner:
        """Open the KMS key ``handle`` and check that its public half is ``kid``.

        Raises:
            KeyNotFoundError: The key is gone or disabled.
            KMSError: The key is not ``kid``, or KMS failed.
        """
        cached = self._signers.get(kid)
        if cached is not None and cached.key_id == handle:
            return cached
        signer = KMSSigner(self._client, handle)
        if not hmac.compare_digest(signer.kid, kid):
            raise KMSError(f"KMS key {handle} is not {purpose} key {kid}")
        self._signers[kid] = signer
        return signer

    def mac_key(self, kid: str, handle: str) -> MACKey:
        """Open the link key ``kid`` (KMS key ``handle``).

        Raises:
            KeyNotFoundError: The key is gone or disabled.
        """
        cached = self._macs.get(kid)
        if cached is None:
            cached = self._macs[kid] = KMSMACKey(self._client, handle, kid)
        return cached

    def destroy(self, purpose: KeyPurpose, kid: str, handle: str) -> None:
        """Disable the key now and schedule its deletion (7 days); gone already is fine.

        Raises:
            KMSError: KMS refused for another reason than the key being gone.
        """
        self._signers.pop(kid, None)
        self._macs.pop(kid, None)
        for what, request in (
            ("DisableKey", lambda: self._client.disable_key(KeyId=handle)),
            (
                "ScheduleKeyDeletion",
                lambda: self._client.schedule_key_deletion(
                    KeyId=handle, PendingWindowInDays=_DELETION_WINDOW_DAYS
                ),
            ),
        ):
            # Already disabled or scheduled: carry on to the next step.
            with contextlib.suppress(KeyNotFoundError):
                _call(what, handle, request)

    def close(self) -> None:
        """Forget cached key handles (the client is the caller's)."""
        self._signers.clear()
        self._macs.clear()
