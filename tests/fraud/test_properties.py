"""Properties of ``assess`` on generated histories and generated rule sets (Hypothesis).

* Adding an event (with ``at <= now``) never lowers the verdict, the score, any rule's
  points, or the set of stop factors that fired (at a fixed ``now``).
* The same history gives the same assessment, explanation included, in any input order.
* Events after ``now`` change nothing.
* The score is the sum of the fired points rules' points, never negative.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.fraud import Assessment, FraudEvent, RuleSet, assess
from tests.fraud.conftest import NOW, source_of

DEFAULT = RuleSet.default()
POOL = [
    "rate_limited",
    "quota_exceeded",
    "device_registered",
    "root_detected",
    "hooking_framework_detected",
]
HONEY = [
    "honey_token_used",
    "same_key_other_device",
    "link_tampered",
    "credential_failure",
    "emulator_detected",
]
TYPES = [
    *sorted({t for r in DEFAULT.rules for c in r.conditions for t in c.types}),
    "access_error",
    "unused_type",
]

_DETAILS = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        ),
        "other_user": st.sampled_from([True, False, "true"]),
        "signal": st.sampled_from(["unlocked_bootloader", "debuggable"]),
    },
)


def _events(
    types: list[str], *, span: int
) -> st.SearchStrategy[list[tuple[str, int, str, str | None, dict[str, object]]]]:
    one = st.tuples(
        st.sampled_from(types),
        st.one_of(st.integers(0, span), st.sampled_from([0, 1, span // 2, span])).map(
            lambda d: NOW - d
        ),
        st.sampled_from(["natural", "natural", "natural", "app", "server"]),
        st.sampled_from(["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", None]),
        _DETAILS,
    )
    return st.lists(one, max_size=60)


def _build(
    raw: list[tuple[str, int, str, str | None, dict[str, object]]], first_id: int = 1
) -> list[FraudEvent]:
    return [
        FraudEvent(first_id + i, t, at, source_of(t) if src == "natural" else src, 1, dev, details)
        for i, (t, at, src, dev, details) in enumerate(raw)
    ]


def _assert_not_lower(before: Assessment, after: Assessment) -> None:
    assert after.verdict >= before.verdict
    assert after.score >= before.score
    stops_before = {f.rule_id for f in before.fired if f.kind == "stop"}
    stops_after = {f.rule_id for f in after.fired if f.kind == "stop"}
    assert stops_before <= stops_after
    points_after = {f.rule_id: f.points for f in after.fired if f.kind == "points"}
    for fired in before.fired:
        if fired.kind == "points":
            assert points_after.get(fired.rule_id, 0.0) >= fired.points


def _assert_consistent(result: Assessment) -> None:
    assert result.score >= 0.0
    assert result.score == sum(f.points for f in result.fired if f.kind == "points")
    assert all(f.points > 0 for f in result.fired if f.kind == "points")


# --- generated rule sets ------------------------------------------------------------------


@st.composite
def _rules_text(draw: st.DrawFn) -> str:
    lines = ['version = "gen"', "[thresholds]"]
    suspicious = draw(st.integers(1, 60))
    lines += [
        f"suspicious = {suspicious}.0",
        f"malicious = {suspicious + draw(st.integers(0, 60))}.0",
    ]
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["stop", "points", "points", "points"]))
        lines += [f"[[{kind}]]", f'id = "r{i}"', 'description = "generated"']
        if kind == "points":
            lines.append(f"points = {draw(st.integers(1, 80))}.0")
            decay = draw(st.sampled_from(["half_life", "linear", "none"]))
            if decay == "none":
                lines.append('decay = { kind = "none" }')
            else:
                lines.append(
                    f'decay = {{ kind = "{decay}", seconds = {draw(st.integers(1, 400))} }}'
                )
        conditions = []
        for _ in range(draw(st.integers(1, 2))):
            types = draw(
                st.lists(st.sampled_from(POOL + HONEY), min_size=1, max_size=3, unique=True)
            )
            parts = [
                f"types = {types!r}".replace("'", '"'),
                f"min_count = {draw(st.integers(1, 4))}",
            ]
            window = draw(st.one_of(st.none(), st.integers(1, 150)))
            if window is not None:
                parts.append(f"window_seconds = {window}")
            distinct = draw(st.sampled_from([None, None, "device_id", "details.ip"]))
            if distinct is not None:
                parts.append(f'distinct = "{distinct}"')
            if draw(st.booleans()) and draw(st.booleans()):
                parts.append("where = { other_user = true }")
            conditions.append("{ " + ", ".join(parts) + " }")
        lines.append("when = [" + ", ".join(conditions) + "]")
    return "\n".join(lines) + "\n"


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(raw=_events(TYPES, span=40 * 86400), extra=_events(TYPES, span=40 * 86400))
def test_adding_events_never_lowers_the_default_verdict(raw, extra) -> None:  # type: ignore[no-untyped-def]
    history = _build(raw)
    more = history + _build(extra, first_id=10_000)
    before, after = assess(history, DEFAULT, NOW), assess(more, DEFAULT, NOW)
    _assert_consistent(before)
    _assert_consistent(after)
    _assert_not_lower(before, after)


@SETTINGS
@given(
    text=_rules_text(), raw=_events(POOL + HONEY, span=300), extra=_events(POOL + HONEY, span=300)
)
def test_adding_events_never_lowers_the_verdict_for_any_rule_set(text, raw, extra) -> None:  # type: ignore[no-untyped-def]
    rules = RuleSet.loads(text)
    history = _build(raw)
    for event in _build(extra, first_id=10_000):
        grown = [*history, event]
        _assert_not_lower(assess(history, rules, NOW), assess(grown, rules, NOW))
        history = grown


@SETTINGS
@given(text=_rules_text(), raw=_events(POOL + HONEY, span=300), seed=st.integers(0, 2**32 - 1))
def test_the_same_history_in_any_order_gives_the_same_assessment(text, raw, seed) -> None:  # type: ignore[no-untyped-def]
    rules = RuleSet.loads(text)
    history = _build(raw)
    first = assess(history, rules, NOW)
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    again = assess(shuffled, rules, NOW)
    assert again == first
    assert again.explain() == first.explain()
    assert again.to_json() == first.to_json()
    assert assess(tuple(reversed(history)), rules, NOW) == first
    _assert_consistent(first)


@SETTINGS
@given(raw=_events(TYPES, span=40 * 86400), seed=st.integers(0, 2**32 - 1))
def test_the_default_rules_are_order_independent(raw, seed) -> None:  # type: ignore[no-untyped-def]
    history = _build(raw)
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    assert assess(shuffled, DEFAULT, NOW) == assess(history, DEFAULT, NOW)


@SETTINGS
@given(
    text=_rules_text(), raw=_events(POOL + HONEY, span=300), future=_events(POOL + HONEY, span=300)
)
def test_events_after_now_change_nothing(text, raw, future) -> None:  # type: ignore[no-untyped-def]
    rules = RuleSet.loads(text)
    history = _build(raw)
    later = [
        FraudEvent(e.id, e.type, 2 * NOW - e.at + 1, e.source, e.user_id, e.device_id, e.details)
        for e in _build(future, first_id=10_000)
    ]
    assert assess(history + later, rules, NOW) == assess(history, rules, NOW)
