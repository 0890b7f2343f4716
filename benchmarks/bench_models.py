"""Model load benchmark: plain, sealed and sealed-weights loads, time and peak RSS.

Three model sizes, three ways each, every run in a fresh interpreter so that its peak
resident set (``VmHWM``) belongs to that one load:

* about 1 MB and 100 MB: ONNX models (chains of ``Gemm`` layers, as in
  ``bench_client_load.py``), loaded into an ONNX Runtime session:

  - **plain**: ``InferenceSession(path)`` on the ``.onnx`` file;
  - **sealed**: :func:`modelseal.client.runtime.load_at_rest` on an at-rest package
    (KEK) of an ordinary bundle: the whole plaintext decrypted into one wipeable
    buffer, the weights handed over as external initializers, the buffer wiped;
  - **sealed-weights**: ``load_at_rest`` on a sealed-weights bundle
    (:mod:`modelseal.models.sealed_weights`): the graph, then each tensor decrypted
    by random access into a buffer of its own, the buffers wiped;

* 2 GiB: a safetensors file of random float32 tensors (ONNX cannot hold 2 GiB in one
  protobuf), every tensor loaded into numpy:

  - **plain**: ``safetensors.numpy.load_file(path)``;
  - **sealed**: the at-rest package decrypted whole into one buffer (``open_into``
    from a read-only map), tensors as views of it;
  - **sealed-weights**: :class:`modelseal.client.sealed_safetensors.SealedSafetensors`,
    each tensor decrypted on access into its own array.

Time is from the start of the load to the session (or the last tensor), measured in
the child after every module the loaders use is imported; *peak RSS added* is the
child's peak (``VmHWM``) minus its peak after imports, *RSS after load* its resident
set with the model loaded minus before. Files are read once before the runs (warm page
cache); each run waits up to 15 s for an idle machine and records the CPU time other
programs took meanwhile. ONNX sizes take the median of ``--repeats`` runs (default 5),
the 2 GiB case one run. Goals: sealed <= 1.3 x plain time, <= 1.2 x plain peak RSS.

Run from the repository root (about 5 minutes on an idle machine; needs about 5 GiB free
under the work directory and about 5 GiB of memory for the 2 GiB case)::

    .venv/bin/python benchmarks/bench_models.py                 # 1 MB, 100 MB, 2 GiB
    .venv/bin/python benchmarks/bench_models.py --sizes 1 100   # skip the 2 GiB case

Results: a markdown table on stdout and every run in ``benchmarks/out/bench_models-*.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MB = 10**6
MIB = 1 << 20
OUT_DIR = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
WAYS = ("plain", "sealed", "sealed-weights")
SAFETENSORS_SIZES_MB = frozenset({2048})


# --- children: one load each -------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def _peak_kib() -> int:
    return _status_kib("VmHWM")


def child(args: dict[str, Any]) -> dict[str, Any]:
    """Import what the way needs, then time one load and report the peak RSS it added."""
    import mmap

    import onnxruntime
    from safetensors.numpy import load_file

    # Modules the loaders import on first use, imported here as a running app would have them.
    import modelseal.client.onnx_split
    import modelseal.client.sealed_weights
    import modelseal.models.sealed_weights  # noqa: F401
    from modelseal.client.memory import WipeableBytes
    from modelseal.client.runtime import load_at_rest
    from modelseal.client.sealed_safetensors import SealedSafetensors
    from modelseal.envelope import OpenPolicy, open_into, open_stream
    from modelseal.keys import KEK
    from modelseal.models.safetensors_adapter import parse_header

    kek = KEK("bench", bytes.fromhex(args["kek"]))
    kind, way, path = args["kind"], args["way"], args["path"]
    baseline = _peak_kib()
    resident = _status_kib("VmRSS")
    started = time.perf_counter()
    keep: Any
    if kind == "onnx" and way == "plain":
        keep = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    elif kind == "onnx":
        keep = load_at_rest(path, kek)
    elif way == "plain":
        keep = load_file(path)
    elif way == "sealed":
        policy = OpenPolicy()
        with open(path, "rb", buffering=0) as src:
            length = open_stream(src, kek, policy).header.length
            buffer = WipeableBytes(length)
            with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                open_into(view, buffer.view, kek, policy)
                view.release()
        plain = buffer.view
        _, tensors = parse_header(lambda a, b: bytes(plain[a:b]), length)
        keep = {
            name: np.frombuffer(plain, dtype=np.float32, count=t.info.nbytes // 4, offset=t.begin)
            for name, t in tensors.items()
        }
    else:
        with SealedSafetensors.open(path, kek, OpenPolicy()) as model:
            keep = {name: model[name] for name in model}
    elapsed = time.perf_counter() - started
    peak = _peak_kib()
    after = _status_kib("VmRSS") - resident
    del keep
    return {
        "seconds": elapsed,
        "peak_added_kib": peak - baseline,
        "resident_after_kib": after,
        "baseline_kib": baseline,
    }


# --- parent: build, seal, run ------------------------------------------------------------------


def write_random_safetensors(path: Path, total_bytes: int, tensor_bytes: int = 64 * MIB) -> None:
    """A safetensors file of random float32 tensors, written one tensor at a time."""
    count = max(1, total_bytes // tensor_bytes)
    rows = tensor_bytes // 4096
    header: dict[str, Any] = {}
    for i in range(count):
        begin = i * rows * 4096
        header[f"layer{i:03d}.weight"] = {
            "dtype": "F32",
            "shape": [rows, 1024],
            "data_offsets": [begin, begin + rows * 4096],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(5)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for _ in range(count):
            out.write(rng.standard_normal((rows, 1024), dtype=np.float32).tobytes())


def prepare(size_mb: int, work: Path, kek_hex: str) -> dict[str, tuple[str, Path]]:
    """Write the plain model and its two sealed forms; return (kind, path) per way."""
    from modelseal.envelope import AtRest, seal_bytes, seal_file
    from modelseal.keys import KEK
    from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, ManifestFields, ModelFormat, build_bundle
    from modelseal.models.sealed_weights import build_sealed_weights_bundle

    kek = KEK("bench", bytes.fromhex(kek_hex))
    if size_mb in SAFETENSORS_SIZES_MB:
        from modelseal.client.sealed_safetensors import SAFETENSORS_MEDIA_TYPE

        plain = work / f"model-{size_mb}.safetensors"
        write_random_safetensors(plain, size_mb * MIB)
        sealed = work / f"model-{size_mb}.mseal"
        seal_file(plain, sealed, AtRest(kek), ctype=SAFETENSORS_MEDIA_TYPE, fsync=False)
        return {
            "plain": ("safetensors", plain),
            "sealed": ("safetensors", sealed),
            "sealed-weights": ("safetensors", sealed),
        }
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_client_load import build_model

    model = build_model(size_mb * MB)
    plain = work / f"model-{size_mb}.onnx"
    plain.write_bytes(model)
    fields = ManifestFields(model_id="bench", version="1", format=ModelFormat.ONNX)
    whole = work / f"model-{size_mb}.bundle.mseal"
    whole.write_bytes(
        seal_bytes(
            build_bundle(fields, [("model.onnx", model)]), AtRest(kek), ctype=BUNDLE_MEDIA_TYPE
        )
    )
    split = work / f"model-{size_mb}.sw.mseal"
    split.write_bytes(
        seal_bytes(build_sealed_weights_bundle(fields, model), AtRest(kek), ctype=BUNDLE_MEDIA_TYPE)
    )
    return {"plain": ("onnx", plain), "sealed": ("onnx", whole), "sealed-weights": ("onnx", split)}


def run_child(kind: str, way: str, path: Path, kek_hex: str) -> dict[str, Any]:
    """One load in a fresh interpreter, started once the machine is quiet (or 15 s passed)."""
    from _rss import cpu_busy_seconds, own_cpu_seconds, wait_until_quiet

    wait_until_quiet(15.0)
    busy_before, own_before = cpu_busy_seconds()[0], own_cpu_seconds()[0]
    payload = json.dumps({"kind": kind, "way": way, "path": str(path), "kek": kek_hex})
    result = subprocess.run(
        [sys.executable, __file__, "--child", payload],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    others = (cpu_busy_seconds()[0] - busy_before) - (own_cpu_seconds()[0] - own_before)
    report["other_user_cpu_seconds"] = round(max(others, 0.0), 3)
    return report


def warm(path: Path) -> None:
    """Read a file once so that every way starts from a warm page cache."""
    with open(path, "rb", buffering=0) as src:
        buf = bytearray(8 * MIB)
        while src.readinto(buf):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 2048], help="MB")
    parser.add_argument("--repeats", type=int, default=5, help="runs per way (2 GiB: 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    kek_hex = os.urandom(32).hex()
    work = Path(tempfile.mkdtemp(prefix="bench-models-", dir=args.workdir))
    results: list[dict[str, Any]] = []
    try:
        for size_mb in args.sizes:
            ways = prepare(size_mb, work, kek_hex)
            repeats = 1 if size_mb in SAFETENSORS_SIZES_MB else args.repeats
            for _, path in set(ways.values()):
                warm(path)
            runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
            for _ in range(repeats):
                for way in WAYS:
                    kind, path = ways[way]
                    runs[way].append(run_child(kind, way, path, kek_hex))
            row: dict[str, Any] = {
                "size_mb": size_mb,
                "kind": ways["plain"][0],
                "file_bytes": ways["plain"][1].stat().st_size,
                "runs": runs,
            }
            for way in WAYS:
                row[way] = {
                    "seconds": statistics.median(r["seconds"] for r in runs[way]),
                    "peak_added_mib": statistics.median(r["peak_added_kib"] for r in runs[way])
                    / 1024,
                    "resident_after_mib": statistics.median(
                        r["resident_after_kib"] for r in runs[way]
                    )
                    / 1024,
                }
            results.append(row)
            print(f"done {size_mb} MB", file=sys.stderr)
            for _, path in set(ways.values()):
                path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    OUT_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (OUT_DIR / f"bench_models-{stamp}.json").write_text(
        json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "results": results})
    )
    return 0


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table for docs/PERFORMANCE.md."""
    lines = [
        "| Model | Way | Load time | Peak RSS added | RSS after load | Time vs plain "
        "| Peak RSS vs plain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        plain = row["plain"]
        label = f"{row['file_bytes'] / MB:,.0f} MB {row['kind']}"
        for way in WAYS:
            cell = row[way]
            time_ratio = cell["seconds"] / plain["seconds"]
            rss_ratio = cell["peak_added_mib"] / max(plain["peak_added_mib"], 1e-9)
            lines.append(
                f"| {label} | {way} | {cell['seconds'] * 1000:,.1f} ms | "
                f"{cell['peak_added_mib']:,.1f} MiB | {cell['resident_after_mib']:,.1f} MiB | "
                f"{time_ratio:.2f}x | {rss_ratio:.2f}x |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
