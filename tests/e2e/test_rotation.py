"""Issuer key rotation against trust on first use: refused until the pins are refreshed."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelseal.errors import UnknownIssuerError

from .conftest import TEST_GENERATOR, enrolled, run_server

MODELS = [{"id": "m1", "generator": TEST_GENERATOR, "options": {"size_bytes": 20_000}}]


def test_a_rotated_issuer_key_is_refused_until_the_device_refreshes_its_pins(
    tmp_path: Path,
) -> None:
    with run_server(tmp_path / "server", MODELS, users=2) as server:
        root = tmp_path / "phone"
        client = enrolled(server, root)
        first = client.fetch("m1")
        (pinned,) = tuple(client.pinned_issuers())
        assert first.issuer_kid == pinned
        kept = (root / "models" / "m1.mseal").read_bytes()

        server.admin("rotate-issuer-key")
        with pytest.raises(UnknownIssuerError, match="not pinned") as caught:
            client.fetch("m1")
        assert caught.value.code == "unknown_issuer"
        assert (root / "models" / "m1.mseal").read_bytes() == kept
        assert list((root / "downloads").iterdir()) == []

        refreshed = client.pin_refresh()
        assert refreshed.before == (pinned,)
        assert pinned in refreshed.after  # the retiring key stays published for a while
        (new_kid,) = refreshed.added
        assert refreshed.removed == ()
        second = client.fetch("m1")
        assert second.issuer_kid == new_kid
        assert second.acknowledged
