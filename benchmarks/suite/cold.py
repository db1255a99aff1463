"""One cold start: load a model the way ``KIND`` says, predict once, report.

    python cold.py KIND '{"path": ..., "x": ..., ...}'

Run by :func:`suite.timing.fresh` in a fresh interpreter. Only the standard
library is imported before the load starts, so the child pays exactly for what
its format needs. The last stdout line is JSON: ``t`` (``time.time()`` just after
the first prediction), ``hwm_kib`` (peak resident set, VmHWM) and ``checksum``
(sum of the prediction, to check every format predicted the same thing) and
``marks``: ``time.time()`` when the imports were done and when the model was loaded,
so the parent can split the cold start into start-up + imports, load, first predict.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKS: dict[str, float] = {}


def mark(name: str) -> None:
    """Note the wall time a phase ended ("imported", "loaded")."""
    MARKS[name] = time.time()


def _hwm_kib() -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _x(a: dict[str, Any]) -> Any:
    import numpy as np

    return np.load(a["x"])


def joblib_(a: dict[str, Any]) -> Any:
    import joblib
    import sklearn.base  # noqa: F401 -- what unpickling imports anyway, so "imported" means it

    mark("imported")
    model = joblib.load(a["path"])
    mark("loaded")
    return model.predict(_x(a))


def pickle_(a: dict[str, Any]) -> Any:
    import pickle

    import sklearn.base  # noqa: F401 -- what unpickling imports anyway

    mark("imported")
    with open(a["path"], "rb") as f:
        model = pickle.load(f)
    mark("loaded")
    return model.predict(_x(a))


def skops_(a: dict[str, Any]) -> Any:
    import skops.io as sio

    mark("imported")
    model = sio.load(a["path"], trusted=a["trusted"])
    mark("loaded")
    return model.predict(_x(a))


def bundle_(a: dict[str, Any]) -> Any:
    import numpy  # noqa: F401

    import bundle

    mark("imported")
    model = bundle.load(
        a["path"], trusted_keys=a["pub"], device="cpu", zero_copy=a.get("zero_copy", False)
    )
    mark("loaded")
    return model.predict(_x(a))


def ort_(a: dict[str, Any]) -> Any:
    import numpy  # noqa: F401
    import onnxruntime as ort

    mark("imported")
    session = ort.InferenceSession(a["path"], providers=["CPUExecutionProvider"])
    mark("loaded")
    x = _x(a).astype(a.get("dtype", "float32"))
    return session.run([a["output"]], {session.get_inputs()[0].name: x})[0]


def _torch_predict(model: Any, a: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(_x(a))).numpy()


def _mlp(a: dict[str, Any], device: str | None = None) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import models

    return models.torch_mlp(tuple(a["widths"]), device=device)


def torch_load(a: dict[str, Any]) -> Any:
    import torch

    mark("imported")
    model = _mlp(a)
    model.load_state_dict(torch.load(a["path"], weights_only=True))
    mark("loaded")
    return _torch_predict(model, a)


def safetensors_(a: dict[str, Any]) -> Any:
    from safetensors.torch import load_file

    mark("imported")
    model = _mlp(a)
    model.load_state_dict(load_file(a["path"]))
    mark("loaded")
    return _torch_predict(model, a)


def safetensors_meta(a: dict[str, Any]) -> Any:
    from safetensors.torch import load_file

    mark("imported")
    model = _mlp(a, device="meta")
    model.load_state_dict(load_file(a["path"]), assign=True)
    mark("loaded")
    return _torch_predict(model, a)


def keras_(a: dict[str, Any]) -> Any:
    import keras

    mark("imported")
    model = keras.models.load_model(a["path"])
    mark("loaded")
    return model(_x(a), training=False).numpy()


KINDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "joblib": joblib_,
    "pickle": pickle_,
    "skops": skops_,
    "bundle": bundle_,
    "ort": ort_,
    "torch_load": torch_load,
    "safetensors": safetensors_,
    "safetensors_meta": safetensors_meta,
    "keras": keras_,
}


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    out = KINDS[kind](args)
    t = time.time()
    import numpy as np

    checksum = float(np.asarray(out, dtype=np.float64).sum())
    print(json.dumps({"t": t, "hwm_kib": _hwm_kib(), "checksum": checksum, "marks": MARKS}))


if __name__ == "__main__":
    main()
