"""Keys that live in a PKCS#11 token: device recipient (P-256), ES256 issuer signer, AES KEK.

Every private or secret key here is generated on the token with
``CKA_SENSITIVE=TRUE`` and ``CKA_EXTRACTABLE=FALSE`` and is only ever used
through the token:

* :class:`PKCS11RecipientKey` runs the ECDH of DHKEM(P-256) on the token
  (``CKM_ECDH1_DERIVE``, KDF ``CKD_NULL``). The only value read out is the
  derived DH shared secret, in a session object destroyed at once; the rest of
  HPKE ``OpenBase`` is :mod:`modelseal.keys.hpke_p256`.
* :class:`PKCS11Signer` signs ES256 with ``CKM_ECDSA`` over a SHA-256 digest
  computed here, because many tokens (SoftHSM2 among them) lack
  ``CKM_ECDSA_SHA256``.
* :class:`PKCS11KEK` wraps DEKs with ``CKM_AES_GCM`` through ``C_Encrypt`` and
  ``C_Decrypt``: the DEK is a byte string, not a token object, and tokens such as
  SoftHSM2 do not accept AES-GCM for ``C_WrapKey``. The layout (nonce, then
  ciphertext with a 128-bit tag) is the same as the software :class:`~modelseal.keys.KEK`.

PKCS#11 login state belongs to the application, not to a session: a second
``C_Login`` fails with ``CKR_USER_ALREADY_LOGGED_IN`` whatever PIN it carries,
and closing any logged-in session logs every session out. :class:`Token`
therefore shares one logged-in session per token in a process, counts its
users, and checks each later PIN against the one that logged in. All calls into
a module are serialised with one lock per module (see ``_MODULE_LOCKS``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, NoReturn, Self

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.mechanisms import KDF, GCMParams
from pkcs11.types import DecryptMixin, DeriveMixin, EncryptMixin, Object, Session, SignMixin

from modelseal.errors import BadSignatureError, DEKUnwrapError, KeyFormatError, ModelSealError
from modelseal.keys import hpke_p256
from modelseal.keys.issuer import IssuerPublicKey, SignatureAlgorithm
from modelseal.keys.kek import WRAP_NONCE_BYTES, validate_label
from modelseal.keys.kem import KEM, KID_BYTES, RecipientPublicKey

__all__ = [
    "PKCS11KEK",
    "PKCS11RecipientKey",
    "PKCS11Signer",
    "Token",
    "TokenError",
    "TokenKeyExistsError",
    "TokenKeyNotFoundError",
    "TokenLoginError",
]

# DER of the named-curve OID 1.2.840.10045.3.1.7 (secp256r1), the CKA_EC_PARAMS of P-256 keys.
P256_EC_PARAMS = bytes.fromhex("06082a8648ce3d030107")
# The P-256 base point G, uncompressed. DH(sk, G) is the x-coordinate of the public key.
P256_GENERATOR = bytes.fromhex(
    "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
)
_DER_OCTET_STRING = 0x04
AES_KEY_BITS = 256
GCM_TAG_BITS = 128
GCM_TAG_BYTES = GCM_TAG_BITS // 8

# Failures of the token or the session rather than of the data: reported as TokenError
# so that an operator is not told "DEK unwrap failed" when the token was unplugged.
_TOKEN_FAULTS: tuple[type[pkcs11.PKCS11Error], ...] = (
    pkcs11.DeviceError,
    pkcs11.DeviceMemory,
    pkcs11.DeviceRemoved,
    pkcs11.HostMemory,
    pkcs11.SessionClosed,
    pkcs11.SessionHandleInvalid,
    pkcs11.TokenNotPresent,
    pkcs11.UserNotLoggedIn,
    pkcs11.ObjectHandleInvalid,
    pkcs11.KeyHandleInvalid,
)


class TokenError(ModelSealError):
    """The PKCS#11 module or token failed, or refused an operation."""

    code = "token_error"


class TokenLoginError(TokenError):
    """The user PIN was refused."""

    code = "token_login_failed"


class TokenKeyNotFoundError(TokenError):
    """No key of the requested kind has that label or id on the token."""

    code = "token_key_not_found"


class TokenKeyExistsError(TokenError):
    """A key of the same kind and label already exists on the token."""

    code = "token_key_exists"


@dataclass(eq=False)
class _Login:
    """One logged-in session per (module, token) in this process, shared by Token objects."""

    key: tuple[str, bytes]
    session: Session
    pin_tag: bytes
    lock: threading.RLock
    users: int = 1


# python-pkcs11 calls C_Initialize(NULL), which tells the module that the application
# never calls it from two threads at once; SoftHSM2 then turns its own locking off. So
# every call into one module is made under that module's lock. _LOGINS entries of a
# module are read and changed only under its lock too.
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_MODULE_LOCKS_GUARD = threading.Lock()
_LOGINS: dict[tuple[str, bytes], _Login] = {}
# A per-process key so that the PIN that logged in is kept only as an HMAC tag.
_PIN_TAG_KEY = os.urandom(32)


def _module_lock(module: str) -> threading.RLock:
    with _MODULE_LOCKS_GUARD:
        return _MODULE_LOCKS.setdefault(module, threading.RLock())


def _pin_tag(pin: str) -> bytes:
    return hmac.new(_PIN_TAG_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


class Token:
    """A logged-in PKCS#11 token; a context manager, safe to share between threads.

    All key objects opened through a Token run their operations on its session,
    one call at a time under the module's lock. Several Token objects for the same
    token in one process share a single login (see the module docstring); the last
    one to close logs out.
    """

    __slots__ = ("_closed", "_label", "_login", "_module")

    def __init__(
        self, module_path: str | os.PathLike[str], token_label: str, user_pin: str
    ) -> None:
        """Load the module, find the token by label and log in as the user.

        Raises:
            TokenError: The module does not load, or no single token has ``token_label``.
            TokenLoginError: The PIN is refused (or differs from the PIN this process
                already logged in with).
        """
        self._module = os.path.realpath(module_path)
        self._label = token_label
        self._closed = False
        lock = _module_lock(self._module)
        with lock:
            try:
                library = pkcs11.lib(self._module)
                token = library.get_token(token_label=token_label)
            except pkcs11.NoSuchToken:
                raise TokenError(f"no token labelled {token_label!r} in {self._module}") from None
            except pkcs11.MultipleTokensReturned:
                raise TokenError(f"more than one token labelled {token_label!r}") from None
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"cannot load PKCS#11 module {self._module}: {exc}") from None
            self._login = _acquire_login((self._module, token.serial), token, user_pin, lock)

    @property
    def label(self) -> str:
        """The token label."""
        return self._label

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def close(self) -> None:
        """Release this handle; the last handle of a token logs out and closes the session."""
        with self._login.lock:
            if self._closed:
                return
            self._closed = True
            _release_login(self._login)

    def __enter__(self) -> Token:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Hold the module lock and yield the shared session.

        Every call on the session or on objects found through it must be made
        inside this block.

        Raises:
            TokenError: The Token is closed.
        """
        with self._login.lock:
            if self._closed:
                raise TokenError(f"token {self._label!r} is closed")
            yield self._login.session

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Token(label={self._label!r}, {state})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("tokens cannot be pickled")


def _acquire_login(
    key: tuple[str, bytes], token: pkcs11.Token, user_pin: str, lock: threading.RLock
) -> _Login:
    """Join or create the login of ``key``; the caller holds the module ``lock``."""
    tag = _pin_tag(user_pin)
    login = _LOGINS.get(key)
    if login is not None:
        # C_Login would answer CKR_USER_ALREADY_LOGGED_IN without checking the PIN,
        # so compare it with the PIN that did log in.
        if not hmac.compare_digest(login.pin_tag, tag):
            raise TokenLoginError(f"PIN refused by token {token.label!r}")
        login.users += 1
        return login
    try:
        session = token.open(rw=True, user_pin=user_pin)
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange, pkcs11.PinLocked):
        raise TokenLoginError(f"PIN refused by token {token.label!r}") from None
    except pkcs11.PKCS11Error as exc:
        raise TokenError(f"cannot log in to token {token.label!r}: {exc!r}") from None
    login = _Login(key=key, session=session, pin_tag=tag, lock=lock)
    _LOGINS[key] = login
    return login


def _release_login(login: _Login) -> None:
    """Leave the login; the last user logs out. The caller holds the module lock."""
    login.users -= 1
    if login.users > 0:
        return
    del _LOGINS[login.key]
    try:
        login.session.close()
    except pkcs11.PKCS11Error as exc:
        raise TokenError(f"closing the token session failed: {exc!r}") from None


# --- small typed boundary over python-pkcs11 attribute access ----------------------------------


def _attr_bytes(obj: Object, attribute: Attribute) -> bytes:
    value: Any = obj[attribute]
    if not isinstance(value, bytes):
        raise TokenError(f"token returned a non-bytes {attribute.name}")
    return value


def _attr_bool(obj: Object, attribute: Attribute) -> bool:
    value: Any = obj[attribute]
    if not isinstance(value, bool):
        raise TokenError(f"token returned a non-boolean {attribute.name}")
    return value


def _find(session: Session, attrs: dict[Attribute, Any]) -> list[Object]:
    # Materialise the search before any other call: a session runs one operation at a time.
    return list(session.get_objects(attrs))


def _find_one(session: Session, attrs: dict[Attribute, Any], what: str) -> Object:
    found = _find(session, attrs)
    if not found:
        raise TokenKeyNotFoundError(f"no {what} on the token")
    if len(found) > 1:
        raise TokenError(f"more than one {what} on the token")
    return found[0]


def _ec_point(public: Object) -> bytes:
    """The uncompressed point of an EC public key object, DER-wrapped or raw."""
    raw = _attr_bytes(public, Attribute.EC_POINT)
    point_len = hpke_p256.N_PK
    if len(raw) == point_len + 2 and raw[0] == _DER_OCTET_STRING and raw[1] == point_len:
        raw = raw[2:]
    if len(raw) != point_len or raw[0] != 0x04:
        raise KeyFormatError("token EC public key is not an uncompressed P-256 point")
    return raw


def _check_private(private: Object, what: str) -> None:
    """Refuse key objects that could leave the token."""
    if not _attr_bool(private, Attribute.SENSITIVE) or _attr_bool(private, Attribute.EXTRACTABLE):
        raise TokenError(f"{what} is extractable or not sensitive; refusing to use it")


def _check_p256(obj: Object, what: str) -> None:
    if _attr_bytes(obj, Attribute.EC_PARAMS) != P256_EC_PARAMS:
        raise KeyFormatError(f"{what} is not a P-256 key")


def _kid_id(kid: str) -> bytes:
    try:
        raw = bytes.fromhex(kid)
    except ValueError:
        raw = b""
    if len(raw) != KID_BYTES:
        raise KeyFormatError(f"kid must be {2 * KID_BYTES} hex characters, got {kid!r}")
    return raw


def _ec_search(capability: Attribute, label: str | None, kid: str | None) -> dict[Attribute, Any]:
    if (label is None) == (kid is None):
        raise TokenError("give exactly one of label or kid")
    attrs: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.KEY_TYPE: KeyType.EC,
        capability: True,
    }
    if label is not None:
        attrs[Attribute.LABEL] = validate_label(label)
    if kid is not None:
        attrs[Attribute.ID] = _kid_id(kid)
    return attrs


def _token_fault(exc: pkcs11.PKCS11Error) -> TokenError:
    return TokenError(f"token failure: {type(exc).__name__}")


class _TokenECKey:
    """What the two P-256 key pair classes share: generation, lookup, deletion.

    A pair is a private and a public object with the same CKA_LABEL and CKA_ID;
    generation sets the CKA_ID to the FORMAT §6 key id bytes of the public point.
    Each subclass allows exactly one capability (derive or sign), so one key is
    never used for two purposes.
    """

    __slots__ = ("_label", "_point", "_private", "_public_obj", "_token")

    _CAPABILITY: ClassVar[Attribute]
    _FLAGS: ClassVar[MechanismFlag]
    _WHAT: ClassVar[str]

    def __init__(self, token: Token, label: str, private: Object, public_obj: Object) -> None:
        """Wrap objects already found on ``token``; use :meth:`generate` or :meth:`find`."""
        _check_private(private, f"{self._WHAT} {label!r}")
        _check_p256(private, f"{self._WHAT} {label!r}")
        _check_p256(public_obj, f"public half of {self._WHAT} {label!r}")
        self._token = token
        self._label = label
        self._private = private
        self._public_obj = public_obj
        self._point = _ec_point(public_obj)

    @classmethod
    def generate(cls, token: Token, label: str) -> Self:
        """Generate a P-256 key pair on the token, sensitive and never extractable.

        Raises:
            TokenKeyExistsError: A key of this kind with this label exists.
            TokenError: The token refused to generate the key.
        """
        validate_label(label)
        with token.session() as session:
            try:
                if _find(session, _ec_search(cls._CAPABILITY, label, None)):
                    raise TokenKeyExistsError(
                        f"a {cls._WHAT} labelled {label!r} already exists on the token"
                    )
                public, private = session.generate_keypair(
                    KeyType.EC,
                    store=True,
                    label=label,
                    capabilities=cls._FLAGS,
                    public_template={Attribute.EC_PARAMS: P256_EC_PARAMS},
                    private_template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                    },
                )
                try:
                    key_id = hashlib.sha256(_ec_point(public)).digest()[:KID_BYTES]
                    public[Attribute.ID] = key_id
                    private[Attribute.ID] = key_id
                    return cls(token, label, private, public)
                except BaseException:
                    private.destroy()
                    public.destroy()
                    raise
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"{cls._WHAT} generation failed: {exc!r}") from None

    @classmethod
    def find(cls, token: Token, *, label: str | None = None, kid: str | None = None) -> Self:
        """Find a key by label or by FORMAT §6 kid (its CKA_ID).

        Raises:
            TokenKeyNotFoundError: No such key.
            TokenError: The key is extractable or its public half is missing.
            KeyFormatError: The key is not on P-256.
        """
        attrs = _ec_search(cls._CAPABILITY, label, kid)
        with token.session() as session:
            try:
                private = _find_one(session, attrs, f"{cls._WHAT} with that label or kid")
                found_label = str(private[Attribute.LABEL])
                public = _find_one(
                    session,
                    {
                        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                        Attribute.KEY_TYPE: KeyType.EC,
                        Attribute.LABEL: found_label,
                        Attribute.ID: _attr_bytes(private, Attribute.ID),
                    },
                    f"public half of {cls._WHAT} {found_label!r}",
                )
                return cls(token, found_label, private, public)
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None

    @classmethod
    def find_all(cls, token: Token) -> list[Self]:
        """Every usable key of this kind on the token, sorted by label.

        Keys that are extractable or not sensitive are left out, as :meth:`find`
        would refuse them.
        """
        with token.session() as session:
            try:
                objects = _find(
                    session,
                    {
                        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                        Attribute.KEY_TYPE: KeyType.EC,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        cls._CAPABILITY: True,
                    },
                )
                labels = sorted(str(obj[Attribute.LABEL]) for obj in objects)
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None
        return [cls.find(token, label=label) for label in labels]

    @property
    def label(self) -> str:
        """The token object label (CKA_LABEL)."""
        return self._label

    def destroy(self) -> None:
        """Delete both halves from the token. The object is unusable afterwards."""
        with self._token.session():
            try:
                self._private.destroy()
                self._public_obj.destroy()
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None

    def __reduce__(self) -> NoReturn:
        raise TypeError("token keys cannot be pickled")


class PKCS11RecipientKey(_TokenECKey):
    """A P-256 device key on a token; implements :class:`~modelseal.keys.HPKERecipient`.

    The private key can only derive (ECDH). Obtain one with :meth:`generate`,
    :meth:`find` or :meth:`find_all`.
    """

    __slots__ = ("_deriver", "_public")

    _CAPABILITY = Attribute.DERIVE
    _FLAGS = MechanismFlag.DERIVE
    _WHAT = "device key"

    def __init__(self, token: Token, label: str, private: Object, public_obj: Object) -> None:
        """Wrap objects already found on ``token``; checks that the two halves belong together.

        ``DH(sk, G)`` is the x-coordinate of the public key, so one ECDH with the base
        point shows that the public object read off the token is the private key's.

        Raises:
            TokenError: The key cannot derive, or its halves do not match.
        """
        super().__init__(token, label, private, public_obj)
        if not isinstance(private, DeriveMixin):
            raise TokenError(f"device key {label!r} cannot derive")
        self._deriver: DeriveMixin = private
        self._public = RecipientPublicKey(KEM.P256, self._point)
        if not hmac.compare_digest(
            self._derive(P256_GENERATOR), self._point[1 : 1 + hpke_p256.N_DH]
        ):
            raise TokenError(f"device key {label!r}: public half does not match")

    @property
    def kem(self) -> KEM:
        """Always :attr:`KEM.P256`: the curve hardware keystores hold."""
        return KEM.P256

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public point read off the token."""
        return self._public.kid

    def public_key(self) -> RecipientPublicKey:
        """The public half, in canonical encoding."""
        return self._public

    def _derive(self, peer_point: bytes) -> bytes:
        """ECDH on the token: the x-coordinate of ``sk * peer``, 32 bytes.

        The derived CKK_GENERIC_SECRET is a session object made extractable only so
        that this one value can be read; it is destroyed before returning.
        """
        with self._token.session():
            secret = self._deriver.derive_key(
                KeyType.GENERIC_SECRET,
                hpke_p256.N_DH * 8,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, peer_point),
                template={
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                },
            )
            try:
                return _attr_bytes(secret, Attribute.VALUE)
            finally:
                secret.destroy()

    def hpke_open(self, enc: bytes, ciphertext: bytes, info: bytes) -> bytes:
        """HPKE ``OpenBase`` with empty AAD, the ECDH running on the token.

        Raises:
            DEKUnwrapError: ``enc`` is not a valid P-256 point, or the ciphertext does
                not open with this key.
            TokenError: The token or its session failed.
        """
        hpke_p256.check_public_point(enc)
        try:
            dh = self._derive(enc)
        except _TOKEN_FAULTS as exc:
            raise _token_fault(exc) from None
        except pkcs11.PKCS11Error:
            # The point was checked above; a token that still refuses it (SoftHSM2 says
            # CKR_GENERAL_ERROR for a point off the curve) is an unwrap failure.
            raise DEKUnwrapError("DEK unwrap failed") from None
        return hpke_p256.open_base(dh, enc, self._public.raw, info, ciphertext)

    def __repr__(self) -> str:
        return f"PKCS11RecipientKey(label={self._label!r}, kid={self.kid})"


class PKCS11Signer(_TokenECKey):
    """An ES256 issuer key on a token; implements :class:`~modelseal.keys.Signer`.

    The private key can only sign.
    """

    __slots__ = ("_public", "_signer")

    _CAPABILITY = Attribute.SIGN
    _FLAGS = MechanismFlag.SIGN
    _WHAT = "signing key"

    def __init__(self, token: Token, label: str, private: Object, public_obj: Object) -> None:
        """Wrap objects already found on ``token``; use :meth:`generate` or :meth:`find`."""
        super().__init__(token, label, private, public_obj)
        if not isinstance(private, SignMixin):
            raise TokenError(f"signing key {label!r} cannot sign")
        self._signer: SignMixin = private
        self._public = IssuerPublicKey(SignatureAlgorithm.ES256, self._point)

    @property
    def alg(self) -> SignatureAlgorithm:
        """Always ES256."""
        return SignatureAlgorithm.ES256

    @property
    def kid(self) -> str:
        """The FORMAT §6 key id of the public point read off the token."""
        return self._public.kid

    def public_key(self) -> IssuerPublicKey:
        """The verification key."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(``message``); returns r‖s, 64 bytes.

        Each signature is verified before it is returned, so a faulty token, or a
        public half that does not match the private key, is caught here.

        Raises:
            TokenError: The token failed or produced an invalid signature.
        """
        digest = hashlib.sha256(message).digest()
        with self._token.session():
            try:
                signature = self._signer.sign(digest, mechanism=Mechanism.ECDSA)
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None
        try:
            self._public.verify(message, signature)
        except BadSignatureError:
            raise TokenError(f"signing key {self._label!r} produced an invalid signature") from None
        return signature

    def __repr__(self) -> str:
        return f"PKCS11Signer(label={self._label!r}, kid={self.kid})"


class PKCS11KEK:
    """An AES-256 KEK on a token; implements :class:`~modelseal.keys.KEKWrapper`.

    The label is the token object's CKA_LABEL and is what at-rest packages carry
    in ``rcpt``.
    """

    __slots__ = ("_decrypter", "_encrypter", "_label", "_token")

    def __init__(self, token: Token, label: str, key: Object) -> None:
        """Wrap a key object already found on ``token``; use :meth:`generate` or :meth:`find`.

        Raises:
            TokenError: The key is extractable, not AES-256, or cannot encrypt and decrypt.
        """
        _check_private(key, f"KEK {label!r}")
        if key[Attribute.VALUE_LEN] != AES_KEY_BITS // 8:
            raise TokenError(f"KEK {label!r} is not a 256-bit AES key")
        if not isinstance(key, EncryptMixin) or not isinstance(key, DecryptMixin):
            raise TokenError(f"KEK {label!r} cannot both encrypt and decrypt")
        self._token = token
        self._label = validate_label(label)
        self._encrypter: EncryptMixin = key
        self._decrypter: DecryptMixin = key

    @classmethod
    def generate(cls, token: Token, label: str) -> PKCS11KEK:
        """Generate an AES-256 key on the token, usable only to encrypt and decrypt.

        Raises:
            TokenKeyExistsError: A KEK with this label exists.
            TokenError: The token refused to generate the key.
        """
        with token.session() as session:
            try:
                if _find(session, _kek_search(label)):
                    raise TokenKeyExistsError(f"a KEK labelled {label!r} already exists")
                key = session.generate_key(
                    KeyType.AES,
                    AES_KEY_BITS,
                    label=label,
                    store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                    },
                )
                return cls(token, label, key)
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"KEK generation failed: {exc!r}") from None

    @classmethod
    def find(cls, token: Token, label: str) -> PKCS11KEK:
        """Find a KEK by label.

        Raises:
            TokenKeyNotFoundError: No such KEK.
            TokenError: The key is extractable or not a 256-bit AES key.
        """
        with token.session() as session:
            try:
                key = _find_one(session, _kek_search(label), f"KEK labelled {label!r}")
                return cls(token, label, key)
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None

    @classmethod
    def find_all(cls, token: Token) -> list[PKCS11KEK]:
        """Every sensitive, non-extractable AES key that can encrypt and decrypt, by label."""
        with token.session() as session:
            try:
                objects = _find(
                    session,
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True,
                    },
                )
                labels = sorted(str(obj[Attribute.LABEL]) for obj in objects)
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None
        return [cls.find(token, label) for label in labels]

    @property
    def label(self) -> str:
        """The opaque label written to the header's ``rcpt``."""
        return self._label

    def wrap(self, dek: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """AES-256-GCM on the token under a fresh random 96-bit nonce; return (nonce, wrapped).

        Raises:
            TokenError: The token failed.
        """
        nonce = os.urandom(WRAP_NONCE_BYTES)
        with self._token.session():
            try:
                wrapped = self._encrypter.encrypt(
                    dek,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, aad, GCM_TAG_BITS),
                )
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None
        if not isinstance(wrapped, bytes) or len(wrapped) != len(dek) + GCM_TAG_BYTES:
            raise TokenError("token returned a malformed AES-GCM ciphertext")
        return nonce, wrapped

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """Unwrap a DEK on the token.

        Raises:
            DEKUnwrapError: Wrong KEK, or the nonce, wrapped DEK or header was altered.
            TokenError: The token or its session failed.
        """
        # Tokens accept GCM IVs of other lengths (SoftHSM2 even an empty one): check first.
        if len(nonce) != WRAP_NONCE_BYTES or len(wrapped) < GCM_TAG_BYTES:
            raise DEKUnwrapError("DEK unwrap failed")
        with self._token.session():
            try:
                dek = self._decrypter.decrypt(
                    wrapped,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, aad, GCM_TAG_BITS),
                )
            except _TOKEN_FAULTS as exc:
                raise _token_fault(exc) from None
            except pkcs11.PKCS11Error:
                # SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR, other tokens as
                # CKR_ENCRYPTED_DATA_INVALID: every data error is an unwrap failure.
                raise DEKUnwrapError("DEK unwrap failed") from None
        if not isinstance(dek, bytes):
            raise TokenError("token returned a malformed AES-GCM plaintext")
        return dek

    def destroy(self) -> None:
        """Delete the KEK from the token: everything wrapped under it is lost."""
        with self._token.session():
            try:
                self._encrypter.destroy()
            except pkcs11.PKCS11Error as exc:
                raise _token_fault(exc) from None

    def __repr__(self) -> str:
        return f"PKCS11KEK(label={self._label!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("token keys cannot be pickled")


def _kek_search(label: str) -> dict[Attribute, Any]:
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.LABEL: validate_label(label),
    }
