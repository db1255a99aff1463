"""Weights: ONNX initializers moved into one safetensors entry, and its strict reader.

On export every numeric, non-empty initializer of the main graph leaves the
graph and goes, under its own name, into ``weights.safetensors``; the graph
keeps a reference to it as ONNX external data whose ``location`` is
``weights.safetensors`` and whose ``offset``/``length`` are the tensor's bytes
inside that file. An unzipped bundle is therefore a directory onnxruntime and
safetensors can both read as it is, and the weights exist once.

The header parser here is the format's own, stricter than the library's: the
tensors must tile the data area exactly (no gaps, overlaps or trailing bytes),
dtype x shape must equal each byte length, metadata must map strings to strings.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _json
from .errors import FormatError, LimitError

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_HEADER_BYTES", "TensorInfo", "WEIGHTS_NAME", "parse_header"]

WEIGHTS_NAME = "weights.safetensors"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own MAX_HEADER_SIZE
MAX_TENSORS = 1_000_000

# safetensors dtype -> (itemsize, ONNX TensorProto data type, numpy dtype)
_DTYPES: dict[str, tuple[int, int, str | None]] = {
    "F64": (8, 11, "float64"), "F32": (4, 1, "float32"), "F16": (2, 10, "float16"),
    "BF16": (2, 16, None), "I64": (8, 7, "int64"), "I32": (4, 6, "int32"),
    "I16": (2, 5, "int16"), "I8": (1, 3, "int8"), "U64": (8, 13, "uint64"),
    "U32": (4, 12, "uint32"), "U16": (2, 4, "uint16"), "U8": (1, 2, "uint8"),
    "BOOL": (1, 9, "bool"),
}
_BY_ONNX = {onnx_type: st for st, (_, onnx_type, _np) in _DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: dtype, shape, and [begin, end) in the data area."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def onnx_type(self) -> int:
        """The ONNX TensorProto data type of this tensor."""
        return _DTYPES[self.dtype][1]


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors by name, where the data area starts."""

    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    data_start: int


def parse_header(head: bytes, total_size: int, *, entry: str = WEIGHTS_NAME) -> Header:
    """Check a safetensors header; ``head`` holds at least the first 8 + N bytes."""
    if total_size < 8 or len(head) < 8:
        raise FormatError(f"{entry}: {total_size} bytes is too short for safetensors", entry=entry)
    (n,) = struct.unpack_from("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise LimitError(f"{entry}: header of {n} bytes exceeds the limit of {MAX_HEADER_BYTES}",
                         entry=entry)
    if 8 + n > total_size:
        raise FormatError(f"{entry}: header length {n} runs past the end of the entry",
                          entry=entry)
    if len(head) < 8 + n:
        raise ValueError("caller gave too few header bytes")
    raw = head[8:8 + n]
    if not raw.startswith(b"{"):
        raise FormatError(f"{entry}: header does not start with '{{'", entry=entry)
    doc = _json.loads(raw, what=f"{entry} header")
    if not isinstance(doc, dict):
        raise FormatError(f"{entry}: header is not a JSON object", entry=entry)
    meta = doc.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FormatError(f"{entry}: __metadata__ must map strings to strings", entry=entry)
    if len(doc) > MAX_TENSORS:
        raise LimitError(f"{entry}: more than {MAX_TENSORS} tensors", entry=entry)
    data_len = total_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, info in doc.items():
        where = f"{entry}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where} must have exactly dtype, shape, data_offsets",
                              entry=entry)
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise FormatError(f"{where} has unsupported dtype {dtype!r}", entry=entry)
        if not isinstance(shape, list) or len(shape) > 64 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError(f"{where} has an invalid shape {shape!r}", entry=entry)
        if not isinstance(offs, list) or len(offs) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) for o in offs):
            raise FormatError(f"{where} has invalid data_offsets {offs!r}", entry=entry)
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise FormatError(f"{where} data_offsets {offs} fall outside the data area "
                              f"of {data_len} bytes", entry=entry)
        count = 0 if 0 in shape else 1
        for d in shape:
            count *= d
            if count > data_len:  # bounded early: no tensor may claim more than the file holds
                raise FormatError(f"{where} shape {shape} overflows the data area", entry=entry)
        if count * _DTYPES[dtype][0] != end - begin:
            raise FormatError(f"{where}: {dtype} x {shape} needs {count * _DTYPES[dtype][0]} "
                              f"bytes but data_offsets span {end - begin}", entry=entry)
        tensors[name] = TensorInfo(name, dtype, tuple(shape), begin, end)
    pos = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != pos:
            what = "overlaps another tensor" if t.begin < pos else "leaves a gap before it"
            raise FormatError(f"{entry}: tensor {t.name!r} {what}", entry=entry)
        pos = t.end
    if pos != data_len:
        raise FormatError(f"{entry}: {data_len - pos} trailing bytes after the last tensor",
                          entry=entry)
    return Header(tensors, meta, 8 + n)


def header_size(first8: bytes) -> int:
    """How many bytes (8 + N) the header of a safetensors file occupies."""
    if len(first8) < 8:
        raise FormatError("weights entry is too short for safetensors", entry=WEIGHTS_NAME)
    return 8 + min(struct.unpack_from("<Q", first8)[0], MAX_HEADER_BYTES + 1)


# --------------------------------------------------------------------------- export side


def externalize(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Take the numeric initializers out of ``model``'s main graph; return them by name.

    The initializers stay in the graph with their data cleared; call
    :func:`bind_external` with the written safetensors header to point them at it.
    """
    from onnx import TensorProto, numpy_helper

    tensors: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_type not in _BY_ONNX or _DTYPES[_BY_ONNX[init.data_type]][2] is None:
            continue
        if init.data_location == TensorProto.EXTERNAL:
            raise FormatError(f"initializer {init.name!r} still refers to external data; "
                              "load the model with its external data first")
        arr = numpy_helper.to_array(init)
        if arr.size == 0:
            continue
        if init.name in tensors:
            raise FormatError(f"duplicate initializer name {init.name!r}")
        # not np.ascontiguousarray: it turns 0-d scalars into shape (1,)
        tensors[init.name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
        dims = list(init.dims)
        name, dtype = init.name, init.data_type
        init.Clear()
        init.name, init.data_type = name, dtype
        init.dims.extend(dims)
    return tensors


def bind_external(model: onnx.ModelProto, header: Header, location: str = WEIGHTS_NAME,
                  base: int = 0) -> None:
    """Point each externalized initializer at its bytes: ``location`` at ``base`` + place."""
    from onnx import TensorProto

    for init in model.graph.initializer:
        t = header.tensors.get(init.name)
        if t is None or init.raw_data or init.external_data:
            continue
        init.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location),
                           ("offset", str(base + header.data_start + t.begin)),
                           ("length", str(t.end - t.begin))):
            e = init.external_data.add()
            e.key, e.value = key, value


def serialize(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
              ) -> bytes:
    """The safetensors bytes of ``tensors`` (via the safetensors library)."""
    from safetensors.numpy import save

    return save(dict(tensors), metadata=dict(metadata) if metadata else None)


def numpy_dtype(info: TensorInfo) -> Any:
    """The numpy dtype of a tensor (None for bfloat16, which numpy lacks)."""
    return _DTYPES[info.dtype][2]
