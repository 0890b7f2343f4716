"""Client load benchmark: from a stored model to a ready ONNX Runtime session, sealed vs plain.

For ONNX models of about 1 MB and 100 MB (chains of ``Gemm`` layers with large float32
initializers, built with ``onnx.helper``), it times, on a warm page cache:

* **plain**: ``onnxruntime.InferenceSession(path)`` on the model file;
* **sealed**: :func:`modelseal.client.runtime.load_at_rest` on the device's at-rest package
  (rtype ``kek``): open it with the KEK (header, DEK unwrap, key commitment), decrypt every
  chunk straight into a wipeable ``bytes`` object, build ``InferenceSession(bytes)``, wipe the
  bytes. This is what :meth:`modelseal.client.DeviceClient.load` does after the keystore has
  handed out the KEK (unlocking the keystore is a once-per-process cost, left out);
* of which **decrypt**: the open and decryption alone, into a wipeable buffer.

Both sessions use the same options (ONNX Runtime's defaults, CPU provider). Each case runs
once untimed, then ``--repeats`` times alternating with the other path, each run started on
an idle machine (``_rss.wait_until_quiet``); the table shows medians with min-max, and the JSON
records the CPU time other programs took during each run. The goal is sealed <= 1.3 x plain.

Run from the repository root::

    .venv/bin/python benchmarks/bench_client_load.py               # 1 MB and 100 MB, 5 repeats
    .venv/bin/python benchmarks/bench_client_load.py --sizes 1      # the 1 MB model only

Results: a markdown table on stdout (for ``docs/PERFORMANCE.md``, section "Client load") and
every run in ``benchmarks/out/bench_client_load-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import mmap
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from _rss import cpu_busy_seconds, own_cpu_seconds, wait_until_quiet
from onnx import TensorProto, helper, numpy_helper

from modelseal.client.memory import WipeableBytes
from modelseal.client.runtime import load_at_rest
from modelseal.envelope import AtRest, Claims, OpenPolicy, open_into, open_stream, seal_bytes
from modelseal.keys import KEK

MB = 10**6
QUIET_WAIT_SECONDS = 30.0
OUT_DIR = Path(__file__).resolve().parent / "out"
ONNX_CTYPE = "application/onnx"


def build_model(target_bytes: int, seed: int = 7) -> bytes:
    """A chain of square Gemm layers whose float32 weights add up to about ``target_bytes``."""
    side = 512 if target_bytes < 20 * MB else 2048
    layer_bytes = side * side * 4
    layers = max(1, round(target_bytes / layer_bytes))
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    previous = "input"
    for i in range(layers):
        weight = (rng.standard_normal((side, side), dtype=np.float32) / np.sqrt(side)).astype(
            np.float32
        )
        bias = np.zeros(side, dtype=np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"W{i}"),
            numpy_helper.from_array(bias, f"B{i}"),
        ]
        output = "output" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"W{i}", f"B{i}"], [output]))
        previous = output
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", side])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def claims() -> Claims:
    now = int(time.time())
    return Claims(
        iss="bench",
        sub="u",
        aud="d",
        mid="bench",
        jti="j",
        iat=now - 1,
        exp=now + 900,
        lexp=now + 86400,
    )


def plain_load(path: Path) -> Any:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def sealed_load(path: Path, kek: KEK) -> Any:
    return load_at_rest(path, kek).session


def decrypt_only(path: Path, kek: KEK) -> None:
    """What load_at_rest does before ONNX Runtime: header check, then the body from a map."""
    policy = OpenPolicy()
    with open(path, "rb", buffering=0) as src:
        length = open_stream(src, kek, policy).header.length
        with (
            WipeableBytes(length) as buffer,
            mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        ):
            view = memoryview(mapped)
            open_into(view, buffer.view, kek, policy)
            view.release()


def timed(action: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    del result
    gc.collect()
    return elapsed


def run_size(size_mb: int, repeats: int, work: Path) -> dict[str, Any]:
    model = build_model(size_mb * MB)
    plain_path = work / f"model-{size_mb}mb.onnx"
    plain_path.write_bytes(model)
    kek = KEK.generate("models")
    sealed_path = work / f"model-{size_mb}mb.mseal"
    sealed_path.write_bytes(seal_bytes(model, AtRest(kek, claims=claims()), ctype=ONNX_CTYPE))
    # Both sessions compute the same thing: the sealed path loads the same model.
    probe = np.ones((1, onnxruntime.InferenceSession(model).get_inputs()[0].shape[1]), np.float32)
    expected = plain_load(plain_path).run(None, {"input": probe})[0]
    got = sealed_load(sealed_path, kek).run(None, {"input": probe})[0]
    np.testing.assert_array_equal(expected, got)
    del model
    cases: dict[str, Callable[[], object]] = {
        "plain": lambda: plain_load(plain_path),
        "sealed": lambda: sealed_load(sealed_path, kek),
        "decrypt": lambda: decrypt_only(sealed_path, kek),
    }
    for action in cases.values():  # warm-up: page cache, allocator, ONNX Runtime
        timed(action)
    runs: dict[str, list[float]] = {name: [] for name in cases}
    others: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(repeats):
        order = list(cases) if i % 2 == 0 else list(reversed(cases))
        for name in order:
            # This machine is shared: start each run on an idle machine, and record how
            # much CPU other programs took while it ran.
            wait_until_quiet(QUIET_WAIT_SECONDS)
            machine, own = cpu_busy_seconds()[1], own_cpu_seconds()[1]
            runs[name].append(timed(cases[name]))
            others[name].append(
                max(0.0, cpu_busy_seconds()[1] - machine - (own_cpu_seconds()[1] - own))
            )
    return {
        "size_mb": size_mb,
        "onnx_bytes": plain_path.stat().st_size,
        "sealed_bytes": sealed_path.stat().st_size,
        "runs": runs,
        "other_cpu_seconds": others,
        "median": {name: statistics.median(values) for name, values in runs.items()},
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | plain `InferenceSession(path)` | sealed `load_at_rest` | of which decrypt | "
        "sealed / plain |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        med, runs = result["median"], result["runs"]

        def cell(
            name: str, med: dict[str, float] = med, runs: dict[str, list[float]] = runs
        ) -> str:
            return f"{ms(med[name])} ms ({ms(min(runs[name]))}-{ms(max(runs[name]))})"

        ratio = med["sealed"] / med["plain"]
        lines.append(
            f"| {result['onnx_bytes'] / MB:.1f} MB | {cell('plain')} | {cell('sealed')} | "
            f"{cell('decrypt')} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100], help="model sizes, MB")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-client-load-") as tmp:
        for size_mb in args.sizes:
            print(f"building and timing the {size_mb} MB model ...", file=sys.stderr)
            results.append(run_size(size_mb, args.repeats, Path(tmp)))
    print(table(results))
    OUT_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "benchmark": "client_load",
        "when": stamp,
        "python": sys.version.split()[0],
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "results": results,
    }
    out = OUT_DIR / f"bench_client_load-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"runs written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
