"""PyTorch export: common nn.Modules to signed bundles, checked against the module itself.

Every model is exported once (module-scoped) and compared with its own output on
a batch size other than the sample's. Models are tiny: export time dominates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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
from bundle import ExportFallbackWarning
from bundle.cli import main

# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: Any) -> Any:
        return self.net(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, image: Any) -> Any:
        h = self.pool(torch.relu(self.bn(self.conv(image))))
        return self.fc(self.drop(torch.flatten(h, 1)))


class Recurrent(nn.Module):
    def __init__(self, cell: type) -> None:
        super().__init__()
        self.rnn = cell(5, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, seq: Any) -> Any:
        out, _ = self.rnn(seq)
        return self.head(out[:, -1])


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 4)

    def forward(self, tokens: Any) -> Any:
        return self.head(self.enc(self.emb(tokens)).mean(1))


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 4)
        self.score = nn.Linear(4, 2)
        self.prob = nn.Linear(4, 1)

    def forward(self, image: Any, meta: Any) -> Any:
        h = torch.relu(self.a(image) + self.b(meta))
        return self.score(h), torch.sigmoid(self.prob(h))


class DictOut(TwoInTwoOut):
    def forward(self, image: Any, meta: Any) -> Any:
        score, prob = super().forward(image, meta)
        return {"score": score, "prob": prob}


@torch.library.custom_op("mbtest::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


# Deprecated and left out of torch.onnx.__all__, yet still how the TorchScript exporter
# (the fallback under test) is given a symbolic for a custom op.
torch.onnx.register_custom_op_symbolic(  # type: ignore[attr-defined]
    "mbtest::twice", lambda g, x: g.op("Mul", x, g.op("Constant", value_t=torch.tensor(2.0))), 9
)


@torch.library.custom_op("mbtest::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@opaque.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Activation(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Any) -> Any:
        return self.fn(x)


class WithCustomOp(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 4)
        self.act = Activation(fn)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Any) -> Any:
        return self.out(self.act(self.inner(x)))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    key = bundle.generate_key()
    _, pub = key.save(tmp_path_factory.mktemp("keys") / "k")
    return key, pub


def _export(tmp: Path, key: Any, module: nn.Module, sample: Any, **kw: Any) -> tuple[Path, Any]:
    path = tmp / f"{type(module).__name__.lower()}.mbundle"
    manifest = bundle.save(module, path, sample_input=sample, signing_key=key, **kw)
    return path, manifest


def _own(module: nn.Module, x: Any) -> Any:
    module.train(False)
    with torch.no_grad():
        return module(**x) if isinstance(x, dict) else module(x)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[Any, Path]
) -> dict[str, tuple[nn.Module, Path, Any]]:
    """Each model once: name -> (module, bundle path, manifest)."""
    tmp = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    out = {}
    specs = {
        "mlp": (MLP(), torch.randn(4, 6), {}),
        "cnn": (CNN(), torch.randn(4, 1, 8, 8), {}),
        "lstm": (Recurrent(nn.LSTM), torch.randn(3, 7, 5), {}),
        "gru": (Recurrent(nn.GRU), torch.randn(3, 7, 5), {}),
        "encoder": (
            Encoder(),
            torch.randint(0, 20, (3, 6)),
            {"dynamic_axes": {"tokens": {0: "batch", 1: "seq"}}},
        ),
        # keys in another order than forward(image, meta): inputs follow the signature
        "two": (TwoInTwoOut(), {"meta": torch.randn(4, 2), "image": torch.randn(4, 3)}, {}),
    }
    for name, (module, sample, kw) in specs.items():
        d = tmp / name
        d.mkdir()
        path, manifest = _export(d, keys[0], module, sample, **kw)
        out[name] = (module, path, manifest)
    return out


def _load(path: Path, keys: tuple[Any, Path]) -> Any:
    return bundle.load(path, trusted_keys=keys[1], device="cpu")


# --------------------------------------------------------------------------- common models


@pytest.mark.slow
def test_mlp(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    module, path, manifest = exported["mlp"]
    assert manifest.model.converter == "torch.onnx.dynamo"
    assert manifest.model.framework == "pytorch"
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [("x", "float32", ("batch", 6))]
    assert [s.name for s in manifest.outputs] == ["output"]
    assert manifest.parity is not None
    assert manifest.parity.passed
    x = torch.randn(11, 6)
    m = _load(path, keys)
    np.testing.assert_allclose(m.predict(x.numpy()), _own(module, x).numpy(), atol=1e-5)
    assert m.signers == [keys[0].key_id]


@pytest.mark.slow
def test_cnn_with_batchnorm_dropout_pooling(
    exported: dict[str, Any], keys: tuple[Any, Path]
) -> None:
    module, path, _ = exported["cnn"]
    x = torch.randn(7, 1, 8, 8)
    got = _load(path, keys).predict(x.numpy())
    np.testing.assert_allclose(got, _own(module, x).numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_recurrent(exported: dict[str, Any], keys: tuple[Any, Path], name: str) -> None:
    module, path, _ = exported[name]
    x = torch.randn(5, 7, 5)
    np.testing.assert_allclose(
        _load(path, keys).predict(x.numpy()), _own(module, x).numpy(), atol=1e-5
    )


@pytest.mark.slow
def test_transformer_encoder_over_int64_tokens(
    exported: dict[str, Any], keys: tuple[Any, Path]
) -> None:
    module, path, manifest = exported["encoder"]
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
        ("tokens", "int64", ("batch", "seq"))
    ]
    m = _load(path, keys)
    for shape in ((5, 6), (2, 9)):
        tokens = torch.randint(0, 20, shape)
        np.testing.assert_allclose(
            m.predict(tokens.numpy()), _own(module, tokens).numpy(), atol=1e-5
        )


@pytest.mark.slow
def test_two_inputs_two_outputs(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    module, path, manifest = exported["two"]
    assert [s.name for s in manifest.inputs] == ["image", "meta"]
    assert [s.name for s in manifest.outputs] == ["output_0", "output_1"]
    assert manifest.methods["predict"].output == "output_0"
    x = {"image": torch.randn(9, 3), "meta": torch.randn(9, 2)}
    want = _own(module, x)
    m = _load(path, keys)
    got = m.run({k: v.numpy() for k, v in x.items()})
    np.testing.assert_allclose(got["output_0"], want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["output_1"], want[1].numpy(), atol=1e-5)
    np.testing.assert_allclose(
        m.predict({k: v.numpy() for k, v in x.items()}), want[0].numpy(), atol=1e-5
    )


def test_dict_outputs_by_name_and_tuple_sample(tmp_path: Path, keys: tuple[Any, Path]) -> None:
    torch.manual_seed(1)
    module = DictOut()
    path, manifest = _export(tmp_path, keys[0], module, (torch.randn(3, 3), torch.randn(3, 2)))
    assert [s.name for s in manifest.inputs] == ["image", "meta"]
    assert [s.name for s in manifest.outputs] == ["score", "prob"]
    x = (torch.randn(6, 3), torch.randn(6, 2))
    module.train(False)
    with torch.no_grad():
        want = module(*x)
    got = _load(path, keys).run([t.numpy() for t in x])
    for k in ("score", "prob"):
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)


def test_torchscript_exporter_on_request(tmp_path: Path, keys: tuple[Any, Path]) -> None:
    torch.manual_seed(4)
    module = DictOut()
    path, manifest = _export(
        tmp_path,
        keys[0],
        module,
        {"meta": torch.randn(3, 2), "image": torch.randn(3, 3)},
        exporter="torchscript",
    )
    assert manifest.model.converter == "torch.onnx.torchscript"
    assert [(s.name, s.shape) for s in manifest.inputs] == [
        ("image", ("batch", 3)),
        ("meta", ("batch", 2)),
    ]
    assert [s.name for s in manifest.outputs] == ["score", "prob"]
    x = {"meta": torch.randn(7, 2), "image": torch.randn(7, 3)}
    want = _own(module, x)
    got = _load(path, keys).run({k: v.numpy() for k, v in x.items()})
    for k in ("score", "prob"):
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)


# --------------------------------------------------------------------------- weights


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _st_keys(data: bytes) -> set[str]:
    n = int.from_bytes(data[:8], "little")
    return set(json.loads(data[8 : 8 + n])) - {"__metadata__"}


@pytest.mark.slow
def test_weights_keep_state_dict_names_and_each_tensor_is_stored_once(
    exported: dict[str, Any],
) -> None:
    for name in ("mlp", "cnn", "lstm", "encoder", "two"):
        module, path, manifest = exported[name]
        entries = _entries(path)
        weights = _st_keys(entries["weights.safetensors"])
        training = _st_keys(entries["training/state.safetensors"])
        state = json.loads(entries["training/state.json"])
        listed = {t["name"]: t for t in state["model"]["tensors"]}
        assert list(listed) == list(module.state_dict()), name
        params = set(dict(module.named_parameters()))
        assert params <= weights, (name, params - weights)  # dynamo keeps them verbatim
        model_keys = {t["key"] for t in listed.values() if t["source"] == "training"}
        assert not model_keys & weights
        for t in listed.values():
            assert t["key"] in (weights if t["source"] == "weights" else training)
        roles = {f.path: f.role for f in manifest.files}
        assert (
            roles["training/state.json"] == roles["training/state.safetensors"] == "training_state"
        )
    # The unused BatchNorm counter is not in the graph, so it is kept in the training state.
    listed = {
        t["name"]: t
        for t in json.loads(_entries(exported["cnn"][1])["training/state.json"])["model"]["tensors"]
    }
    assert listed["bn.num_batches_tracked"]["source"] == "training"


def test_export_restores_module_modes(tmp_path: Path) -> None:
    module = CNN()
    module.bn.train(False)  # a mixed state (frozen BatchNorm) must come back as it was
    bundle.save(
        module, tmp_path / "c.mbundle", sample_input=torch.randn(2, 1, 8, 8), training_state=False
    )
    assert module.training
    assert module.drop.training
    assert not module.bn.training
    names = {f.path for f in bundle.inspect(tmp_path / "c.mbundle").manifest.files}
    assert names == {"model.onnx", "weights.safetensors"}


def test_export_is_byte_identical(tmp_path: Path) -> None:
    torch.manual_seed(3)
    module = MLP()
    x = torch.randn(3, 6)
    bundle.save(module, tmp_path / "a.mbundle", sample_input=x)
    bundle.save(module, tmp_path / "b.mbundle", sample_input=x)
    assert (tmp_path / "a.mbundle").read_bytes() == (tmp_path / "b.mbundle").read_bytes()


# --------------------------------------------------------------------------- fallback, errors


def test_fallback_to_torchscript_is_warned_and_recorded(
    tmp_path: Path, keys: tuple[Any, Path]
) -> None:
    torch.manual_seed(2)
    module = WithCustomOp(twice)
    with pytest.warns(ExportFallbackWarning, match=r"mbtest\.twice.*TorchScript"):
        path, manifest = _export(tmp_path, keys[0], module, torch.randn(3, 6))
    assert manifest.model.converter == "torch.onnx.torchscript"
    assert manifest.inputs[0].shape == ("batch", 6)
    x = torch.randn(8, 6)
    np.testing.assert_allclose(
        _load(path, keys).predict(x.numpy()), _own(module, x).numpy(), atol=1e-5
    )
    assert set(dict(module.named_parameters())) <= _st_keys(_entries(path)["weights.safetensors"])


def test_one_fallback_warning_class_for_every_exporter() -> None:
    from bundle.export import tensorflow as tfconv
    from bundle.export import torch as torchconv

    assert issubclass(bundle.ExportFallbackWarning, UserWarning)
    # vars(): the name is imported there, not re-exported; the test is that each converter
    # uses the shared class instead of defining its own.
    assert vars(torchconv)["ExportFallbackWarning"] is bundle.ExportFallbackWarning
    assert vars(tfconv)["ExportFallbackWarning"] is bundle.ExportFallbackWarning


ANSI_MESSAGE = (
    "Failed to convert the exported program to an ONNX model. \x1b[96mThis is "
    "step 3/3\x1b[0m of exporting the model to ONNX.\n## Exception summary"
)


def _dynamo_fails(monkeypatch: pytest.MonkeyPatch) -> Exception:
    """Make the dynamo translation fail as torch does, colour codes included."""
    error = torch.onnx.OnnxExporterError(ANSI_MESSAGE)
    real = torch.onnx.export

    def export(*args: Any, **kw: Any) -> Any:
        if kw.get("dynamo"):
            raise error
        return real(*args, **kw)

    monkeypatch.setattr(torch.onnx, "export", export)
    return error


def test_fallback_warning_has_no_colour_codes_and_keeps_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = _dynamo_fails(monkeypatch)
    with pytest.warns(ExportFallbackWarning, match=r"This is step 3/3 of exporting") as seen:
        m = bundle.save(MLP(), tmp_path / "x.mbundle", sample_input=torch.randn(3, 6))
    assert m.model.converter == "torch.onnx.torchscript"
    (w,) = [w for w in seen if w.category is ExportFallbackWarning]
    assert "\x1b" not in str(w.message)
    assert isinstance(w.message, ExportFallbackWarning)
    assert w.message.cause is error
    with pytest.raises(bundle.ConversionError, match=r"This is step 3/3 of exporting") as info:
        bundle.save(
            MLP(), tmp_path / "y.mbundle", sample_input=torch.randn(3, 6), exporter="dynamo"
        )
    assert "\x1b" not in str(info.value)
    assert info.value.__cause__ is error


def test_fallback_is_decided_by_type_not_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-standard op left in the dynamo graph falls back whatever the error's wording."""
    from bundle.export import onnx_graph
    from bundle.export import torch as torchconv

    calls: list[Any] = []

    def tidy(model: Any) -> None:
        calls.append(model)
        if len(calls) == 1:  # the dynamo graph
            raise onnx_graph.NonStandardOperatorError("graph calls acme::Fused")
        onnx_graph.tidy(model)

    monkeypatch.setattr(torchconv, "tidy", tidy)
    with pytest.warns(ExportFallbackWarning, match=r"acme::Fused"):
        m = bundle.save(MLP(), tmp_path / "x.mbundle", sample_input=torch.randn(3, 6))
    assert m.model.converter == "torch.onnx.torchscript"
    calls.clear()
    with pytest.raises(bundle.ConversionError, match=r"acme::Fused"):
        bundle.save(
            MLP(), tmp_path / "y.mbundle", sample_input=torch.randn(3, 6), exporter="dynamo"
        )


def test_unsupported_operator_names_operator_and_module(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError) as info:
        bundle.save(WithCustomOp(opaque), tmp_path / "x.mbundle", sample_input=torch.randn(3, 6))
    text = str(info.value)
    assert "mbtest.opaque" in text
    assert "'act'" in text
    assert "Activation" in text
    assert not (tmp_path / "x.mbundle").exists()


def test_dynamo_only_does_not_fall_back(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match=r"mbtest\.twice.*no ONNX translation"):
        bundle.save(
            WithCustomOp(twice),
            tmp_path / "x.mbundle",
            sample_input=torch.randn(3, 6),
            exporter="dynamo",
        )


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: Any) -> Any:
        n = int((x > 0).sum())
        return self.lin(x)[:, :1].expand(-1, n)


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: Any) -> Any:
        return self.lin(x).reshape(4, 3)


def test_data_dependent_shape_is_explained(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError) as info:
        bundle.save(DataDependent(), tmp_path / "x.mbundle", sample_input=torch.randn(4, 6))
    text = str(info.value)
    assert "depends on tensor values" in text
    assert "int((x > 0).sum())" in text  # the line that does it


def test_dynamic_axis_the_model_fixes_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        bundle.ConversionError,
        match=r"input 'x' axis 0 \('batch'\).*fixes it "
        r"to 4.*dynamic_axes",
    ):
        bundle.save(FixedBatch(), tmp_path / "x.mbundle", sample_input=torch.randn(4, 6))
    # ... and exports once the axis is declared static
    m = bundle.save(
        FixedBatch(), tmp_path / "y.mbundle", sample_input=torch.randn(4, 6), dynamic_axes={"x": {}}
    )
    assert m.inputs[0].shape == (4, 6)


class SmallCNN(nn.Module):
    """Conv2d + BatchNorm (eval) + Linear: the shape of every tutorial's image model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


@pytest.mark.parametrize(("make", "shape"), [(SmallCNN, (3, 6, 6)), (MLP, (6,))])
def test_sample_of_batch_one_exports_and_predicts_any_batch(
    tmp_path: Path, keys: tuple[Any, Path], make: Any, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(7)
    module = make()
    if isinstance(module, SmallCNN):
        # BatchNorm2d(track_running_stats=True) has these buffers; torch types them Optional
        assert module.bn.running_mean is not None
        assert module.bn.running_var is not None
        with torch.no_grad():  # BatchNorm statistics that are not the identity
            module.bn.running_mean.uniform_(-0.5, 0.5)
            module.bn.running_var.uniform_(0.5, 2.0)
    module.eval()
    sample = torch.randn(1, *shape)
    path, manifest = _export(tmp_path, keys[0], module, sample)
    assert manifest.inputs[0].shape == ("batch", *shape)
    assert manifest.parity is not None
    assert manifest.parity.passed
    assert manifest.parity.sample_rows == 1  # measured on exactly the sample given
    m = _load(path, keys)
    for x in (sample, torch.randn(1, *shape), torch.randn(5, *shape)):
        np.testing.assert_allclose(m.predict(x.numpy()), _own(module, x).numpy(), atol=1e-5)


def test_batch_one_dict_and_tuple_samples(tmp_path: Path, keys: tuple[Any, Path]) -> None:
    torch.manual_seed(8)
    module = DictOut().eval()
    for i, sample in enumerate(
        (
            {"meta": torch.randn(1, 2), "image": torch.randn(1, 3)},
            (torch.randn(1, 3), torch.randn(1, 2)),
        )
    ):
        path = tmp_path / f"d{i}.mbundle"
        manifest = bundle.save(module, path, sample_input=sample, signing_key=keys[0])
        assert [(s.name, s.shape) for s in manifest.inputs] == [
            ("image", ("batch", 3)),
            ("meta", ("batch", 2)),
        ]
        m = _load(path, keys)
        for n in (1, 5):
            x = {"image": torch.randn(n, 3), "meta": torch.randn(n, 2)}
            got, want = m.run({k: v.numpy() for k, v in x.items()}), _own(module, x)
            for k in ("score", "prob"):
                np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)


def test_batch_one_with_named_dynamic_axes(tmp_path: Path, keys: tuple[Any, Path]) -> None:
    torch.manual_seed(9)
    module = Encoder().eval()
    path, manifest = _export(
        tmp_path,
        keys[0],
        module,
        torch.randint(0, 20, (1, 6)),
        dynamic_axes={"tokens": {0: "n", 1: "seq"}},
    )
    assert manifest.inputs[0].shape == ("n", "seq")
    m = _load(path, keys)
    for shape in ((1, 6), (5, 6), (1, 9), (3, 4)):
        tokens = torch.randint(0, 20, shape)
        np.testing.assert_allclose(
            m.predict(tokens.numpy()), _own(module, tokens).numpy(), atol=1e-5
        )


class OneRowSpecial(nn.Module):
    """Behaves differently for one row: a graph traced on two rows must not pass for it."""

    def forward(self, x: Any) -> Any:
        return x * 2 if x.shape[0] == 1 else x + 1


def test_batch_one_parity_is_measured_on_the_sample_itself(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match="disagrees"):
        bundle.save(OneRowSpecial(), tmp_path / "x.mbundle", sample_input=torch.randn(1, 4))


def test_empty_dynamic_axis_is_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match=r"size 0 on dynamic axis 0"):
        bundle.save(MLP(), tmp_path / "x.mbundle", sample_input=torch.randn(0, 6))


def test_parity_failure_refused_unless_accepted(tmp_path: Path) -> None:
    class Noisy(nn.Module):
        def forward(self, x: Any) -> Any:
            return x + torch.rand_like(x)

    with pytest.raises(bundle.ConversionError, match="disagrees"):
        bundle.save(Noisy(), tmp_path / "x.mbundle", sample_input=torch.randn(4, 6))
    m = bundle.save(
        Noisy(), tmp_path / "x.mbundle", sample_input=torch.randn(4, 6), accept_mismatch=True
    )
    assert m.parity is not None
    assert m.parity.accepted_mismatch


def test_torch_options_refused_for_other_models(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert isinstance(proto, onnx.ModelProto)
    with pytest.raises(TypeError, match="optimizer cannot be used with this model"):
        bundle.save(proto, tmp_path / "x.mbundle", optimizer=object())
    with pytest.raises(TypeError, match="TorchOptions does not apply"):
        bundle.save(proto, tmp_path / "x.mbundle", options=bundle.TorchOptions())


# --------------------------------------------------------------------------- load path, CLI


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import bundle
    m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2], device="cpu")
    out = m.run(dict(np.load(sys.argv[3])))
    pred = m.predict(dict(np.load(sys.argv[3])))
    np.save(sys.argv[4], out["output_1"], allow_pickle=False)
    np.save(sys.argv[5], pred, allow_pickle=False)
    print(json.dumps({"torch": "torch" in sys.modules,
                      "loaded": sorted(k for k in sys.modules if k.split(".")[0] in
                                       ("torch", "onnxscript", "sklearn"))}))
""")


@pytest.mark.slow
def test_loads_and_predicts_without_torch(
    exported: dict[str, Any], keys: tuple[Any, Path], tmp_path: Path
) -> None:
    module, path, _ = exported["two"]
    x = {"image": torch.randn(5, 3), "meta": torch.randn(5, 2)}
    np.savez(tmp_path / "x.npz", image=x["image"].numpy(), meta=x["meta"].numpy())
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(keys[1]),
            str(tmp_path / "x.npz"),
            str(tmp_path / "o1.npy"),
            str(tmp_path / "p.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"torch": False, "loaded": []}
    want = _own(module, x)
    np.testing.assert_allclose(np.load(tmp_path / "o1.npy"), want[1].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want[0].numpy(), atol=1e-5)


@pytest.mark.slow
def test_cli_inspect_shows_dynamic_axes_and_training_state(
    exported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path, _ = exported["encoder"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Training state: present" in out
    assert "torch.onnx.dynamo" in out
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["manifest"]["inputs"][0]["shape"] == ["batch", "seq"]


@pytest.mark.slow
def test_verify_covers_training_entries(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    _, path, _ = exported["mlp"]
    report = bundle.verify(path, trusted_keys=keys[1])
    assert {f.path for f in report.files} >= {"training/state.json", "training/state.safetensors"}


def test_sample_that_forward_rejects_is_a_conversion_error(tmp_path: Path) -> None:
    with pytest.raises(bundle.ConversionError, match=r"MLP\.forward\(\) fails on sample_input"):
        bundle.save(MLP(), tmp_path / "x.mbundle", sample_input=np.zeros((3, 6)))  # float64
    with pytest.raises(bundle.ConversionError, match="not a parameter"):
        bundle.save(MLP(), tmp_path / "x.mbundle", sample_input={"y": torch.zeros(3, 6)})


class _Nested(nn.Module):
    def __init__(self, shape: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.shape = shape

    def forward(self, x: Any) -> Any:
        y = self.lin(x)
        return (
            {"nested": {"y": y}, "ok": y}
            if self.shape == "nested"
            else {"": y}
            if self.shape == "empty-key"
            else ()
            if self.shape == "none"
            else "text"
        )


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ("nested", r"output 'nested' is a dict, not a tensor"),
        ("empty-key", r"dict with key ''"),
        ("none", r"returns no outputs"),
        ("text", r"returns a str"),
    ],
)
def test_unsupported_output_structures_are_named(tmp_path: Path, shape: str, match: str) -> None:
    with pytest.raises(bundle.ConversionError, match=match):
        bundle.save(
            _Nested(shape).eval(), tmp_path / "n.mbundle", sample_input=np.zeros((2, 4), np.float32)
        )
    assert not (tmp_path / "n.mbundle").exists()
