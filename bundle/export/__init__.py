"""Converters: one module per framework, each imported only when its model is saved.

Every converter has the same shape: ``convert(model, sample_input, **options)``
returns a :class:`Converted` -- the ONNX model with its weights still inline,
the tabular columns if any, what ``predict``/``predict_proba``/... map to, the
sample as ONNX feeds, and the original framework's own outputs on that sample
(the reference the parity check compares against).

Dispatch looks at the object's type and module name only, so deciding which
converter to use never imports a framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError
from ..format.manifest import Column, Method
from .options import AnyOptions, options_for

if TYPE_CHECKING:
    import onnx

__all__ = [
    "Converted",
    "axis_bounds",
    "axis_names",
    "check_dynamic_axes",
    "convert",
    "converter_name",
    "named_outputs",
]


@dataclass
class Converted:
    """What a converter hands the writer."""

    model: onnx.ModelProto
    task: str
    framework: str
    framework_version: str
    converter: str
    converter_version: str
    feeds: Mapping[str, np.ndarray] | None
    """The sample input as ONNX feeds (None: no sample, no parity measured)."""
    reference: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Original framework's outputs on the sample, by graph output name."""
    methods: Mapping[str, Method] = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    notes: tuple[str, ...] = ()
    training: Any = None
    """Training state to store beside the graph (:class:`bundle.training.torch.TrainingState`)."""
    extra_checks: tuple[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], ...] = ()
    """More (feeds, reference) pairs the graph must reproduce, beyond the sample itself
    (the PyTorch exporter's widened copy of a batch-1 sample, which it traced)."""
    buffers: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    """Initializer data the converter holds in memory instead of in ``model``: name -> a
    callable returning the tensor's little-endian bytes as a contiguous buffer. Those
    initializers carry only dtype, dims and the external location
    :data:`bundle.format.weights.IN_MEMORY`; the writer streams their bytes from the
    buffer into ``weights.safetensors`` (the PyTorch exporter's parameters: no proto,
    serialized copy or numpy round trip of them is ever made, at any size)."""


_CONVERTERS: dict[str, str] = {
    "sklearn": "sklearn",
    "imblearn": "sklearn",
    "xgboost": "sklearn",  # their scikit-learn wrappers, through onnxmltools' converters
    "lightgbm": "sklearn",
    "onnx": "onnx_model",
    "torch": "torch",
    "keras": "tensorflow",
    "tensorflow": "tensorflow",
}


def converter_name(model: Any) -> str:
    """Which converter exports ``model`` ("sklearn", "torch", "tensorflow", "onnx_model"),
    decided by its type's module names alone (no framework is imported)."""
    import os

    if isinstance(model, (str, os.PathLike)):
        return "tensorflow" if os.path.isdir(model) else "onnx_model"  # a SavedModel
    for cls in type(model).__mro__:
        name = _CONVERTERS.get((cls.__module__ or "").split(".")[0], "")
        if name:
            return name
    raise ConversionError(
        f"don't know how to export a {type(model).__module__}.{type(model).__qualname__}: "
        "model-bundle exports scikit-learn estimators and pipelines, PyTorch "
        "nn.Modules, Keras models, tf.Modules, SavedModel directories, "
        "onnx.ModelProto objects and .onnx files"
    )


def convert(
    model: Any,
    sample_input: Any,
    *,
    target_opset: int | None = None,
    options: AnyOptions | None = None,
) -> Converted:
    """Pick the converter for ``model`` by its type and run it with the framework's
    ``options`` (:mod:`bundle.export.options`; None: the defaults)."""
    name = converter_name(model)
    typed = options_for(name, options, {})
    module = importlib.import_module(f".{name}", __name__)
    fn: Callable[..., Converted] = module.convert
    if typed is None:
        return fn(model, sample_input, target_opset=target_opset)
    return fn(model, sample_input, target_opset=target_opset, options=typed)


def named_outputs(
    out: Any,
    label: str,
    is_tensor: Callable[[Any], bool],
) -> tuple[list[str], list[Any]]:
    """Name what a model returns: one tensor is "output", a sequence "output_<i>", a dict
    its keys (non-empty strings). Nested structures are refused, naming the output."""
    if is_tensor(out):
        return ["output"], [out]
    if isinstance(out, Mapping):
        names, values = [], []
        for k, v in out.items():
            if not isinstance(k, str) or not k:
                raise ConversionError(
                    f"{label} returns a dict with key {k!r}; output names must be non-empty strings"
                )
            names.append(k)
            values.append(v)
    elif isinstance(out, (tuple, list)):
        names = [f"output_{i}" for i in range(len(out))]
        values = list(out)
    else:
        raise ConversionError(
            f"{label} returns a {type(out).__name__}; return a tensor, a "
            "tuple of tensors or a dict of tensors"
        )
    if not values:
        raise ConversionError(f"{label} returns no outputs")
    for n, v in zip(names, values, strict=True):
        if not is_tensor(v):
            raise ConversionError(
                f"{label}: output {n!r} is a {type(v).__name__}, not a "
                "tensor; nested outputs are not supported: return a flat "
                "tuple or dict"
            )
    return names, values


def check_dynamic_axes(dynamic_axes: Mapping[str, Any] | None, names: list[str]) -> dict[str, Any]:
    """The user's ``dynamic_axes`` as a dict, refusing names that are not inputs."""
    given = dict(dynamic_axes or {})
    unknown = set(given) - set(names)
    if unknown:
        raise ConversionError(
            f"dynamic_axes names unknown input(s) {sorted(unknown)}; the inputs are {names}"
        )
    return given


def axis_names(name: str, spec: Any, ndim: int) -> dict[int, str]:
    """One input's dynamic axes {axis: name}: a list of axes gets generated names,
    negative axes count from the end; each axis must exist and be named."""
    if not isinstance(spec, Mapping):
        spec = {int(a): f"{name}_dim{int(a)}" for a in spec}
    out: dict[int, str] = {}
    for axis, dim in spec.items():
        if not isinstance(axis, int) or isinstance(axis, bool) or not -ndim <= axis < ndim:
            raise ConversionError(
                f"dynamic_axes[{name!r}]: axis {axis!r} does not exist in a {ndim}-D input"
            )
        if isinstance(dim, tuple):
            _bounds(name, axis, dim)
            dim = dim[0]
        if not isinstance(dim, str) or not dim:
            raise ConversionError(
                f"dynamic_axes[{name!r}][{axis}]: give the axis a name "
                "(a non-empty string), or a (name, min, max) tuple"
            )
        out[axis % ndim] = dim
    return out


def _bounds(name: str, axis: Any, dim: tuple[Any, ...]) -> tuple[int | None, int | None]:
    ok = (
        len(dim) == 3
        and isinstance(dim[0], str)
        and dim[0]
        and all(
            b is None or (isinstance(b, int) and not isinstance(b, bool) and b >= 0)
            for b in dim[1:]
        )
    )
    if not ok or (dim[1] is not None and dim[2] is not None and dim[1] > dim[2]):
        raise ConversionError(
            f"dynamic_axes[{name!r}][{axis}]: a bounded axis is "
            f"(name, min, max) with min <= max (None: unbounded), not {dim!r}"
        )
    return dim[1], dim[2]


def axis_bounds(dynamic_axes: Mapping[str, Any] | None) -> dict[str, tuple[int | None, int | None]]:
    """Bounds the caller gave for named axes: ``{input: {axis: ("seq", 1, 512)}}``
    bounds the axis named "seq" to 1..512 (the exporter's range for it)."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for name, spec in (dynamic_axes or {}).items():
        if isinstance(spec, Mapping):
            for axis, dim in spec.items():
                if isinstance(dim, tuple):
                    out[dim[0]] = _bounds(name, axis, dim)
    return out
