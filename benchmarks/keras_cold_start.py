"""Keras: export time of a ~100 MB MLP, and cold start to first prediction, bundle vs .keras.

    .venv/bin/python benchmarks/keras_cold_start.py [--runs 5] [--export-runs 3]

Every measurement runs in a fresh interpreter, so TensorFlow's import is paid
where a user would pay it:

* export: a child builds the MLP (Keras imported, not timed) and times
  ``bundle.save(model, ..., sample_input=..., signing_key=...)`` -- tracing,
  tf2onnx, the parity run, the training state and the signed zip;
* cold start: the whole child process, from the parent's ``Popen`` to its exit
  (interpreter start included), for ``bundle.load`` (signature + hashes checked)
  + ``predict`` on one row, against ``keras.models.load_model`` on the same
  model's ``.keras`` file + ``model(x)`` (the fastest first call) and +
  ``model.predict(x)``. Children alternate so drift hits all alike. The children
  report their own import / load / first-prediction split and peak RSS.

Prints medians as a markdown table. TF_CPP_MIN_LOG_LEVEL=3 in the Keras
children so that log output costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD = """
import keras, numpy as np
def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((1024,), name="x"),
        keras.layers.Dense(4096, activation="relu"), keras.layers.Dense(4096, activation="relu"),
        keras.layers.Dense(1024)])
"""

EXPORT_CHILD = (
    BUILD
    + """
import json, sys, time
import bundle
model = build()
x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
key = bundle.load_private_key(sys.argv[2])
t = time.perf_counter()
m = bundle.save(model, sys.argv[1], sample_input=x, signing_key=key)
dt = time.perf_counter() - t
params = sum(int(np.prod(v.shape)) for v in model.weights)
print(json.dumps({"save_s": dt, "params": params, "max_abs": m.parity.outputs[0].max_abs}))
"""
)

KERAS_SAVE_CHILD = (
    BUILD
    + """
import sys
build().save(sys.argv[1])
"""
)

BUNDLE_CHILD = """
import time; t0 = time.perf_counter()
import json, resource, sys
import numpy as np
import bundle
t1 = time.perf_counter()
m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2])
t2 = time.perf_counter()
y = m.predict(np.load(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

KERAS_CHILD = """
import time; t0 = time.perf_counter()
import json, resource, sys
import numpy as np
import keras
t1 = time.perf_counter()
model = keras.models.load_model(sys.argv[1])
t2 = time.perf_counter()
x = np.load(sys.argv[2])
y = model.predict(x, verbose=0) if sys.argv[3] == "predict" else model(x)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(code: str, *args: str) -> tuple[float, dict[str, float]]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    return wall, json.loads(res.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--export-runs", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    import bundle

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        key = bundle.generate_key()
        key_path, pub = key.save(tmp / "k")
        path = tmp / "mlp.mbundle"
        exports = []
        info: dict[str, float] = {}
        for _ in range(args.export_runs):
            _, info = run(EXPORT_CHILD, str(path), str(key_path))
            exports.append(info["save_s"])
        subprocess.run(
            [sys.executable, "-c", KERAS_SAVE_CHILD, str(tmp / "mlp.keras")],
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
        )
        x = np.random.default_rng(1).standard_normal((1, 1024)).astype(np.float32)
        np.save(tmp / "x.npy", x)
        sizes = {"bundle": path.stat().st_size, ".keras": (tmp / "mlp.keras").stat().st_size}
        kinds = {
            "bundle.load + predict": (BUNDLE_CHILD, (str(path), str(pub), str(tmp / "x.npy"))),
            "keras load_model + model(x)": (
                KERAS_CHILD,
                (str(tmp / "mlp.keras"), str(tmp / "x.npy"), "call"),
            ),
            "keras load_model + predict": (
                KERAS_CHILD,
                (str(tmp / "mlp.keras"), str(tmp / "x.npy"), "predict"),
            ),
        }
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        parts: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for _ in range(args.runs):
            for name, (code, cargs) in kinds.items():
                wall, split = run(code, *cargs)
                walls[name].append(wall)
                parts[name].append(split)

    print(
        f"MLP 1024-4096-4096-1024: {int(info['params']):,} parameters; bundle "
        f"{sizes['bundle'] / 2**20:.1f} MiB, .keras {sizes['.keras'] / 2**20:.1f} MiB; "
        f"parity max abs {info['max_abs']:.2e}\n"
    )
    print(
        f"export (bundle.save, signed), median of {args.export_runs}: "
        f"{median(exports):.2f} s  (runs: {', '.join(f'{e:.2f}' for e in exports)})\n"
    )
    base = median(walls["bundle.load + predict"])
    print(f"cold start to first prediction, fresh process, median of {args.runs}:\n")
    print("| | wall (process) | import | load | first prediction | peak RSS | vs bundle |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in kinds:
        p = parts[name]
        w = median(walls[name])
        print(
            f"| {name} | {w:.2f} s | {median([q['import'] for q in p]):.2f} s | "
            f"{median([q['load'] for q in p]):.3f} s | {median([q['first'] for q in p]):.3f} s"
            f" | {median([q['rss_mb'] for q in p]):.0f} MiB | {w / base:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
