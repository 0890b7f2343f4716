"""Abuse controls: fraud verdicts and the policy they drive, honey tokens, overrides.

Verdicts. A user's verdict is :func:`modelseal.fraud.assess` over that user's most
recent events (at most ``history_max_events``, none older than
``history_window_seconds``) under the rules file. It is recomputed in the
transaction that adds an event of a type the rules use, and stored with its
explanation in ``fraud_verdicts``, which is therefore the per-user cache: a request
reads one row. A stored ``suspicious`` verdict older than ``verdict_max_age_seconds``
is recomputed when read, because points decay, and so is any non-malicious verdict
computed under another rules version. ``malicious`` is sticky: once a stop
factor or the points made a user malicious, only an operator override lifts it, so
neither time nor a flood of harmless events pushing old ones out of the bounded
history unblocks anyone.

Policy, on every request of an authenticated user (:meth:`AbuseService.admit`):

- ``ok``: served within the normal rate limits and quotas;
- ``suspicious``: the suspicious rate limit and each model's suspicious quota, plus
  ``suspicious_delay_seconds`` of latency;
- ``malicious``: refused with ``account_blocked`` (403) everywhere but
  ``POST /v1/events``. The services check again where they mint or serve anything
  (IML requests, jobs about to run, link minting, downloads), so a link minted before
  the block is refused too.

Accounts linked by network: the first request of an account from a client network
(IPv4 /24, IPv6 /48 by default) is remembered in ``address_uses``; an account seen on a
network that a malicious account used within ``address_window_seconds`` gets a
``linked_account_blocked`` event, on arrival (``new_account`` when it is the account's
first request ever) or when the other account turns malicious. Networks shared by more
than ``address_link_max_accounts`` accounts (carrier NAT) link nobody. Addresses are
forgotten after ``address_retention_seconds`` (:func:`expire_addresses`, the sweeper).

Other inputs: failed logins with a wrong secret for a known token id become the token
user's ``credential_failure`` (throttled, :meth:`AbuseService.auth_failed`); app events
are capped per user (``app_events_per_user_limit``).

An active operator override (``fraud_overrides``) wins over the computed verdict.
Every override and every change of computed verdict is written to the audit log
when one is configured; the operators' side lives in :mod:`.fraud_ops`.

Honey tokens (decoy model ids, accounts and device key ids from the settings): any
use records ``honey_token_used``, a stop factor in the default rules, logs the
warning ``honey_token_used`` and increments ``honey_token_uses_total``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, String, delete, func, or_, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelseal.errors import UsageError
from modelseal.fraud import Assessment, FraudRulesError, HoneyTokens, RuleSet, Verdict, assess
from modelseal.fraud.compare import RulesComparison, compare_rules
from modelseal.fraud.events import AppEventIn, FraudEvent, canonical_type, fraud_event
from modelseal.server.clock import Clock
from modelseal.server.db.abuse_models import AddressUse, FraudVerdict
from modelseal.server.db.models import Device, Event
from modelseal.server.db.session import SessionFactory, reading
from modelseal.server.errors import (
    AccountBlockedError,
    ApiVersionError,
    ConfigurationError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
)
from modelseal.server.metrics import Metrics
from modelseal.server.services.accounts import Principal
from modelseal.server.services.events import EventService, EventSource, EventType
from modelseal.server.services.fraud_ops import (
    AuditSink,
    FraudOperations,
    OverrideInfo,
    VerdictInfo,
    user_ref,
)
from modelseal.server.services.quotas import QuotaService, QuotaUse
from modelseal.server.services.ratelimit import RateLimits
from modelseal.server.settings import AbuseSettings, ModelSpec, Settings

__all__ = [
    "AbuseService",
    "AuditSink",
    "OverrideInfo",
    "VerdictInfo",
    "expire_addresses",
    "user_ref",
]

_log = structlog.get_logger("modelseal.server.abuse")
FRAUD_ACTOR = "fraud-engine"
# Users whose verdict must be recomputed when the current batch of events ends.
_deferred: ContextVar[set[int] | None] = ContextVar("modelseal_deferred_verdicts", default=None)


_RETENTION_BATCH = 500
# Event details members that hold a client address or network.
_ADDRESS_KEYS = ("ip", "network")


def expire_addresses(sessions: SessionFactory, settings: AbuseSettings, now: int) -> int:
    """Forget client addresses older than ``address_retention_seconds`` (the sweeper).

    Deletes older ``address_uses`` rows and removes ``details.ip`` (and the
    ``network`` of ``linked_account_blocked``) from older events
    (the events themselves stay: verdicts and explanations refer to them), in
    transactions of at most a few hundred rows.

    Returns:
        Rows changed (address uses deleted plus events scrubbed).
    """
    cutoff = now - settings.address_retention_seconds
    with sessions.begin() as session:
        changed = cast(
            CursorResult[Any],
            session.execute(delete(AddressUse).where(AddressUse.last_seen < cutoff)),
        ).rowcount
    after = 0
    while True:
        with sessions.begin() as session:
            rows = session.execute(
                select(Event.id, Event.details)
                .where(
                    Event.created_at < cutoff,
                    Event.id > after,
                    or_(*(cast_(Event.details, String).like(f'%"{k}"%') for k in _ADDRESS_KEYS)),
                )
                .order_by(Event.id)
                .limit(_RETENTION_BATCH)
            ).all()
            for row in rows:
                if isinstance(row.details, dict) and any(k in row.details for k in _ADDRESS_KEYS):
                    kept = {k: v for k, v in row.details.items() if k not in _ADDRESS_KEYS}
                    session.execute(update(Event).where(Event.id == row.id).values(details=kept))
                    changed += 1
        if len(rows) < _RETENTION_BATCH:
            return changed
        after = rows[-1].id


class AbuseService(FraudOperations):
    """Verdicts, the request policy, quotas, app events, honey tokens (and, inherited, the
    operators' list, explain and override)."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        events: EventService,
        metrics: Metrics,
        clock: Clock,
        *,
        audit: AuditSink | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        """Load the rules, open the rate-limit storage and subscribe to new events.

        Raises:
            ConfigurationError: The rules file or a honey token is invalid.
        """
        self._sessions = sessions
        self._settings = settings
        self._config = settings.abuse
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._audit = audit
        path = self._config.rules_file
        try:
            self.rules = RuleSet.load(path) if path is not None else RuleSet.default()
            self.honey = HoneyTokens.from_config(
                model_ids=self._config.honey_model_ids,
                account_names=self._config.honey_account_names,
                device_key_kids=self._config.honey_device_kids,
            )
        except (FraudRulesError, UsageError) as exc:
            raise ConfigurationError(f"abuse settings: {exc.message}") from None
        self.rate_limits = rate_limits if rate_limits is not None else RateLimits(self._config)
        self.quotas = QuotaService()
        self._types_used = self.rules.types_used
        events.subscribe(self._on_event)

    # --- verdicts -----------------------------------------------------------------------

    def _on_event(self, session: Session, event: Event) -> None:
        user_id = event.user_id
        if user_id is None:
            return
        kid = event.details.get("kid") if isinstance(event.details, dict) else None
        if (
            event.type in (EventType.DEVICE_REGISTERED, EventType.SAME_KEY_OTHER_DEVICE)
            and isinstance(kid, str)
            and self.honey.is_honey_device_kid(kid)
        ):
            self._honey(session, "device_key", user_id=user_id, device_id=event.device_id)
            return  # the honey event's own notification recomputes
        if canonical_type(event.type, event.details) not in self._types_used:
            return
        deferred = _deferred.get()
        if deferred is not None:
            deferred.add(user_id)
            return
        self._recompute(session, user_id)

    @contextlib.contextmanager
    def _batch(self, session: Session) -> Iterator[None]:
        """Recompute each user's verdict once at the end of a batch of events."""
        users: set[int] = set()
        token = _deferred.set(users)
        try:
            yield
        finally:
            _deferred.reset(token)
        for user_id in sorted(users):
            self._recompute(session, user_id)

    def _history(self, session: Session, user_id: int, now: int) -> list[FraudEvent]:
        rows = session.execute(
            select(
                Event.id,
                Event.type,
                Event.created_at,
                Event.source,
                Event.device_id,
                Event.details,
            )
            .where(
                Event.user_id == user_id,
                Event.created_at >= now - self._config.history_window_seconds,
            )
            .order_by(Event.id.desc())
            .limit(self._config.history_max_events)
        ).all()
        return [
            fraud_event(
                id=row.id,
                type_=row.type,
                at=row.created_at,
                source=row.source,
                user_id=user_id,
                device_id=row.device_id,
                details=row.details,
            )
            for row in reversed(rows)
        ]

    def assess_user(self, session: Session, user_id: int) -> Assessment:
        """Assess ``user_id``'s bounded history now (pure: stores nothing)."""
        now = int(self._clock())
        return assess(self._history(session, user_id, now), self.rules, now)

    def replay_rules(self, new: RuleSet, *, max_users: int = 10_000) -> RulesComparison:
        """What ``new`` would decide: every recently active user's bounded history (as
        verdicts read it) assessed under the rules in force and under ``new``, now.

        At most ``max_users`` users with events in ``history_window_seconds``, most
        recently active first. Pure: nothing is stored.
        """
        now = int(self._clock())
        with reading(self._sessions) as session:
            latest = func.max(Event.id)
            users = session.scalars(
                select(Event.user_id)
                .where(
                    Event.user_id.is_not(None),
                    Event.created_at >= now - self._config.history_window_seconds,
                )
                .group_by(Event.user_id)
                .order_by(latest.desc())
                .limit(max_users)
            ).all()
            histories = {
                user_id: self._history(session, user_id, now)
                for user_id in users
                if user_id is not None
            }
        return compare_rules(histories, self.rules, new, now)

    def _recompute(self, session: Session, user_id: int) -> FraudVerdict:
        session.flush()
        now = int(self._clock())
        row = session.get(FraudVerdict, user_id, populate_existing=True)
        if row is not None and row.verdict == Verdict.MALICIOUS:
            return row  # sticky: only an override lifts it
        result = assess(self._history(session, user_id, now), self.rules, now)
        last_id = session.scalar(
            select(Event.id).where(Event.user_id == user_id).order_by(Event.id.desc()).limit(1)
        )
        values = {
            "user_id": user_id,
            "verdict": str(result.verdict),
            "score": float(result.score),
            "rules_version": result.rules_version,
            "fired": [rule.to_json() for rule in result.fired],
            "last_event_id": int(last_id or 0),
            "computed_at": now,
        }
        before = Verdict(row.verdict) if row is not None else Verdict.OK
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(FraudVerdict).values(**values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[FraudVerdict.user_id],
                set_={k: statement.excluded[k] for k in values if k != "user_id"},
            )
        )
        if result.verdict != before:
            self._verdict_changed(session, user_id, before, result)
            if result.verdict == Verdict.MALICIOUS:
                self._link_siblings(session, user_id, now)
        stored = session.get(FraudVerdict, user_id, populate_existing=True)
        assert stored is not None  # written just above
        return stored

    def _verdict_changed(
        self, session: Session, user_id: int, before: Verdict, result: Assessment
    ) -> None:
        rules = [rule.rule_id for rule in result.fired]
        self._metrics.fraud_verdict_changes_total.labels(verdict=str(result.verdict)).inc()
        _log.warning(
            "fraud_verdict_changed",
            user_id=user_id,
            before=str(before),
            after=str(result.verdict),
            score=result.score,
            rules=rules,
        )
        if self._audit is not None:
            self._audit.append(
                session,
                "fraud.verdict",
                actor=FRAUD_ACTOR,
                user_id=user_id,
                details={
                    "before": str(before),
                    "after": str(result.verdict),
                    "score": result.score,
                    "rules": rules,
                    "rules_version": result.rules_version,
                },
            )

    def verdict_of(self, session: Session, user_id: int) -> Verdict:
        """The verdict in force for ``user_id`` (override, else computed; ``ok`` if neither).

        A stored verdict that is stale or was computed under other rules is recomputed and
        stored through ``session``, which must then be a writing one.
        """
        verdict = self._stored_verdict(session, user_id)
        if verdict is None:
            verdict = Verdict(self._recompute(session, user_id).verdict)
        return verdict

    def _stored_verdict(self, session: Session, user_id: int) -> Verdict | None:
        """The verdict in force as stored, or None when it must be recomputed first."""
        now = int(self._clock())
        override = self._active_override(session, user_id, now)
        if override is not None:
            return Verdict(override.verdict)
        row = session.get(FraudVerdict, user_id)
        if row is None:
            return Verdict.OK
        stale = (
            row.verdict == Verdict.SUSPICIOUS
            and now - row.computed_at >= self._config.verdict_max_age_seconds
        )
        # Computed under other rules (an operator deployed new ones): recomputed on use.
        outdated = row.verdict != Verdict.MALICIOUS and row.rules_version != self.rules.version
        return None if stale or outdated else Verdict(row.verdict)

    def require_not_blocked(self, session: Session, user_id: int) -> Verdict:
        """The user's verdict, unless it is ``malicious``.

        Raises:
            AccountBlockedError: The verdict in force is ``malicious``.
        """
        verdict = self.verdict_of(session, user_id)
        if verdict == Verdict.MALICIOUS:
            self._metrics.abuse_refusals_total.labels(reason=AccountBlockedError.code).inc()
            raise AccountBlockedError("this account is blocked")
        return verdict

    # --- the request policy -------------------------------------------------------------

    def admit(
        self,
        principal: Principal,
        *,
        device_id: str | None,
        ip: str | None,
        api_version: str | None,
        allow_blocked: bool = False,
    ) -> Verdict:
        """Apply the policy to one authenticated request.

        Raises:
            ApiVersionError: ``X-Modelseal-Api-Version`` names a refused version.
            AccountBlockedError: The user is blocked (unless ``allow_blocked``).
            RateLimitedError: A rate limit refused the request.
        """
        if (
            principal.name is not None
            and self.honey.is_honey_account(principal.name)
            and self.rate_limits.first_in_interval("honey", str(principal.user_id))
        ):
            with self._sessions.begin() as session:
                self._honey(session, "account", user_id=principal.user_id, device_id=device_id)
        if api_version is not None and api_version not in self._config.api_versions:
            obsolete = api_version in self._config.obsolete_api_versions
            type_ = EventType.API_VERSION_OBSOLETE if obsolete else EventType.API_VERSION_INVALID
            self._flood_event(
                type_, principal.user_id, device_id, ip, {"version": api_version[:16]}
            )
            self._metrics.abuse_refusals_total.labels(reason=ApiVersionError.code).inc()
            raise ApiVersionError(
                f"API version {api_version[:16]!r} is not supported; "
                f"supported: {', '.join(self._config.api_versions)}"
            )
        # First: a new account at an address a blocked account used is linked to it.
        self._note_address(principal.user_id, ip)
        # Every authenticated request reads the verdict: without a write lock, unless the
        # stored one has to be recomputed.
        with reading(self._sessions) as session:
            stored = self._stored_verdict(session, principal.user_id)
        if stored is None:
            with self._sessions.begin() as session:
                stored = self.verdict_of(session, principal.user_id)
        verdict = stored
        if verdict == Verdict.MALICIOUS and not allow_blocked:
            self._metrics.abuse_refusals_total.labels(reason=AccountBlockedError.code).inc()
            raise AccountBlockedError("this account is blocked")
        suspicious = verdict == Verdict.SUSPICIOUS
        refusal = self.rate_limits.hit(
            user_id=principal.user_id, device_id=device_id, ip=ip, suspicious=suspicious
        )
        if refusal is not None:
            self._metrics.abuse_refusals_total.labels(reason=RateLimitedError.code).inc()
            self._flood_event(
                EventType.RATE_LIMITED, principal.user_id, device_id, ip, {"scope": refusal.scope}
            )
            raise RateLimitedError(
                f"too many requests ({refusal.scope} limit)", refusal.retry_after_seconds
            )
        if suspicious and self._config.suspicious_delay_seconds > 0:
            time.sleep(self._config.suspicious_delay_seconds)
        return verdict

    # --- accounts linked by address -----------------------------------------------------

    def _note_address(self, user_id: int, ip: str | None) -> None:
        """Remember that ``user_id`` used ``ip``; link it to blocked accounts seen there."""
        if ip is None or not self._config.link_accounts_by_address:
            return
        network = self._network(ip)
        if network is None:
            return
        if not self.rate_limits.first_in_interval("address", f"{network}|{user_id}"):
            return
        now = int(self._clock())
        values = {"ip": network, "user_id": user_id, "first_seen": now, "last_seen": now}
        with self._sessions.begin() as session:
            # An account never seen on any network before arrives here for the first time:
            # the farm pattern (fresh accounts rotated through one network) the rules tell
            # apart from established neighbours.
            new_account = (
                session.scalars(
                    select(AddressUse.user_id).where(AddressUse.user_id == user_id).limit(1)
                ).first()
                is None
            )
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            statement = insert(AddressUse).values(**values)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[AddressUse.ip, AddressUse.user_id],
                    set_={"last_seen": statement.excluded.last_seen},
                )
            )
            accounts = self._address_accounts(session, network, now)
            if accounts is None:
                return
            blocked = session.scalars(
                select(FraudVerdict.user_id).where(
                    FraudVerdict.user_id.in_(accounts - {user_id}),
                    FraudVerdict.verdict == str(Verdict.MALICIOUS),
                )
            ).all()
            for other in sorted(blocked):
                self._link(session, user_id, other, network, now, new_account=new_account)

    def _network(self, ip: str) -> str | None:
        """The network ``ip`` links by (``address_link_prefix_v4``/``_v6``); None if no address."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None  # a Unix socket or a test client: nothing to link by
        prefix = (
            self._config.address_link_prefix_v4
            if address.version == 4
            else self._config.address_link_prefix_v6
        )
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    def _address_accounts(self, session: Session, ip: str, now: int) -> set[int] | None:
        """Accounts that used ``ip`` within the window; None for a crowded address."""
        limit = self._config.address_link_max_accounts
        users = set(
            session.scalars(
                select(AddressUse.user_id)
                .where(
                    AddressUse.ip == ip,
                    AddressUse.last_seen >= now - self._config.address_window_seconds,
                )
                .limit(limit + 1)
            )
        )
        return None if len(users) > limit else users

    def _link_siblings(self, session: Session, user_id: int, now: int) -> None:
        """``user_id`` became malicious: flag the accounts it shared an address with."""
        if not self._config.link_accounts_by_address:
            return
        addresses = session.scalars(
            select(AddressUse.ip).where(
                AddressUse.user_id == user_id,
                AddressUse.last_seen >= now - self._config.address_window_seconds,
            )
        ).all()
        for ip in addresses:
            for other in sorted((self._address_accounts(session, ip, now) or set()) - {user_id}):
                self._link(session, other, user_id, ip, now)

    def _link(
        self,
        session: Session,
        user_id: int,
        blocked: int,
        network: str,
        now: int,
        *,
        new_account: bool = False,
    ) -> None:
        """Record once per window that ``user_id`` shared ``network`` with ``blocked``
        (``new_account``: ``user_id``'s first request ever came from that network, after
        ``blocked`` was blocked)."""
        known = session.scalars(
            select(Event.details).where(
                Event.user_id == user_id,
                Event.type == EventType.LINKED_ACCOUNT_BLOCKED,
                Event.created_at >= now - self._config.address_window_seconds,
            )
        ).all()
        if any(details.get("linked_user") == blocked for details in known):
            return
        self._events.add(
            session,
            EventType.LINKED_ACCOUNT_BLOCKED,
            user_id=user_id,
            details={"linked_user": blocked, "network": network, "new_account": new_account},
        )

    def _flood_event(
        self,
        type_: EventType,
        user_id: int,
        device_id: str | None,
        ip: str | None,
        details: Mapping[str, Any],
    ) -> None:
        """Record ``type_`` at most once per interval and user: a flood writes few rows."""
        if self.rate_limits.first_in_interval(str(type_), str(user_id)):
            self._events.record(type_, user_id=user_id, device_id=device_id, details=details, ip=ip)

    def auth_refused(self, ip: str | None) -> None:
        """Refuse an address past its failed-authentication limit, before any check.

        Raises:
            RateLimitedError: Too many failed authentications from ``ip``.
        """
        refusal = self.rate_limits.auth_refused(ip)
        if refusal is not None:
            self._metrics.abuse_refusals_total.labels(reason=RateLimitedError.code).inc()
            raise RateLimitedError(
                "too many failed authentications from this address", refusal.retry_after_seconds
            )

    def auth_failed(self, ip: str | None, *, user_id: int | None = None) -> None:
        """Count a failed authentication from ``ip``; with ``user_id`` (a wrong secret for
        that user's token id), record a ``credential_failure`` for the user, throttled.

        Throttled to one event per user and address per ``event_record_interval_seconds``,
        and at most ``credential_failure_events_per_interval`` per user (a flood from many
        addresses writes few rows). Failed logins target an account whoever makes them, so
        the rules weigh them low: they cannot make the owner malicious on their own.
        """
        self.rate_limits.auth_failed(ip)
        if user_id is None:
            return
        where = ip if ip is not None else "-"
        if self.rate_limits.first_in_interval(
            EventType.CREDENTIAL_FAILURE, f"{user_id}|{where}"
        ) and self.rate_limits.within_interval(
            "credential_failure_user",
            str(user_id),
            self._config.credential_failure_events_per_interval,
        ):
            self._events.record(EventType.CREDENTIAL_FAILURE, user_id=user_id, details={}, ip=ip)

    # --- quotas -------------------------------------------------------------------------

    def take_quota(
        self, session: Session, principal: Principal, spec: ModelSpec, verdict: Verdict
    ) -> QuotaUse | None:
        """Take one unit of ``spec``'s quota in the caller's transaction (None: no quota).

        Raises:
            QuotaExceededError: The user's quota for this period is used up.
        """
        policy = spec.quota_policy
        if policy is None:
            return None
        return self.quotas.take(
            session,
            user_id=principal.user_id,
            model_id=spec.id,
            policy=policy,
            suspicious=verdict == Verdict.SUSPICIOUS,
            now=int(self._clock()),
        )

    def quota_refused(self, principal: Principal, exc: QuotaExceededError, model_id: str) -> None:
        """Count and record (throttled) a request refused by the quota."""
        self._metrics.abuse_refusals_total.labels(reason=exc.code).inc()
        if self.rate_limits.first_in_interval(exc.code, f"{principal.user_id}:{model_id}"):
            self._events.record(
                EventType.QUOTA_EXCEEDED,
                user_id=principal.user_id,
                details={"model_id": model_id, "resets_at": exc.resets_at},
            )

    def refund_quota(self, session: Session, user_id: int, model_id: str, taken_at: int) -> None:
        """Give back the unit a failed job took (see :mod:`.quotas` for why)."""
        spec = self._settings.model(model_id)
        policy = spec.quota_policy if spec is not None else None
        if policy is not None:
            self.quotas.refund(
                session, user_id=user_id, model_id=model_id, policy=policy, taken_at=taken_at
            )

    # --- events -------------------------------------------------------------------------

    def report(
        self,
        principal: Principal,
        device_id: str,
        events: Sequence[AppEventIn],
        *,
        ip: str | None = None,
    ) -> int:
        """Store app-reported events of one of the caller's devices (all or nothing).

        Raises:
            NotFoundError: The caller has no device ``device_id`` (another user's device
                is not told apart from no device).
            RateLimitedError: The batch would pass the user's ``app_events_per_user_limit``
                (nothing was stored).
        """
        with self._sessions.begin() as session:
            device = session.scalars(
                select(Device).where(
                    Device.user_id == principal.user_id, Device.device_id == device_id
                )
            ).first()
            if device is None:
                raise NotFoundError("no such device")
            # A cap per user on stored events: the events table cannot be flooded.
            refusal = self.rate_limits.app_events(principal.user_id, len(events))
            if refusal is None:
                with self._batch(session):
                    for event in events:
                        self._events.add(
                            session,
                            str(event.type),
                            user_id=principal.user_id,
                            device_id=device_id,
                            source=EventSource.APP,
                            details=event.record_details(),
                            ip=ip,
                        )
        if refusal is not None:
            self._metrics.abuse_refusals_total.labels(reason=RateLimitedError.code).inc()
            self._flood_event(
                EventType.RATE_LIMITED, principal.user_id, device_id, ip, {"scope": refusal.scope}
            )
            raise RateLimitedError("too many events from this account", refusal.retry_after_seconds)
        return len(events)

    def record_server_event(
        self,
        type_: EventType | str,
        *,
        user_id: int | None,
        device_id: str | None = None,
        ip: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a server-observed event in its own transaction (verdict recomputed).

        For other services, e.g. attestation: ``record_server_event(EventType.ATTESTATION_FAILED,
        user_id=..., device_id=..., details={"code": exc.code})``.
        """
        self._events.record(type_, user_id=user_id, device_id=device_id, details=details, ip=ip)

    # --- honey tokens -------------------------------------------------------------------

    def is_honey_model(self, model_id: str) -> bool:
        """Whether ``model_id`` is a decoy."""
        return self.honey.is_honey_model(model_id)

    def honey_model_requested(
        self, principal: Principal, model_id: str, device_id: str | None
    ) -> None:
        """Record the use of a decoy model id (the caller then refuses the request)."""
        with self._sessions.begin() as session:
            self._honey(
                session, "model_id", user_id=principal.user_id, device_id=device_id, what=model_id
            )

    def _honey(
        self,
        session: Session,
        kind: str,
        *,
        user_id: int,
        device_id: str | None,
        what: str | None = None,
    ) -> None:
        self._metrics.honey_token_uses_total.labels(kind=kind).inc()
        # The alert: operators route this warning to paging. Ids only, never secrets.
        _log.warning("honey_token_used", kind=kind, user_id=user_id, device_id=device_id)
        details: dict[str, Any] = {"kind": kind}
        if what is not None:
            details["value"] = what
        self._events.add(
            session,
            EventType.HONEY_TOKEN_USED,
            user_id=user_id,
            device_id=device_id,
            details=details,
        )
