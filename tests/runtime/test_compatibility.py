"""Every bundle runs where it says it runs: lowest IR, requires, smoke vectors, preflight,
opset conversion -- and each refusal a named BundleError saying what would do."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import bundle
from bundle.cli import main as cli_main
from bundle.format.manifest import Manifest, SmokeTensor
from bundle.format.versions import release_tuple
from bundle.runtime import preflight

W = (np.arange(12, dtype=np.float32).reshape(4, 3) / 8 - 0.75).astype(np.float32)
X = np.array(
    [
        [1.0, 2.0, 3.0, 4.0],
        [-0.5, 0.25, 0.0, 2.0],
        [0.0, 1.0, 0.0, 0.0],
        [2.0, 2.0, 2.0, 2.0],
        [0.5, 0.5, 0.5, 0.5],
    ],
    dtype=np.float32,
)


def matmul_relu(opset: int, op: str = "Relu") -> onnx.ModelProto:
    """X @ W then ``op``, stamped as onnx.helper.make_model does (its newest IR)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["T"]), helper.make_node(op, ["T"], ["Y"])],
        "g",
        [x],
        [y],
        [numpy_helper.from_array(W, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def relu_reference(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W, 0)


def manifest_of(path: Path) -> Manifest:
    with zipfile.ZipFile(path) as z:
        return Manifest.from_bytes(z.read("manifest.json"))


@pytest.fixture
def saved(tmp_path: Path, signing_key: bundle.PrivateKey) -> Callable[..., Path]:
    def run(opset: int, op: str = "Relu", *, keep_stamp: bool = True, **kw: Any) -> Path:
        """Saved as stamped (``target_opset`` given keeps it), or lowered by default."""
        path = tmp_path / f"m{opset}{op}{keep_stamp}.mbundle"
        bundle.save(
            matmul_relu(opset, op),
            path,
            sample_input=X,
            signing_key=signing_key,
            target_opset=opset if keep_stamp else None,
            **kw,
        )
        return path

    return run


def test_issue_repro_plain_onnx_stamped_with_onnx_newest_ir_loads(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    """onnx.helper stamps its newest IR (14 with onnx 1.23); the bundle carries the lowest
    its opset allows (8 for opset 17) and loads on the runtime that wrote it."""
    assert matmul_relu(17).ir_version == onnx.IR_VERSION
    path = saved(17)
    man = manifest_of(path)
    assert man.requires is not None
    assert man.onnx.ir_version == man.requires.ir_version == 8
    assert man.requires.opsets == {"ai.onnx": 17}
    assert man.requires.min_opsets == {"ai.onnx": 14}  # Relu-14, MatMul-13
    assert man.requires.onnxruntime == man.onnx.min_onnxruntime == "1.15"
    model = bundle.load(path, trusted_keys=signing_key.public_key)
    np.testing.assert_allclose(model.predict(X), relu_reference(X), rtol=1e-6)


def test_default_stamp_is_lowered_to_the_effective_opset(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    """Stamped 25 by its maker, but nothing in it needs more than opset 14: written as
    opset 14 / IR 7, which every measured onnxruntime loads."""
    path = saved(25, keep_stamp=False)
    man = manifest_of(path)
    assert man.requires is not None
    assert man.onnx.opsets == man.requires.min_opsets == {"ai.onnx": 14}
    assert man.onnx.ir_version == 7
    assert man.requires.onnxruntime == "1.15"
    assert bundle.check(path, trusted_keys=signing_key.public_key, runtime="onnxruntime==1.20").ok
    model = bundle.load(path, trusted_keys=signing_key.public_key)
    np.testing.assert_allclose(model.predict(X), relu_reference(X), rtol=1e-6)


def test_smoke_vectors_recorded_from_the_written_graph(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    man = manifest_of(saved(17))
    assert man.smoke is not None
    (inp,), (out,) = man.smoke.inputs, man.smoke.outputs
    assert (inp.name, inp.shape, out.name, out.shape) == ("X", (3, 4), "Y", (3, 3))
    np.testing.assert_array_equal(np.asarray(inp.values, np.float32).reshape(3, 4), X[:3])
    np.testing.assert_allclose(
        np.asarray(out.values).reshape(3, 3), relu_reference(X[:3]), rtol=1e-6
    )
    assert (man.smoke.atol, man.smoke.rtol) == (1e-4, 1e-3)


def test_self_test_passes_and_a_different_result_is_a_self_test_error(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    model = bundle.load(saved(17), trusted_keys=signing_key.public_key)
    result = model.self_test()
    assert result.passed
    assert result.rows == 3
    smoke = model.manifest.smoke
    assert smoke is not None
    out = smoke.outputs[0]
    shifted = SmokeTensor(out.name, out.dtype, out.shape, tuple(v + 0.5 for v in out.values))
    wrong = dataclasses.replace(
        model.manifest, smoke=dataclasses.replace(smoke, outputs=(shifted,))
    )
    other = bundle.Model(model._session, wrong, model.report)
    with pytest.raises(bundle.SelfTestError, match=r"'Y': 9 element"):
        other.self_test()
    assert not other.self_test(raise_on_failure=False).passed


def test_no_sample_no_smoke_vectors_but_the_graph_was_loaded(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    path = tmp_path / "m.mbundle"
    man = bundle.save(matmul_relu(17), path, signing_key=signing_key)
    assert man.smoke is None
    assert man.requires is not None
    assert bundle.load(path, trusted_keys=signing_key.public_key).self_test() is None


def test_save_refuses_a_graph_this_runtime_cannot_load(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    """A bundle the exporting machine cannot load is never written."""
    limits = preflight.installed_limits()
    too_new = limits.opsets["ai.onnx"] + 1
    if too_new > onnx.defs.onnx_opset_version():
        pytest.skip(f"onnx {onnx.__version__} knows no opset above the runtime's {too_new - 1}")
    path = tmp_path / "new.mbundle"
    with pytest.raises(bundle.ConversionError, match="onnxruntime cannot"):
        bundle.save(
            matmul_relu(too_new),
            path,
            sample_input=X,
            signing_key=signing_key,
            target_opset=too_new,
        )  # kept as stamped
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_check_installed_runtime_runs_the_smoke_vectors(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    report = bundle.check(saved(17), trusted_keys=signing_key.public_key)
    assert report.ok
    assert report.problems == ()
    assert report.self_test is not None
    assert report.self_test.passed
    assert report.runtime.startswith(f"onnxruntime {onnxruntime.__version__.split('+')[0]}")
    doc = report.to_dict()
    assert doc["ok"]
    assert doc["requires"]["ir_version"] == 8


def test_check_against_an_older_runtime_names_what_would_do(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    path = saved(25)
    report = bundle.check(path, trusted_keys=signing_key.public_key, runtime="onnxruntime==1.20")
    assert not report.ok
    assert report.self_test is None
    kinds = {p.kind: p for p in report.problems}
    assert set(kinds) == {"ir_version", "opset"}
    assert "IR version 13; onnxruntime 1.20 reads up to IR 10" in kinds["ir_version"].message
    assert (
        "stamped ai.onnx opset 25; onnxruntime 1.20 knows opsets up to 21" in kinds["opset"].message
    )
    fix = kinds["opset"].fix
    assert "onnxruntime >= 1.24" in fix
    assert "--target-opset 14" in fix


def test_check_refuses_an_unknown_runtime_spelling(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    with pytest.raises(ValueError, match=r"onnxruntime==X\.Y"):
        bundle.check(saved(17), trusted_keys=signing_key.public_key, runtime="ort-1.20")


def test_check_below_the_package_floor_says_so(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey
) -> None:
    report = bundle.check(
        saved(17), trusted_keys=signing_key.public_key, runtime="onnxruntime==1.16"
    )
    assert [p.kind for p in report.problems] == ["package"]


def test_load_runs_preflight_first_and_names_the_runtime(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a runtime older than the graph: CompatibilityError, not onnxruntime's text."""
    path = saved(25)
    monkeypatch.setattr(preflight, "installed_limits", lambda: preflight.table_limits("1.20.1"))
    with pytest.raises(bundle.CompatibilityError) as info:
        bundle.load(path, trusted_keys=signing_key.public_key)
    text = str(info.value)
    assert "onnxruntime 1.20.1 cannot run this bundle" in text
    assert "IR version 13" in text
    assert "convert-opset --target-opset 14" in text


def test_preflight_names_an_operator_of_a_domain_not_imported() -> None:
    model = matmul_relu(17)
    model.graph.node[1].domain = "ai.onnx.ml"
    with pytest.raises(bundle.CompatibilityError, match="imports no opset of that domain"):
        preflight.preflight(model)


def test_convert_opset_lowers_the_stamp_and_records_where_it_came_from(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey, tmp_path: Path
) -> None:
    src = saved(25)
    dst = tmp_path / "lowered.mbundle"
    man = bundle.convert_opset(
        src, dst, 14, signing_key=signing_key, trusted_keys=signing_key.public_key
    )
    assert man.onnx.opsets == {"ai.onnx": 14}
    assert man.onnx.ir_version == 7
    assert man.requires is not None
    assert man.requires.onnxruntime == "1.15"
    with zipfile.ZipFile(src) as z:
        src_digest = hashlib.sha256(z.read("manifest.json")).hexdigest()
    assert man.derived_from is not None
    assert man.derived_from.manifest_sha256 == src_digest
    assert man.derived_from.change == "opset 25 -> 14"
    assert man.parity is not None
    assert man.parity.passed
    assert man.parity.sample_rows == 3
    assert man.model.converter == "onnx.version_converter"
    assert bundle.check(dst, trusted_keys=signing_key.public_key, runtime="onnxruntime==1.20").ok
    model = bundle.load(dst, trusted_keys=signing_key.public_key)
    np.testing.assert_allclose(model.predict(X), relu_reference(X), rtol=1e-6)
    assert model.self_test().passed


def test_convert_opset_without_an_adapter_is_refused(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey, tmp_path: Path
) -> None:
    dst = tmp_path / "x.mbundle"
    with pytest.raises(bundle.ConversionError, match="No Adapter From Version") as info:
        bundle.convert_opset(
            saved(14), dst, 13, signing_key=signing_key, trusted_keys=signing_key.public_key
        )
    assert "onnx has no adapter" in str(info.value)
    assert not dst.exists()


def test_convert_opset_below_an_operator_is_refused(
    saved: Callable[..., Path], signing_key: bundle.PrivateKey, tmp_path: Path
) -> None:
    with pytest.raises(bundle.ConversionError, match="No Previous Version of Gelu"):
        bundle.convert_opset(
            saved(20, "Gelu"),
            tmp_path / "x.mbundle",
            19,
            signing_key=signing_key,
            trusted_keys=signing_key.public_key,
        )


def test_convert_opset_needs_smoke_vectors(tmp_path: Path, signing_key: bundle.PrivateKey) -> None:
    src = tmp_path / "nosample.mbundle"
    bundle.save(matmul_relu(17), src, signing_key=signing_key)
    with pytest.raises(bundle.ConversionError, match="no smoke vectors"):
        bundle.convert_opset(
            src,
            tmp_path / "x.mbundle",
            14,
            signing_key=signing_key,
            trusted_keys=signing_key.public_key,
        )


def test_convert_opset_verifies_the_source(saved: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(bundle.SignatureError):
        bundle.convert_opset(
            saved(17),
            tmp_path / "x.mbundle",
            14,
            signing_key=bundle.generate_key(),
            trusted_keys=bundle.generate_key().public_key,
        )


def test_cli_check_and_convert(
    saved: Callable[..., Path],
    signing_key: bundle.PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "k"
    signing_key.save(str(key))
    src = saved(25)
    args = ["--trusted-key", f"{key}.pub"]
    assert cli_main(["check", str(src), *args]) == 0
    assert "smoke vectors passed" in capsys.readouterr().out
    assert cli_main(["check", str(src), *args, "--runtime", "onnxruntime==1.20"]) == 12
    out = capsys.readouterr()
    assert "CANNOT RUN on onnxruntime 1.20" in out.out
    assert "CompatibilityError" in out.err
    dst = tmp_path / "low.mbundle"
    assert (
        cli_main(
            [
                "convert-opset",
                str(src),
                str(dst),
                "--target-opset",
                "14",
                "--key",
                f"{key}.key",
                *args,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_main(["check", str(dst), *args, "--runtime", "onnxruntime==1.20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"]
    assert doc["requirements"]["ir_version"] == 7
    assert cli_main(["check", str(src), *args, "--runtime", "1.2.x"]) == 2


def test_sklearn_bundle_gets_lowest_ir_and_self_tests(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    Xi, yi = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(Xi, yi)
    path = tmp_path / "iris.mbundle"
    man = bundle.save(clf, path, sample_input=Xi[:20].astype(np.float32), signing_key=signing_key)
    assert man.onnx.ir_version == max(
        bundle.format.compat.MIN_IR_FOR_OPSET[man.onnx.opsets["ai.onnx"]],
        bundle.format.compat.MIN_IR_FOR_ML_OPSET[man.onnx.opsets["ai.onnx.ml"]],
    )
    assert man.smoke is not None
    assert {t.name for t in man.smoke.outputs} == {o.name for o in man.outputs}
    model = bundle.load(path, trusted_keys=signing_key.public_key)
    assert model.self_test().passed
    assert man.requires is not None
    assert release_tuple(man.requires.onnxruntime) <= release_tuple(onnxruntime.__version__)


def test_smoke_vectors_keep_a_fixed_batch_whole(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    """An input whose first axis is fixed (4) cannot be cut to 3 rows: all 4 are kept."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [x],
        [y],
        [numpy_helper.from_array(W, "W")],
    )
    path = tmp_path / "fixed.mbundle"
    man = bundle.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        path,
        sample_input=X[:4],
        signing_key=signing_key,
    )
    assert man.smoke is not None
    assert man.smoke.inputs[0].shape == (4, 4)
    assert bundle.load(path, trusted_keys=signing_key.public_key).self_test().passed


def test_smoke_vectors_are_capped(tmp_path: Path, signing_key: bundle.PrivateKey) -> None:
    """One row of 20000 values is more than a manifest carries: no smoke vectors."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 20000])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 20000])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x], [y])
    man = bundle.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        tmp_path / "big.mbundle",
        sample_input=np.ones((2, 20000), np.float32),
        signing_key=signing_key,
    )
    assert man.smoke is None
    assert man.requires is not None
