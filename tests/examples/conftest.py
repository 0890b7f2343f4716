"""The server test fixtures, shared with tests/server."""

from __future__ import annotations

from tests.server.conftest import log_stream

__all__ = ["log_stream"]
