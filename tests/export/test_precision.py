"""fp16 / int8 bundles: smaller, still within a measured, recorded deviation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import bundle
from bundle.format.archive import ZipReader
from bundle.format.graph import parse_model


def _mlp() -> object:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(32, 256)) / 6).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(size=256).astype(np.float32) / 10, "b0"),
        numpy_helper.from_array((rng.normal(size=(256, 4)) / 16).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Gemm", ["X", "w0", "b0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w1"], ["Y"]),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_onnx_model_compressed_against_fp32_reference(
    tmp_path: Path, sample: np.ndarray, precision: str
) -> None:
    pytest.importorskip("onnxconverter_common")
    ref_path, path = tmp_path / "fp32.mbundle", tmp_path / f"{precision}.mbundle"
    bundle.save(_mlp(), ref_path, sample_input=sample, name="mlp")
    manifest = bundle.save(_mlp(), path, sample_input=sample, name="mlp", precision=precision)
    assert manifest.parity is not None
    assert manifest.parity.passed
    assert manifest.model.precision == precision
    assert path.stat().st_size < 0.7 * ref_path.stat().st_size
    x = np.random.default_rng(2).normal(size=(10, 32)).astype(np.float32)
    want = bundle.load(ref_path, allow_unsigned=True).predict(x)
    got = bundle.load(path, allow_unsigned=True).predict(x)
    assert got.dtype == np.float32  # I/O types are kept
    np.testing.assert_allclose(got, want, atol=0.1, rtol=0.1)
    with ZipReader(path) as r:
        g = parse_model(r.read("model.onnx", max_size=1 << 24), "model.onnx")
    assert {n.domain for n in g.graph.node} <= {"", "ai.onnx"}


def test_sklearn_mlp_int8_parity_recorded(tmp_path: Path) -> None:
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8))
    y = X @ rng.normal(size=8)
    reg = MLPRegressor(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(X, y)
    m = bundle.save(
        reg, tmp_path / "r.mbundle", sample_input=X[:50], precision="int8", tolerance=(0.5, 0.5)
    )
    assert m.model.precision == "int8"
    assert m.parity is not None
    out = m.parity.outputs[0]
    assert 0 < out.max_abs < 0.5  # quantization costs something, and it is recorded
    loaded = bundle.load(tmp_path / "r.mbundle", allow_unsigned=True)
    np.testing.assert_allclose(loaded.predict(X[:20]), reg.predict(X[:20]), atol=0.5)


def test_compression_beyond_tolerance_is_refused(tmp_path: Path, sample: np.ndarray) -> None:
    with pytest.raises(bundle.ConversionError, match="disagrees"):
        bundle.save(
            _mlp(),
            tmp_path / "x.mbundle",
            sample_input=sample,
            name="mlp",
            precision="int8",
            tolerance=(1e-7, 0),
        )
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
    m = bundle.save(
        _mlp(),
        tmp_path / "x.mbundle",
        sample_input=sample,
        name="mlp",
        precision="int8",
        tolerance=(1e-7, 0),
        accept_mismatch=True,
    )
    assert m.parity is not None
    assert m.parity.accepted_mismatch


def test_unknown_precision(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match="precision"):
        bundle.save(_mlp(), tmp_path / "x.mbundle", name="mlp", precision="int4")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_torch_mlp_compressed_against_torch(tmp_path: Path, precision: str) -> None:
    """A PyTorch export carries initializer value_info; compression must still work."""
    torch = pytest.importorskip("torch")
    if precision == "fp16":
        pytest.importorskip("onnxconverter_common")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(32, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    ).eval()
    x = torch.randn(64, 32)
    with torch.no_grad():
        want = net(x).numpy()
    m = bundle.save(
        net,
        tmp_path / "t.mbundle",
        sample_input=x[:16].numpy(),
        precision=precision,
        tolerance=(0.1, 0.1),
        training_state=False,
    )
    assert m.model.precision == precision
    got = bundle.load(tmp_path / "t.mbundle", allow_unsigned=True, device="cpu").predict(x.numpy())
    err = np.abs(got - want).max()
    assert 0 < err < 0.05, err  # compressed (not bit-exact), and still close to torch
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def _training_entries(path: Path) -> set[str]:
    return {f.path for f in bundle.inspect(path).manifest.files if f.role == "training_state"}


def test_torch_reduced_precision_carries_training_state_only_when_asked(tmp_path: Path) -> None:
    """The fp32 training state beside int8 weights made the int8 bundle the bigger one."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).eval()
    x = torch.randn(16, 64)
    fp32, int8 = tmp_path / "fp32.mbundle", tmp_path / "int8.mbundle"
    bundle.save(net, fp32, sample_input=x)
    bundle.save(net, int8, sample_input=x, precision="int8", tolerance=(0.1, 0.1))
    assert _training_entries(fp32)  # full precision keeps it by default
    assert not _training_entries(int8)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size

    kept = tmp_path / "int8-train.mbundle"
    bundle.save(
        net, kept, sample_input=x, precision="int8", tolerance=(0.1, 0.1), training_state=True
    )
    assert _training_entries(kept) == {"training/state.json", "training/state.safetensors"}
    torch.manual_seed(2)
    other = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    bundle.restore(kept, other, allow_unsigned=True)
    for (k, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # the fp32 values, not the quantized ones

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with_opt = tmp_path / "int8-opt.mbundle"
    bundle.save(
        net, with_opt, sample_input=x, precision="int8", tolerance=(0.1, 0.1), optimizer=opt
    )
    assert _training_entries(with_opt)
