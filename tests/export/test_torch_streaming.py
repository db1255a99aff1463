"""PyTorch export at any size: weights written from the parameters themselves.

The dynamo exporter's initializers are bound to parameters by torch.export's names
and by storage identity, never by comparing values; their bytes never enter a
ModelProto, a numpy copy or a ``safetensors.save`` buffer. The path is the same at
every size, so the small models here run exactly what a multi-gigabyte one does;
tests over 2 GB run only with ``MODEL_BUNDLE_LARGE_TESTS=1``.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")
import torch
from torch import nn

import bundle
from bundle.errors import ConversionError

LARGE = os.environ.get("MODEL_BUNDLE_LARGE_TESTS") == "1"
BIG = 4096  # bytes: every parameter of the models below is larger


def _mlp(width: int, layers: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(width, width))
        if i < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


@pytest.fixture
def no_weight_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a large tensor's bytes are serialized into a proto, turned into
    numpy by onnx, compared by value, or saved through safetensors' in-memory API."""
    import onnx.numpy_helper
    import safetensors.torch
    from torch.onnx._internal.exporter import _core

    from bundle.export import onnx_graph
    from bundle.format import weights
    from bundle.training import codec
    from bundle.training import torch as training

    def guard(what: str, original: Any, size: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if size(*args) > BIG:
                raise AssertionError(f"{what} was called on a {size(*args)}-byte tensor")
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(
        _core.TorchTensor,
        "tobytes",
        guard("TorchTensor.tobytes", _core.TorchTensor.tobytes, lambda t: t.nbytes),
    )
    monkeypatch.setattr(
        _core.TorchTensor,
        "numpy",
        guard("TorchTensor.numpy", _core.TorchTensor.numpy, lambda t: t.nbytes),
    )
    to_array = guard(
        "onnx to_array",
        onnx.numpy_helper.to_array,
        lambda t, *a: 8 * BIG if t.data_location == t.EXTERNAL else len(t.raw_data),
    )
    monkeypatch.setattr(onnx.numpy_helper, "to_array", to_array)
    same = guard("same_tensor", codec.same_tensor, lambda a, b: a.nbytes)
    monkeypatch.setattr(onnx_graph, "same_tensor", same)
    monkeypatch.setattr(training, "same_tensor", same)
    monkeypatch.setattr(
        weights.TensorSource, "array", lambda self: pytest.fail("a weight was materialized")
    )
    monkeypatch.setattr(
        safetensors.torch, "save", lambda *a, **k: pytest.fail("safetensors.torch.save used")
    )


def test_many_tensors_stream_from_the_parameters_without_any_copy(
    tmp_path: Path, no_weight_copies: None
) -> None:
    model = _mlp(64, 6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    model.eval()
    key = bundle.generate_key()
    path = tmp_path / "m.mbundle"
    x = torch.randn(5, 64)
    manifest = bundle.save(model, path, signing_key=key, sample_input=x, optimizer=opt)
    assert manifest.parity is not None
    assert manifest.parity.passed
    assert manifest.model.converter == "torch.onnx.dynamo"

    with zipfile.ZipFile(path) as z:
        graph = z.read("model.onnx")
        weights = z.read("weights.safetensors")
        state = json.loads(z.read("training/state.json"))
    # The graph holds no weight bytes; the weights are safetensors' own layout of the
    # parameters under their state_dict names.
    params = {n: p.detach() for n, p in model.named_parameters()}
    assert len(graph) < BIG
    from safetensors.numpy import save

    assert weights == save({n: p.numpy() for n, p in params.items()})
    listed = {t["name"]: (t["source"], t["key"]) for t in state["model"]["tensors"]}
    assert listed == {n: ("weights", n) for n in params}

    assert bundle.verify(path, trusted_keys=key.public_key).verified
    loaded = bundle.load(path, trusted_keys=key.public_key, device="cpu")
    xs = torch.randn(7, 64)
    with torch.no_grad():
        want = model(xs).numpy()
    np.testing.assert_allclose(loaded.predict(xs.numpy()), want, rtol=1e-5, atol=1e-6)

    other = _mlp(64, 6, seed=1)
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    bundle.restore(path, other, other_opt, trusted_keys=key.public_key)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    got, want = other_opt.state_dict(), opt.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"])  # (canonical JSON sorts the names)
    for i, moments in want["state"].items():
        for k, v in moments.items():
            assert torch.equal(got["state"][i][k], v), (i, k)


def test_without_training_state_the_weights_are_the_live_parameters(
    tmp_path: Path, no_weight_copies: None
) -> None:
    model = _mlp(48, 3)
    path = tmp_path / "m.mbundle"
    bundle.save(model, path, sample_input=torch.randn(3, 48), training_state=False)
    m = bundle.load(path, allow_unsigned=True, device="cpu")
    x = torch.randn(2, 48)
    with torch.no_grad():
        np.testing.assert_allclose(m.predict(x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_buffer_forward_updates_keeps_its_value_before_the_save(tmp_path: Path) -> None:
    """The graph reads the buffer as forward() left it; the name then means something
    else than the saved buffer, so the weight is renamed and the state keeps its own."""

    class Counting(nn.Module):
        count: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("count", torch.zeros(4))

        def forward(self, x: Any) -> Any:
            self.count.add_(1.0)
            return self.fc(x) + self.count

    model = Counting().eval()
    path = tmp_path / "c.mbundle"
    bundle.save(model, path, sample_input=torch.randn(3, 4), accept_mismatch=True)
    with zipfile.ZipFile(path) as z:
        state = json.loads(z.read("training/state.json"))
        data = z.read("weights.safetensors")
    names = set(json.loads(data[8 : 8 + struct.unpack_from("<Q", data)[0]]))
    listed = {t["name"]: (t["source"], t["key"]) for t in state["model"]["tensors"]}
    assert listed["count"] == ("training", "model/count")
    assert listed["fc.weight"] == ("weights", "fc.weight")
    assert "count" not in names
    assert "count.folded" in names
    other = Counting()
    bundle.restore(path, other, allow_unsigned=True)
    assert torch.equal(other.count, torch.zeros(4))  # as it was when save was called


def test_a_parameter_changed_after_capture_is_refused() -> None:
    from bundle.training import torch as training

    model = _mlp(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    state = training.capture(model, opt)
    first = model.get_parameter("0.weight")
    assert state.model["0.weight"].data_ptr() == first.data_ptr()  # a view, not a copy
    momentum = opt.state[first]["momentum_buffer"]
    assert any(t.data_ptr() == momentum.data_ptr() for t in state.tensors.values())
    with torch.no_grad():
        momentum.mul_(2.0)
    with pytest.raises(ConversionError, match="changed in place while the model was being saved"):
        state.entries({})


@pytest.mark.skipif(not LARGE, reason="set MODEL_BUNDLE_LARGE_TESTS=1 (a 2.8 GB model, ~6 GB disk)")
def test_torch_model_over_2gb_with_many_large_tensors(tmp_path: Path) -> None:
    width = 10_800  # 6 Linear layers of 10800 x 10800 float32: 6 x 467 MB
    torch.manual_seed(0)
    layers = [nn.Linear(width, width, bias=False) for _ in range(6)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(1.7)  # keep activations from vanishing over 6 layers
    model = nn.Sequential(*layers).eval()
    key = bundle.generate_key()
    path = tmp_path / "big.mbundle"
    manifest = bundle.save(model, path, signing_key=key, sample_input=torch.randn(2, width))
    weights = manifest.file("weights")
    assert weights.size > 2_700_000_000
    assert manifest.parity is not None
    assert manifest.parity.passed
    assert bundle.verify(path, trusted_keys=key.public_key).verified
    x = torch.randn(3, width)
    with torch.no_grad():
        want = model(x).numpy()
    m = bundle.load(path, trusted_keys=key.public_key, device="cpu", zero_copy=True)
    np.testing.assert_allclose(m.predict(x.numpy()), want, rtol=1e-4, atol=1e-5)
