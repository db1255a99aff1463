"""scikit-learn online learning: ``partial_fit`` after save + restore continues exactly
as the uninterrupted run does (bit for bit), for every allow-listed incremental
estimator and a pipeline of them; mismatches are refused before anything is assigned,
and a hostile state document names what is wrong."""

# ruff: noqa: N803  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

from helpers import build_signed, manifest_of, read_entries
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA
from sklearn.linear_model import (
    PassiveAggressiveClassifier,
    PassiveAggressiveRegressor,
    Perceptron,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from bundle.format import canonical_json
from bundle.training.codec import STATE_JSON

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # PassiveAggressive* deprecation
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

CLASSES = np.array([0, 1, 2])


def _batches(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        X = np.abs(rng.normal(size=(40, 5))) * [1, 2, 3, 0.5, 1]
        y = (np.searchsorted([1.5, 3.0], X[:, 0] + X[:, 1])).astype(np.int64)
        out.append((X, y))
    return out


def _fit_step(est: Any, X: np.ndarray, y: np.ndarray, first: bool) -> None:
    if isinstance(est, (MiniBatchKMeans, IncrementalPCA, StandardScaler, MinMaxScaler)):
        est.partial_fit(X)
    elif hasattr(est, "classes_") or not first or not _is_classifier(est):
        est.partial_fit(X, y if _is_classifier(est) else X @ np.arange(1.0, 6.0))
    else:
        est.partial_fit(X, y, classes=CLASSES)


def _is_classifier(est: Any) -> bool:
    return isinstance(
        est,
        (
            SGDClassifier,
            PassiveAggressiveClassifier,
            Perceptron,
            MultinomialNB,
            BernoulliNB,
            GaussianNB,
            MLPClassifier,
        ),
    )


def _train(model: Any, batches: list[tuple[np.ndarray, np.ndarray]], first: bool) -> None:
    for i, (X, y) in enumerate(batches):
        if isinstance(model, Pipeline):
            for _, step in model.steps[:-1]:
                _fit_step(step, X, y, first and i == 0)
                X = step.transform(X)
            _fit_step(model.steps[-1][1], X, y, first and i == 0)
        else:
            _fit_step(model, X, y, first and i == 0)


def _state(model: Any) -> dict[str, Any]:
    """Every fitted attribute, arrays and lists flattened, for exact comparison."""
    steps = model.steps if isinstance(model, Pipeline) else [("m", model)]
    out: dict[str, Any] = {}
    for name, est in steps:
        params = set(est.get_params(deep=False))
        for k, v in vars(est).items():
            if k in params or k == "_loss_function_":
                continue
            if k == "_random_state":
                v = v.get_state(legacy=True)[1:]
            if k == "_optimizer":
                v = {a: b for a, b in vars(v).items()}
            if k == "_label_binarizer":
                v = v.classes_
            out[f"{name}.{k}"] = v
    return out


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b), (where, a, b)
        assert a == b or (a != a and b != b), (where, a, b)


MAKERS: dict[str, Callable[[], Any]] = {
    "SGDClassifier": lambda: SGDClassifier(random_state=0),
    "SGDClassifier-log-averaged": lambda: SGDClassifier(
        loss="log_loss", average=True, random_state=0
    ),
    "SGDRegressor": lambda: SGDRegressor(random_state=0),
    "PassiveAggressiveClassifier": lambda: PassiveAggressiveClassifier(random_state=0),
    "PassiveAggressiveRegressor": lambda: PassiveAggressiveRegressor(random_state=0),
    "Perceptron": lambda: Perceptron(random_state=0),
    "MultinomialNB": MultinomialNB,
    "BernoulliNB": lambda: BernoulliNB(binarize=1.0),
    "GaussianNB": GaussianNB,
    "MiniBatchKMeans": lambda: MiniBatchKMeans(n_clusters=3, random_state=0, n_init=1),
    "IncrementalPCA": lambda: IncrementalPCA(n_components=2),
    "StandardScaler": StandardScaler,
    "MinMaxScaler": MinMaxScaler,
    "MLPClassifier-adam": lambda: MLPClassifier(hidden_layer_sizes=(8,), random_state=0),
    "MLPRegressor-sgd": lambda: MLPRegressor(
        hidden_layer_sizes=(8, 4), solver="sgd", momentum=0.8, random_state=0
    ),
    "Pipeline(scaler, SGD)": lambda: Pipeline(
        [("scale", StandardScaler()), ("sgd", SGDClassifier(random_state=0))]
    ),
    "Pipeline(minmax, MLP)": lambda: Pipeline(
        [("scale", MinMaxScaler()), ("mlp", MLPRegressor(hidden_layer_sizes=(6,), random_state=0))]
    ),
}


@pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
def test_partial_fit_resumes_exactly(tmp_path: Path, make: Callable[[], Any]) -> None:
    batches = _batches(5)
    uninterrupted = make()
    _train(uninterrupted, batches, first=True)

    first = make()
    _train(first, batches[:2], first=True)
    path = tmp_path / "m.mb"
    bundle.save(first, path, sample_input=batches[0][0][:4])
    del first

    resumed = make()  # a fresh estimator, as a new process would build it
    report = bundle.restore(path, model=resumed, allow_unsigned=True)
    assert isinstance(report, bundle.VerifyReport)
    _train(resumed, batches[2:], first=False)
    _assert_same(_state(uninterrupted), _state(resumed))
    X = batches[0][0]
    if hasattr(resumed, "predict"):
        np.testing.assert_array_equal(resumed.predict(X), uninterrupted.predict(X))


def test_restore_into_fitted_estimator_replaces_its_state(tmp_path: Path) -> None:
    batches = _batches(3)
    saved = SGDClassifier(random_state=0)
    _train(saved, batches[:1], first=True)
    bundle.save(saved, tmp_path / "m.mb", sample_input=batches[0][0][:4])
    other = SGDClassifier(random_state=0)
    _train(other, batches[1:], first=True)  # fitted on other data
    bundle.restore(tmp_path / "m.mb", model=other, allow_unsigned=True)
    _assert_same(_state(saved), _state(other))


def test_different_parameters_are_refused_and_nothing_assigned(tmp_path: Path) -> None:
    batches = _batches(2)
    saved = SGDClassifier(eta0=0.1, learning_rate="constant", random_state=0)
    _train(saved, batches, first=True)
    bundle.save(saved, tmp_path / "m.mb", sample_input=batches[0][0][:4])
    given = SGDClassifier(eta0=0.5, learning_rate="constant", random_state=1)
    with pytest.raises(bundle.InputError) as e:
        bundle.restore(tmp_path / "m.mb", model=given, allow_unsigned=True)
    assert "eta0=0.5 given" in str(e.value)
    assert "random_state=1 given" in str(e.value)
    assert not hasattr(given, "coef_")


def test_wrong_class_and_wrong_pipeline_are_refused(tmp_path: Path) -> None:
    batches = _batches(2)
    saved = Pipeline([("scale", StandardScaler()), ("sgd", SGDClassifier(random_state=0))])
    _train(saved, batches, first=True)
    bundle.save(saved, tmp_path / "p.mb", sample_input=batches[0][0][:4])
    with pytest.raises(bundle.InputError, match="a pipeline of 2 step"):
        bundle.restore(tmp_path / "p.mb", model=SGDClassifier(random_state=0), allow_unsigned=True)
    wrong = Pipeline([("scale", MinMaxScaler()), ("sgd", SGDClassifier(random_state=0))])
    with pytest.raises(bundle.InputError, match="MinMaxScaler was given"):
        bundle.restore(tmp_path / "p.mb", model=wrong, allow_unsigned=True)
    assert not hasattr(wrong.steps[1][1], "coef_")


def test_non_incremental_model_has_no_training_state(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _batches(1)[0]
    bundle.save(LogisticRegression().fit(X, y), tmp_path / "lr.mb", sample_input=X[:3])
    with pytest.raises(bundle.InputError, match="holds no training state"):
        bundle.restore(tmp_path / "lr.mb", model=LogisticRegression(), allow_unsigned=True)
    with pytest.raises(
        bundle.ConversionError,
        match="no training state for model "
        r"\(LogisticRegression\)",
    ):
        bundle.save(
            LogisticRegression().fit(X, y),
            tmp_path / "lr2.mb",
            sample_input=X[:3],
            training_state=True,
        )
    assert not (tmp_path / "lr2.mb").exists()


def test_training_state_false_saves_none(tmp_path: Path) -> None:
    X, y = _batches(1)[0]
    m = SGDClassifier(random_state=0).fit(X, y)
    manifest = bundle.save(m, tmp_path / "m.mb", sample_input=X[:3], training_state=False)
    assert not [f for f in manifest.files if f.role == "training_state"]


def test_optimizer_argument_is_refused_for_sklearn(tmp_path: Path) -> None:
    X, y = _batches(1)[0]
    bundle.save(SGDClassifier(random_state=0).fit(X, y), tmp_path / "m.mb", sample_input=X[:3])
    with pytest.raises(bundle.InputError, match="pass model= only"):
        bundle.restore(
            tmp_path / "m.mb",
            model=SGDClassifier(random_state=0),
            optimizer=object(),
            allow_unsigned=True,
        )


def test_state_document_names_only_allow_listed_classes(tmp_path: Path) -> None:
    """The JSON document holds class names as data; restore compares them to the
    allow-list and never imports what the file names."""
    from bundle.training.sklearn import ALLOWED

    X, y = _batches(1)[0]
    m = MLPClassifier(hidden_layer_sizes=(4,), random_state=0, max_iter=5).fit(X, y)
    bundle.save(m, tmp_path / "m.mb", sample_input=X[:3])
    with bundle.format.archive.ZipReader(tmp_path / "m.mb") as r:
        doc = json.loads(r.read(STATE_JSON, max_size=1 << 24))
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "class" in node:
                found.append(node["class"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert set(found) <= set(ALLOWED)
    assert "sklearn.neural_network.MLPClassifier" in found
    assert "sklearn.preprocessing.LabelBinarizer" in found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["model"]["steps"][0].update({"class": "os.system"}),
            "'os.system', which is not on the allow-list",
        ),
        (
            lambda d: d["model"]["steps"][0]["state"].update({"__class__": {"type": "none"}}),
            r"sets \['__class__'\], which the allow-list",
        ),
        (
            lambda d: d["model"]["steps"][0]["state"]["_label_binarizer"].update(
                {"class": "subprocess.Popen"}
            ),
            "'subprocess.Popen', which is not on the allow-list",
        ),
        (
            lambda d: d["model"]["steps"][0]["state"]["coefs_"]["items"][0].update(
                {"tensor": "nope"}
            ),
            "refers to tensor 'nope'",
        ),
        (
            lambda d: d["model"]["steps"][0]["state"]["t_"].update({"type": "pickle"}),
            "unknown type 'pickle'",
        ),
    ],
)
def test_hostile_state_document_is_refused(
    tmp_path: Path, signing_key: Any, change: Callable[[Any], None], message: str
) -> None:
    X, y = _batches(1)[0]
    m = MLPClassifier(hidden_layer_sizes=(4,), random_state=0, max_iter=5).fit(X, y)
    bundle.save(m, tmp_path / "m.mb", sample_input=X[:3], signing_key=signing_key)
    entries = read_entries(tmp_path / "m.mb")
    doc = json.loads(entries[STATE_JSON])
    change(doc)
    entries[STATE_JSON] = canonical_json.dumps(doc)
    contents = {
        k: v for k, v in entries.items() if k != "manifest.json" and not k.startswith("signatures/")
    }
    build_signed(tmp_path / "evil.mb", contents, [signing_key], base=manifest_of(tmp_path / "m.mb"))
    given = MLPClassifier(hidden_layer_sizes=(4,), random_state=0, max_iter=5)
    with pytest.raises(bundle.FormatError, match=message):
        bundle.restore(tmp_path / "evil.mb", model=given, trusted_keys=[signing_key.public_key])
    assert not hasattr(given, "coefs_")
