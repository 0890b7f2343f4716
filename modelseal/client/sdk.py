"""DeviceClient: enrol a device, fetch its models, keep them sealed at rest, load them.

The facade over the rest of :mod:`modelseal.client`: enrolment and issuer pinning
(here), the fetch state machine (:mod:`.fetch`), the local store (:mod:`.store`)
and in-memory loading (:mod:`.runtime`). ``docs/CLIENT.md`` is the normative
description of what a device client does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from modelseal import __version__
from modelseal.attestation.base import Attester
from modelseal.client.config import (
    CREDENTIALS_KEK_NAME,
    DEVICE_KEY_NAME,
    MODELS_KEK_NAME,
    ClientConfig,
    Enrollment,
    KeystoreSpec,
    load_config,
    save_config,
)
from modelseal.client.datadir import (
    DataDir,
    check_model_id,
    read_json_object,
    read_private_bytes,
    write_json_object,
    write_private_bytes,
)
from modelseal.client.download import (
    Downloader,
    PollPolicy,
    ProgressCallback,
)
from modelseal.client.errors import (
    AlreadyEnrolledError,
    AlreadyInitializedError,
    ClientStateError,
    IssuerKeyRevokedError,
    NotEnrolledError,
    PackageMismatchError,
    ProtocolError,
    ServerRefusedError,
    TLSPinMismatchError,
)
from modelseal.client.examples import (
    DEFAULT_MAX_REQUEST_BYTES,
    ExamplesUpload,
    batches,
    check_examples,
)
from modelseal.client.fetch import Fetch, FetchResult, acknowledge
from modelseal.client.keystore import (
    DeviceKey,
    FileKeystore,
    KeyNotFoundError,
    Keystore,
    SecretSource,
)
from modelseal.client.memory import wipe
from modelseal.client.outbox import Event, EventType, Outbox
from modelseal.client.store import ISSUER_KID_CLAIM, ModelStore, StoredModel
from modelseal.client.transport import Transport, TransportSettings, check_server_url
from modelseal.envelope import (
    AtRest,
    Header,
    OpenPolicy,
    open_bytes,
    open_stream,
    seal_bytes,
)
from modelseal.errors import UsageError
from modelseal.keys import (
    KEM,
    IssuerKeySet,
    KEKWrapper,
    RecipientPublicKey,
    key_to_jwk,
    parse_jwks,
)

if TYPE_CHECKING:  # runtime imports onnxruntime, which load() imports on first use
    from modelseal.client.runtime import LoadedModel

__all__ = [
    "JWKS_PATH",
    "DeviceClient",
    "EnrollResult",
    "FetchResult",
    "PinRefreshResult",
]

JWKS_PATH = "/.well-known/modelseal/issuer-jwks.json"
CREDENTIAL_CTYPE = "application/vnd.modelseal.api-token"
DEFAULT_APP_VERSION = f"modelseal-python/{__version__}"
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_TOKEN_CHARS = 4096

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """The outcome of :meth:`DeviceClient.enroll`.

    Attributes:
        enrollment: What was recorded in ``client.json``.
        issuer_kids: The issuer keys pinned (trust on first use).
        server_pin: The ``sha256/...`` pin of the server's TLS key (https only), for
            pinning it on other devices.
    """

    enrollment: Enrollment
    issuer_kids: tuple[str, ...]
    server_pin: str | None


@dataclass(frozen=True, slots=True)
class PinRefreshResult:
    """Issuer kids pinned before and after :meth:`DeviceClient.pin_refresh`."""

    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def added(self) -> tuple[str, ...]:
        """Kids newly pinned."""
        return tuple(kid for kid in self.after if kid not in self.before)

    @property
    def removed(self) -> tuple[str, ...]:
        """Kids no longer pinned."""
        return tuple(kid for kid in self.before if kid not in self.after)


class DeviceClient:
    """The device side of modelseal, over one data directory and one keystore.

    Example::

        keystore = DeviceClient.file_keystore(data_dir, Passphrase(passphrase))
        client = DeviceClient.init(data_dir, keystore, KeystoreSpec("file", "passphrase"))
        client.enroll("https://models.example", token, pins=("sha256/...",))
        client.fetch("digits")
        model = client.load("digits")
        logits = model.run(images)["logits"]
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        keystore: Keystore,
        *,
        clock: Clock = time.time,
        poll: PollPolicy | None = None,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Open an initialised data directory.

        Args:
            root: The data directory.
            keystore: The keystore its ``client.json`` names, already unlocked.
            clock: Unix time source for expiry checks (tests move it).
            poll: Job polling back-off.
            timeout_seconds: Per-request network timeout.
            sleep: Used between polls and retries.

        Raises:
            NotInitializedError: No client in ``root``.
            ClientStateError: The directory or ``client.json`` is unsafe or malformed.
        """
        self._dir = DataDir(root)
        self._dir.check()
        self._config = load_config(self._dir.config)
        self._keystore = keystore
        self._clock = clock
        self._poll = poll or PollPolicy()
        self._timeout = timeout_seconds
        self._sleep = sleep
        self._store = ModelStore(self._dir)
        self._outbox = Outbox(self._dir, clock)
        self._keks: dict[str, KEKWrapper] = {}
        self._events_unsupported = False

    @classmethod
    def init(
        cls, root: str | os.PathLike[str], keystore: Keystore, spec: KeystoreSpec, **options: Any
    ) -> DeviceClient:
        """Create a client in ``root``: the directory tree, ``client.json`` and the KEKs.

        Raises:
            AlreadyInitializedError: ``root`` already holds a client.
            KeyExistsError: The keystore already holds this client's KEKs.
        """
        datadir = DataDir(root)
        datadir.create()
        with datadir.locked():
            if datadir.config.exists():
                raise AlreadyInitializedError(f"{datadir.root} already holds a client")
            for name in (MODELS_KEK_NAME, CREDENTIALS_KEK_NAME):
                keystore.create_kek(name)
            save_config(datadir.config, ClientConfig(keystore=spec, created_at=int(time.time())))
        return cls(root, keystore, **options)

    @staticmethod
    def file_keystore(root: str | os.PathLike[str], secret_source: SecretSource) -> FileKeystore:
        """The FileKeystore of data directory ``root`` (``keys/``), creating ``root`` private.

        Raises:
            ClientStateError: ``root`` exists but is not a private directory of this user.
        """
        datadir = DataDir(root)
        datadir.create()
        return FileKeystore(datadir.keys, secret_source)

    # --- state ----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The data directory."""
        return self._dir.root

    @property
    def config(self) -> ClientConfig:
        """The client's settings."""
        return self._config

    @property
    def enrollment(self) -> Enrollment:
        """The enrolment.

        Raises:
            NotEnrolledError: The device is not enrolled.
        """
        if self._config.enrollment is None:
            raise NotEnrolledError("this device is not enrolled; run `modelseal device enroll`")
        return self._config.enrollment

    def pending_acks(self) -> list[str]:
        """Acknowledgements not yet delivered."""
        return self._outbox.acks()

    def pending_events(self) -> list[Event]:
        """Security events not yet delivered."""
        return self._outbox.events()

    def pinned_issuers(self) -> IssuerKeySet:
        """The pinned issuer JWK Set.

        Raises:
            ClientStateError: The pin file is missing or malformed.
        """
        document = read_json_object(self._dir.pinned_jwks)
        if document is None or set(document) != {"v", "server", "pinned_at", "jwks"}:
            raise ClientStateError(
                "no valid pinned issuer keys; run `modelseal device pin-refresh`"
            )
        jwks = document["jwks"]
        if not isinstance(jwks, dict):
            raise ClientStateError("issuer-jwks.json: jwks must be a JWK Set")
        return parse_jwks(jwks)

    def revoked_issuers(self) -> frozenset[str]:
        """Issuer kids the server listed as revoked (``revoked`` of the pinned JWK Set).

        Raises:
            ClientStateError: The pin file is missing or malformed.
        """
        document = read_json_object(self._dir.pinned_jwks)
        jwks = document.get("jwks") if document is not None else None
        if not isinstance(jwks, dict):
            raise ClientStateError(
                "no valid pinned issuer keys; run `modelseal device pin-refresh`"
            )
        revoked = jwks.get("revoked", [])
        if not isinstance(revoked, list) or not all(isinstance(k, str) for k in revoked):
            raise ClientStateError("issuer-jwks.json: revoked must be a list of key ids")
        return frozenset(revoked)

    def _check_issuer_not_revoked(self, model_id: str, header: Header) -> None:
        """Refuse a stored model whose signing issuer key was revoked since it was fetched.

        At-rest copies made before the ``ikid`` claim existed carry no kid and pass.
        """
        claims = header.claims
        kid = claims.extra.get(ISSUER_KID_CLAIM) if claims is not None else None
        if isinstance(kid, str) and kid in self.revoked_issuers():
            raise IssuerKeyRevokedError(
                f"model {model_id!r} was signed by issuer key {kid}, which is revoked; "
                "fetch it again"
            )

    # --- keys and credentials ---------------------------------------------------------------

    def _kek(self, name: str) -> KEKWrapper:
        if name not in self._keks:
            self._keks[name] = self._keystore.kek(name)
        return self._keks[name]

    def _device_key(self) -> DeviceKey:
        key = self._keystore.device_key(DEVICE_KEY_NAME)
        if key.kid != self.enrollment.kid:
            raise ClientStateError("the keystore's device key is not the enrolled one")
        return key

    def _save_token(self, token: str) -> None:
        sealed = seal_bytes(
            token.encode("utf-8"), AtRest(self._kek(CREDENTIALS_KEK_NAME)), ctype=CREDENTIAL_CTYPE
        )
        write_private_bytes(self._dir.credentials, sealed)

    def _token(self) -> str:
        sealed = read_private_bytes(self._dir.credentials, max_bytes=64 * 1024)
        if sealed is None:
            raise ClientStateError("no stored API token; enrol the device again")
        opened = open_bytes(sealed, self._kek(CREDENTIALS_KEK_NAME), OpenPolicy())
        if opened.header.ctype != CREDENTIAL_CTYPE:
            raise ClientStateError("credentials.mseal does not hold an API token")
        return opened.plaintext.decode("utf-8")

    # --- transport ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transport(self, settings: TransportSettings, token: str) -> Iterator[Transport]:
        """A transport whose TLS pin failures are recorded in the outbox before they raise."""
        try:
            with Transport(settings, token=token) as transport:
                yield transport
        except TLSPinMismatchError as exc:
            self._outbox.record(
                EventType.TLS_PIN_MISMATCH, host=exc.host, observed_pin=exc.observed_pin
            )
            raise

    def _settings(self, enrollment: Enrollment) -> TransportSettings:
        return TransportSettings(
            server=enrollment.server,
            ca_file=None if enrollment.ca_file is None else Path(enrollment.ca_file),
            pins=enrollment.pins,
            timeout_seconds=self._timeout,
            connect_timeout_seconds=min(self._timeout, 10.0),
        )

    def _flush_outbox(self, transport: Transport) -> None:
        """Deliver queued acknowledgements and events over a connection that passed the checks."""
        for jti in self._outbox.acks():
            # Best effort: a server that refuses one acknowledgement now must not stop
            # the device from fetching; the acknowledgement stays queued.
            with contextlib.suppress(ServerRefusedError):
                acknowledge(transport, self._outbox, jti)
        events = self._outbox.events()
        if not events or self._events_unsupported:
            return
        body = {
            "device_id": self.enrollment.device_id,
            "events": [event.to_json() for event in events],
        }
        try:
            transport.request_json(
                "POST", "/v1/events", json_body=body, expect=(200, 201, 202, 204)
            )
        except ServerRefusedError as exc:
            # 404/405: this server has no events endpoint yet; keep them for a later one.
            self._events_unsupported = exc.status in (404, 405)
            return
        self._outbox.remove_events(events)

    # --- enrolment ------------------------------------------------------------------------

    def enroll(
        self,
        server: str,
        token: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        pins: Sequence[str] = (),
        kem: KEM = KEM.X25519,
        device_id: str | None = None,
        app_version: str = DEFAULT_APP_VERSION,
        attester: Attester | None = None,
    ) -> EnrollResult:
        """Generate the device key, register it, and pin the server's issuer keys.

        With ``attester``, the registration carries an attestation over a fresh
        server challenge and the device key (``docs/ATTESTATION.md``).

        The issuer JWK Set is fetched over the verified (and, with ``pins``, pinned)
        connection and pinned as it is: trust on first use. It changes only through
        :meth:`pin_refresh`.

        Raises:
            AlreadyEnrolledError: This data directory is enrolled already.
            UsageError: Bad URL, pin, device id or token; or a device key of another
                KEM exists.
            ServerRefusedError: E.g. ``unauthenticated``, ``key_already_registered``.
            TransportError, TLSError, TLSPinMismatchError: The server is unreachable
                or not trusted.
        """
        if self._config.enrollment is not None:
            raise AlreadyEnrolledError(
                f"already enrolled with {self._config.enrollment.server} as device "
                f"{self._config.enrollment.device_id}"
            )
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable() or " " in token:
            raise UsageError("the API token must be 1-4096 printable characters without spaces")
        device_id = device_id or f"dev-{secrets.token_hex(8)}"
        if not DEVICE_ID_PATTERN.fullmatch(device_id):
            raise UsageError(f"device id must match {DEVICE_ID_PATTERN.pattern}, got {device_id!r}")
        ca = None if ca_file is None else str(Path(ca_file).resolve())
        settings = TransportSettings(
            server=check_server_url(server),
            ca_file=None if ca is None else Path(ca),
            pins=tuple(pins),
            timeout_seconds=self._timeout,
        )
        with self._dir.locked(), self._transport(settings, token) as transport:
            jwks = transport.request_json("GET", JWKS_PATH)
            if jwks is None:
                raise ProtocolError("the server sent an empty issuer JWK Set")
            issuers = parse_jwks(jwks)
            key = self._device_key_for(kem)
            public = key.public_key()
            body: dict[str, object] = {
                "device_id": device_id,
                "app_version": app_version,
                "public_key": key_to_jwk(public),
            }
            if attester is not None:
                body["attestation"] = _attestation(transport, attester, public)
            registration = transport.request_json(
                "POST", "/v1/devices", json_body=body, expect=(200, 201)
            )
            if (
                registration is None
                or registration.get("device_id") != device_id
                or registration.get("kid") != public.kid
            ):
                raise ProtocolError("the server registered another device or key than sent")
            enrollment = Enrollment(
                server=settings.server,
                device_id=device_id,
                kem=public.kem,
                kid=public.kid,
                ca_file=ca,
                pins=tuple(pins),
                app_version=app_version,
                enrolled_at=int(self._clock()),
            )
            self._pin(settings.server, jwks)
            self._save_token(token)
            self._config = replace(self._config, enrollment=enrollment)
            save_config(self._dir.config, self._config)
            return EnrollResult(enrollment, tuple(issuers), transport.observed_pin)

    def _device_key_for(self, kem: KEM) -> DeviceKey:
        try:
            key = self._keystore.device_key(DEVICE_KEY_NAME)
        except KeyNotFoundError:
            return self._keystore.create_device_key(DEVICE_KEY_NAME, kem)
        # Left by an enrolment that failed after the key was made: reuse it.
        if key.kem != kem:
            raise UsageError(
                f"the keystore already holds a {key.kem.label} device key; enrol with that KEM"
            )
        return key

    def _pin(self, server: str, jwks: dict[str, Any]) -> None:
        write_json_object(
            self._dir.pinned_jwks,
            {"v": 1, "server": server, "pinned_at": int(self._clock()), "jwks": jwks},
        )

    def pin_refresh(self) -> PinRefreshResult:
        """Replace the pinned issuer keys with the server's current JWK Set.

        Raises:
            NotEnrolledError, ServerRefusedError, TransportError, TLSPinMismatchError.
        """
        enrollment = self.enrollment
        with (
            self._dir.locked(),
            self._transport(self._settings(enrollment), self._token()) as transport,
        ):
            self._flush_outbox(transport)
            jwks = transport.request_json("GET", JWKS_PATH)
            if jwks is None:
                raise ProtocolError("the server sent an empty issuer JWK Set")
            after = tuple(parse_jwks(jwks))
            try:
                before = tuple(self.pinned_issuers())
            except ClientStateError:
                before = ()
            self._pin(enrollment.server, jwks)
        return PinRefreshResult(before, after)

    # --- fetch ----------------------------------------------------------------------------

    def fetch(self, model_id: str, *, progress: ProgressCallback | None = None) -> FetchResult:
        """Fetch ``model_id`` (again): the state machine of :mod:`modelseal.client.fetch`.

        Raises:
            ServerRefusedError: E.g. ``device_revoked``, ``unknown_model``.
            JobFailedError, JobTimeoutError: Generation failed or took too long.
            VerificationError, ClaimsError, FormatError: The package was refused;
                nothing of it is kept.
            TransportError, TLSError, TLSPinMismatchError: The network failed or the
                server is not trusted.
            ClientBusyError: Another process is using the data directory.
        """
        check_model_id(model_id)
        enrollment = self.enrollment
        with (
            self._dir.locked(),
            self._transport(self._settings(enrollment), self._token()) as transport,
        ):
            self._flush_outbox(transport)
            downloader = Downloader(
                transport,
                self._store,
                enrollment.device_id,
                poll=self._poll,
                max_package_bytes=self._config.max_package_bytes,
                sleep=self._sleep,
            )
            fetch = Fetch(
                transport,
                downloader,
                self._store,
                self._outbox,
                device_id=enrollment.device_id,
                device_key=self._device_key,
                models_kek=lambda: self._kek(MODELS_KEK_NAME),
                issuers=self.pinned_issuers,
                clock=self._clock,
            )
            return fetch.run(model_id, progress)

    # --- personalisation ------------------------------------------------------------------

    def upload_examples(
        self,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> list[ExamplesUpload]:
        """Upload the user's examples for personalisation, in as many requests as needed.

        ``x`` is ``[n, 64]`` intensities in ``[0, 1]`` and ``y`` is ``n`` labels
        ``0..9``; they are checked here first (:mod:`modelseal.client.examples`). The
        server keeps them encrypted, for its retention period, and personalises the
        models fetched afterwards on them. On an error, the uploads made before it
        stay stored; :meth:`delete_examples` removes them all.

        Raises:
            UsageError: The examples have the wrong shape, type or range.
            ServerRefusedError: E.g. ``examples_invalid``, ``examples_limit_exceeded``,
                ``body_too_large``.
            NotEnrolledError, TransportError, TLSError, TLSPinMismatchError.
        """
        xs, ys = check_examples(x, y)
        enrollment = self.enrollment
        uploads: list[ExamplesUpload] = []
        with self._transport(self._settings(enrollment), self._token()) as transport:
            for body in batches(xs, ys, max_request_bytes=max_request_bytes):
                reply = transport.request_json(
                    "POST", "/v1/examples", json_body=body, expect=(201,)
                )
                if reply is None:
                    raise ProtocolError("the server sent an empty reply to an upload")
                try:
                    uploads.append(
                        ExamplesUpload(
                            str(reply["record_id"]),
                            int(reply["count"]),
                            int(reply["expires_at"]),
                            int(reply["total"]),
                        )
                    )
                except (KeyError, TypeError, ValueError):
                    raise ProtocolError("the server's upload reply is malformed") from None
        return uploads

    def delete_examples(self) -> int:
        """Delete every example of this user on the server; returns how many uploads went.

        Raises:
            NotEnrolledError, ServerRefusedError, TransportError, TLSError.
        """
        enrollment = self.enrollment
        with self._transport(self._settings(enrollment), self._token()) as transport:
            reply = transport.request_json("DELETE", "/v1/examples")
        if reply is None or not isinstance(reply.get("deleted"), int):
            raise ProtocolError("the server's delete reply is malformed")
        return int(reply["deleted"])

    # --- local models ---------------------------------------------------------------------

    def models(self) -> list[StoredModel]:
        """Every model stored on this device, with its authenticated claims."""
        stored = self._store.stored(self._kek(MODELS_KEK_NAME))
        for model in stored:
            self._check_mid(model.model_id, model.header)
        return stored

    @staticmethod
    def _check_mid(model_id: str, header: Header) -> None:
        # The file name is not authenticated; the claims are. A renamed file is refused.
        if header.claims is None or header.claims.mid != model_id:
            raise PackageMismatchError(f"the file stored as {model_id!r} holds another model")

    def load(
        self,
        model_id: str,
        *,
        options: Any | None = None,
        providers: Sequence[str] | None = None,
    ) -> LoadedModel:
        """Load a stored model into ONNX Runtime, in memory; the licence is judged first.

        Raises:
            ModelNotStoredError: No such model on this device.
            LicenceExpiredError: The licence has ended; :meth:`fetch` renews it.
            PackageMismatchError: The file holds another model (it was renamed).
            IssuerKeyRevokedError: The issuer key that signed it has been revoked.
            ModelUnsupportedError: Not an ONNX model or bundle.
        """
        from modelseal.client.runtime import load_at_rest

        path = self._store.path(model_id)
        kek = self._kek(MODELS_KEK_NAME)
        self._check_issuer_not_revoked(model_id, self._store.header(model_id, kek))
        return load_at_rest(
            path,
            kek,
            now=int(self._clock()),
            model_id=model_id,
            options=options,
            providers=providers,
        )

    @contextlib.contextmanager
    def open_plaintext(self, model_id: str) -> Iterator[tuple[Header, memoryview]]:
        """Decrypt a stored model into memory for another runtime; wiped when the block ends.

        Raises:
            As for :meth:`load`, except ModelUnsupportedError.
        """
        path = self._store.path(model_id)
        policy = OpenPolicy(now=int(self._clock()))
        with open(path, "rb", buffering=0) as src:
            package = open_stream(src, self._kek(MODELS_KEK_NAME), policy)
            self._check_mid(model_id, package.header)
            self._check_issuer_not_revoked(model_id, package.header)
            plaintext = bytearray(package.length)
            try:
                package.readinto(plaintext)
                with memoryview(plaintext) as view:
                    yield package.header, view.toreadonly()
            finally:
                wipe(plaintext)

    def forget(self, model_id: str) -> None:
        """Delete a stored model (and any download of it in progress).

        Raises:
            ModelNotStoredError: Nothing of it is stored.
        """
        check_model_id(model_id)
        with self._dir.locked():
            self._store.delete(model_id)

    def forget_all(self) -> list[str]:
        """Delete every stored model and download in progress; returns their ids."""
        with self._dir.locked():
            return self._store.delete_all()


def _attestation(
    transport: Transport, attester: Attester, public: RecipientPublicKey
) -> dict[str, str]:
    """Fetch a fresh enrollment challenge and return the ``attestation`` member."""
    document = transport.request_json(
        "POST", "/v1/attestation/challenge", json_body={"purpose": "enroll"}, expect=(201,)
    )
    text = document.get("challenge") if document is not None else None
    challenge_id = document.get("challenge_id") if document is not None else None
    if not isinstance(text, str) or not isinstance(challenge_id, str) or len(text) != 43:
        raise ProtocolError("the server sent a malformed attestation challenge")
    try:
        challenge = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise ProtocolError("the server sent a malformed attestation challenge") from None
    evidence = attester.attest(challenge, public)
    return {
        "platform": attester.platform,
        "evidence": base64.b64encode(evidence).decode("ascii"),
        "challenge_id": challenge_id,
    }
