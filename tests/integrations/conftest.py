"""Fixtures for the batch-scoring tests: signed bundles (a scikit-learn DataFrame
pipeline and a PyTorch MLP), a tampered copy, and an environment in which the
engines' worker processes import this checkout's ``bundle`` and these tests."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle
from bundle.format.archive import ZipReader
from bundle.format.weights import WEIGHTS_NAME

ROOT = Path(__file__).resolve().parents[2]


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


@dataclass
class Signed:
    """A signed bundle, the original model and data to score."""

    path: Path
    model: Any
    data: Any
    key: bundle.PrivateKey
    digest: str


def frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.uniform(18, 80, size=n),
                         "income": rng.lognormal(10, 0.5, size=n),
                         "visits": rng.integers(0, 30, size=n),
                         "city": rng.choice(["paris", "lyon", "nice"], size=n)})


@pytest.fixture(scope="session")
def batch_key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="session")
def pipeline_bundle(tmp_path_factory: pytest.TempPathFactory,
                    batch_key: bundle.PrivateKey) -> Signed:
    """ColumnTransformer (scaler + one-hot) + LogisticRegression, fitted on a DataFrame."""
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from bundle.integrations import manifest_digest

    train = frame(400, 0)
    y = ((train["age"] - 45) / 15 + (train["city"] == "paris") > 0.3).astype(int)
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "income", "visits"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(train, y)
    path = tmp_path_factory.mktemp("pipeline") / "churn.mbundle"
    manifest = bundle.save(model, path, sample_input=train.iloc[:20], signing_key=batch_key,
                           name="churn")
    return Signed(path, model, frame(600, 1), batch_key, manifest_digest(manifest))


@pytest.fixture(scope="session")
def torch_bundle(tmp_path_factory: pytest.TempPathFactory,
                 batch_key: bundle.PrivateKey) -> Signed:
    """A PyTorch MLP 64 -> 256 -> 4 (about 70 kB of weights)."""
    torch = pytest.importorskip("torch")
    from bundle.integrations import manifest_digest

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 4)).eval()
    path = tmp_path_factory.mktemp("torch") / "mlp.mbundle"
    manifest = bundle.save(mlp, path, sample_input=torch.randn(1, 64), signing_key=batch_key,
                           name="mlp", training_state=False)
    x = np.random.default_rng(2).standard_normal((500, 64)).astype(np.float32)
    return Signed(path, mlp, x, batch_key, manifest_digest(manifest))


def torch_expected(signed: Signed, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out: np.ndarray = signed.model(torch.from_numpy(x)).numpy()
    return out


def weights_sample(path: Path) -> bytes:
    """64 bytes from the middle of the weights entry: what a task must never carry."""
    with ZipReader(path) as r:
        data = r.read(WEIGHTS_NAME, max_size=1 << 30)
    mid = len(data) // 2
    return data[mid:mid + 64]


def tamper(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with one byte of its weights changed (the signature stays)."""
    shutil.copyfile(src, dst)
    with ZipReader(dst) as r:
        entry = r.entries[WEIGHTS_NAME]
        offset = entry.data_offset + entry.compressed_size // 2
    with open(dst, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    return dst


@pytest.fixture(scope="session")
def tampered_pipeline(pipeline_bundle: Signed, tmp_path_factory: pytest.TempPathFactory,
                      ) -> Signed:
    """The pipeline saved as version 2 (a digest no worker has cached), one weight byte
    changed afterwards; ``digest`` is what the signed manifest says."""
    from bundle.integrations import manifest_digest

    folder = tmp_path_factory.mktemp("tampered")
    manifest = bundle.save(pipeline_bundle.model, folder / "good.mbundle",
                           sample_input=pipeline_bundle.data.iloc[:20],
                           signing_key=pipeline_bundle.key, name="churn", version="2")
    path = tamper(folder / "good.mbundle", folder / "churn.mbundle")
    return Signed(path, pipeline_bundle.model, pipeline_bundle.data, pipeline_bundle.key,
                  manifest_digest(manifest))
