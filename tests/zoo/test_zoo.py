"""The CI subset of the coverage zoo (``benchmarks/zoo.py`` runs all of it): a few
models per family, each saved, loaded and compared with the original library's own
output on fresh inputs. A case may be refused with a clear reason where the zoo
table says so; it may never crash or load with different results."""

from __future__ import annotations

import pytest
from zoo.cases import Case, all_cases, run_case

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

SUBSET = {
    "scikit-learn": [
        "LogisticRegression",
        "RandomForestRegressor",
        "LinearSVC",
        "OneVsOneClassifier",
        "KNNImputer",
        "PLSRegression",
        "StandardScaler",
        "Pipeline(TfidfVectorizer,LogisticRegression)",
    ],
    "boosting": ["XGBClassifier-multiclass", "Pipeline(scaler,LGBMRegressor)"],
    "huggingface": [
        "BertModel (encoder)",
        "GPT2LMHeadModel (decoder)",
        "T5ForConditionalGeneration (encoder-decoder)",
    ],
    "keras": ["layers.Normalization (tabular)", "layers.LSTM"],
}
REQUIRES = {
    "boosting": ("xgboost", "lightgbm", "onnxmltools"),
    "huggingface": ("transformers", "torch", "onnxscript"),
    "keras": ("keras", "tf2onnx"),
}


def _cases() -> list[Case]:
    by_name = {(c.family, c.name): c for c in all_cases(list(SUBSET))}
    return [
        by_name[(fam, n)] for fam, names in SUBSET.items() for n in names if (fam, n) in by_name
    ]


def test_subset_is_complete() -> None:
    """Every subset name exists in the zoo (a renamed case would silently drop out)."""
    names = {(c.family, c.name) for c in all_cases(["scikit-learn"])}
    assert {("scikit-learn", n) for n in SUBSET["scikit-learn"]} <= names


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c.family}:{c.name}")
def test_zoo_case(case: Case) -> None:
    for module in REQUIRES.get(case.family, ()):
        pytest.importorskip(module)
    result = run_case(case)
    assert result.status == "ok", f"{result.status}: {result.detail}"
