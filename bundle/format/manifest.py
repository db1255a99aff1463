"""The manifest: what a bundle holds, as frozen dataclasses with a strict parser.

``Manifest.to_bytes()`` gives the canonical JSON stored as ``manifest.json``;
``Manifest.from_bytes()`` accepts only canonical JSON that satisfies
``spec/manifest.schema.json`` (checked by hand here so the load path needs no
JSON Schema library; the tests check the two agree). Objects cannot exist
invalid: the parser is the only way in besides the writer's own constructor
calls, and both go through the same checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from . import canonical_json as _json
from .archive import check_entry_name

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "GRAPH_NAME",
    "MAX_MANIFEST_BYTES",
    "Column",
    "DerivedFrom",
    "FileEntry",
    "Manifest",
    "Method",
    "Parity",
    "Requires",
    "Smoke",
    "SmokeTensor",
    "TensorSpec",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
GRAPH_NAME = "model.onnx"
"""The graph entry's name (role ``graph``; FORMAT.md 6)."""
MAX_MANIFEST_BYTES = 4 << 20

DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "string",
)
TASKS = ("classifier", "regressor", "transformer", "clusterer", "generic")
COLUMN_KINDS = ("numeric", "integer", "string", "bool")
FILE_ROLES = ("graph", "weights", "training_state", "asset")
PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("predict", "predict_proba", "transform", "decision_function", "score_samples")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,3}")
_IDENT_MAX = 256
_TEXT_MAX = 8192


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(f"manifest.json: {path}: {msg}", entry=MANIFEST_NAME)


def _obj(v: Any, path: str, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    if not isinstance(v, dict):
        raise _fail(path, f"expected an object, found {type(v).__name__}")
    missing = required - v.keys()
    if missing:
        raise _fail(path, f"missing field(s) {sorted(missing)}")
    extra = v.keys() - required - optional
    if extra:
        raise _fail(path, f"unknown field(s) {sorted(extra)}")
    return v


def _str(v: Any, path: str, max_len: int = _IDENT_MAX, *, empty: bool = False) -> str:
    if not isinstance(v, str):
        raise _fail(path, f"expected a string, found {type(v).__name__}")
    if len(v) > max_len or (not empty and not v):
        raise _fail(path, f"string length must be {0 if empty else 1}..{max_len}")
    return v


def is_deflated(path: str, role: str) -> bool:
    """How a content entry is stored (FORMAT.md 2.5-2.6), one rule for writer and reader.

    The graph and JSON entries are DEFLATEd; every other content entry (safetensors,
    assets) is STORED with its data aligned, so that it can be mapped.
    """
    return role == "graph" or path.endswith(".json")


def _int(v: Any, path: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(path, f"expected an integer in [{lo}, {hi}], found {v!r}")
    return v


def _num(v: Any, path: str) -> float:
    # A JSON float only: an integer spelling (0 for 0.0) would be a second encoding of
    # the same manifest, since these fields are always written as floats.
    if type(v) is not float or not v >= 0:
        raise _fail(path, f"expected a non-negative number written as a float, found {v!r}")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(path, f"expected true/false, found {v!r}")
    return v


def _enum(v: Any, path: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise _fail(path, f"{v!r} is not one of {list(allowed)}")
    return v  # type: ignore[no-any-return]


def _list(v: Any, path: str, max_len: int = 4096) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_len:
        raise _fail(path, f"expected a list of at most {max_len} items")
    return v


Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type, shape (None or a name = dynamic)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Any, path: str) -> TensorSpec:
        d = _obj(d, path, {"name", "dtype", "shape"})
        dims: list[Dim] = []
        for i, dim in enumerate(_list(d["shape"], f"{path}.shape", 64)):
            if dim is None or isinstance(dim, str):
                dims.append(None if dim is None else _str(dim, f"{path}.shape[{i}]", 128))
            else:
                dims.append(_int(dim, f"{path}.shape[{i}]"))
        return cls(
            _str(d["name"], f"{path}.name"), _enum(d["dtype"], f"{path}.dtype", DTYPES), tuple(dims)
        )

    @property
    def dynamic_axes(self) -> list[int]:
        """Indices of the axes whose size is not fixed."""
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]


@dataclass(frozen=True)
class Column:
    """A tabular (DataFrame) column feeding one graph input."""

    name: str
    kind: str
    input: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "input": self.input}

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Column:
        d = _obj(d, path, {"name", "kind", "input"})
        return cls(
            _str(d["name"], f"{path}.name"),
            _enum(d["kind"], f"{path}.kind", COLUMN_KINDS),
            _str(d["input"], f"{path}.input"),
        )


@dataclass(frozen=True)
class Method:
    """What a convenience method (predict, predict_proba...) returns: which output, reshaped how."""

    output: str
    squeeze: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "squeeze": self.squeeze}

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Method:
        d = _obj(d, path, {"output", "squeeze"})
        return cls(_str(d["output"], f"{path}.output"), _bool(d["squeeze"], f"{path}.squeeze"))


@dataclass(frozen=True)
class FileEntry:
    """One content entry of the bundle: path, role, size and SHA-256 of its bytes.

    An entry larger than its ``shard_size`` is recorded in shards (spec/SHARDS.md):
    ``shards`` lists the SHA-256 of each consecutive ``shard_size``-byte piece (the
    last one shorter) and ``sha256`` is then the shard root -- SHA-256 over the raw
    32-byte shard digests -- not the plain hash of the entry. Smaller entries carry
    no shards and their plain SHA-256 (bundles written before sharding look so).
    """

    path: str
    role: str
    size: int
    sha256: str
    shards: tuple[str, ...] = ()
    shard_size: int = 0

    def __post_init__(self) -> None:
        try:
            check_entry_name(self.path)
        except FormatError as e:
            raise _fail("files", str(e)) from e
        if self.path == MANIFEST_NAME or self.path.startswith("signatures/"):
            raise _fail("files", f"{self.path!r} is reserved")
        _enum(self.role, "files.role", FILE_ROLES)
        if not _HEX64.fullmatch(self.sha256):
            raise _fail("files", f"{self.path}: sha256 must be 64 lowercase hex digits")
        if self.shards or self.shard_size:
            self._check_shards()

    def _check_shards(self) -> None:
        from .digest import MAX_SHARD_SIZE, MIN_SHARD_SIZE, shard_root

        s = self.shard_size
        if (
            isinstance(s, bool)
            or not isinstance(s, int)
            or s & (s - 1)
            or not MIN_SHARD_SIZE <= s <= MAX_SHARD_SIZE
        ):
            raise _fail(
                "files",
                f"{self.path}: shard_size must be a power of two between "
                f"{MIN_SHARD_SIZE} and {MAX_SHARD_SIZE}, found {s!r}",
            )
        if self.size <= s:
            raise _fail(
                "files",
                f"{self.path}: an entry of {self.size} bytes is not sharded "
                f"at shard_size {s} (only entries larger than it are)",
            )
        if len(self.shards) != -(-self.size // s):
            raise _fail(
                "files",
                f"{self.path}: {self.size} bytes in shards of {s} make "
                f"{-(-self.size // s)} shards, {len(self.shards)} are listed",
            )
        for i, d in enumerate(self.shards):
            if not isinstance(d, str) or not _HEX64.fullmatch(d):
                raise _fail("files", f"{self.path}: shard {i} must be 64 lowercase hex digits")
        if shard_root(self.shards) != self.sha256:
            raise _fail(
                "files",
                f"{self.path}: sha256 is not the root of its shards (SHA-256 "
                "over the concatenated shard digests)",
            )

    @property
    def spans(self) -> list[tuple[int, int]]:
        """[start, end) of each shard within the entry; one span when unsharded."""
        from .digest import shard_spans

        return shard_spans(self.size, self.shard_size) if self.shards else [(0, self.size)]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "role": self.role,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.shards:
            d["shard_size"] = self.shard_size
            d["shards"] = list(self.shards)
        return d

    @classmethod
    def from_dict(cls, d: Any, path: str) -> FileEntry:
        d = _obj(d, path, {"path", "role", "size", "sha256"}, {"shard_size", "shards"})
        if ("shards" in d) != ("shard_size" in d):
            raise _fail(path, "shards and shard_size come together")
        shards = tuple(
            _str(x, f"{path}.shards[{i}]", 64)
            for i, x in enumerate(_list(d.get("shards", []), f"{path}.shards", 1 << 16))
        )
        if "shards" in d and not shards:
            # An empty list would vanish on re-serialization: one manifest, one encoding.
            raise _fail(f"{path}.shards", "a sharded entry lists at least two shards")
        return cls(
            _str(d["path"], f"{path}.path", 255),
            _str(d["role"], f"{path}.role"),
            _int(d["size"], f"{path}.size"),
            _str(d["sha256"], f"{path}.sha256", 64),
            shards,
            _int(d.get("shard_size", 0), f"{path}.shard_size"),
        )


@dataclass(frozen=True)
class OutputParity:
    """Largest deviation of one output between the original model and the bundle."""

    name: str
    max_abs: float
    max_rel: float
    mismatches: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_abs": float(self.max_abs),
            "max_rel": float(self.max_rel),
            "mismatches": self.mismatches,
        }


@dataclass(frozen=True)
class Parity:
    """Conversion parity measured at export on the sample input."""

    atol: float
    rtol: float
    sample_rows: int
    outputs: tuple[OutputParity, ...]
    accepted_mismatch: bool = False

    @property
    def passed(self) -> bool:
        """True when every output is within tolerance (and no label differs)."""
        return all(o.mismatches == 0 for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance": {"atol": float(self.atol), "rtol": float(self.rtol)},
            "sample_rows": self.sample_rows,
            "accepted_mismatch": self.accepted_mismatch,
            "outputs": [o.to_dict() for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Parity:
        d = _obj(d, path, {"tolerance", "sample_rows", "accepted_mismatch", "outputs"})
        tol = _obj(d["tolerance"], f"{path}.tolerance", {"atol", "rtol"})
        outs = []
        for i, o in enumerate(_list(d["outputs"], f"{path}.outputs", 256)):
            p = f"{path}.outputs[{i}]"
            o = _obj(o, p, {"name", "max_abs", "max_rel", "mismatches"})
            outs.append(
                OutputParity(
                    _str(o["name"], f"{p}.name"),
                    _num(o["max_abs"], p),
                    _num(o["max_rel"], p),
                    _int(o["mismatches"], p),
                )
            )
        return cls(
            _num(tol["atol"], f"{path}.atol"),
            _num(tol["rtol"], f"{path}.rtol"),
            _int(d["sample_rows"], f"{path}.sample_rows"),
            tuple(outs),
            _bool(d["accepted_mismatch"], f"{path}.accepted_mismatch"),
        )


@dataclass(frozen=True)
class ModelInfo:
    """Who the model is and where it came from."""

    name: str
    version: str
    description: str
    task: str
    framework: str
    framework_version: str
    converter: str
    converter_version: str
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "task": self.task,
            "precision": self.precision,
            "framework": {"name": self.framework, "version": self.framework_version},
            "converter": {"name": self.converter, "version": self.converter_version},
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> ModelInfo:
        d = _obj(
            d,
            path,
            {"name", "version", "description", "task", "framework", "converter", "precision"},
        )
        fw = _obj(d["framework"], f"{path}.framework", {"name", "version"})
        cv = _obj(d["converter"], f"{path}.converter", {"name", "version"})
        return cls(
            _str(d["name"], f"{path}.name"),
            _str(d["version"], f"{path}.version", 64),
            _str(d["description"], f"{path}.description", _TEXT_MAX, empty=True),
            _enum(d["task"], f"{path}.task", TASKS),
            _str(fw["name"], f"{path}.framework.name"),
            _str(fw["version"], f"{path}.framework.version", 64, empty=True),
            _str(cv["name"], f"{path}.converter.name"),
            _str(cv["version"], f"{path}.converter.version", 64, empty=True),
            _enum(d["precision"], f"{path}.precision", PRECISIONS),
        )


@dataclass(frozen=True)
class OnnxInfo:
    """The graph's IR version, operator sets and the oldest onnxruntime that runs it."""

    ir_version: int
    opsets: Mapping[str, int]
    min_onnxruntime: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ir_version": self.ir_version,
            "opsets": dict(sorted(self.opsets.items())),
            "min_onnxruntime": self.min_onnxruntime,
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> OnnxInfo:
        d = _obj(d, path, {"ir_version", "opsets", "min_onnxruntime"})
        ops = d["opsets"]
        if not isinstance(ops, dict) or len(ops) > 64:
            raise _fail(f"{path}.opsets", "expected an object of at most 64 domains")
        opsets = {
            _str(k, f"{path}.opsets", empty=True): _int(v, f"{path}.opsets[{k}]", 1, 10**6)
            for k, v in ops.items()
        }
        mo = _str(d["min_onnxruntime"], f"{path}.min_onnxruntime", 32)
        if not _VERSION.fullmatch(mo):
            raise _fail(f"{path}.min_onnxruntime", f"{mo!r} is not a version number")
        return cls(_int(d["ir_version"], f"{path}.ir_version", 1, 1000), opsets, mo)


SMOKE_MAX_VALUES = 16384
"""Smoke vectors hold at most this many values, inputs and outputs together."""
SMOKE_DTYPES = tuple(d for d in DTYPES if d != "bfloat16")  # numpy has no bfloat16
_EXECUTION_PROVIDER = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}ExecutionProvider")


def _opset_map(v: Any, path: str) -> dict[str, int]:
    if not isinstance(v, dict) or len(v) > 64:
        raise _fail(path, "expected an object of at most 64 domains")
    return {_str(k, path, empty=True): _int(x, f"{path}[{k}]", 1, 10**6) for k, x in v.items()}


def _release(v: Any, path: str) -> str:
    text = _str(v, path, 32)
    if not _VERSION.fullmatch(text):
        raise _fail(path, f"{text!r} is not a version number")
    return text


@dataclass(frozen=True)
class Requires:
    """What a runtime must offer to run the graph (FORMAT.md 5.11) [ADDITION: requires].

    ``ir_version`` and ``opsets`` are the graph's (the lowest IR version its opsets
    and types allow); ``min_opsets`` per domain the highest ``since_version`` of the
    operators actually used -- what an opset conversion could lower the stamp to;
    ``onnxruntime`` the oldest release that loads it; ``execution_providers`` those
    the writer ran this precision variant on.
    """

    onnxruntime: str
    ir_version: int
    opsets: Mapping[str, int]
    min_opsets: Mapping[str, int]
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __post_init__(self) -> None:
        if set(self.min_opsets) != set(self.opsets):
            raise _fail("requires.min_opsets", "must name exactly the domains of opsets")
        for d, v in self.min_opsets.items():
            if v > self.opsets[d]:
                raise _fail(
                    f"requires.min_opsets[{d}]", f"{v} is above the stamped opset {self.opsets[d]}"
                )
        if not self.execution_providers or list(self.execution_providers) != sorted(
            set(self.execution_providers)
        ):
            raise _fail(
                "requires.execution_providers",
                "must be a sorted list of unique names, at least one",
            )
        for ep in self.execution_providers:
            if not isinstance(ep, str) or not _EXECUTION_PROVIDER.fullmatch(ep):
                raise _fail(
                    "requires.execution_providers", f"{ep!r} is not an execution provider name"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnxruntime": self.onnxruntime,
            "ir_version": self.ir_version,
            "opsets": dict(sorted(self.opsets.items())),
            "min_opsets": dict(sorted(self.min_opsets.items())),
            "execution_providers": list(self.execution_providers),
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Requires:
        d = _obj(
            d, path, {"onnxruntime", "ir_version", "opsets", "min_opsets", "execution_providers"}
        )
        eps = _list(d["execution_providers"], f"{path}.execution_providers", 16)
        return cls(
            _release(d["onnxruntime"], f"{path}.onnxruntime"),
            _int(d["ir_version"], f"{path}.ir_version", 1, 1000),
            _opset_map(d["opsets"], f"{path}.opsets"),
            _opset_map(d["min_opsets"], f"{path}.min_opsets"),
            tuple(_str(e, f"{path}.execution_providers") for e in eps),
        )


@dataclass(frozen=True)
class SmokeTensor:
    """One tensor of a smoke vector: dtype, shape and its values in row-major order.

    Floats are JSON floats, or the strings ``"nan"``, ``"inf"``, ``"-inf"``;
    integers JSON integers; booleans true/false; strings strings.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        where = f"smoke tensor {self.name!r}"
        _enum(self.dtype, f"{where}.dtype", SMOKE_DTYPES)
        n = 1
        for d in self.shape:
            n *= d
        if n != len(self.values):
            raise _fail(
                where, f"shape {list(self.shape)} holds {n} values, {len(self.values)} are listed"
            )
        kind = (
            "f"
            if self.dtype.startswith("float")
            else "b"
            if self.dtype == "bool"
            else "s"
            if self.dtype == "string"
            else "i"
        )
        for i, v in enumerate(self.values):
            ok = (
                (type(v) is float or v in ("nan", "inf", "-inf"))
                if kind == "f"
                else type(v) is bool
                if kind == "b"
                else (isinstance(v, str) and len(v) <= _TEXT_MAX)
                if kind == "s"
                else (type(v) is int and -(2**63) <= v < 2**64)
            )
            if not ok:
                raise _fail(f"{where}.values[{i}]", f"{v!r} is not a {self.dtype} value")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "values": list(self.values),
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> SmokeTensor:
        d = _obj(d, path, {"name", "dtype", "shape", "values"})
        shape = tuple(
            _int(x, f"{path}.shape[{i}]", 0, SMOKE_MAX_VALUES)
            for i, x in enumerate(_list(d["shape"], f"{path}.shape", 64))
        )
        return cls(
            _str(d["name"], f"{path}.name"),
            _str(d["dtype"], f"{path}.dtype"),
            shape,
            tuple(_list(d["values"], f"{path}.values", SMOKE_MAX_VALUES)),
        )


@dataclass(frozen=True)
class Smoke:
    """Smoke vectors [ADDITION: smoke vectors]: a few sample rows and the outputs the
    writer's onnxruntime computed for them, within ``atol``/``rtol`` (parity's rule).

    A loader re-runs them (``Model.self_test()``) to show that this runtime computes
    what the exporting one did, before a version goes live.
    """

    atol: float
    rtol: float
    inputs: tuple[SmokeTensor, ...]
    outputs: tuple[SmokeTensor, ...]

    def __post_init__(self) -> None:
        for group, ts in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in ts]
            if not names or len(set(names)) != len(names):
                raise _fail(f"smoke.{group}", "names must be present and unique")
        total = sum(len(t.values) for t in (*self.inputs, *self.outputs))
        if total > SMOKE_MAX_VALUES:
            raise _fail("smoke", f"{total} values; at most {SMOKE_MAX_VALUES}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance": {"atol": float(self.atol), "rtol": float(self.rtol)},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Smoke:
        d = _obj(d, path, {"tolerance", "inputs", "outputs"})
        tol = _obj(d["tolerance"], f"{path}.tolerance", {"atol", "rtol"})
        return cls(
            _num(tol["atol"], f"{path}.tolerance.atol"),
            _num(tol["rtol"], f"{path}.tolerance.rtol"),
            tuple(
                SmokeTensor.from_dict(x, f"{path}.inputs[{i}]")
                for i, x in enumerate(_list(d["inputs"], f"{path}.inputs", 1024))
            ),
            tuple(
                SmokeTensor.from_dict(x, f"{path}.outputs[{i}]")
                for i, x in enumerate(_list(d["outputs"], f"{path}.outputs", 1024))
            ),
        )


@dataclass(frozen=True)
class DerivedFrom:
    """The bundle this one was made from [ADDITION: derived_from]: the SHA-256 of the
    source's ``manifest.json`` (a bundle's identity), its name and version, and what
    was changed (``"opset 17 -> 13"``)."""

    manifest_sha256: str
    name: str
    version: str
    change: str

    def __post_init__(self) -> None:
        if not isinstance(self.manifest_sha256, str) or not _HEX64.fullmatch(self.manifest_sha256):
            raise _fail("derived_from.manifest_sha256", "must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_sha256": self.manifest_sha256,
            "name": self.name,
            "version": self.version,
            "change": self.change,
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> DerivedFrom:
        d = _obj(d, path, {"manifest_sha256", "name", "version", "change"})
        return cls(
            _str(d["manifest_sha256"], f"{path}.manifest_sha256", 64),
            _str(d["name"], f"{path}.name"),
            _str(d["version"], f"{path}.version", 64),
            _str(d["change"], f"{path}.change", _TEXT_MAX),
        )


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself; stored as canonical JSON."""

    model: ModelInfo
    onnx: OnnxInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: tuple[FileEntry, ...]
    methods: Mapping[str, Method] = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    parity: Parity | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_by: str = ""
    created: str | None = None
    format_version: int = FORMAT_VERSION
    expires: str | None = None
    """RFC 3339 UTC instant (``YYYY-MM-DDTHH:MM:SSZ``) after which verifiers refuse the
    bundle; signed like every manifest field. Omitted from the JSON when None."""
    requires: Requires | None = None
    """What a runtime must offer (absent in bundles written before it existed)."""
    smoke: Smoke | None = None
    """Smoke vectors: sample rows and expected outputs (absent when none were recorded)."""
    derived_from: DerivedFrom | None = None
    """The source bundle of a conversion (``convert_opset``)."""

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise _fail(
                "format_version",
                f"{self.format_version} is not supported by this "
                f"reader (it reads version {FORMAT_VERSION}); upgrade model-bundle",
            )
        paths = [f.path for f in self.files]
        if paths != sorted(set(paths)):
            raise _fail("files", "paths must be unique and sorted")
        roles = [f.role for f in self.files]
        if roles.count("graph") != 1 or roles.count("weights") != 1:
            raise _fail("files", "exactly one 'graph' and one 'weights' entry are required")
        self._check_shard_size()
        for group, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            if not names or len(set(names)) != len(names):
                raise _fail(group, "names must be present and unique")
        outputs = {o.name for o in self.outputs}
        inputs = {i.name for i in self.inputs}
        for mname, m in self.methods.items():
            _enum(mname, "methods", METHODS)
            if m.output not in outputs:
                raise _fail(f"methods.{mname}", f"output {m.output!r} is not a graph output")
        for c in self.columns:
            if c.input not in inputs:
                raise _fail("columns", f"column {c.name!r} feeds unknown input {c.input!r}")
        if len({c.name for c in self.columns}) != len(self.columns):
            raise _fail("columns", "column names must be unique")
        for k, v in self.metadata.items():
            if (
                not isinstance(k, str)
                or not isinstance(v, str)
                or not k
                or len(k) > _IDENT_MAX
                or len(v) > _TEXT_MAX
            ):
                raise _fail(
                    "metadata",
                    "keys and values must be strings (key 1..256, value ..8192 characters)",
                )
        if self.expires is not None:
            from .versions import parse_time

            try:
                parse_time(self.expires, "expires")
            except ValueError as e:
                raise _fail("expires", str(e)) from e
        self._check_requires_and_smoke()

    def _check_requires_and_smoke(self) -> None:
        """FORMAT.md 5.9 rules 8 and 9: ``requires`` repeats ``onnx``; smoke vectors name
        every input and only outputs, with the manifest's dtypes."""
        r = self.requires
        if r is not None and (
            r.ir_version != self.onnx.ir_version
            or dict(r.opsets) != dict(self.onnx.opsets)
            or r.onnxruntime != self.onnx.min_onnxruntime
        ):
            raise _fail(
                "requires",
                "ir_version, opsets and onnxruntime must equal onnx's "
                "ir_version, opsets and min_onnxruntime",
            )
        if self.smoke is not None:
            specs = {s.name: s for s in self.inputs}
            if sorted(t.name for t in self.smoke.inputs) != sorted(specs):
                raise _fail("smoke.inputs", "must give exactly the model's inputs")
            unknown = {t.name for t in self.smoke.outputs} - {s.name for s in self.outputs}
            if unknown:
                raise _fail("smoke.outputs", f"{sorted(unknown)} are not outputs")
            specs.update({s.name: s for s in self.outputs})
            for t in (*self.smoke.inputs, *self.smoke.outputs):
                if specs[t.name].dtype != t.dtype:
                    raise _fail(
                        "smoke", f"{t.name!r} is {t.dtype}; the model says {specs[t.name].dtype}"
                    )

    def _check_shard_size(self) -> None:
        """One shard size per bundle, and every entry larger than it sharded.

        The signed statement then names each piece exactly as OMS's ``shards``
        serialization would cut the unzipped files (spec/SHARDS.md).
        """
        sizes = {f.shard_size for f in self.files if f.shards}
        if len(sizes) > 1:
            raise _fail("files", f"entries are sharded with different sizes {sorted(sizes)}")
        if sizes:
            s = sizes.pop()
            big = [f.path for f in self.files if not f.shards and f.size > s]
            if big:
                raise _fail("files", f"{big[0]} is larger than the shard size {s} but not sharded")

    @property
    def shard_size(self) -> int:
        """The bundle's shard size; 0 when no entry is sharded."""
        return next((f.shard_size for f in self.files if f.shards), 0)

    # -- accessors

    def file(self, role: str) -> FileEntry:
        """The single file entry of ``role`` ('graph' or 'weights')."""
        return next(f for f in self.files if f.role == role)

    # -- serialization

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "format_version": self.format_version,
                "model": self.model.to_dict(),
                "onnx": self.onnx.to_dict(),
                "inputs": [s.to_dict() for s in self.inputs],
                "outputs": [s.to_dict() for s in self.outputs],
                "columns": [c.to_dict() for c in self.columns],
                "methods": {k: v.to_dict() for k, v in sorted(self.methods.items())},
                "files": [f.to_dict() for f in self.files],
                "parity": self.parity.to_dict() if self.parity else None,
                "metadata": dict(sorted(self.metadata.items())),
                "created_by": self.created_by,
                "created": self.created,
            }
            | ({"expires": self.expires} if self.expires is not None else {})
            | ({"requires": self.requires.to_dict()} if self.requires is not None else {})
            | ({"smoke": self.smoke.to_dict()} if self.smoke is not None else {})
            | (
                {"derived_from": self.derived_from.to_dict()}
                if self.derived_from is not None
                else {}
            )
        )

    def to_bytes(self) -> bytes:
        """The canonical JSON stored in the bundle."""
        return _json.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes; any deviation from the schema is a FormatError."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise FormatError(
                f"manifest.json is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}",
                entry=MANIFEST_NAME,
            )
        return cls.from_dict(_json.loads_canonical(data, what=MANIFEST_NAME))

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Build from a parsed JSON object, checking every field."""
        if isinstance(d, dict) and (
            d.get("format_version") != FORMAT_VERSION or type(d.get("format_version")) is not int
        ):
            raise _fail(
                "format_version",
                f"{d.get('format_version')!r} is not supported by this "
                f"reader (it reads version {FORMAT_VERSION})",
            )
        d = _obj(
            d,
            "$",
            {
                "format_version",
                "model",
                "onnx",
                "inputs",
                "outputs",
                "columns",
                "methods",
                "files",
                "parity",
                "metadata",
                "created_by",
                "created",
            },
            {"expires", "requires", "smoke", "derived_from"},
        )
        methods = d["methods"]
        if not isinstance(methods, dict):
            raise _fail("methods", "expected an object")
        metadata = d["metadata"]
        if not isinstance(metadata, dict) or len(metadata) > 1024:
            raise _fail("metadata", "expected an object of at most 1024 entries")
        created = d["created"]
        return cls(
            model=ModelInfo.from_dict(d["model"], "model"),
            onnx=OnnxInfo.from_dict(d["onnx"], "onnx"),
            inputs=tuple(
                TensorSpec.from_dict(x, f"inputs[{i}]")
                for i, x in enumerate(_list(d["inputs"], "inputs", 1024))
            ),
            outputs=tuple(
                TensorSpec.from_dict(x, f"outputs[{i}]")
                for i, x in enumerate(_list(d["outputs"], "outputs", 1024))
            ),
            columns=tuple(
                Column.from_dict(x, f"columns[{i}]")
                for i, x in enumerate(_list(d["columns"], "columns", 4096))
            ),
            methods={
                _enum(k, "methods", METHODS): Method.from_dict(v, f"methods.{k}")
                for k, v in methods.items()
            },
            files=tuple(
                FileEntry.from_dict(x, f"files[{i}]")
                for i, x in enumerate(_list(d["files"], "files", 64))
            ),
            parity=None if d["parity"] is None else Parity.from_dict(d["parity"], "parity"),
            metadata=metadata,
            created_by=_str(d["created_by"], "created_by", 128),
            created=None if created is None else _str(created, "created", 64),
            expires=_str(d["expires"], "expires", 20) if "expires" in d else None,
            requires=Requires.from_dict(d["requires"], "requires") if "requires" in d else None,
            smoke=Smoke.from_dict(d["smoke"], "smoke") if "smoke" in d else None,
            derived_from=DerivedFrom.from_dict(d["derived_from"], "derived_from")
            if "derived_from" in d
            else None,
            format_version=d["format_version"],
        )
