"""Helpers the batch-scoring tests share (their fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import bundle
from bundle.format.archive import ZipReader
from bundle.format.weights import WEIGHTS_NAME

ROOT = Path(__file__).resolve().parents[2]


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
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 80, size=n),
            "income": rng.lognormal(10, 0.5, size=n),
            "visits": rng.integers(0, 30, size=n),
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
        }
    )


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
    return data[mid : mid + 64]


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
