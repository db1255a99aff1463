"""Smoke vectors: a few signed sample rows with the outputs the exporter's runtime gave.

The writer runs the graph it wrote on the first rows of the sample (at most
:data:`SMOKE_ROWS`, and at most :data:`bundle.format.manifest.SMOKE_MAX_VALUES`
values in all) and records inputs and outputs in the manifest with the parity
tolerance. :func:`self_test` runs them again on the runtime at hand: a runtime
that computes something else (a changed kernel, a different build) is caught
before a version goes live, not by the first user.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..format.manifest import SMOKE_DTYPES, SMOKE_MAX_VALUES, OutputParity, Smoke, SmokeTensor

__all__ = ["SMOKE_ROWS", "SelfTestResult", "decode", "encode", "self_test"]

SMOKE_ROWS = 3
"""Rows of the sample kept as smoke vectors."""


def _value(v: Any, kind: str) -> Any:
    if kind == "f":
        f = float(v)
        return f if math.isfinite(f) else "nan" if math.isnan(f) else "inf" if f > 0 else "-inf"
    if kind == "b":
        return bool(v)
    if kind in "iu":
        return int(v)
    return str(v)


def _tensor(name: str, arr: np.ndarray, dtype: str) -> SmokeTensor:
    kind = (
        "f"
        if dtype.startswith("float")
        else "b"
        if dtype == "bool"
        else "s"
        if dtype == "string"
        else "i"
    )
    return SmokeTensor(
        name,
        dtype,
        tuple(int(d) for d in arr.shape),
        tuple(_value(v, kind) for v in arr.reshape(-1).tolist()),
    )


def _rows(feeds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray] | None:
    """The first ``n`` rows of every input, when they all have a first axis to cut."""
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    if all(a.ndim >= 1 and len(a) >= n for a in arrays.values()):
        return {k: a[:n] for k, a in arrays.items()}
    return None


def encode(
    feeds: Mapping[str, np.ndarray],
    run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    dtypes: Mapping[str, str],
    atol: float,
    rtol: float,
    *,
    cut: bool = True,
) -> Smoke | None:
    """Run the graph on the first rows of ``feeds`` and record both as smoke vectors.

    Fewer rows are kept until everything fits :data:`SMOKE_MAX_VALUES`; None when not
    even one row does (an image model's single input can be larger), when the inputs
    share no row axis, or when a tensor's type cannot be recorded (bfloat16).
    ``cut=False`` (an input whose first axis is fixed): the whole sample or nothing.
    """
    for n in range(SMOKE_ROWS, 0, -1):
        rows = _rows(feeds, n) if cut else None
        if rows is None:
            rows = dict(feeds) if n == 1 else None
        if rows is None:
            continue
        if sum(a.size for a in rows.values()) > SMOKE_MAX_VALUES:
            continue
        outputs = run(rows)
        total = sum(np.asarray(a).size for a in (*rows.values(), *outputs.values()))
        if total > SMOKE_MAX_VALUES:
            continue
        if any(dtypes.get(k) not in SMOKE_DTYPES for k in (*rows, *outputs)):
            return None
        return Smoke(
            float(atol),
            float(rtol),
            tuple(_tensor(k, np.asarray(v), dtypes[k]) for k, v in rows.items()),
            tuple(_tensor(k, np.asarray(v), dtypes[k]) for k, v in outputs.items()),
        )
    return None


_NP = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": object,
}


def decode(t: SmokeTensor) -> np.ndarray:
    """A smoke tensor as the numpy array it was recorded from."""
    values = [
        float(v) if isinstance(v, str) and t.dtype.startswith("float") else v for v in t.values
    ]
    dtype = _NP[t.dtype]
    arr: np.ndarray = np.array(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)
    return arr.reshape(t.shape)


def compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> OutputParity:
    """One output against its recorded value: parity's rule (FORMAT.md 5.8)."""
    if got.shape != want.shape:
        return OutputParity(name, math.inf, math.inf, max(want.size, 1))
    if want.dtype.kind in "fc":
        a, b = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(a - b)
        diff[np.isnan(a) & np.isnan(b)] = 0.0
        bad = ~(diff <= atol + rtol * np.abs(b))
        finite = np.isfinite(diff)
        rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
        rel[diff == 0] = 0.0
        rel_f = rel[np.isfinite(rel)]
        return OutputParity(
            name,
            float(diff[finite].max()) if finite.any() else 0.0,
            float(rel_f.max()) if rel_f.size else 0.0,
            int(bad.sum()),
        )
    eq = got.astype(str) == want.astype(str) if want.dtype == object else got == want
    return OutputParity(name, 0.0, 0.0, int((~np.asarray(eq)).sum()))


@dataclass(frozen=True)
class SelfTestResult:
    """What re-running the smoke vectors gave: per output, deviation and mismatches."""

    outputs: tuple[OutputParity, ...]
    atol: float
    rtol: float
    rows: int

    @property
    def passed(self) -> bool:
        """True when every output is within the recorded tolerance."""
        return all(o.mismatches == 0 for o in self.outputs)

    def describe(self) -> str:
        """One line: passed, or which outputs differ and by how much."""
        if self.passed:
            worst = max((o.max_abs for o in self.outputs), default=0.0)
            return (
                f"{len(self.outputs)} output(s) on {self.rows} row(s) within atol "
                f"{self.atol:g}, rtol {self.rtol:g} (max abs deviation {worst:.3g})"
            )
        return "; ".join(
            f"output {o.name!r}: {o.mismatches} element(s) out of tolerance "
            f"(max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g})"
            for o in self.outputs
            if o.mismatches
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "passed": self.passed,
            "rows": self.rows,
            "tolerance": {"atol": self.atol, "rtol": self.rtol},
            "outputs": [o.to_dict() for o in self.outputs],
        }


def self_test(
    smoke: Smoke,
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
) -> SelfTestResult:
    """Run ``run`` on the smoke inputs and compare every recorded output."""
    feeds = {t.name: decode(t) for t in smoke.inputs}
    got = run(feeds)
    rows = min((t.shape[0] for t in smoke.inputs if t.shape), default=1)
    return SelfTestResult(
        tuple(
            compare(t.name, np.asarray(got[t.name]), decode(t), smoke.atol, smoke.rtol)
            for t in smoke.outputs
        ),
        smoke.atol,
        smoke.rtol,
        rows,
    )
