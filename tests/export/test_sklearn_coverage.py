"""The scikit-learn models people actually have (issue 17): DataFrame-fitted bare
estimators, text pipelines, classifiers without a ZipMap option, estimators whose
skl2onnx graphs need tidying, and XGBoost/LightGBM models -- each saved, loaded and
compared against the ORIGINAL model's own predictions on rows it was not saved with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("pandas")

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.cross_decomposition import PLSRegression
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.feature_selection import RFE, RFECV
from sklearn.impute import KNNImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsOneClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

SaveLoad = Callable[..., tuple[bundle.Manifest, bundle.Model]]


def _frame(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50, 20, n),
            "score": rng.normal(size=n),
            "member": rng.random(n) < 0.3,
        }
    )


def _label(df: Any) -> np.ndarray:
    return np.asarray((df["income"] / 50 + df["score"] - df["age"] / 60 > 0.2).astype(int))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: RandomForestClassifier(n_estimators=8, random_state=0), id="RF"),
        pytest.param(lambda: LogisticRegression(max_iter=500), id="LogReg"),
        pytest.param(lambda: HistGradientBoostingClassifier(max_iter=10), id="HGB"),
        pytest.param(
            lambda: make_pipeline(StandardScaler(), LogisticRegression()),
            id="Pipeline(scaler,LogReg)",
        ),
    ],
)
def test_dataframe_fitted_bare_estimator(save_load: SaveLoad, make: Callable[[], Any]) -> None:
    train, test = _frame(150, 0), _frame(23, 1)
    model = make().fit(train, _label(train))
    manifest, m = save_load(model, train.head(6))
    assert [c.name for c in manifest.columns] == list(train.columns)
    np.testing.assert_array_equal(m.predict(test), model.predict(test))
    np.testing.assert_allclose(m.predict_proba(test), model.predict_proba(test), atol=1e-4)
    # the columns are matched by name, not position
    np.testing.assert_array_equal(m.predict(test[test.columns[::-1]]), model.predict(test))
    with pytest.raises(bundle.InputError, match="missing column"):
        m.predict(test.drop(columns=["score"]))


def test_categorical_hist_gradient_boosting_is_refused_with_reason(tmp_path: Path) -> None:
    train = _frame(120, 0)
    train["city"] = pd.Categorical(np.random.default_rng(0).choice(["a", "b", "c"], 120))
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype")
    model.fit(train, _label(train))
    with pytest.raises(bundle.ConversionError, match="categorical splits"):
        bundle.save(model, tmp_path / "m.mb", sample_input=train.head(5))
    assert list(tmp_path.iterdir()) == []


DOCS = np.array(
    [
        "the cat sat on the mat",
        "dogs bark at the mailman",
        "a cat and a dog",
        "loud music at the party",
        "Cats sleep all day",
        "the dog park is open",
        "música alta en la fiesta",
        "ÉCOLE DES CHATS",
        "quiet evening, no dogs",
        "the mat is red",
    ]
    * 6
)
DOC_LABELS = np.array([0, 1, 0, 2, 0, 1, 2, 0, 1, 0] * 6)
NEW_DOCS = np.array(
    [
        "a cat on a mat",
        "dogs and cats",
        "party music",
        "école",
        "unseen words",
        "the",
        "DOG PARK",
        "mat mat mat cat",
    ]
)


@pytest.mark.parametrize(
    "vectorizer",
    [
        pytest.param(lambda: TfidfVectorizer(), id="Tfidf"),
        pytest.param(lambda: CountVectorizer(ngram_range=(1, 2)), id="Count-bigrams"),
        pytest.param(lambda: TfidfVectorizer(lowercase=False, min_df=2), id="Tfidf-cased"),
    ],
)
def test_text_pipeline_with_1d_strings(save_load: SaveLoad, vectorizer: Callable[[], Any]) -> None:
    model = make_pipeline(vectorizer(), LogisticRegression(max_iter=500)).fit(DOCS, DOC_LABELS)
    manifest, m = save_load(model, DOCS[:4])
    assert manifest.inputs[0].dtype == "string"
    assert len(manifest.inputs[0].shape) == 1
    np.testing.assert_array_equal(m.predict(NEW_DOCS), model.predict(NEW_DOCS))
    np.testing.assert_allclose(
        m.predict_proba(list(NEW_DOCS)), model.predict_proba(NEW_DOCS), atol=1e-4
    )


def test_text_vectorizer_alone(save_load: SaveLoad) -> None:
    model = TfidfVectorizer().fit(DOCS)
    _, m = save_load(model, DOCS[:3])
    np.testing.assert_allclose(
        m.transform(NEW_DOCS), model.transform(NEW_DOCS).toarray(), atol=1e-5
    )


def test_text_column_in_column_transformer(save_load: SaveLoad) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"review": DOCS, "stars": rng.integers(1, 6, len(DOCS)).astype(float)})
    model = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [("text", TfidfVectorizer(), "review"), ("num", StandardScaler(), ["stars"])]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(df, DOC_LABELS)
    _, m = save_load(model, df.head(5))
    new = pd.DataFrame({"review": NEW_DOCS, "stars": np.arange(len(NEW_DOCS)) % 5 + 1.0})
    np.testing.assert_array_equal(m.predict(new), model.predict(new))
    np.testing.assert_allclose(m.predict_proba(new), model.predict_proba(new), atol=1e-4)


def test_text_bundle_uses_only_the_allowed_tokenizer(tmp_path: Path) -> None:
    import onnx
    from helpers import read_entries

    from bundle.format.graph import ALLOWED_CONTRIB_OPS

    model = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(DOCS, DOC_LABELS)
    bundle.save(model, tmp_path / "t.mb", sample_input=DOCS[:3])
    graph = onnx.load_from_string(read_entries(tmp_path / "t.mb")["model.onnx"])
    ops = {(n.domain, n.op_type) for n in graph.graph.node}
    assert {op for op in ops if op[0] not in ("", "ai.onnx", "ai.onnx.ml")} == set(
        ALLOWED_CONTRIB_OPS
    )
    locales = [a.s for n in graph.graph.node for a in n.attribute if a.name == "locale"]
    assert locales == [b"C.UTF-8"]


def _xy(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, np.searchsorted([-0.5, 0.5], X[:, 0] + 0.5 * X[:, 1])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: LinearSVC(), id="LinearSVC"),
        pytest.param(lambda: OneVsOneClassifier(LogisticRegression()), id="OneVsOne"),
    ],
)
def test_classifiers_without_zipmap_option(save_load: SaveLoad, make: Callable[[], Any]) -> None:
    X, y = _xy()
    X_test, _ = _xy(23, 1)
    model = make().fit(X, y)
    manifest, m = save_load(model, X[:5])
    np.testing.assert_array_equal(m.predict(X_test), model.predict(X_test))
    if "decision_function" in manifest.methods:
        np.testing.assert_allclose(
            m.decision_function(X_test), model.decision_function(X_test), atol=1e-4
        )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: RFE(LogisticRegression(), n_features_to_select=3), id="RFE"),
        pytest.param(lambda: RFECV(LogisticRegression(), cv=3), id="RFECV"),
    ],
)
def test_feature_selectors_around_classifiers(save_load: SaveLoad, make: Callable[[], Any]) -> None:
    X, y = _xy()
    X_test, _ = _xy(23, 1)
    model = make().fit(X, y)
    manifest, m = save_load(model, X[:5])
    assert manifest.model.task == "transformer"  # skl2onnx converts the selection
    np.testing.assert_allclose(m.transform(X_test), model.transform(X_test), atol=1e-6)


def test_pls_regression_declared_shape_is_corrected(save_load: SaveLoad) -> None:
    X, _ = _xy()
    model = PLSRegression(n_components=2).fit(X, X @ [1.0, 2.0, 0.0, -1.0, 0.5])
    manifest, m = save_load(model, X[:5])
    assert [d for d in manifest.outputs[0].shape[1:]] == [1]
    X_test, _ = _xy(23, 1)
    np.testing.assert_allclose(m.predict(X_test), model.predict(X_test), atol=1e-4)


def test_knn_imputer_local_functions_are_inlined(save_load: SaveLoad) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    X[rng.random(X.shape) < 0.15] = np.nan
    X_test = rng.normal(size=(17, 4))
    X_test[rng.random(X_test.shape) < 0.2] = np.nan
    model = KNNImputer(n_neighbors=3).fit(X)
    manifest, m = save_load(model, X[:6])
    assert "local_domain" not in manifest.onnx.opsets
    np.testing.assert_allclose(m.transform(X_test), model.transform(X_test), atol=1e-5)


def test_zipmap_cannot_be_turned_on() -> None:
    with pytest.raises(ValueError, match="zipmap must stay False"):
        bundle.SklearnOptions(converter_options={LogisticRegression: {"zipmap": True}})
    with pytest.raises(TypeError, match="estimator class"):
        bundle.SklearnOptions(converter_options={"LogisticRegression": {}})


def test_converter_options_reach_skl2onnx(save_load: SaveLoad) -> None:
    X, y = _xy()
    model = LogisticRegression().fit(X, y)
    opts = bundle.SklearnOptions(converter_options={LogisticRegression: {"raw_scores": True}})
    manifest, m = save_load(model, X[:5], options=opts)
    # raw scores: the second output is the decision function, and is offered as that
    assert "predict_proba" not in manifest.methods
    X_test, _ = _xy(23, 1)
    np.testing.assert_array_equal(m.predict(X_test), model.predict(X_test))
    np.testing.assert_allclose(
        m.decision_function(X_test), model.decision_function(X_test), atol=1e-4
    )


def test_graph_onnxruntime_cannot_load_is_never_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter output onnxruntime refuses stops save before any file is written."""
    import skl2onnx
    from onnx import helper

    X, _ = _xy()
    model = Ridge().fit(X, X[:, 0])
    real = skl2onnx.convert_sklearn

    def broken(*a: Any, **kw: Any) -> Any:
        onx = real(*a, **kw)
        # a node whose input does not exist: the graph is invalid for onnxruntime
        onx.graph.node.append(helper.make_node("Relu", ["missing_value"], ["dangling"]))
        return onx

    monkeypatch.setattr(skl2onnx, "convert_sklearn", broken)
    with pytest.raises(bundle.ConversionError, match="onnxruntime cannot load"):
        bundle.save(model, tmp_path / "m.mb", sample_input=X[:4])
    assert list(tmp_path.iterdir()) == []


def test_graph_without_inputs_is_refused_clearly(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from bundle.export.onnx_graph import run_converted

    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["Y"], value=helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
            )
        ],
        "const",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(bundle.ConversionError, match="has no inputs"):
        run_converted(model, {}, "const")


def test_loader_allows_only_the_tokenizer_from_com_microsoft(
    tmp_path: Path, signing_key: Any
) -> None:
    """A signed graph may hold com.microsoft.Tokenizer; any other operator of that
    domain (here the same node renamed) is refused at load."""
    import onnx
    from helpers import build_signed, manifest_of, read_entries

    model = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(DOCS, DOC_LABELS)
    bundle.save(model, tmp_path / "t.mb", sample_input=DOCS[:3], signing_key=signing_key)
    bundle.load(tmp_path / "t.mb", trusted_keys=signing_key.public_key)  # the Tokenizer: fine
    entries = read_entries(tmp_path / "t.mb")
    graph = onnx.load_from_string(entries["model.onnx"])
    for node in graph.graph.node:
        if node.op_type == "Tokenizer":
            node.op_type = "Gelu"  # exists in com.microsoft, not on the list
    entries["model.onnx"] = graph.SerializeToString()
    contents = {
        k: v for k, v in entries.items() if k != "manifest.json" and not k.startswith("signatures/")
    }
    build_signed(tmp_path / "evil.mb", contents, [signing_key], base=manifest_of(tmp_path / "t.mb"))
    with pytest.raises(bundle.UntrustedContentError, match=r"com\.microsoft"):
        bundle.load(tmp_path / "evil.mb", trusted_keys=signing_key.public_key)


# --------------------------------------------------------------------------- plain ONNX


def _onnx(nodes: list[Any], inputs: list[Any], outputs: list[Any], **kw: Any) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=kw.pop("opsets", [helper.make_opsetid("", 17)]), **kw
    )
    model.ir_version = 9  # what this onnxruntime loads (onnx writes its newest by default)
    return model


def test_plain_onnx_local_functions_are_inlined(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    fn = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model = _onnx(
        [helper.make_node("Twice", ["X"], ["Y"], domain="local")],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])],
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[fn],
    )
    manifest = bundle.save(model, tmp_path / "f.mb")
    assert "local" not in manifest.onnx.opsets
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(
        bundle.load(tmp_path / "f.mb", allow_unsigned=True).predict(x), 2 * x
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("preview", "com.microsoft::FusedMatMul"),
        ("no inputs", "has no inputs"),
        ("sequence output", "is a sequence_type, not a tensor"),
    ],
)
def test_plain_onnx_load_would_refuse_is_not_saved(tmp_path: Path, case: str, message: str) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])
    if case == "preview":
        model = _onnx(
            [helper.make_node("FusedMatMul", ["X", "X"], ["Y"], domain="com.microsoft")],
            [x],
            [y],
            opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        )
    elif case == "no inputs":
        model = _onnx(
            [
                helper.make_node(
                    "Constant",
                    [],
                    ["Y"],
                    value=helper.make_tensor("c", TensorProto.FLOAT, [1, 2], [1.0, 2.0]),
                )
            ],
            [],
            [y],
        )
    else:
        seq = helper.make_tensor_sequence_value_info("Y", TensorProto.FLOAT, ["N", 2])
        model = _onnx([helper.make_node("SequenceConstruct", ["X"], ["Y"])], [x], [seq])
    with pytest.raises(bundle.ConversionError, match=message):
        bundle.save(model, tmp_path / "x.mb")
    assert list(tmp_path.iterdir()) == []
