"""What a change of rules would do: assess the same histories under two rule sets.

Operators run this before deploying edited rules (``docs/ANTI_FRAUD.md``, "Changing rules
safely"). Because :func:`~modelseal.fraud.engine.assess` is pure, replaying stored histories
under the new rules shows exactly the verdicts the server would compute after the switch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelseal.fraud.engine import Assessment, Verdict, assess
from modelseal.fraud.events import FraudEvent
from modelseal.fraud.rules import RuleSet

__all__ = ["RulesComparison", "VerdictChange", "compare_rules"]


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """One user whose verdict differs between the two rule sets.

    Attributes:
        user_id: The user.
        before: The assessment under the current rules.
        after: The assessment under the new rules.
    """

    user_id: int
    before: Assessment
    after: Assessment

    @property
    def stricter(self) -> bool:
        """Whether the new rules give a more severe verdict."""
        return self.after.verdict > self.before.verdict


@dataclass(frozen=True, slots=True)
class RulesComparison:
    """The outcome of :func:`compare_rules`.

    Attributes:
        users: Users assessed.
        before: Count of users per verdict under the current rules.
        after: Count of users per verdict under the new rules.
        changes: Users whose verdict changed, by user id.
    """

    users: int
    before: Mapping[Verdict, int]
    after: Mapping[Verdict, int]
    changes: tuple[VerdictChange, ...]

    def summary(self) -> str:
        """One line per verdict, then one line per changed user."""
        lines = [
            f"{verdict.value}: {self.before.get(verdict, 0)} -> {self.after.get(verdict, 0)}"
            for verdict in Verdict
        ]
        lines += [
            f"user {c.user_id}: {c.before.verdict.value} -> {c.after.verdict.value} "
            f"(score {c.before.score:.1f} -> {c.after.score:.1f})"
            for c in self.changes
        ]
        return "\n".join(lines)


def compare_rules(
    histories: Mapping[int, Sequence[FraudEvent]], current: RuleSet, new: RuleSet, now: int
) -> RulesComparison:
    """Assess every history under both rule sets at the same ``now``.

    Args:
        histories: Events per user id.
        current: The rules in force.
        new: The candidate rules.
        now: Unix seconds to assess at.

    Returns:
        Verdict counts under each rule set and the users whose verdict changed, by user id.
    """
    before: Counter[Verdict] = Counter()
    after: Counter[Verdict] = Counter()
    changes = []
    for user_id in sorted(histories):
        events = histories[user_id]
        old_result, new_result = assess(events, current, now), assess(events, new, now)
        before[old_result.verdict] += 1
        after[new_result.verdict] += 1
        if old_result.verdict is not new_result.verdict:
            changes.append(VerdictChange(user_id, old_result, new_result))
    return RulesComparison(len(histories), dict(before), dict(after), tuple(changes))
