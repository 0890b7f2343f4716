"""An in-process fake of the AWS KMS operations the KMS backend calls.

It follows AWS's published request/response shapes and error codes for CreateKey,
GetPublicKey, Sign, GenerateMac, DescribeKey, DisableKey and ScheduleKeyDeletion, with
real keys (pyca) underneath. It is a fake, not an emulator: it checks what the backend
relies on (key spec and usage, key state, digest length) and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed


class FakeClientError(Exception):
    """Shaped like botocore's ClientError: ``response["Error"]["Code"]``."""

    def __init__(self, code: str, operation: str) -> None:
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation")
        self.response = {"Error": {"Code": code, "Message": "fake"}}


@dataclass
class FakeKey:
    key_id: str
    spec: str
    usage: str
    state: str = "Enabled"
    private: ec.EllipticCurvePrivateKey | None = None
    secret: bytes = b""
    calls: list[str] = field(default_factory=list)


class FakeKMS:
    """The KMS client the tests hand to :class:`KMSBackend`."""

    def __init__(self) -> None:
        self.keys: dict[str, FakeKey] = {}
        self.fail_next: str | None = None  # an error code the next call raises
        self.tamper_signatures = False

    def _key(self, key_id: str, operation: str) -> FakeKey:
        if self.fail_next is not None:
            code, self.fail_next = self.fail_next, None
            raise FakeClientError(code, operation)
        key = self.keys.get(key_id)
        if key is None:
            raise FakeClientError("NotFoundException", operation)
        key.calls.append(operation)
        return key

    def _usable(self, key: FakeKey, operation: str) -> None:
        if key.state == "Disabled":
            raise FakeClientError("DisabledException", operation)
        if key.state != "Enabled":
            raise FakeClientError("KMSInvalidStateException", operation)

    def create_key(self, **kwargs: Any) -> dict[str, Any]:
        spec, usage = kwargs["KeySpec"], kwargs["KeyUsage"]
        key = FakeKey(str(uuid.uuid4()), spec, usage)
        if (spec, usage) == ("ECC_NIST_P256", "SIGN_VERIFY"):
            key.private = ec.generate_private_key(ec.SECP256R1())
        elif (spec, usage) == ("HMAC_256", "GENERATE_VERIFY_MAC"):
            key.secret = secrets.token_bytes(32)
        else:
            raise FakeClientError("ValidationException", "CreateKey")
        self.keys[key.key_id] = key
        return {"KeyMetadata": self._metadata(key)}

    @staticmethod
    def _metadata(key: FakeKey) -> dict[str, Any]:
        return {
            "KeyId": key.key_id,
            "Arn": f"arn:aws:kms:eu-west-1:111122223333:key/{key.key_id}",
            "KeySpec": key.spec,
            "KeyUsage": key.usage,
            "KeyState": key.state,
            "Enabled": key.state == "Enabled",
        }

    def get_public_key(self, **kwargs: Any) -> dict[str, Any]:
        key = self._key(kwargs["KeyId"], "GetPublicKey")
        if key.private is None:
            raise FakeClientError("UnsupportedOperationException", "GetPublicKey")
        der = key.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "KeyId": key.key_id,
            "PublicKey": der,
            "KeySpec": key.spec,
            "KeyUsage": key.usage,
            "SigningAlgorithms": ["ECDSA_SHA_256"],
        }

    def sign(self, **kwargs: Any) -> dict[str, Any]:
        key = self._key(kwargs["KeyId"], "Sign")
        self._usable(key, "Sign")
        if key.private is None or kwargs["SigningAlgorithm"] != "ECDSA_SHA_256":
            raise FakeClientError("InvalidKeyUsageException", "Sign")
        message = kwargs["Message"]
        if kwargs.get("MessageType") == "DIGEST":
            if len(message) != 32:
                raise FakeClientError("ValidationException", "Sign")
            digest = message
        else:
            digest = hashlib.sha256(message).digest()
        if self.tamper_signatures:
            digest = hashlib.sha256(b"something else").digest()
        signature = key.private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return {"KeyId": key.key_id, "Signature": signature, "SigningAlgorithm": "ECDSA_SHA_256"}

    def generate_mac(self, **kwargs: Any) -> dict[str, Any]:
        key = self._key(kwargs["KeyId"], "GenerateMac")
        self._usable(key, "GenerateMac")
        if not key.secret or kwargs["MacAlgorithm"] != "HMAC_SHA_256":
            raise FakeClientError("InvalidKeyUsageException", "GenerateMac")
        mac = hmac.new(key.secret, kwargs["Message"], hashlib.sha256).digest()
        return {"KeyId": key.key_id, "Mac": mac, "MacAlgorithm": "HMAC_SHA_256"}

    def describe_key(self, **kwargs: Any) -> dict[str, Any]:
        return {"KeyMetadata": self._metadata(self._key(kwargs["KeyId"], "DescribeKey"))}

    def disable_key(self, **kwargs: Any) -> dict[str, Any]:
        key = self._key(kwargs["KeyId"], "DisableKey")
        if key.state == "PendingDeletion":
            raise FakeClientError("KMSInvalidStateException", "DisableKey")
        key.state = "Disabled"
        return {}

    def schedule_key_deletion(self, **kwargs: Any) -> dict[str, Any]:
        key = self._key(kwargs["KeyId"], "ScheduleKeyDeletion")
        if not 7 <= kwargs["PendingWindowInDays"] <= 30:
            raise FakeClientError("ValidationException", "ScheduleKeyDeletion")
        if key.state == "PendingDeletion":
            raise FakeClientError("KMSInvalidStateException", "ScheduleKeyDeletion")
        key.state = "PendingDeletion"
        return {"KeyId": key.key_id, "KeyState": key.state}
