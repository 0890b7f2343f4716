"""Errors of the anti-fraud engine."""

from __future__ import annotations

from modelseal.errors import ModelSealError

__all__ = ["FraudRulesError"]


class FraudRulesError(ModelSealError):
    """A rules file is not valid TOML or does not match the rules schema.

    The message names the file and the path of the offending member, such as
    ``rules.toml: points[2].when[0].min_count: Input should be greater than or equal to 1``.

    Attributes:
        source: The file (or ``"<string>"``) the rules came from.
        path: Dotted path of the offending member inside the file (``""`` for syntax errors
            and whole-file checks).
    """

    code = "fraud_rules_invalid"

    def __init__(self, message: str, source: str = "<string>", path: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.path = path

    def __reduce__(self) -> tuple[type[FraudRulesError], tuple[str, str, str]]:  # type: ignore[override]
        return (type(self), (self.message, self.source, self.path))
