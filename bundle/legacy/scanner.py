"""Scan a legacy model file without running it: what it imports and calls, and a verdict.

Formats: pickle streams (protocols 0-5) and joblib files (plain or compressed,
with their interleaved array data and nested object-array pickles), PyTorch zip
checkpoints (``data.pkl`` and every other pickle inside; TorchScript archives are
named as such) and legacy ``torch.save`` files, ``.npy``/``.npz`` (object arrays
are pickles), ``.keras`` (``config.json``: every class, Lambda layers, custom
objects), Keras ``.h5`` (``model_config``, read with h5py), TensorFlow SavedModels
(``saved_model.pb``: ops that call back into Python) and checkpoints.

Nothing here unpickles, imports a name from the file, or deserializes a Keras or
TensorFlow object: pickles are walked by :mod:`bundle.legacy.opcodes`, JSON is
parsed as data, protobufs are parsed as messages.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import lzma
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import FormatError
from .globals import danger, is_tensor_global
from .opcodes import PickleFacts, UnscannableError, walk, walk_bytes

__all__ = ["VERDICTS", "Finding", "ScanReport", "decompress_joblib", "scan", "scan_bytes"]

VERDICTS = ("tensors-only", "no-code", "needs-approval", "dangerous", "unscannable")
"""From best to worst. ``tensors-only``: plain tensors/arrays and containers, loadable
with ``torch.load`` and ``weights_only=True``. ``no-code``: a Keras/TensorFlow model made of the
framework's own classes and ops only. ``needs-approval``: imports classes that run code
when built (a scikit-learn pipeline, a pickled ``nn.Module``, Keras custom objects): a
user must approve exactly these. ``dangerous``: needs something that is a known way to
run code, never approvable. ``unscannable``: something could not be resolved statically."""

MAX_PICKLE_BYTES = 4 << 30
"""A pickle entry (or a decompressed joblib file) larger than this is refused."""
MAX_JSON_BYTES = 64 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Finding:
    """One thing the file would import or call when loaded the usual way."""

    target: str
    """``module.name`` for a pickle global or a Keras class; an op name for TensorFlow."""
    kind: str
    """``global`` (pickle), ``keras-class``, ``keras-lambda``, ``tf-op``."""
    called: bool
    """Called while loading (REDUCE, NEWOBJ, INST, OBJ), not only imported."""
    tensor: bool
    """Tensor/array plumbing (see :func:`bundle.legacy.globals.is_tensor_global`)."""
    danger: str | None
    """Why this is a known way to run code (never approvable), else None."""
    where: str
    """The entry of the file it is in (``data.pkl``, ``config.json``...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "target": self.target,
            "kind": self.kind,
            "called": self.called,
            "tensor": self.tensor,
            "danger": self.danger,
            "where": self.where,
        }


@dataclass(frozen=True)
class ScanReport:
    """What a legacy model file needs in order to load, found without running it."""

    path: str
    format: str
    sha256: str
    size: int
    findings: tuple[Finding, ...]
    problems: tuple[str, ...]
    """What could not be resolved statically (each makes the verdict unscannable)."""
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS`."""
        if self.problems:
            return "unscannable"
        if any(f.danger for f in self.findings):
            return "dangerous"
        if self.needs_approval:
            return "needs-approval"
        if self.format in ("keras", "h5", "saved-model") and self.details.get("model"):
            return "no-code"
        return "tensors-only"

    @property
    def tensors_only(self) -> bool:
        """Only tensors, arrays and plain containers: nothing to approve, nothing to run."""
        return self.verdict == "tensors-only"

    @property
    def globals(self) -> tuple[str, ...]:
        """Every pickle global or custom class the file needs, sorted: what ``approve``
        must name for an object pickle."""
        return tuple(
            sorted({f.target for f in self.findings if f.kind in ("global", "keras-class")})
        )

    @property
    def needs_approval(self) -> tuple[str, ...]:
        """The targets that are not tensor plumbing nor the framework's own classes."""
        return tuple(sorted({f.target for f in self.findings if not f.tensor}))

    @property
    def dangerous(self) -> tuple[str, ...]:
        """The targets that are known ways to run code."""
        return tuple(sorted({f.target for f in self.findings if f.danger}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: what ``model-bundle scan --json`` prints and
        ``--approve-from`` reads (its ``globals``)."""
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "size": self.size,
            "verdict": self.verdict,
            "tensors_only": self.tensors_only,
            "globals": list(self.globals),
            "needs_approval": list(self.needs_approval),
            "dangerous": list(self.dangerous),
            "findings": [f.to_dict() for f in self.findings],
            "problems": list(self.problems),
            "notes": list(self.notes),
            "details": self.details,
        }


class _Collector:
    def __init__(self) -> None:
        self.findings: dict[tuple[str, str, str], Finding] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.details: dict[str, Any] = {}

    def add(
        self,
        target: str,
        kind: str,
        where: str,
        *,
        called: bool = False,
        tensor: bool | None = None,
        why: str | None = None,
    ) -> None:
        key = (target, kind, where)
        old = self.findings.get(key)
        self.findings[key] = Finding(
            target,
            kind,
            called or (old.called if old else False),
            is_tensor_global(target) if tensor is None else tensor,
            why if why is not None else (danger(target) if kind == "global" else None),
            where,
        )

    def pickle(self, facts: PickleFacts, where: str) -> None:
        for target in facts.imports:
            self.add(target, "global", where, called=target in facts.calls)
        for what in sorted(facts.indirect_calls):
            self.notes.append(f"{where}: calls {what}")
        self.problems += [f"{where}: {p}" for p in facts.problems]

    def report(self, path: str, fmt: str, sha: str, size: int) -> ScanReport:
        findings = tuple(sorted(self.findings.values(), key=lambda f: (f.where, f.target)))
        return ScanReport(
            path, fmt, sha, size, findings, tuple(self.problems), tuple(self.notes), self.details
        )


# ------------------------------------------------------------------------- entry points


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """Scan a file (or SavedModel directory, or checkpoint prefix) without running it.

    Raises :class:`bundle.FormatError` when the path cannot be read at all; a file
    that can be read but not resolved statically gets the verdict "unscannable".
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        return _scan_directory(p)
    if not os.path.exists(p) and os.path.exists(p + ".index"):
        return _scan_tf_checkpoint(p)
    try:
        with open(p, "rb") as f:
            sha, size = _hash(f)
            f.seek(0)
            return _scan_stream(f, p, sha, size)
    except OSError as e:
        raise FormatError(f"cannot read {p}: {e.strerror or e}", entry=p) from e


def scan_bytes(data: bytes, name: str = "<bytes>") -> ScanReport:
    """Scan a file's content already in memory (migration scans the very bytes it
    then hands to the sandbox)."""
    return _scan_stream(io.BytesIO(data), name, hashlib.sha256(data).hexdigest(), len(data))


def _hash(f: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _scan_stream(f: IO[bytes], path: str, sha: str, size: int) -> ScanReport:
    head = f.read(16)
    f.seek(0)
    c = _Collector()
    fmt = "unknown"
    try:
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            fmt = _scan_zip(f, c)
        elif head.startswith(b"\x93NUMPY"):
            fmt = "npy"
            _scan_npy(f, c, "")
        elif head.startswith(b"\x89HDF\r\n\x1a\n"):
            fmt = "h5"
            _scan_h5(f, c)
        elif _compression(head) is not None:
            fmt = "joblib"
            kind = _compression(head) or ""
            data = _decompress(f, kind)
            c.details["compression"] = kind
            _scan_pickles(io.BytesIO(data), c, "pickle", len(data))
        elif head[:1] == b"\x80" or head[:1] in b"(]}cl":
            fmt = "pickle"
            fmt = _scan_pickles(f, c, "pickle", size)
        else:
            c.problems.append(
                "not a format this scanner knows (pickle, joblib, torch, npy, "
                "npz, keras, h5, SavedModel, TensorFlow checkpoint)"
            )
    except UnscannableError as e:
        c.problems.append(str(e))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        c.problems.append(f"cannot read the file as {fmt}: {e}")
    return c.report(path, fmt, sha, size)


# ------------------------------------------------------------------------------ pickles

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


def _scan_pickles(f: IO[bytes], c: _Collector, where: str, size: int) -> str:
    """One pickle, or a legacy torch.save file (magic, protocol, sys info, data, storage
    keys; then raw storage bytes)."""
    start = f.tell()
    magic = _first_int(io.BytesIO(f.read(64)))
    f.seek(start)
    if magic == _TORCH_MAGIC:
        facts = PickleFacts()
        for _ in range(5):
            walk(f, facts)
        c.pickle(facts, where)
        c.details["raw_storage_bytes"] = size - f.tell()
        return "torch-legacy"
    facts = PickleFacts()
    walk(f, facts)
    c.pickle(facts, where)
    if facts.raw_bytes:
        c.details["joblib_array_bytes"] = facts.raw_bytes
    c.details["protocol"] = facts.protocol
    trailing = size - f.tell()
    if trailing:
        c.problems.append(f"{trailing} bytes after the pickle's STOP that a loader might read")
    is_joblib = any(t.startswith("joblib.") for t in facts.imports)
    return "joblib" if is_joblib else "pickle"


def _first_int(stream: IO[bytes]) -> int | None:
    """The integer a pickle starts with, if it starts with one (legacy torch's magic)."""
    import pickletools

    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name in ("LONG1", "LONG4", "INT", "BININT", "LONG"):
                return int(arg or 0)
            if op.name not in ("PROTO", "FRAME"):
                return None
    except (ValueError, EOFError):
        return None
    return None


def _compression(head: bytes) -> str | None:
    """joblib's compressors, by their magic bytes (``joblib.compressor``)."""
    if head.startswith(b"\x78"):
        return "zlib"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith((b"\xfd7zXZ", b"\x5d\x00\x00")):
        return "lzma"
    return None


def decompress_joblib(data: bytes) -> bytes:
    """A joblib file's pickle stream: decompressed when the file is compressed."""
    kind = _compression(data[:16])
    return data if kind is None else _decompress(io.BytesIO(data), kind)


def _decompress(f: IO[bytes], kind: str) -> bytes:
    """Decompress a joblib file, refusing more than :data:`MAX_PICKLE_BYTES`."""
    out = bytearray()
    if kind in ("zlib", "gzip"):
        z = zlib.decompressobj(zlib.MAX_WBITS | (16 if kind == "gzip" else 0))
        while chunk := f.read(_CHUNK):
            out += z.decompress(chunk, MAX_PICKLE_BYTES + 1 - len(out))
            if z.unconsumed_tail or len(out) > MAX_PICKLE_BYTES:
                raise UnscannableError(f"decompresses to more than {MAX_PICKLE_BYTES} bytes")
            if z.eof:
                break
        return bytes(out)
    d: Any = bz2.BZ2Decompressor() if kind == "bz2" else lzma.LZMADecompressor()
    while not d.eof:
        chunk = f.read(_CHUNK) if d.needs_input else b""
        if not chunk and d.needs_input:
            raise UnscannableError(f"the {kind} stream is truncated")
        out += d.decompress(chunk, MAX_PICKLE_BYTES + 1 - len(out))
        if len(out) > MAX_PICKLE_BYTES:
            raise UnscannableError(f"decompresses to more than {MAX_PICKLE_BYTES} bytes")
    return bytes(out)


# ------------------------------------------------------------------------- zip formats


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise UnscannableError(f"{name}: {info.file_size} bytes, more than {limit}")
    with zf.open(name) as m:
        data = m.read(limit + 1)
    if len(data) > limit:
        raise UnscannableError(f"{name}: decompresses past {limit} bytes")
    return data


def _scan_zip(f: IO[bytes], c: _Collector) -> str:
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            _scan_keras_config(_read_member(zf, "config.json", MAX_JSON_BYTES), c, "config.json")
            if "metadata.json" in names:
                meta = _json(_read_member(zf, "metadata.json", MAX_JSON_BYTES), "metadata.json")
                if isinstance(meta, dict):
                    c.details["keras_version"] = str(meta.get("keras_version", ""))
            return "keras"
        pkls = [n for n in names if n.endswith(".pkl")]
        if pkls:
            torchscript = any("/code/" in n for n in names)
            c.details["storages"] = sum(1 for n in names if "/data/" in n and not n.endswith("/"))
            for name in pkls:
                facts, end = walk_bytes(_read_member(zf, name, MAX_PICKLE_BYTES))
                c.pickle(facts, name)
                size = zf.getinfo(name).file_size
                if end != size:
                    c.problems.append(f"{name}: {size - end} bytes after the pickle's STOP")
            if torchscript:
                c.add(
                    "torch.jit (TorchScript code)",
                    "torchscript",
                    "code/",
                    why="TorchScript code runs when the archive is loaded; export it "
                    "from the original module instead",
                )
                return "torchscript"
            return "torch-zip"
        if names and all(n.endswith(".npy") for n in names):
            for name in names:
                _scan_npy(io.BytesIO(_read_member(zf, name, MAX_PICKLE_BYTES)), c, name)
            return "npz"
        c.problems.append("a zip file that is not a torch checkpoint, .keras or .npz")
        return "zip"


def _scan_npy(f: IO[bytes], c: _Collector, where: str) -> None:
    import numpy as np

    version = np.lib.format.read_magic(f)
    # numpy's header reader parses the header dict with ast.literal_eval: data, not code.
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise UnscannableError(f"{where or 'array'}: .npy format version {version}")
    c.details.setdefault("arrays", {})[where or "array"] = {
        "shape": list(shape),
        "dtype": str(dtype),
    }
    if dtype.hasobject:
        c.pickle(walk(f), f"{where or 'array'} (object array pickle)")


# ------------------------------------------------------------------------------- Keras

_KERAS_PREFIXES = ("keras", "keras.", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UnscannableError(f"{where} is not JSON: {e}") from e


def _scan_keras_config(data: bytes, c: _Collector, where: str) -> None:
    config = _json(data, where)
    c.details["model"] = True
    classes: set[str] = set()

    def visit(node: Any, depth: int) -> None:
        if depth > 200:
            raise UnscannableError(f"{where} nests more than 200 levels")
        if isinstance(node, list):
            for v in node:
                visit(v, depth + 1)
            return
        if not isinstance(node, dict):
            return
        cls = node.get("class_name")
        if isinstance(cls, str):
            module = node.get("module")
            module = module if isinstance(module, str) else ""
            registered = node.get("registered_name")
            inner = node.get("config")
            if cls in ("Lambda", "__lambda__") or (
                isinstance(inner, dict) and inner.get("function_type") == "lambda"
            ):
                c.add(
                    f"{module or 'keras'}.{cls}",
                    "keras-lambda",
                    where,
                    tensor=False,
                    why="a Lambda layer: Python bytecode in the config, run when loaded "
                    "(Keras safe mode refuses it)",
                )
            elif module and not module.startswith(_KERAS_PREFIXES):
                name = cls
                if cls == "function" and isinstance(inner, str):
                    name = inner
                c.add(
                    f"{module}.{name}",
                    "keras-class",
                    where,
                    tensor=False,
                    why=None if not danger(f"{module}.{name}") else danger(f"{module}.{name}"),
                )
            elif isinstance(registered, str) and ">" in registered:
                c.add(registered.replace(">", "."), "keras-class", where, tensor=False)
            else:
                classes.add(cls)
        for v in node.values():
            visit(v, depth + 1)

    visit(config, 0)
    c.details["keras_classes"] = sorted(classes)


def _scan_h5(f: IO[bytes], c: _Collector) -> None:
    try:
        import h5py
    except ImportError:
        c.problems.append("an HDF5 file: install h5py to read its model_config")
        return
    with h5py.File(f, "r") as h5:
        config = h5.attrs.get("model_config")
        if "keras_version" in h5.attrs:
            c.details["keras_version"] = str(h5.attrs["keras_version"])
        if config is None:
            c.notes.append("no model_config: an HDF5 file of weights only")
            return
        if isinstance(config, bytes):
            config = config.decode("utf-8", "replace")
        _scan_keras_config(str(config).encode("utf-8"), c, "model_config")


# -------------------------------------------------------------------------- TensorFlow

PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
"""TensorFlow ops that call a Python function registered in the running process."""


def _scan_directory(path: str) -> ScanReport:
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        raise FormatError(f"{path} is a directory without saved_model.pb", entry=path)
    with open(pb, "rb") as fh:
        data = fh.read(MAX_PICKLE_BYTES + 1)
    c = _Collector()
    sha = hashlib.sha256(data).hexdigest()
    try:
        _scan_saved_model(data, c)
    except UnscannableError as e:
        c.problems.append(str(e))
    for name in ("keras_metadata.pb",):
        if os.path.exists(os.path.join(path, name)):
            c.notes.append(
                f"{name}: Keras layers are restored from it only by tf_keras "
                "loaders; migration uses the TensorFlow graph"
            )
    c.details["variables"] = os.path.exists(os.path.join(path, "variables", "variables.index"))
    return c.report(path, "saved-model", sha, len(data))


def _scan_saved_model(data: bytes, c: _Collector) -> None:
    if len(data) > MAX_PICKLE_BYTES:
        raise UnscannableError("saved_model.pb is too large")
    try:
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError:
        raise UnscannableError("a SavedModel: install tensorflow to parse saved_model.pb") from None
    from google.protobuf.message import DecodeError

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(data)
    except DecodeError as e:
        raise UnscannableError(f"saved_model.pb does not parse: {e}") from e
    ops: set[str] = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for fn in mg.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    c.details["model"] = True
    c.details["ops"] = sorted(ops)
    for op in sorted(ops & PY_FUNC_OPS):
        c.add(
            op,
            "tf-op",
            "saved_model.pb",
            called=True,
            tensor=False,
            why="calls a Python function that is not in the file (tf.py_function)",
        )


def _scan_tf_checkpoint(prefix: str) -> ScanReport:
    c = _Collector()
    with open(prefix + ".index", "rb") as fh:
        sha, size = _hash(fh)
    try:
        import tensorflow as tf

        variables = tf.train.list_variables(prefix)
        c.details["variables"] = len(variables)
    except ImportError:
        c.notes.append("install tensorflow to list the checkpoint's variables")
    except Exception as e:
        c.problems.append(f"the checkpoint index does not read: {str(e).splitlines()[0]}")
    c.notes.append(
        "a TensorFlow checkpoint holds variables only; restoring it needs the "
        "model's code (pass model=)"
    )
    return c.report(prefix, "tf-checkpoint", sha, size)
