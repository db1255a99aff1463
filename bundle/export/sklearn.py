"""scikit-learn estimators and pipelines, through skl2onnx.

The sample input decides the graph's inputs: a 2-D array becomes one float32
input ``X``; a pandas DataFrame becomes one ``[N, 1]`` input per column (float
for numeric columns, int64 for integer ones, string for object/category ones),
which is how skl2onnx maps a ``ColumnTransformer`` over named columns.
Classifiers are converted without ZipMap, so they give a label tensor and a
probability matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConversionError
from ..format.manifest import Column, Method
from . import Converted

_INSTALL = "install the scikit-learn extra: pip install 'model-bundle[sklearn]'"


def _import() -> tuple[Any, Any]:
    try:
        import skl2onnx
        import sklearn
    except ImportError as e:
        raise ConversionError(f"saving a scikit-learn model needs {e.name}; {_INSTALL}") from e
    return sklearn, skl2onnx


def _final_estimator(model: Any) -> Any:
    while hasattr(model, "steps"):
        model = model.steps[-1][1]
    return model


def _bool_safe(converter: Any) -> Any:
    """Wrap a skl2onnx converter so boolean values in list attributes become ints.

    skl2onnx 1.20 passes HistGradientBoosting's ``missing_go_to_left`` flags
    (numpy bools from scikit-learn >= 1.6) into an integer-list attribute, which
    onnx refuses. The values are 0/1 either way; only their Python type is wrong.
    """

    def fixed(scope: Any, operator: Any, container: Any) -> Any:
        original = container.add_node

        def add_node(*args: Any, **attrs: Any) -> Any:
            for key, value in attrs.items():
                if isinstance(value, list) and any(isinstance(v, (bool, np.bool_))
                                                   for v in value):
                    attrs[key] = [int(v) for v in value]
            return original(*args, **attrs)

        container.add_node = add_node
        try:
            return converter(scope, operator, container)
        finally:
            del container.add_node

    return fixed


def _custom_converters() -> dict[type, Any]:
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return {
        HistGradientBoostingClassifier: _bool_safe(convert_sklearn_random_forest_classifier),
        HistGradientBoostingRegressor: _bool_safe(
            convert_sklearn_random_forest_regressor_converter),
    }


def _is_dataframe(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "dtypes") and hasattr(x, "iloc")


def tabular_inputs(df: Any) -> tuple[list[tuple[str, Any]], dict[str, np.ndarray],
                                     tuple[Column, ...]]:
    """skl2onnx initial types, ONNX feeds and column descriptions for a DataFrame."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    types: list[tuple[str, Any]] = []
    feeds: dict[str, np.ndarray] = {}
    columns: list[Column] = []
    for name in df.columns:
        if not isinstance(name, str):
            raise ConversionError(f"DataFrame column {name!r} is not a string; name every "
                                  "column with a string")
        kind_char = df[name].dtype.kind
        values = df[name]
        if kind_char == "f" or kind_char == "b":
            kind, tensor = ("numeric" if kind_char == "f" else "bool"), FloatTensorType([None, 1])
            arr = values.to_numpy(dtype=np.float32)
        elif kind_char in "iu":
            kind, tensor = "integer", Int64TensorType([None, 1])
            arr = values.to_numpy(dtype=np.int64)
        else:
            kind, tensor = "string", StringTensorType([None, 1])
            arr = values.astype(str).to_numpy(dtype=object)
        types.append((name, tensor))
        feeds[name] = arr.reshape(-1, 1)
        columns.append(Column(name, kind, name))
    return types, feeds, tuple(columns)


def _array_inputs(x: Any) -> tuple[list[tuple[str, Any]], dict[str, np.ndarray]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ConversionError(f"sample_input must be 2-D (rows x features), got shape "
                              f"{arr.shape}")
    if arr.dtype.kind in "OUS":
        feeds = {"X": arr.astype(str).astype(object)}
        return [("X", StringTensorType([None, arr.shape[1]]))], feeds
    if arr.dtype.kind not in "fiub":
        raise ConversionError(f"sample_input has dtype {arr.dtype}; give numbers or strings")
    return [("X", FloatTensorType([None, arr.shape[1]]))], {"X": arr.astype(np.float32)}


def _task(sklearn: Any, model: Any) -> str:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return "classifier"
    if is_regressor(model):
        return "regressor"
    if hasattr(model, "cluster_centers_") or getattr(model, "_estimator_type", "") == "clusterer":
        return "clusterer"
    if hasattr(model, "transform"):
        return "transformer"
    return "generic"


def _has(model: Any, method: str) -> bool:
    try:
        return callable(getattr(model, method))
    except AttributeError:  # e.g. SVC(probability=False).predict_proba
        return False


def convert(model: Any, sample_input: Any, *, target_opset: int | None = None,
            **_: Any) -> Converted:
    """Convert a fitted scikit-learn estimator or pipeline."""
    sklearn, skl2onnx = _import()
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    name = type(model).__name__
    try:
        check_is_fitted(model)
    except NotFittedError as e:
        raise ConversionError(f"{name} is not fitted: call fit() before saving it") from e
    except TypeError as e:
        raise ConversionError(f"{name} is not a scikit-learn estimator: {e}") from e
    if sample_input is None:
        raise ConversionError("sample_input is required: a few rows of what the model "
                              "predicts on (a 2-D array or a DataFrame)")
    if _is_dataframe(sample_input):
        types, feeds, columns = tabular_inputs(sample_input)
    else:
        (types, feeds), columns = _array_inputs(sample_input), ()
    task = _task(sklearn, model)
    final = _final_estimator(model)
    options = {id(final): {"zipmap": False}} if task == "classifier" else None
    try:
        onx = skl2onnx.convert_sklearn(
            model, initial_types=types, options=options, target_opset=target_opset,
            custom_conversion_functions=_custom_converters())
    except Exception as e:  # skl2onnx raises bare RuntimeError/ValueError/...: wrap them all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"skl2onnx cannot convert {name} (final step {type(final).__name__}): {first[:300]}. "
            "If a step has no ONNX converter, register one with "
            "skl2onnx.update_registered_converter, or convert the model to ONNX yourself and "
            "save the .onnx file") from e

    onx.graph.name = name  # skl2onnx names the graph with a random UUID: not reproducible
    outputs = [o.name for o in onx.graph.output]
    plan: list[tuple[str, str]] = []  # (method, output)
    if task == "classifier":
        plan.append(("predict", outputs[0]))
        if len(outputs) > 1:
            second = "predict_proba" if _has(model, "predict_proba") else "decision_function"
            plan.append((second, outputs[1]))
    elif task == "clusterer":
        plan.append(("predict", outputs[0]))
        if len(outputs) > 1 and _has(model, "transform"):
            plan.append(("transform", outputs[1]))
    elif task == "transformer":
        plan.append(("transform", outputs[0]))
    else:
        plan.append(("predict", outputs[0]))

    from ..format.graph import io_specs

    shapes = {spec.name: spec.shape for spec in io_specs(onx)[1]}
    methods: dict[str, Method] = {}
    reference: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for method, output in plan:
        if not _has(model, method):
            continue
        ref = getattr(model, method)(sample_input)
        ref = np.asarray(ref.toarray() if hasattr(ref, "toarray") else ref)  # scipy.sparse
        rank = len(shapes[output])
        if ref.ndim == rank:
            squeeze = False
        elif ref.ndim + 1 == rank and shapes[output][-1] == 1:
            squeeze = True
        else:
            notes.append(f"{method}() not offered: original gives rank {ref.ndim}, ONNX output "
                         f"{output!r} has shape {list(shapes[output])}")
            continue
        methods[method] = Method(output, squeeze)
        reference[output] = ref
    if "predict" not in methods and "transform" not in methods:
        raise ConversionError(f"{name}: the ONNX outputs do not correspond to predict() or "
                              f"transform() ({'; '.join(notes)})")
    return Converted(
        model=onx, task=task, framework="scikit-learn", framework_version=sklearn.__version__,
        converter="skl2onnx", converter_version=skl2onnx.__version__, feeds=feeds,
        reference=reference, methods=methods, columns=columns, notes=tuple(notes))
