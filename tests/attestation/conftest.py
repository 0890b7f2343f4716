"""Fixtures shared with the server tests."""

from tests.server.conftest import log_stream

__all__ = ["log_stream"]
