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

from ..errors import FormatError, LimitError
from . import canonical_json as _json

if TYPE_CHECKING:
    import onnx

    from .archive import ZipReader

__all__ = [
    "IN_MEMORY",
    "MAX_HEADER_BYTES",
    "WEIGHTS_NAME",
    "SplitWeights",
    "TensorFile",
    "TensorInfo",
    "TensorSource",
    "buffer_chunks",
    "inline_external_data",
    "moves_onnx_type",
    "parse_header",
    "read_header",
    "split_weights",
    "tensor_file",
]

WEIGHTS_NAME = "weights.safetensors"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own MAX_HEADER_SIZE
MAX_TENSORS = 1_000_000

# safetensors dtype -> (itemsize, ONNX TensorProto data type, numpy dtype)
_DTYPES: dict[str, tuple[int, int, str | None]] = {
    "F64": (8, 11, "float64"),
    "F32": (4, 1, "float32"),
    "F16": (2, 10, "float16"),
    "BF16": (2, 16, None),
    "I64": (8, 7, "int64"),
    "I32": (4, 6, "int32"),
    "I16": (2, 5, "int16"),
    "I8": (1, 3, "int8"),
    "U64": (8, 13, "uint64"),
    "U32": (4, 12, "uint32"),
    "U16": (2, 4, "uint16"),
    "U8": (1, 2, "uint8"),
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
        raise LimitError(
            f"{entry}: header of {n} bytes exceeds the limit of {MAX_HEADER_BYTES}", entry=entry
        )
    if 8 + n > total_size:
        raise FormatError(f"{entry}: header length {n} runs past the end of the entry", entry=entry)
    if len(head) < 8 + n:
        raise ValueError("caller gave too few header bytes")
    raw = head[8 : 8 + n]
    if not raw.startswith(b"{"):
        raise FormatError(f"{entry}: header does not start with '{{'", entry=entry)
    doc = _json.loads(raw, what=f"{entry} header")
    if not isinstance(doc, dict):
        raise FormatError(f"{entry}: header is not a JSON object", entry=entry)
    meta = doc.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise FormatError(f"{entry}: __metadata__ must map strings to strings", entry=entry)
    if len(doc) > MAX_TENSORS:
        raise LimitError(f"{entry}: more than {MAX_TENSORS} tensors", entry=entry)
    data_len = total_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, info in doc.items():
        where = f"{entry}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where} must have exactly dtype, shape, data_offsets", entry=entry)
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise FormatError(f"{where} has unsupported dtype {dtype!r}", entry=entry)
        if (
            not isinstance(shape, list)
            or len(shape) > 64
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise FormatError(f"{where} has an invalid shape {shape!r}", entry=entry)
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise FormatError(f"{where} has invalid data_offsets {offs!r}", entry=entry)
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise FormatError(
                f"{where} data_offsets {offs} fall outside the data area of {data_len} bytes",
                entry=entry,
            )
        count = 0 if 0 in shape else 1
        for d in shape:
            count *= d
            if count > data_len:  # bounded early: no tensor may claim more than the file holds
                raise FormatError(f"{where} shape {shape} overflows the data area", entry=entry)
        if count * _DTYPES[dtype][0] != end - begin:
            raise FormatError(
                f"{where}: {dtype} x {shape} needs {count * _DTYPES[dtype][0]} "
                f"bytes but data_offsets span {end - begin}",
                entry=entry,
            )
        tensors[name] = TensorInfo(name, dtype, tuple(shape), begin, end)
    pos = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != pos:
            what = "overlaps another tensor" if t.begin < pos else "leaves a gap before it"
            raise FormatError(f"{entry}: tensor {t.name!r} {what}", entry=entry)
        pos = t.end
    if pos != data_len:
        raise FormatError(
            f"{entry}: {data_len - pos} trailing bytes after the last tensor", entry=entry
        )
    return Header(tensors, meta, 8 + n)


def read_header(reader: ZipReader, path: str, size: int) -> Header:
    """Parse the safetensors header of a STORED entry of ``size`` bytes, reading only it."""
    first = reader.read_range(path, 0, min(8, size))
    return parse_header(reader.read_range(path, 0, min(header_size(first), size)), size, entry=path)


def header_size(first8: bytes) -> int:
    """How many bytes (8 + N) the header of a safetensors file occupies.

    Fewer than 8 bytes give 8: :func:`parse_header` then names the short entry.
    """
    if len(first8) < 8:
        return 8
    n: int = struct.unpack_from("<Q", first8)[0]
    return 8 + min(n, MAX_HEADER_BYTES + 1)


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
            raise FormatError(
                f"initializer {init.name!r} still refers to external data; "
                "load the model with its external data first"
            )
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


def bind_external(
    model: onnx.ModelProto, header: Header, location: str = WEIGHTS_NAME, base: int = 0
) -> None:
    """Point each externalized initializer at its bytes: ``location`` at ``base`` + place."""
    from onnx import TensorProto

    for init in model.graph.initializer:
        t = header.tensors.get(init.name)
        if t is None or init.raw_data or init.external_data:
            continue
        init.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", location),
            ("offset", str(base + header.data_start + t.begin)),
            ("length", str(t.end - t.begin)),
        ):
            e = init.external_data.add()
            e.key, e.value = key, value


def serialize(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The safetensors bytes of ``tensors`` (via the safetensors library)."""
    from safetensors.numpy import save

    return save(dict(tensors), metadata=dict(metadata) if metadata else None)


def moves_onnx_type(data_type: int) -> bool:
    """Whether :func:`split_weights` moves initializers of this ONNX data type into
    ``weights.safetensors`` (numeric types numpy has; bfloat16 stays in the graph)."""
    st = _BY_ONNX.get(data_type)
    return st is not None and _DTYPES[st][2] is not None


def numpy_dtype(info: TensorInfo) -> Any:
    """The numpy dtype of a tensor (None for bfloat16, which numpy lacks)."""
    return _DTYPES[info.dtype][2]


# --------------------------------------------------------------------------- streaming export

# safetensors lays tensors out by dtype, widest alignment first (its Rust enum order,
# descending), then by name; the writer below reproduces that byte for byte.
_LAYOUT_RANK = {
    d: i
    for i, d in enumerate(
        ("BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64")
    )
}
_CHUNK = 8 << 20

IN_MEMORY = "model-bundle:in-memory"
"""The external-data ``location`` of an initializer whose bytes a converter holds in
memory (:attr:`bundle.export.Converted.buffers`) rather than in the proto: the graph
never carries them, at any size. Not a path, so a reader that meets it fails."""


@dataclass(frozen=True)
class TensorSource:
    """One tensor to write: where it goes in safetensors, and how to get its bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunks: Any
    """Callable returning an iterator over the tensor's little-endian bytes."""

    def array(self) -> np.ndarray:
        """The tensor as a numpy array (a copy made on demand)."""
        data = b"".join(bytes(c) for c in self.chunks())
        return np.frombuffer(
            data,
            dtype=np.dtype(_DTYPES[self.dtype][2]).newbyteorder("<"),
        ).reshape(self.shape)


class _LazyArrays(Mapping[str, np.ndarray]):
    """The weights by name, each materialized only while a caller looks at it."""

    def __init__(self, sources: Mapping[str, TensorSource]) -> None:
        self._sources = sources

    def __getitem__(self, name: str) -> np.ndarray:
        return self._sources[name].array()

    def __iter__(self) -> Any:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


@dataclass
class SplitWeights:
    """A model split for writing: the graph without weight data, and the weights' layout.

    ``model`` is a new ModelProto whose moved initializers are external references
    into ``weights.safetensors``; the caller's model is not changed, and the tensor
    bytes are read from it (or from its external data files) only while they are
    written, one tensor at a time -- no serialized copy of all weights is made.
    """

    model: onnx.ModelProto
    header_bytes: bytes
    header: Header
    sources: list[TensorSource]

    @property
    def size(self) -> int:
        """Bytes of the safetensors entry."""
        return len(self.header_bytes) + sum(s.nbytes for s in self.sources)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The tensors by name as numpy arrays, made on access (for training-state dedup)."""
        return _LazyArrays({s.name: s for s in self.sources})

    def chunks(self) -> Any:
        """The safetensors bytes, in bounded pieces; each tensor's length is checked."""
        return _stream(self.header_bytes, self.sources, "initializer")


def _stream(header_bytes: bytes, sources: list[TensorSource], what: str) -> Any:
    yield header_bytes
    for s in sources:
        written = 0
        for chunk in s.chunks():
            written += len(chunk)
            if written > s.nbytes:
                break
            yield chunk
        if written != s.nbytes:
            raise FormatError(
                f"{what} {s.name!r} holds {written} bytes, its dtype and shape need {s.nbytes}"
            )


@dataclass(frozen=True)
class TensorFile:
    """A safetensors file to be streamed: its header and its tensors in data order.

    Made by :func:`tensor_file`; the bytes are those ``safetensors`` would write for
    the same tensors, produced one bounded piece at a time by :meth:`chunks`.
    """

    header_bytes: bytes
    sources: list[TensorSource]

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return len(self.header_bytes) + sum(s.nbytes for s in self.sources)

    def chunks(self) -> Any:
        """The file's bytes, in bounded pieces; each tensor's length is checked."""
        return _stream(self.header_bytes, self.sources, "tensor")


def tensor_file(
    sources: list[TensorSource], metadata: Mapping[str, str] | None = None
) -> TensorFile:
    """Lay ``sources`` out as safetensors does (byte for byte), without reading them."""
    by_name = {s.name: s for s in sources}
    if len(by_name) != len(sources):
        raise FormatError("duplicate tensor names in a safetensors file")
    header_bytes, order = safetensors_layout(
        [(s.name, s.dtype, s.shape, s.nbytes) for s in sources], metadata
    )
    return TensorFile(header_bytes, [by_name[n] for n in order])


def buffer_chunks(get: Any) -> Any:
    """A ``TensorSource.chunks`` over a C-contiguous buffer, sliced without copying.

    ``get()`` returns the buffer (a numpy array, a tensor's ``numpy()`` view, any
    object with the buffer protocol) and is called when the tensor is written, so
    that a tensor that must first be copied (off a GPU) is copied only then, one at
    a time. The slices keep the hashing threads fed while a large tensor is written.
    """

    def gen() -> Any:
        view = memoryview(get())
        if not view.c_contiguous:
            raise FormatError("a tensor's buffer is not contiguous")
        view = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        for i in range(0, len(view), _CHUNK):
            yield view[i : i + _CHUNK]

    return gen


def safetensors_layout(
    tensors: list[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, list[str]]:
    """The 8 + N header bytes safetensors writes for (name, dtype, shape, nbytes) tensors,
    and the tensor names in data order."""
    order = sorted(tensors, key=lambda t: (-_LAYOUT_RANK[t[1]], t[0]))
    doc: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    pos = 0
    for name, dtype, shape, nbytes in order:
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    import json

    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, [t[0] for t in order]


def _model_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its main graph's initializers (added back by the caller)."""
    import onnx

    out = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(out, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(out.graph, fd, value)
    return out


def _copy_field(dst: Any, fd: Any, value: Any) -> None:
    repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
    if repeated:
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def _external_file(init: onnx.TensorProto) -> tuple[str, int, int | None]:
    """(absolute path, offset, length) of an initializer's resolved external data."""
    import os

    ext = {e.key: e.value for e in init.external_data}
    path = ext.get("location", "")
    if not os.path.isabs(path):
        raise FormatError(
            f"initializer {init.name!r} still refers to external data; "
            "load the model with its external data first"
        )
    try:
        offset = int(ext.get("offset", "0"))
        length = int(ext["length"]) if "length" in ext else None
    except ValueError as e:
        raise FormatError(f"initializer {init.name!r}: bad external data offset/length") from e
    return path, offset, length


def _file_chunks(path: str, offset: int, nbytes: int) -> Any:
    def gen() -> Any:
        with open(path, "rb") as f:
            f.seek(offset)
            left = nbytes
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise FormatError(f"external data file {path} ends before the tensor does")
                left -= len(chunk)
                yield chunk

    return gen


def _proto_chunks(init: onnx.TensorProto) -> Any:
    from onnx import numpy_helper

    def gen() -> Any:
        if init.HasField("raw_data"):
            yield init.raw_data  # ONNX raw_data is little-endian, as safetensors is
            return
        arr = numpy_helper.to_array(init)
        yield np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()

    return gen


def split_weights(model: onnx.ModelProto, buffers: Mapping[str, Any] | None = None) -> SplitWeights:
    """Plan ``weights.safetensors`` for ``model`` without copying any tensor data.

    Moves the same initializers as :func:`externalize` (numeric, non-empty, of a
    dtype numpy has) into safetensors, in safetensors' own layout, so the bytes are
    those ``safetensors.numpy.save`` would write. Initializers whose external
    data location is an absolute path (see ``bundle.export.onnx_model``) are read
    from that file while being written; those named in ``buffers`` (name -> a
    callable returning the tensor's little-endian bytes as a contiguous buffer, see
    :func:`buffer_chunks`) are written straight from that buffer, whatever their
    proto holds -- how the PyTorch exporter hands over parameters the graph never
    held (see :data:`IN_MEMORY`).
    """
    from onnx import TensorProto

    buffers = buffers or {}
    plan: dict[str, tuple[str, tuple[int, ...], int, Any]] = {}
    for init in model.graph.initializer:
        st = _BY_ONNX.get(init.data_type)
        if st is None or _DTYPES[st][2] is None:
            continue
        shape = tuple(int(d) for d in init.dims)
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if count == 0:
            continue
        if init.name in plan:
            raise FormatError(f"duplicate initializer name {init.name!r}")
        nbytes = count * _DTYPES[st][0]
        if init.name in buffers:
            chunks = buffer_chunks(buffers[init.name])
        elif init.data_location == TensorProto.EXTERNAL:
            path, offset, length = _external_file(init)
            if length is not None and length != nbytes:
                raise FormatError(
                    f"initializer {init.name!r}: external data length {length}, "
                    f"its dtype and shape need {nbytes}"
                )
            chunks = _file_chunks(path, offset, nbytes)
        else:
            chunks = _proto_chunks(init)
        plan[init.name] = (st, shape, nbytes, chunks)
    header_bytes, order = safetensors_layout([(n, p[0], p[1], p[2]) for n, p in plan.items()])
    header = parse_header(header_bytes, len(header_bytes) + sum(p[2] for p in plan.values()))
    skeleton = _model_skeleton(model)
    for init in model.graph.initializer:
        if init.name in plan:
            t = skeleton.graph.initializer.add()
            t.name, t.data_type = init.name, init.data_type
            t.dims.extend(init.dims)
        else:
            t = skeleton.graph.initializer.add()
            t.CopyFrom(init)
            if t.data_location == TensorProto.EXTERNAL:  # stays in the graph: inline its data
                _inline_from_file(t)
    bind_external(skeleton, header)
    sources = [TensorSource(n, plan[n][0], plan[n][1], plan[n][2], plan[n][3]) for n in order]
    return SplitWeights(skeleton, header_bytes, header, sources)


def inline_external_data(model: onnx.ModelProto, buffers: Mapping[str, Any] | None = None) -> None:
    """Read the data of every initializer that still points at a file (or, named in
    ``buffers``, at memory: see :func:`split_weights`) into the model.

    For the in-memory transforms (``precision``): the streaming writer itself never
    needs it. Only resolved (absolute) locations are read, see ``convert.onnx_model``.
    """
    from onnx import TensorProto

    buffers = buffers or {}
    for init in model.graph.initializer:
        if init.name in buffers:
            init.raw_data = memoryview(buffers[init.name]()).cast("B").tobytes()
            init.data_location = TensorProto.DEFAULT
            del init.external_data[:]
        elif init.data_location == TensorProto.EXTERNAL:
            _inline_from_file(init)


def _inline_from_file(init: onnx.TensorProto) -> None:
    """Read an initializer's resolved external data into its ``raw_data``."""
    from onnx import TensorProto

    path, offset, length = _external_file(init)
    with open(path, "rb") as f:
        f.seek(offset)
        init.raw_data = f.read() if length is None else f.read(length)
    init.data_location = TensorProto.DEFAULT
    del init.external_data[:]
