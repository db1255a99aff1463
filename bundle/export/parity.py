"""Conversion parity: the bundle's outputs against the original framework's own.

Numeric outputs pass when every element satisfies ``|a - b| <= atol + rtol * |b|``
(numpy's ``isclose``); labels, strings and integers must be equal. The result,
per output, goes into the manifest whether it passes or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConversionError
from ..format.manifest import Method, OutputParity, Parity


def compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> OutputParity:
    """Deviation of one output; ``mismatches`` counts elements out of tolerance."""
    if got.shape != want.shape:
        raise ConversionError(
            f"output {name!r}: ONNX shape {got.shape} differs from the original's {want.shape}"
        )
    if want.dtype.kind in "fc" or got.dtype.kind in "fc":
        a, b = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(a - b)
        both_nan = np.isnan(a) & np.isnan(b)
        diff[both_nan] = 0.0
        bad = ~(diff <= atol + rtol * np.abs(b))
        rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
        rel[diff == 0] = 0.0
        finite = np.isfinite(diff)
        max_abs = float(diff[finite].max()) if finite.any() else 0.0
        rel_f = rel[np.isfinite(rel)]
        return OutputParity(
            name, max_abs, float(rel_f.max()) if rel_f.size else 0.0, int(bad.sum())
        )
    if want.dtype.kind in "iub" and got.dtype.kind in "iub":
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        return OutputParity(
            name, float(diff.max()) if diff.size else 0.0, 0.0, int((diff != 0).sum())
        )
    eq = got.astype(str) == want.astype(str)
    return OutputParity(name, 0.0, 0.0, int((~eq).sum()))


def measure(
    outputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    methods: Mapping[str, Method],
    *,
    atol: float,
    rtol: float,
    rows: int,
) -> Parity:
    """Compare every referenced output; squeeze the ONNX side where a method does."""
    squeeze = {m.output: m.squeeze for m in methods.values()}
    results = []
    for name, want in reference.items():
        got = outputs[name]
        if squeeze.get(name):
            got = got.reshape(got.shape[:-1])
        results.append(compare(name, got, np.asarray(want), atol, rtol))
    return Parity(atol, rtol, rows, tuple(results))


def worst(measured: Sequence[Parity]) -> Parity:
    """Several measurements of the same outputs as one: each output's largest deviations
    and all its mismatches; the first measurement's tolerance and rows (the caller's
    sample)."""
    first = measured[0]
    outputs = []
    for out in first.outputs:
        same = [o for p in measured for o in p.outputs if o.name == out.name]
        outputs.append(
            OutputParity(
                out.name,
                max(o.max_abs for o in same),
                max(o.max_rel for o in same),
                sum(o.mismatches for o in same),
            )
        )
    return Parity(first.atol, first.rtol, first.sample_rows, tuple(outputs))


def check(parity: Parity, accept_mismatch: bool) -> Parity:
    """Refuse a parity failure unless the caller accepts it (and say so in the manifest)."""
    if parity.passed:
        return parity
    worst = [o for o in parity.outputs if o.mismatches]
    if not accept_mismatch:
        detail = "; ".join(
            f"output {o.name!r}: {o.mismatches} element(s) out of tolerance, "
            f"max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}"
            for o in worst
        )
        raise ConversionError(
            f"the ONNX model disagrees with the original beyond atol={parity.atol}, "
            f"rtol={parity.rtol}: {detail}. Widen the tolerance or pass accept_mismatch=True "
            "to save it anyway (the deviation is recorded in the manifest)"
        )
    return Parity(
        parity.atol, parity.rtol, parity.sample_rows, parity.outputs, accepted_mismatch=True
    )
