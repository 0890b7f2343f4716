"""Waiting for a job and downloading its package with resume: the network half of a fetch.

Polling backs off exponentially with jitter: the k-th wait is drawn uniformly from
``[d_k / 2, d_k]`` with ``d_k = min(max_seconds, initial_seconds * multiplier**k)``,
and the whole wait is bounded by ``timeout_seconds``.

The download appends the issued package's ciphertext to ``downloads/<mid>.part``
(0600). After an interruption (network error, a killed process) it continues with
``Range: bytes=<size of the .part file>-``; a ``206`` must start exactly there and
announce the same total, a ``200`` restarts the file from byte 0. An expired or
used link is replaced by asking the job again (the server then mints a fresh link);
network errors are retried with the same back-off. The ciphertext is verified only
once it is complete, by the caller.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from modelseal.client.errors import (
    DownloadTooLargeError,
    JobFailedError,
    JobTimeoutError,
    ProtocolError,
    ServerRefusedError,
    TLSError,
    TLSPinMismatchError,
    TransportError,
)
from modelseal.client.store import ModelStore, PendingDownload
from modelseal.client.transport import StreamedResponse, Transport

__all__ = [
    "DOWNLOAD_PREFIX",
    "Downloader",
    "JobView",
    "PollPolicy",
    "ProgressCallback",
    "StaleJobError",
]

DOWNLOAD_PREFIX = "/v1/downloads/"
MAX_LINK_REFRESHES = 3
MAX_NETWORK_RETRIES = 5
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_LINK_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,1024}")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(bytes_received, total_bytes)`` while a package downloads."""


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Bounded exponential back-off with jitter (see module docstring).

    Attributes:
        initial_seconds: The first delay's upper bound.
        max_seconds: The largest delay's upper bound.
        multiplier: Growth factor per attempt.
        timeout_seconds: Give up waiting for a job after this long.
    """

    initial_seconds: float = 0.1
    max_seconds: float = 2.0
    multiplier: float = 2.0
    timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_seconds <= self.max_seconds or self.multiplier < 1:
            raise ValueError("need 0 < initial_seconds <= max_seconds and multiplier >= 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")

    def delays(self) -> Iterator[float]:
        """An endless sequence of jittered delays."""
        rng = secrets.SystemRandom()
        ceiling = self.initial_seconds
        while True:
            yield rng.uniform(ceiling / 2, ceiling)
            ceiling = min(self.max_seconds, ceiling * self.multiplier)


@dataclass(frozen=True, slots=True)
class JobView:
    """The parts of ``GET /v1/jobs/{id}`` the client uses."""

    job_id: str
    status: str
    jti: str | None
    download_path: str | None
    error_code: str | None


class StaleJobError(Exception):
    """A job that can no longer deliver (gone, failed earlier, or ready without a link).

    Internal: a fetch that resumed an old job answers it by requesting a new one.
    """


def check_id(value: object, what: str) -> str:
    """Check an id the server sent before it goes into a URL path.

    Raises:
        ProtocolError: Not 1-128 of ``A-Z a-z 0-9 _ -``.
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ProtocolError(f"the server sent an invalid {what}")
    return value


def _download_path(value: object) -> str:
    # The link must stay on this server: a relative path under /v1/downloads/, nothing
    # that could turn into another host or path once joined with the base URL.
    if not isinstance(value, str) or not value.startswith(DOWNLOAD_PREFIX):
        raise ProtocolError("the server sent a download link outside /v1/downloads/")
    if not _LINK_TOKEN.fullmatch(value[len(DOWNLOAD_PREFIX) :]):
        raise ProtocolError("the server sent a malformed download link")
    return value


def parse_job(document: dict[str, Any] | None) -> JobView:
    """Validate a job document.

    Raises:
        ProtocolError: A member is missing or malformed.
    """
    if document is None:
        raise ProtocolError("the server sent an empty job")
    status = document.get("status")
    if status not in ("queued", "running", "ready", "failed"):
        raise ProtocolError("the server sent a job with an unknown status")
    jti = document.get("jti")
    url = document.get("download_url")
    error_code = document.get("error_code")
    return JobView(
        job_id=check_id(document.get("job_id"), "job id"),
        status=status,
        jti=None if jti is None else check_id(jti, "issuance id"),
        download_path=None if url is None else _download_path(url),
        error_code=error_code if isinstance(error_code, str) else None,
    )


class Downloader:
    """Job polling and resumable downloads for one device, over one transport."""

    def __init__(
        self,
        transport: Transport,
        store: ModelStore,
        device_id: str,
        *,
        poll: PollPolicy,
        max_package_bytes: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Wire the downloader."""
        self._t = transport
        self._store = store
        self._device_id = device_id
        self._poll = poll
        self._max_bytes = max_package_bytes
        self._sleep = sleep

    def job(self, job_id: str) -> JobView:
        """``GET /v1/jobs/{job_id}``."""
        return parse_job(self._t.request_json("GET", f"/v1/jobs/{check_id(job_id, 'job id')}"))

    def wait_ready(self, job_id: str) -> JobView:
        """Poll the job until it is ready with a download link.

        Raises:
            JobFailedError: The server reports the job failed.
            StaleJobError: The job is ready but its package is no longer available.
            JobTimeoutError: Not ready within ``timeout_seconds``.
            ServerRefusedError: E.g. ``not_found`` for a job the server does not know.
        """
        deadline = time.monotonic() + self._poll.timeout_seconds
        for delay in self._poll.delays():
            job = self.job(job_id)
            if job.status == "ready":
                if job.download_path is None or job.jti is None:
                    raise StaleJobError("the job is ready but its package is gone")
                return job
            if job.status == "failed":
                raise JobFailedError(
                    f"the server could not generate the model ({job.error_code or 'no reason'})",
                    job.error_code,
                )
            if time.monotonic() + delay > deadline:
                raise JobTimeoutError(
                    f"the model was not ready within {self._poll.timeout_seconds:g} s"
                )
            self._sleep(delay)
        raise AssertionError("unreachable: delays() is endless")  # pragma: no cover

    def download(
        self, state: PendingDownload, job: JobView, progress: ProgressCallback | None
    ) -> PendingDownload:
        """Bring ``downloads/<mid>.part`` to the whole package; returns the updated state.

        Raises:
            ServerRefusedError: The server refused the download for good.
            DownloadTooLargeError: The package exceeds ``max_package_bytes``.
            ProtocolError: The server's ranges or sizes are inconsistent.
            TransportError: The network failed more than the retries allow.
        """
        path = job.download_path
        assert path is not None  # wait_ready returns jobs with links only
        refreshes = retries = 0
        restarted = False
        delays = self._poll.delays()
        while True:
            offset = self._store.partial_size(state.model_id)
            total = state.total_bytes
            if total is not None and offset == total:
                return state
            if total is not None and offset > total:
                self._truncate(state.model_id)
                offset = 0
            headers = {"X-Modelseal-Device": self._device_id}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with self._t.stream("GET", path, headers=headers) as response:
                    state = self._receive(state, response, offset, progress)
            except ServerRefusedError as exc:
                if exc.code in ("link_expired", "link_used") and refreshes < MAX_LINK_REFRESHES:
                    refreshes += 1
                    path = self._fresh_link(state.job_id)
                    continue
                if exc.code == "range_not_satisfiable" and offset and not restarted:
                    restarted = True
                    self._truncate(state.model_id)
                    continue
                raise
            except (TLSError, TLSPinMismatchError):
                raise
            except TransportError:
                retries += 1
                if retries > MAX_NETWORK_RETRIES:
                    raise
                self._sleep(next(delays))

    def _fresh_link(self, job_id: str) -> str:
        job = self.job(job_id)
        if job.status != "ready" or job.download_path is None:
            raise StaleJobError("the package is no longer available")
        return job.download_path

    def _truncate(self, model_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self._store.partial_path(model_id), 0)

    def _span(self, response: StreamedResponse, offset: int) -> tuple[int, int]:
        """(first byte, total) of a response, checked against what was asked."""
        if response.status_code == 200:
            length = response.headers.get("content-length")
            if length is None or not length.isdigit():
                raise ProtocolError("the download has no Content-Length")
            return 0, int(length)
        if response.status_code != 206:
            raise ProtocolError(f"unexpected download status {response.status_code}")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None:
            raise ProtocolError("a partial download has no valid Content-Range")
        first, last, total = (int(group) for group in match.groups())
        if first != offset or last != total - 1 or total <= first:
            raise ProtocolError(
                f"asked for bytes {offset}- but the server sent {first}-{last}/{total}"
            )
        return first, total

    def _receive(
        self,
        state: PendingDownload,
        response: StreamedResponse,
        offset: int,
        progress: ProgressCallback | None,
    ) -> PendingDownload:
        first, total = self._span(response, offset)
        if total > self._max_bytes:
            raise DownloadTooLargeError(
                f"the package is {total} bytes; this client accepts at most {self._max_bytes}"
            )
        if state.total_bytes not in (None, total):
            raise ProtocolError("the package changed size between two downloads")
        if state.total_bytes is None:
            state = replace(state, total_bytes=total)
            self._store.save_pending(state)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_TRUNC if first == 0 else os.O_APPEND
        fd = os.open(self._store.partial_path(state.model_id), flags, 0o600)
        try:
            done = first
            for piece in response.iter_bytes():
                if done + len(piece) > total:
                    raise ProtocolError("the server sent more bytes than it announced")
                view = memoryview(piece)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                done += len(piece)
                if progress is not None:
                    progress(done, total)
            os.fsync(fd)
        finally:
            os.close(fd)
        return state
