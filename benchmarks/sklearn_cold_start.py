"""Cold start to first prediction, fresh processes, side by side: joblib vs model-bundle.

    .venv/bin/python benchmarks/sklearn_cold_start.py [--runs 7]

For each model, the same fitted estimator is saved with joblib and as a signed
bundle; then, alternating, a fresh interpreter loads it and predicts one batch.
The wall time of the whole child process (interpreter start included) is
measured from the parent. Prints a markdown table of medians and the ratio.
Also measures in-process predict latency of the bundle against a raw
onnxruntime session on the same graph (1 row and 1000 rows).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

JOBLIB_CHILD = """
import sys, numpy as np, joblib
m = joblib.load(sys.argv[1])
m.predict(np.load(sys.argv[2]))
"""
BUNDLE_CHILD = """
import sys, numpy as np, bundle
m = bundle.load(sys.argv[1], trusted_keys=sys.argv[3])
m.predict(np.load(sys.argv[2]))
"""


def child_time(code: str, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True)
    return time.perf_counter() - t


def models() -> dict[str, tuple[object, np.ndarray]]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    return {
        "small pipeline (scaler + logistic)":
            (make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X),
        "RandomForest(200)":
            (RandomForestClassifier(n_estimators=200, max_depth=12, random_state=0).fit(X, y), X),
    }


def predict_latency(path: Path, pub: Path, X: np.ndarray, reps: int = 200) -> list[str]:
    import onnxruntime as ort

    import bundle
    from bundle.archive import ZipReader
    from bundle.graph import inline_external, parse_model

    m = bundle.load(path, trusted_keys=pub)
    with ZipReader(path) as r:
        graph = parse_model(r.read("model.onnx", max_size=1 << 30), "model.onnx")
        inline_external(graph, r.read("weights.safetensors", max_size=1 << 30))
    raw = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = []
    for n in (1, 1000):
        x32 = X[:n].astype(np.float32)
        x64 = X[:n]

        def t_bundle() -> None:
            m.predict(x64)

        def t_raw() -> None:
            raw.run(["label"], {"X": x32})

        res = {}
        for label, fn in (("bundle", t_bundle), ("raw", t_raw)):
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            res[label] = statistics.median(times)
        rows.append(f"| predict {n} row(s) | {res['raw'] * 1e6:.0f} µs (raw onnxruntime) | "
                    f"{res['bundle'] * 1e6:.0f} µs | {res['bundle'] / res['raw']:.2f}× |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    import joblib

    import bundle

    tmp = Path(tempfile.mkdtemp())
    key = bundle.generate_key()
    _, pub = key.save(tmp / "k")
    lines = ["| measure | baseline | model-bundle | ratio |", "|---|---|---|---|"]
    for name, (model, X) in models().items():
        jpath, bpath, xpath = tmp / "m.joblib", tmp / "m.mbundle", tmp / "x.npy"
        joblib.dump(model, jpath)
        bundle.save(model, bpath, sample_input=X[:100], signing_key=key)
        np.save(xpath, X[:100])
        jt, bt = [], []
        for _ in range(args.runs):
            jt.append(child_time(JOBLIB_CHILD, str(jpath), str(xpath)))
            bt.append(child_time(BUNDLE_CHILD, str(bpath), str(xpath), str(pub)))
        j, b = statistics.median(jt), statistics.median(bt)
        lines.append(f"| cold start, {name} | {j:.3f} s (joblib.load) | {b:.3f} s "
                     f"(verify + load) | {b / j:.2f}× |")
        lines.append(f"| file size, {name} | {jpath.stat().st_size:,} B | "
                     f"{bpath.stat().st_size:,} B | {bpath.stat().st_size / jpath.stat().st_size:.2f}× |")
        if name.startswith("RandomForest"):
            lines += predict_latency(bpath, pub, X)
    empty = statistics.median(child_time("pass") for _ in range(args.runs))
    print(f"\nmedians of {args.runs} fresh processes; bare interpreter start {empty:.3f} s\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
