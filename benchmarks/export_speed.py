"""PyTorch export speed against the floor: ``safetensors`` + SHA-256 of what it wrote.

    python benchmarks/export_speed.py [--sizes 100m,1g] [--runs 3] [--dir DIR]

For each MLP (the suite's ~100 MB and ~1 GB widths, ``benchmarks/suite/models.py``)
one process builds the module once, then times side by side, round-robin, ``--runs``
times each:

* **floor**: ``safetensors.torch.save_file(state_dict)`` + SHA-256 of the written file
  (hashlib, 1 MiB reads) -- what any signed weights file costs at least;
* **bundle.save**: ``bundle.save(module, path, signing_key=key, sample_input=x)`` with
  default options (ECDSA P-256 signature, training state, parity and smoke vectors
  measured on the written bundle).

It prints the medians and their ratio (issue 19's target: <= 1.5x for the 1 GB model),
and, from the bundle.save runs, how the time divides: torch.export, the ONNX
translation, and the onnxruntime runs on the written bundle (session + parity +
smoke), beside hashlib's single-core SHA-256 speed, whether the CPU has SHA
instructions, the cores and the load average -- the machine may be shared, so the
figures are comparable within one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suite import models

SIZES = {"100m": models.MLP_100MB, "1g": models.MLP_1GB}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file read in 1 MiB pieces (what the floor pays to hash its output)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def hashlib_speed() -> float:
    """Single-core hashlib SHA-256, bytes per second (best of 3 over 256 MiB)."""
    data = os.urandom(1 << 24) * 16
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - t)
    return len(data) / best


def sha_extensions() -> str:
    """Whether the CPU advertises SHA instructions (x86 sha_ni, ARM sha2)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return "yes" if (" sha_ni" in flags or " sha2" in flags) else "no"


class Phases:
    """Time spent inside a few functions during one bundle.save, by label."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextlib.contextmanager
    def patched(self, owner: Any, attr: str, label: str) -> Iterator[None]:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)
        try:
            yield
        finally:
            setattr(owner, attr, original)


def run(sizes: list[str], runs: int, directory: Path) -> None:
    import torch

    import bundle

    torch.set_num_threads(os.cpu_count() or 1)
    speed = hashlib_speed()
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
        f"hashlib SHA-256 {speed / 1e9:.2f} GB/s single core, SHA extensions: "
        f"{sha_extensions()}; torch {torch.__version__}, model-bundle {bundle.__version__}"
    )
    key = bundle.generate_key()
    for size in sizes:
        measure(size, runs, directory, key)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


def measure(size: str, runs: int, directory: Path, key: Any) -> None:
    """Round-robin medians of the floor and bundle.save on one MLP, printed."""
    import torch
    from safetensors.torch import save_file

    import bundle
    from bundle.export import bundler, writer
    from bundle.export import torch as torch_export

    widths = SIZES[size]
    module = models.torch_mlp(widths)
    state = module.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    x = torch.randn(16, widths[0])
    floor_path, bundle_path = directory / "floor.safetensors", directory / "m.mbundle"
    phases: list[dict[str, float]] = []
    manifests: list[Any] = []

    def floor() -> None:
        save_file(state, floor_path)
        sha256_file(floor_path)

    def save() -> None:
        p = Phases()
        with (
            p.patched(torch_export, "convert", "convert: forward on the sample + export"),
            p.patched(torch.export, "export", "  torch.export"),
            p.patched(torch.onnx, "export", "  ONNX translation (torch.onnx.export)"),
            p.patched(writer, "_write_stream", "write + hash the weights (parallel)"),
            p.patched(bundler.Written, "run", "onnxruntime on the written bundle"),
            p.patched(os, "fsync", "fsync"),
        ):
            manifests.append(
                bundle.save(module, bundle_path, signing_key=key, sample_input=x, name="mlp")
            )
        phases.append(p.spent)

    cases: dict[str, Callable[[], None]] = {
        "safetensors save_file + SHA-256": floor,
        "bundle.save (signed, defaults)": save,
    }
    outputs = dict(zip(cases, (floor_path, bundle_path), strict=True))
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(runs):
        for name in names[r % 2 :] + names[: r % 2]:  # alternate who goes first
            # Each side writes a new file: overwriting its last output in place would
            # let the kernel drop that file's unwritten pages, which only one side can
            # do (the bundle is written beside its target and renamed over it).
            outputs[name].unlink(missing_ok=True)
            t = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratio = med[names[1]] / med[names[0]]
    print(f"\nMLP {size} ({nbytes / 2**20:.0f} MiB of float32 weights), {runs} runs each:")
    for name, v in times.items():
        rate = nbytes / med[name] / 1e9
        shown = ", ".join(f"{s:.2f}" for s in v)
        print(f"  {name:34s} median {med[name]:6.2f} s ({rate:.2f} GB/s)  [{shown}]")
    print(f"  ratio bundle.save / floor: {ratio:.2f}x (issue 19 target for 1 GB: <= 1.5x)")
    for label in phases[0]:
        spent = statistics.median(p.get(label, 0.0) for p in phases)
        print(f"    of which {label}: median {spent:.2f} s")
    parity = manifests[-1].parity
    worst = max((o.max_abs for o in parity.outputs), default=0.0) if parity else None
    print(f"  parity recorded in the manifest: max abs error {worst}")
    for p in (floor_path, bundle_path):
        p.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100m,1g", help="comma-separated: 100m, 1g")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(sizes, args.runs, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="export-speed-") as d:
            run(sizes, args.runs, Path(d))


if __name__ == "__main__":
    main()
