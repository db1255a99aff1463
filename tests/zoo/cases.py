"""The model zoo: models built from the libraries' own constructors, nothing downloaded.

Each :class:`Case` builds a fitted (or randomly initialised) model, a sample to save
it with and inputs of another batch size to compare on. :func:`run_case` saves,
loads and compares it against the original library's own output, and sorts the
outcome: ``ok``; ``refused`` (a :class:`bundle.BundleError` naming why);
``mismatch`` (saved and loaded, but different on fresh inputs); ``crash`` (any
other exception: a bug); ``n/a`` (the library itself cannot build or fit it with
defaults). ``benchmarks/zoo.py`` runs every case and prints the table by family;
``tests/zoo/test_zoo.py`` runs the CI subset.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import bundle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    build: Callable[[], tuple[Any, Any, Any, dict[str, Any]]]
    """() -> (model, sample_input, test_input, save keywords)"""
    compare: str = "predict"  # "predict" (scikit-learn API) or "first" (first output)


@dataclass(frozen=True)
class Result:
    family: str
    name: str
    status: str
    detail: str
    seconds: float


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


# --------------------------------------------------------------------------- running


def _first_output(model: Any, test: Any) -> np.ndarray:
    """The original library's own first output on ``test``."""
    mod = type(model).__module__.split(".")[0]
    if mod in ("keras", "tensorflow"):
        out = model(test, training=False)
        out = (
            out[0]
            if isinstance(out, (list, tuple))
            else next(iter(out.values()))
            if isinstance(out, dict)
            else out
        )
        return np.asarray(out)
    import torch

    with torch.no_grad():
        out = (
            model(**test)
            if isinstance(test, dict)
            else model(*test)
            if isinstance(test, tuple)
            else model(test)
        )
    if isinstance(out, torch.Tensor):
        return out.numpy()
    if hasattr(out, "keys"):
        return next(v for v in out.values() if isinstance(v, torch.Tensor)).numpy()
    return out[0].numpy()  # type: ignore[no-any-return]


def _as_numpy(test: Any) -> Any:
    if isinstance(test, dict):
        return {k: _as_numpy(v) for k, v in test.items()}
    if isinstance(test, tuple):
        return [_as_numpy(v) for v in test]
    return test.numpy() if hasattr(test, "numpy") and not isinstance(test, np.ndarray) else test


class _NotComparableError(Exception):
    """The original library cannot compute what the bundle is compared with."""


def _reference(model: Any, test: Any) -> dict[str, np.ndarray]:
    """The original's own predict/transform/predict_proba on the test rows."""
    out = {}
    for method in ("predict", "transform", "predict_proba"):
        try:
            fn = getattr(model, method)
        except AttributeError:
            continue
        try:
            value = fn(test)
        except Exception:
            continue
        value = value.toarray() if hasattr(value, "toarray") else value
        if isinstance(value, np.ndarray):
            out[method] = value
    return out


def _compare_predict(reference: dict[str, np.ndarray], m: bundle.Model, test: Any) -> str | None:
    method = "predict" if "predict" in m.manifest.methods else "transform"
    if method not in reference:
        raise _NotComparableError(f"the original's own {method}() fails on fresh rows")
    want = reference[method]
    got = m.predict(test)
    if got.shape != want.shape:
        return f"shape {got.shape} vs {want.shape}"
    if want.dtype.kind in "OUSb" or (
        want.dtype.kind in "iu" and m.manifest.model.task in ("classifier", "clusterer")
    ):
        bad = int((got.astype(str) != want.astype(str)).sum())
        if bad > max(1, len(want) // 20):  # a few float32 ties at class boundaries
            return f"{bad} of {len(want)} labels differ"
        if "predict_proba" in m.manifest.methods and "predict_proba" in reference:
            worst = float(np.max(np.abs(m.predict_proba(test) - reference["predict_proba"])))
            if worst > 1e-3:
                return f"probabilities differ by {worst:.3g}"
        return None
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    tol = 1e-3 + 1e-3 * np.abs(want.astype(np.float64))
    if np.any(err > tol):
        return f"max abs difference {float(np.nanmax(err)):.3g}"
    return None


def run_case(case: Case, workdir: str | None = None) -> Result:
    """Save, load and compare one case; never raises."""
    start = time.perf_counter()

    def result(status: str, detail: str = "") -> Result:
        return Result(case.family, case.name, status, detail, time.perf_counter() - start)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, sample, test, kw = case.build()
            reference = _reference(model, test) if case.compare == "predict" else {}
    except Exception as e:
        return result("n/a", f"cannot build: {type(e).__name__}: {_one_line(e)}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = os.path.join(tmp, "m.mbundle")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bundle.save(model, path, sample_input=sample, **kw)
                m = bundle.load(path, allow_unsigned=True)
                if case.compare == "predict":
                    problem = _compare_predict(reference, m, test)
                else:
                    got = m.run(_as_numpy(test))[m.manifest.outputs[0].name]
                    want = _first_output(model, test)
                    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    tol = 1e-3 + 1e-3 * np.abs(want.astype(np.float64))
                    problem = (
                        None
                        if got.shape == want.shape and not np.any(err > tol)
                        else f"shape {got.shape} vs {want.shape}"
                        if got.shape != want.shape
                        else f"max abs difference {float(err.max()):.3g}"
                    )
        except bundle.BundleError as e:
            return result("refused", f"{type(e).__name__}: {_one_line(e)}")
        except _NotComparableError as e:
            return result("n/a", str(e))
        except Exception as e:
            return result("crash", f"{type(e).__name__}: {_one_line(e)}")
    return result("mismatch" if problem else "ok", problem or "")


# --------------------------------------------------------------------------- scikit-learn


def _sk_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(n, 5))) * [1, 2, 0.5, 3, 1]
    score = X[:, 0] + 0.5 * X[:, 1] - X[:, 2]
    return X, np.searchsorted(np.quantile(score, [1 / 3, 2 / 3]), score), score + X[:, 3]


_NOT_A_MATRIX = {
    "DictVectorizer",
    "FeatureHasher",
    "LabelBinarizer",
    "LabelEncoder",
    "MultiLabelBinarizer",
    "CountVectorizer",
    "HashingVectorizer",
    "TfidfVectorizer",
}


def _required(cls: type) -> list[str]:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _sk_build(cls: type, kind: str) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
    def build() -> tuple[Any, Any, Any, dict[str, Any]]:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.preprocessing import StandardScaler
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        X, y3, yr = _sk_data(150, 0)
        X_test = _sk_data(23, 1)[0]
        args: dict[str, Any] = {}
        for p in _required(cls):
            if p == "estimator":
                args[p] = Ridge() if kind == "regressor" else LogisticRegression(max_iter=300)
            elif p == "estimators":
                args[p] = (
                    [("a", Ridge()), ("b", DecisionTreeRegressor(max_depth=3))]
                    if kind == "regressor"
                    else [
                        ("a", LogisticRegression(max_iter=300)),
                        ("b", DecisionTreeClassifier(max_depth=3)),
                    ]
                )
            elif p == "steps":
                args[p] = [("s", StandardScaler()), ("m", LogisticRegression(max_iter=300))]
            elif p == "transformer_list":
                args[p] = [("s", StandardScaler())]
            else:
                raise TypeError(f"needs {p}")
        model = cls(**args)
        if kind == "regressor":
            y: Any = (
                np.column_stack([yr, yr * 2])
                if "MultiOutput" in cls.__name__ or "RegressorChain" in cls.__name__
                else yr
            )
            model.fit(X, y)
        elif kind == "classifier":
            y = (
                np.column_stack([y3, (y3 > 0).astype(int)])
                if cls.__name__ in ("MultiOutputClassifier", "ClassifierChain")
                else y3
            )
            model.fit(X, y)
        else:
            model.fit(X, y3) if cls.__name__ in (
                "SelectKBest",
                "SelectPercentile",
                "SelectFpr",
                "SelectFdr",
                "SelectFwe",
                "GenericUnivariateSelect",
                "RFE",
                "RFECV",
                "SelectFromModel",
                "LinearDiscriminantAnalysis",
                "NeighborhoodComponentsAnalysis",
                "PLSCanonical",
                "PLSSVD",
                "CCA",
                "SequentialFeatureSelector",
            ) else model.fit(X)
        return model, X[:7], X_test, {}

    return build


def sklearn_cases() -> Iterator[Case]:
    """Every scikit-learn estimator skl2onnx has a converter for, with defaults."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.utils import all_estimators

    for name, cls in all_estimators():
        if cls not in sklearn_operator_name_map:
            continue
        if name in _NOT_A_MATRIX:
            continue  # the text cases below cover the vectorizers
        kind = (
            "classifier"
            if issubclass(cls, ClassifierMixin)
            else "regressor"
            if issubclass(cls, RegressorMixin)
            else "other"
        )
        yield Case("scikit-learn", name, _sk_build(cls, kind))
    yield from _text_cases()


def _text_cases() -> Iterator[Case]:
    docs = np.array(
        [
            "the cat sat on the mat",
            "dogs bark at night",
            "a cat and a dog",
            "loud music, late party",
            "École des chats",
            "the dog park",
        ]
        * 8
    )
    labels = np.arange(len(docs)) % 3
    test = np.array(["a cat on a mat", "dogs", "party music", "école", "zebra"])

    def make(vec: str) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            from sklearn.feature_extraction import text
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline

            v = getattr(text, vec)(**({"ngram_range": (1, 2)} if vec == "CountVectorizer" else {}))
            return make_pipeline(v, LogisticRegression()).fit(docs, labels), docs[:3], test, {}

        return build

    for vec in ("TfidfVectorizer", "CountVectorizer"):
        yield Case("scikit-learn", f"Pipeline({vec},LogisticRegression)", make(vec))


# --------------------------------------------------------------------------- boosting


def boosting_cases() -> Iterator[Case]:
    """XGBoost and LightGBM classifiers and regressors, bare and in pipelines."""

    def make(
        lib: str, cls: str, target: str, pipeline: bool = False, **kw: Any
    ) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            import importlib

            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            est = getattr(importlib.import_module(lib), cls)(**kw)
            model = make_pipeline(StandardScaler(), est) if pipeline else est
            X, y3, yr = _sk_data(300, 0)
            y = {"y3": y3, "y2": (y3 > 0).astype(int), "yr": yr}[target]
            return model.fit(X, y), X[:5], _sk_data(37, 1)[0], {}

        return build

    quiet: dict[str, Any] = {"verbose": -1}
    for name, args in {
        "XGBClassifier-binary": ("xgboost", "XGBClassifier", "y2"),
        "XGBClassifier-multiclass": ("xgboost", "XGBClassifier", "y3"),
        "XGBRegressor": ("xgboost", "XGBRegressor", "yr"),
        "XGBRFClassifier": ("xgboost", "XGBRFClassifier", "y3"),
        "XGBRFRegressor": ("xgboost", "XGBRFRegressor", "yr"),
        "LGBMClassifier-binary": ("lightgbm", "LGBMClassifier", "y2"),
        "LGBMClassifier-multiclass": ("lightgbm", "LGBMClassifier", "y3"),
        "LGBMRegressor": ("lightgbm", "LGBMRegressor", "yr"),
    }.items():
        lib, cls, target = args
        kw: dict[str, Any] = quiet if lib == "lightgbm" else {}
        yield Case("boosting", name, make(lib, cls, target, n_estimators=20, **kw))
        yield Case(
            "boosting",
            f"Pipeline(scaler,{name})",
            make(lib, cls, target, True, n_estimators=20, **kw),
        )


# --------------------------------------------------------------------------- torch vision


def import_torchvision() -> Any:
    """torchvision, even where the registry's build is for CUDA and the installed torch
    is the CPU one: its C++ ops (nms, roi_align) then do not load, and only the fake-
    tensor registrations of those ops in ``_meta_registrations`` fail at import. The
    classification models never touch them, so that module is stood in for."""
    try:
        import torchvision
    except RuntimeError:
        for mod in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[mod]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations"
        )
        import torchvision
    return torchvision


def vision_cases() -> Iterator[Case]:
    """torchvision and timm classification models, random weights, 64x64 inputs."""

    def make(source: str, arch: str) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            import torch

            torch.manual_seed(0)
            if source == "torchvision":
                tv = import_torchvision()
                model = getattr(tv.models, arch)(weights=None, num_classes=10)
            else:
                import_torchvision()
                import timm

                model = timm.create_model(
                    arch,
                    pretrained=False,
                    num_classes=10,
                    **({"img_size": 64} if arch.startswith(("vit", "deit", "mixer")) else {}),
                )
            model.eval()
            return model, torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64), {}

        return build

    for arch in (
        "resnet18",
        "mobilenet_v3_small",
        "squeezenet1_1",
        "shufflenet_v2_x0_5",
        "mnasnet0_5",
        "efficientnet_b0",
        "regnet_y_400mf",
        "densenet121",
        "convnext_tiny",
        "googlenet",
    ):
        yield Case(
            "torchvision/timm", f"torchvision.{arch}", make("torchvision", arch), compare="first"
        )
    for arch in (
        "resnet10t",
        "mobilenetv3_small_050",
        "efficientnet_b0",
        "convnext_atto",
        "vit_tiny_patch16_224",
        "deit_tiny_patch16_224",
        "regnetx_002",
        "ghostnet_100",
        "mixer_s16_224",
        "levit_128s",
    ):
        yield Case("torchvision/timm", f"timm.{arch}", make("timm", arch), compare="first")


# --------------------------------------------------------------------------- Hugging Face


def hf_cases() -> Iterator[Case]:
    """Hugging Face architectures from tiny configs (encoder, decoder, encoder-decoder,
    vision); causal LMs keep their default ``use_cache=True``."""

    def make(
        cfg: str, cls: str, inputs: str, **kw: Any
    ) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            import torch

            # transformers imports torchvision when it is there, broken or not
            with contextlib.suppress(ImportError):
                import_torchvision()
            import importlib

            transformers: Any = importlib.import_module("transformers")
            transformers.logging.set_verbosity_error()
            torch.manual_seed(0)
            config = getattr(transformers, cfg)(**kw)
            model = getattr(transformers, cls)(config).eval()
            gen = torch.Generator().manual_seed(1)
            if inputs == "pixels":
                size = kw["image_size"]
                sample: Any = {"pixel_values": torch.randn(1, 3, size, size)}
                test: Any = {"pixel_values": torch.randn(2, 3, size, size)}
                axes: dict[str, Any] = {}
            else:
                vocab = kw.get("vocab_size", 100)

                def ids(b: int, s: int) -> Any:
                    return torch.randint(0, vocab, (b, s), generator=gen)

                names = ["input_ids", "decoder_input_ids"] if inputs == "seq2seq" else ["input_ids"]
                sample = {n: ids(2, 8) for n in names}
                test = {n: ids(3, 8) for n in names}
                axes = {n: {0: "batch"} for n in names}
            return model, sample, test, ({"dynamic_axes": axes} if axes else {})

        return build

    small = {"vocab_size": 100, "max_position_embeddings": 64}
    yield Case(
        "huggingface",
        "BertModel (encoder)",
        make(
            "BertConfig",
            "BertModel",
            "ids",
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            **small,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "DistilBertForSequenceClassification (encoder)",
        make(
            "DistilBertConfig",
            "DistilBertForSequenceClassification",
            "ids",
            n_layers=2,
            dim=32,
            n_heads=2,
            hidden_dim=64,
            **small,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "RobertaModel (encoder)",
        make(
            "RobertaConfig",
            "RobertaModel",
            "ids",
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=70,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "GPT2LMHeadModel (decoder)",
        make(
            "GPT2Config",
            "GPT2LMHeadModel",
            "ids",
            n_layer=2,
            n_embd=32,
            n_head=2,
            vocab_size=100,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "LlamaForCausalLM (decoder)",
        make(
            "LlamaConfig",
            "LlamaForCausalLM",
            "ids",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **small,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "T5ForConditionalGeneration (encoder-decoder)",
        make(
            "T5Config",
            "T5ForConditionalGeneration",
            "seq2seq",
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            vocab_size=100,
            decoder_start_token_id=0,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "BartForConditionalGeneration (encoder-decoder)",
        make(
            "BartConfig",
            "BartForConditionalGeneration",
            "seq2seq",
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            **small,
        ),
        compare="first",
    )
    yield Case(
        "huggingface",
        "ViTModel (vision)",
        make(
            "ViTConfig",
            "ViTModel",
            "pixels",
            image_size=32,
            patch_size=8,
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        compare="first",
    )


# --------------------------------------------------------------------------- Keras


def keras_cases() -> Iterator[Case]:
    """Keras applications (weights=None, small inputs) and layer families."""

    def app(name: str, size: int) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            import keras

            keras.utils.set_random_seed(0)
            model = getattr(keras.applications, name)(
                weights=None, input_shape=(size, size, 3), classes=10
            )
            rng = np.random.default_rng(0)
            x = rng.uniform(0, 255, size=(3, size, size, 3)).astype("float32")
            return model, x[:1], x[1:], {}

        return build

    for name, size in (
        ("MobileNetV3Small", 32),
        ("MobileNetV2", 32),
        ("EfficientNetB0", 32),
        ("EfficientNetV2B0", 32),
        ("ResNet50", 32),
        ("DenseNet121", 32),
        ("ConvNeXtTiny", 32),
        ("Xception", 71),
    ):
        yield Case("keras", f"applications.{name}", app(name, size), compare="first")

    def layers(kind: str) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
        def build() -> tuple[Any, Any, Any, dict[str, Any]]:
            import keras

            keras.utils.set_random_seed(0)
            rng = np.random.default_rng(0)
            L = keras.layers
            if kind == "Normalization (tabular)":
                x = rng.normal(size=(40, 6)).astype("float32") * 5 + 2
                norm = L.Normalization()
                norm.adapt(x)
                inp = keras.Input((6,))
                model = keras.Model(inp, L.Dense(1)(L.Dense(8, "relu")(norm(inp))))
                return model, x[:3], x[3:10], {}
            if kind in ("LSTM", "GRU", "Conv1D"):
                x = rng.normal(size=(5, 12, 4)).astype("float32")
                inp = keras.Input((None, 4))
                y = getattr(L, kind)(8) if kind != "Conv1D" else L.Conv1D(8, 3)
                out = L.Dense(2)(L.GlobalAveragePooling1D()(y(inp)) if kind == "Conv1D" else y(inp))
                return keras.Model(inp, out), x[:2], x[2:], {}
            if kind == "Embedding":
                x = rng.integers(0, 50, size=(5, 9)).astype("int64")
                inp = keras.Input((None,), dtype="int64")
                out = L.Dense(3)(L.GlobalAveragePooling1D()(L.Embedding(50, 8)(inp)))
                return keras.Model(inp, out), x[:2], x[2:], {}
            if kind == "MultiHeadAttention":
                x = rng.normal(size=(4, 6, 16)).astype("float32")
                inp = keras.Input((6, 16))
                out = L.MultiHeadAttention(2, 8)(inp, inp)
                return keras.Model(inp, out), x[:2], x[2:], {}
            raise ValueError(kind)

        return build

    for kind in (
        "Normalization (tabular)",
        "LSTM",
        "GRU",
        "Conv1D",
        "Embedding",
        "MultiHeadAttention",
    ):
        yield Case("keras", f"layers.{kind}", layers(kind), compare="first")


FAMILIES: dict[str, Callable[[], Iterator[Case]]] = {
    "scikit-learn": sklearn_cases,
    "boosting": boosting_cases,
    "torchvision/timm": vision_cases,
    "huggingface": hf_cases,
    "keras": keras_cases,
}


def all_cases(families: list[str] | None = None) -> list[Case]:
    """The cases of the named families (all by default); a family whose library is
    missing gives one ``n/a`` case saying so."""
    out: list[Case] = []
    for fam, make in FAMILIES.items():
        if families and fam not in families:
            continue
        try:
            out.extend(make())
        except ImportError as e:
            out.append(Case(fam, f"({e.name} not installed)", _missing(e)))
    return out


def _missing(e: ImportError) -> Callable[[], tuple[Any, Any, Any, dict[str, Any]]]:
    def build() -> tuple[Any, Any, Any, dict[str, Any]]:
        raise e

    return build
