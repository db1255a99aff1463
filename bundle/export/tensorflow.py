"""TensorFlow and Keras 3 models, through tf2onnx.

Three kinds of model are accepted:

* a Keras 3 ``keras.Model`` (Sequential, functional or subclassed), on the
  TensorFlow backend;
* a ``tf.Module`` whose ``__call__`` -- or the method named by ``signature`` --
  is a ``tf.function`` (with an ``input_signature``, or typed by the sample);
* a path to a SavedModel directory; ``signature`` picks the signature
  (``serving_default`` by default).

Each is wrapped in a ``tf.function`` over flat, positional tensors and handed to
``tf2onnx.convert.from_function`` (``from_keras`` does not work on Keras 3).

The sample input decides the graph's inputs. A Keras model named its inputs
with ``keras.Input(name=...)``: those names are kept (Keras' automatic
``keras_tensor_N`` names become ``input`` / ``input_0``...), and ``predict``
takes the structure Keras takes: one array, a list in input order, or a dict by
name. A dict sample for a subclassed model is passed to it as a dict and names
the inputs by its keys. Floating-point samples are cast to the input's dtype
(``float32`` for Keras), integer inputs keep theirs. Axis 0 of every input is
dynamic ("batch"), and so is every axis a ``keras.Input`` declares as ``None``;
``dynamic_axes`` (``{input: {axis: "name"}}``) overrides that per input. A
``tf.function``'s own ``input_signature`` decides for tf.Modules and SavedModels.
Outputs are named like the PyTorch converter's: ``output`` for one tensor,
``output_0``... for a list or tuple, the keys of a dict; ``predict`` gives the
first.

Weights: a Keras model is traced through ``stateless_call`` with its variables
as graph inputs, which then become initializers holding each variable's exact
value under its Keras path (``sequential/dense/kernel``): stored once, never
folded, transposed or fused by tf2onnx (onnxruntime folds what it likes when
it loads the graph), and converted in a fraction of the time freezing takes.
Recurrent layers' variables are baked in as constants instead, so tf2onnx can
fuse them into one ONNX LSTM/GRU op (it transposes and reorders them). When
the stateless trace fails, the model is traced as it runs, variables frozen
into constants, with an :class:`ExportFallbackWarning`: tf2onnx may then
transform them or drop an all-zero bias (the parity check runs either way).
Constants that are not a variable's exact value keep neutral names, and small
ones (shapes, axes) live in the graph as Constant nodes. A tf.Module's or
SavedModel's variables are always frozen; an initializer bit-identical to one
is named by its attribute path (``layers/0/w``) or variable name.

For Keras models the bundle also stores the training state
(:mod:`bundle.training.keras`): every variable exactly -- a reference into the
weights where they hold it, a tensor of its own otherwise (baked recurrent
weights, Dropout's seed state) -- plus the optimizer's variables when
``optimizer`` is given.

An operator tf2onnx cannot translate is reported with the TensorFlow op and the
Keras layer that uses it. Lambda and custom layers work when their traced graph
converts (no Python code is stored), and fail with that report otherwise.

TensorFlow is imported here only, quietly: its native start-up chatter is
silenced for the import, ``TF_CPP_MIN_LOG_LEVEL`` is set only while importing
(tf2onnx sets it for good on import; the caller's value is put back),
tf2onnx's and TensorFlow's Python loggers are muted during the conversion, and
the native log lines grappler writes while tf2onnx runs are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConversionError, ExportFallbackWarning
from ..format.manifest import Method
from ..runtime.native import quiet_native_stderr
from . import Converted, axis_names, check_dynamic_axes, named_outputs
from .onnx_graph import adopt_state_names, all_graphs, rename_values, tidy
from .options import TensorFlowOptions

_INSTALL = "install the tensorflow extra: pip install 'model-bundle[tensorflow]'"
_INPUT_DTYPES = (
    "float32",
    "float64",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
_LOGGERS = ("tf2onnx", "tensorflow", "absl")
DEFAULT_OPSET = 17
_AUTO_INPUT = re.compile(r"(keras_tensor|input_layer)(_\d+)?")
_UNKNOWN_DIM = re.compile(r"unk__\d+")
_SMALL = 64  # elements: float constants up to this size are graph structure, not weights
_FLOAT_TYPES = (1, 10, 11, 16)  # ONNX TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


# --------------------------------------------------------------------------- quiet import


def _import(keras_model: bool) -> tuple[Any, Any, Any]:
    """tensorflow, tf2onnx and (for a Keras model) keras, imported quietly."""
    saved = {k: os.environ.get(k) for k in _QUIET_ENV}
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    fresh = "tensorflow" not in sys.modules or "tf2onnx" not in sys.modules
    try:
        with (
            quiet_native_stderr() if fresh else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            import tensorflow as tf
            import tf2onnx
            import tf2onnx.convert  # sets TF_CPP_MIN_LOG_LEVEL for good on import

            keras: Any = None
            if keras_model:
                import keras as keras_module

                keras = keras_module
    except ImportError as e:
        raise ConversionError(
            f"saving a TensorFlow/Keras model needs tensorflow and tf2onnx ({e}); {_INSTALL}"
        ) from e
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return tf, tf2onnx, keras


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """tf2onnx logs every op it cannot convert; we report those ourselves."""
    levels = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _first_line(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).strip().split("\n")[0].split()) or type(e).__name__
    return text[:limit]


# --------------------------------------------------------------------------- the plan


@dataclass
class _Plan:
    """What every kind of model reduces to before tf2onnx sees it."""

    label: str
    framework: str
    names: list[str]
    """Graph input names, in graph order."""
    arrays: list[np.ndarray]
    """The sample, one array per input, already in the input's dtype."""
    shapes: list[tuple[int | None, ...]]
    """The TensorSpec shape of each input (None: dynamic)."""
    call: Callable[[list[Any]], Any]
    """Flat input tensors (graph order) -> the model's own (structured) output."""
    axes: dict[str, dict[int, str]]
    """Names of the dynamic axes, by input."""
    variables: Callable[[], dict[str, np.ndarray]] = field(default=dict)
    """Floating-point variables by path (what initializers may be named after)."""
    layers: Callable[[], list[Any]] = field(default=list)
    stateless: _Stateless | None = None
    """How to trace a Keras model with its variables as graph inputs (see _Stateless)."""


@dataclass
class _Stateless:
    """A Keras model traced through ``stateless_call``, its variables fed as inputs.

    tf2onnx then sees a small graph whose weights are placeholders: nothing to
    freeze, fold or copy (a 100 MB MLP converts in well under a second instead
    of tens of seconds), and each variable becomes an initializer holding its
    exact value under its own path -- the weights once, verbatim. Recurrent
    layers' variables are the exception: tf2onnx's LSTM/GRU rewriters need
    constant weights to emit one fused ONNX op, so those are baked in as
    constants (and kept exactly in the training state).
    """

    model: Any
    pack: Callable[[list[Any]], Any]

    def variables(self) -> tuple[list[Any], list[Any], set[int]]:
        """Trainable and non-trainable variables, and the ids of those baked in."""
        frozen = {
            id(v) for layer in _layers_of(self.model) if _is_recurrent(layer) for v in layer.weights
        }
        return (
            list(self.model.trainable_variables),
            list(self.model.non_trainable_variables),
            frozen,
        )

    def call(
        self, tf: Any, flat: list[Any], fed: list[Any], baked: Mapping[int, np.ndarray]
    ) -> Any:
        """Trace the model on ``flat`` inputs, ``fed`` variable tensors and ``baked`` values."""
        trainable, non_trainable, _ = self.variables()
        it = iter(fed)
        values = [
            tf.constant(baked[id(v)]) if id(v) in baked else next(it)
            for v in (*trainable, *non_trainable)
        ]
        kwargs = {"training": False} if _takes_training(self.model) else {}
        out, _ = self.model.stateless_call(
            values[: len(trainable)], values[len(trainable) :], self.pack(flat), **kwargs
        )
        return out


def _takes_training(model: Any) -> bool:
    """Whether ``call`` accepts ``training`` (``model(...)`` drops it when not; stateless_call
    passes it on)."""
    import inspect

    params = inspect.signature(model.call).parameters.values()
    return any(p.name == "training" or p.kind == p.VAR_KEYWORD for p in params)


def _layers_of(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False)) if flatten else list(model.layers)


def _is_recurrent(layer: Any) -> bool:
    return any(
        c.__name__ in ("RNN", "Bidirectional") and (c.__module__ or "").startswith("keras")
        for c in type(layer).__mro__
    )


def _as_array(value: Any, where: str) -> np.ndarray:
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.name not in _INPUT_DTYPES:
        raise ConversionError(
            f"sample_input {where} has dtype {arr.dtype}; inputs may be {', '.join(_INPUT_DTYPES)}"
        )
    return arr


def _cast(arr: np.ndarray, dtype: str, where: str) -> np.ndarray:
    if arr.dtype.name == dtype:
        return arr
    want = np.dtype(dtype)
    if want.kind == "f" and arr.dtype.kind in "fiub":
        return arr.astype(want)
    if want.kind in "iu" and arr.dtype.kind in "iub":
        return arr.astype(want)
    if want.kind == "b" and arr.dtype.kind == "b":
        return arr
    raise ConversionError(f"sample_input {where} is {arr.dtype}, but the model's input is {dtype}")


def _dynamic(
    names: list[str],
    arrays: list[np.ndarray],
    declared: list[set[int]],
    dynamic_axes: Mapping[str, Any] | None,
) -> dict[str, dict[int, str]]:
    """Axis 0 and the declared-None axes of each input, unless ``dynamic_axes`` says otherwise."""
    given = check_dynamic_axes(dynamic_axes, names)
    axes: dict[str, dict[int, str]] = {}
    for name, arr, decl in zip(names, arrays, declared, strict=True):
        spec = (
            given[name]
            if name in given
            else {
                a: "batch" if a == 0 else f"{name}_dim{a}"
                for a in sorted({0, *decl})
                if a < arr.ndim
            }
        )
        axes[name] = axis_names(name, spec, arr.ndim)
    return axes


def _shapes(
    arrays: list[np.ndarray], names: list[str], axes: dict[str, dict[int, str]]
) -> list[tuple[int | None, ...]]:
    return [
        tuple(None if a in axes[n] else int(s) for a, s in enumerate(arr.shape))
        for n, arr in zip(names, arrays, strict=True)
    ]


# -- Keras


def _keras_plan(
    tf: Any, keras: Any, model: Any, sample: Any, dynamic_axes: Mapping[str, Any] | None
) -> _Plan:
    if keras.backend.backend() != "tensorflow":
        raise ConversionError(
            f"Keras runs on the {keras.backend.backend()!r} backend; "
            "tf2onnx converts TensorFlow graphs only: set "
            "KERAS_BACKEND=tensorflow before importing keras"
        )
    label = type(model).__name__
    try:
        tensors = list(model.inputs or [])  # functional and built Sequential models
    except Exception:  # subclassed models declare no inputs
        tensors = []
    struct: Any = None
    if tensors:
        try:
            struct = model.input  # a functional model's structure (tensor, list or dict)
        except Exception:  # a Sequential model that was built but never called
            struct = tensors[0] if len(tensors) == 1 else tensors
    if struct is None:
        names, arrays, pack = _free_inputs(sample)
        declared: list[set[int]] = [set() for _ in names]
        dtypes = [_keras_float(a, model) for a in arrays]
    else:
        names, arrays, pack = _declared_inputs(struct, tensors, sample, label)
        declared = [{i for i, d in enumerate(t.shape) if d is None} for t in tensors]
        dtypes = [str(t.dtype) for t in tensors]
        for n, arr, t in zip(names, arrays, tensors, strict=True):
            if arr.ndim != len(t.shape):
                raise ConversionError(
                    f"sample_input {n!r} is {arr.ndim}-D, but the model's "
                    f"input {n!r} has shape {tuple(t.shape)}"
                )
    arrays = [_cast(a, d, repr(n)) for a, d, n in zip(arrays, dtypes, names, strict=True)]
    axes = _dynamic(names, arrays, declared, dynamic_axes)

    def call(flat: list[Any]) -> Any:
        return model(pack(flat), training=False)

    def variables() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for v in model.variables:
            if v.dtype in ("float16", "float32", "float64") and v.path not in out:
                out[v.path] = v.numpy()
        return out

    return _Plan(
        label,
        "keras",
        names,
        arrays,
        _shapes(arrays, names, axes),
        call,
        axes,
        variables,
        lambda: _layers_of(model),
        _Stateless(model, pack),
    )


def _keras_float(arr: np.ndarray, model: Any) -> str:
    """Keras casts floating inputs to the layer's compute dtype; float64 samples follow it."""
    if arr.dtype.kind == "f" and arr.dtype.name == "float64":
        compute = str(getattr(model, "compute_dtype", "float32"))
        return compute if compute in ("float16", "float32", "float64") else "float32"
    return arr.dtype.name


def _free_inputs(sample: Any) -> tuple[list[str], list[np.ndarray], Callable[[list[Any]], Any]]:
    """Inputs of a model that declares none (subclassed): the sample's own structure."""
    if isinstance(sample, Mapping):
        if not sample:
            raise ConversionError("sample_input is an empty dict")
        names = []
        for k in sample:
            if not isinstance(k, str) or not k:
                raise ConversionError(f"sample_input keys must be non-empty strings, got {k!r}")
            names.append(k)
        arrays = [_as_array(sample[k], repr(k)) for k in names]
        return names, arrays, lambda flat: dict(zip(names, flat, strict=True))
    if isinstance(sample, (list, tuple)):
        if not sample:
            raise ConversionError("sample_input is empty")
        names = [f"input_{i}" for i in range(len(sample))]
        arrays = [_as_array(v, repr(n)) for v, n in zip(sample, names, strict=True)]
        return names, arrays, list
    return ["input"], [_as_array(sample, "")], lambda flat: flat[0]


def _declared_inputs(
    struct: Any,
    tensors: list[Any],
    sample: Any,
    label: str,
) -> tuple[list[str], list[np.ndarray], Callable[[list[Any]], Any]]:
    """Inputs of a model built on keras.Input(s): their names, the sample in their order.

    A dict-structured model keeps its keys. Otherwise the Input names are used,
    except Keras' automatic ones (``keras_tensor_3``), which depend on how many
    tensors the process made before: those become ``input`` / ``input_<i>``.
    """
    tnames = [str(t.name) for t in tensors]
    pack: Callable[[list[Any]], Any]
    if isinstance(struct, Mapping):
        # The tensors come in Keras' flattening order -- dict keys sorted -- not in the
        # dict's own order: pair each tensor with its key by identity.
        key_of = {id(v): str(k) for k, v in struct.items()}
        keys = [key_of.get(id(t), "") for t in tensors]
        if sorted(keys) != sorted(str(k) for k in struct):
            keys = sorted(str(k) for k in struct)
        names = list(keys)
        pack = lambda flat: dict(zip(keys, flat, strict=True))  # noqa: E731
    else:
        keys = tnames
        names = [
            n if not _AUTO_INPUT.fullmatch(n) else "input" if len(tnames) == 1 else f"input_{i}"
            for i, n in enumerate(tnames)
        ]
        if len(set(names)) != len(names):
            names = [f"input_{i}" for i in range(len(tnames))]
        pack = list if isinstance(struct, (list, tuple)) else (lambda flat: flat[0])
    if isinstance(sample, Mapping):
        # a dict sample may use the graph input names, the dict keys or the tensor names
        lookup: dict[Any, int] = {}
        for i, aliases in enumerate(zip(tnames, keys, names, strict=True)):
            for a in aliases:
                lookup.setdefault(a, i)
        given: dict[int, Any] = {}
        unknown = []
        for k, v in sample.items():
            if k in lookup and lookup[k] not in given:
                given[lookup[k]] = v
            else:
                unknown.append(k)
        missing = [names[i] for i in range(len(names)) if i not in given]
        if unknown or missing:
            raise ConversionError(
                f"sample_input keys must be {label}'s inputs {names}; "
                f"unknown or repeated {unknown}, missing {missing}"
            )
        arrays = [_as_array(given[i], repr(n)) for i, n in enumerate(names)]
    elif isinstance(sample, (list, tuple)):
        if len(sample) != len(names):
            raise ConversionError(
                f"sample_input gives {len(sample)} arrays but {label} has "
                f"{len(names)} input(s) {names}"
            )
        arrays = [_as_array(v, repr(n)) for v, n in zip(sample, names, strict=True)]
    else:
        if len(names) != 1:
            raise ConversionError(
                f"{label} has {len(names)} inputs {names}: give "
                "sample_input as a list or a dict of arrays"
            )
        arrays = [_as_array(sample, repr(names[0]))]
    return names, arrays, pack


# -- tf.Module and SavedModel


def _is_function(tf: Any, fn: Any) -> bool:
    return isinstance(fn, tf.types.experimental.GenericFunction)


def _module_plan(
    tf: Any, module: Any, sample: Any, signature: str | None, dynamic_axes: Mapping[str, Any] | None
) -> _Plan:
    attr = signature or "__call__"
    fn = getattr(module, attr, None)
    label = f"{type(module).__name__}.{attr}"
    if fn is None or not _is_function(tf, fn):
        raise ConversionError(
            f"{label} is not a tf.function: decorate it with @tf.function "
            "(with an input_signature), or name another method with "
            "signature="
        )
    import inspect

    params = [
        p.name
        for p in inspect.signature(fn.python_function).parameters.values()
        if p.name != "self"
    ]
    specs = fn.input_signature
    if specs is not None:
        specs = list(specs)
        if any(not isinstance(s, tf.TensorSpec) for s in specs):
            raise ConversionError(f"{label}'s input_signature must be flat TensorSpecs")
        names = [
            s.name or (params[i] if i < len(params) else f"input_{i}") for i, s in enumerate(specs)
        ]
        if dynamic_axes:
            raise ConversionError(
                f"{label} has an input_signature: it decides which axes "
                "are dynamic (None); dynamic_axes does not apply"
            )
        arrays = _positional(sample, names, label)
        arrays = [
            _cast(a, s.dtype.name, repr(n)) for a, s, n in zip(arrays, specs, names, strict=True)
        ]
        shapes = [
            tuple(s.shape.as_list()) if s.shape.rank is not None else tuple(None for _ in a.shape)
            for s, a in zip(specs, arrays, strict=True)
        ]
        for n, a, shape in zip(names, arrays, shapes, strict=True):
            if len(shape) != a.ndim or any(
                d is not None and d != s for d, s in zip(shape, a.shape, strict=True)
            ):
                raise ConversionError(
                    f"sample_input {n!r} has shape {a.shape}; {label}'s "
                    f"input_signature wants {_fmt(shape)}"
                )
        axes = {
            n: {i: "batch" if i == 0 else f"{n}_dim{i}" for i, d in enumerate(shape) if d is None}
            for n, shape in zip(names, shapes, strict=True)
        }
    else:
        names = params[: len(sample)] if isinstance(sample, (list, tuple)) else params[:1]
        if isinstance(sample, Mapping):
            names = list(sample)
        arrays = _positional(sample, names, label)
        axes = _dynamic(names, arrays, [set() for _ in names], dynamic_axes)
        shapes = _shapes(arrays, names, axes)
    keyword = isinstance(sample, Mapping) and specs is None

    def call(flat: list[Any]) -> Any:
        if keyword:
            return fn(**dict(zip(names, flat, strict=True)))
        return fn(*flat)

    def variables() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        seen: set[int] = set()
        found = module._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)
        for path, v in found:
            name = "/".join(str(p) for p in path)
            if id(v) in seen or name in out or not v.dtype.is_floating:
                continue
            seen.add(id(v))
            out[name] = v.numpy()
        return out

    return _Plan(label, "tensorflow", names, arrays, shapes, call, axes, variables)


def _positional(sample: Any, names: list[str], label: str) -> list[np.ndarray]:
    if isinstance(sample, Mapping):
        unknown = [k for k in sample if k not in names]
        missing = [n for n in names if n not in sample]
        if unknown or missing:
            raise ConversionError(
                f"sample_input keys must be {label}'s inputs {names}; "
                f"unknown {unknown}, missing {missing}"
            )
        return [_as_array(sample[n], repr(n)) for n in names]
    items = list(sample) if isinstance(sample, (list, tuple)) else [sample]
    if len(items) != len(names):
        raise ConversionError(
            f"sample_input gives {len(items)} array(s) but {label} takes {len(names)} {names}"
        )
    return [_as_array(v, repr(n)) for v, n in zip(items, names, strict=True)]


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _saved_model_plan(
    tf: Any, path: str, sample: Any, signature: str | None, dynamic_axes: Mapping[str, Any] | None
) -> _Plan:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ConversionError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
    if dynamic_axes:
        raise ConversionError(
            "a SavedModel's signature decides which axes are dynamic; dynamic_axes does not apply"
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        raise ConversionError(
            f"TensorFlow cannot load the SavedModel {path}: {_first_line(e)}"
        ) from e
    sigs = dict(loaded.signatures)
    key = signature or (
        "serving_default"
        if "serving_default" in sigs or not sigs
        else next(iter(sigs))
        if len(sigs) == 1
        else "serving_default"
    )
    if key not in sigs:
        raise ConversionError(f"the SavedModel has no signature {key!r}; it has {sorted(sigs)}")
    fn = sigs[key]
    args, kwargs = fn.structured_input_signature
    if args:
        raise ConversionError(
            f"signature {key!r} takes positional inputs; export it with named (keyword) inputs"
        )
    names = list(kwargs)
    specs = [kwargs[n] for n in names]
    label = f"SavedModel signature {key!r}"
    arrays = _positional(sample, names, label)
    arrays = [_cast(a, s.dtype.name, repr(n)) for a, s, n in zip(arrays, specs, names, strict=True)]
    shapes = [tuple(s.shape.as_list()) for s in specs]
    for n, a, shape in zip(names, arrays, shapes, strict=True):
        if len(shape) != a.ndim or any(
            d is not None and d != s for d, s in zip(shape, a.shape, strict=True)
        ):
            raise ConversionError(
                f"sample_input {n!r} has shape {a.shape}; {label} wants {_fmt(shape)}"
            )
    axes = {
        n: {i: "batch" if i == 0 else f"{n}_dim{i}" for i, d in enumerate(shape) if d is None}
        for n, shape in zip(names, shapes, strict=True)
    }

    def call(flat: list[Any]) -> Any:
        out = fn(**dict(zip(names, flat, strict=True)))
        # signature outputs are a dict whose order TensorFlow does not keep: sort, as tf.nest
        return {k: out[k] for k in sorted(out)} if isinstance(out, Mapping) else out

    def variables() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for v in fn.variables:
            name = v.name.removesuffix(":0")
            if v.dtype.is_floating and name not in out:
                out[name] = v.numpy()
        return out

    plan = _Plan(label, "tensorflow", names, arrays, shapes, call, axes, variables)
    plan.layers = lambda: [loaded]  # keeps the loaded object (and its variables) alive
    return plan


# --------------------------------------------------------------------------- outputs


def _outputs(tf: Any, out: Any, label: str) -> tuple[list[str], list[Any]]:
    return named_outputs(out, label, lambda v: tf.is_tensor(v) or isinstance(v, np.ndarray))


# --------------------------------------------------------------------------- conversion


def _trace_and_convert(
    tf: Any,
    tf2onnx: Any,
    plan: _Plan,
    n_out: int,
    opset: int,
) -> tuple[Any, dict[str, tuple[str, np.ndarray]], ConversionError | None]:
    """The ONNX model, the graph inputs that stand for variables (name -> (path, value)),
    and why the stateless trace was given up (None when it was not).

    A Keras model is first traced with its variables as inputs (:class:`_Stateless`);
    should that fail, it is traced as it runs, variables frozen into constants.
    """
    reason = None
    if plan.stateless is not None:
        try:
            return (*_convert(tf, tf2onnx, plan, n_out, opset, plan.stateless), None)
        except ConversionError as e:
            reason = e  # the plain trace below gives the error worth raising, if any
    return (*_convert(tf, tf2onnx, plan, n_out, opset, None), reason)


def _convert(
    tf: Any, tf2onnx: Any, plan: _Plan, n_out: int, opset: int, stateless: _Stateless | None
) -> tuple[Any, dict[str, tuple[str, np.ndarray]]]:
    specs = [
        tf.TensorSpec(shape, tf.as_dtype(a.dtype), name=f"mb_in_{i}")
        for i, (shape, a) in enumerate(zip(plan.shapes, plan.arrays, strict=True))
    ]
    fed: dict[str, tuple[str, np.ndarray]] = {}
    baked: dict[int, np.ndarray] = {}  # read now: a variable has no numpy() while tracing
    if stateless is not None:
        trainable, non_trainable, frozen = stateless.variables()
        paths: set[str] = set()
        for v in (*trainable, *non_trainable):
            if id(v) in frozen:
                baked[id(v)] = np.array(v.numpy())
                continue
            path, n = str(v.path), 1
            while path in paths:
                n += 1
                path = f"{v.path}#{n}"
            paths.add(path)
            name = f"mb_w_{len(fed)}"
            fed[name] = (path, np.array(v.numpy(), order="C"))
            specs.append(tf.TensorSpec(v.shape, tf.as_dtype(str(v.dtype)), name=name))
    n_in = len(plan.names)

    @tf.function(input_signature=specs, autograph=False)  # type: ignore[untyped-decorator]
    def flat(*args: Any) -> Any:
        inputs = list(args[:n_in])
        out = (
            plan.call(inputs)
            if stateless is None
            else stateless.call(tf, inputs, list(args[n_in:]), baked)
        )
        _, values = _outputs(tf, out, plan.label)
        return [tf.identity(v) for v in values]

    try:
        concrete = flat.get_concrete_function(*specs)
    except ConversionError:
        raise
    except Exception as e:
        shapes = [(n, _fmt(s)) for n, s in zip(plan.names, plan.shapes, strict=True)]
        raise ConversionError(
            f"{plan.label} fails when traced by tf.function with inputs "
            f"{shapes}: "
            f"{_first_line(e)} (Python code that needs concrete values, "
            "e.g. numpy calls on tensors, cannot be traced)"
        ) from e
    if len(concrete.outputs) != n_out:
        raise ConversionError(
            f"{plan.label} gives {n_out} outputs when run but {len(concrete.outputs)} when traced"
        )
    try:
        onx, _ = tf2onnx.convert.from_function(flat, input_signature=specs, opset=opset)
    except Exception as e:
        raise ConversionError(f"tf2onnx cannot convert {plan.label}: {_first_line(e)}") from e
    _freeze_captured(tf, onx, concrete)
    return onx, fed


def _freeze_captured(tf: Any, onx: Any, concrete: Any) -> None:
    """Captured constant tensors become initializers, not graph inputs.

    A layer can hold state as plain tensors rather than variables -- Keras 3's
    ``Normalization`` keeps the mean and variance ``adapt()`` computed that way --
    and the traced function captures them; tf2onnx makes each capture a graph
    input, which the caller would then have to feed. Their values are known:
    they are frozen into the graph as what they are.
    """
    from onnx import numpy_helper

    values: dict[str, np.ndarray] = {}
    for external, internal in concrete.graph.captures:
        if external.dtype == tf.resource or not hasattr(external, "numpy"):
            continue  # variables are handled by the caller (fed or frozen)
        values[str(internal.name)] = np.array(external.numpy())
    graph = onx.graph
    for idx in reversed(range(len(graph.input))):
        name = graph.input[idx].name
        if name in values:
            graph.initializer.append(numpy_helper.from_array(values[name], name))
            del graph.input[idx]


def _bind_variables(onx: Any, fed: Mapping[str, tuple[str, np.ndarray]]) -> dict[str, str]:
    """Turn the variable inputs into initializers holding their values; drop unused ones.

    Returns the renaming to apply: input name -> variable path.
    """
    from onnx import helper

    graph = onx.graph
    used = {name for g in all_graphs(graph) for n in g.node for name in n.input}
    mapping = {}
    for vi in graph.input:
        if vi.name in fed and vi.name in used:
            path, value = fed[vi.name]
            init = graph.initializer.add()  # filled in place: one copy of the bytes
            init.name = vi.name
            init.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
            init.dims.extend(value.shape)
            init.raw_data = (
                np.ascontiguousarray(value)
                .astype(value.dtype.newbyteorder("<"), copy=False)
                .tobytes()
            )
            mapping[vi.name] = path
    for idx in reversed([k for k, vi in enumerate(graph.input) if vi.name in fed]):
        del graph.input[idx]
    return mapping


def _unsupported(onx: Any, plan: _Plan) -> None:
    """Refuse ops tf2onnx left as TensorFlow ops, naming each with its layer."""
    from onnx import defs

    from ..format.graph import STANDARD_DOMAINS

    bad: dict[str, list[str]] = {}
    for g in all_graphs(onx.graph):
        for node in g.node:
            if node.domain in STANDARD_DOMAINS and defs.has(node.op_type, node.domain):
                continue
            op = (
                node.op_type
                if node.domain in STANDARD_DOMAINS
                else f"{node.domain}::{node.op_type}"
            )
            bad.setdefault(op, []).append(node.name)
    if not bad:
        return
    layers = {getattr(layer, "name", ""): layer for layer in plan.layers()}
    parts = []
    for op, where in bad.items():
        located = sorted({_layer_of(w, layers) for w in where})
        parts.append(f"TensorFlow op {op} (in {', '.join(located)})")
    hint = ""
    grouped = [
        name
        for name, layer in layers.items()
        if int(getattr(layer, "groups", 1) or 1) > 1
        and any(name in w for ws in bad.values() for w in ws)
    ]
    if "PartitionedCall" in bad and grouped:
        # keras/src/backend/tensorflow/nn.py runs grouped convolutions through a
        # jit_compile=True tf.function (TensorFlow's CPU kernel lacks them); tf2onnx
        # cannot look inside an XLA-compiled call.
        hint = (
            f" ({', '.join(sorted(grouped))}: Keras runs a grouped convolution -- "
            "Conv2D(groups=...), as ConvNeXt's depthwise blocks use -- through an "
            "XLA-compiled function on TensorFlow, which tf2onnx cannot translate. A "
            "DepthwiseConv2D layer computes the same when groups == channels and "
            "converts)"
        )
    raise ConversionError(
        f"cannot export {plan.label}: tf2onnx has no ONNX translation for "
        f"{'; '.join(parts)}{hint}. Bundles hold standard ONNX operators only: rewrite that "
        "layer with operations tf2onnx supports"
    )


def _layer_of(op_name: str, layers: Mapping[str, Any]) -> str:
    """'layer 'name' (Class), op 'a/b/Op'' for the deepest Keras layer in the op's scope."""
    scopes = op_name.split("/")[:-1]
    for seg in reversed(scopes):
        for cand in (re.sub(r"_\d+$", "", seg), seg):
            layer = layers.get(cand)
            if layer is not None:
                return f"layer {cand!r} ({type(layer).__name__}), op {op_name!r}"
    return f"op {op_name!r}"


def _rename_all(onx: Any, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every value and node name in every graph (a global, injective map)."""
    for g in all_graphs(onx.graph):
        for coll in (g.initializer, g.input, g.output, g.value_info):
            for item in coll:
                item.name = fn(item.name)
        for node in g.node:
            node.name = fn(node.name)
            for i, name in enumerate(node.input):
                if name:
                    node.input[i] = fn(name)
            for i, name in enumerate(node.output):
                if name:
                    node.output[i] = fn(name)


def _canonical_names(onx: Any) -> None:
    """Name every internal value, node and constant by its place in the graph.

    tf2onnx numbers its helper tensors with process-wide counters and, when it
    merges duplicate nodes, keeps whichever its sets yield first: the same model
    exported twice would get different names, and the bundle different bytes.
    Constants become ``const_<k>`` in order of first use (and are stored in that
    order), nodes ``<OpType>_<k>``, other values ``v<k>``; the graph's inputs
    and outputs keep theirs (they are renamed for the caller next).
    """
    graph = onx.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    mapping: dict[str, str] = {}
    consts: dict[str, int] = {}
    init_names = {i.name for g in all_graphs(graph) for i in g.initializer}

    def value(name: str) -> None:
        if not name or name in keep or name in mapping:
            return
        if name in init_names:
            consts[name] = len(consts)
            mapping[name] = f"const_{consts[name]}"
        else:
            mapping[name] = f"v{len(mapping) - len(consts)}"

    def walk(g: Any) -> None:
        for vi in g.input:
            value(vi.name)
        for node in g.node:
            for name in node.input:
                value(name)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)
            for name in node.output:
                value(name)
        for vi in g.output:
            value(vi.name)

    walk(graph)
    for g in all_graphs(graph):
        for init in g.initializer:  # unused ones, if any, last
            value(init.name)
    _rename_all(onx, lambda name: mapping.get(name, name))
    nodes = 0
    for g in all_graphs(graph):
        for node in g.node:
            node.name = f"{node.op_type}_{nodes}"
            nodes += 1
        g.initializer.sort(key=_const_index)


def _const_index(init: Any) -> int:
    m = re.fullmatch(r"const_(\d+)", init.name)
    return int(m.group(1)) if m else 1 << 62


def _name_io(onx: Any, plan: _Plan, out_names: list[str], extra: Mapping[str, str]) -> None:
    """Give graph inputs and outputs the caller's names, their dynamic axes theirs.

    ``extra`` renames more values the same way (variable inputs to their paths).
    """
    graph = onx.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    want_in = [f"mb_in_{i}" for i in range(len(plan.names))]
    if inputs != want_in:
        unused = [plan.names[int(n.removeprefix("mb_in_"))] for n in want_in if n not in inputs]
        raise ConversionError(
            f"the converted graph's inputs do not match the sample's "
            f"{plan.names}" + (f": {plan.label} ignores {unused}" if unused else "")
        )
    outputs = [o.name for o in graph.output]
    if len(outputs) != len(out_names):
        raise ConversionError(
            f"the converted graph has {len(outputs)} outputs, {plan.label} {len(out_names)}"
        )
    mapping = dict(zip(want_in, plan.names, strict=True))
    mapping.update(zip(outputs, out_names, strict=True))
    mapping.update(extra)
    taken = {v for g in all_graphs(graph) for n in g.node for v in (*n.input, *n.output)}
    taken |= {i.name for i in graph.initializer} | set(inputs) | set(outputs)
    clash = [n for n in mapping.values() if n in taken and n not in mapping]
    for n in clash:  # an internal value already has a name we want: move it aside
        new, k = f"{n}.tf", 1
        while new in taken:
            k += 1
            new = f"{n}.tf{k}"
        taken.add(new)
        mapping[n] = new
    rename_values(graph, mapping)
    for vi in graph.input:
        axes = plan.axes.get(vi.name)
        if axes is None:
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if axis in axes:
                d.Clear()
                d.dim_param = axes[axis]


def _output_dims(onx: Any) -> None:
    """Output dims from ONNX shape inference (so 'batch' shows), unknown ones left blank."""
    from onnx import shape_inference

    graph = onx.graph
    del graph.value_info[:]
    for g in all_graphs(graph):
        for vi in (*g.input, *g.output, *g.value_info):
            for d in vi.type.tensor_type.shape.dim:
                if _UNKNOWN_DIM.fullmatch(d.dim_param):
                    d.Clear()
    try:
        inferred = shape_inference.infer_shapes(
            _without_weights(onx), strict_mode=False, data_prop=True
        )
    except Exception:  # inference is a nicety; the graph is fine without it
        return
    symbols = {
        d.dim_param for vi in graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param
    }
    got = {vi.name: vi for vi in inferred.graph.output}
    for vi in graph.output:
        inf = got.get(vi.name)
        if inf is None or not inf.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        idims = inf.type.tensor_type.shape.dim
        if len(dims) != len(idims):
            continue
        for d, i in zip(dims, idims, strict=True):
            if d.HasField("dim_value") or d.dim_param:
                continue
            if i.HasField("dim_value"):
                d.dim_value = i.dim_value
            elif i.dim_param in symbols:
                d.dim_param = i.dim_param


def _small_constants_to_nodes(onx: Any, variables: set[str]) -> None:
    """Move tf2onnx's own small constants (shapes, axes, epsilons) into Constant nodes.

    They are graph structure, not weights: the weights entry then holds the
    model's tensors only, and onnxruntime sees shape inputs (a Reshape's target
    shape) in the graph itself, where its shape inference reads them.
    """
    from onnx import helper

    graph = onx.graph
    move = [
        i
        for i in graph.initializer
        if i.name not in variables and (i.data_type not in _FLOAT_TYPES or _size(i) <= _SMALL)
    ]
    if not move:
        return
    nodes = []
    for init in move:
        value = type(init)()
        value.CopyFrom(init)
        value.name = ""
        nodes.append(helper.make_node("Constant", [], [init.name], value=value))
    names = {i.name for i in move}
    for idx in reversed([k for k, i in enumerate(graph.initializer) if i.name in names]):
        del graph.initializer[idx]  # in place: the weights stay where they are
    rest = []
    for node in graph.node:  # nodes are small: the constants go first, in order
        copy = type(node)()
        copy.CopyFrom(node)
        rest.append(copy)
    del graph.node[:]
    graph.node.extend(nodes + rest)


def _size(init: Any) -> int:
    n = 1
    for d in init.dims:
        n *= int(d)
    return n


def _without_weights(onx: Any) -> Any:
    """A copy for shape inference: large initializers become typed inputs (no bytes copied)."""
    import onnx

    light = onnx.ModelProto()
    light.ir_version = onx.ir_version
    light.opset_import.extend(onx.opset_import)
    g, lg = onx.graph, light.graph
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    for init in g.initializer:
        if _size(init) <= _SMALL or init.data_type not in _FLOAT_TYPES:
            lg.initializer.append(init)
        else:
            lg.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    return light


def _opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not isinstance(opset, int) or not 9 <= opset <= 18:
        raise ConversionError(f"target_opset {opset!r}: tf2onnx supports opsets 9 to 18")
    return opset


# --------------------------------------------------------------------------- entry point


def _kind(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return "saved_model"
    for cls in type(model).__mro__:
        if (cls.__module__ or "").split(".")[0] == "keras":
            return "keras"
    return "module"


def convert(
    model: Any,
    sample_input: Any,
    *,
    target_opset: int | None = None,
    options: TensorFlowOptions | None = None,
) -> Converted:
    """Export a Keras model, a tf.Module or a SavedModel directory (see the module docstring)."""
    opts = options or TensorFlowOptions()
    dynamic_axes, optimizer = opts.dynamic_axes, opts.optimizer
    training_state, signature = opts.training_state, opts.signature
    kind = _kind(model)
    tf, tf2onnx, keras = _import(kind == "keras")
    opset = _opset(target_opset)
    if sample_input is None:
        raise ConversionError(
            "sample_input is required: an array, a list of arrays or a dict "
            "of named arrays, as the model takes them"
        )
    if kind != "keras":
        if optimizer is not None or training_state:
            raise ConversionError(
                "training state (optimizer=, training_state=True) is stored for Keras models only"
            )
    elif signature is not None:
        raise ConversionError(
            "signature= names a tf.Module method or a SavedModel "
            "signature; a Keras model is exported through its call()"
        )

    if kind == "keras":
        if not isinstance(model, keras.Model):
            raise ConversionError(
                f"expected a keras.Model, got {type(model).__qualname__} "
                "(wrap a layer in a keras.Model)"
            )
        plan = _keras_plan(tf, keras, model, sample_input, dynamic_axes)
    elif kind == "module":
        if not isinstance(model, tf.Module):
            raise ConversionError(
                f"expected a keras.Model or a tf.Module, got {type(model).__qualname__}"
            )
        plan = _module_plan(tf, model, sample_input, signature, dynamic_axes)
    else:
        path = os.fspath(model)
        plan = _saved_model_plan(tf, path, sample_input, signature, dynamic_axes)

    with _quiet_loggers():
        try:
            tensors = [tf.constant(a) for a in plan.arrays]
            if kind == "keras" and not model.built:
                plan.call(tensors)  # builds it: its variables go where Keras puts them
            # on the CPU, as onnxruntime will check it: a GPU's TF32 matmuls would not match
            with tf.device("/cpu:0"):
                out = plan.call(tensors)
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(f"{plan.label} fails on sample_input: {_first_line(e)}") from e
        out_names, out_values = _outputs(tf, out, plan.label)
        clash = set(out_names) & set(plan.names)
        if clash:
            raise ConversionError(
                f"output name(s) {sorted(clash)} are also input names; rename the dict keys"
            )
        reference = {n: np.asarray(v) for n, v in zip(out_names, out_values, strict=True)}
        state = None
        if kind == "keras" and training_state is not False:
            from ..training import keras as training_keras

            state = training_keras.capture(model, optimizer)
        with quiet_native_stderr():  # grappler logs natively while tf2onnx runs
            onx, fed, fallback = _trace_and_convert(tf, tf2onnx, plan, len(out_names), opset)
    if fallback is not None:
        warnings.warn(
            ExportFallbackWarning(
                f"{plan.label}: tracing with the variables as inputs failed ({fallback}); exported "
                "with them frozen into constants instead, which tf2onnx may fold or transform "
                "(those variables are kept in the training state)",
                fallback.__cause__ or fallback,
            ),
            stacklevel=4,
        )
    _unsupported(onx, plan)
    _canonical_names(onx)
    _name_io(onx, plan, out_names, _bind_variables(onx, fed))
    _output_dims(onx)

    tidy(onx)
    variables = plan.variables()
    fed_paths = {path for path, _ in fed.values()}
    # fed variables are initializers of their exact value already; name the others
    adopt_state_names(onx, {k: v for k, v in variables.items() if k not in fed_paths})
    _small_constants_to_nodes(onx, set(variables) | fed_paths)
    feeds = dict(zip(plan.names, plan.arrays, strict=True))
    version = keras.__version__ if keras is not None else tf.__version__
    return Converted(
        model=onx,
        task="generic",
        framework=plan.framework,
        framework_version=version,
        converter="tf2onnx",
        converter_version=tf2onnx.__version__,
        feeds=feeds,
        reference=reference,
        methods={"predict": Method(out_names[0])},
        training=state,
    )
