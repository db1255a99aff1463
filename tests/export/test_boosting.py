"""XGBoost and LightGBM out of the box (the ``boosting`` extra): bare and inside
scikit-learn pipelines, classifiers (binary, multiclass) and regressors, compared
against the booster's own predictions on rows the bundle was not saved with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("onnxmltools")
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

SaveLoad = Callable[..., tuple[bundle.Manifest, bundle.Model]]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)) * [1, 2, 0.5, 3, 1, 1]
    score = X[:, 0] + 0.5 * X[:, 1] - X[:, 2] * X[:, 3] / 3
    return X, (score > 0).astype(int), np.searchsorted([-1.0, 1.0], score), 3 * score + X[:, 4]


MODELS: dict[str, tuple[Callable[[], Any], str]] = {
    "XGBClassifier-binary": (lambda: xgb.XGBClassifier(n_estimators=12, max_depth=3), "y2"),
    "XGBClassifier-3class": (lambda: xgb.XGBClassifier(n_estimators=12, max_depth=3), "y3"),
    "XGBRegressor": (lambda: xgb.XGBRegressor(n_estimators=12, max_depth=3), "yr"),
    # several trees per class and round: onnxmltools assigns them to the wrong classes
    "XGBRFClassifier-3class": (lambda: xgb.XGBRFClassifier(n_estimators=6, max_depth=3), "y3"),
    "XGBClassifier-parallel": (
        lambda: xgb.XGBClassifier(n_estimators=4, num_parallel_tree=3, max_depth=2),
        "y3",
    ),
    "XGBRFRegressor": (lambda: xgb.XGBRFRegressor(n_estimators=6, max_depth=3), "yr"),
    "LGBMClassifier-binary": (lambda: lgb.LGBMClassifier(n_estimators=12, verbose=-1), "y2"),
    "LGBMClassifier-3class": (lambda: lgb.LGBMClassifier(n_estimators=12, verbose=-1), "y3"),
    "LGBMRegressor": (lambda: lgb.LGBMRegressor(n_estimators=12, verbose=-1), "yr"),
    "Pipeline(scaler,XGBClassifier)": (
        lambda: make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=8)),
        "y3",
    ),
    "Pipeline(scaler,LGBMRegressor)": (
        lambda: make_pipeline(StandardScaler(), lgb.LGBMRegressor(n_estimators=8, verbose=-1)),
        "yr",
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_boosting_model_matches_the_booster(save_load: SaveLoad, name: str) -> None:
    make, target = MODELS[name]
    X, y2, y3, yr = _data(300, 0)
    X_test = _data(37, 1)[0]
    y = {"y2": y2, "y3": y3, "yr": yr}[target]
    model = make().fit(X, y)
    manifest, m = save_load(model, X[:5])
    assert manifest.onnx.opsets.get("ai.onnx.ml") == 3
    if target == "yr":
        np.testing.assert_allclose(m.predict(X_test), model.predict(X_test), rtol=1e-4, atol=1e-4)
        return
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(m.predict_proba(X_test), proba, atol=1e-5)
    # labels: equal wherever the booster is not on a float32 knife edge between classes
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    assert clear.sum() > len(X_test) // 2
    np.testing.assert_array_equal(m.predict(X_test)[clear], model.predict(X_test)[clear])


def test_dataframe_fitted_lightgbm(save_load: SaveLoad) -> None:
    pd = pytest.importorskip("pandas")
    X, _, y3, _ = _data(200, 0)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = lgb.LGBMClassifier(n_estimators=8, verbose=-1).fit(df, y3)
    _, m = save_load(model, df.head(4))
    test = pd.DataFrame(_data(19, 2)[0], columns=df.columns)
    np.testing.assert_allclose(m.predict_proba(test), model.predict_proba(test), atol=1e-5)
