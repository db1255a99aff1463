"""The models measured, built the same way (same seed) in the parent and in any child.

Nothing heavy is imported at module level: a cold-start child imports this module
to get a torch architecture, and must pay only for the framework it uses.
"""

from __future__ import annotations

import itertools
from typing import Any

MLP_100MB = (1024, 4096, 4096, 1024, 10)
"""Widths of the ~100 MB MLP: 25.2 M float32 parameters (96 MiB)."""
MLP_1GB = (4096, 8192, 8192, 8192, 8192, 4096)
"""Widths of the ~1 GB MLP: 268 M float32 parameters (1024 MiB)."""
TABULAR_FEATURES = 20
CNN_INPUT = (3, 32, 32)


def torch_mlp(widths: tuple[int, ...], *, seed: int = 0, device: str | None = None) -> Any:
    """Linear/ReLU stack in eval mode; ``device="meta"`` builds it without memory."""
    import torch

    torch.manual_seed(seed)
    layers: list[Any] = []
    with torch.device(device or "cpu"):
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers).eval()


def torch_cnn(*, seed: int = 0) -> Any:
    """A small image classifier: Conv/BatchNorm/ReLU/MaxPool twice, then two Linear.

    A few training-mode passes give BatchNorm non-trivial running statistics, so
    the exported (folded) normalisation is actually exercised.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c, h, w = CNN_INPUT
    model = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, c, h, w) * 2 + 0.5)
    return model.eval()


def keras_mlp(widths: tuple[int, ...], *, seed: int = 0) -> Any:
    """The Keras counterpart of :func:`torch_mlp` (same widths, Dense/ReLU)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input(shape=(widths[0],), name="x")]
    for i, b in enumerate(widths[1:]):
        last = i == len(widths) - 2
        layers.append(keras.layers.Dense(b, activation=None if last else "relu"))
    return keras.Sequential(layers)


def tabular(rows: int = 2000, *, seed: int = 0) -> tuple[Any, Any]:
    """A synthetic binary classification table (float64 features, int labels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, TABULAR_FEATURES))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    return x, y


def sklearn_pipeline() -> Any:
    """StandardScaler + LogisticRegression, fitted: the 'small pipeline'."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = tabular()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)


def random_forest() -> Any:
    """RandomForestClassifier(200 trees, depth <= 12), fitted."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = tabular()
    return RandomForestClassifier(n_estimators=200, max_depth=12, random_state=0, n_jobs=1).fit(
        x, y
    )
