"""Each model measured with each format it can be stored in, side by side.

A case saves the same fitted model in every format (save time, file size), runs
the cold starts as fresh processes, round-robin (seconds to first prediction,
peak RSS), and times in-process prediction at 1 and 1000 rows for the
framework itself, a raw onnxruntime session on the bundle's own graph, and the
loaded bundle. "Raw onnxruntime" reads ``model.onnx`` + ``weights.safetensors``
unzipped from the bundle (the bundle's graph points into the safetensors file
with ordinary ONNX external data). In-process timing gives every side the same
intra-op thread count and turns onnxruntime's thread spinning off, for the raw
session and the bundle alike (see :func:`.timing.ort_session_options`).
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import models
from .timing import (
    Cold,
    fresh_interleaved,
    latency_stats,
    median,
    ort_session_options,
    threads,
    timed,
)


@dataclass
class Row:
    """One format's figures for one model (None: not measured / not applicable)."""

    impl: str
    save_s: float | None = None
    size: int | None = None
    cold_s: float | None = None
    imported_s: float | None = None
    loaded_s: float | None = None
    rss_mib: float | None = None
    p1_s: float | None = None
    p1000_s: float | None = None
    p1_min_s: float | None = None
    p1000_min_s: float | None = None
    note: str = ""


@dataclass
class Result:
    """A model's rows; ratios are taken against ``baseline``."""

    model: str
    baseline: str
    rows: dict[str, Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    def row(self, impl: str) -> Row:
        """The row for ``impl``, created on first use (keeps insertion order)."""
        return self.rows.setdefault(impl, Row(impl))


@dataclass
class Ctx:
    """What every case shares: the temp dir, repetitions, the signing key."""

    tmp: Path
    runs: int
    save_runs: int
    key: Any
    key_path: Path
    pub_path: Path
    log: Callable[[str], None]
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)
    """Per model: the files the signing measurements reuse (bundle, weights dir)."""


BUNDLE = "model-bundle"
BUNDLE_ZERO_COPY = "model-bundle, zero_copy=True"
RAW_ORT = "raw onnxruntime"


def _save_timed(
    ctx: Ctx, fn: Callable[[], Any], path: Path, runs: int | None = None
) -> tuple[float, int]:
    """Median seconds of ``fn()`` (which writes ``path``) and the file's size."""
    times = []
    for _ in range(runs or ctx.save_runs):
        if path.exists():
            path.unlink()
        gc.collect()
        times.append(timed(fn)[0])
    return median(times), path.stat().st_size


def _save_bundle(
    ctx: Ctx, model: Any, sample: Any, path: Path, result: Result, runs: int | None = None
) -> bool:
    """Save the bundle (signed); on a BundleError note why and return False."""
    import bundle

    def save() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle.save(model, path, sample_input=sample, signing_key=ctx.key)

    try:
        row = result.row(BUNDLE)
        row.save_s, row.size = _save_timed(ctx, save, path, runs)
    except bundle.BundleError as e:
        first = str(e).splitlines()[0].split(": model-bundle exports")[0]
        result.row(BUNDLE).note = f"n/a ({type(e).__name__}: {first[:120]})"
        return False
    return True


def unzip_graph(bundle_path: Path, into: Path) -> tuple[Path, str]:
    """``model.onnx`` and its weights unzipped for onnxruntime; the predict output name."""
    import bundle

    into.mkdir(exist_ok=True)
    with zipfile.ZipFile(bundle_path) as z:
        for name in ("model.onnx", "weights.safetensors"):
            z.extract(name, into)
    manifest = bundle.inspect(bundle_path).manifest
    method = manifest.methods.get("predict") or manifest.methods.get("transform")
    output = method.output if method is not None else manifest.outputs[0].name
    return into / "model.onnx", output


def _bundle_cases(
    ctx: Ctx,
    result: Result,
    saved: bool,
    bp: Path,
    d: Path,
    xpath: Path,
) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Cold-start cases and in-process predict functions for the bundle and raw onnxruntime.

    Empty when the bundle could not be saved (its row already says why); the raw
    onnxruntime session reads the bundle's own graph, so it goes too.
    """
    if not saved:
        return {}, {}
    import bundle

    onnx_path, output = unzip_graph(bp, d / "unzipped")
    result.row(RAW_ORT).note = "graph unzipped from the bundle"
    cases = {
        RAW_ORT: ("ort", {"path": str(onnx_path), "x": str(xpath), "output": output}),
        BUNDLE: ("bundle", {"path": str(bp), "x": str(xpath), "pub": str(ctx.pub_path)}),
    }
    fns: dict[str, Any] = {RAW_ORT: _ort_fn(_raw_session(onnx_path), output, "float32")}
    try:
        fns[BUNDLE] = bundle.load(
            bp, trusted_keys=ctx.pub_path, device="cpu", session_options=ort_session_options()
        ).predict
    except bundle.BundleError as e:
        result.notes.append(f"in-process bundle.load failed: {type(e).__name__}: {e}")
    return cases, fns


def _cold(
    ctx: Ctx, result: Result, cases: dict[str, tuple[str, dict[str, Any]]], runs: int | None = None
) -> None:
    """Fresh-process cold starts; medians into the rows; checks outputs agree."""
    ctx.log(f"  cold starts: {', '.join(cases)}")
    samples, errors = fresh_interleaved(cases, runs or ctx.runs)
    for impl, error in errors.items():
        result.row(impl).note = error[:240]
        ctx.log(f"  {impl}: {error}")
    sums: dict[str, float] = {}
    for impl, cold in samples.items():
        row = result.row(impl)
        row.cold_s = median([c.seconds for c in cold])
        row.imported_s = median([c.imported_s for c in cold])
        row.loaded_s = median([c.loaded_s for c in cold])
        row.rss_mib = median([c.rss_mib for c in cold])
        sums[impl] = cold[0].checksum
    ref = sums.get(result.baseline)
    for impl, s in sums.items() if ref is not None else ():
        if abs(s - ref) > 1e-3 * max(1.0, abs(ref)):
            result.notes.append(
                f"{impl}'s first prediction differs from {result.baseline}'s "
                f"(sum {s:.6g} vs {ref:.6g})"
            )


def _raw_session(onnx_path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(
        str(onnx_path), sess_options=ort_session_options(), providers=["CPUExecutionProvider"]
    )


def _latencies(
    result: Result, fns: dict[str, Callable[[Any], Any]], batches: dict[str, Any]
) -> None:
    """In-process predict latency per implementation at 1 and 1000 rows, round-robin."""
    budgets = {"p1_s": (300, 3.0), "p1000_s": (30, 6.0)}
    for attr, x in batches.items():
        reps, budget = budgets[attr]
        stats = latency_stats(
            {impl: (lambda fn=fn, x=x: fn(x)) for impl, fn in fns.items()},
            reps=reps,
            budget_s=budget * len(fns),
        )
        for impl, value in stats.items():
            setattr(result.row(impl), attr, value.median)
            setattr(result.row(impl), attr.replace("_s", "_min_s"), value.min)


def _ort_fn(session: Any, output: str, dtype: str) -> Callable[[Any], Any]:
    name = session.get_inputs()[0].name

    def run(x: Any) -> Any:
        return session.run([output], {name: x.astype(dtype, copy=False)})[0]

    return run


# ---------------------------------------------------------------------------- scikit-learn


def sklearn_case(ctx: Ctx, name: str, estimator: Any) -> Result:
    """joblib, pickle, skops, raw onnxruntime and the bundle on a fitted estimator."""
    import joblib

    result = Result(name, baseline="joblib")
    d = ctx.tmp / name.split()[0].lower()
    d.mkdir()
    x, _ = models.tabular()
    xpath = d / "x1.npy"
    np.save(xpath, x[:1])
    paths = {
        "joblib": d / "m.joblib",
        "pickle": d / "m.pkl",
        "skops": d / "m.skops",
        BUNDLE: d / "m.mbundle",
    }
    row = result.row("joblib")
    row.save_s, row.size = _save_timed(
        ctx, lambda: joblib.dump(estimator, paths["joblib"]), paths["joblib"]
    )

    def dump_pickle() -> None:
        with open(paths["pickle"], "wb") as f:
            pickle.dump(estimator, f, protocol=pickle.HIGHEST_PROTOCOL)

    row = result.row("pickle")
    row.save_s, row.size = _save_timed(ctx, dump_pickle, paths["pickle"])
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "joblib": ("joblib", {"path": str(paths["joblib"]), "x": str(xpath)}),
        "pickle": ("pickle", {"path": str(paths["pickle"]), "x": str(xpath)}),
    }
    try:
        import skops.io as sio

        row = result.row("skops")
        row.save_s, row.size = _save_timed(
            ctx, lambda: sio.dump(estimator, paths["skops"]), paths["skops"]
        )
        trusted = sio.get_untrusted_types(file=paths["skops"])
        cases["skops"] = (
            "skops",
            {"path": str(paths["skops"]), "x": str(xpath), "trusted": trusted},
        )
        result.notes.append(
            f"skops loads with trusted={len(trusted)} types listed by "
            "get_untrusted_types (what a user does after auditing them)"
        )
    except ImportError:
        result.row("skops").note = "n/a (skops not installed: pip install -e '.[bench]')"
    saved = _save_bundle(ctx, estimator, x[:100], paths[BUNDLE], result)
    more, fns = _bundle_cases(ctx, result, saved, paths[BUNDLE], d, xpath)
    _cold(ctx, result, {**cases, **more})
    _latencies(result, {"joblib": estimator.predict, **fns}, {"p1_s": x[:1], "p1000_s": x[:1000]})
    result.row("joblib").note = "predict: scikit-learn's own"
    return result


# ---------------------------------------------------------------------------- PyTorch


def torch_case(ctx: Ctx, name: str, widths: tuple[int, ...], *, big: bool = False) -> Result:
    """torch.save, safetensors, raw onnxruntime and the bundle on one MLP.

    ``big`` (the 1 GB model): the baseline is safetensors loaded into a meta-device
    module (no second copy), the export baseline save_file + SHA-256 is timed, and
    predict latency is measured at 1 row only (1000 rows is seconds of compute).
    """
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(threads())  # what the onnxruntime sessions get
    result = Result(
        name, baseline="safetensors + meta-device torch" if big else "torch.load + load_state_dict"
    )
    d = ctx.tmp / ("torch1g" if big else "torch100")
    d.mkdir()
    ctx.log("  building the module")
    module = models.torch_mlp(widths)
    state = module.state_dict()
    weight_bytes = sum(t.numel() * t.element_size() for t in state.values())
    result.extra["weight_bytes"] = float(weight_bytes)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, widths[0])).astype(np.float32)
    xpath = d / "x1.npy"
    np.save(xpath, x[:1])
    pt, st, bp = d / "m.pt", d / "weights" / "model.safetensors", d / "m.mbundle"
    st.parent.mkdir()
    ctx.log("  saving")
    tl = result.row("torch.load + load_state_dict")
    tl.save_s, tl.size = _save_timed(ctx, lambda: torch.save(state, pt), pt)
    label = "safetensors + meta-device torch" if big else "safetensors"
    row = result.row(label)
    row.save_s, row.size = _save_timed(ctx, lambda: save_file(state, st), st)
    if big:

        def save_and_hash() -> None:
            save_file(state, st)
            _sha256_file(st)

        result.extra["save_file+sha256_s"], _ = _save_timed(ctx, save_and_hash, st)
    saved = _save_bundle(ctx, module, torch.from_numpy(x[:16]), bp, result)
    if big and saved:
        # The export target's figures: the floor and the bundle's save timed
        # alternately after a warm-up of each (benchmarks/export_speed.py's method;
        # one after the other, the writeback of one 1 GB file lands on the next).
        import bundle

        sample = torch.from_numpy(x[:16])
        pairs: dict[str, list[float]] = {"floor": [], "bundle": []}
        jobs = (
            ("floor", save_and_hash, st),
            (
                "bundle",
                lambda: bundle.save(module, bp, sample_input=sample, signing_key=ctx.key),
                bp,
            ),
        )
        for i in range(1 + ctx.save_runs):
            for label_, fn, path in jobs:
                path.unlink(missing_ok=True)
                gc.collect()
                seconds = timed(fn)[0]
                if i:
                    pairs[label_].append(seconds)
        result.extra["export_floor_rr_s"] = median(pairs["floor"])
        result.extra["export_bundle_rr_s"] = median(pairs["bundle"])
    if saved:
        ctx.artifacts[name] = {"bundle": bp, "weights_dir": st.parent}
    more, fns = _bundle_cases(ctx, result, saved, bp, d, xpath)
    common = {"x": str(xpath), "widths": list(widths)}
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        tl.impl: ("torch_load", {"path": str(pt), **common}),
        label: ("safetensors_meta" if big else "safetensors", {"path": str(st), **common}),
        **more,
    }
    if big and BUNDLE in more:
        # For reference, not a target: onnxruntime maps the weights from the bundle file
        # (no copy into memory; a local writer could change them after the check).
        cases[BUNDLE_ZERO_COPY] = ("bundle", {**more[BUNDLE][1], "zero_copy": True})
    if not big:
        # The 1 GB case states its baseline; here the meta-device load is a reference too.
        cases["safetensors + meta-device torch"] = ("safetensors_meta", {"path": str(st), **common})
    _cold(ctx, result, cases)
    ctx.log("  predict latency")

    def eager(v: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(v))

    batches = {"p1_s": x[:1]} if big else {"p1_s": x[:1], "p1000_s": x}
    _latencies(result, {tl.impl: eager, **fns}, batches)
    tl.note = "predict: torch eager, no_grad"
    del fns
    gc.collect()
    return result


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- Keras


def keras_case(ctx: Ctx, name: str, widths: tuple[int, ...]) -> Result:
    """``keras.models.load_model`` against the bundle (when bundle.save takes Keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = Result(name, baseline="keras load_model")
    d = ctx.tmp / "keras100"
    d.mkdir()
    try:
        import tensorflow as tf

        try:  # what the onnxruntime sessions get; settable only before TensorFlow starts
            tf.config.threading.set_intra_op_parallelism_threads(threads())
        except RuntimeError:
            result.notes.append("TensorFlow was already running: its default thread count")
        model = models.keras_mlp(widths)
    except ImportError as e:
        result.row("keras load_model").note = f"n/a (keras not importable: {e})"
        return result
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, widths[0])).astype(np.float32)
    xpath = d / "x1.npy"
    np.save(xpath, x[:1])
    kp, bp = d / "m.keras", d / "m.mbundle"
    row = result.row("keras load_model")
    row.save_s, row.size = _save_timed(ctx, lambda: model.save(kp), kp)
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "keras load_model": ("keras", {"path": str(kp), "x": str(xpath)})
    }
    fns: dict[str, Callable[[Any], Any]] = {"keras load_model": lambda v: model(v, training=False)}
    saved = _save_bundle(ctx, model, x[:16], bp, result)
    more, bfns = _bundle_cases(ctx, result, saved, bp, d, xpath)
    cases.update(more)
    fns.update(bfns)
    _cold(ctx, result, cases)
    ctx.log("  predict latency")
    _latencies(result, fns, {"p1_s": x[:1], "p1000_s": x})
    result.row("keras load_model").note = "predict: model(x, training=False)"
    return result


LOAD_PATH = "model-bundle load path (what bundle.load imports: no onnx)"
IMPORTS = {
    "bare interpreter": "pass",
    "numpy": "import numpy",
    "onnxruntime": "import onnxruntime",
    LOAD_PATH: "import bundle, onnxruntime, bundle.runtime.model, bundle.runtime.preflight; "
    "from bundle.format.onnx_proto import message_class; message_class('ModelProto')",
    "joblib + scikit-learn": "import joblib, sklearn.ensemble, sklearn.linear_model, "
    "sklearn.pipeline",
    "skops.io": "import skops.io",
    "torch": "import torch",
    "keras": "import keras",
}


def import_costs(ctx: Ctx, runs: int = 3) -> dict[str, float]:
    """Median wall seconds of ``python -c 'import ...'`` per library (start-up included)."""
    from .timing import command

    out = {}
    for label, code in IMPORTS.items():
        try:
            out[label] = median([command([sys.executable, "-c", code]) for _ in range(runs)])
        except RuntimeError as e:
            ctx.log(f"  import {label}: {e}")
    return out


__all__ = [
    "BUNDLE",
    "BUNDLE_ZERO_COPY",
    "LOAD_PATH",
    "RAW_ORT",
    "Cold",
    "Ctx",
    "Result",
    "Row",
    "import_costs",
    "keras_case",
    "sklearn_case",
    "torch_case",
    "unzip_graph",
]
