"""XGBoost and LightGBM models inside the scikit-learn converter (the ``boosting`` extra).

skl2onnx converts what it knows; onnxmltools has the converters for XGBoost's and
LightGBM's scikit-learn wrappers (``XGBClassifier``, ``LGBMRegressor``, ...). This
module registers them with skl2onnx -- the recipe skl2onnx documents -- the first
time a model holding one is saved, bare or as a pipeline step, and asks for the
``ai.onnx.ml`` operator set their tree ensembles need. Nothing here runs, or is
imported, for a model without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConversionError

__all__ = ["ML_OPSET", "fix_converted", "register_if_needed", "target_opsets", "uses_boosting"]

_INSTALL = "install the boosting extra: pip install 'model-bundle[boosting]'"

ML_OPSET = 3
"""The ``ai.onnx.ml`` version asked for: onnxmltools' tree converters emit
``TreeEnsembleClassifier``/``Regressor`` as defined there."""

_LIBRARIES = ("xgboost", "lightgbm")
_registered: set[str] = set()


def _library(obj: Any) -> str:
    return (type(obj).__module__ or "").split(".")[0]


def uses_boosting(estimators: list[Any]) -> set[str]:
    """Which gradient-boosting libraries (``xgboost``, ``lightgbm``) the estimators use."""
    return {lib for lib in map(_library, estimators) if lib in _LIBRARIES}


def target_opsets(estimators: list[Any], target_opset: int | None) -> Any:
    """skl2onnx's ``target_opset``: as given, or with ``ai.onnx.ml`` pinned when a
    boosting model is inside (onnxmltools' converters need the domain declared)."""
    if not uses_boosting(estimators):
        return target_opset
    import skl2onnx

    main = target_opset if target_opset is not None else skl2onnx.get_latest_tested_opset_version()
    return {"": main, "ai.onnx.ml": ML_OPSET}


def register_if_needed(estimators: list[Any]) -> None:
    """Register onnxmltools' converters for the boosting libraries the model uses."""
    for lib in sorted(uses_boosting(estimators) - _registered):
        _REGISTER[lib]()
        _registered.add(lib)


def _imports(*names: str) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConversionError(f"saving this model needs {e.name}; {_INSTALL}") from e


_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}


def _register_xgboost() -> None:
    _imports("xgboost", "onnxmltools")
    import xgboost
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    for cls in (xgboost.XGBClassifier, xgboost.XGBRFClassifier):
        update_registered_converter(
            cls,
            f"XGBoost{cls.__name__}",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=_CLASSIFIER_OPTIONS,
        )
    for cls in (xgboost.XGBRegressor, xgboost.XGBRFRegressor):
        update_registered_converter(
            cls, f"XGBoost{cls.__name__}", calculate_linear_regressor_output_shapes, convert_xgboost
        )


def _register_lightgbm() -> None:
    _imports("lightgbm", "onnxmltools")
    import lightgbm
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        lightgbm.LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options=_CLASSIFIER_OPTIONS,
    )
    update_registered_converter(
        lightgbm.LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )


_REGISTER: dict[str, Callable[[], None]] = {
    "xgboost": _register_xgboost,
    "lightgbm": _register_lightgbm,
}


def fix_converted(onx: Any, estimators: list[Any]) -> None:
    """Correct what onnxmltools 1.16 gets wrong in a converted graph.

    A multiclass XGBoost forest (``XGBRFClassifier``, or ``num_parallel_tree > 1``)
    lays out each round's trees class by class, ``num_parallel_tree`` trees per class:
    tree ``t`` scores class ``(t // num_parallel_tree) % n_classes``. onnxmltools
    assigns tree ``t`` to class ``t % n_classes``, as if there were one tree per
    class, and the graph then predicts something else. With one such model in the
    graph, its ``class_ids`` are recomputed from ``class_treeids``; parity at save
    checks the result against XGBoost's own predictions either way.
    """
    forests = [
        e
        for e in estimators
        if _library(e) == "xgboost"
        and int(getattr(e, "n_classes_", 0) or 0) > 2
        and _parallel_trees(e) > 1
    ]
    nodes = [n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(forests) != 1 or len(nodes) != 1:
        return
    per_class, n_classes = _parallel_trees(forests[0]), int(forests[0].n_classes_)
    attrs = {a.name: a for a in nodes[0].attribute}
    tree_ids = list(attrs["class_treeids"].ints)
    del attrs["class_ids"].ints[:]
    attrs["class_ids"].ints.extend((t // per_class) % n_classes for t in tree_ids)


def _parallel_trees(model: Any) -> int:
    try:
        return int(model.get_xgb_params().get("num_parallel_tree") or 1)
    except Exception:  # not fitted the way XGBoost's wrapper is: nothing to correct
        return 1
