"""The runtime matrix: the committed vectors and freshly exported bundles on the oldest
onnxruntime the package declares and on the newest, each in its own venv.

The venvs are built by scripts/runtime_matrix.py on first use (cached as
``.venv-ort-<version>/``); the code under test is this working tree's, put on the
child's PYTHONPATH. Marked ``matrix``: CI runs them (scripts/test.sh builds the
venvs first); MODEL_BUNDLE_SKIP_MATRIX=1 skips them on a machine without the
package registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytestmark = pytest.mark.matrix

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "spec" / "vectors"
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))


def _matrix() -> Any:
    spec = importlib.util.spec_from_file_location(
        "runtime_matrix", REPO / "scripts" / "runtime_matrix.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MATRIX = _matrix()
RUNTIMES = {"oldest": MATRIX.OLDEST, "newest": MATRIX.NEWEST}


@pytest.fixture(scope="module", params=list(RUNTIMES))
def runtime(request: pytest.FixtureRequest) -> tuple[str, Path]:
    if os.environ.get("MODEL_BUNDLE_SKIP_MATRIX") == "1":
        pytest.skip("MODEL_BUNDLE_SKIP_MATRIX=1")
    version = RUNTIMES[request.param]
    try:
        venv = MATRIX.build(version)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"{e} (set MODEL_BUNDLE_SKIP_MATRIX=1 on a machine without the registry)")
    return version, MATRIX.python(venv)


def run_child(python: Path, job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    path = tmp / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [str(python), str(Path(__file__).with_name("matrix_child.py")), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_the_child_runs_the_pinned_release(runtime: tuple[str, Path], tmp_path: Path) -> None:
    version, python = runtime
    doc = run_child(python, {}, tmp_path)
    assert doc["onnxruntime"] == version
    assert not doc["torch_imported"]


def test_tables_are_the_runtimes_own_limits(runtime: tuple[str, Path], tmp_path: Path) -> None:
    """The measured tables of bundle.format.compat, checked at both ends of the matrix."""
    _, python = runtime
    doc = run_child(python, {}, tmp_path)
    assert doc["tables"] is not None
    assert doc["limits"] == doc["tables"]


def _vector_job() -> dict[str, Any]:
    job = {}
    for case in INDEX["vectors"]:
        predict = case.get("predict") or {}
        job[case["id"]] = {
            "path": str(VECTORS / case["file"]),
            "trusted_keys": [str(VECTORS / k) for k in case["trusted_keys"]],
            "threshold": case["threshold"],
            "allow_unsigned": case["allow_unsigned"],
            "method": predict.get("method"),
            "dtype": predict.get("dtype"),
            "input": predict.get("input"),
        }
    return job


def test_committed_vectors(runtime: tuple[str, Path], tmp_path: Path) -> None:
    """Every committed vector keeps its outcome on this runtime, read from spec/vectors/."""
    _, python = runtime
    results = run_child(python, _vector_job(), tmp_path)["results"]
    for case in INDEX["vectors"]:
        got = results[case["id"]]
        if case["expected"] == "ok":
            assert got["outcome"] == "ok", (case["id"], got)
            want = np.asarray(case["predict"]["output"])
            np.testing.assert_allclose(
                np.asarray(got["output"], dtype=want.dtype), want, rtol=1e-6, atol=1e-6
            )
            assert got["self_test"] in (None, True)
        else:
            assert got["outcome"] == case["expected"], (case["id"], got)
            assert case["message"] in got["message"]
    assert results["valid-requires-smoke"]["self_test"] is True


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Bundles written here by today's exporters, and what they predict here."""
    out = tmp_path_factory.mktemp("exported")
    key = bundle.generate_key()
    key.save(str(out / "key"))
    rng = np.random.default_rng(0)
    made: dict[str, tuple[Any, Any, str]] = {}
    from onnx import TensorProto, helper, numpy_helper

    w = rng.standard_normal((4, 3)).astype(np.float32)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["T"]), helper.make_node("Relu", ["T"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    made["onnx-helper-opset17"] = (
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        x,
        "predict",
    )
    made["onnx-helper-opset25"] = (
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)]),
        x,
        "predict",
    )
    try:
        from sklearn.datasets import load_iris
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        xi, yi = load_iris(return_X_y=True)
        xi = xi.astype(np.float32)
        clf = make_pipeline(
            StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)
        )
        made["sklearn"] = (clf.fit(xi, yi), xi[:10], "predict_proba")
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        ).eval()
        made["torch"] = (net, torch.from_numpy(x[:1]), "predict")
    except ImportError:
        pass
    job, expected = {}, {}
    for name, (model, sample, method) in made.items():
        path = out / f"{name}.mbundle"
        bundle.save(
            model,
            path,
            sample_input=sample,
            signing_key=key,
            name=name,
            training_state=False if name == "torch" else None,
        )
        loaded = bundle.load(path, trusted_keys=key.public_key)
        data = x if name in ("torch",) or name.startswith("onnx") else sample
        expected[name] = getattr(loaded, method)(data)
        job[name] = {
            "path": str(path),
            "trusted_keys": [str(out / "key.pub")],
            "method": method,
            "dtype": "float32",
            "input": np.asarray(data).tolist(),
        }
    return {"job": job, "expected": expected, "key": out / "key"}


def test_exported_bundles(
    runtime: tuple[str, Path], exported: dict[str, Any], tmp_path: Path
) -> None:
    """What today's exporters write loads, predicts as here, and self-tests -- or, where
    the graph is newer than the runtime, is refused by preflight as `check` predicts."""
    version, python = runtime
    results = run_child(python, exported["job"], tmp_path)["results"]
    for name, got in results.items():
        path = exported["job"][name]["path"]
        report = bundle.check(
            path, trusted_keys=str(exported["key"]) + ".pub", runtime=f"onnxruntime=={version}"
        )
        if report.problems:
            assert got["outcome"] == "CompatibilityError", (name, got)
            assert f"onnxruntime {version}" in got["message"]
            continue
        assert got["outcome"] == "ok", (name, got)
        np.testing.assert_allclose(
            np.asarray(got["output"]), exported["expected"][name], rtol=1e-5, atol=1e-6
        )
        assert got["self_test"] is True
