"""Signing a 1 GB bundle against verifying it (issue 19: sign <= 1.1x verify).

    python benchmarks/sign_verify.py [--mib 1024] [--runs 5] [--no-copy] [--no-cli]

Builds one bundle holding a ``--mib`` MiB float32 table (an ONNX Gather over
external data, exported by ``bundle.save``), then times, round-robin in one run
so that a busy machine slows every side alike:

* ``bundle.verify`` in-process (trusting the bundle's signer),
* ``bundle.sign`` in-process, in place (the default), countersigning under the
  same trust -- every run with a fresh key, so every run really writes a new
  signature (a key that already signed would write nothing),
* ``bundle.sign(..., in_place=False)`` (a new file renamed over the old one: what
  signing cost before),
* the CLI: ``model-bundle verify`` and ``model-bundle sign`` as fresh processes.

The file stays in the page cache (the disk out of the picture, as for a bundle
just written or read before). Prints medians, the sign/verify ratios, hashlib's
single-core SHA-256 rate, whether the CPU has SHA extensions, the core count and
the load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import bundle

MIB = 1 << 20


def _hashlib_rate(size: int = 256 * MIB, runs: int = 3) -> float:
    buf = os.urandom(size)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        hashlib.sha256(buf).digest()
        times.append(time.perf_counter() - t)
    return size / statistics.median(times)


def _sha_extensions() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return "yes" if " sha_ni" in flags or " sha2" in flags else "no"


def _table_model(directory: Path, mib: int) -> Path:
    """An ONNX Gather over one float32 table of ``mib`` MiB kept as external data."""
    import onnx
    from onnx import TensorProto, helper

    cols = 1024
    rows = mib * MIB // (4 * cols)
    with open(directory / "table.bin", "wb") as f:
        block = np.arange(4096 * cols, dtype=np.float32).reshape(4096, cols)
        for r0 in range(0, rows, 4096):
            f.write(block[: min(4096, rows - r0)].tobytes())
    t = TensorProto()
    t.name, t.data_type = "table", TensorProto.FLOAT
    t.dims.extend([rows, cols])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "table.bin"), ("offset", "0"), ("length", str(rows * cols * 4))):
        e = t.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", cols])],
        [t],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, directory / "table.onnx")
    return directory / "table.onnx"


CPU: dict[str, list[float]] = {}
"""Process CPU seconds (all threads) of each in-process operation: what a busy machine
changes least."""


def _timed(fn: Callable[[], Any], name: str | None = None) -> float:
    c, t = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    if name is not None:
        CPU.setdefault(name, []).append(time.process_time() - c)
    return wall


def _cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bundle", *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="size of the weights (MiB)")
    ap.add_argument("--runs", type=int, default=5, help="round-robin rounds")
    ap.add_argument("--no-copy", action="store_true", help="skip sign(in_place=False)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI processes")
    args = ap.parse_args()

    load_before = os.getloadavg()
    rate = _hashlib_rate()
    with tempfile.TemporaryDirectory(prefix="sign-verify-") as d:
        tmp = Path(d)
        owner = bundle.generate_key()
        owner_key, owner_pub = owner.save(tmp / "owner")
        print(f"building a {args.mib} MiB bundle ...", flush=True)
        path = tmp / "big.mbundle"
        t = _timed(lambda: bundle.save(_table_model(tmp, args.mib), path, signing_key=owner))
        (tmp / "table.bin").unlink()
        size = path.stat().st_size
        print(f"  exported in {t:.1f} s: {size / 1e9:.2f} GB", flush=True)
        bundle.verify(path, trusted_keys=owner.public_key)  # warm the page cache

        times: dict[str, list[float]] = {}

        def add(name: str, seconds: float) -> None:
            times.setdefault(name, []).append(seconds)

        for i in range(args.runs):
            add(
                "bundle.verify",
                _timed(lambda: bundle.verify(path, trusted_keys=owner_pub), "bundle.verify"),
            )
            k = bundle.generate_key()
            add(
                "bundle.sign (in place)",
                _timed(lambda k=k: bundle.sign(path, k, trusted_keys=owner_pub), "sign"),
            )
            if not args.no_copy:
                k = bundle.generate_key()
                add(
                    "bundle.sign (in_place=False)",
                    _timed(
                        lambda k=k: bundle.sign(path, k, trusted_keys=owner_pub, in_place=False)
                    ),
                )
            if not args.no_cli:
                add(
                    "model-bundle verify",
                    _cli("verify", str(path), "--trusted-key", str(owner_pub)),
                )
                key_file, _ = bundle.generate_key().save(tmp / f"cli{i}")
                add(
                    "model-bundle sign",
                    _cli(
                        "sign", str(path), "--key", str(key_file), "--trusted-key", str(owner_pub)
                    ),
                )
            print(f"  round {i + 1}/{args.runs} done", flush=True)
        final = bundle.verify(path, trusted_keys=owner_pub)
        assert final.verified
        n_sigs = len(final.signers) + len(final.untrusted_signatures)
        del owner_key
    load_after = os.getloadavg()

    med = {name: statistics.median(v) for name, v in times.items()}
    print()
    print(f"bundle: {size / 1e9:.2f} GB, {args.runs} round-robin rounds, {n_sigs} signatures")
    print(
        f"machine: {os.cpu_count()} cores, hashlib SHA-256 single core {rate / 1e9:.2f} GB/s, "
        f"SHA extensions: {_sha_extensions()}, load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    print()
    print("| operation | median s | GB/s | / verify |")
    print("|---|---|---|---|")
    for name, s in med.items():
        base = (
            med["model-bundle verify"] if name.startswith("model-bundle") else med["bundle.verify"]
        )
        print(f"| {name} | {s:.3f} | {size / s / 1e9:.2f} | {s / base:.2f}x |")
    print()

    def paired(a: str, b: str) -> float:  # each round's own ratio, then the median
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    ratio = med["bundle.sign (in place)"] / med["bundle.verify"]
    print(
        f"sign / verify (in-process): {ratio:.3f}x of medians, "
        f"{paired('bundle.sign (in place)', 'bundle.verify'):.3f}x median per round, "
        f"{statistics.median(CPU['sign']) / statistics.median(CPU['bundle.verify']):.3f}x "
        f"in CPU time ({statistics.median(CPU['sign']):.3f} s vs "
        f"{statistics.median(CPU['bundle.verify']):.3f} s) (target <= 1.1x)"
    )
    if "model-bundle sign" in med:
        cli = med["model-bundle sign"] / med["model-bundle verify"]
        print(
            f"model-bundle sign / verify (CLI): {cli:.3f}x of medians, "
            f"{paired('model-bundle sign', 'model-bundle verify'):.3f}x median per round "
            "(target <= 1.1x)"
        )


if __name__ == "__main__":
    main()
