"""The anti-fraud engine: event vocabulary, rules file, scoring and honey tokens.

Pure library code: no I/O except reading a rules file, no web framework, no database. The
server (``modelseal.server``) records events, feeds a user's history to :func:`assess` and
applies the verdict; this package only decides.

- :mod:`~modelseal.fraud.events`: event types, :class:`FraudEvent`, the ``POST /v1/events``
  schema;
- :mod:`~modelseal.fraud.rules`: the TOML rules file and :class:`RuleSet`;
- :mod:`~modelseal.fraud.engine`: :func:`assess` → :class:`Assessment`;
- :mod:`~modelseal.fraud.honey`: decoy model ids, accounts and device keys;
- :mod:`~modelseal.fraud.compare`: replay histories under a candidate rule set.
"""

from __future__ import annotations

from modelseal.fraud.engine import Assessment, FiredRule, Verdict, assess
from modelseal.fraud.errors import FraudRulesError
from modelseal.fraud.events import (
    AppEventBatchIn,
    AppEventIn,
    AppEventType,
    EventSource,
    FraudEvent,
    ServerEventType,
    canonical_type,
    fraud_event,
)
from modelseal.fraud.honey import HoneyKind, HoneyTokens
from modelseal.fraud.rules import Condition, Decay, Rule, RuleSet, Thresholds

__all__ = [
    "AppEventBatchIn",
    "AppEventIn",
    "AppEventType",
    "Assessment",
    "Condition",
    "Decay",
    "EventSource",
    "FiredRule",
    "FraudEvent",
    "FraudRulesError",
    "HoneyKind",
    "HoneyTokens",
    "Rule",
    "RuleSet",
    "ServerEventType",
    "Thresholds",
    "Verdict",
    "assess",
    "canonical_type",
    "fraud_event",
]
