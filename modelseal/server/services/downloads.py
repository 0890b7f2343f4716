"""Downloads: minting device-bound links and serving the ciphertext behind them.

A link is bound to one issuance, one user and one device, expires in minutes
(``link_ttl_seconds``) and delivers the object once. "Once" means: the first
response about to send the object's final byte claims the link in ``link_uses``
(unique ``lid``) before sending it, so at most one response per link ever delivers
the whole object. Responses that stop earlier (interrupted downloads, ranges that
end before the final byte) do not consume the link, so a client resumes with
``Range: bytes=N-``. A client that lost the final piece asks the job again for a
fresh link (bounded by ``max_links_per_issuance``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.server.clock import Clock
from modelseal.server.db.models import Device, DownloadLink, Issuance, LinkUse
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import (
    DeviceRevokedError,
    LinkExpiredError,
    LinkInvalidError,
    LinkUsedError,
    LinkWrongDeviceError,
    ObjectGoneError,
    RangeNotSatisfiableError,
    ServerError,
    TooManyLinksError,
)
from modelseal.server.metrics import Metrics
from modelseal.server.services.accounts import Principal
from modelseal.server.services.audit import AuditAction, AuditLog, user_actor
from modelseal.server.services.events import EventService, EventType
from modelseal.server.services.links import LinkPayload, LinkSigner
from modelseal.server.settings import Settings
from modelseal.server.storage import BlobNotFoundError, BlobStore

if TYPE_CHECKING:
    from modelseal.server.services.abuse import AbuseService

__all__ = ["DOWNLOAD_PATH", "Download", "DownloadService", "IssuedLink", "parse_range"]

_log = structlog.get_logger("modelseal.server.downloads")
DOWNLOAD_PATH = "/v1/downloads/"
STREAM_PIECE_BYTES = 64 * 1024
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A link handed to the client."""

    url: str
    expires_at: int


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """Parse a single ``Range: bytes=...`` header against an object of ``total`` bytes.

    Returns:
        ``(first, last)`` inclusive, or None for no range header.

    Raises:
        RangeNotSatisfiableError: Malformed, several ranges, or outside the object.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiableError("Range must be a single 'bytes=first-last' range", total)
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text or int(last_text) == 0:
            raise RangeNotSatisfiableError("suffix range must be bytes=-N with N > 0", total)
        suffix = int(last_text)
        return max(total - suffix, 0), total - 1
    first = int(first_text)
    last = int(last_text) if last_text else total - 1
    if first >= total or last < first:
        raise RangeNotSatisfiableError(f"range {first}-{last_text} is outside 0-{total - 1}", total)
    return first, min(last, total - 1)


@dataclass(slots=True)
class Download:
    """An authorised download, ready to stream.

    Attributes:
        first: First byte offset served.
        last: Last byte offset served (inclusive).
        total: Object size.
        partial: Whether the request carried a Range header.
        chunks: The body; consuming the final byte claims the link.
    """

    first: int
    last: int
    total: int
    partial: bool
    chunks: Iterator[bytes]


class DownloadService:
    """Mints links and authorises downloads."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        signer: LinkSigner,
        blobs: BlobStore,
        events: EventService,
        metrics: Metrics,
        clock: Clock,
        abuse: AbuseService | None = None,
        *,
        audit: AuditLog,
    ) -> None:
        """Wire the service; ``abuse`` refuses links and downloads to blocked accounts.

        New links and completed downloads are audited (link ids only, never tokens).
        """
        self._audit = audit
        self._abuse = abuse
        self._sessions = sessions
        self._settings = settings
        self._signer = signer
        self._blobs = blobs
        self._events = events
        self._metrics = metrics
        self._clock = clock

    # --- minting ------------------------------------------------------------------------

    def link_for(
        self, session: Session, issuance: Issuance, principal: Principal, device: Device
    ) -> IssuedLink:
        """A link for ``issuance``: the latest one while it has over half its life left,
        else a new one, at most ``max_links_per_issuance`` per issuance.

        Raises:
            TooManyLinksError: The issuance has had its share of links.
            AccountBlockedError: The user's fraud verdict is ``malicious``.
        """
        if self._abuse is not None:
            self._abuse.require_not_blocked(session, principal.user_id)
        now = int(self._clock())
        spec = self._settings.model(issuance.model_id)
        ttl = spec.link_ttl_seconds if spec is not None else 300
        latest = session.scalars(
            select(DownloadLink)
            .where(DownloadLink.jti == issuance.jti, DownloadLink.device_pk == device.id)
            .order_by(DownloadLink.created_at.desc(), DownloadLink.expires_at.desc())
            .limit(1)
        ).first()
        if latest is not None and latest.expires_at - now >= ttl // 2:
            used = session.scalars(select(LinkUse.id).where(LinkUse.lid == latest.lid)).first()
            if used is None:
                return self._issued(latest, issuance.jti, principal, device)
        count = session.scalar(
            select(func.count()).select_from(DownloadLink).where(DownloadLink.jti == issuance.jti)
        )
        if (count or 0) >= self._settings.max_links_per_issuance:
            raise TooManyLinksError("no more download links for this issuance; request again")
        link = DownloadLink(
            lid=secrets.token_hex(16),
            jti=issuance.jti,
            user_id=principal.user_id,
            device_pk=device.id,
            created_at=now,
            expires_at=min(now + ttl, issuance.blob_expires_at),
        )
        session.add(link)
        self._audit.append(
            session,
            AuditAction.LINK_CREATED,
            actor=user_actor(principal.user_id),
            user_id=principal.user_id,
            device_id=device.device_id,
            model_id=issuance.model_id,
            details={"lid": link.lid, "jti": issuance.jti, "expires_at": link.expires_at},
        )
        return self._issued(link, issuance.jti, principal, device)

    def _issued(
        self, link: DownloadLink, jti: str, principal: Principal, device: Device
    ) -> IssuedLink:
        payload = LinkPayload(
            lid=link.lid,
            jti=jti,
            uid=principal.subject,
            did=device.device_id,
            exp=link.expires_at,
        )
        return IssuedLink(DOWNLOAD_PATH + self._signer.mint(payload), link.expires_at)

    # --- serving ------------------------------------------------------------------------

    def open(
        self,
        principal: Principal,
        token: str,
        device_header: str | None,
        range_header: str | None,
    ) -> Download:
        """Authorise a download and prepare its body.

        Raises:
            LinkInvalidError, LinkExpiredError, LinkWrongDeviceError, LinkUsedError,
            ObjectGoneError, DeviceRevokedError, RangeNotSatisfiableError,
            AccountBlockedError: Refused;
            counted by reason and recorded as an ``access_error`` event. Nothing of
            the object is read before every check passed.
        """
        try:
            return self._open(principal, token, device_header, range_header)
        except (ServerError, BlobNotFoundError) as exc:
            code = ObjectGoneError.code if isinstance(exc, BlobNotFoundError) else exc.code
            self._metrics.access_errors_total.labels(reason=code).inc()
            self._events.record(
                EventType.ACCESS_ERROR,
                user_id=principal.user_id,
                device_id=device_header if device_header and len(device_header) <= 128 else None,
                details={"reason": code, "what": "download"},
            )
            _log.info("download_refused", reason=code, user_id=principal.user_id)
            if isinstance(exc, BlobNotFoundError):
                raise ObjectGoneError("the object is gone") from None
            raise

    def _open(
        self,
        principal: Principal,
        token: str,
        device_header: str | None,
        range_header: str | None,
    ) -> Download:
        payload = self._signer.verify(token)
        if int(self._clock()) > payload.exp:
            raise LinkExpiredError("the link has expired")
        with self._sessions() as session:
            link = session.get(DownloadLink, payload.lid)
            if link is None or link.jti != payload.jti:
                raise LinkInvalidError("link does not verify")
            if link.user_id != principal.user_id or payload.uid != principal.subject:
                raise LinkWrongDeviceError("the link is bound to another user or device")
            if self._abuse is not None:
                # Links minted before a block die with it.
                self._abuse.require_not_blocked(session, principal.user_id)
            device = session.get(Device, link.device_pk)
            if device is None or device_header is None or device_header != payload.did:
                raise LinkWrongDeviceError("the link is bound to another user or device")
            if device.device_id != payload.did:
                raise LinkWrongDeviceError("the link is bound to another user or device")
            if device.revoked_at is not None:
                raise DeviceRevokedError("the device is revoked")
            if session.scalars(select(LinkUse.id).where(LinkUse.lid == link.lid)).first():
                raise LinkUsedError("the link has been used")
            issuance = session.get(Issuance, link.jti)
            if issuance is None or issuance.deleted_at is not None:
                raise ObjectGoneError("the object is gone")
            blob_key = issuance.blob_key
        handle = self._blobs.open(blob_key)
        try:
            total = self._blobs.size(blob_key)
            span = parse_range(range_header, total)
        except BaseException:
            handle.close()
            raise
        first, last = span if span is not None else (0, total - 1)
        return Download(
            first=first,
            last=last,
            total=total,
            partial=span is not None,
            chunks=self._stream(handle, first, last, total, link_id=payload.lid),
        )

    def _claim(self, lid: str) -> None:
        try:
            with self._sessions.begin() as session:
                session.add(LinkUse(lid=lid, used_at=int(self._clock())))
                link = session.get(DownloadLink, lid)
                issuance = session.get(Issuance, link.jti) if link is not None else None
                device = session.get(Device, link.device_pk) if link is not None else None
                self._audit.append(
                    session,
                    AuditAction.DOWNLOAD_COMPLETED,
                    actor=user_actor(link.user_id) if link is not None else "unknown",
                    user_id=link.user_id if link is not None else None,
                    device_id=device.device_id if device is not None else None,
                    model_id=issuance.model_id if issuance is not None else None,
                    details={"lid": lid, "jti": link.jti if link is not None else None},
                )
        except IntegrityError:
            self._metrics.access_errors_total.labels(reason=LinkUsedError.code).inc()
            raise LinkUsedError("the link has been used") from None
        self._metrics.downloads_total.inc()

    def _stream(
        self, handle: BinaryIO, first: int, last: int, total: int, *, link_id: str
    ) -> Iterator[bytes]:
        try:
            if total == 0:
                self._claim(link_id)
                return
            handle.seek(first)
            position = first
            while position <= last:
                size = min(STREAM_PIECE_BYTES, last + 1 - position)
                piece = handle.read(size)
                if len(piece) != size:
                    raise ObjectGoneError("the object changed while it was being read")
                position += size
                if position == total:
                    # Claim before the final byte leaves: only one response ever gets it.
                    self._claim(link_id)
                yield piece
        finally:
            handle.close()
