"""scikit-learn estimators and pipelines (and XGBoost/LightGBM models), through skl2onnx.

The sample input decides the graph's inputs:

* a 2-D array becomes one float32 input ``X`` (``[N, features]``; strings: a string input);
* a 1-D array of strings (what text pipelines take) becomes one string input ``X`` of
  shape ``[N]``;
* a pandas DataFrame becomes one ``[N, 1]`` input per column (float for numeric
  columns, int64 for integer ones, string for object/category ones), which is how
  skl2onnx maps a ``ColumnTransformer`` over named columns. A model that does not
  start with a ``ColumnTransformer`` (a RandomForest fitted on a DataFrame) takes
  its numeric columns as ``[N, 1]`` float inputs joined, in the fitted column order,
  by a ``Concat`` in front of the converted graph -- so ``predict`` takes the
  DataFrame either way.

Classifiers are converted without ZipMap (where their converter has the option), so
they give a label tensor and a probability or score matrix. XGBoost and LightGBM
models, bare or inside pipelines, use onnxmltools' converters, registered with
skl2onnx on first use (:mod:`bundle.export.boosting`). Every converted graph is
tidied (local functions inlined) and run by onnxruntime on the sample before it is
handed on: a graph that could not be loaded is never saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..format.manifest import Column, Method
from . import Converted, boosting
from .options import SklearnOptions

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
                if isinstance(value, list) and any(isinstance(v, (bool, np.bool_)) for v in value):
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
            convert_sklearn_random_forest_regressor_converter
        ),
    }


def _is_dataframe(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "dtypes") and hasattr(x, "iloc")


def _estimators(model: Any) -> list[Any]:
    """``model`` and every estimator inside it (parameters and fitted clones), once each."""
    seen: dict[int, Any] = {}
    todo = [model]
    while todo:
        est = todo.pop()
        if id(est) in seen or isinstance(est, (str, bytes, type)):
            continue
        seen[id(est)] = est
        try:
            params = est.get_params(deep=False)
        except Exception:  # noqa: S112 - not an estimator: nothing inside to walk
            continue
        children: list[Any] = []
        for value in params.values():
            children.extend(_candidates(value))
        for attr in (
            "steps",
            "transformers_",
            "estimators_",
            "estimator_",
            "estimators",
            "named_estimators_",
            "transformer_list",
        ):
            children.extend(_candidates(getattr(est, attr, None)))
        todo.extend(c for c in children if hasattr(c, "get_params"))
    return list(seen.values())


def _candidates(value: Any) -> list[Any]:
    if hasattr(value, "get_params"):
        return [value]
    if isinstance(value, Mapping):
        return [v for v in value.values() if hasattr(v, "get_params")]
    if isinstance(value, (list, tuple)):
        out: list[Any] = []
        for item in value:
            if isinstance(item, (list, tuple)):
                out.extend(x for x in item if hasattr(x, "get_params"))
            elif hasattr(item, "get_params"):
                out.append(item)
        return out
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [v for v in value.ravel() if hasattr(v, "get_params")]
    return []


def _first_step(model: Any) -> Any:
    while hasattr(model, "steps") and model.steps:
        model = model.steps[0][1]
    return model


def _takes_columns(model: Any) -> bool:
    """Whether skl2onnx maps a DataFrame's columns to the model's inputs one by one."""
    from sklearn.compose import ColumnTransformer

    return isinstance(_first_step(model), ColumnTransformer)


def tabular_inputs(
    df: Any,
    *,
    numeric_as_float: bool = False,
) -> tuple[list[tuple[str, Any]], dict[str, np.ndarray], tuple[Column, ...]]:
    """skl2onnx initial types, ONNX feeds and column descriptions for a DataFrame.

    ``numeric_as_float``: integer columns become float inputs too (they are joined
    into one float matrix for a model that does not split columns itself).
    """
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    types: list[tuple[str, Any]] = []
    feeds: dict[str, np.ndarray] = {}
    columns: list[Column] = []
    for name in df.columns:
        if not isinstance(name, str):
            raise ConversionError(
                f"DataFrame column {name!r} is not a string; name every column with a string"
            )
        kind_char = df[name].dtype.kind
        values = df[name]
        if kind_char == "f" or kind_char == "b":
            kind, tensor = ("numeric" if kind_char == "f" else "bool"), FloatTensorType([None, 1])
            arr = values.to_numpy(dtype=np.float32)
        elif kind_char in "iu" and numeric_as_float:
            kind, tensor = "integer", FloatTensorType([None, 1])
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
    if arr.ndim == 1 and arr.dtype.kind in "OUS":  # documents, for a text pipeline
        if not all(isinstance(v, str) for v in arr.tolist()):
            raise ConversionError(
                "a 1-D sample_input must hold strings (documents for a "
                "text pipeline); give numbers as a 2-D array"
            )
        return [("X", StringTensorType([None]))], {"X": arr.astype(str).astype(object)}
    if arr.ndim != 2:
        raise ConversionError(
            f"sample_input must be 2-D (rows x features) or a 1-D array of "
            f"strings (text), got shape {arr.shape}"
        )
    if arr.dtype.kind in "OUS":
        feeds = {"X": arr.astype(str).astype(object)}
        return [("X", StringTensorType([None, arr.shape[1]]))], feeds
    if arr.dtype.kind not in "fiub":
        raise ConversionError(f"sample_input has dtype {arr.dtype}; give numbers or strings")
    return [("X", FloatTensorType([None, arr.shape[1]]))], {"X": arr.astype(np.float32)}


def _join_columns(onx: Any, columns: tuple[Column, ...]) -> None:
    """Replace the graph's one matrix input ``X`` by one ``[N, 1]`` input per column,
    concatenated (in the fitted column order) into what ``X`` was."""
    from onnx import TensorProto, helper

    from .onnx_graph import rename_values

    graph = onx.graph
    taken = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    taken |= {o for n in graph.node for o in n.output}
    joined, n = "X.columns", 1
    while joined in taken or joined in {c.name for c in columns}:
        n += 1
        joined = f"X.columns{n}"
    rename_values(graph, {"X": joined})
    for i, v in enumerate(graph.input):
        if v.name == joined:
            del graph.input[i]
            break
    clash = {c.name for c in columns} & taken - {"X"}
    if clash:
        raise ConversionError(
            f"DataFrame column(s) {sorted(clash)} have the names of values "
            "inside the converted graph; rename them"
        )
    graph.input.extend(
        helper.make_tensor_value_info(c.input, TensorProto.FLOAT, ["N", 1]) for c in columns
    )
    graph.node.insert(
        0,
        helper.make_node(
            "Concat", [c.input for c in columns], [joined], name="join_columns", axis=1
        ),
    )


def _converter_options(
    model: Any, options: SklearnOptions | None, estimators: list[Any]
) -> dict[Any, dict[str, Any]]:
    """skl2onnx options by estimator class: no ZipMap where a converter has the option,
    the text locale on vectorizers, then the caller's own options over those."""
    from skl2onnx._supported_operators import _get_sklearn_operator_name
    from skl2onnx.common._registration import get_converter

    locale = options.text_locale if options is not None else "C.UTF-8"
    out: dict[Any, dict[str, Any]] = {}
    for cls in {type(e) for e in estimators}:
        alias = _get_sklearn_operator_name(cls)
        try:
            allowed = get_converter(alias).get_allowed_options() if alias else None
        except ValueError:  # no converter: skl2onnx says so, naming the class, when it converts
            allowed = None
        wanted: dict[str, Any] = {}
        if allowed and "zipmap" in allowed:
            wanted["zipmap"] = False
        if allowed and "locale" in allowed:
            wanted["locale"] = locale
        if wanted:
            out[cls] = wanted
    for est in estimators:
        # skl2onnx turns scikit-learn's default token pattern into the ASCII-only
        # "[a-zA-Z0-9_]+" (one-letter tokens included, which shifts n-grams). Python's
        # (?u)\b\w\w+\b finds maximal runs of two or more Unicode word characters; in
        # RE2, onnxruntime's regex engine, that is:
        if (
            getattr(est, "token_pattern", None) == _DEFAULT_TOKEN_PATTERN
            and getattr(est, "analyzer", None) == "word"
            and type(est) in out
        ):
            out[id(est)] = {**out[type(est)], "tokenexp": _UNICODE_TOKENS}
    if options is not None and options.converter_options:
        for key, opts in options.converter_options.items():
            slot = key if isinstance(key, type) else id(key)
            out[slot] = {**out.get(slot, {}), **opts}
    return out


_DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # noqa: S105 - a regex, not a password
_UNICODE_TOKENS = r"[\p{L}\p{N}_]{2,}"


def _categorical_hgb(estimators: list[Any]) -> str | None:
    for est in estimators:
        if (
            type(est).__name__.startswith("HistGradientBoosting")
            and getattr(est, "is_categorical_", None) is not None
            and bool(np.any(est.is_categorical_))
        ):
            return type(est).__name__
    return None


def _task(sklearn: Any, model: Any) -> str:
    from sklearn.base import is_classifier, is_regressor
    from sklearn.feature_selection import SelectorMixin

    if isinstance(model, SelectorMixin):  # RFE(classifier): skl2onnx converts the selection
        return "transformer"
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


def convert(
    model: Any,
    sample_input: Any,
    *,
    target_opset: int | None = None,
    options: SklearnOptions | None = None,
) -> Converted:
    """Convert a fitted scikit-learn estimator or pipeline (``options``: see
    :class:`~bundle.export.options.SklearnOptions`)."""
    sklearn, skl2onnx = _import()
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from .onnx_graph import align_output_shapes, drop_non_tensor_outputs, run_converted, tidy

    name = type(model).__name__
    try:
        check_is_fitted(model)
    except NotFittedError as e:
        raise ConversionError(f"{name} is not fitted: call fit() before saving it") from e
    except TypeError as e:
        raise ConversionError(f"{name} is not a scikit-learn estimator: {e}") from e
    if sample_input is None:
        raise ConversionError(
            "sample_input is required: a few rows of what the model "
            "predicts on (a 2-D array, a DataFrame, or 1-D strings for text)"
        )
    estimators = _estimators(model)
    boosting.register_if_needed(estimators)
    categorical = _categorical_hgb(estimators)
    joined: tuple[Column, ...] = ()
    if _is_dataframe(sample_input):
        numeric = all(sample_input[c].dtype.kind in "fiub" for c in sample_input.columns)
        if categorical is None and numeric and not _takes_columns(model):
            _, feeds, columns = tabular_inputs(sample_input, numeric_as_float=True)
            types, _ = _array_inputs(np.column_stack(list(feeds.values())))
            joined = columns
        else:
            types, feeds, columns = tabular_inputs(sample_input)
    else:
        (types, feeds), columns = _array_inputs(sample_input), ()
    if categorical is not None:
        raise ConversionError(
            f"{categorical} was fitted with categorical features, and skl2onnx "
            f"{skl2onnx.__version__} converts its trees without their categorical splits "
            "(the graph would predict something else). Encode those columns before the "
            "model instead -- e.g. Pipeline([ColumnTransformer([('cat', OrdinalEncoder(), "
            "[...])], remainder='passthrough'), HistGradientBoosting...(categorical_features="
            "None)]) -- or one-hot encode them"
        )
    task = _task(sklearn, model)
    final = _final_estimator(model)
    skl_options = _converter_options(model, options, estimators)
    final_options = {**skl_options.get(type(final), {}), **skl_options.get(id(final), {})}
    opsets = boosting.target_opsets(estimators, target_opset)
    try:
        try:
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=types,
                options=skl_options,
                target_opset=opsets,
                custom_conversion_functions=_custom_converters(),
            )
        except RuntimeError as e:
            # Some converters (IsolationForest's) refuse the ai.onnx.ml version skl2onnx
            # itself picks by default; the one before it is what they are written for.
            if "of domain 'ai.onnx.ml' not supported" not in str(e) or isinstance(opsets, dict):
                raise
            main = opsets if opsets is not None else skl2onnx.get_latest_tested_opset_version()
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=types,
                options=skl_options,
                target_opset={"": main, "ai.onnx.ml": boosting.ML_OPSET},
                custom_conversion_functions=_custom_converters(),
            )
    except Exception as e:  # skl2onnx raises bare RuntimeError/ValueError/...: wrap them all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"skl2onnx cannot convert {name} (final step {type(final).__name__}): {first[:300]}. "
            "If a step has no ONNX converter, register one with "
            "skl2onnx.update_registered_converter, or convert the model to ONNX yourself and "
            "save the .onnx file"
        ) from e
    boosting.fix_converted(onx, estimators)
    if joined:
        _join_columns(onx, joined)
    tidy(onx)
    notes: list[str] = [
        f"output {n!r} left out: skl2onnx gives it as a sequence, and bundle outputs are tensors"
        for n in drop_non_tensor_outputs(onx)
    ]
    observed = run_converted(onx, feeds, f"{name} converted by skl2onnx")
    align_output_shapes(onx, observed)

    onx.graph.name = name  # skl2onnx names the graph with a random UUID: not reproducible
    outputs = [o.name for o in onx.graph.output]
    plan: list[tuple[str, str]] = []  # (method, output)
    if task == "classifier":
        plan.append(("predict", outputs[0]))
        if len(outputs) > 1:
            # raw_scores: skl2onnx gives the decision function's scores, not probabilities
            second = (
                "predict_proba"
                if _has(model, "predict_proba") and not final_options.get("raw_scores")
                else "decision_function"
            )
            plan.append((second, outputs[1]))
    elif task == "clusterer":
        plan.append(("predict", outputs[0]))
        if len(outputs) > 1 and _has(model, "transform"):
            plan.append(("transform", outputs[1]))
    elif task == "transformer":
        plan.append(("transform", outputs[0]))
    else:
        plan.append(("predict", outputs[0]))

    shapes = {k: v.shape for k, v in observed.items()}
    methods: dict[str, Method] = {}
    reference: dict[str, np.ndarray] = {}
    for method, output in plan:
        if not _has(model, method):
            continue
        try:
            ref = getattr(model, method)(sample_input)
            ref = np.asarray(ref.toarray() if hasattr(ref, "toarray") else ref)  # scipy.sparse
        except (ValueError, TypeError) as e:  # e.g. one probability matrix per target
            notes.append(
                f"{method}() not offered: the original's result on the sample is not "
                f"one array ({str(e).splitlines()[0][:120]})"
            )
            continue
        rank = len(shapes[output])
        if ref.ndim == rank:
            squeeze = False
        elif ref.ndim + 1 == rank and shapes[output][-1] == 1:
            squeeze = True
        else:
            notes.append(
                f"{method}() not offered: original gives rank {ref.ndim}, ONNX output "
                f"{output!r} has shape {list(shapes[output])}"
            )
            continue
        methods[method] = Method(output, squeeze)
        reference[output] = ref
    if "predict" not in methods and "transform" not in methods:
        raise ConversionError(
            f"{name}: the ONNX outputs do not correspond to predict() or "
            f"transform() ({'; '.join(notes)})"
        )
    return Converted(
        model=onx,
        task=task,
        framework="scikit-learn",
        framework_version=sklearn.__version__,
        converter="skl2onnx",
        converter_version=skl2onnx.__version__,
        feeds=feeds,
        reference=reference,
        methods=methods,
        columns=columns,
        notes=tuple(notes),
        training=_training_state(model, options, notes),
    )


def _training_state(model: Any, options: SklearnOptions | None, notes: list[str]) -> Any:
    """An incremental estimator's state for :func:`bundle.restore` (see SklearnOptions)."""
    from ..training import sklearn as state

    wanted = options.training_state if options is not None else None
    if wanted is False or (wanted is None and not state.is_incremental(model)):
        return None
    try:
        return state.capture(model)
    except ConversionError as e:
        if wanted:
            raise
        notes.append(f"no training state: {e}")
        return None
