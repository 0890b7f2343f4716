"""OIDC mode: Firebase-shaped ID tokens verified against a JWKS file or URL."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .conftest import Harness, start

ISSUER = "https://securetoken.google.com/modelseal-test"
AUDIENCE = "modelseal-test"


class IdP:
    """A tiny identity provider: one RSA and one P-256 signing key."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        self.jwks = {
            "keys": [
                rsa_jwk | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
                ec_jwk | {"kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    def token(self, sub: str = "firebase-uid-1", alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
        body.update(claims)
        key = self.rsa if alg == "RS256" else self.ec
        kid = "rsa-1" if alg == "RS256" else "ec-1"
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def oidc_settings(jwks: dict[str, object]) -> dict[str, object]:
    return {
        "mode": "oidc",
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        **jwks,
    }


@pytest.fixture
def idp() -> IdP:
    return IdP()


@pytest.fixture
def oidc_server(tmp_path: Path, log_stream: io.StringIO, idp: IdP) -> Iterator[Harness]:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(idp.jwks))
    yield from start(tmp_path, log_stream, auth=oidc_settings({"oidc_jwks_file": jwks_file}))


def test_a_valid_id_token_provisions_one_user_per_subject(oidc_server: Harness, idp: IdP) -> None:
    server = oidc_server
    first = server.register(idp.token(), "phone")
    job = server.issue(idp.token(alg="ES256"), first, "m2")
    assert job["status"] == "ready"
    users = server.services.accounts.list_users()
    assert [(u.provider, u.name) for u in users] == [(ISSUER, None)]
    assert users[0].subject.startswith("u_")
    response = server.client.get("/v1/devices", headers=server.auth(idp.token("someone-else")))
    assert response.json()["devices"] == []
    assert len(server.services.accounts.list_users()) == 2


def forge_hs256_with_public_key(idp: IdP) -> str:
    # Algorithm confusion: sign with HMAC keyed by the public JWK bytes.
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60}
    segments = [
        jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()),
        jwt.utils.base64url_encode(json.dumps(claims).encode()),
    ]
    import hashlib
    import hmac

    signing_input = b".".join(segments)
    key = json.dumps(idp.jwks["keys"][0]).encode()
    mac = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()


def unsigned(idp: IdP) -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    body = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**40}).encode()
    )
    return (header + b"." + body + b".").decode()


@pytest.mark.parametrize(
    "make",
    [
        lambda idp: idp.token(aud="another-project"),
        lambda idp: idp.token(iss="https://evil.example"),
        lambda idp: idp.token(exp=int(time.time()) - 3600),
        lambda idp: idp.token(sub=""),
        lambda idp: IdP().token(),  # a key the server does not pin
        forge_hs256_with_public_key,
        unsigned,
        lambda idp: "not.a.jwt",
        lambda idp: idp.token() + "x",
    ],
)
def test_bad_id_tokens_are_unauthenticated(oidc_server: Harness, idp: IdP, make: Any) -> None:
    response = oidc_server.client.get("/v1/devices", headers=oidc_server.auth(make(idp)))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert oidc_server.services.accounts.list_users() == []


def test_api_tokens_are_not_accepted_in_oidc_mode(oidc_server: Harness) -> None:
    _, token = oidc_server.services.accounts.create_user("local")
    assert oidc_server.client.get("/v1/devices", headers=oidc_server.auth(token)).status_code == 401


def test_the_jwks_is_fetched_from_a_url_and_cached(
    tmp_path: Path, log_stream: io.StringIO, idp: IdP
) -> None:
    hits: list[str] = []
    body = json.dumps(idp.jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/jwks.json"
        for server in start(tmp_path, log_stream, auth=oidc_settings({"oidc_jwks_url": url})):
            for _ in range(3):
                response = server.client.get("/v1/devices", headers=server.auth(idp.token()))
                assert response.status_code == 200
            assert hits == ["/jwks.json"]
    finally:
        httpd.shutdown()
        httpd.server_close()
