"""Fixtures for the batch-scoring tests: signed bundles (a scikit-learn DataFrame
pipeline and a PyTorch MLP), a tampered copy, and an environment in which the
engines' worker processes import this checkout's ``bundle`` and these tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from integrations_helpers import ROOT, Signed, frame, tamper

import bundle


@pytest.fixture(scope="session", autouse=True)
def _worker_environment() -> Iterator[None]:
    """Ray, Spark and Dask start worker processes from this environment: they must
    import this checkout (and, for classes defined in tests, the tests)."""
    saved = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tests" / "integrations"), str(ROOT / "tests")]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def batch_key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="session")
def pipeline_bundle(
    tmp_path_factory: pytest.TempPathFactory, batch_key: bundle.PrivateKey
) -> Signed:
    """ColumnTransformer (scaler + one-hot) + LogisticRegression, fitted on a DataFrame."""
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from bundle.integrations import manifest_digest

    train = frame(400, 0)
    y = ((train["age"] - 45) / 15 + (train["city"] == "paris") > 0.3).astype(int)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "visits"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(train, y)
    path = tmp_path_factory.mktemp("pipeline") / "churn.mbundle"
    manifest = bundle.save(
        model, path, sample_input=train.iloc[:20], signing_key=batch_key, name="churn"
    )
    return Signed(path, model, frame(600, 1), batch_key, manifest_digest(manifest))


@pytest.fixture(scope="session")
def torch_bundle(tmp_path_factory: pytest.TempPathFactory, batch_key: bundle.PrivateKey) -> Signed:
    """A PyTorch MLP 64 -> 256 -> 4 (about 70 kB of weights)."""
    torch = pytest.importorskip("torch")
    from bundle.integrations import manifest_digest

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4)
    ).eval()
    path = tmp_path_factory.mktemp("torch") / "mlp.mbundle"
    manifest = bundle.save(
        mlp,
        path,
        sample_input=torch.randn(1, 64),
        signing_key=batch_key,
        name="mlp",
        training_state=False,
    )
    x = np.random.default_rng(2).standard_normal((500, 64)).astype(np.float32)
    return Signed(path, mlp, x, batch_key, manifest_digest(manifest))


@pytest.fixture(scope="session")
def tampered_pipeline(
    pipeline_bundle: Signed,
    tmp_path_factory: pytest.TempPathFactory,
) -> Signed:
    """The pipeline saved as version 2 (a digest no worker has cached), one weight byte
    changed afterwards; ``digest`` is what the signed manifest says."""
    from bundle.integrations import manifest_digest

    folder = tmp_path_factory.mktemp("tampered")
    manifest = bundle.save(
        pipeline_bundle.model,
        folder / "good.mbundle",
        sample_input=pipeline_bundle.data.iloc[:20],
        signing_key=pipeline_bundle.key,
        name="churn",
        version="2",
    )
    path = tamper(folder / "good.mbundle", folder / "churn.mbundle")
    return Signed(
        path,
        pipeline_bundle.model,
        pipeline_bundle.data,
        pipeline_bundle.key,
        manifest_digest(manifest),
    )
