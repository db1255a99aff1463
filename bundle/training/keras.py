"""Keras training state: every variable of a model and of its optimizer, without pickle.

The same two entries as PyTorch's (:mod:`bundle.training.torch`), role
``training_state``: ``training/state.safetensors`` holds the tensors the
weights entry does not already hold exactly, ``training/state.json`` says where
each variable is::

    {"format": "model-bundle/training-state", "version": 1,
     "framework": {"name": "keras", "version": "3.15.1"},
     "model": {"class": "keras.src.models.sequential.Sequential", "tensors": [
         {"name": "sequential/dense/kernel", "dtype": "float32", "shape": [6, 16],
          "source": "weights", "key": "sequential/dense/kernel"}, ...]},
     "optimizer": null | {"class": "keras.src.optimizers.adam.Adam", "tensors": [
         {"name": "adam/iteration", "dtype": "int64", "shape": [],
          "source": "training", "key": "optimizer/adam/iteration"}, ...]},
     "scheduler": null, "rng": null}

``model.tensors`` is ``model.variables`` in order: trainable and non-trainable
weights and the seed-generator states of Dropout and other random layers, so
training resumes on the same random stream. ``optimizer.tensors`` is
``optimizer.variables`` in order: the iteration counter, the learning rate (a
variable unless it is a schedule, which lives in the optimizer's constructor
arguments) and the slots (Adam's momentums and velocities...). A variable whose
exact bytes are a tensor of ``weights.safetensors`` is a reference to it
(``"source": "weights"``) -- normally every variable the graph reads (see
:mod:`bundle.export.tensorflow`). The others are stored here as they are in
Keras: variables inference never reads (seed states), recurrent layers' weights
that tf2onnx reorders into its fused LSTM/GRU ops, and -- after a frozen-trace
fallback -- whatever tf2onnx folded or transposed.

Restoring assigns by position, not by name: variable paths carry instance names
(``sequential_1/dense_3/kernel`` in one process is ``sequential/dense/kernel``
in another), while the order of ``model.variables`` is the model's structure.
Each position must agree in shape, dtype and the variable's own name (the last
path segment: ``kernel``, ``bias``, ``moving_mean``...); for the optimizer, in
shape, dtype and slot kind (``momentum``, ``velocity``). Every disagreement is
listed together and nothing is assigned unless all fit.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError, FormatError, InputError
from ..format import canonical_json as _json
from .codec import (
    FORMAT,
    STATE_JSON,
    STATE_TENSORS,
    VERSION,
    few,
    object_with,
    read_state,
    same_tensor,
)

if TYPE_CHECKING:
    from ..trust.verify import VerifiedBundle, VerifyReport

__all__ = ["KerasTrainingState", "capture", "restore_verified"]

_DTYPES = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _snapshot(variables: Sequence[Any], what: str) -> dict[str, np.ndarray]:
    """path -> a C-contiguous copy of each variable, in order (paths made unique)."""
    out: dict[str, np.ndarray] = {}
    for v in variables:
        path = str(v.path)
        name, n = path, 1
        while name in out:
            n += 1
            name = f"{path}#{n}"
        arr = np.array(v.numpy(), copy=True, order="C")
        if arr.dtype.name not in _DTYPES:
            raise ConversionError(
                f"{what} variable {path!r} is {arr.dtype}, which the training "
                f"state cannot hold (supported: {', '.join(_DTYPES)})"
            )
        out[name] = arr
    return out


@dataclass
class KerasTrainingState:
    """Copies of a Keras model's (and optimizer's) variables, taken at save."""

    model_class: str
    framework_version: str
    model: dict[str, np.ndarray]
    optimizer_class: str | None = None
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)

    def entries(self, weights: Mapping[str, np.ndarray]) -> list[tuple[str, bytes]]:
        """The two entries, given the final ``weights.safetensors`` tensors by name.

        A variable bit-identical to a weights tensor refers to it (by its own
        name when it has one); every other is stored once here.
        """
        from ..format.weights import serialize

        by_layout: dict[tuple[str, tuple[int, ...]], list[str]] = {}
        for name, w in weights.items():
            by_layout.setdefault((w.dtype.str, w.shape), []).append(name)
        tensors: dict[str, np.ndarray] = {}
        stored: dict[tuple[str, tuple[int, ...]], list[str]] = {}
        listing = []
        for name, arr in self.model.items():
            layout = (arr.dtype.str, arr.shape)
            source = "weights"
            key = (
                name
                if name in weights and same_tensor(weights[name], arr)
                else next(
                    (o for o in by_layout.get(layout, []) if same_tensor(weights[o], arr)), None
                )
            )
            if key is None:
                source = "training"
                key = next(
                    (o for o in stored.get(layout, []) if same_tensor(tensors[o], arr)), None
                )
            if key is None:
                key = f"model/{name}"
                tensors[key] = arr
                stored.setdefault(layout, []).append(key)
            listing.append(_entry(name, arr, source, key))
        opt_doc = None
        if self.optimizer_class is not None:
            opt_list = []
            for name, arr in self.optimizer.items():
                key = f"optimizer/{name}"
                tensors[key] = arr
                opt_list.append(_entry(name, arr, "training", key))
            opt_doc = {"class": self.optimizer_class, "tensors": opt_list}
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "framework": {"name": "keras", "version": self.framework_version},
            "model": {"class": self.model_class, "tensors": listing},
            "optimizer": opt_doc,
            "scheduler": None,
            "rng": None,
        }
        return [(STATE_JSON, _json.dumps(doc)), (STATE_TENSORS, serialize(tensors))]


def _entry(name: str, arr: np.ndarray, source: str, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "source": source,
        "key": key,
    }


def _optimizer_variables_of(optimizer: Any) -> list[Any] | None:
    """The model variables a built optimizer tracks (None when Keras does not say)."""
    tracked = getattr(optimizer, "_trainable_variables", None)
    return list(tracked) if isinstance(tracked, (list, tuple)) else None


def _same_variables(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def capture(model: Any, optimizer: Any = None) -> KerasTrainingState:
    """Snapshot the model's variables (and the optimizer's, building it if it is not yet)."""
    import keras

    opt_class = None
    opt_vars: dict[str, np.ndarray] = {}
    if optimizer is not None:
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ConversionError(
                f"optimizer is a {type(optimizer).__qualname__}, not a Keras "
                "optimizer (pass model.optimizer)"
            )
        if not optimizer.built:
            # what the first fit() step would do: creates the slots, zero-filled
            optimizer.build(model.trainable_variables)
        tracked = _optimizer_variables_of(optimizer)
        if tracked is not None and not _same_variables(tracked, model.trainable_variables):
            raise ConversionError(
                "the optimizer was built for other variables than the model's "
                "trainable variables (is it another model's optimizer?)"
            )
        opt_class = _qualname(optimizer)
        opt_vars = _snapshot(optimizer.variables, "optimizer")
    return KerasTrainingState(
        _qualname(model),
        keras.__version__,
        _snapshot(model.variables, "model"),
        opt_class,
        opt_vars,
    )


# --------------------------------------------------------------------------- restore side


def _arrays_of(data: bytes | bytearray | mmap.mmap, entry: str) -> tuple[Any, memoryview]:
    from ..format.weights import parse_header

    return parse_header(bytes(data), len(data), entry=entry), memoryview(data)


def _array(header: Any, view: memoryview, key: str, entry: str) -> np.ndarray:
    from ..format.weights import numpy_dtype

    info = header.tensors[key]
    dtype = numpy_dtype(info)
    if dtype is None:
        raise FormatError(
            f"{entry}: tensor {key!r} is {info.dtype}, which Keras variables "
            "cannot be restored from here",
            entry=entry,
        )
    begin, end = header.data_start + info.begin, header.data_start + info.end
    return np.frombuffer(view[begin:end], dtype=dtype).reshape(info.shape)


def _listing(
    node: Any,
    where: str,
    pools: Mapping[str, tuple[Any, memoryview, str]],
) -> list[tuple[str, np.ndarray]]:
    """The (name, array) list a ``tensors`` listing describes, checked against the pools."""
    if not isinstance(node, list):
        raise FormatError(f"{STATE_JSON}: {where}.tensors must be a list", entry=STATE_JSON)
    out = []
    for i, t in enumerate(node):
        t = object_with(t, f"{where}.tensors[{i}]", {"name", "dtype", "shape", "source", "key"})
        name, source, key = t["name"], t["source"], t["key"]
        pool = pools.get(source) if isinstance(source, str) else None
        if (
            pool is None
            or not isinstance(name, str)
            or not isinstance(key, str)
            or key not in pool[0].tensors
        ):
            raise FormatError(
                f"{STATE_JSON}: {where} tensor {name!r} refers to "
                f"{source}:{key!r}, which is not there",
                entry=STATE_JSON,
            )
        arr = _array(pool[0], pool[1], key, pool[2])
        if arr.dtype.name != t["dtype"] or list(arr.shape) != t["shape"]:
            raise FormatError(
                f"{STATE_JSON}: {where} tensor {name!r} is recorded as "
                f"{t['dtype']} {t['shape']} but {source}:{key!r} is "
                f"{arr.dtype.name} {list(arr.shape)}",
                entry=STATE_JSON,
            )
        out.append((name, arr))
    return out


def _variable_name(path: str) -> str:
    return path.split("#")[0].rsplit("/", 1)[-1]


def _slot_kind(path: str) -> str:
    return _variable_name(path).rsplit("_", 1)[-1]


def _compare(
    what: str,
    saved: list[tuple[str, np.ndarray]],
    live: Sequence[Any],
    kind: Any,
    problems: list[str],
) -> None:
    if len(saved) != len(live):
        names = [str(v.path) for v in live]
        hint = (
            " (build the model first: call it on a batch)" if what == "model" and not live else ""
        )
        problems.append(
            f"{what}: {len(live)} variable(s) given, {len(saved)} in the bundle"
            f"{hint}; given {few(names, 6)}; saved {few([n for n, _ in saved], 6)}"
        )
    for i, ((name, arr), v) in enumerate(zip(saved, live, strict=False)):
        path = str(v.path)
        shape = tuple(int(d) for d in v.shape)
        if shape != arr.shape:
            problems.append(
                f"{what} variable {i} ({path}): shape {list(shape)} given, "
                f"{list(arr.shape)} in the bundle ({name})"
            )
        elif str(v.dtype) != arr.dtype.name:
            problems.append(
                f"{what} variable {i} ({path}): dtype {v.dtype} given, "
                f"{arr.dtype.name} in the bundle ({name})"
            )
        elif kind(path) != kind(name):
            problems.append(
                f"{what} variable {i}: {path!r} given where the bundle has "
                f"{name!r} ({kind(path)!r} vs {kind(name)!r})"
            )


def restore_verified(vb: VerifiedBundle, model: Any, optimizer: Any = None) -> VerifyReport:
    """Assign a verified bundle's Keras training state to ``model`` (and ``optimizer``).

    Every mismatch is found first and reported together (:class:`InputError`);
    nothing is assigned unless all fit. An optimizer that is not built yet is
    built for ``model.trainable_variables`` once the model is known to fit.
    """
    import keras

    doc, tensor_bytes = read_state(vb)
    fw = object_with(doc["framework"], "framework", {"name", "version"})
    if fw["name"] != "keras":
        raise InputError(
            f"{vb.report.path} holds {fw['name']!r} training state; it restores "
            f"into a {fw['name']} model, not a Keras one"
        )
    if not isinstance(model, keras.Model):
        raise InputError(f"expected a keras.Model to restore into, got {type(model).__qualname__}")
    wpath = vb.report.manifest.file("weights").path
    assert vb.weights is not None, "restore reads the weights in memory"
    pools = {
        "weights": (*_arrays_of(vb.weights, wpath), wpath),
        "training": (*_arrays_of(tensor_bytes, STATE_TENSORS), STATE_TENSORS),
    }
    mdoc = object_with(doc["model"], "model", {"class", "tensors"})
    saved = _listing(mdoc["tensors"], "model", pools)

    problems: list[str] = []
    live = list(model.variables)
    _compare("model", saved, live, _variable_name, problems)

    opt_saved: list[tuple[str, np.ndarray]] = []
    opt_live: list[Any] = []
    if optimizer is not None:
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            problems.append(f"optimizer is a {type(optimizer).__qualname__}, not a Keras optimizer")
        elif doc["optimizer"] is None:
            problems.append("an optimizer was given but the bundle holds no optimizer state")
        else:
            odoc = object_with(doc["optimizer"], "optimizer", {"class", "tensors"})
            opt_saved = _listing(odoc["tensors"], "optimizer", pools)
            if odoc["class"] != _qualname(optimizer):
                problems.append(
                    f"optimizer: the bundle holds a {odoc['class']} state, the "
                    f"given optimizer is a {_qualname(optimizer)}"
                )
            elif optimizer.built:
                tracked = _optimizer_variables_of(optimizer)
                if tracked is not None and not _same_variables(tracked, model.trainable_variables):
                    problems.append(
                        "optimizer: it is built for other variables than the "
                        "model's trainable variables"
                    )
                else:
                    opt_live = list(optimizer.variables)
                    _compare("optimizer", opt_saved, opt_live, _slot_kind, problems)
            elif not problems:  # the model fits: building the optimizer for it is safe
                optimizer.build(model.trainable_variables)
                opt_live = list(optimizer.variables)
                _compare("optimizer", opt_saved, opt_live, _slot_kind, problems)
    if problems:
        raise InputError(
            "the given objects do not match the bundle's training state; nothing "
            "was loaded:\n  - " + "\n  - ".join(problems)
        )

    # -- everything fits: assign
    for v, (_, arr) in zip(live, saved, strict=True):
        v.assign(arr)
    for v, (_, arr) in zip(opt_live, opt_saved, strict=True):
        v.assign(arr)
    return vb.report
