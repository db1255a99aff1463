"""The training-state codec shared by every framework: entry names, limits, the
structure checks verify/load run without any framework, and reading the verified
entries back. The format of the two entries is described in
:mod:`bundle.training.torch` (PyTorch) and :mod:`bundle.training.keras`.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, InputError, LimitError
from ..format import canonical_json as _json

if TYPE_CHECKING:
    from ..format.manifest import Manifest
    from ..trust.verify import VerifiedBundle


__all__ = [
    "DTYPE_OF_SAFETENSORS",
    "FORMAT",
    "MAX_DEPTH",
    "SAFETENSORS_DTYPE",
    "STATE_JSON",
    "STATE_TENSORS",
    "VERSION",
    "check_entries",
    "few",
    "object_with",
    "read_state",
    "read_verified",
    "same_tensor",
    "strings",
]

STATE_JSON = "training/state.json"


STATE_TENSORS = "training/state.safetensors"


FORMAT = "model-bundle/training-state"


VERSION = 1


MAX_STATE_JSON_BYTES = 256 << 20


MAX_STATE_TENSOR_BYTES = 1 << 40


MAX_DEPTH = 64

# torch dtype name <-> safetensors dtype


SAFETENSORS_DTYPE = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}


DTYPE_OF_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPE.items()}


def same_tensor(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical arrays (NaNs included), same dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(
        np.array_equal(
            np.ascontiguousarray(a).reshape(-1).view(np.uint8),
            np.ascontiguousarray(b).reshape(-1).view(np.uint8),
        )
    )


def check_entries(manifest: Manifest, verified: Mapping[str, bytes]) -> None:
    """Structure of a bundle's training state, for verify/load (no framework needed).

    Exactly the two entries, ``state.json`` canonical JSON and ``state.safetensors``
    a well-formed safetensors header, both parsed from ``verified``: the bytes
    verification hashed, by path (at least the header of ``state.safetensors``).
    :func:`restore_verified` checks the rest.
    """
    from ..format.weights import parse_header

    files = {f.path: f for f in manifest.files if f.role == "training_state"}
    if not files:
        return
    if set(files) != {STATE_JSON, STATE_TENSORS}:
        raise FormatError(
            f"training state must be exactly {STATE_JSON} and {STATE_TENSORS}; "
            f"found {sorted(files)}",
            entry=sorted(files)[0],
        )
    if files[STATE_JSON].size > MAX_STATE_JSON_BYTES:
        raise LimitError(
            f"{STATE_JSON} is {files[STATE_JSON].size} bytes; the limit is {MAX_STATE_JSON_BYTES}",
            entry=STATE_JSON,
        )
    _json.loads_canonical(verified[STATE_JSON], what=STATE_JSON)
    parse_header(verified[STATE_TENSORS], files[STATE_TENSORS].size, entry=STATE_TENSORS)


def read_verified(vb: VerifiedBundle) -> tuple[Any, mmap.mmap]:
    """The two training entries as verification hashed them (never read again): the
    caller verified with ``in_memory=(STATE_TENSORS,)``."""
    files = {f.path: f for f in vb.report.manifest.files if f.role == "training_state"}
    if not files:
        raise InputError(
            f"{vb.report.path} holds no training state (it was saved without "
            "one, e.g. with training_state=False, or from a model that has "
            "none: scikit-learn, ONNX, a tf.Module or SavedModel)"
        )
    if set(files) != {STATE_JSON, STATE_TENSORS}:
        raise FormatError(
            f"training state must be exactly {STATE_JSON} and {STATE_TENSORS}; "
            f"found {sorted(files)}"
        )
    f = files[STATE_TENSORS]
    if f.size > MAX_STATE_TENSOR_BYTES:
        raise LimitError(
            f"{STATE_TENSORS} is {f.size} bytes; the limit is {MAX_STATE_TENSOR_BYTES}",
            entry=STATE_TENSORS,
        )
    data = vb.whole.get(STATE_TENSORS)
    if data is None:
        raise ValueError(f"verify with in_memory=({STATE_TENSORS!r},) to restore")
    return _json.loads_canonical(vb.inflated[STATE_JSON], what=STATE_JSON), data


def read_state(vb: VerifiedBundle) -> tuple[dict[str, Any], mmap.mmap]:
    """The verified state document (top level and format checked) and tensor bytes."""
    doc, tensor_bytes = read_verified(vb)
    doc = object_with(
        doc, "$", {"format", "version", "framework", "model", "optimizer", "scheduler", "rng"}
    )
    if doc["format"] != FORMAT or doc["version"] != VERSION:
        raise FormatError(
            f"{STATE_JSON}: format {doc['format']!r} version {doc['version']!r} "
            f"is not {FORMAT!r} version {VERSION}",
            entry=STATE_JSON,
        )
    return doc, tensor_bytes


def object_with(node: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(node, dict) or set(node) != keys:
        raise FormatError(
            f"{STATE_JSON}: {where} must be an object with exactly {sorted(keys)}", entry=STATE_JSON
        )
    return node


def strings(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise FormatError(f"{STATE_JSON}: {where} must be a list of strings", entry=STATE_JSON)
    return v


def few(names: list[str], n: int = 10) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")
