"""Load options by model size: in-memory vs zero-copy weights, prepacking on vs off.

    python benchmarks/load_options.py [--mb 16 100 1000] [--runs 3] [--json out.json]

For each size, a bundle of an MLP (four square float32 MatMul layers) is
loaded in fresh processes under each option, measuring: session creation
(onnxruntime only), verify + load, peak RSS above the imports, and the median
latency of a 1-row and a batch predict (1000 rows; 64 for models over 500 MB).
These are the figures behind ``bundle.runtime.session.PREPACK_MAX_BYTES`` and the
in-memory default. Medians of ``--runs``; the machine may be shared (noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

WORKER = textwrap.dedent("""
    import json, sys, time
    def hwm():  # peak RSS of this process image (ru_maxrss survives fork + exec)
        with open('/proc/self/status') as f:
            return int(f.read().split('VmHWM:')[1].split()[0]) / 1024
    import numpy as np
    import bundle, onnxruntime
    from bundle.runtime import session as runtime
    args = json.loads(sys.argv[1])
    base = hwm()
    real, created = runtime.create_session, {}
    def timed(*a, **k):
        t = time.perf_counter()
        out = real(*a, **k)
        created["s"] = time.perf_counter() - t
        return out
    runtime.create_session = timed
    t = time.perf_counter()
    m = bundle.load(args["bundle"], allow_unsigned=True, device="cpu",
                    zero_copy=args["zero_copy"], prepack=args["prepack"])
    load = time.perf_counter() - t
    n = m.inputs[0].shape[1]
    x1 = np.full((1, n), 0.01, np.float32)
    xb = np.full((args["batch"], n), 0.01, np.float32)
    m.predict(x1)
    def med(x, k):
        ts = []
        for _ in range(k):
            t = time.perf_counter()
            m.predict(x)
            ts.append(time.perf_counter() - t)
        return sorted(ts)[len(ts) // 2]
    one = med(x1, 15)
    batch = med(xb, 3)
    peak = hwm()
    print(json.dumps({"create_s": created["s"], "load_s": load, "one_row_s": one,
                      "batch_s": batch, "rss_above_imports_mib": peak - base}))
""")


def build(directory: Path, mb: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    import bundle

    n = int((mb * 1e6 / 16) ** 0.5)
    rng = __import__("numpy").random.default_rng(0)
    inits, nodes = [], []
    for i in range(4):
        w = (rng.standard_normal((n, n), dtype="float32") / n**0.5).astype("float32")
        inits.append(onnx.numpy_helper.from_array(w, f"W{i}"))
        nodes.append(
            helper.make_node(
                "MatMul", ["X" if i == 0 else f"H{i - 1}", f"W{i}"], ["Y" if i == 3 else f"H{i}"]
            )
        )
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    src = directory / "src"
    src.mkdir(parents=True, exist_ok=True)
    onnx.save(model, src / "m.onnx", save_as_external_data=True, location="m.bin")
    out = directory / f"mlp{mb}.mbundle"
    bundle.save(src / "m.onnx", out, name=f"mlp{mb}")
    shutil.rmtree(src)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[16, 100, 1000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict[str, Any] = {"cores": os.cpu_count(), "runs": args.runs, "sizes": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        for mb in args.mb:
            path = build(Path(tmp), mb)
            batch = 64 if mb > 500 else 1000
            rows = {}
            for zc in (False, True):
                for prepack in (True, False):
                    res = []
                    for _ in range(args.runs):
                        p = subprocess.run(
                            [
                                sys.executable,
                                "-c",
                                WORKER,
                                json.dumps(
                                    {
                                        "bundle": str(path),
                                        "zero_copy": zc,
                                        "prepack": prepack,
                                        "batch": batch,
                                    }
                                ),
                            ],
                            capture_output=True,
                            text=True,
                            check=False,
                        )
                        if p.returncode:
                            raise SystemExit(p.stderr[-3000:])
                        res.append(json.loads(p.stdout.strip().splitlines()[-1]))
                    r = {k: statistics.median(x[k] for x in res) for k in res[0]}
                    name = (
                        f"{'zero_copy' if zc else 'in_memory'}+"
                        f"{'prepack' if prepack else 'noprepack'}"
                    )
                    rows[name] = r
                    print(
                        f"{mb:5d} MB {name:22s} create {r['create_s']:.3f} s, load "
                        f"{r['load_s']:.2f} s, RSS +{r['rss_above_imports_mib']:.0f} MiB, "
                        f"1 row {r['one_row_s'] * 1e3:.2f} ms, {batch} rows "
                        f"{r['batch_s'] * 1e3:.0f} ms (load average "
                        f"{os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
            report["sizes"][mb] = rows
            path.unlink()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
