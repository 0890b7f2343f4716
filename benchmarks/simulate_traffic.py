"""Traffic simulator: normal users and five kinds of attacker against a real server over HTTP.

What runs: a real ``modelseal server`` (uvicorn, dev mode, SQLite) in a subprocess on
loopback, configured ``behind_proxy`` so that each simulated client's address comes from
``X-Forwarded-For``; accounts are made with the admin API of the server's own services
before it starts (the server has no self-signup: attackers get many admin-made accounts,
as a ring of fake paying users would). The model is the fast test generator, so the run
takes a couple of minutes.

Actors:

* **normal users** (``--normal``): one device (a tenth two), one to three fetches of their
  model (request, poll, download, acknowledge, as the SDK does), a realistic trickle of app
  events (failed downloads, reinstalls, keystore hiccups; a rare corporate TLS proxy, rooted
  phone or emulator), 20 % behind carrier NAT shared by five users;
* **scraper farm**: accounts used one after the other from two datacenter addresses; each
  pulls the model until refused, then tries every other model id it found in the app
  (some of which are decoys);
* **clone app**: one device key extracted from a genuine install, shipped in a clone;
  installs on many phones register it under new device ids, on one bought account, or
  under several bought accounts; installs that cannot register reuse the original device id;
* **credential stuffing**: a combo list of leaked and invalid tokens (a few valid ones of
  real users, two planted decoy accounts) tried from three addresses;
* **slow scraper**: one account, one address, pacing itself under the rate limits, asking
  for the model again and again.

Reported: per attacker class, the IMLs obtained (downloads completed) before being blocked;
for normal users, the share ever limited (a 429 or a ``suspicious`` verdict) or blocked.

Run from the repository root::

    .venv/bin/python benchmarks/simulate_traffic.py               # 200 normal users
    .venv/bin/python benchmarks/simulate_traffic.py --normal 50   # quicker

Results go to ``benchmarks/out/simulate_traffic-<UTC time>.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk

GENERATOR = "modelseal.server.generators:deterministic_test_generator"
MODEL = "face"
DECOYS = ("face-pro", "face-legacy")
HONEY_ACCOUNTS = ("svc-backup", "qa-tester")
OUT_DIR = Path(__file__).parent / "out"
ADMIN_TOKEN = "msa_" + secrets.token_urlsafe(32)
API_VERSION = "1"

# Rules used: the packaged defaults (modelseal/fraud/default_rules.toml), or --rules FILE.


# --- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, quota: int, rules: Path | None) -> Path:
    """A dev-mode config: behind a (simulated) proxy, one model, decoys, the rules."""
    admin_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(ADMIN_TOKEN)
    config = directory / "server.toml"
    config.write_text(
        f'data_dir = "{directory / "data"}"\n'
        "behind_proxy = true\n"
        'forwarded_allow_ips = "127.0.0.1"\n'
        "sweep_interval_seconds = 0\n"
        # Capacity shedding is not under test here: room for every simulated request.
        "max_in_flight_requests = 512\nmax_working_iml_requests = 256\nmax_queued_jobs = 4096\n"
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        "[abuse]\n"
        'user_rate_limit = "60/minute"\n'
        'device_rate_limit = "60/minute"\n'
        'ip_rate_limit = "1200/minute"\n'
        'suspicious_user_rate_limit = "12/minute"\n'
        'auth_failure_limit = "10/minute"\n'
        f"honey_model_ids = {json.dumps(list(DECOYS))}\n"
        f"honey_account_names = {json.dumps(list(HONEY_ACCOUNTS))}\n"
        f'admin_token_hash = "{admin_hash}"\n'
        + (f'rules_file = "{rules.resolve()}"\n' if rules is not None else "")
        + f'[[models]]\nid = "{MODEL}"\ngenerator = "{GENERATOR}"\n'
        "options = { size_bytes = 20000 }\n"
        f'quota = {{ limit = {quota}, period = "day", suspicious_limit = 1 }}\n'
    )
    return config


def create_accounts(config: Path, names: list[str]) -> dict[str, str]:
    """Admin-made accounts (no self-signup): name -> API token."""
    from modelseal.server.container import build_services
    from modelseal.server.logging import configure_logging
    from modelseal.server.settings import load_settings

    configure_logging(open(os.devnull, "w"), level="WARNING")  # noqa: SIM115 - process-long
    services = build_services(load_settings(config))
    try:
        return {name: services.accounts.create_user(name)[1] for name in names}
    finally:
        services.close()


class Server:
    """``python -m modelseal.server server`` on a free loopback port."""

    def __init__(self, config: Path, log_path: Path) -> None:
        """Start the server and wait until it answers."""
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelseal.server",
                "server",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        """SIGINT, then wait (kill after 30 s)."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


# --- one simulated client ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one actor saw."""

    imls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def limited(self) -> bool:
        """Ever refused by a rate limit or a quota."""
        return bool(self.codes["rate_limited"] or self.codes["quota_exceeded"])

    @property
    def blocked(self) -> bool:
        """Ever refused as blocked."""
        return bool(self.codes["account_blocked"])


class Client:
    """One device app (or attacker script) at one address, speaking to the server."""

    def __init__(self, base: str, token: str, ip: str, outcome: Outcome) -> None:
        """Prepare an HTTP client whose address is ``ip`` (via the proxy header)."""
        self.http = httpx.Client(
            base_url=base,
            timeout=60,
            headers={
                "Authorization": f"Bearer {token}",
                "X-Forwarded-For": ip,
                "X-Modelseal-Api-Version": API_VERSION,
            },
        )
        self.outcome = outcome

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; capacity refusals (503) are retried, everything else is counted."""
        for _ in range(50):
            response = self.http.request(method, url, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(float(response.headers.get("Retry-After", "1")) / 4)
        if response.status_code >= 400:
            try:
                code = str(response.json()["error"]["code"])
                message = str(response.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                code, message = f"http_{response.status_code}", ""
            self.outcome.codes[code] += 1
            if len(self.outcome.messages) < 5:
                self.outcome.messages.append(f"{method} {url.split('/v1/')[-1][:24]}: {message}")
        return response

    def register(self, device_id: str, key: RecipientPrivateKey) -> int:
        """Register ``key`` as ``device_id``; returns the status."""
        body = {
            "device_id": device_id,
            "app_version": "3.2.0",
            "public_key": key_to_jwk(key.public_key()),
        }
        return self.call("POST", "/v1/devices", json=body).status_code

    def report(self, device_id: str, events: list[dict[str, Any]]) -> int:
        """Send app events as the SDK's outbox does."""
        body = {"device_id": device_id, "events": events}
        return self.call("POST", "/v1/events", json=body).status_code

    def fetch(self, model_id: str, device_id: str) -> str:
        """Request, poll, download and acknowledge one IML; ``"ok"`` or the refusal code."""
        response = self.call(
            "POST", "/v1/imls", json={"model_id": model_id, "device_id": device_id}
        )
        if response.status_code != 202:
            return _code(response)
        job_id = response.json()["job_id"]
        for _ in range(2000):
            job = self.call("GET", f"/v1/jobs/{job_id}")
            if job.status_code != 200:
                return _code(job)
            state = job.json()
            if state["status"] == "failed":
                return str(state.get("error_code") or "failed")
            if state["status"] == "ready" and state.get("download_url"):
                break
            time.sleep(0.05)
        else:
            return "timeout"
        download = self.call(
            "GET", state["download_url"], headers={"X-Modelseal-Device": device_id}
        )
        if download.status_code != 200:
            return _code(download)
        self.outcome.imls += 1
        self.call("POST", f"/v1/issuances/{state['jti']}/ack")
        return "ok"


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


# --- actors -----------------------------------------------------------------------------------

APP_EVENT_RATES = (  # (type, share of normal users reporting it once)
    ("download_failed", 0.04),
    ("app_reinstalled", 0.03),
    ("keystore_unavailable", 0.02),
    ("tls_pin_mismatch", 0.01),
    ("emulator_detected", 0.005),
    ("root_detected", 0.005),
)


def normal_user(base: str, token: str, ip: str, rng: random.Random, events: list[str]) -> Outcome:
    """An honest user: devices, a few fetches, a few app events."""
    outcome = Outcome()
    client = Client(base, token, ip, outcome)
    try:
        devices = ["phone"] + (["tablet"] if rng.random() < 0.1 else [])
        for device in devices:
            client.register(device, RecipientPrivateKey.generate(KEM.X25519))
        if events:
            now = int(time.time())
            client.report("phone", [{"type": t, "at": now, "details": {}} for t in events])
        for _ in range(rng.randint(1, 3)):
            time.sleep(rng.uniform(0.0, 0.3))
            client.fetch(MODEL, rng.choice(devices))
    finally:
        client.close()
    return outcome


def scraper_farm(base: str, tokens: list[str], rng: random.Random) -> Outcome:
    """Accounts used one after the other, each until refused, then the catalog's other ids."""
    outcome = Outcome()
    addresses = ["203.0.113.10", "203.0.113.11"]
    for number, token in enumerate(tokens):
        client = Client(base, token, rng.choice(addresses), outcome)
        try:
            if client.register(f"farm-{number}", RecipientPrivateKey.generate(KEM.X25519)) >= 400:
                continue
            while client.fetch(MODEL, f"farm-{number}") == "ok":
                pass
            for model_id in rng.sample(DECOYS, len(DECOYS)):
                client.fetch(model_id, f"farm-{number}")
        finally:
            client.close()
    return outcome


def clone_app(
    base: str, owner: str, bought: list[str], installs: int, rng: random.Random
) -> Outcome:
    """A clone shipping one extracted device key, installed on many phones at once."""
    outcome = Outcome()
    key = RecipientPrivateKey.generate(KEM.X25519)
    first = Client(base, owner, "198.51.100.1", outcome)
    first.register("install-0", key)  # the genuine install the key was taken from
    first.fetch(MODEL, "install-0")
    first.close()

    def install(number: int) -> None:
        token = owner if number % 2 else bought[number % len(bought)]
        client = Client(base, token, f"198.51.100.{number + 1}", outcome)
        try:
            device = f"install-{number}"
            if client.register(device, key) >= 400:
                device = "install-0"  # the clone falls back to the original device id
            for _ in range(3):
                if client.fetch(MODEL, device) != "ok":
                    break
                time.sleep(rng.uniform(0.0, 0.2))
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(install, range(1, installs + 1)))
    return outcome


def credential_stuffing(
    base: str, combo: list[str], rng: random.Random, budget_seconds: float
) -> tuple[Outcome, dict[str, int]]:
    """Try each token of a combo list from three addresses; loot the accounts that work."""
    outcome = Outcome()
    stats = Counter[str]()
    addresses = ["192.0.2.7", "192.0.2.8", "192.0.2.9"]
    deadline = time.monotonic() + budget_seconds
    for token in combo:
        if time.monotonic() > deadline:
            stats["not_tried"] += 1
            continue
        address = addresses[stats["tried"] % len(addresses)]
        client = Client(base, token, address, outcome)
        try:
            stats["tried"] += 1
            response = client.call("GET", "/v1/devices")
            if response.status_code == 429:
                stats["locked_out"] += 1
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
                continue
            if response.status_code != 200:
                continue
            stats["taken_over"] += 1
            device = f"loot-{stats['taken_over']}"
            if client.register(device, RecipientPrivateKey.generate(KEM.X25519)) >= 400:
                continue
            while client.fetch(MODEL, device) == "ok":
                pass
        finally:
            client.close()
    return outcome, dict(stats)


def slow_scraper(base: str, token: str, requests: int, pace_seconds: float) -> Outcome:
    """One account pacing itself under the rate limits, asking again and again."""
    outcome = Outcome()
    client = Client(base, token, "198.18.0.5", outcome)
    try:
        client.register("slow", RecipientPrivateKey.generate(KEM.X25519))
        for _ in range(requests):
            if client.fetch(MODEL, "slow") == "account_blocked":
                break
            time.sleep(pace_seconds)
    finally:
        client.close()
    return outcome


def verdicts(base: str) -> dict[str, dict[str, Any]]:
    """Every user with a verdict, from the admin API."""
    response = httpx.get(
        f"{base}/v1/admin/fraud/verdicts?limit=1000",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": "10.0.0.1"},
        timeout=60,
    )
    response.raise_for_status()
    return {v["user"]: v for v in response.json()["verdicts"]}


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every actor against one server; return the report."""
    rng = random.Random(args.seed)
    normal = [f"user{i:04d}" for i in range(args.normal)]
    farm = [f"farm{i:02d}" for i in range(args.farm_accounts)]
    bought = [f"bought{i:02d}" for i in range(3)]
    # Honest users whose tokens leaked into the combo list: they use the service like
    # the others, but their accounts are the attacker's once taken over, so they are
    # reported with the attack, not in the normal users' figures.
    victims = [f"leaked{i:02d}" for i in range(args.victims)]
    names = [*normal, *victims, *farm, *bought, "clone-owner", "slow", *HONEY_ACCOUNTS]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelseal-sim-") as scratch:
        directory = Path(scratch)
        config = write_config(directory, args.quota, args.rules)
        tokens = create_accounts(config, names)
        server = Server(config, directory / "server.log")
        try:
            base = server.base
            # Normal traffic first (the app's honest population), then attacks alongside
            # a second wave of honest users.
            nat_pools = [f"100.64.{i}.1" for i in range(max(1, args.normal // 25))]
            plan: list[tuple[str, str, list[str]]] = []
            for number, name in enumerate(normal):
                ip = (
                    rng.choice(nat_pools)
                    if rng.random() < 0.2
                    else f"10.{number // 250}.{number % 250}.2"
                )
                plan.append((name, ip, []))
            for type_, share in APP_EVENT_RATES:
                for index in rng.sample(range(len(plan)), max(0, round(share * len(plan)))):
                    plan[index][2].append(type_)
            outcomes: dict[str, Outcome] = {}
            honest = plan
            wave = len(honest) // 2

            def honest_user(entry: tuple[str, str, list[str]]) -> None:
                name, ip, events = entry
                outcomes[name] = normal_user(base, tokens[name], ip, random.Random(name), events)

            victim_plan = [(v, f"10.200.{i}.2", []) for i, v in enumerate(victims)]
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(honest_user, [*victim_plan, *honest[:wave]]))
            for victim in victims:
                outcomes.pop(victim, None)
            attack: dict[str, Callable[[], Any]] = {
                "scraper_farm": lambda: scraper_farm(base, [tokens[n] for n in farm], rng),
                "clone_app": lambda: clone_app(
                    base,
                    tokens["clone-owner"],
                    [tokens[n] for n in bought],
                    args.clone_installs,
                    rng,
                ),
                "credential_stuffing": lambda: credential_stuffing(
                    base,
                    rng.sample(
                        [tokens[v] for v in victims]
                        + [tokens[h] for h in HONEY_ACCOUNTS]
                        + [
                            "ms_" + secrets.token_hex(8) + "_" + secrets.token_urlsafe(32)
                            for _ in range(args.combo_size)
                        ],
                        args.combo_size + len(victims) + len(HONEY_ACCOUNTS),
                    ),
                    rng,
                    args.stuffing_seconds,
                ),
                "slow_scraper": lambda: slow_scraper(base, tokens["slow"], 3 * args.quota, 1.2),
            }
            results: dict[str, Any] = {}
            with ThreadPoolExecutor(args.workers + len(attack)) as pool:
                futures = {name: pool.submit(fn) for name, fn in attack.items()}
                list(pool.map(honest_user, honest[wave:]))
                results = {name: future.result() for name, future in futures.items()}
            final = verdicts(base)
        finally:
            server.stop()
            if args.keep_log is not None:
                args.keep_log.write_bytes((directory / "server.log").read_bytes())
    return report(args, results, outcomes, final, farm, time.monotonic() - started)


def report(
    args: argparse.Namespace,
    results: dict[str, Any],
    outcomes: dict[str, Outcome],
    final: dict[str, dict[str, Any]],
    farm: list[str],
    seconds: float,
) -> dict[str, Any]:
    """The figures the issue asks for, and whether the goals hold."""
    attackers: dict[str, Any] = {}
    for name, result in results.items():
        outcome, extra = result if isinstance(result, tuple) else (result, {})
        attackers[name] = {"imls": outcome.imls, "refusals": dict(outcome.codes), **extra}
    attackers["scraper_farm"]["accounts_blocked"] = sum(
        1 for n in farm if final.get(n, {}).get("verdict") == "malicious"
    )
    attackers["scraper_farm"]["accounts"] = len(farm)
    attackers["scraper_farm"]["rules"] = sorted(
        {r["rule_id"] for n in farm for r in final.get(n, {}).get("fired", [])}
    )
    attackers["clone_app"]["rules"] = sorted(
        {
            r["rule_id"]
            for n in ("clone-owner", "bought00", "bought01", "bought02")
            for r in final.get(n, {}).get("fired", [])
        }
    )
    attackers["slow_scraper"]["verdict"] = final.get("slow", {}).get("verdict", "ok")
    total = len(outcomes)
    limited = [
        n
        for n, o in outcomes.items()
        if o.limited or final.get(n, {}).get("verdict") == "suspicious"
    ]
    blocked = [
        n
        for n, o in outcomes.items()
        if o.blocked or final.get(n, {}).get("verdict") == "malicious"
    ]
    cap = args.quota + 5
    goals = {
        "scraper_farm_within_quota_plus_5": attackers["scraper_farm"]["imls"] <= cap,
        "slow_scraper_within_quota_plus_5": attackers["slow_scraper"]["imls"] <= cap,
        "clone_app_within_quota_plus_5": attackers["clone_app"]["imls"] <= cap,
        "normal_limited_at_most_1_percent": len(limited) <= 0.01 * total,
        "no_normal_user_blocked": not blocked,
    }
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds, 1),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "attackers": attackers,
        "normal_users": {
            "count": total,
            "imls": sum(o.imls for o in outcomes.values()),
            "limited": len(limited),
            "limited_share": round(len(limited) / total, 4) if total else 0.0,
            "refusals": dict(sum((o.codes for o in outcomes.values()), Counter[str]())),
            "limited_users": {
                n: {
                    "rules": [r["rule_id"] for r in final.get(n, {}).get("fired", [])],
                    "refusals": dict(outcomes[n].codes),
                    "messages": outcomes[n].messages,
                }
                for n in limited
            },
            "blocked": len(blocked),
        },
        "goals": goals,
    }


def main() -> None:
    """Parse arguments, run, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--normal", type=int, default=200, help="normal users")
    parser.add_argument("--quota", type=int, default=5, help="IMLs per user and day")
    parser.add_argument("--farm-accounts", type=int, default=8, help="scraper farm accounts")
    parser.add_argument("--clone-installs", type=int, default=12, help="clone app installs")
    parser.add_argument(
        "--combo-size", type=int, default=300, help="invalid tokens in the combo list"
    )
    parser.add_argument("--victims", type=int, default=5, help="leaked valid tokens in it")
    parser.add_argument("--stuffing-seconds", type=float, default=45.0, help="stuffing time budget")
    parser.add_argument("--workers", type=int, default=12, help="concurrent honest users")
    parser.add_argument("--seed", type=int, default=6, help="random seed")
    parser.add_argument(
        "--rules", type=Path, default=None, help="a rules file (default: the packaged rules)"
    )
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the server log here")
    args = parser.parse_args()
    result = run(args)
    OUT_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"simulate_traffic-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(
        json.dumps(
            {k: result[k] for k in ("attackers", "normal_users", "goals", "seconds")}, indent=2
        )
    )
    print(f"saved {path}")
    if not all(result["goals"].values()):
        sys.exit(1)


if __name__ == "__main__":
    threading.current_thread().name = "simulate_traffic"
    main()
