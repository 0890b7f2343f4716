"""Each stop factor of the default rules, alone, makes the user malicious; less does not."""

from __future__ import annotations

import pytest

from modelseal.fraud import RuleSet, Verdict, assess
from modelseal.fraud.events import SERVER_EVENT_TYPES
from tests.fraud.conftest import NOW, ev, satisfy

RULES = RuleSet.default()
STOP_RULES = [r for r in RULES.rules if r.kind == "stop"]


def test_the_default_rules_have_the_stop_factors_the_issue_names() -> None:
    ids = {r.id for r in STOP_RULES}
    assert {
        "honey_token_used",
        "app_signature_invalid",
        "attestation_failed",
        "attestation_counter_replayed",
        "clone_app_key_reuse",
        "key_of_other_user",
        "link_tampering_repeated",
    } <= ids


@pytest.mark.parametrize("rule", STOP_RULES, ids=lambda r: r.id)
def test_each_stop_factor_alone_gives_malicious(rule) -> None:  # type: ignore[no-untyped-def]
    events = [e for cond in rule.conditions for e in satisfy(cond, NOW - 10)]
    result = assess(events, RULES, NOW)
    assert result.verdict is Verdict.MALICIOUS
    assert result.score < RULES.thresholds.malicious  # malicious by the stop factor itself
    fired = [f for f in result.fired if f.kind == "stop"]
    assert rule.id in [f.rule_id for f in fired]
    mine = next(f for f in fired if f.rule_id == rule.id)
    assert set(mine.event_ids) <= {e.id for e in events}
    assert mine.event_ids


@pytest.mark.parametrize("rule", STOP_RULES, ids=lambda r: r.id)
def test_a_stop_factor_does_not_decay(rule) -> None:  # type: ignore[no-untyped-def]
    events = [e for cond in rule.conditions for e in satisfy(cond, NOW - 10)]
    years_later = NOW + 5 * 365 * 86400
    assert assess(events, RULES, years_later).verdict is Verdict.MALICIOUS


@pytest.mark.parametrize(
    "rule",
    [r for r in STOP_RULES if any(c.min_count > 1 for c in r.conditions)],
    ids=lambda r: r.id,
)
def test_one_event_short_of_a_counting_stop_factor_is_not_a_stop(rule) -> None:  # type: ignore[no-untyped-def]
    events = [
        e for cond in rule.conditions for e in satisfy(cond, NOW - 10, count=cond.min_count - 1)
    ]
    result = assess(events, RULES, NOW)
    assert rule.id not in [f.rule_id for f in result.fired]


@pytest.mark.parametrize(
    "rule",
    [
        r
        for r in STOP_RULES
        if any(c.window_seconds is not None and c.min_count > 1 for c in r.conditions)
    ],
    ids=lambda r: r.id,
)
def test_a_counting_stop_factor_spread_over_its_whole_window_does_not_fire(rule) -> None:  # type: ignore[no-untyped-def]
    # Spanning exactly the window puts the first event just outside it: (t - W, t].
    events = [
        e
        for cond in rule.conditions
        for e in satisfy(cond, NOW - 10, span=cond.window_seconds or 0)
    ]
    assert rule.id not in [f.rule_id for f in assess(events, RULES, NOW).fired]


@pytest.mark.parametrize(
    "type_",
    sorted({t for r in STOP_RULES for c in r.conditions for t in c.types} & SERVER_EVENT_TYPES),
)
def test_server_facts_reported_by_the_app_are_ignored(type_: str) -> None:
    events = [
        ev(type_, NOW - i, source="app", device_id=f"d{i}", other_user=True) for i in range(5)
    ]
    result = assess(events, RULES, NOW)
    assert result.verdict is Verdict.OK
    assert result.events_considered == 0


def test_a_key_reused_on_the_same_users_device_is_not_a_stop_but_scores() -> None:
    result = assess([ev("same_key_other_device", NOW, other_user=False)], RULES, NOW)
    assert [f.rule_id for f in result.fired] == ["key_on_second_device"]
    assert result.verdict is Verdict.SUSPICIOUS


def test_other_user_must_be_a_boolean_true_not_a_string() -> None:
    result = assess([ev("same_key_other_device", NOW - 5, other_user="true")], RULES, NOW)
    assert "key_of_other_user" not in [f.rule_id for f in result.fired]


def test_events_after_now_do_not_count() -> None:
    result = assess([ev("honey_token_used", NOW + 1)], RULES, NOW)
    assert result.verdict is Verdict.OK
    assert assess([ev("honey_token_used", NOW)], RULES, NOW).verdict is Verdict.MALICIOUS


def test_legacy_access_error_link_invalid_counts_as_tampering() -> None:
    from modelseal.fraud import fraud_event

    events = [
        fraud_event(
            id=i,
            type_="access_error",
            at=NOW - i,
            source="server",
            user_id=1,
            device_id="d",
            details={"reason": "link_invalid", "what": "download"},
        )
        for i in range(1, 4)
    ]
    result = assess(events, RULES, NOW)
    assert result.verdict is Verdict.MALICIOUS
    assert "link_tampering_repeated" in [f.rule_id for f in result.fired]


def _linked(blocked: list[int], *, new_account: bool) -> list:  # type: ignore[type-arg]
    return [
        ev(
            "linked_account_blocked",
            NOW - 60,
            device_id=None,
            linked_user=other,
            network="203.0.113.0/24",
            new_account=new_account,
        )
        for other in blocked
    ]


@pytest.mark.parametrize("count", [1, 2, 5, 19])
def test_network_linkage_of_an_established_account_never_blocks(count: int) -> None:
    # Honest neighbours behind one NAT: however many blocked accounts shared the network,
    # linkage alone limits (suspicious) and never blocks.
    result = assess(_linked(list(range(100, 100 + count)), new_account=False), RULES, NOW)
    assert result.verdict is Verdict.SUSPICIOUS
    assert not result.stop_factors


def test_linkage_and_an_own_signal_together_block() -> None:
    # Corroboration: the account's own evidence on top of two blocked neighbours.
    events = [*_linked([100, 101], new_account=False), ev("same_key_other_device", NOW - 60)]
    assert assess(events, RULES, NOW).verdict is Verdict.MALICIOUS


@pytest.mark.parametrize(("count", "verdict"), [(1, Verdict.SUSPICIOUS), (2, Verdict.MALICIOUS)])
def test_a_fresh_account_on_a_network_of_two_blocked_accounts_is_blocked(
    count: int, verdict: Verdict
) -> None:
    result = assess(_linked(list(range(100, 100 + count)), new_account=True), RULES, NOW)
    assert result.verdict is verdict
    fired = {f.rule_id for f in result.stop_factors}
    assert ("fresh_account_on_farm_network" in fired) is (verdict is Verdict.MALICIOUS)
