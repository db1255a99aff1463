"""scikit-learn models: the loaded bundle gives what the original estimator gives.

Every comparison runs the ORIGINAL fitted estimator and the loaded bundle on the
same data, with a different number of rows than the ``sample_input`` the bundle
was saved with (so the graph's batch axis really is dynamic). Classifier labels
must be equal, probabilities and numeric outputs close (float32 graph against
scikit-learn's float64).
"""

# ruff: noqa: N803  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

from sklearn.base import BaseEstimator, RegressorMixin, is_classifier
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = [
    # SVC(probability=True) is deprecated in scikit-learn 1.9 but still what people have;
    # skl2onnx reads probA_/probB_ even when probability=False.
    pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Attribute `prob[AB]_` was deprecated:FutureWarning"),
]

SaveLoad = Callable[..., tuple[bundle.Manifest, bundle.Model]]

N_FEATURES = 4
SAMPLE_ROWS = 7  # rows given to save() as sample_input
TEST_ROWS = 23  # rows the loaded bundle is run on: deliberately different
PROBA_ATOL = 1e-4
VALUE_RTOL, VALUE_ATOL = 1e-4, 1e-4


# --------------------------------------------------------------------------- data


def _features(n: int, seed: int, *, nan_fraction: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -1.0, 5.0]
    if nan_fraction:
        X[rng.random(X.shape) < nan_fraction] = np.nan
    return X


def _classes(X: np.ndarray, n_classes: int) -> np.ndarray:
    score = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) - 0.3 * np.nan_to_num(X[:, 2])
    cuts = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    return np.asarray(np.searchsorted(cuts, score))


def _target(X: np.ndarray) -> np.ndarray:
    Z = np.nan_to_num(X)
    return np.asarray(3.0 * Z[:, 0] - 2.0 * Z[:, 1] + Z[:, 2] * Z[:, 3] + 0.1 * np.sin(7 * Z[:, 3]))


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X = _features(120, 0)
    return {
        "X": X,
        "X_test": _features(TEST_ROWS, 1),
        "y2": _classes(X, 2),
        "y3": _classes(X, 3),
        "yr": _target(X),
    }


# --------------------------------------------------------------------------- comparisons


def _check_classifier(model: Any, m: bundle.Model, X: np.ndarray) -> None:
    assert len(X) != SAMPLE_ROWS
    want = model.predict(X)
    got = m.predict(X)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.astype(str), want.astype(str))
    if hasattr(model, "predict_proba"):
        proba = m.predict_proba(X)
        assert proba.shape == (len(X), len(model.classes_))
        np.testing.assert_allclose(proba, model.predict_proba(X), atol=PROBA_ATOL, rtol=0)


def _check_values(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=VALUE_RTOL, atol=VALUE_ATOL)


# --------------------------------------------------------------------------- transformers


def _categories(n: int, seed: int, *, unseen: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = [rng.choice(["red", "green", "blue"], size=n), rng.choice(["s", "m", "l", "xl"], size=n)]
    out = np.stack(cols, axis=1).astype(object)
    if unseen:
        out[0, 0] = "purple"  # never seen in fit: handle_unknown="ignore" gives all zeros
    return out


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: (StandardScaler(), _features(60, 2), _features(TEST_ROWS, 3)),
            id="StandardScaler",
        ),
        pytest.param(
            lambda: (MinMaxScaler(), _features(60, 2), _features(TEST_ROWS, 3)), id="MinMaxScaler"
        ),
        pytest.param(
            lambda: (
                OneHotEncoder(handle_unknown="ignore"),
                _categories(60, 2),
                _categories(TEST_ROWS, 3, unseen=True),
            ),
            id="OneHotEncoder-sparse",
        ),
        pytest.param(
            lambda: (
                OneHotEncoder(sparse_output=False),
                _categories(60, 2),
                _categories(TEST_ROWS, 3),
            ),
            id="OneHotEncoder-dense",
        ),
    ],
)
def test_transformer(save_load: SaveLoad, make: Callable[[], Any]) -> None:
    model, X, X_test = make()
    model.fit(X)
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    assert manifest.model.task == "transformer"
    assert set(manifest.methods) == {"transform"}
    want = model.transform(X_test)
    want = want.toarray() if hasattr(want, "toarray") else np.asarray(want)
    _check_values(m.transform(X_test), want)
    _check_values(m.predict(X_test), want)  # predict() falls back to transform()


# --------------------------------------------------------------------------- tabular


def _frame(n: int, seed: int) -> Any:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, size=n)
    income = rng.lognormal(10, 0.5, size=n)
    city = rng.choice(["paris", "lyon", "nice"], size=n)
    plan = pd.Categorical(rng.choice(["free", "pro"], size=n), categories=["free", "pro"])
    visits = rng.integers(0, 30, size=n)
    return pd.DataFrame(
        {"age": age, "income": income, "visits": visits, "city": city, "plan": plan}
    )


def _tabular_target(df: Any) -> tuple[np.ndarray, np.ndarray]:
    score = (
        (df["age"] - 45) / 15
        + (np.log(df["income"]) - 10) * 2
        + (df["city"] == "paris") * 1.0
        - (df["plan"] == "free") * 0.8
    ).to_numpy()
    return (score > np.median(score)).astype(int), score


def _column_pipeline(final: Any) -> Pipeline:
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "visits"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
        ]
    )
    return Pipeline([("pre", pre), ("model", final)])


@pytest.mark.parametrize(
    "final",
    [LogisticRegression(max_iter=500), Ridge(alpha=0.5)],
    ids=["LogisticRegression", "Ridge"],
)
def test_column_transformer_pipeline_on_dataframe(save_load: SaveLoad, final: Any) -> None:
    df, df_test = _frame(80, 4), _frame(TEST_ROWS, 5)
    y_cls, y_reg = _tabular_target(df)
    is_clf = isinstance(final, LogisticRegression)
    model = _column_pipeline(final).fit(df, y_cls if is_clf else y_reg)
    manifest, m = save_load(model, df.iloc[:SAMPLE_ROWS])

    kinds = {c.name: c.kind for c in manifest.columns}
    assert kinds == {
        "age": "numeric",
        "income": "numeric",
        "visits": "integer",
        "city": "string",
        "plan": "string",
    }
    assert {s.name: s.dtype for s in m.inputs} == {
        "age": "float32",
        "income": "float32",
        "visits": "int64",
        "city": "string",
        "plan": "string",
    }
    if is_clf:
        _check_classifier(model, m, df_test)
    else:
        _check_values(m.predict(df_test), model.predict(df_test))
    # Column order in the frame does not matter; columns are matched by name.
    reordered = df_test[["plan", "income", "city", "visits", "age"]]
    np.testing.assert_allclose(
        m.predict(reordered), model.predict(df_test), rtol=VALUE_RTOL, atol=VALUE_ATOL
    )


def test_dataframe_missing_column_is_input_error(save_load: SaveLoad) -> None:
    df = _frame(60, 6)
    y, _ = _tabular_target(df)
    model = _column_pipeline(LogisticRegression(max_iter=500)).fit(df, y)
    _, m = save_load(model, df.iloc[:SAMPLE_ROWS])
    with pytest.raises(bundle.InputError, match=r"missing column.*city"):
        m.predict(_frame(TEST_ROWS, 7).drop(columns=["city"]))
    with pytest.raises(bundle.InputError, match="DataFrame"):
        m.predict(np.zeros((3, 5)))  # a bare array has no column names
    bad = _frame(TEST_ROWS, 7)
    bad["age"] = bad["age"].astype(str)
    with pytest.raises(bundle.InputError, match="'age' expects numbers"):
        m.predict(bad)


def test_column_transformer_alone_sparse_output(save_load: SaveLoad) -> None:
    """A ColumnTransformer whose scikit-learn output is a scipy.sparse matrix."""
    df, df_test = _frame(60, 8), _frame(TEST_ROWS, 9)
    ct = ColumnTransformer(
        [("num", MinMaxScaler(), ["age"]), ("cat", OneHotEncoder(), ["city", "plan"])],
        sparse_threshold=1.0,
    ).fit(df)
    assert hasattr(ct.transform(df_test), "toarray")
    manifest, m = save_load(ct, df[["age", "city", "plan"]].iloc[:SAMPLE_ROWS])
    assert manifest.model.task == "transformer"
    _check_values(m.transform(df_test), ct.transform(df_test).toarray())


# --------------------------------------------------------------------------- classifiers


CLASSIFIERS = [
    pytest.param(lambda: LogisticRegression(max_iter=500), 3, id="LogisticRegression"),
    pytest.param(
        lambda: DecisionTreeClassifier(max_depth=5, random_state=0), 3, id="DecisionTreeClassifier"
    ),
    pytest.param(
        lambda: RandomForestClassifier(n_estimators=11, max_depth=5, random_state=0),
        3,
        id="RandomForestClassifier",
    ),
    pytest.param(
        lambda: GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0),
        3,
        id="GradientBoostingClassifier",
    ),
    pytest.param(
        lambda: GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0),
        2,
        id="GradientBoostingClassifier-binary",
    ),
    pytest.param(
        lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
        3,
        id="HistGradientBoostingClassifier",
    ),
    pytest.param(
        lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
        2,
        id="HistGradientBoostingClassifier-binary",
    ),
    pytest.param(lambda: SVC(probability=True, random_state=0), 3, id="SVC-probability"),
    pytest.param(lambda: SVC(probability=True, random_state=0), 2, id="SVC-probability-binary"),
    pytest.param(lambda: KNeighborsClassifier(n_neighbors=5), 2, id="KNeighborsClassifier"),
]


@pytest.mark.parametrize(("make", "n_classes"), CLASSIFIERS)
def test_classifier(
    save_load: SaveLoad, data: dict[str, np.ndarray], make: Callable[[], Any], n_classes: int
) -> None:
    X, y = data["X"], data[f"y{n_classes}"]
    model = make().fit(X, y)
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    assert manifest.model.task == "classifier"
    assert {"predict", "predict_proba"} <= set(manifest.methods)
    _check_classifier(model, m, data["X_test"])


def test_classifier_with_string_labels(save_load: SaveLoad, data: dict[str, np.ndarray]) -> None:
    names = np.array(["cat", "dog", "fish"])
    X, y = data["X"], names[data["y3"]]
    model = RandomForestClassifier(n_estimators=11, max_depth=4, random_state=0).fit(X, y)
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    label = next(o for o in manifest.outputs if o.name == manifest.methods["predict"].output)
    assert label.dtype == "string"
    got = m.predict(data["X_test"])
    assert set(got) <= set(names)
    _check_classifier(model, m, data["X_test"])


def test_svc_without_probability(save_load: SaveLoad, data: dict[str, np.ndarray]) -> None:
    X, y = data["X"], data["y2"]
    model = SVC().fit(X, y)  # probability=False: sklearn has no predict_proba either
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    assert "predict_proba" not in manifest.methods
    np.testing.assert_array_equal(m.predict(data["X_test"]), model.predict(data["X_test"]))
    with pytest.raises(bundle.InputError, match="predict_proba"):
        m.predict_proba(data["X_test"])


# --------------------------------------------------------------------------- regressors


REGRESSORS = [
    pytest.param(lambda: LinearRegression(), id="LinearRegression"),
    pytest.param(lambda: Ridge(alpha=0.3), id="Ridge"),
    pytest.param(
        lambda: DecisionTreeRegressor(max_depth=5, random_state=0), id="DecisionTreeRegressor"
    ),
    pytest.param(
        lambda: RandomForestRegressor(n_estimators=11, max_depth=5, random_state=0),
        id="RandomForestRegressor",
    ),
    pytest.param(
        lambda: GradientBoostingRegressor(n_estimators=15, max_depth=2, random_state=0),
        id="GradientBoostingRegressor",
    ),
    pytest.param(
        lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0),
        id="HistGradientBoostingRegressor",
    ),
    pytest.param(lambda: SVR(C=3.0), id="SVR"),
]


@pytest.mark.parametrize("make", REGRESSORS)
def test_regressor(
    save_load: SaveLoad, data: dict[str, np.ndarray], make: Callable[[], Any]
) -> None:
    X = data["X"]
    model = make().fit(X, data["yr"])
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    assert manifest.model.task == "regressor"
    got = m.predict(data["X_test"])
    assert got.ndim == 1
    _check_values(got, model.predict(data["X_test"]))


# ------------------------------------------------------------- HistGradientBoosting + NaN


def _predictions(model: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_proba(X) if is_classifier(model) else model.predict(X))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
            id="HistGradientBoostingClassifier",
        ),
        pytest.param(
            lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0),
            id="HistGradientBoostingRegressor",
        ),
    ],
)
def test_hist_gradient_boosting_with_nan(save_load: SaveLoad, make: Callable[[], Any]) -> None:
    """Missing values go left or right per split (``missing_go_to_left``): the flags that
    skl2onnx 1.20 cannot write without bundle's fix must come out right."""
    X = _features(150, 8, nan_fraction=0.15)
    X_test = _features(TEST_ROWS, 9, nan_fraction=0.25)
    X_test[0, :] = np.nan  # a row with nothing known
    model = make()
    model.fit(X, _classes(X, 3) if is_classifier(model) else _target(X))
    sample = X[:SAMPLE_ROWS]
    assert np.isnan(sample).any()
    # NaN really steers the model here (it is not the same as a zero, say):
    imputed = np.nan_to_num(X_test)
    assert not np.allclose(_predictions(model, X_test), _predictions(model, imputed))
    manifest, m = save_load(model, sample)
    assert manifest.parity is not None
    assert manifest.parity.passed
    if manifest.model.task == "classifier":
        _check_classifier(model, m, X_test)
    else:
        _check_values(m.predict(X_test), model.predict(X_test))


# --------------------------------------------------------------------------- clusterers


def test_kmeans_predict_and_transform(save_load: SaveLoad, data: dict[str, np.ndarray]) -> None:
    X = data["X"]
    model = KMeans(n_clusters=3, n_init=2, random_state=0).fit(X)
    manifest, m = save_load(model, X[:SAMPLE_ROWS])
    assert manifest.model.task == "clusterer"
    assert {"predict", "transform"} <= set(manifest.methods)
    X_test = data["X_test"]
    np.testing.assert_array_equal(m.predict(X_test), model.predict(X_test))
    _check_values(m.transform(X_test), model.transform(X_test))


# --------------------------------------------------------------------------- parity


def test_parity_recorded_in_manifest(save_load: SaveLoad, data: dict[str, np.ndarray]) -> None:
    X = data["X"]
    model = LogisticRegression(max_iter=500).fit(X, data["y3"])
    manifest, m = save_load(model, X[:SAMPLE_ROWS], tolerance=(1e-3, 1e-2))
    for parity in (manifest.parity, m.manifest.parity):  # returned and as loaded (signed)
        assert parity is not None
        assert (parity.atol, parity.rtol) == (1e-3, 1e-2)
        assert parity.sample_rows == SAMPLE_ROWS
        assert parity.passed
        assert not parity.accepted_mismatch
        by_name = {o.name: o for o in parity.outputs}
        assert set(by_name) == {
            manifest.methods["predict"].output,
            manifest.methods["predict_proba"].output,
        }
        for o in parity.outputs:
            assert o.mismatches == 0
            assert 0.0 <= o.max_abs <= 1e-3
            assert 0.0 <= o.max_rel <= 1e-2
        assert by_name[manifest.methods["predict"].output].max_abs == 0.0  # labels: exact
    assert m.manifest.parity == manifest.parity
    d = m.manifest.to_dict()["parity"]
    assert d["tolerance"] == {"atol": 1e-3, "rtol": 1e-2}
    assert {o["name"] for o in d["outputs"]} == set(by_name)


def test_parity_default_tolerance(
    save_load: SaveLoad, data: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``tolerance`` an fp32 export is held to atol 1e-4, rtol 1e-3: a converter off
    by half of that is accepted (and the deviation recorded), one off by twice is refused."""
    from bundle.export import bundler

    real = bundler.run_onnx
    scale = {"by": 0.5}

    def off(model: Any, feeds: Any) -> dict[str, Any]:
        return {
            k: v + scale["by"] * (1e-4 + 1e-3 * np.abs(v)) if v.dtype.kind == "f" else v
            for k, v in real(model, feeds).items()
        }

    monkeypatch.setattr(bundler, "run_onnx", off)
    model = Ridge().fit(data["X"], data["yr"])
    manifest, _ = save_load(model, data["X"][:SAMPLE_ROWS])
    assert manifest.parity is not None
    assert (manifest.parity.atol, manifest.parity.rtol) == (1e-4, 1e-3)
    assert manifest.parity.passed
    assert manifest.parity.outputs[0].max_abs >= 0.5e-4
    scale["by"] = 2.0
    with pytest.raises(bundle.ConversionError, match=r"out of tolerance"):
        save_load(model, data["X"][:SAMPLE_ROWS])


def test_parity_failure_raises_and_writes_nothing(
    tmp_path: Path, signing_key: Any, data: dict[str, np.ndarray]
) -> None:
    # A float32 graph cannot reproduce float64 predictions exactly: zero tolerance fails.
    model = LinearRegression().fit(data["X"], data["yr"])
    path = tmp_path / "strict.mbundle"
    with pytest.raises(bundle.ConversionError, match=r"output 'variable'.*out of tolerance"):
        bundle.save(
            model,
            path,
            sample_input=data["X"][:SAMPLE_ROWS],
            signing_key=signing_key,
            tolerance=(0.0, 0.0),
        )
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


def test_parity_failure_forced_by_monkeypatch(
    tmp_path: Path, signing_key: Any, data: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter that gets it wrong (here: predictions shifted by 1) is caught."""
    from bundle.export import bundler

    real = bundler.run_onnx

    def off_by_one(model: Any, feeds: Any) -> dict[str, Any]:
        return {k: v + 1 if v.dtype.kind == "f" else v for k, v in real(model, feeds).items()}

    monkeypatch.setattr(bundler, "run_onnx", off_by_one)
    model = Ridge().fit(data["X"], data["yr"])
    with pytest.raises(bundle.ConversionError) as info:
        bundle.save(
            model,
            tmp_path / "x.mbundle",
            sample_input=data["X"][:SAMPLE_ROWS],
            signing_key=signing_key,
        )
    msg = str(info.value)
    assert "'variable'" in msg
    assert f"{SAMPLE_ROWS} element(s)" in msg
    assert "max abs 1" in msg


def test_accept_mismatch_saves_and_records_it(
    tmp_path: Path, signing_key: Any, data: dict[str, np.ndarray]
) -> None:
    model = LinearRegression().fit(data["X"], data["yr"])
    path = tmp_path / "lenient.mbundle"
    manifest = bundle.save(
        model,
        path,
        sample_input=data["X"][:SAMPLE_ROWS],
        signing_key=signing_key,
        tolerance=(0.0, 0.0),
        accept_mismatch=True,
    )
    m = bundle.load(path, trusted_keys=signing_key.public_key)
    for parity in (manifest.parity, m.manifest.parity):
        assert parity is not None
        assert parity.accepted_mismatch is True
        assert not parity.passed
        (out,) = parity.outputs
        assert out.name == "variable"
        assert out.mismatches > 0
        assert 0 < out.max_abs < 1e-3
        assert out.max_rel > 0
        assert (parity.atol, parity.rtol) == (0.0, 0.0)
    _check_values(m.predict(data["X_test"]), model.predict(data["X_test"]))


# --------------------------------------------------------------------------- conversion errors


def test_unfitted_estimator(tmp_path: Path, signing_key: Any, data: dict[str, np.ndarray]) -> None:
    with pytest.raises(bundle.ConversionError, match=r"LogisticRegression is not fitted"):
        bundle.save(
            LogisticRegression(),
            tmp_path / "u.mbundle",
            sample_input=data["X"][:SAMPLE_ROWS],
            signing_key=signing_key,
        )
    pipe = _column_pipeline(LogisticRegression())
    with pytest.raises(bundle.ConversionError, match=r"Pipeline is not fitted"):
        bundle.save(
            pipe, tmp_path / "p.mbundle", sample_input=_frame(5, 0), signing_key=signing_key
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_sample_input(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    model = Ridge().fit(data["X"], data["yr"])
    with pytest.raises(bundle.ConversionError, match="sample_input is required"):
        bundle.save(model, tmp_path / "n.mbundle")


class HalfRegressor(RegressorMixin, BaseEstimator):
    """A fitted scikit-learn estimator skl2onnx knows nothing about."""

    def fit(self, X: Any, y: Any) -> HalfRegressor:
        self.offset_ = float(np.mean(y))
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X)[:, 0] / 2 + self.offset_


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda X, y: HalfRegressor().fit(X, y), id="custom-BaseEstimator"),
        pytest.param(lambda X, y: IsotonicRegression().fit(X[:, 0], y), id="IsotonicRegression"),
        pytest.param(
            lambda X, y: Pipeline([("scale", StandardScaler()), ("half", HalfRegressor())]).fit(
                X, y
            ),
            id="pipeline-with-custom-step",
        ),
    ],
)
def test_unconvertible_estimator(
    tmp_path: Path,
    signing_key: Any,
    data: dict[str, np.ndarray],
    make: Callable[[np.ndarray, np.ndarray], Any],
) -> None:
    model = make(data["X"], data["yr"])
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    n = 1 if isinstance(model, IsotonicRegression) else N_FEATURES
    with pytest.raises(bundle.ConversionError) as info:
        bundle.save(
            model,
            tmp_path / "c.mbundle",
            sample_input=data["X"][:SAMPLE_ROWS, :n],
            signing_key=signing_key,
        )
    msg = str(info.value)
    assert f"skl2onnx cannot convert {type(model).__name__}" in msg
    assert type(final).__name__ in msg
    assert isinstance(info.value.__cause__, Exception)  # the converter's own error is chained
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- input checks


@pytest.fixture(scope="module")
def ridge_bundle(
    tmp_path_factory: pytest.TempPathFactory, signing_key: Any, data: dict[str, np.ndarray]
) -> tuple[Any, bundle.Model]:
    model = Ridge().fit(data["X"], data["yr"])
    path = tmp_path_factory.mktemp("ridge") / "ridge.mbundle"
    bundle.save(model, path, sample_input=data["X"][:SAMPLE_ROWS], signing_key=signing_key)
    return model, bundle.load(path, trusted_keys=signing_key.public_key)


@pytest.mark.parametrize("n_features", [N_FEATURES - 1, N_FEATURES + 2])
def test_wrong_number_of_features(ridge_bundle: tuple[Any, bundle.Model], n_features: int) -> None:
    _, m = ridge_bundle
    with pytest.raises(bundle.InputError, match=rf"axis 1 must be {N_FEATURES}") as info:
        m.predict(np.zeros((5, n_features), dtype=np.float32))
    assert info.value.entry == "X"


def test_wrong_rank(ridge_bundle: tuple[Any, bundle.Model]) -> None:
    _, m = ridge_bundle
    with pytest.raises(bundle.InputError, match="2-D"):
        m.predict(np.zeros(N_FEATURES, dtype=np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([[1.0, 2.0], [3.0]], id="ragged"),
        pytest.param([[1.0, 2.0, 3.0, 4.0], [1.0, [2.0], 3.0, 4.0]], id="ragged-deeper"),
        pytest.param({"X": [[1.0, 2.0, 3.0, 4.0], [3.0]]}, id="ragged-in-dict"),
    ],
)
def test_ragged_rows(ridge_bundle: tuple[Any, bundle.Model], bad: Any) -> None:
    _, m = ridge_bundle
    with pytest.raises(bundle.InputError, match=r"input 'X' is not a rectangular array"):
        m.predict(bad)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(np.array([["a", "b", "c", "d"]]), id="unicode"),
        pytest.param(np.array([["1.0", "2", "3", "4"]], dtype=object), id="object-strings"),
        pytest.param(np.array([[b"1", b"2", b"3", b"4"]]), id="bytes"),
    ],
)
def test_strings_where_floats_expected(
    ridge_bundle: tuple[Any, bundle.Model], bad: np.ndarray
) -> None:
    _, m = ridge_bundle
    with pytest.raises(bundle.InputError, match=r"expects numbers \(float32\)"):
        m.predict(bad)


def test_float64_and_other_numeric_inputs_accepted(
    ridge_bundle: tuple[Any, bundle.Model], data: dict[str, np.ndarray]
) -> None:
    model, m = ridge_bundle
    (spec,) = m.inputs
    assert spec.dtype == "float32"
    X = data["X_test"]
    assert X.dtype == np.float64
    _check_values(m.predict(X), model.predict(X))
    _check_values(m.predict(X.tolist()), model.predict(X))  # nested lists too
    Xi = np.rint(X).astype(np.int64)
    _check_values(m.predict(Xi), model.predict(Xi.astype(np.float64)))
    # A single row and an empty batch keep the dynamic batch axis.
    _check_values(m.predict(X[:1]), model.predict(X[:1]))
    assert m.predict(np.empty((0, N_FEATURES))).shape == (0,)
