"""Request and response bodies: Open Inference Protocol v2 JSON tensors, and records/columns.

Everything a client sends is checked against the bundle's signed input signature
before onnxruntime sees it; a mismatch is an :class:`~bundle.errors.InputError`
whose message names the field (``inputs[1].shape``, ``records[3].age``), which the
app answers with a 400. Nothing here knows about HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..format.manifest import Manifest, TensorSpec

__all__ = [
    "V2_DATATYPES",
    "InferRequest",
    "as_model_input",
    "encode_outputs",
    "parse_infer",
    "parse_predict",
    "to_jsonable",
]

V2_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
    "string": "BYTES",
}
"""Manifest dtype -> the protocol's ``datatype`` name."""

_FROM_V2 = {v: k for k, v in V2_DATATYPES.items()}

MAX_RANK = 32
"""A shape longer than this is refused before anything is allocated."""


@dataclass(frozen=True)
class InferRequest:
    """A checked inference request: feeds by graph input name, the outputs asked for."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[str] | None


def _field(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise InputError(f"{where}: {message}", entry=where)


def _dims(shape: Any, where: str) -> tuple[int, ...]:
    _field(
        isinstance(shape, list) and len(shape) <= MAX_RANK,
        where,
        f"must be a list of at most {MAX_RANK} non-negative integers",
    )
    dims = []
    for i, d in enumerate(shape):
        _field(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0,
            f"{where}[{i}]",
            f"must be a non-negative integer, not {d!r}"[:200],
        )
        dims.append(d)
    return tuple(dims)


def _array(data: Any, dtype: str, where: str) -> np.ndarray:
    """The JSON values as a flat array of ``dtype``; refuses what would not convert exactly."""
    try:
        arr = np.asarray(data, dtype=object if dtype == "string" else None)
    except (ValueError, TypeError, RecursionError) as e:
        raise InputError(
            f"{where}: not a rectangular array of values ({' '.join(str(e).split())})"[:300],
            entry=where,
        ) from e
    arr = arr.reshape(-1)
    kind = arr.dtype.kind
    if dtype == "string":
        _field(all(isinstance(v, str) for v in arr), where, "BYTES data must be strings")
        return arr
    if dtype == "bool":
        _field(
            kind == "b" or arr.size == 0,
            where,
            f"BOOL data must be true/false, got {_kind_name(kind)}",
        )
        return arr.astype(np.bool_)
    want = np.dtype(dtype if dtype != "bfloat16" else "float32")
    if want.kind in "iu":
        _field(
            kind in "iu" or arr.size == 0,
            where,
            f"{V2_DATATYPES[dtype]} data must be integers, got {_kind_name(kind)}",
        )
        info = np.iinfo(want)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise InputError(
                f"{where}: a value is outside the range of {V2_DATATYPES[dtype]}", entry=where
            )
        return arr.astype(want)
    _field(
        kind in "iuf" or arr.size == 0,
        where,
        f"{V2_DATATYPES[dtype]} data must be numbers, got {_kind_name(kind)}",
    )
    return arr.astype(want)


def _kind_name(kind: str) -> str:
    return {
        "U": "strings",
        "O": "mixed or null values",
        "f": "non-integer numbers",
        "b": "booleans",
        "i": "integers",
        "u": "integers",
    }.get(kind, f"kind {kind!r}")


def _check_shape(dims: tuple[int, ...], spec: TensorSpec, where: str) -> None:
    if not spec.shape:
        return
    _field(
        len(dims) == len(spec.shape),
        where,
        f"input {spec.name!r} is {len(spec.shape)}-D {_fmt(spec.shape)}, got {list(dims)}",
    )
    for i, (want, got) in enumerate(zip(spec.shape, dims, strict=True)):
        _field(
            not isinstance(want, int) or want == got,
            f"{where}[{i}]",
            f"input {spec.name!r} has shape {_fmt(spec.shape)}: axis {i} must be {want}, got {got}",
        )


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in shape) + "]"


def _check_symbols(feeds: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]) -> None:
    """One size per named dynamic axis across inputs (``N`` is ``N`` everywhere): what the
    signature says is checked here, so a run that fails afterwards is the model's fault."""
    bound: dict[str, tuple[int, str]] = {}
    for name, arr in feeds.items():
        for i, d in enumerate(specs[name].shape):
            if isinstance(d, str) and i < arr.ndim:
                if d in bound and bound[d][0] != arr.shape[i]:
                    raise InputError(
                        f"inputs: axis {d!r} is {bound[d][0]} in input "
                        f"{bound[d][1]!r} but {arr.shape[i]} in input {name!r}",
                        entry="inputs",
                    )
                bound.setdefault(d, (arr.shape[i], name))


def parse_infer(body: Any, manifest: Manifest) -> InferRequest:
    """Check a v2 ``InferenceRequest`` body against the model's inputs."""
    _field(isinstance(body, dict), "body", "must be a JSON object with an 'inputs' list")
    _field(isinstance(body.get("inputs"), list), "inputs", "must be a list of tensors")
    specs = {s.name: s for s in manifest.inputs}
    feeds: dict[str, np.ndarray] = {}
    for i, t in enumerate(body["inputs"]):
        where = f"inputs[{i}]"
        _field(isinstance(t, dict), where, "must be an object with name, shape, datatype, data")
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in t]
        _field(not missing, where, f"missing {missing}")
        name = t["name"]
        _field(isinstance(name, str), f"{where}.name", "must be a string")
        _field(
            name in specs,
            f"{where}.name",
            f"the model has no input {name!r}; its inputs are {sorted(specs)}"[:300],
        )
        _field(name not in feeds, f"{where}.name", f"input {name!r} given twice")
        spec = specs[name]
        want = V2_DATATYPES[spec.dtype]
        _field(
            t["datatype"] == want,
            f"{where}.datatype",
            f"input {name!r} takes {want}, got {t['datatype']!r}"[:300],
        )
        dims = _dims(t["shape"], f"{where}.shape")
        _check_shape(dims, spec, f"{where}.shape")
        count = math.prod(dims)
        arr = _array(t["data"], spec.dtype, f"{where}.data")
        _field(
            arr.size == count,
            f"{where}.data",
            f"shape {list(dims)} needs {count} values, got {arr.size}",
        )
        feeds[name] = arr.reshape(dims)
    absent = sorted(specs.keys() - feeds.keys())
    _field(not absent, "inputs", f"missing input(s) {absent}")
    _check_symbols(feeds, specs)
    outputs = None
    if body.get("outputs") is not None:
        _field(isinstance(body["outputs"], list), "outputs", "must be a list of {name}")
        known = {o.name for o in manifest.outputs}
        outputs = []
        for i, o in enumerate(body["outputs"]):
            _field(
                isinstance(o, dict) and isinstance(o.get("name"), str),
                f"outputs[{i}]",
                "must be an object with a name",
            )
            _field(
                o["name"] in known,
                f"outputs[{i}].name",
                f"the model has no output {o['name']!r}; its outputs are {sorted(known)}"[:300],
            )
            outputs.append(o["name"])
    rid = body.get("id")
    _field(rid is None or isinstance(rid, str), "id", "must be a string")
    return InferRequest(rid, feeds, outputs)


def as_model_input(feeds: Mapping[str, np.ndarray], manifest: Manifest) -> Any:
    """What :meth:`bundle.Model.run` takes: by column name for a tabular pipeline."""
    if not manifest.columns:
        return dict(feeds)
    return {c.name: feeds[c.input].reshape(-1) for c in manifest.columns}


def parse_predict(body: Any, manifest: Manifest) -> tuple[dict[str, Any], str | None]:
    """``{"records": [{...}, ...]}`` or ``{"columns": {name: [...]}}`` (+ optional
    ``"method"``) as a dict of columns (or graph inputs), checked against the model."""
    _field(
        isinstance(body, dict),
        "body",
        "must be a JSON object with 'records' (a list of objects) or 'columns'",
    )
    method = body.get("method")
    _field(
        method is None or (isinstance(method, str) and method in manifest.methods),
        "method",
        f"the model offers {sorted(manifest.methods)}, not {method!r}"[:300],
    )
    names = [c.name for c in manifest.columns] or [s.name for s in manifest.inputs]
    has_records, has_columns = "records" in body, "columns" in body
    _field(has_records != has_columns, "body", "give exactly one of 'records' or 'columns'")
    if has_columns:
        cols = body["columns"]
        _field(isinstance(cols, dict), "columns", "must be an object of name -> list of values")
        for n in names:
            _field(n in cols, f"columns.{n}", f"missing; the model needs {names}"[:300])
            _field(isinstance(cols[n], list), f"columns.{n}", "must be a list of values")
        extra = sorted(set(cols) - set(names))
        _field(not extra, "columns", f"unknown column(s) {extra}; the model needs {names}"[:300])
        lengths = {len(cols[n]) for n in names}
        _field(len(lengths) == 1, "columns", "every column must have the same length")
        out = {n: cols[n] for n in names}
    else:
        records = body["records"]
        _field(
            isinstance(records, list) and len(records) > 0,
            "records",
            "must be a non-empty list of objects",
        )
        out = {n: [] for n in names}
        for i, r in enumerate(records):
            _field(isinstance(r, dict), f"records[{i}]", "must be an object")
            for n in names:
                _field(n in r, f"records[{i}].{n}", f"missing; the model needs {names}"[:300])
                out[n].append(r[n])
            extra = sorted(set(r) - set(names))
            _field(not extra, f"records[{i}]", f"unknown field(s) {extra}"[:300])
    specs = {s.name: s for s in manifest.inputs}
    kinds = {c.name: c for c in manifest.columns}
    checked: dict[str, Any] = {}
    for n, values in out.items():
        spec = specs[kinds[n].input] if n in kinds else specs[n]
        where = f"records[*].{n}" if has_records else f"columns.{n}"
        arr = _array(values, spec.dtype, where)
        if n in kinds:
            checked[n] = arr
        else:
            # a tensor input: each record holds one row
            try:
                rows = np.asarray(values, dtype=object if spec.dtype == "string" else None)
            except (ValueError, TypeError) as e:
                raise InputError(f"{where}: rows of different lengths", entry=where) from e
            rows = arr.reshape(rows.shape)
            _check_shape(rows.shape, spec, where)
            checked[n] = rows
    return checked, method


def to_jsonable(arr: np.ndarray) -> list[Any]:
    """Flat values for JSON; NaN and infinities (which JSON cannot hold) become null."""
    flat = arr.reshape(-1)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [None if not math.isfinite(v) else v for v in flat.tolist()]
    if flat.dtype.kind in "OUS":
        return [str(v) for v in flat.tolist()]
    return list(flat.tolist())


def encode_outputs(values: Mapping[str, np.ndarray], manifest: Manifest) -> list[dict[str, Any]]:
    """Outputs as v2 response tensors (flat ``data`` with its ``shape`` and ``datatype``)."""
    dtypes = {o.name: o.dtype for o in manifest.outputs}
    out = []
    for name, arr in values.items():
        a = np.asarray(arr)
        dt = dtypes.get(name) or ("string" if a.dtype.kind in "OUS" else str(a.dtype))
        out.append(
            {
                "name": name,
                "datatype": V2_DATATYPES.get(dt, "BYTES"),
                "shape": list(a.shape),
                "data": to_jsonable(a),
            }
        )
    return out
