"""Scoring: ``assess(events, rules, now)``, a pure function of the history and the rules.

Semantics (``docs/ANTI_FRAUD.md`` has the long form):

1. Events with ``at > now`` are ignored, as are events whose type no rule names, and events
   of a server type whose source is not ``"server"``.
2. A condition *holds at time t* when the matching events in ``(t - W, t]`` (W its window,
   unbounded if unset) number at least ``k`` (or carry at least ``k`` distinct values of its
   ``distinct`` field). Its *time* ``T_c`` is the latest event time ``t <= now`` at which it
   holds; a condition that never held has none.
3. A rule fires when every condition has a time; the rule's time is the earliest of them,
   ``T = min(T_c)``: the evidence is as fresh as its stalest part.
4. A stop factor that fires makes the verdict malicious, whatever the score; it never decays.
5. A points rule that fires adds ``points * decay.factor(now - T)``; the score is the sum over
   points rules in file order.
6. Verdict: malicious if a stop factor fired or ``score >= thresholds.malicious``; suspicious
   if ``score >= thresholds.suspicious``; else ok.

Why adding an event never lowers the verdict (at a fixed ``now``, for an event with
``at <= now``): an added event can only add to the events in any window, so every condition
that held at some time still holds then; ``T_c`` can only move later, hence ``T`` too, hence
``now - T`` shrinks; decay factors are non-increasing in age and points are positive, so each
rule's contribution and (floating-point addition being monotone) the score can only grow, and
the set of fired stop factors can only grow. Everything depends on event times and values,
never on input order, so a permutation of the input gives the same assessment.

Cost: one pass over the events to bucket them by type, then per distinct condition a sort of
its event times and one backward scan (count) or one sliding window (distinct values).
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from typing import Any, Literal

from modelseal.fraud.events import FraudEvent
from modelseal.fraud.rules import MAX_WITNESS_EVENTS, Condition, Rule, RuleSet

__all__ = ["Assessment", "FiredRule", "Verdict", "assess"]


class Verdict(StrEnum):
    """The outcome of an assessment, ordered: ``OK < SUSPICIOUS < MALICIOUS``."""

    OK = "ok"
    SUSPICIOUS = "suspicious"
    MALICIOUS = "malicious"

    @property
    def rank(self) -> int:
        """0, 1 or 2, in the order of severity."""
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Verdict):
            return _RANK[self] < _RANK[other]
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, Verdict):
            return _RANK[self] <= _RANK[other]
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, Verdict):
            return _RANK[self] > _RANK[other]
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, Verdict):
            return _RANK[self] >= _RANK[other]
        return NotImplemented


_RANK: dict[Verdict, int] = {Verdict.OK: 0, Verdict.SUSPICIOUS: 1, Verdict.MALICIOUS: 2}


@dataclass(frozen=True, slots=True)
class FiredRule:
    """One rule that fired, with its evidence.

    Attributes:
        rule_id: The rule's id.
        kind: ``"stop"`` or ``"points"``.
        points: Points after decay (0 for stop factors).
        event_ids: Ids of the events in the window of each condition at its time, ordered
            by ``(at, id)``; the latest :data:`~modelseal.fraud.rules.MAX_WITNESS_EVENTS`.
        description: The rule's description.
        fired_at: The rule's time ``T`` (unix seconds).
        base_points: Points before decay (0 for stop factors).
    """

    rule_id: str
    kind: Literal["stop", "points"]
    points: float
    event_ids: tuple[int, ...]
    description: str
    fired_at: int
    base_points: float

    def to_json(self) -> dict[str, Any]:
        """The JSON form (points rounded to 1/1000)."""
        return {
            "rule_id": self.rule_id,
            "kind": self.kind,
            "points": round(self.points, 3),
            "base_points": round(self.base_points, 3),
            "fired_at": self.fired_at,
            "event_ids": list(self.event_ids),
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """A verdict with its explanation.

    Attributes:
        verdict: ok, suspicious or malicious.
        score: Sum of the decayed points of the points rules that fired.
        fired: Stop factors, then points rules, in file order.
        rules_version: The rule set's ``version``.
        rules_digest: SHA-256 of the rules file.
        assessed_at: The ``now`` the assessment was made at.
        events_considered: Events that matched some rule's types and counted.
    """

    verdict: Verdict
    score: float
    fired: tuple[FiredRule, ...]
    rules_version: str
    rules_digest: str
    assessed_at: int
    events_considered: int

    @property
    def stop_factors(self) -> tuple[FiredRule, ...]:
        """The stop factors that fired."""
        return tuple(f for f in self.fired if f.kind == "stop")

    def explain(self) -> str:
        """A few lines for people: the verdict, then one line per fired rule."""
        lines = [
            f"verdict {self.verdict.value} (score {self.score:.1f}; rules {self.rules_version}; "
            f"at {self.assessed_at})"
        ]
        for fired in self.fired:
            ids = ", ".join(str(i) for i in fired.event_ids)
            if fired.kind == "stop":
                head = f"  STOP {fired.rule_id}"
            else:
                head = f"  +{fired.points:.1f} {fired.rule_id} (of {fired.base_points:g})"
            lines.append(f"{head}: {fired.description} [events {ids}]")
        if not self.fired:
            lines.append("  no rule fired")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (stored with verdicts and returned by the admin API)."""
        return {
            "verdict": self.verdict.value,
            "score": round(self.score, 3),
            "rules_version": self.rules_version,
            "rules_digest": self.rules_digest,
            "assessed_at": self.assessed_at,
            "events_considered": self.events_considered,
            "fired": [f.to_json() for f in self.fired],
        }


# --- evaluation -------------------------------------------------------------------------------


def _value_key(value: object) -> object:
    # Distinct values are compared by type and value, so 1, 1.0, True and "1" stay apart.
    if type(value) is str:
        return value
    return json.dumps([type(value).__name__, value], sort_keys=True, default=repr)


def _field_value(event: FraudEvent, distinct: str) -> object:
    if distinct == "device_id":
        return event.device_id
    return event.details.get(distinct[8:])  # "details.<key>"


def _matches_where(event: FraudEvent, where: tuple[tuple[str, str | int | bool], ...]) -> bool:
    details = event.details
    for key, wanted in where:
        got = details.get(key)
        if type(got) is not type(wanted) or got != wanted:
            return False
    return True


class _Stream:
    """Events of one type that passed a condition's filters, in input order, and their times,
    sorted. Sorting plain integers costs far less than sorting the events themselves."""

    __slots__ = ("events", "times")

    def __init__(self, events: list[FraudEvent], now: int | None = None) -> None:
        times = [e.at for e in events]
        times.sort()
        if now is not None and times and times[-1] > now:
            events = [e for e in events if e.at <= now]
            del times[bisect.bisect_right(times, now) :]
        self.events = events
        self.times = times


class _Evaluated:
    """A condition's streams (one per type) and its time, computed once per assessment."""

    __slots__ = ("streams", "time")

    def __init__(self, streams: list[_Stream], time: int | None) -> None:
        self.streams = streams
        self.time = time


def _latest_count(times: list[int], k: int, window: int) -> int | None:
    """Latest t in ``times`` (sorted, at least k long) with at least k times in
    ``(t - window, t]``."""
    # The window ending at times[j] holds times[j-k+1..j] iff their span is < window; ties
    # after j are in it too, and are visited first since the scan runs backwards.
    for last, first in zip(
        reversed(times[k - 1 :]), reversed(times[: len(times) - k + 1]), strict=True
    ):
        if last - first < window:
            return last
    return None


def _latest_distinct(pairs: list[tuple[int, object]], k: int, window: int | None) -> int | None:
    """Latest t with at least k distinct values among ``pairs`` (sorted by time) in
    ``(t - window, t]``."""
    if window is None:
        return pairs[-1][0] if len({v for _, v in pairs}) >= k else None
    counts: dict[object, int] = {}
    lo = 0
    best: int | None = None
    for t, value in pairs:
        counts[value] = counts.get(value, 0) + 1
        edge = t - window
        while pairs[lo][0] <= edge:
            old = pairs[lo][1]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
            lo += 1
        if len(counts) >= k:
            best = t
    return best


def _first(pair: tuple[int, object]) -> int:
    return pair[0]


def _evaluate(cond: Condition, base: Callable[[str], _Stream]) -> _Evaluated:
    streams = [base(t) for t in cond.types]
    if cond.where:
        where = cond.where
        streams = [_Stream([e for e in s.events if _matches_where(e, where)]) for s in streams]
    k, window = cond.min_count, cond.window_seconds
    if cond.distinct is None:
        streams = [s for s in streams if s.times]
        if sum(len(s.times) for s in streams) < k:
            return _Evaluated(streams, None)
        if window is None:
            return _Evaluated(streams, max(s.times[-1] for s in streams))
        times = (
            streams[0].times if len(streams) == 1 else sorted(chain(*(s.times for s in streams)))
        )
        return _Evaluated(streams, _latest_count(times, k, window))
    distinct = cond.distinct
    keyed: list[_Stream] = []
    pairs: list[tuple[int, object]] = []
    for stream in streams:
        kept = []
        for e in stream.events:
            value = _field_value(e, distinct)
            if value is not None:
                kept.append(e)
                pairs.append((e.at, _value_key(value)))
        if kept:
            keyed.append(_Stream(kept))
    if not pairs:
        return _Evaluated(keyed, None)
    pairs.sort(key=_first)
    return _Evaluated(keyed, _latest_distinct(pairs, k, window))


def _witnesses(rule: Rule, evaluated: Mapping[Condition, _Evaluated]) -> tuple[int, ...]:
    """The latest events, by (at, id), in the window of each condition at its time."""
    chosen: set[tuple[int, int]] = set()
    for cond in rule.conditions:
        result = evaluated[cond]
        t = result.time
        assert t is not None  # only called for fired rules
        window = cond.window_seconds
        for stream in result.streams:
            times = stream.times
            hi = bisect.bisect_right(times, t)
            lo = 0 if window is None else bisect.bisect_right(times, t - window)
            if hi <= lo:
                continue
            # The latest MAX_WITNESS_EVENTS times in the window, and every event tying with
            # the oldest of them, so that the choice by (at, id) below does not depend on
            # the input order.
            floor = times[max(lo, hi - MAX_WITNESS_EVENTS)]
            chosen.update([(e.at, e.id) for e in stream.events if floor <= e.at <= t])
    latest = heapq.nlargest(MAX_WITNESS_EVENTS, chosen)
    return tuple(i for _, i in reversed(latest))


def assess(events: Sequence[FraudEvent], rules: RuleSet, now: int) -> Assessment:
    """Assess one user's event history.

    Pure and deterministic: the result depends only on the events (as a set, not their
    order), the rules and ``now``. The module docstring states the semantics.

    Args:
        events: The user's events (any order; ids unique).
        rules: The rule set.
        now: Unix seconds to assess at (the server's clock).

    Returns:
        The verdict, the score and the fired rules with the events that made them fire.
    """
    buckets: dict[str, list[FraudEvent]] = {t: [] for t in rules.types_used}
    server_only = rules.server_only_types
    get = buckets.get
    for event in events:
        bucket = get(event.type)
        if bucket is None:
            continue
        if event.source != "server" and event.type in server_only:
            continue
        bucket.append(event)

    prepared: dict[str, _Stream] = {}

    def base(type_: str) -> _Stream:
        stream = prepared.get(type_)
        if stream is None:
            stream = prepared[type_] = _Stream(buckets[type_], now)
        return stream

    evaluated: dict[Condition, _Evaluated] = {}
    fired: list[FiredRule] = []
    score = 0.0
    stopped = False
    for rule in rules.rules:
        times: list[int] = []
        for cond in rule.conditions:
            result = evaluated.get(cond)
            if result is None:
                result = evaluated[cond] = _evaluate(cond, base)
            if result.time is None:
                break
            times.append(result.time)
        else:
            at = min(times)
            if rule.kind == "stop":
                stopped = True
                fired.append(
                    FiredRule(
                        rule.id, "stop", 0.0, _witnesses(rule, evaluated), rule.description, at, 0.0
                    )
                )
                continue
            points = rule.points * rule.decay.factor(now - at)
            if points > 0.0:
                score += points
                fired.append(
                    FiredRule(
                        rule.id,
                        "points",
                        points,
                        _witnesses(rule, evaluated),
                        rule.description,
                        at,
                        rule.points,
                    )
                )
    if stopped or score >= rules.thresholds.malicious:
        verdict = Verdict.MALICIOUS
    elif score >= rules.thresholds.suspicious:
        verdict = Verdict.SUSPICIOUS
    else:
        verdict = Verdict.OK
    considered = sum(
        len(prepared[t].times) if t in prepared else sum(1 for e in bucket if e.at <= now)
        for t, bucket in buckets.items()
    )
    return Assessment(verdict, score, tuple(fired), rules.version, rules.digest, now, considered)
