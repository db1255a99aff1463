"""Compression table (issue 7): fp32 / fp16 / int8 bundles of a ~100 MB MLP and a small CNN.

    .venv/bin/python benchmarks/precision_table.py [--runs 50] [--no-write]

For each model and precision, ``bundle.save(module, precision=...)`` exports a
bundle; the table gives its size (deployment form, ``training_state=False``, and
the default form that also carries the exact fp32 training state), the CPU
latency of ``bundle.load(...).predict`` at batch 1 and 64 (median of ``--runs``
calls after warm-up), and the deviation from PyTorch's own output on a held-out
batch the export never saw (max absolute difference, and how often the arg-max
class agrees), beside the parity the manifest records on the export sample.
The table is printed and written to ``benchmarks/RESULTS.md`` under
"Compression (issue 7)".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import machine, models, results
from suite.timing import latencies, ort_session_options, threads

PRECISIONS = ("fp32", "fp16", "int8")
HELD_OUT_ROWS = 256
SECTION = "Compression (issue 7)"
PACKAGES = ("numpy", "onnx", "onnxruntime-gpu", "onnxconverter-common", "torch")


@dataclass
class Row:
    """One model at one precision."""

    model: str
    precision: str
    size_mb: float | None = None
    size_default_mb: float | None = None
    save_s: float | None = None
    lat1_ms: float | None = None
    lat64_ms: float | None = None
    max_abs: float | None = None
    ref_max: float | None = None
    agree: float | None = None
    parity: float | None = None
    note: str = ""


def _cases() -> dict[str, tuple[Any, Any, Any]]:
    """Name -> (module, export sample, held-out batch) with different seeds."""
    import torch

    mlp = models.torch_mlp(models.MLP_100MB)
    cnn = models.torch_cnn()
    g = torch.Generator().manual_seed(1234)
    h = torch.Generator().manual_seed(99)
    return {
        "MLP 1024-4096-4096-1024-10 (25.2 M params)": (
            mlp,
            torch.randn(16, models.MLP_100MB[0], generator=g),
            torch.randn(HELD_OUT_ROWS, models.MLP_100MB[0], generator=h),
        ),
        "CNN 2x(Conv-BN-ReLU-pool) + 2 Linear (1.1 M params)": (
            cnn,
            torch.randn(16, *models.CNN_INPUT, generator=g) * 2 + 0.5,
            torch.randn(HELD_OUT_ROWS, *models.CNN_INPUT, generator=h) * 2 + 0.5,
        ),
    }


def _stale_value_info_free(module: Any, sample: Any) -> Any:
    """The module's ONNX graph without value_info entries for initializers.

    Workaround for the int8 failure on PyTorch graphs (see the note the table
    prints): onnxruntime's quantizer transposes Gemm weights but the exporter's
    value_info still gives their old shape, so its shape inference refuses.
    """
    from bundle.export import convert

    onx = convert(module, sample).model
    names = {i.name for i in onx.graph.initializer}
    keep = [v for v in onx.graph.value_info if v.name not in names]
    del onx.graph.value_info[:]
    onx.graph.value_info.extend(keep)
    return onx


def _save(
    module: Any, sample: Any, path: Path, precision: str, training_state: bool
) -> tuple[float, Any, str]:
    """Export; on an int8 ConversionError, retry through the cleaned ONNX graph."""
    import bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        try:
            manifest = bundle.save(
                module,
                path,
                sample_input=sample,
                precision=precision,
                training_state=training_state,
            )
            return time.perf_counter() - t, manifest, ""
        except bundle.ConversionError as e:
            if precision != "int8":
                raise
            error = str(e)
        t = time.perf_counter()
        onx = _stale_value_info_free(module, sample)
        manifest = bundle.save(onx, path, sample_input=sample.numpy(), precision=precision)
        return time.perf_counter() - t, manifest, error


def _export(
    name: str, module: Any, sample: Any, held: Any, precision: str, tmp: Path
) -> tuple[Row, Any]:
    """Export at ``precision``; size, parity and held-out deviation; the loaded model."""
    import torch

    import bundle

    row = Row(name, precision)
    path = tmp / f"{precision}.mbundle"
    row.save_s, manifest, error = _save(module, sample, path, precision, training_state=False)
    row.size_mb = path.stat().st_size / 1e6
    if error:
        row.note = (
            f"bundle.save(module) failed: {error}; measured by exporting the module "
            "to ONNX (bundle.export), dropping the value_info of initializers, and "
            "bundle.save(onnx_graph, precision='int8') (export time includes both; "
            "the manifest parity is then against the fp32 ONNX graph)"
        )
    else:
        default = tmp / f"{precision}.default.mbundle"
        _save(module, sample, default, precision, training_state=True)
        row.size_default_mb = default.stat().st_size / 1e6
        default.unlink()
    if manifest.parity is not None:
        row.parity = max(o.max_abs for o in manifest.parity.outputs)
    # spinning off: the rows are timed round-robin, and spinning would slow the next one
    m = bundle.load(path, allow_unsigned=True, device="cpu", session_options=ort_session_options())
    with torch.no_grad():
        ref = module(held).numpy()
    got = m.predict(held.numpy())
    row.max_abs = float(np.max(np.abs(got.astype(np.float64) - ref)))
    row.ref_max = float(np.max(np.abs(ref)))
    row.agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    return row, m


def _measure_model(
    name: str, module: Any, sample: Any, held: Any, tmp: Path, runs: int
) -> list[Row]:
    """PyTorch eager and each precision; latencies timed round-robin across all of them."""
    import torch

    torch.set_num_threads(threads())  # what the onnxruntime sessions get
    rows = [Row(name, "torch eager (fp32)")]
    fns: dict[str, Callable[[Any], Any]] = {}

    def eager(x: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(x))

    fns[rows[0].precision] = eager
    for p in PRECISIONS:
        row, m = _export(name, module, sample, held, p, tmp)
        rows.append(row)
        fns[p] = m.predict
        print(f"exported {name} {p}", file=sys.stderr)
    for attr, x in (("lat1_ms", held[:1].numpy()), ("lat64_ms", held[:64].numpy())):
        medians = latencies(
            {k: (lambda fn=fn, x=x: fn(x)) for k, fn in fns.items()},
            reps=runs,
            budget_s=600,
            warmup=5,
            min_reps=runs,
        )
        for row in rows:
            setattr(row, attr, medians[row.precision] * 1e3)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """The markdown table, with numbered notes under it."""
    lines = [
        "| model | precision | bundle MB (deploy) | bundle MB (default) | export s "
        "| predict batch 1 (ms) | predict batch 64 (ms) | max abs dev, held-out "
        "| max abs torch output | top-1 agreement | manifest parity max abs (sample) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in rows:
        mark = ""
        if r.note:
            notes.append(r.note)
            mark = f" [{len(notes)}]"
        agree = "—" if r.agree is None else f"{r.agree * 100:.1f} %"
        lines.append(
            f"| {r.model} | {r.precision}{mark} | {_fmt(r.size_mb, '.1f')} "
            f"| {_fmt(r.size_default_mb, '.1f')} | {_fmt(r.save_s, '.1f')} "
            f"| {_fmt(r.lat1_ms, '.2f')} | {_fmt(r.lat64_ms, '.2f')} "
            f"| {_fmt(r.max_abs, '.2e')} | {_fmt(r.ref_max, '.3f')} | {agree} "
            f"| {_fmt(r.parity, '.2e')} |"
        )
    lines += ["", *[f"[{i}] {n}" for i, n in enumerate(notes, 1)]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="timed predict calls per median")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = ap.parse_args()
    import torch

    others = machine.OtherLoad()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mb-precision-") as d:
        for name, (module, sample, held) in _cases().items():
            rows += _measure_model(name, module, sample, held, Path(d), args.runs)
    body = table(rows)
    print(body)
    if args.no_write:
        return
    text = "\n".join(
        [
            f"`python benchmarks/precision_table.py --runs {args.runs}` — measured "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}.",
            "",
            *machine.describe(PACKAGES),
            f"- torch and onnxruntime intra-op threads {torch.get_num_threads()}; onnxruntime "
            "thread spinning off (intra- and inter-op) on CPUExecutionProvider",
            others.note(),
            "",
            "Deploy = `bundle.save(..., training_state=False)`; default = with the exact "
            "training state a PyTorch export carries for `bundle.restore` (for fp16/int8 the "
            "fp32 parameters are not bit-identical to the stored weights, so they are stored a "
            "second time). Latency: `bundle.load(path, device='cpu').predict(x)`, median of "
            f"{args.runs} calls after 5 warm-up calls, timed round-robin across the rows of a "
            "model "
            "so that load from other jobs hits them alike. Deviation: against `module(x)` in "
            f"PyTorch on {HELD_OUT_ROWS} held-out rows drawn with another seed than the export "
            "sample; the last column is what the manifest records on the 16-row export sample.",
            "",
            body,
        ]
    )
    results.write_section(SECTION, text)
    print(f"\nwritten to {results.RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
