"""Large models end to end: export, verify, fresh-process load + first predict, sign.

    python benchmarks/large_model.py [--gb 1] [--kind mlp|embedding] [--runs 3]
                                     [--dir DIR] [--json out.json]

The model is ONNX with its weights in an external data file (how large models
are handed over), built once in ``--dir``: ``mlp`` is four square float32
MatMul layers; ``embedding`` is one float32 table read by Gather -- with
``--gb 2.2`` a single 2.2 GB tensor, which no ONNX protobuf can hold.

Every measurement runs in a fresh Python process (its own peak RSS, cold
imports, warm page cache) and is repeated ``--runs`` times; medians are shown.

* baseline: ``safetensors.numpy.save_file`` of the same tensors + SHA-256 of
  the written file (1 MiB reads), the yardstick for export (target <= 1.5x);
* export: ``bundle.save(model.onnx, signing_key=...)`` -- weights streamed from
  the external data, hashed in parallel, fsynced;
* verify: ``bundle.verify`` (every byte hashed, signature checked);
* load: ``bundle.load`` + first 1-row predict, default (verified in-memory
  weights) and ``zero_copy=True`` (mapped from the bundle), with peak RSS
  against the weight bytes;
* sign: ``bundle.sign`` of a copy by a second key (target <= 1.1x verify).

The machine may be shared with other work: figures are noisy, hence medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

WORKER = textwrap.dedent("""
    import json, os, sys, time
    def hwm():  # peak RSS of this process image (ru_maxrss survives fork + exec)
        with open('/proc/self/status') as f:
            return int(f.read().split('VmHWM:')[1].split()[0]) / 1024
    task, args = sys.argv[1], json.loads(sys.argv[2])
    t0 = time.perf_counter()
    out = {}
    if task == "baseline":
        import hashlib, numpy as np
        from safetensors.numpy import save_file
        tensors = {n: np.fromfile(args["src"], dtype=np.float32, count=c, offset=o).reshape(s)
                   for n, o, c, s in args["tensors"]}
        t0 = time.perf_counter()
        save_file(tensors, args["out"])
        t1 = time.perf_counter()
        h = hashlib.sha256()
        with open(args["out"], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out["save_file_s"], out["sha256_s"] = t1 - t0, time.perf_counter() - t1
    else:
        import bundle
        import numpy as np
        import onnxruntime
        out["import_s"] = time.perf_counter() - t0
        out["import_rss_mib"] = hwm()
        t0 = time.perf_counter()
        if task == "export":
            key = bundle.load_private_key(args["key"])
            t0 = time.perf_counter()
            bundle.save(args["src"], args["out"], signing_key=key, name="large")
        elif task == "verify":
            bundle.verify(args["bundle"], trusted_keys=args["pub"])
        elif task == "load":
            m = bundle.load(args["bundle"], trusted_keys=args["pub"], device="cpu",
                            zero_copy=args["zero_copy"], prepack=args["prepack"])
            out["load_s"] = time.perf_counter() - t0
            x = np.asarray(args["x"], dtype=m.inputs[0].dtype)
            t1 = time.perf_counter()
            m.predict(x)
            out["first_predict_s"] = time.perf_counter() - t1
        elif task == "sign":
            key = bundle.load_private_key(args["key"])
            t0 = time.perf_counter()
            bundle.sign(args["bundle"], key, trusted_keys=args["pub"])
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mib"] = hwm()
    print(json.dumps(out))
""")


def run(task: str, **args: Any) -> dict[str, float]:
    """One measurement in a fresh interpreter."""
    res = subprocess.run(
        [sys.executable, "-c", WORKER, task, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        raise SystemExit(f"{task} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def build(directory: Path, gb: float, kind: str) -> tuple[Path, list[Any], Any]:
    """The ONNX model, its tensors (name, offset, count, shape) and a 1-row input."""
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    total = int(gb * 1e9)
    if kind == "mlp":
        n = int((total / 16) ** 0.5)
        shapes = [(f"W{i}", (n, n)) for i in range(4)]
        x: Any = [[0.01] * n]
    else:
        cols = 1000
        shapes = [("table", (total // (4 * cols), cols))]
        x = [0, shapes[0][1][0] - 1]
    tensors, inits = [], []
    path = directory / "model.onnx"
    data = directory / "weights.bin"
    fresh = not path.exists()
    rng = np.random.default_rng(0)
    with open(data, "ab" if not fresh else "wb") as f:
        offset = 0
        for name, shape in shapes:
            count = shape[0] * shape[1]
            if fresh:
                rows = max(1, (64 << 20) // (4 * shape[1]))
                for r in range(0, shape[0], rows):
                    k = min(rows, shape[0] - r)
                    f.write(
                        (rng.standard_normal((k, shape[1]), dtype=np.float32) / np.sqrt(shape[1]))
                        .astype(np.float32)
                        .tobytes()
                    )
            t = TensorProto()
            t.name, t.data_type = name, TensorProto.FLOAT
            t.dims.extend(shape)
            t.data_location = TensorProto.EXTERNAL
            for k_, v in (
                ("location", data.name),
                ("offset", str(offset)),
                ("length", str(count * 4)),
            ):
                e = t.external_data.add()
                e.key, e.value = k_, v
            inits.append(t)
            tensors.append((name, offset, count, list(shape)))
            offset += count * 4
    if kind == "mlp":
        nodes = [
            helper.make_node(
                "MatMul", ["X" if i == 0 else f"H{i - 1}", f"W{i}"], ["Y" if i == 3 else f"H{i}"]
            )
            for i in range(4)
        ]
        n = shapes[0][1][0]
        io = (
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n])],
        )
    else:
        nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)]
        io = (
            [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
            [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", shapes[0][1][1]])],
        )
    model = helper.make_model(
        helper.make_graph(nodes, kind, *io, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 9
    onnx.save(model, path)
    return path, tensors, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--kind", choices=["mlp", "embedding"], default="mlp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/model-bundle-large"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the files in --dir")
    args = ap.parse_args()
    import bundle

    d = args.dir / f"{args.kind}-{args.gb:g}"
    src, tensors, x = build(d / "src", args.gb, args.kind)
    weight_bytes = sum(c * 4 for _, _, c, _ in tensors)
    k1, k2 = bundle.generate_key(), bundle.generate_key()
    k1.save(d / "k1")
    k2.save(d / "k2")
    out = d / "model.mbundle"
    print(
        f"{args.kind}: {weight_bytes / 1e9:.2f} GB of float32 weights in {len(tensors)} "
        f"tensor(s); {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; "
        f"medians of {args.runs}"
    )
    report: dict[str, Any] = {
        "kind": args.kind,
        "weight_bytes": weight_bytes,
        "cores": os.cpu_count(),
        "runs": args.runs,
    }

    base = medians(
        [
            run(
                "baseline",
                src=str(d / "src" / "weights.bin"),
                tensors=tensors,
                out=str(d / "baseline.safetensors"),
            )
            for _ in range(args.runs)
        ]
    )
    (d / "baseline.safetensors").unlink()
    base_s = base["save_file_s"] + base["sha256_s"]
    exp = medians(
        [run("export", src=str(src), out=str(out), key=str(d / "k1.key")) for _ in range(args.runs)]
    )
    ver = medians([run("verify", bundle=str(out), pub=str(d / "k1.pub")) for _ in range(args.runs)])
    loads = {
        (zc, pp): medians(
            [
                run("load", bundle=str(out), pub=str(d / "k1.pub"), zero_copy=zc, prepack=pp, x=x)
                for _ in range(args.runs)
            ]
        )
        for zc in (False, True)
        for pp in (None, False)
    }
    signs = []
    for _ in range(args.runs):
        shutil.copyfile(out, d / "copy.mbundle")
        signs.append(
            run(
                "sign", bundle=str(d / "copy.mbundle"), key=str(d / "k2.key"), pub=str(d / "k1.pub")
            )
        )
    sig = medians(signs)
    (d / "copy.mbundle").unlink()

    print(
        f"baseline save_file {base['save_file_s']:.2f} s + sha256 {base['sha256_s']:.2f} s "
        f"= {base_s:.2f} s"
    )
    print(
        f"export {exp['wall_s']:.2f} s = {exp['wall_s'] / base_s:.2f} x baseline "
        f"(target <= 1.5); peak RSS {exp['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"verify {ver['wall_s']:.2f} s = {weight_bytes / ver['wall_s'] / 1e9:.3f} GB/s; "
        f"peak RSS {ver['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"a fresh process importing bundle, onnxruntime, numpy: {ver['import_s']:.2f} s, "
        f"{ver['import_rss_mib']:.0f} MiB RSS (counted below only in 'cold total')"
    )
    for (zc, pp), r in loads.items():
        extra = r["peak_rss_mib"] - r["import_rss_mib"]
        print(
            f"load {'zero_copy' if zc else 'in-memory'}, prepack "
            f"{'by size' if pp is None else pp}: verify+load {r['load_s']:.2f} s, first "
            f"predict {r['first_predict_s']:.3f} s, cold total "
            f"{r['import_s'] + r['load_s'] + r['first_predict_s']:.2f} s; peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB, {extra:.0f} MiB above the imports = "
            f"{extra * 2**20 / weight_bytes:.2f} x weights"
        )
    print(
        f"sign {sig['wall_s']:.2f} s = {sig['wall_s'] / ver['wall_s']:.2f} x verify (target <= 1.1)"
    )
    report.update(
        baseline=base,
        export=exp,
        verify=ver,
        sign=sig,
        loads={f"zero_copy={zc},prepack={pp}": r for (zc, pp), r in loads.items()},
        export_vs_baseline=exp["wall_s"] / base_s,
        sign_vs_verify=sig["wall_s"] / ver["wall_s"],
        load_average=os.getloadavg()[0],
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
