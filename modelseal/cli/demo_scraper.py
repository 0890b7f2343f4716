"""``modelseal demo --scenario scraper``: a short scraper against the demo server.

The demo server (same model, same dev-mode setup as ``modelseal demo``) runs with a
per-user quota of three IMLs a day, a user rate limit, a decoy model id and an admin
token. A scraper account, made with the admin CLI, then:

1. pulls its quota of IMLs (verdict ``ok``);
2. keeps asking: refused by the quota (429 ``quota_exceeded``), then hammers the API
   until the rate limit refuses it (429 ``rate_limited``): the verdict turns
   ``suspicious``;
3. tries the other model ids it found in the app, one of them a decoy: the verdict turns
   ``malicious`` at once (a stop factor), and every later request is refused with 403
   ``account_blocked``, including a download link minted before the block.

After each phase the verdict and the rules that fired are read from the admin API.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelseal.cli.output import emit_json, print_lines
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk

__all__ = ["ScraperReport", "run_scraper_demo"]

SCRAPER = "scraper"
QUOTA = 3
DECOY = "digits-pro"
API_VERSION = "1"


@dataclass(slots=True)
class ScraperReport:
    """What the scraper got and how the server answered."""

    imls: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _config(directory: Path, port: int, admin_hash: str) -> Path:
    from modelseal.cli.demo_cmd import MODEL_ID, _server_config

    config = _server_config(directory, port)
    # The demo config ends inside its [[models]] table: the quota joins that model.
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'quota = {{ limit = {QUOTA}, period = "day", suspicious_limit = 1 }}\n'
        "[abuse]\n"
        'user_rate_limit = "20 per 10 seconds"\n'
        'suspicious_user_rate_limit = "10 per 10 seconds"\n'
        "event_record_interval_seconds = 1\n"
        f'honey_model_ids = ["{DECOY}"]\n'
        f'admin_token_hash = "{admin_hash}"\n',
        encoding="utf-8",
    )
    assert MODEL_ID  # the model the scraper is after
    return config


def run_scraper_demo(directory: Path, *, quiet: bool = False) -> ScraperReport:
    """Start the demo server, run the scraper, stop the server.

    Raises:
        DemoFailedError: The server did not start, or it served the scraper something it
            should have refused.
    """
    import httpx
    from argon2 import PasswordHasher

    from modelseal.cli.demo_cmd import (
        MODEL_ID,
        DemoFailedError,
        _create_user,
        _free_port,
        _Server,
    )

    report = ScraperReport()

    def say(line: str) -> None:
        report.lines.append(line)
        if not quiet:
            print_lines([line])

    admin_token = "msa_" + secrets.token_urlsafe(32)
    admin_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(admin_token)
    port = _free_port()
    config = _config(directory, port, admin_hash)
    token = _create_user(config, SCRAPER)
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        server = _Server(config, port, log, log_path)
        try:
            server.wait_ready()
            say(
                f"server    {server.url}: {QUOTA} {MODEL_ID!r} IMLs per user and day, "
                "20 requests per 10 s, one decoy model id"
            )
            headers = {"Authorization": f"Bearer {token}", "X-Modelseal-Api-Version": API_VERSION}
            admin = {"Authorization": f"Bearer {admin_token}"}
            with (
                httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
                httpx.Client(base_url=server.url, headers=admin, timeout=60) as ops,
            ):
                _scrape(http, ops, report, say, MODEL_ID)
        finally:
            server.stop()
    verdicts = [v["verdict"] for v in report.verdicts]
    if verdicts[-1:] != ["malicious"] or "suspicious" not in verdicts:
        raise DemoFailedError(f"the verdict did not go ok -> suspicious -> malicious: {verdicts}")
    return report


def _patient(http: Any) -> Any:
    """``http`` whose requests wait out a rate limit (the scraper plays by Retry-After)."""

    def send(method: str, url: str, **kwargs: Any) -> Any:
        for _ in range(5):
            response = http.request(method, url, **kwargs)
            if response.status_code != 429 or "rate_limited" not in response.text:
                return response
            time.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    return send


def _scrape(http: Any, ops: Any, report: ScraperReport, say: Any, model_id: str) -> None:
    send = _patient(http)

    def refused(what: str, response: Any) -> None:
        error = response.json().get("error", {})
        code = str(error.get("code"))
        report.refused[code] += 1
        extra = ""
        if "Retry-After" in response.headers:
            extra = f", retry after {response.headers['Retry-After']} s"
        say(f"refused   {what} -> {response.status_code} {code}{extra}")

    def verdict() -> str:
        info = ops.get(f"/v1/admin/fraud/users/{SCRAPER}").json()
        report.verdicts.append(info)
        rules = ", ".join(
            f"{r['rule_id']}{' [stop]' if r['kind'] == 'stop' else ''}" for r in info["fired"]
        )
        say(f"verdict   {info['verdict']} (score {info['score']:g}){': ' + rules if rules else ''}")
        return str(info["verdict"])

    key = RecipientPrivateKey.generate(KEM.X25519)
    body = {
        "device_id": "bot-1",
        "app_version": "9.9.9",
        "public_key": key_to_jwk(key.public_key()),
    }
    http.post("/v1/devices", json=body).raise_for_status()
    say("device    bot-1 registered by the scraper account (made with the admin CLI)")
    device = {"X-Modelseal-Device": "bot-1"}
    verdict()
    last_link = ""
    # 1. The quota's worth of IMLs.
    while True:
        response = send("POST", "/v1/imls", json={"model_id": model_id, "device_id": "bot-1"})
        if response.status_code != 202:
            refused(f"POST /v1/imls {model_id}", response)
            break
        job_id = response.json()["job_id"]
        for _ in range(600):
            job = send("GET", f"/v1/jobs/{job_id}").json()
            if job["status"] in ("ready", "failed"):
                break
            time.sleep(0.2)
        if job.get("download_url"):
            package = send("GET", job["download_url"], headers=device)
            if package.status_code == 200:
                report.imls += 1
                say(f"iml {report.imls}     obtained ({len(package.content):,} B)")
            # A fresh, unused link to the same package, kept for after the block.
            fresh = send("GET", f"/v1/jobs/{job_id}").json().get("download_url")
            last_link = fresh or last_link
    verdict()
    # 2. Asking again and again: quota refusals, then a flood into the rate limit.
    for _ in range(3):
        time.sleep(1.05)
        refused(
            f"POST /v1/imls {model_id}",
            send("POST", "/v1/imls", json={"model_id": model_id, "device_id": "bot-1"}),
        )
    flood = Counter[int]()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and flood[429] < 6:
        response = http.get("/v1/devices")
        flood[response.status_code] += 1
        if response.status_code == 429:
            refused("GET /v1/devices (flood)", response)
            time.sleep(1.05)
    if verdict() != "suspicious":
        return
    # 3. The other model ids found in the app: one is a decoy.
    refused(
        f"POST /v1/imls {DECOY}",
        send("POST", "/v1/imls", json={"model_id": DECOY, "device_id": "bot-1"}),
    )
    verdict()
    refused(
        f"POST /v1/imls {model_id}",
        send("POST", "/v1/imls", json={"model_id": model_id, "device_id": "bot-1"}),
    )
    if last_link:
        refused("GET (a link minted before the block)", send("GET", last_link, headers=device))
    refused("GET /v1/devices", send("GET", "/v1/devices"))
    event = {"device_id": "bot-1", "events": [{"type": "debugger_attached"}]}
    response = send("POST", "/v1/events", json=event)
    say(f"accepted  POST /v1/events -> {response.status_code} (a blocked account still reports)")


def print_summary(report: ScraperReport, json_output: bool) -> None:
    """The closing lines (or the JSON document)."""
    if json_output:
        emit_json(
            {
                "scenario": "scraper",
                "imls": report.imls,
                "refused": dict(report.refused),
                "verdicts": [
                    {
                        "verdict": v["verdict"],
                        "score": v["score"],
                        "rules": [r["rule_id"] for r in v["fired"]],
                    }
                    for v in report.verdicts
                ],
            }
        )
        return
    path = " -> ".join(dict.fromkeys(v["verdict"] for v in report.verdicts))
    refusals = ", ".join(f"{n} {code}" for code, n in sorted(report.refused.items()))
    print_lines([f"scraper obtained {report.imls} IMLs; verdict {path}; refused: {refusals}"])
