"""Truth tables of the points rules: conditions x counts x window edges x decay.

The generic tables run over every points rule of the packaged rules, so a rule added to
``default_rules.toml`` is covered at once; the hand-written tables below pin the semantics on
small rule sets whose numbers are easy to check by hand.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from modelseal.fraud import RuleSet, Verdict, assess
from modelseal.fraud.rules import Rule
from tests.fraud.conftest import NOW, ev, satisfy

RULES = RuleSet.default()
POINTS_RULES = [r for r in RULES.rules if r.kind == "points"]


def _fired(rule: Rule, events: list[Any], now: int = NOW) -> float | None:
    result = assess(events, RULES, now)
    for fired in result.fired:
        if fired.rule_id == rule.id:
            return fired.points
    return None


def _cases() -> Iterator[Any]:
    for rule in POINTS_RULES:
        yield pytest.param(rule, "all_conditions_met", id=f"{rule.id}-met")
        for i, cond in enumerate(rule.conditions):
            yield pytest.param(rule, f"short:{i}", id=f"{rule.id}-cond{i}-one-short")
            if cond.window_seconds is not None and cond.min_count > 1:
                yield pytest.param(rule, f"edge_in:{i}", id=f"{rule.id}-cond{i}-span-W-1")
                yield pytest.param(rule, f"edge_out:{i}", id=f"{rule.id}-cond{i}-span-W")
            if cond.distinct is not None and cond.min_count > 1:
                yield pytest.param(rule, f"same_value:{i}", id=f"{rule.id}-cond{i}-one-value")
                yield pytest.param(rule, f"no_value:{i}", id=f"{rule.id}-cond{i}-field-missing")
        yield pytest.param(rule, "decay_1", id=f"{rule.id}-decay-half")
        yield pytest.param(rule, "decay_2", id=f"{rule.id}-decay-full")


@pytest.mark.parametrize(("rule", "case"), list(_cases()))
def test_points_rule_truth_table(rule: Rule, case: str) -> None:
    name, _, index = case.partition(":")
    which = int(index) if index else -1
    events = []
    for i, cond in enumerate(rule.conditions):
        if i != which:
            events += satisfy(cond, NOW)
        elif name == "short":
            events += satisfy(cond, NOW, count=cond.min_count - 1)
        elif name == "edge_in":
            events += satisfy(cond, NOW, span=(cond.window_seconds or 0) - 1)
        elif name == "edge_out":
            events += satisfy(cond, NOW, span=cond.window_seconds or 0)
        elif name == "same_value":
            events += [
                ev(
                    cond.types[0],
                    NOW - j,
                    device_id="dev-same",
                    details={**dict(cond.where), **_same(cond)},
                )
                for j in range(cond.min_count)
            ]
        elif name == "no_value":
            events += [
                ev(cond.types[0], NOW - j, device_id=None, details=dict(cond.where))
                for j in range(cond.min_count)
            ]
    decay = rule.decay
    if name in ("all_conditions_met", "edge_in"):
        assert _fired(rule, events) == rule.points  # age 0: the full points
    elif name in ("short", "edge_out", "same_value", "no_value"):
        assert _fired(rule, events) is None
    elif name == "decay_1":
        # Half the half-life or linear window later: 2^-1/2 or 1/2 of the points.
        assert decay.seconds is not None
        later = NOW + decay.seconds // 2
        expected = rule.points * (math.sqrt(0.5) if decay.kind == "half_life" else 0.5)
        assert _fired(rule, events, later) == pytest.approx(expected, rel=1e-3)
    elif name == "decay_2":
        assert decay.seconds is not None
        later = NOW + decay.seconds
        if decay.kind == "half_life":
            assert _fired(rule, events, later) == pytest.approx(rule.points / 2)
        else:
            assert _fired(rule, events, later) is None  # linear decay reached 0
    else:  # pragma: no cover - the generator and this table are out of step
        raise AssertionError(case)


def _same(cond: Any) -> dict[str, str]:
    if cond.distinct is None or cond.distinct == "device_id":
        return {}
    return {cond.distinct.removeprefix("details."): "same"}


def test_every_points_rule_decays() -> None:
    # A permanent score would make a suspicious user suspicious for ever without an operator.
    assert all(r.decay.kind != "none" for r in POINTS_RULES)


# --- hand-written tables on small rule sets -------------------------------------------------

BASE = """
version = "t-1"
[thresholds]
suspicious = 30.0
malicious = 100.0
"""


def rules(body: str) -> RuleSet:
    return RuleSet.loads(BASE + body)


COUNT = rules(
    """
[[points]]
id = "burst"
description = "3 rate limits within 100 s"
points = 40.0
decay = { kind = "half_life", seconds = 1000 }
when = [{ types = ["rate_limited"], min_count = 3, window_seconds = 100 }]
"""
)


@pytest.mark.parametrize(
    ("times", "now", "points"),
    [
        ([], NOW, None),
        ([NOW], NOW, None),
        ([NOW - 1, NOW], NOW, None),
        ([NOW - 99, NOW - 50, NOW], NOW, 40.0),  # span 99 < 100: inside
        ([NOW - 100, NOW - 50, NOW], NOW, None),  # span 100: the first is out
        ([NOW, NOW, NOW], NOW, 40.0),  # ties count
        ([NOW - 1002, NOW - 1001, NOW - 1000], NOW, 20.0),  # one half-life old
        ([NOW - 2002, NOW - 2001, NOW - 2000], NOW, 10.0),  # two half-lives old
        # The latest burst counts: an old burst and a fresh one give the fresh one's points.
        ([NOW - 2000, NOW - 1999, NOW - 1998, NOW - 2, NOW - 1, NOW], NOW, 40.0),
        # Four events, the first three a burst ending at NOW - 900, the last alone: T = NOW - 900.
        ([NOW - 950, NOW - 925, NOW - 900, NOW], NOW, 40.0 * 2 ** (-0.9)),
        ([NOW - 10, NOW - 5, NOW + 1], NOW, None),  # the future does not count
    ],
)
def test_count_within_window_table(times: list[int], now: int, points: float | None) -> None:
    result = assess([ev("rate_limited", t) for t in times], COUNT, now)
    got = result.fired[0].points if result.fired else None
    assert got == (None if points is None else pytest.approx(points))


CONJ = rules(
    """
[[points]]
id = "both"
description = "root and hooking both seen"
points = 40.0
decay = { kind = "half_life", seconds = 1000 }
when = [
  { types = ["root_detected", "jailbreak_detected"] },
  { types = ["hooking_framework_detected"], window_seconds = 500 },
]
"""
)


@pytest.mark.parametrize(
    ("events", "points"),
    [
        ([], None),
        ([("root_detected", NOW)], None),
        ([("hooking_framework_detected", NOW)], None),
        ([("root_detected", NOW), ("hooking_framework_detected", NOW)], 40.0),
        ([("jailbreak_detected", NOW), ("hooking_framework_detected", NOW)], 40.0),
        # T = min of the conditions' times: the stalest evidence sets the decay.
        ([("root_detected", NOW - 1000), ("hooking_framework_detected", NOW)], 20.0),
        ([("root_detected", NOW), ("hooking_framework_detected", NOW - 1000)], 20.0),
        ([("root_detected", NOW - 2000), ("hooking_framework_detected", NOW - 1000)], 10.0),
    ],
)
def test_conjunction_table(events: list[tuple[str, int]], points: float | None) -> None:
    result = assess([ev(t, at) for t, at in events], CONJ, NOW)
    got = result.fired[0].points if result.fired else None
    assert got == (None if points is None else pytest.approx(points))


DISTINCT = rules(
    """
[[points]]
id = "devices"
description = "3 distinct devices within 100 s"
points = 50.0
decay = { kind = "linear", seconds = 1000 }
when = [
  { types = ["device_registered"], distinct = "device_id", min_count = 3, window_seconds = 100 },
]

[[points]]
id = "ips"
description = "3 distinct addresses ever"
points = 10.0
decay = { kind = "none" }
when = [{ types = ["credential_failure"], distinct = "details.ip", min_count = 3 }]
"""
)


@pytest.mark.parametrize(
    ("devices", "points"),
    [
        ([("a", NOW), ("b", NOW)], None),
        ([("a", NOW), ("b", NOW), ("b", NOW)], None),
        ([("a", NOW), ("b", NOW), ("c", NOW)], 50.0),
        ([("a", NOW - 99), ("b", NOW - 1), ("c", NOW)], 50.0),
        ([("a", NOW - 100), ("b", NOW - 1), ("c", NOW)], None),
        ([("a", NOW - 100), ("b", NOW - 1), ("c", NOW), ("a", NOW)], 50.0),
        ([("a", NOW - 500), ("b", NOW - 500), ("c", NOW - 500)], 25.0),  # linear, half way
        ([("a", NOW - 1000), ("b", NOW - 1000), ("c", NOW - 1000)], None),  # linear, expired
        ([("a", NOW), ("b", NOW), (None, NOW), (None, NOW)], None),  # no device: not counted
    ],
)
def test_distinct_devices_table(
    devices: list[tuple[str | None, int]], points: float | None
) -> None:
    events = [ev("device_registered", at, device_id=d) for d, at in devices]
    result = assess(events, DISTINCT, NOW)
    got = next((f.points for f in result.fired if f.rule_id == "devices"), None)
    assert got == (None if points is None else pytest.approx(points))


@pytest.mark.parametrize(
    ("ips", "fired"),
    [
        (["1", "2"], False),
        (["1", "2", "2"], False),
        (["1", "2", "3"], True),
        (["1", "2", 3], True),
        (["1", "1", 1], False),  # the integer 1 and the string "1": two values, not three
        (["1", 1, True], True),  # "1", 1 and true: three values
    ],
)
def test_distinct_detail_table(ips: list[object], fired: bool) -> None:
    events = [ev("credential_failure", NOW - 10**6 * i, ip=ip) for i, ip in enumerate(ips)]
    result = assess(events, DISTINCT, NOW)
    assert ("ips" in [f.rule_id for f in result.fired]) is fired


THRESHOLDS = rules(
    """
[[points]]
id = "a"
description = "a"
points = 29.5
decay = { kind = "none" }
when = [{ types = ["emulator_detected"] }]

[[points]]
id = "b"
description = "b"
points = 0.5
decay = { kind = "none" }
when = [{ types = ["tls_pin_mismatch"] }]

[[points]]
id = "c"
description = "c"
points = 70.0
decay = { kind = "none" }
when = [{ types = ["clock_tampered"] }]
"""
)


@pytest.mark.parametrize(
    ("types", "score", "verdict"),
    [
        ([], 0.0, Verdict.OK),
        (["emulator_detected"], 29.5, Verdict.OK),
        (["emulator_detected", "tls_pin_mismatch"], 30.0, Verdict.SUSPICIOUS),  # >= threshold
        (["clock_tampered"], 70.0, Verdict.SUSPICIOUS),
        (["clock_tampered", "emulator_detected"], 99.5, Verdict.SUSPICIOUS),
        (["clock_tampered", "emulator_detected", "tls_pin_mismatch"], 100.0, Verdict.MALICIOUS),
        # One award per rule, however many events: points do not grow with repetition.
        (["emulator_detected"] * 50, 29.5, Verdict.OK),
    ],
)
def test_threshold_table(types: list[str], score: float, verdict: Verdict) -> None:
    result = assess([ev(t, NOW - 7) for t in types], THRESHOLDS, NOW)
    assert result.score == score
    assert result.verdict is verdict


WHERE = rules(
    """
[[points]]
id = "weak"
description = "unlocked bootloader"
points = 35.0
decay = { kind = "none" }
when = [
  { types = ["attestation_weak"], where = { signal = "unlocked_bootloader", strong = false } },
]
"""
)


@pytest.mark.parametrize(
    ("details", "fired"),
    [
        ({"signal": "unlocked_bootloader", "strong": False}, True),
        ({"signal": "unlocked_bootloader", "strong": False, "extra": 1}, True),
        ({"signal": "unlocked_bootloader"}, False),
        ({"signal": "unlocked_bootloader", "strong": 0}, False),  # 0 is not false
        ({"signal": "debuggable", "strong": False}, False),
        ({}, False),
    ],
)
def test_where_table(details: dict[str, object], fired: bool) -> None:
    result = assess([ev("attestation_weak", NOW, details=details)], WHERE, NOW)
    assert bool(result.fired) is fired
    assert (result.verdict is Verdict.SUSPICIOUS) is fired


# --- explanations --------------------------------------------------------------------------


def test_explanation_names_the_rules_and_the_events_in_their_window() -> None:
    old = [ev("rate_limited", NOW - 5000, id=1000 + i) for i in range(3)]
    fresh = [ev("rate_limited", NOW - i, id=2000 + i) for i in range(3)]
    result = assess(old + fresh, COUNT, NOW)
    (fired,) = result.fired
    assert fired.rule_id == "burst"
    assert fired.kind == "points"
    assert fired.fired_at == NOW
    assert fired.event_ids == (2002, 2001, 2000)  # by time: NOW-2, NOW-1, NOW
    assert fired.base_points == 40.0
    text = result.explain()
    assert "burst" in text
    assert "2000" in text
    assert "1000" not in text
    assert "suspicious" in text
    document = json.loads(json.dumps(result.to_json()))
    assert document["fired"][0]["event_ids"] == [2002, 2001, 2000]
    assert document["rules_version"] == "t-1"
    assert document["rules_digest"] == COUNT.digest


def test_explanation_lists_at_most_twenty_events_the_latest_by_time_then_id() -> None:
    events = [ev("rate_limited", NOW - (i // 5), id=i) for i in range(100)]
    (fired,) = assess(events, COUNT, NOW).fired
    assert len(fired.event_ids) == 20
    # Times NOW (ids 0-4), NOW-1 (5-9), NOW-2 (10-14), NOW-3 (15-19): oldest first, ids rising.
    assert fired.event_ids == tuple(range(15, 20)) + tuple(range(10, 15)) + tuple(
        range(5, 10)
    ) + tuple(range(5))


@pytest.mark.parametrize("seed", range(5))
def test_witnesses_among_ties_are_chosen_by_id_whatever_the_input_order(seed: int) -> None:
    events = [ev("rate_limited", NOW - (1 if i < 10 else 0), id=i) for i in range(60)]
    random.Random(seed).shuffle(events)
    (fired,) = assess(events, COUNT, NOW).fired
    assert fired.event_ids == tuple(range(40, 60))


def test_an_assessment_with_nothing_fired_says_so() -> None:
    result = assess([], COUNT, NOW)
    assert result.verdict is Verdict.OK
    assert result.score == 0.0
    assert "no rule fired" in result.explain()
    assert result.rules_version == "t-1"
    assert result.assessed_at == NOW
