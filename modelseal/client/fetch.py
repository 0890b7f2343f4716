"""One fetch: the state machine that brings an issued model to the device's at-rest store.

``docs/CLIENT.md`` §7 is the normative description::

    REQUEST   POST /v1/imls                       -> downloads/<mid>.json {job_id}
    WAIT      GET /v1/jobs/{id}, back-off          -> ready: jti, single-use link
    DOWNLOAD  GET link [Range: bytes=N-]           -> downloads/<mid>.part (ciphertext)
    VERIFY    signature (pinned JWKS), aud, exp, mid, jti; decrypt in memory
    RESEAL    fresh DEK under the device KEK       -> models/<mid>.mseal (atomic)
    ACK       queue ack; delete .part and .json; POST /v1/issuances/{jti}/ack

A process killed at any point resumes from the files it left: a pending job is
asked again, a partial download continues with a Range request, a package already
re-sealed is acknowledged. A package that fails verification is deleted with its
state, recorded as a ``download_failure`` event, and never acknowledged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from modelseal.client.download import (
    Downloader,
    JobView,
    ProgressCallback,
    StaleJobError,
    check_id,
)
from modelseal.client.errors import (
    JobFailedError,
    PackageMismatchError,
    ServerRefusedError,
    TLSPinMismatchError,
    TransportError,
)
from modelseal.client.keystore import DeviceKey
from modelseal.client.memory import wipe
from modelseal.client.outbox import EventType, Outbox
from modelseal.client.store import ISSUER_KID_CLAIM, ModelStore, PendingDownload
from modelseal.client.transport import Transport
from modelseal.envelope import AtRest, Claims, Header, OpenPolicy, open_stream, seal_bytes
from modelseal.errors import ModelSealError
from modelseal.keys import IssuerKeySet, KEKWrapper

__all__ = ["Fetch", "FetchResult", "acknowledge"]


def with_issuer_kid(claims: Claims, kid: str) -> Claims:
    """``claims`` with the signing issuer kid added as the ``ikid`` extra claim."""
    return replace(claims, extra={**claims.extra, ISSUER_KID_CLAIM: kid})


Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of a fetch (:meth:`~modelseal.client.DeviceClient.fetch`).

    Attributes:
        model_id: The model fetched.
        job_id: The server's job.
        jti: The issuance id.
        package_bytes: Size of the issued (downloaded) package.
        resumed_from_bytes: Bytes already on disk when this fetch started downloading.
        plaintext_bytes: Size of the model.
        at_rest_bytes: Size of the re-sealed at-rest package.
        ctype: The model's media type.
        claims: The issued claims (kept in the at-rest copy).
        issuer_kid: The issuer key that signed the package.
        acknowledged: Whether the server confirmed the acknowledgement (else it is
            queued in the outbox and retried on the next connection).
        path: The at-rest package.
        timings: Seconds spent per phase: ``request``, ``wait``, ``download``,
            ``verify``, ``reseal``, ``ack``.
    """

    model_id: str
    job_id: str
    jti: str
    package_bytes: int
    resumed_from_bytes: int
    plaintext_bytes: int
    at_rest_bytes: int
    ctype: str
    claims: Claims
    issuer_kid: str
    acknowledged: bool
    path: Path
    timings: Mapping[str, float]


class _Timer:
    """Seconds spent per phase of a fetch."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


def acknowledge(transport: Transport, outbox: Outbox, jti: str) -> bool:
    """``POST /v1/issuances/{jti}/ack``, then forget ``jti`` in the outbox.

    ``not_found`` counts as done: the server has nothing left to delete.

    Raises:
        ServerRefusedError: Any other refusal (the acknowledgement stays queued).
        TransportError, TLSError, TLSPinMismatchError: The server was not reached.
    """
    try:
        transport.request_json(
            "POST", f"/v1/issuances/{check_id(jti, 'issuance id')}/ack", expect=(204, 200)
        )
    except ServerRefusedError as exc:
        if exc.code != "not_found":
            raise
    outbox.remove_ack(jti)
    return True


class Fetch:
    """One fetch over one verified connection (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        downloader: Downloader,
        store: ModelStore,
        outbox: Outbox,
        *,
        device_id: str,
        device_key: Callable[[], DeviceKey],
        models_kek: Callable[[], KEKWrapper],
        issuers: Callable[[], IssuerKeySet],
        clock: Clock,
    ) -> None:
        """Wire one fetch; keys are asked for only when they are needed."""
        self._t = transport
        self._downloader = downloader
        self._store = store
        self._outbox = outbox
        self._device_id = device_id
        self._device_key = device_key
        self._models_kek = models_kek
        self._issuers = issuers
        self._clock = clock

    def run(self, model_id: str, progress: ProgressCallback | None) -> FetchResult:
        """Fetch ``model_id``: resume what a previous run left, or start a new issuance."""
        timer = _Timer()
        state = self._store.pending(model_id)
        job: JobView | None = None
        if state is not None:
            if state.jti is not None and self._stored_jti(model_id) == state.jti:
                # Killed after the re-seal: only the acknowledgement is missing. The
                # at-rest header kept the claims, not the issuer's kid (reported as "").
                header = self._store.header(model_id, self._models_kek())
                size = self._store.partial_size(model_id)
                return self._acknowledge(state, header, "", size, timer)
            job = self._resume(state, timer)
            if job is None:
                self._store.discard_download(model_id)
                state = None
        if state is None:
            state, job = self._request(model_id, timer)
        assert job is not None
        assert job.jti is not None
        if state.jti != job.jti:
            state = replace(state, jti=job.jti)
            self._store.save_pending(state)
        resumed_from = self._store.partial_size(model_id)
        with timer.phase("download"):
            try:
                state = self._downloader.download(state, job, progress)
            except StaleJobError:
                self._store.discard_download(model_id)
                raise JobFailedError(
                    "the package was deleted during the download", "object_gone"
                ) from None
        try:
            header, at_rest = self._verify_and_reseal(state, timer)
        except ModelSealError as exc:
            self._store.discard_download(model_id)
            self._outbox.record(
                EventType.DOWNLOAD_FAILURE, model_id=model_id, jti=state.jti, reason=exc.code
            )
            raise
        self._store.put(model_id, at_rest)
        assert header.sig is not None  # issued packages are signed
        return self._acknowledge(state, header, header.sig.kid, resumed_from, timer)

    def _request(self, model_id: str, timer: _Timer) -> tuple[PendingDownload, JobView]:
        """REQUEST and WAIT for a new issuance."""
        with timer.phase("request"):
            created = self._t.request_json(
                "POST",
                "/v1/imls",
                json_body={"model_id": model_id, "device_id": self._device_id},
                expect=(202, 200, 201),
            )
            job_id = check_id((created or {}).get("job_id"), "job id")
        state = PendingDownload(model_id, job_id, int(self._clock()))
        self._store.save_pending(state)
        with timer.phase("wait"):
            try:
                return state, self._downloader.wait_ready(job_id)
            except StaleJobError:
                self._store.discard_download(model_id)
                raise JobFailedError(
                    "the package was deleted before it could be downloaded", "object_gone"
                ) from None
            except JobFailedError:
                self._store.discard_download(model_id)
                raise

    def _resume(self, state: PendingDownload, timer: _Timer) -> JobView | None:
        """The job of a fetch left unfinished, or None when it cannot deliver any more."""
        with timer.phase("wait"):
            try:
                return self._downloader.wait_ready(state.job_id)
            except (StaleJobError, JobFailedError):
                return None
            except ServerRefusedError as exc:
                if exc.code == "not_found":
                    return None
                raise

    def _stored_jti(self, model_id: str) -> str | None:
        try:
            claims = self._store.header(model_id, self._models_kek()).claims
        except ModelSealError:
            return None
        return None if claims is None else claims.jti

    def _verify_and_reseal(self, state: PendingDownload, timer: _Timer) -> tuple[Header, bytes]:
        """VERIFY the downloaded package, decrypt it in memory, RESEAL it under the KEK."""
        policy = OpenPolicy(
            issuers=self._issuers(), audience=self._device_id, now=int(self._clock())
        )
        plaintext = bytearray()
        try:
            with (
                timer.phase("verify"),
                open(self._store.partial_path(state.model_id), "rb", buffering=0) as src,
            ):
                package = open_stream(src, self._device_key(), policy)
                header, claims = package.header, package.header.claims
                if claims is None or claims.mid != state.model_id or claims.jti != state.jti:
                    raise PackageMismatchError(
                        "the package is not the one requested (model or issuance id differs)"
                    )
                plaintext = bytearray(package.length)
                package.readinto(plaintext)
            with timer.phase("reseal"):
                kek = self._models_kek()
                assert header.sig is not None  # issued packages are signed
                kept = with_issuer_kid(claims, header.sig.kid)
                at_rest = seal_bytes(plaintext, AtRest(kek, claims=kept), ctype=header.ctype)
        finally:
            wipe(plaintext)
        return header, at_rest

    def _acknowledge(
        self,
        state: PendingDownload,
        header: Header,
        issuer_kid: str,
        resumed_from: int,
        timer: _Timer,
    ) -> FetchResult:
        """ACK: queue it, delete the download, then tell the server."""
        assert state.jti is not None
        assert header.claims is not None
        # Queued before the download state goes, so the acknowledgement cannot be lost.
        self._outbox.add_ack(state.jti)
        self._store.discard_download(state.model_id)
        with timer.phase("ack"):
            try:
                acknowledged = acknowledge(self._t, self._outbox, state.jti)
            except TLSPinMismatchError as exc:
                self._outbox.record(
                    EventType.TLS_PIN_MISMATCH, host=exc.host, observed_pin=exc.observed_pin
                )
                acknowledged = False
            except (ServerRefusedError, TransportError):
                acknowledged = False  # stays queued; retried on the next connection
        path = self._store.path(state.model_id)
        return FetchResult(
            model_id=state.model_id,
            job_id=state.job_id,
            jti=state.jti,
            package_bytes=state.total_bytes or 0,
            resumed_from_bytes=resumed_from,
            plaintext_bytes=header.length,
            at_rest_bytes=path.stat().st_size,
            ctype=header.ctype,
            claims=header.claims,
            issuer_kid=issuer_kid,
            acknowledged=acknowledged,
            path=path,
            timings=dict(timer.timings),
        )
