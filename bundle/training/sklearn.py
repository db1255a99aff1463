"""scikit-learn training state: incremental estimators resume ``partial_fit`` exactly,
without pickle.

The same two entries as PyTorch's and Keras's (:mod:`bundle.training.codec`),
role ``training_state``. ``training/state.safetensors`` holds every number,
exactly (arrays, numpy and Python floats as 0-d tensors, the Mersenne-Twister key
of a ``RandomState``); ``training/state.json`` holds the structure and the typed
values JSON holds exactly (ints, strings, booleans, None)::

    {"format": "model-bundle/training-state", "version": 1,
     "framework": {"name": "scikit-learn", "version": "1.9.1"},
     "model": {"kind": "pipeline" | "estimator", "steps": [
         {"name": "scale", "class": "sklearn.preprocessing.StandardScaler",
          "params": {"copy": {"type": "bool", "value": true}, ...},
          "state": {"mean_": {"type": "array", "tensor": "model/0/mean_"},
                    "n_samples_seen_": {"type": "scalar", "tensor": "..."}, ...}}]},
     "optimizer": null, "scheduler": null, "rng": null}

Only the classes of :data:`ALLOWED` are saved or restored, and of each only the
attributes listed there (an estimator holding a fitted attribute the list does
not name is refused at save, so no state is silently dropped). Nested objects --
MLP's ``LabelBinarizer`` and its Adam/SGD optimizer, ``RandomState`` -- are
rebuilt from their own lists, never by importing a name the file gives: the
class names in the file are only compared against :data:`ALLOWED`.

Restoring fills the estimator the caller built (``bundle.restore(path,
model=SGDClassifier(...))``, or a ``Pipeline`` of such steps): class and
constructor parameters must be the saved ones -- a different ``eta0`` or
``random_state`` would not continue the same run -- and every mismatch is listed
together; nothing is assigned unless all fit. The estimator's own fitted
attributes are then replaced by the saved ones, so ``partial_fit`` continues as
if the model had never been saved.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError, FormatError, InputError
from ..format import canonical_json as _json
from .codec import FORMAT, MAX_DEPTH, STATE_JSON, STATE_TENSORS, VERSION, object_with, read_state

if TYPE_CHECKING:
    from ..trust.verify import VerifiedBundle, VerifyReport

__all__ = [
    "ALLOWED",
    "DERIVED",
    "SklearnTrainingState",
    "capture",
    "is_incremental",
    "restore_verified",
    "unsupported_steps",
]

_COMMON = ("n_features_in_", "feature_names_in_")
_SGD = (
    *_COMMON,
    "coef_",
    "intercept_",
    "t_",
    "n_iter_",
    "classes_",
    "_expanded_class_weight",
    "_average_coef",
    "_average_intercept",
    "_standard_coef",
    "_standard_intercept",
    "loss_curve_",
)
# Set by the constructors of these SGD subclasses (not constructor parameters).
_PA = ("penalty", "learning_rate", "epsilon", "alpha", "l1_ratio", "eta0", "power_t")
_PERCEPTRON = ("loss", "learning_rate", "epsilon", "power_t", "average")
_NB = (
    *_COMMON,
    "classes_",
    "class_count_",
    "feature_count_",
    "feature_log_prob_",
    "class_log_prior_",
)
_MLP = (
    *_COMMON,
    "loss",
    "classes_",
    "_label_binarizer",
    "n_outputs_",
    "_random_state",
    "n_iter_",
    "t_",
    "n_layers_",
    "out_activation_",
    "coefs_",
    "intercepts_",
    "_best_coefs",
    "_best_intercepts",
    "loss_curve_",
    "_no_improvement_count",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "_optimizer",
    "loss_",
)

ALLOWED: Mapping[str, tuple[str, ...]] = {
    "sklearn.linear_model.SGDClassifier": _SGD,
    "sklearn.linear_model.SGDRegressor": _SGD,
    "sklearn.linear_model.PassiveAggressiveClassifier": (*_SGD, *_PA),
    "sklearn.linear_model.PassiveAggressiveRegressor": (*_SGD, *_PA),
    "sklearn.linear_model.Perceptron": (*_SGD, *_PERCEPTRON),
    "sklearn.naive_bayes.MultinomialNB": _NB,
    "sklearn.naive_bayes.BernoulliNB": _NB,
    "sklearn.naive_bayes.GaussianNB": (
        *_COMMON,
        "classes_",
        "epsilon_",
        "theta_",
        "var_",
        "class_count_",
        "class_prior_",
    ),
    "sklearn.cluster.MiniBatchKMeans": (
        *_COMMON,
        "_random_state",
        "n_steps_",
        "_tol",
        "_n_init",
        "_batch_size",
        "_init_size",
        "_n_threads",
        "cluster_centers_",
        "_counts",
        "_n_since_last_reassign",
        "labels_",
        "inertia_",
        "_n_features_out",
        "_ewa_inertia",
        "_ewa_inertia_min",
        "_no_improvement",
        "n_iter_",
        "_init",
    ),
    "sklearn.decomposition.IncrementalPCA": (
        *_COMMON,
        "components_",
        "n_components_",
        "n_samples_seen_",
        "mean_",
        "var_",
        "singular_values_",
        "explained_variance_",
        "explained_variance_ratio_",
        "noise_variance_",
        "batch_size_",
        "_n_features_out",
    ),
    "sklearn.preprocessing.StandardScaler": (
        *_COMMON,
        "n_samples_seen_",
        "mean_",
        "var_",
        "scale_",
    ),
    "sklearn.preprocessing.MinMaxScaler": (
        *_COMMON,
        "n_samples_seen_",
        "scale_",
        "min_",
        "data_min_",
        "data_max_",
        "data_range_",
    ),
    "sklearn.neural_network.MLPClassifier": _MLP,
    "sklearn.neural_network.MLPRegressor": _MLP,
    # objects inside those estimators, rebuilt attribute by attribute
    "sklearn.preprocessing.LabelBinarizer": (
        "neg_label",
        "pos_label",
        "sparse_output",
        "y_type_",
        "sparse_input_",
        "classes_",
    ),
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer": (
        "learning_rate_init",
        "learning_rate",
        "beta_1",
        "beta_2",
        "epsilon",
        "t",
        "ms",
        "vs",
    ),
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer": (
        "learning_rate_init",
        "learning_rate",
        "lr_schedule",
        "momentum",
        "nesterov",
        "power_t",
        "velocities",
    ),
}
"""Class (its public import path) -> the attributes saved and restored."""

DERIVED: Mapping[str, tuple[str, ...]] = {
    name: ("_loss_function_",) for name in ALLOWED if "linear_model" in name
}
"""Attributes not saved because ``partial_fit`` recomputes them from the parameters
(the Cython loss object of SGD estimators)."""

_NESTED = {
    "sklearn.preprocessing.LabelBinarizer",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
}


def _class_path(obj: Any) -> str:
    """The public import path of an object's class (``sklearn.linear_model.SGDClassifier``):
    the module path without its private parts, if the class is really there."""
    import importlib

    cls = type(obj)
    module = cls.__module__ or ""
    parts = module.split(".")
    public = ".".join(p for p in parts if not p.startswith("_"))
    if public != module:
        try:
            if getattr(importlib.import_module(public), cls.__name__, None) is cls:
                return f"{public}.{cls.__name__}"
        except ImportError:
            pass
    return f"{module}.{cls.__name__}"


def _steps(model: Any) -> tuple[str, list[tuple[str | None, Any]]]:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return "pipeline", [(name, est) for name, est in model.steps]
    return "estimator", [(None, model)]


def unsupported_steps(model: Any) -> list[str]:
    """The steps of ``model`` whose class has no allow-listed training state."""
    _, steps = _steps(model)
    return [
        f"{name or 'model'} ({type(est).__name__})"
        for name, est in steps
        if est in (None, "passthrough")
        or _class_path(est) not in ALLOWED
        or _class_path(est) in _NESTED
    ]


def is_incremental(model: Any) -> bool:
    """Whether every step of ``model`` is an allow-listed incremental estimator."""
    return not unsupported_steps(model)


def _fitted_names(est: Any) -> list[str]:
    params = set(est.get_params(deep=False)) if hasattr(est, "get_params") else set()
    return [k for k in vars(est) if k not in params]


# --------------------------------------------------------------------------- save side


class _Encoder:
    """Typed JSON for values, numbers into tensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def tensor(self, key: str, arr: np.ndarray) -> str:
        if arr.dtype.name not in _TENSOR_DTYPES:
            raise ConversionError(
                f"{key}: a {arr.dtype} array cannot be stored in the training state"
            )
        self.tensors[key] = np.array(arr, order="C", copy=True)  # ascontiguousarray makes 0-d 1-d
        return key

    def value(self, v: Any, key: str, depth: int = 0) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise ConversionError(f"{key}: nested deeper than {MAX_DEPTH}")
        if v is None:
            return {"type": "none"}
        if isinstance(v, (bool, np.bool_)) and not isinstance(v, np.ndarray):
            if isinstance(v, np.bool_):
                return {"type": "scalar", "tensor": self.tensor(key, np.asarray(v))}
            return {"type": "bool", "value": v}
        if isinstance(v, int) and not isinstance(v, np.integer):
            return {"type": "int", "value": v}
        if isinstance(v, float) and not isinstance(v, np.floating):
            return {"type": "float", "tensor": self.tensor(key, np.asarray(v, np.float64))}
        if isinstance(v, str):
            return {"type": "str", "value": v}
        if isinstance(v, (np.integer, np.floating)):
            return {"type": "scalar", "tensor": self.tensor(key, np.asarray(v))}
        if isinstance(v, np.ndarray):
            if v.dtype.kind in "OUS":
                items = v.ravel().tolist()
                if not all(isinstance(s, str) for s in items):
                    raise ConversionError(
                        f"{key}: an object array holding other things than strings cannot be stored"
                    )
                return {
                    "type": "str_array",
                    "dtype": "object" if v.dtype.kind == "O" else v.dtype.str,
                    "shape": list(v.shape),
                    "values": items,
                }
            return {"type": "array", "tensor": self.tensor(key, v)}
        if isinstance(v, (list, tuple)):
            return {
                "type": "list" if isinstance(v, list) else "tuple",
                "items": [self.value(x, f"{key}/{i}", depth + 1) for i, x in enumerate(v)],
            }
        if isinstance(v, np.random.RandomState):
            name, keys, pos, has_gauss, cached = v.get_state(legacy=True)
            return {
                "type": "random_state",
                "bit_generator": str(name),
                "keys": self.tensor(f"{key}/keys", np.asarray(keys)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": self.tensor(
                    f"{key}/cached_gaussian", np.asarray(cached, np.float64)
                ),
            }
        path = _class_path(v)
        if path in _NESTED:
            return {
                "type": "object",
                "class": path,
                "state": self.attributes(v, path, key, depth + 1, names=list(vars(v))),
            }
        raise ConversionError(
            f"{key}: a {type(v).__module__}.{type(v).__qualname__} cannot be "
            "stored in the training state"
        )

    def attributes(
        self, est: Any, path: str, key: str, depth: int, names: list[str]
    ) -> dict[str, Any]:
        allowed = set(ALLOWED[path])
        derived = set(DERIVED.get(path, ()))
        unknown = [n for n in names if n not in allowed and n not in derived]
        if unknown:
            raise ConversionError(
                f"{type(est).__name__} has fitted attribute(s) {unknown} that model-bundle's "
                "allow-list does not know (a newer scikit-learn?); its training state cannot be "
                "saved completely: save with SklearnOptions(training_state=False)"
            )
        return {n: self.value(getattr(est, n), f"{key}/{n}", depth) for n in names if n in allowed}


_TENSOR_DTYPES = (
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


@dataclass
class SklearnTrainingState:
    """The typed document and tensors of an estimator's (or pipeline's) fitted state."""

    framework_version: str
    model: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def entries(self, weights: Mapping[str, np.ndarray]) -> list[tuple[str, bytes]]:
        """The two entries (``weights`` is unused: the state is float64, the graph float32)."""
        from ..format.weights import serialize

        doc = {
            "format": FORMAT,
            "version": VERSION,
            "framework": {"name": "scikit-learn", "version": self.framework_version},
            "model": self.model,
            "optimizer": None,
            "scheduler": None,
            "rng": None,
        }
        return [(STATE_JSON, _json.dumps(doc)), (STATE_TENSORS, serialize(self.tensors))]


def _params(est: Any, enc: _Encoder, key: str) -> dict[str, Any]:
    """The constructor parameters JSON can hold (others -- a RandomState, a callable --
    are left to the caller's estimator)."""
    return {
        name: enc.value(value, f"{key}/params/{name}")
        for name, value in est.get_params(deep=False).items()
        if _simple(value)
    }


def _simple(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_simple(x) for x in v)
    return v is None or type(v) in (bool, int, float, str)


def _estimator_names() -> list[str]:
    return sorted(p.rsplit(".", 1)[1] for p in ALLOWED if p not in _NESTED)


def capture(model: Any) -> SklearnTrainingState:
    """Snapshot a fitted allow-listed estimator (or a Pipeline of them)."""
    import sklearn

    bad = unsupported_steps(model)
    if bad:
        raise ConversionError(
            f"no training state for {', '.join(bad)}: scikit-learn training state is kept for "
            f"incremental estimators ({', '.join(_estimator_names())}) and Pipelines of them"
        )
    kind, steps = _steps(model)
    enc = _Encoder()
    docs = []
    for i, (name, est) in enumerate(steps):
        path = _class_path(est)
        key = f"model/{i}"
        docs.append(
            {
                "name": name,
                "class": path,
                "params": _params(est, enc, key),
                "state": enc.attributes(est, path, key, 1, _fitted_names(est)),
            }
        )
    return SklearnTrainingState(sklearn.__version__, {"kind": kind, "steps": docs}, enc.tensors)


# --------------------------------------------------------------------------- restore side


class _Decoder:
    def __init__(self, data: bytes | bytearray | mmap.mmap) -> None:
        from ..format.weights import parse_header

        self.header = parse_header(bytes(data), len(data), entry=STATE_TENSORS)
        self.view = memoryview(data)

    def tensor(self, key: Any, where: str) -> np.ndarray:
        from ..format.weights import numpy_dtype

        info = self.header.tensors.get(key) if isinstance(key, str) else None
        if info is None:
            raise FormatError(
                f"{STATE_JSON}: {where} refers to tensor {key!r}, which "
                f"{STATE_TENSORS} does not hold",
                entry=STATE_JSON,
            )
        dtype = numpy_dtype(info)
        if dtype is None:
            raise FormatError(
                f"{STATE_TENSORS}: tensor {key!r} is {info.dtype}", entry=STATE_TENSORS
            )
        begin, end = self.header.data_start + info.begin, self.header.data_start + info.end
        # a copy: partial_fit updates arrays in place, and the bundle's bytes are read-only
        return np.frombuffer(self.view[begin:end], dtype=dtype).reshape(info.shape).copy()

    def value(self, node: Any, where: str, depth: int = 0) -> Any:
        if depth > MAX_DEPTH or not isinstance(node, dict) or "type" not in node:
            raise FormatError(f"{STATE_JSON}: {where} is not a typed value", entry=STATE_JSON)
        t = node["type"]
        if t == "none":
            return None
        if t in ("bool", "int", "str"):
            v = object_with(node, where, {"type", "value"})["value"]
            want = {"bool": bool, "int": int, "str": str}[t]
            if type(v) is not want:
                raise FormatError(f"{STATE_JSON}: {where} is not a {t}", entry=STATE_JSON)
            return v
        if t == "float":
            return float(self.tensor(object_with(node, where, {"type", "tensor"})["tensor"], where))
        if t == "scalar":
            arr = self.tensor(object_with(node, where, {"type", "tensor"})["tensor"], where)
            if arr.shape != ():
                raise FormatError(f"{STATE_JSON}: {where} is not a scalar", entry=STATE_JSON)
            return arr[()]
        if t == "array":
            return self.tensor(object_with(node, where, {"type", "tensor"})["tensor"], where)
        if t == "str_array":
            n = object_with(node, where, {"type", "dtype", "shape", "values"})
            values, shape = n["values"], n["shape"]
            if (
                not isinstance(values, list)
                or not all(isinstance(s, str) for s in values)
                or not isinstance(shape, list)
                or not all(type(d) is int and d >= 0 for d in shape)
                or int(np.prod(shape)) != len(values)
                or not isinstance(n["dtype"], str)
            ):
                raise FormatError(f"{STATE_JSON}: {where} is not a string array", entry=STATE_JSON)
            dtype: Any = object if n["dtype"] == "object" else np.dtype(n["dtype"])
            if dtype is not object and dtype.kind not in "US":
                raise FormatError(
                    f"{STATE_JSON}: {where} has dtype {n['dtype']!r}", entry=STATE_JSON
                )
            return np.array(values, dtype=dtype).reshape(shape)
        if t in ("list", "tuple"):
            items = object_with(node, where, {"type", "items"})["items"]
            if not isinstance(items, list):
                raise FormatError(f"{STATE_JSON}: {where}.items must be a list", entry=STATE_JSON)
            out = [self.value(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(items)]
            return out if t == "list" else tuple(out)
        if t == "random_state":
            n = object_with(
                node,
                where,
                {"type", "bit_generator", "keys", "pos", "has_gauss", "cached_gaussian"},
            )
            keys = self.tensor(n["keys"], where)
            cached = self.tensor(n["cached_gaussian"], where)
            if (
                n["bit_generator"] != "MT19937"
                or keys.dtype != np.uint32
                or keys.shape != (624,)
                or type(n["pos"]) is not int
                or type(n["has_gauss"]) is not int
                or cached.shape != ()
            ):
                raise FormatError(
                    f"{STATE_JSON}: {where} is not an MT19937 RandomState state", entry=STATE_JSON
                )
            rs = np.random.RandomState()
            try:
                rs.set_state(("MT19937", keys, n["pos"], n["has_gauss"], float(cached)))
            except (ValueError, TypeError) as e:
                raise FormatError(f"{STATE_JSON}: {where}: {e}", entry=STATE_JSON) from e
            return rs
        if t == "object":
            n = object_with(node, where, {"type", "class", "state"})
            if n["class"] not in _NESTED:
                raise FormatError(
                    f"{STATE_JSON}: {where} is a {n['class']!r}, which is not on the allow-list",
                    entry=STATE_JSON,
                )
            obj: Any = object.__new__(_nested_class(n["class"]))
            for name, value in self.state(n["state"], n["class"], where, depth + 1).items():
                setattr(obj, name, value)
            return obj
        raise FormatError(f"{STATE_JSON}: {where} has unknown type {t!r}", entry=STATE_JSON)

    def state(self, node: Any, path: str, where: str, depth: int) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise FormatError(f"{STATE_JSON}: {where}.state must be an object", entry=STATE_JSON)
        allowed = set(ALLOWED[path])
        extra = sorted(set(node) - allowed)
        if extra:
            raise FormatError(
                f"{STATE_JSON}: {where} sets {extra}, which the allow-list for "
                f"{path} does not name",
                entry=STATE_JSON,
            )
        return {k: self.value(v, f"{where}.{k}", depth) for k, v in node.items()}


def _nested_class(path: str) -> type:
    # The three classes are named here, not imported by a name the file gives.
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
    from sklearn.preprocessing import LabelBinarizer

    classes: dict[str, type] = {
        "sklearn.preprocessing.LabelBinarizer": LabelBinarizer,
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer": AdamOptimizer,
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer": SGDOptimizer,
    }
    return classes[path]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def restore_verified(vb: VerifiedBundle, model: Any) -> VerifyReport:
    """Fill ``model`` (an allow-listed estimator or a Pipeline of them, built with the
    saved constructor parameters) with a verified bundle's scikit-learn training state.

    Every mismatch is found first and reported together (:class:`InputError`);
    nothing is assigned unless all fit.
    """
    doc, tensor_bytes = read_state(vb)
    fw = object_with(doc["framework"], "framework", {"name", "version"})
    if fw["name"] != "scikit-learn":
        raise InputError(
            f"{vb.report.path} holds {fw['name']!r} training state; it restores "
            f"into a {fw['name']} model, not a scikit-learn one"
        )
    mdoc = object_with(doc["model"], "model", {"kind", "steps"})
    saved = mdoc["steps"]
    if not isinstance(saved, list) or mdoc["kind"] not in ("pipeline", "estimator"):
        raise FormatError(f"{STATE_JSON}: model.steps must be a list", entry=STATE_JSON)
    kind, steps = _steps(model)
    problems: list[str] = []
    if kind != mdoc["kind"] or len(steps) != len(saved):
        problems.append(
            f"the bundle holds a {mdoc['kind']} of {len(saved)} step(s); a {kind} "
            f"of {len(steps)} was given"
        )
    decoder = _Decoder(tensor_bytes)
    plans: list[tuple[Any, dict[str, Any]]] = []
    for i, ((name, est), sdoc) in enumerate(zip(steps, saved, strict=False)):
        where = f"model.steps[{i}]"
        sdoc = object_with(sdoc, where, {"name", "class", "params", "state"})
        label = name or type(est).__name__
        path = _class_path(est)
        if sdoc["name"] != name:
            problems.append(f"step {i}: named {name!r}, the bundle's is {sdoc['name']!r}")
            continue
        if sdoc["class"] not in ALLOWED or sdoc["class"] in _NESTED:
            raise FormatError(
                f"{STATE_JSON}: {where} is a {sdoc['class']!r}, which is not on the allow-list",
                entry=STATE_JSON,
            )
        if path != sdoc["class"]:
            problems.append(f"{label}: a {path} was given, the bundle holds a {sdoc['class']}")
            continue
        if not isinstance(sdoc["params"], dict):
            raise FormatError(f"{STATE_JSON}: {where}.params must be an object", entry=STATE_JSON)
        given = est.get_params(deep=False)
        for pname, typed in sorted(sdoc["params"].items()):
            want = decoder.value(typed, f"{where}.params.{pname}")
            if pname not in given:
                problems.append(
                    f"{label}: the bundle's parameter {pname}={want!r} does not "
                    "exist in this scikit-learn"
                )
            elif not _same(given[pname], want):
                problems.append(
                    f"{label}: {pname}={given[pname]!r} given, the bundle was "
                    f"trained with {pname}={want!r}"
                )
        plans.append((est, decoder.state(sdoc["state"], sdoc["class"], where, 1)))
    if problems:
        raise InputError(
            "the given estimator does not match the bundle's training state; "
            "nothing was loaded:\n  - " + "\n  - ".join(problems)
        )
    # -- everything fits: replace the fitted state
    for est, state in plans:
        for name in _fitted_names(est):
            delattr(est, name)
        for name, value in state.items():
            setattr(est, name, value)
    return vb.report
