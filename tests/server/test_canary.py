"""Plaintext never on disk, secrets never in logs: a canary hunt after the whole flow."""

from __future__ import annotations

import base64
import io
import secrets
import tempfile
import time
from pathlib import Path

from tests.canary import files_under, holders

from .conftest import start

CANARY_GENERATOR = "modelseal.server.generators:canary_generator"


def test_plaintext_and_secrets_leave_no_trace_on_disk_or_in_logs(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    started = time.time() - 1
    canary = secrets.token_bytes(32)
    forms = [
        canary,
        canary.hex().encode(),
        base64.b64encode(canary),
        base64.urlsafe_b64encode(canary),
    ]
    models = [
        {
            "id": "canary",
            "generator": CANARY_GENERATOR,
            "options": {"canary_hex": canary.hex(), "size_bytes": 50_000},
        }
    ]
    for server in start(tmp_path, log_stream, models=models):
        token = server.user("alice")
        device = server.register(token, "phone")
        job = server.issue(token, device, "canary")
        link = job["download_url"].rsplit("/", 1)[1]
        package = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
        # A refused attempt too, so error paths are logged with the token at hand.
        server.client.get(job["download_url"], headers=server.auth(token, "phone"))
        server.client.get("/v1/devices", headers={"Authorization": f"Bearer {token}x"})
        opened = server.open(package.content, device)
        assert canary in opened.plaintext  # the canary really went through the server
        assert canary not in package.content
        data_dir = server.settings.data_dir
        assert list(server.services.blobs.keys())  # not acked: the ciphertext is still stored

        # The scanner works: a planted file is found.
        planted = tmp_path / "planted"
        planted.write_bytes(b"x" + canary + b"y")
        assert holders([planted], forms) == [f"{planted}: {canary[:8]!r}"]
        planted.unlink()

        on_disk = files_under(data_dir) + files_under(Path(tempfile.gettempdir()), since=started)
        assert any(p.name == "modelseal.db" for p in on_disk)
        assert holders(on_disk, forms) == []

        logs = log_stream.getvalue()
        assert '"route": "/v1/downloads/{token}"' in logs
        for needle in [*forms, link.encode(), token.encode(), token.split("_")[2].encode()]:
            assert needle.decode("latin-1") not in logs
