"""The rules file: schema, validation and the compiled :class:`RuleSet`.

Rules live in a TOML file that operators edit (``default_rules.toml`` in this package is the
default; the format is described in ``docs/ANTI_FRAUD.md``). Loading validates the whole file
against a closed schema: unknown keys, unknown event types, duplicate rule ids and impossible
thresholds are refused with :class:`~modelseal.fraud.errors.FraudRulesError` (code
``fraud_rules_invalid``), whose message names the file and the path of the offending member.
A rule set is immutable once loaded; its ``version`` (set by the operator) and ``digest``
(SHA-256 of the file's bytes, so an edit without a version bump is still visible) go into every
assessment.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
)

from modelseal.fraud.errors import FraudRulesError
from modelseal.fraud.events import APP_EVENT_TYPES, DETAIL_KEY_PATTERN, SERVER_EVENT_TYPES

__all__ = [
    "DEFAULT_RULES_RESOURCE",
    "MAX_WITNESS_EVENTS",
    "Condition",
    "Decay",
    "Rule",
    "RuleSet",
    "Thresholds",
]

DEFAULT_RULES_RESOURCE: Final = "default_rules.toml"
MAX_WITNESS_EVENTS: Final = 20
"""Most event ids an explanation lists per fired rule (the latest ones)."""

_MAX_RULES_FILE_BYTES: Final = 1 << 20
_MAX_WINDOW_SECONDS: Final = 10 * 366 * 86400
_MAX_POINTS: Final = 1_000_000.0

# --- the file's schema (pydantic, strict: TOML already gives native types) --------------------

_Id = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
_TypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
_DetailKey = Annotated[str, StringConstraints(pattern=f"^{DETAIL_KEY_PATTERN.pattern}$")]
_Seconds = Annotated[int, Field(ge=1, le=_MAX_WINDOW_SECONDS)]


def _where_value(value: object) -> str | int | bool:
    # One validator instead of a union, so that an error names the member, not a union arm.
    if isinstance(value, bool | int) or (isinstance(value, str) and len(value) <= 256):
        return value
    raise ValueError("must be a string of at most 256 characters, an integer or a boolean")


_WhereValue = Annotated[str | int | bool, PlainValidator(_where_value)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ConditionModel(_Strict):
    types: Annotated[list[_TypeName], Field(min_length=1, max_length=32)]
    min_count: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    window_seconds: _Seconds | None = None
    distinct: (
        Annotated[
            str,
            StringConstraints(pattern=rf"^(device_id|details\.{DETAIL_KEY_PATTERN.pattern})$"),
        ]
        | None
    ) = None
    where: Annotated[dict[_DetailKey, _WhereValue], Field(max_length=8)] = Field(
        default_factory=dict
    )


class _HalfLife(_Strict):
    kind: Literal["half_life"]
    seconds: _Seconds


class _Linear(_Strict):
    kind: Literal["linear"]
    seconds: _Seconds


class _NoDecay(_Strict):
    kind: Literal["none"]


class _StopModel(_Strict):
    id: _Id
    description: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    when: Annotated[list[_ConditionModel], Field(min_length=1, max_length=8)]


class _PointsModel(_StopModel):
    points: Annotated[float, Field(gt=0.0, le=_MAX_POINTS, allow_inf_nan=False)]
    decay: Annotated[_HalfLife | _Linear | _NoDecay, Field(discriminator="kind")]


class _ThresholdsModel(_Strict):
    suspicious: Annotated[float, Field(gt=0.0, le=_MAX_POINTS, allow_inf_nan=False)]
    malicious: Annotated[float, Field(gt=0.0, le=_MAX_POINTS, allow_inf_nan=False)]


class _EventsModel(_Strict):
    extra_types: Annotated[list[_TypeName], Field(max_length=256)] = Field(default_factory=list)


class _RulesFileModel(_Strict):
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")]
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    thresholds: _ThresholdsModel
    events: _EventsModel = Field(default_factory=_EventsModel)
    stop: Annotated[list[_StopModel], Field(max_length=256)] = Field(default_factory=list)
    points: Annotated[list[_PointsModel], Field(max_length=256)] = Field(default_factory=list)


# --- the compiled, immutable form -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a rule (all conditions of a rule must hold).

    A condition *holds at time t* when the events of one of ``types`` with ``at`` in
    ``(t - window_seconds, t]`` (all events up to ``t`` without a window) that match
    ``where`` number at least ``min_count``, or, with ``distinct``, carry at least
    ``min_count`` distinct values of that field.

    Attributes:
        types: Event types that match (sorted).
        min_count: Events (or distinct values) needed.
        window_seconds: Sliding window length; ``None`` is the whole history.
        distinct: ``"device_id"``, ``"details.<key>"`` or ``None`` (count events).
        where: ``details`` members an event must have, with these exact values and types.
    """

    types: tuple[str, ...]
    min_count: int
    window_seconds: int | None
    distinct: str | None
    where: tuple[tuple[str, str | int | bool], ...]


@dataclass(frozen=True, slots=True)
class Decay:
    """How a points rule's points fade with the age of its evidence.

    ``factor(age)`` for ``age = now - fired_at >= 0``:

    - ``half_life``: ``2 ** (-age / seconds)``;
    - ``linear``: ``max(0, 1 - age / seconds)``;
    - ``none``: ``1``.

    Attributes:
        kind: ``"half_life"``, ``"linear"`` or ``"none"``.
        seconds: The half-life or the linear window; ``None`` for ``"none"``.
    """

    kind: Literal["half_life", "linear", "none"]
    seconds: int | None = None

    def factor(self, age_seconds: int) -> float:
        """The share of the points left after ``age_seconds`` (1 at age 0, never negative)."""
        age = max(0, age_seconds)
        if self.kind == "half_life" and self.seconds is not None:
            return math.exp2(-age / self.seconds)
        if self.kind == "linear" and self.seconds is not None:
            return max(0.0, 1.0 - age / self.seconds)
        return 1.0


@dataclass(frozen=True, slots=True)
class Rule:
    """A stop factor or a points rule.

    Attributes:
        id: Unique id within the file.
        kind: ``"stop"`` (malicious at once) or ``"points"``.
        description: What the rule means, for explanations.
        conditions: All must hold.
        points: Points before decay (``0`` for stop factors).
        decay: How points fade (``none`` for stop factors, which never fade).
    """

    id: str
    kind: Literal["stop", "points"]
    description: str
    conditions: tuple[Condition, ...]
    points: float
    decay: Decay


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds: ``score >= suspicious`` is suspicious, ``>= malicious`` malicious."""

    suspicious: float
    malicious: float


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("half_life", "linear", "none"):
            continue  # the discriminated union's tag, not a key of the file
        else:
            out += f".{part}" if out else str(part)
    return out


def _condition(model: _ConditionModel) -> Condition:
    return Condition(
        types=tuple(sorted(set(model.types))),
        min_count=model.min_count,
        window_seconds=model.window_seconds,
        distinct=model.distinct,
        where=tuple(sorted(model.where.items())),
    )


class RuleSet:
    """A validated, immutable set of fraud rules.

    Attributes:
        version: The operator's version string from the file.
        digest: Hex SHA-256 of the file's bytes.
        description: Free text from the file.
        thresholds: Suspicious and malicious score thresholds.
        rules: Stop factors first, then points rules, each in file order.
        event_types: Every type the rules may name: built-in plus ``events.extra_types``.
        source: Where the rules were loaded from.
    """

    __slots__ = (
        "_frozen",
        "_server_only",
        "_types_used",
        "description",
        "digest",
        "event_types",
        "rules",
        "source",
        "thresholds",
        "version",
    )

    def __init__(self, data: bytes, source: str = "<string>") -> None:
        """Parse and validate a rules file's bytes.

        Args:
            data: The file's contents (UTF-8 TOML).
            source: Name used in error messages.

        Raises:
            FraudRulesError: The file is too large, not UTF-8 TOML, or breaks the schema.
        """
        if len(data) > _MAX_RULES_FILE_BYTES:
            raise FraudRulesError(
                f"{source}: the rules file must be at most {_MAX_RULES_FILE_BYTES} bytes, "
                f"got {len(data)}",
                source,
            )
        try:
            document = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise FraudRulesError(f"{source}: not UTF-8 at byte {exc.start}", source) from None
        except tomllib.TOMLDecodeError as exc:
            raise FraudRulesError(f"{source}: not valid TOML: {exc}", source) from None
        try:
            model = _RulesFileModel.model_validate(document)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            path = _path(first["loc"])
            raise FraudRulesError(
                f"{source}: {path or '(file)'}: {first['msg']} ({exc.error_count()} error(s))",
                source,
                path,
            ) from None
        self._check(model, source)
        self.source = source
        self.version: str = model.version
        self.description: str | None = model.description
        self.digest: str = hashlib.sha256(data).hexdigest()
        self.thresholds = Thresholds(model.thresholds.suspicious, model.thresholds.malicious)
        self.event_types: frozenset[str] = (
            APP_EVENT_TYPES | SERVER_EVENT_TYPES | frozenset(model.events.extra_types)
        )
        rules: list[Rule] = [
            Rule(
                s.id,
                "stop",
                s.description,
                tuple(_condition(c) for c in s.when),
                0.0,
                Decay("none"),
            )
            for s in model.stop
        ]
        for p in model.points:
            decay = Decay(p.decay.kind, getattr(p.decay, "seconds", None))
            rules.append(
                Rule(
                    p.id,
                    "points",
                    p.description,
                    tuple(_condition(c) for c in p.when),
                    p.points,
                    decay,
                )
            )
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._types_used: frozenset[str] = frozenset(
            t for rule in rules for cond in rule.conditions for t in cond.types
        )
        # Each built-in type counts only from the source that can observe it.
        self._server_only: frozenset[str] = SERVER_EVENT_TYPES & self._types_used
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"a RuleSet is immutable (tried to set {name})")
        object.__setattr__(self, name, value)

    @staticmethod
    def _check(model: _RulesFileModel, source: str) -> None:
        def fail(path: str, message: str) -> FraudRulesError:
            return FraudRulesError(f"{source}: {path}: {message}", source, path)

        builtin = APP_EVENT_TYPES | SERVER_EVENT_TYPES
        for i, name in enumerate(model.events.extra_types):
            if name in builtin:
                raise fail(f"events.extra_types[{i}]", f"{name!r} is a built-in event type")
        known = builtin | set(model.events.extra_types)
        if model.thresholds.suspicious > model.thresholds.malicious:
            raise fail(
                "thresholds.suspicious",
                f"must be at most thresholds.malicious ({model.thresholds.malicious}), "
                f"got {model.thresholds.suspicious}",
            )
        seen: dict[str, str] = {}
        sections: list[tuple[str, Sequence[_StopModel]]] = [
            ("stop", model.stop),
            ("points", model.points),
        ]
        for section, rules in sections:
            for i, rule in enumerate(rules):
                here = f"{section}[{i}]"
                if rule.id in seen:
                    raise fail(f"{here}.id", f"{rule.id!r} is already the id of {seen[rule.id]}")
                seen[rule.id] = here
                for j, cond in enumerate(rule.when):
                    for k, name in enumerate(cond.types):
                        if name not in known:
                            raise fail(
                                f"{here}.when[{j}].types[{k}]",
                                f"unknown event type {name!r} (declare operator types in "
                                "events.extra_types)",
                            )

    @classmethod
    def loads(cls, text: str | bytes, source: str = "<string>") -> RuleSet:
        """Parse rules from TOML text.

        Raises:
            FraudRulesError: The text is not a valid rules file.
        """
        return cls(text.encode("utf-8") if isinstance(text, str) else text, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RuleSet:
        """Load a rules file.

        Raises:
            FraudRulesError: The file cannot be read or is not a valid rules file.
        """
        file = Path(path)
        try:
            with file.open("rb") as handle:
                data = handle.read(_MAX_RULES_FILE_BYTES + 1)
        except OSError as exc:
            raise FraudRulesError(
                f"{file}: cannot read the rules file ({exc.strerror or type(exc).__name__})",
                str(file),
            ) from None
        return cls(data, str(file))

    @classmethod
    def default(cls) -> RuleSet:
        """The rules packaged with modelseal (``modelseal/fraud/default_rules.toml``)."""
        return _default()

    def rule(self, rule_id: str) -> Rule:
        """The rule with id ``rule_id``.

        Raises:
            KeyError: No such rule.
        """
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def types_used(self) -> frozenset[str]:
        """Event types some rule names (events of other types are skipped by ``assess``)."""
        return self._types_used

    @property
    def server_only_types(self) -> frozenset[str]:
        """Used types that count only when the event's source is ``"server"``."""
        return self._server_only

    def summary(self) -> Mapping[str, object]:
        """Version, digest, thresholds and rule ids, for logs and the admin API."""
        return {
            "version": self.version,
            "digest": self.digest,
            "thresholds": {
                "suspicious": self.thresholds.suspicious,
                "malicious": self.thresholds.malicious,
            },
            "stop": [r.id for r in self.rules if r.kind == "stop"],
            "points": [r.id for r in self.rules if r.kind == "points"],
        }

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)}, source={self.source!r})"


@functools.cache
def _default() -> RuleSet:
    data = resources.files("modelseal.fraud").joinpath(DEFAULT_RULES_RESOURCE).read_bytes()
    return RuleSet(data, f"modelseal.fraud/{DEFAULT_RULES_RESOURCE}")
