"""GPU check, in one go: export a ~100 MB MLP bundle, load on CPU and CUDA, compare, time.

    bash benchmarks/gpu_check.sh          # on a machine with an NVIDIA GPU

Prints a markdown table: providers actually used, max |CPU - CUDA| deviation,
and median predict latency at batch 1 and 1000 on each device, plain and with
IO binding (inputs kept on the device). Exits non-zero if CUDA does not run or
the outputs disagree.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import bundle


def mlp(width: int = 2400, depth: int = 6, n_in: int = 512, n_out: int = 16):
    rng = np.random.default_rng(0)
    inits, nodes, prev, size = [], [], "X", n_in
    for i in range(depth):
        out = n_out if i == depth - 1 else width
        inits += [
            numpy_helper.from_array(
                (rng.normal(size=(size, out)) / np.sqrt(size)).astype(np.float32), f"w{i}"
            ),
            numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
        size = out
    nodes.append(helper.make_node("Identity", [prev], ["Y"]))
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", n_out])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def median_time(fn, reps: int = 30) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    key = bundle.generate_key()
    path = tmp / "mlp.mbundle"
    t = time.perf_counter()
    bundle.save(mlp(), path, signing_key=key, name="gpu-check-mlp")
    took = time.perf_counter() - t
    print(f"exported {path.stat().st_size / 2**20:.0f} MiB bundle in {took:.2f} s")
    cpu = bundle.load(path, trusted_keys=key.public_key, device="cpu")
    try:
        gpu = bundle.load(path, trusted_keys=key.public_key, device="cuda")
    except bundle.DeviceError as e:
        print(f"CUDA unavailable: {e.one_line()}")
        return 2
    x = np.random.default_rng(1).normal(size=(1000, 512)).astype(np.float32)
    dev = float(np.abs(cpu.predict(x) - gpu.predict(x)).max())
    print(f"providers: cpu={cpu.providers} cuda={gpu.providers}; max |cpu-cuda| = {dev:.2e}")
    rows = [
        "| batch | CPU predict | CUDA predict | CUDA predict, IO-bound input |",
        "|---|---|---|---|",
    ]
    for n in (1, 1000):
        xb = x[:n]
        bound = gpu.to_device(xb)
        c = median_time(lambda: cpu.predict(xb))  # noqa: B023
        g = median_time(lambda: gpu.predict(xb))  # noqa: B023
        b = median_time(lambda: gpu.run_bound(bound))  # noqa: B023
        rows.append(f"| {n} | {c * 1e3:.2f} ms | {g * 1e3:.2f} ms | {b * 1e3:.2f} ms |")
    print("\n".join(rows))
    ok = gpu.providers[0] == "CUDAExecutionProvider" and dev < 1e-2
    print("GPU check", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
