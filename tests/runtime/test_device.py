"""Device selection: honest CPU fallback here, real CUDA runs only where a GPU is."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import bundle
from bundle.runtime import session as runtime


def _has_cuda() -> bool:
    import onnxruntime as ort

    return runtime._cuda_usable(ort)


gpu = pytest.mark.skipif(not _has_cuda(), reason="no NVIDIA GPU with working CUDA here")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path = tmp_path_factory.mktemp("dev") / "t.mbundle"
    bundle.save(m, path, name="tiny")
    return path


def test_cpu_device(tiny: Path) -> None:
    m = bundle.load(tiny, allow_unsigned=True, device="cpu")
    assert m.providers == ["CPUExecutionProvider"]


def test_unknown_device_is_an_error(tiny: Path) -> None:
    with pytest.raises(bundle.DeviceError, match="unknown device"):
        bundle.load(tiny, allow_unsigned=True, device="tpu")
    with pytest.raises(bundle.DeviceError):
        bundle.load(tiny, allow_unsigned=True, device="cuda:x")


@pytest.mark.skipif(_has_cuda(), reason="this machine has a working GPU")
def test_explicit_cuda_without_gpu_is_an_error_not_a_cpu_run(tiny: Path) -> None:
    with pytest.raises(bundle.DeviceError, match="CUDA cannot run here"):
        bundle.load(tiny, allow_unsigned=True, device="cuda")


@pytest.mark.skipif(_has_cuda(), reason="this machine has a working GPU")
def test_auto_falls_back_to_cpu_quietly_without_gpu(
    tiny: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = bundle.load(tiny, allow_unsigned=True, device="auto")
    assert m.providers == ["CPUExecutionProvider"]
    _, err = capfd.readouterr()
    assert "provider_bridge" not in err  # onnxruntime's native CUDA error text stays hidden
    # a warning only when a driver is present but CUDA failed; never more than one
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) <= 1


@gpu
@pytest.mark.gpu
def test_cuda_matches_cpu(tiny: Path) -> None:
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    cpu = bundle.load(tiny, allow_unsigned=True, device="cpu").predict(x)
    m = bundle.load(tiny, allow_unsigned=True, device="cuda")
    assert m.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(m.predict(x), cpu, rtol=1e-4, atol=1e-5)


def test_io_binding_matches_run(tiny: Path) -> None:
    m = bundle.load(tiny, allow_unsigned=True, device="cpu")
    x = np.random.default_rng(1).normal(size=(5, 4))
    bound = m.to_device(x)  # checked and converted once, kept on the session's device
    for _ in range(3):
        np.testing.assert_allclose(m.run_bound(bound)["Y"], m.run(x)["Y"])
    assert m.device == ("cpu", 0)
    with pytest.raises(bundle.InputError):
        m.run_bound({"nope": x})


def test_cpu_selection_ignores_gpu_provider_options() -> None:
    """Provider options are for the GPU provider: the CPU provider gets none of them."""
    assert runtime.select_providers("cpu", {"device_id": "1"}) == ["CPUExecutionProvider"]
    assert runtime.select_providers("cpu", {"trt_fp16_enable": "1"}) == ["CPUExecutionProvider"]


def test_malformed_device_index_is_an_error() -> None:
    with pytest.raises(bundle.DeviceError, match="expected tensorrt or tensorrt:N"):
        runtime.select_providers("tensorrt:z")
