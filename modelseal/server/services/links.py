"""Download link tokens: an HMAC-SHA256 MAC over a small JSON payload.

Format::

    token   = b64u(payload) "." b64u(HMAC-SHA256(link_key, "modelseal/1 link" || payload))
    payload = {"v":1,"lid":...,"jti":...,"uid":...,"did":...,"exp":...}  (compact JSON)

``uid`` is the user's pseudonymous subject, ``did`` the device id, ``exp`` Unix
seconds. The MAC is checked (in constant time) before the payload is parsed. Tokens
are never stored: the server keeps the link row (``lid``) and can re-derive the
token, and link tokens never appear in logs.

The link key comes from the key service (:mod:`modelseal.server.keyservice`): the
configured ``link_signing_key``, or an HMAC key on a PKCS#11 token. The active key
mints; a token verifies under the active key or a key still retiring, so a rotation
does not break links already handed out. Tokens carry no key id: with at most a few
live keys, trying each costs one HMAC per key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelseal.server.errors import LinkInvalidError
from modelseal.server.keyservice.base import MACKey
from modelseal.server.keyservice.local import StaticMACKey

__all__ = ["LINK_MAC_LABEL", "LinkPayload", "LinkSigner"]

LINK_MAC_LABEL = b"modelseal/1 link"
LINK_VERSION = 1
MAX_TOKEN_CHARS = 1024
_MAC_BYTES = 32
_TOKEN = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_FIELDS = ("v", "lid", "jti", "uid", "did", "exp")


@dataclass(frozen=True, slots=True)
class LinkPayload:
    """What a link says: which package, for whom, until when."""

    lid: str
    jti: str
    uid: str
    did: str
    exp: int

    def encode(self) -> bytes:
        """Compact JSON, members in a fixed order (so a token is re-derivable)."""
        document = {
            "v": LINK_VERSION,
            "lid": self.lid,
            "jti": self.jti,
            "uid": self.uid,
            "did": self.did,
            "exp": self.exp,
        }
        return json.dumps(document, separators=(",", ":")).encode()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise LinkInvalidError("link is malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LinkInvalidError("link is malformed") from None
    if _b64u(raw) != text:
        raise LinkInvalidError("link is malformed")
    return raw


LinkKeys = Callable[[], tuple[MACKey, Sequence[MACKey]]]


class LinkSigner:
    """Mints and verifies link tokens under the link keys. The keys never leave it."""

    __slots__ = ("_keys",)

    def __init__(self, key: bytes | LinkKeys) -> None:
        """Use ``key`` (>= 32 bytes) as the one HMAC-SHA256 key, or ask ``key()`` each time.

        Args:
            key: Raw key bytes, or a callable returning the minting key and every key
                that still verifies (:meth:`KeyService.link_keys`).

        Raises:
            ValueError: Raw key bytes shorter than 32.
        """
        if isinstance(key, bytes | bytearray):
            static = StaticMACKey(bytes(key))
            self._keys: LinkKeys = lambda: (static, (static,))
        else:
            self._keys = key

    def mint(self, payload: LinkPayload) -> str:
        """The token for ``payload``, under the active link key."""
        minting, _ = self._keys()
        body = payload.encode()
        return f"{_b64u(body)}.{_b64u(minting.mac(LINK_MAC_LABEL + body))}"

    def verify(self, token: str) -> LinkPayload:
        """Check the MAC, then parse the payload.

        Raises:
            LinkInvalidError: Malformed, or the MAC does not verify. The message
                never says which.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise LinkInvalidError("link is malformed")
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise LinkInvalidError("link is malformed")
        body, mac = _unb64u(match.group(1)), _unb64u(match.group(2))
        if len(mac) != _MAC_BYTES:
            raise LinkInvalidError("link does not verify")
        _, verifying = self._keys()
        message = LINK_MAC_LABEL + body
        # Every live key is tried (no early exit), so timing says nothing about which.
        matched = False
        for candidate in verifying:
            matched |= hmac.compare_digest(mac, candidate.mac(message))
        if not matched:
            raise LinkInvalidError("link does not verify")
        # Only authenticated bytes are parsed from here on; a failure is our own bug
        # or a key compromise, and still refused rather than trusted.
        try:
            document = json.loads(body)
        except ValueError:
            raise LinkInvalidError("link is malformed") from None
        if not isinstance(document, dict) or sorted(document) != sorted(_FIELDS):
            raise LinkInvalidError("link is malformed")
        if document["v"] != LINK_VERSION:
            raise LinkInvalidError("link version is not supported")
        lid, jti, uid, did, exp = (document[name] for name in _FIELDS[1:])
        if not all(isinstance(s, str) for s in (lid, jti, uid, did)) or type(exp) is not int:
            raise LinkInvalidError("link is malformed")
        return LinkPayload(lid=lid, jti=jti, uid=uid, did=did, exp=exp)
