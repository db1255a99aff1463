"""Positive control, run in a throwaway subprocess: load each corpus file the usual,
unsafe way and print which sentinels appeared. Proves the corpus is live ammunition."""

from __future__ import annotations

import io
import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

for path, loader in json.loads(sys.argv[1]):
    data = Path(path).read_bytes()
    try:
        if loader == "joblib":
            import joblib

            joblib.load(io.BytesIO(data))
        elif loader == "torch":
            import torch

            torch.load(io.BytesIO(data), weights_only=False)
        else:
            pickle.loads(data)
    except Exception as e:
        print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
