"""Test generators for the abuse-control tests."""

from __future__ import annotations

from modelseal.server.generators import GenerationRequest


class GenerationFailedError(RuntimeError):
    """The test generator's failure."""


def failing_generator(request: GenerationRequest) -> bytearray:
    """Always fails, as a broken generator would."""
    raise GenerationFailedError(f"cannot generate {request.model_id}")
