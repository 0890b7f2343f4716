"""Loading and validating rules files: every mistake is refused with a path and a stable code."""

from __future__ import annotations

import pickle
from importlib import resources
from pathlib import Path

import pytest

from modelseal.fraud import FraudRulesError, RuleSet, assess
from modelseal.fraud.events import APP_EVENT_TYPES, SERVER_EVENT_TYPES
from tests.fraud.conftest import NOW, ev

GOOD = """
version = "ops-7"
description = "test"

[thresholds]
suspicious = 10.0
malicious = 20.0

[events]
extra_types = ["partner_flagged"]

[[stop]]
id = "honey"
description = "decoy"
when = [{ types = ["honey_token_used"] }]

[[points]]
id = "partner"
description = "a partner flagged the user"
points = 15
decay = { kind = "linear", seconds = 3600 }
when = [{ types = ["partner_flagged"], min_count = 2, window_seconds = 60 }]
"""


def test_the_packaged_default_rules_load_through_importlib_resources() -> None:
    data = resources.files("modelseal.fraud").joinpath("default_rules.toml").read_bytes()
    default = RuleSet.default()
    assert RuleSet.loads(data).digest == default.digest
    assert default.version
    assert default.rules
    assert RuleSet.default() is default  # parsed once


def test_every_built_in_event_type_is_known_to_the_default_rules() -> None:
    assert RuleSet.default().event_types >= APP_EVENT_TYPES | SERVER_EVENT_TYPES
    assert not APP_EVENT_TYPES & SERVER_EVENT_TYPES


def test_a_valid_file_loads_and_its_version_and_digest_reach_every_assessment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    rules = RuleSet.load(path)
    assert rules.version == "ops-7"
    assert rules.thresholds.suspicious == 10.0
    assert [r.id for r in rules.rules] == ["honey", "partner"]
    assert rules.rule("partner").points == 15.0  # an integer is a valid float
    result = assess(
        [ev("partner_flagged", NOW, source="server"), ev("partner_flagged", NOW - 59)], rules, NOW
    )
    assert result.rules_version == "ops-7"
    assert result.rules_digest == rules.digest
    assert result.score == 15.0
    assert "partner" in repr(rules.summary())


def test_an_edit_without_a_version_bump_still_changes_the_digest() -> None:
    assert (
        RuleSet.loads(GOOD).digest
        != RuleSet.loads(GOOD.replace("points = 15", "points = 16")).digest
    )


def _mutations() -> list[tuple[str, str, str]]:
    return [
        ("unknown top-level key", "bogus = 1\n" + GOOD, "bogus"),
        (
            "unknown key in a rule",
            GOOD.replace('id = "honey"', 'id = "honey"\nweight = 3'),
            "stop[0].weight",
        ),
        (
            "unknown key in a condition",
            GOOD.replace("min_count = 2,", "min_count = 2, within = 5,"),
            "points[0].when[0].within",
        ),
        (
            "unknown event type",
            GOOD.replace('["honey_token_used"]', '["honey_tokn_used"]'),
            "stop[0].when[0].types[0]",
        ),
        (
            "extra type shadows a built-in",
            GOOD.replace('["partner_flagged"]', '["root_detected"]'),
            "events.extra_types[0]",
        ),
        ("duplicate rule id", GOOD.replace('id = "partner"', 'id = "honey"'), "points[0].id"),
        (
            "suspicious above malicious",
            GOOD.replace("suspicious = 10.0", "suspicious = 30.0"),
            "thresholds.suspicious",
        ),
        ("zero points", GOOD.replace("points = 15", "points = 0"), "points[0].points"),
        ("negative points", GOOD.replace("points = 15", "points = -5"), "points[0].points"),
        ("infinite points", GOOD.replace("points = 15", "points = inf"), "points[0].points"),
        ("points as a string", GOOD.replace("points = 15", 'points = "15"'), "points[0].points"),
        (
            "count as a float",
            GOOD.replace("min_count = 2", "min_count = 2.0"),
            "points[0].when[0].min_count",
        ),
        (
            "zero count",
            GOOD.replace("min_count = 2", "min_count = 0"),
            "points[0].when[0].min_count",
        ),
        (
            "zero window",
            GOOD.replace("window_seconds = 60", "window_seconds = 0"),
            "points[0].when[0].window_seconds",
        ),
        ("unknown decay", GOOD.replace('kind = "linear"', 'kind = "cubic"'), "points[0].decay"),
        (
            "decay without seconds",
            GOOD.replace('{ kind = "linear", seconds = 3600 }', '{ kind = "linear" }'),
            "points[0].decay.seconds",
        ),
        (
            "points rule without decay",
            GOOD.replace('decay = { kind = "linear", seconds = 3600 }\n', ""),
            "points[0].decay",
        ),
        (
            "stop rule with points",
            GOOD.replace('id = "honey"', 'id = "honey"\npoints = 5.0'),
            "stop[0].points",
        ),
        (
            "no conditions",
            GOOD.replace('when = [{ types = ["honey_token_used"] }]', "when = []"),
            "stop[0].when",
        ),
        (
            "no types",
            GOOD.replace('types = ["honey_token_used"]', "types = []"),
            "stop[0].when[0].types",
        ),
        (
            "bad distinct field",
            GOOD.replace("min_count = 2,", 'min_count = 2, distinct = "ip",'),
            "points[0].when[0].distinct",
        ),
        ("bad rule id", GOOD.replace('id = "honey"', 'id = "Honey Pot"'), "stop[0].id"),
        ("bad version", GOOD.replace('version = "ops-7"', 'version = "ops 7"'), "version"),
        ("missing version", GOOD.replace('version = "ops-7"', ""), "version"),
        (
            "missing thresholds",
            GOOD.replace("[thresholds]\nsuspicious = 10.0\nmalicious = 20.0\n", ""),
            "thresholds",
        ),
        (
            "nested where value",
            GOOD.replace("min_count = 2,", "min_count = 2, where = { a = [1] },"),
            "points[0].when[0].where.a",
        ),
        (
            "float where value",
            GOOD.replace("min_count = 2,", "min_count = 2, where = { a = 1.5 },"),
            "points[0].when[0].where.a",
        ),
        (
            "long where value",
            GOOD.replace("min_count = 2,", f'min_count = 2, where = {{ a = "{"x" * 257}" }},'),
            "points[0].when[0].where.a",
        ),
        (
            "window as a string",
            GOOD.replace("window_seconds = 60", 'window_seconds = "60"'),
            "points[0].when[0].window_seconds",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "path"), [(t, p) for _, t, p in _mutations()], ids=[n for n, _, _ in _mutations()]
)
def test_a_broken_rules_file_is_refused_with_the_path_of_the_mistake(text: str, path: str) -> None:
    with pytest.raises(FraudRulesError) as info:
        RuleSet.loads(text, "ops.toml")
    assert info.value.code == "fraud_rules_invalid"
    assert info.value.source == "ops.toml"
    assert info.value.path == path, info.value.message
    assert info.value.message.startswith(f"ops.toml: {path}")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"version = \n", "not valid TOML"),
        (b"version = 'a'\nversion = 'b'\n", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"#" * (1 << 20) + b"\n", "at most"),
    ],
    ids=["syntax", "duplicate key", "not utf-8", "too large"],
)
def test_unparseable_files_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(FraudRulesError, match=match) as info:
        RuleSet.loads(data)
    assert info.value.code == "fraud_rules_invalid"
    assert info.value.path == ""


def test_a_missing_file_is_refused_with_the_same_code(tmp_path: Path) -> None:
    with pytest.raises(FraudRulesError, match="cannot read") as info:
        RuleSet.load(tmp_path / "absent.toml")
    assert info.value.code == "fraud_rules_invalid"


def test_the_error_survives_pickling_with_its_path() -> None:
    with pytest.raises(FraudRulesError) as info:
        RuleSet.loads("bogus = 1\n" + GOOD, "x.toml")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.code, copy.source, copy.path) == ("fraud_rules_invalid", "x.toml", "bogus")


def test_a_loaded_rule_set_cannot_be_changed() -> None:
    rules = RuleSet.loads(GOOD)
    with pytest.raises(AttributeError):
        rules.version = "forged"
    with pytest.raises(AttributeError):
        rules.thresholds.malicious = 1e9  # type: ignore[misc]
    assert rules.version == "ops-7"


def test_rule_lookup_of_an_unknown_id_raises_key_error() -> None:
    with pytest.raises(KeyError):
        RuleSet.loads(GOOD).rule("nope")
