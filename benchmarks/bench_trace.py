"""``modelseal trace`` at scale: how long it takes to scan every issuance of a model.

Run from the repository root::

    .venv/bin/python benchmarks/bench_trace.py                   # 100 000 issuances
    .venv/bin/python benchmarks/bench_trace.py --issuances 10000  # quicker

It creates a temporary SQLite database at the current schema with ``--users`` users, one
device each, and ``--issuances`` issuances of the reference digits model spread over
them, each with its watermark record (bulk inserts; not timed). One of the issuances is
real: that user's reference IML, marked with the issuance's key (and, for the bound
scenario, bound to its device). Then it times :meth:`WatermarkingService.trace`, the
code behind ``modelseal trace``, for three suspects:

* ``marked``: the marked IML as issued without binding (the blind scan finds it);
* ``bound``: the marked and bound IML a device holds (the blind scan finds nothing, so
  every bound candidate is scored again after undoing its own transform);
* ``unmarked``: the user's IML never issued, against bound issuances (the worst case:
  every pass runs, nothing matches).

Results go to stdout and to ``benchmarks/out/bench_trace-<UTC>.json``.
``docs/WATERMARK.md`` quotes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _rss import peak_rss_kib

from modelseal.models import binding as binding_lib
from modelseal.models import reference
from modelseal.models import watermark as wm
from modelseal.server.container import open_database
from modelseal.server.db.models import Device, Issuance, User
from modelseal.server.db.session import make_session_factory
from modelseal.server.db.watermark_models import WatermarkRecord
from modelseal.server.services.watermarking import (
    SCHEME,
    WatermarkingService,
    device_binding_secret,
    load_server_secret,
)
from modelseal.server.settings import load_settings

OUT_DIR = Path(__file__).resolve().parent / "out"
MODEL_ID = "digits"
BATCH = 10_000


def _populate(
    sessions: Any, users: int, issuances: int, bound: bool, target: int
) -> list[dict[str, Any]]:
    """Insert users, devices, issuances and watermark records; returns the issuance rows."""
    now = 1_800_000_000
    with sessions.begin() as session:
        session.execute(
            insert(User),
            [
                {
                    "id": i + 1,
                    "subject": f"u_{i:08d}",
                    "name": f"user{i}",
                    "provider": "local",
                    "provider_subject": f"user{i}",
                    "created_at": now,
                }
                for i in range(users)
            ],
        )
        session.execute(
            insert(Device),
            [
                {
                    "id": i + 1,
                    "user_id": i + 1,
                    "device_id": f"phone-{i:08d}",
                    "kid": f"kid-{i:08d}",
                    "kem": "X25519",
                    "public_jwk": {},
                    "app_version": "1.0.0",
                    "created_at": now,
                }
                for i in range(users)
            ],
        )
    rows = []
    for start in range(0, issuances, BATCH):
        issuance_rows, record_rows = [], []
        for n in range(start, min(start + BATCH, issuances)):
            owner = n % users
            jti = secrets.token_hex(16)
            issued_at = now + n
            issuance_rows.append(
                {
                    "jti": jti,
                    "user_id": owner + 1,
                    "device_pk": owner + 1,
                    "model_id": MODEL_ID,
                    "package_id": jti,
                    "issuer_kid": "bench",
                    "blob_key": jti,
                    "size": 0,
                    "created_at": issued_at,
                    "expires_at": issued_at + 900,
                    "blob_expires_at": issued_at + 3600,
                }
            )
            record_rows.append(
                {
                    "jti": jti,
                    "model_id": MODEL_ID,
                    "user_subject": f"u_{owner:08d}",
                    "device_id": f"phone-{owner:08d}",
                    "issued_at": issued_at,
                    "scheme": SCHEME,
                    "tensors": ["fc1.weight"],
                    "strength": 0.06,
                    "density": 64,
                    "binding": binding_lib.BINDING_TYPE if bound else None,
                    "binding_layer": "fc1.weight" if bound else None,
                }
            )
        with sessions.begin() as session:
            session.execute(insert(Issuance), issuance_rows)
            session.execute(insert(WatermarkRecord), record_rows)
        rows.extend(record_rows)
    return rows


def _scenario(args: argparse.Namespace, name: str, root: Path) -> dict[str, Any]:
    # The unmarked suspect is scanned against bound issuances: every pass runs (worst case).
    bound = name in ("bound", "unmarked")
    data_dir = root / name
    settings = load_settings(
        data_dir=data_dir,
        models=[
            {
                "id": MODEL_ID,
                "generator": "modelseal.models.reference:generate_iml",
                "ctype": "application/vnd.modelseal.bundle",
                "watermark": True,
                "binding": bound,
            }
        ],
    )
    data_dir.mkdir(parents=True)
    engine = open_database(settings)
    sessions = make_session_factory(engine)
    target = args.issuances // 3
    started = time.perf_counter()
    rows = _populate(sessions, args.users, args.issuances, bound, target)
    populate_seconds = time.perf_counter() - started
    chosen = rows[target]
    iml = reference.iml_onnx(chosen["user_subject"])
    suspect = iml
    if name != "unmarked":
        key = wm.WatermarkKey.derive(
            load_server_secret(settings, "watermark_secret"), chosen["jti"]
        )
        suspect = wm.embed_onnx(iml, key)
    if name == "bound":
        device_secret = device_binding_secret(
            load_server_secret(settings, "binding_secret"), chosen["device_id"]
        )
        suspect = binding_lib.bind_onnx(
            suspect, binding_lib.derive_transform(device_secret, chosen["jti"])
        )
    base = reference.base_onnx()
    service = WatermarkingService(sessions, settings)
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    report = service.trace(suspect, base, MODEL_ID)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    engine.dispose()
    best = report.best
    result = {
        "scenario": name,
        "issuances": report.candidates,
        "scores": report.scores,
        "trace_seconds": round(seconds, 2),
        "trace_cpu_seconds": round(cpu_seconds, 2),
        "load_average_1min": round(load_before, 2),
        "populate_seconds": round(populate_seconds, 1),
        "found": report.found,
        "named_the_issuance": best is not None and best.jti == chosen["jti"],
        "best_z": round(best.z, 2) if best else None,
        "best_method": best.method if best else None,
        "best_family_p": best.family_p_value if best else None,
        "second_z": round(report.matches[1].z, 2) if len(report.matches) > 1 else None,
        "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issuances", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--scenarios", default="marked,bound,unmarked", help="comma-separated subset"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        for name in args.scenarios.split(","):
            results.append(_scenario(args, name, Path(tmp)))
    OUT_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = OUT_DIR / f"bench_trace-{stamp}.json"
    document = {"cpus": os.cpu_count(), "args": vars(args), "results": results}
    out.write_text(json.dumps(document, indent=1))
    print(f"wrote {out}")
    print()
    print(
        "| suspect | issuances | scores | wall time (s) | CPU time (s) | load | found "
        "| best z (pass) | next z |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scenario']} | {r['issuances']} | {r['scores']} | {r['trace_seconds']} "
            f"| {r['trace_cpu_seconds']} | {r['load_average_1min']} | {r['found']} "
            f"| {r['best_z']} ({r['best_method']}) | {r['second_z']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
