"""Verify-into-memory of a 1 GB bundle: sealed memfd copy vs anonymous memory (issue 19).

    python benchmarks/verify_memory.py [--mib 1024] [--runs 7] [--bundle PATH] [--fresh N]

In one process, round-robin, each run verifies the same bundle (held in the page
cache) with the weights read into memory, as ``bundle.load`` does, by two paths:

* ``memfd``: the default on Linux -- the weights entry is copied with ``sendfile``
  into a memory file, sealed, then hashed from its read-only mapping
  (``bundle.format.digest.sealed_copy``);
* ``anon``: the fallback -- hashing threads ``preadv`` the entry into fresh
  anonymous memory and hash that buffer (the path before this change).

It prints the medians of wall and process CPU time (user + system, all threads)
and their ratios. ``--fresh N`` adds N round-robin cold starts of each path in a
fresh interpreter (``bundle.load(path, allow_unsigned=True, device="cpu")`` + a
1-row predict, timed from just before the spawn to the prediction's return),
also beside hashlib's single-core SHA-256 speed and how busy the machine
was. The bundle (an ONNX MatMul chain, ``--mib`` MiB of float32 weights, unsigned) is
built once under the temporary directory and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bundle

from suite import machine

from bundle.format import digest
from bundle.format.archive import ZipReader
from bundle.trust.verify import verify_archive

MIB = 1 << 20


def build(path: Path, mib: int) -> None:
    """An unsigned bundle of a MatMul chain holding ``mib`` MiB of float32 weights."""
    from onnx import TensorProto, helper, numpy_helper

    import bundle

    width = 4096
    layers = max(1, mib * MIB // (width * width * 4))
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "X"
    for i in range(layers):
        w = rng.random((width, width), dtype=np.float32) - 0.5
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"H{i}"]))
        x = f"H{i}"
    nodes.append(helper.make_node("Identity", [x], ["Y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bundle.save(model, path, sample_input=None, name="chain")


def hashlib_rate(size: int = 256 * MIB) -> float:
    """Single-core hashlib SHA-256, bytes per second (best of 3)."""
    data = os.urandom(size)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - t)
    return size / best


def _no_memfd(*_: Any, **__: Any) -> Any:
    raise OSError("memfd path switched off for the comparison")


def verify_once(path: Path, memfd: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one verify with the weights read into memory."""
    real = digest.sealed_copy
    if not memfd:
        digest.sealed_copy = _no_memfd  # type: ignore[assignment]
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        reader = ZipReader(path)
        try:
            vb = verify_archive(reader, None, allow_unsigned=True, weights_in_memory=True)
            assert vb.weights is not None
            kind = "memfd:" in Path("/proc/self/maps").read_text() if memfd else True
            assert kind, "the memfd path was not taken"
        finally:
            reader.close()
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        vb.weights.close()
    finally:
        digest.sealed_copy = real
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu


CHILD = """
import sys, time
import numpy as np
import bundle
from bundle.format import digest
if sys.argv[2] == "anon":
    def off(*a, **k):
        raise OSError("memfd path switched off for the comparison")
    digest.sealed_copy = off
m = bundle.load(sys.argv[1], allow_unsigned=True, device="cpu")
m.predict(np.zeros((1, 4096), dtype=np.float32))
print(time.time())
"""


def cold_once(path: Path, kind: str) -> float:
    """Seconds from spawning a fresh interpreter to its first prediction's return."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), kind],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[-1]) - t0


def main() -> None:
    """Build (once) and measure; print a markdown summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--fresh", type=int, default=0, help="cold starts of each path")
    args = ap.parse_args()
    path = args.bundle or Path(tempfile.gettempdir()) / f"verify-memory-{args.mib}.mbundle"
    if not path.exists():
        print(f"building {path} ...", flush=True)
        build(path, args.mib)
    size = path.stat().st_size
    other = machine.OtherLoad()
    rate0 = hashlib_rate()
    paths: dict[str, Callable[[], tuple[float, float]]] = {
        "anon": lambda: verify_once(path, False),
        "memfd": lambda: verify_once(path, True),
    }
    for f in paths.values():  # warm-up: the file into the page cache
        f()
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for _ in range(args.runs):
        for k, f in paths.items():
            got[k].append(f())
    cold: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.fresh):
        for k in paths:
            cold[k].append(cold_once(path, k))
    rate1 = hashlib_rate()
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in got.items()
    }
    print(f"\nverify into memory, {size / 1e9:.2f} GB bundle, {args.runs} runs round-robin")
    print(f"- {machine.cpu_model()}, {machine.cores()} cores; {machine.hash_note(rate0)}")
    print("\n| path | wall median s | CPU median s | GB/s (wall) |")
    print("|---|---|---|---|")
    for k, (w, c) in med.items():
        print(f"| {k} | {w:.3f} | {c:.3f} | {size / w / 1e9:.2f} |")
    (wa, ca), (wm, cm) = med["anon"], med["memfd"]
    saved = (ca - cm) / size * 1e9
    print(f"\nmemfd / anon: wall {wm / wa:.2f}x, CPU {cm / ca:.2f}x ({saved:+.2f} core-s/GB saved)")
    if args.fresh:
        ca_, cm_ = (statistics.median(cold[k]) for k in ("anon", "memfd"))
        print(
            f"\nfresh process, verify + load + 1-row predict, median of {args.fresh}: "
            f"anon {ca_:.3f} s, memfd {cm_:.3f} s = {cm_ / ca_:.2f}x"
        )
    print(f"- hashlib after the runs: {rate1 / 1e9:.2f} GB/s/core")
    print(other.note())


if __name__ == "__main__":
    main()
