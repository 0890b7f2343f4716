"""No DEK, private key, API token or link token ever reaches the audit log, a database
dump, the exported checkpoints or the logs."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

from sqlalchemy import select

from modelseal.envelope import OpenPolicy
from modelseal.envelope.container import read_framing
from modelseal.envelope.reader import _verify_and_unwrap
from modelseal.keys import key_to_jwk, parse_jwks
from modelseal.server.db.audit_models import AuditRecord
from tests.server.conftest import Harness


def forms(secret: bytes) -> list[bytes]:
    """The ways a secret could be written: raw, hex, base64, base64url (unpadded too)."""
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), b64, url, url.rstrip(b"=")]


def b64url_member(jwk: dict[str, str], member: str) -> bytes:
    text = jwk[member]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_no_secret_reaches_the_audit_log_dump_exports_or_logs(
    server: Harness, log_stream: io.StringIO
) -> None:
    token = server.user("alice")
    device = server.register(token, "phone")
    job = server.issue(token, device)
    package = server.client.get(job["download_url"], headers=server.auth(token, "phone")).content
    server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=server.auth(token))
    services = server.services
    services.audit.checkpoint()

    policy = OpenPolicy(
        issuers=parse_jwks(server.jwks()), audience="phone", now=int(server.clock())
    )
    dek = _verify_and_unwrap(read_framing(io.BytesIO(package)), device.key, policy)
    link_token = job["download_url"].rsplit("/", 1)[-1]
    secrets: dict[str, list[bytes]] = {
        "dek": forms(dek),
        "link token": [link_token.encode()],
        "api token": [token.encode(), token.split("_", 2)[2].encode()],
        "device private key": forms(
            b64url_member(key_to_jwk(device.key, include_private=True), "d")
        ),
    }
    keyring = services.settings.keyring_dir
    for path in keyring.glob("*.jwk"):
        jwk = json.loads(path.read_text())
        if "d" in jwk:
            secrets[f"private key {path.name}"] = forms(b64url_member(jwk, "d"))
    assert any(name.startswith("private key checkpoint-") for name in secrets)
    assert len(dek) == 32

    with services.sessions() as session:
        audit_text = "\n".join(session.scalars(select(AuditRecord.entry))).encode()
    assert audit_text.count(b"iml.issued") == 1  # the scan below reads the real log
    database = services.settings.resolved_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        dump = "\n".join(conn.iterdump()).encode()
    assert b"audit_entries" in dump
    exports = b"".join(p.read_bytes() for p in services.audit.export_dir.glob("*"))
    assert exports
    logs = log_stream.getvalue().encode()
    places = {"audit table": audit_text, "database dump": dump, "exports": exports, "logs": logs}
    leaks = [
        f"{name} in {place}"
        for name, needles in secrets.items()
        for place, haystack in places.items()
        for needle in needles
        if needle in haystack
    ]
    assert leaks == []
