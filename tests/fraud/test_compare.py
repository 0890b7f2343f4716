"""Replaying histories under a candidate rule set shows which verdicts would change."""

from __future__ import annotations

from modelseal.fraud import RuleSet, Verdict
from modelseal.fraud.compare import compare_rules
from tests.fraud.conftest import NOW, ev

CURRENT = RuleSet.default()
STRICTER = RuleSet.loads(
    """
version = "candidate"
[thresholds]
suspicious = 10.0
malicious = 30.0

[[points]]
id = "emulator"
description = "emulator"
points = 30.0
decay = { kind = "none" }
when = [{ types = ["emulator_detected"] }]
"""
)


def test_the_comparison_lists_exactly_the_users_whose_verdict_changes() -> None:
    histories = {
        3: [ev("emulator_detected", NOW)],  # suspicious -> malicious
        1: [],  # ok -> ok
        2: [ev("honey_token_used", NOW - 10)],  # malicious -> ok (no such stop factor)
    }
    result = compare_rules(histories, CURRENT, STRICTER, NOW)
    assert result.users == 3
    assert [c.user_id for c in result.changes] == [2, 3]
    two, three = result.changes
    assert (two.before.verdict, two.after.verdict, two.stricter) == (
        Verdict.MALICIOUS,
        Verdict.OK,
        False,
    )
    assert (three.before.verdict, three.after.verdict, three.stricter) == (
        Verdict.SUSPICIOUS,
        Verdict.MALICIOUS,
        True,
    )
    assert three.after.rules_version == "candidate"
    assert result.before == {Verdict.OK: 1, Verdict.SUSPICIOUS: 1, Verdict.MALICIOUS: 1}
    assert result.after == {Verdict.OK: 2, Verdict.MALICIOUS: 1}
    text = result.summary()
    assert "user 3: suspicious -> malicious" in text
    assert "suspicious: 1 -> 0" in text


def test_the_same_rules_change_nothing() -> None:
    histories = {1: [ev("emulator_detected", NOW)], 2: [ev("honey_token_used", NOW)]}
    assert compare_rules(histories, CURRENT, CURRENT, NOW).changes == ()
