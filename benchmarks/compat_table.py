"""Compatibility table: what each exporter writes and where it runs.

    python benchmarks/compat_table.py [--no-matrix]

For each exporter (scikit-learn, PyTorch, Keras, tf.Module, plain ONNX from
``onnx.helper`` and from a ``.onnx`` file) a small model is saved with a sample;
the table gives the IR version and opsets written (the stamp ``onnx.helper`` or the
exporter chose is shown beside it), the effective opset the operators need, the
oldest onnxruntime the measured tables say loads it, and whether it loads,
predicts as here and passes its smoke vectors on the oldest and the newest
onnxruntime of the CI matrix (venvs of scripts/runtime_matrix.py). Not a timing
benchmark: nothing here is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bundle  # noqa: E402


def _matrix() -> Any:
    spec = importlib.util.spec_from_file_location(
        "runtime_matrix", REPO / "scripts" / "runtime_matrix.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(tmp: Path) -> dict[str, tuple[Any, Any, Any, str]]:
    """name -> (model, sample, the stamp before saving, predict method)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    out: dict[str, tuple[Any, Any, Any, str]] = {}

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xi, yi = load_iris(return_X_y=True)
    xi = xi.astype(np.float32)
    out["sklearn (skl2onnx)"] = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(xi, yi),
        xi[:8],
        "skl2onnx's",
        "predict_proba",
    )

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)
    ).eval()
    out["torch (dynamo)"] = (net, torch.from_numpy(x[:1]), "dynamo's", "predict")

    import keras

    keras.utils.set_random_seed(0)
    km = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    out["keras (tf2onnx)"] = (km, x, "tf2onnx's", "predict")

    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, v: Any) -> Any:
            return tf.nn.relu(tf.matmul(v, self.w))

    out["tf.Module (tf2onnx)"] = (Affine(), x, "tf2onnx's", "predict")

    w = rng.standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["T"]), helper.make_node("Relu", ["T"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out["onnx.helper, opset 17"] = (m, x, m, "predict")
    m25 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    out["onnx.helper, opset 25"] = (m25, x, m25, "predict")
    path = tmp / "file.onnx"
    onnx.save(m, path)
    out[".onnx file, opset 17"] = (str(path), x, m, "predict")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-matrix", action="store_true", help="skip the runtime venvs")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    matrix = _matrix()
    runtimes = [] if args.no_matrix else [matrix.OLDEST, matrix.NEWEST]
    pythons = {v: matrix.python(matrix.build(v)) for v in runtimes}
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        key = bundle.generate_key()
        key.save(str(tmp / "key"))
        job, expected, info = {}, {}, {}
        for name, (model, sample, _before, method) in models(tmp).items():
            path = tmp / f"{len(job)}.mbundle"
            man = bundle.save(
                model,
                path,
                sample_input=sample,
                signing_key=key,
                name=f"m{len(job)}",
                training_state=False if "torch" in name or "keras" in name else None,
            )
            loaded = bundle.load(path, trusted_keys=key.public_key)
            data = np.asarray(sample) if not hasattr(sample, "numpy") else sample.numpy()
            expected[name] = getattr(loaded, method)(data)
            # What the exporter itself stamped, before the writer lowered it.
            from bundle.export import convert

            raw = convert(
                model,
                sample,
                **({"training_state": False} if "torch" in name or "keras" in name else {}),
            )
            stamp = (
                raw.model.ir_version,
                {op.domain or "ai.onnx": op.version for op in raw.model.opset_import},
            )
            info[name] = (man, stamp)
            job[name] = {
                "path": str(path),
                "trusted_keys": [str(tmp / "key.pub")],
                "method": method,
                "dtype": "float32",
                "input": data.tolist(),
            }
        results = {}
        for v, py in pythons.items():
            (tmp / "job.json").write_text(json.dumps(job))
            res = subprocess.run(
                [str(py), str(REPO / "tests/runtime/matrix_child.py"), str(tmp / "job.json")],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                check=True,
            )
            results[v] = json.loads(res.stdout.strip().splitlines()[-1])["results"]
        for name, (man, stamp) in info.items():
            req = man.requires
            cells = []
            for v in runtimes:
                got = results[v][name]
                if got["outcome"] == "ok":
                    same = np.allclose(
                        np.asarray(got["output"]), expected[name], rtol=1e-5, atol=1e-6
                    )
                    cells.append(
                        f"yes{'' if same else ' (outputs differ)'}, smoke "
                        f"{'pass' if got['self_test'] else 'FAIL'}"
                    )
                else:
                    cells.append(f"no: {got['outcome']}")
            opsets = ", ".join(f"{k} {v}" for k, v in sorted(req.opsets.items()))
            effective = ", ".join(f"{k} {v}" for k, v in sorted(req.min_opsets.items()))
            was = ", ".join(f"{k} {v}" for k, v in sorted(stamp[1].items()))
            rows.append(
                [
                    name,
                    f"IR {stamp[0]}; {was}",
                    f"IR {req.ir_version}; {opsets}",
                    effective,
                    req.onnxruntime,
                    *cells,
                ]
            )
    import onnxruntime

    head = [
        "exporter",
        "exporter stamped",
        "bundle written",
        "effective opsets",
        "min onnxruntime",
        *[f"loads on {v}" for v in runtimes],
    ]
    print(
        f"model-bundle {bundle.__version__}; export on onnxruntime {onnxruntime.__version__}, "
        f"onnx {__import__('onnx').__version__}"
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")


if __name__ == "__main__":
    main()
