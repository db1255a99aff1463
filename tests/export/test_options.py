"""Per-framework export options: typed, validated, and never mixed with the shortcuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model

import bundle
from bundle.export.options import options_for


def test_options_validate_when_built() -> None:
    with pytest.raises(ValueError, match="exporter 'jit'"):
        bundle.TorchOptions(exporter="jit")
    with pytest.raises(ValueError, match="contradicts"):
        bundle.TorchOptions(training_state=False, include_rng=True)
    with pytest.raises(ValueError, match="contradicts"):
        bundle.TensorFlowOptions(training_state=False, optimizer=object())
    with pytest.raises(TypeError, match="dynamic_axes"):
        bundle.TorchOptions(dynamic_axes=[0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="signature"):
        bundle.TensorFlowOptions(signature="")
    assert bundle.TorchOptions(optimizer=object()).wants_training_state
    assert not bundle.TorchOptions().wants_training_state


def test_shortcuts_build_the_frameworks_options() -> None:
    opts = options_for("torch", None, {"exporter": "torchscript", "dynamic_axes": None})
    assert opts == bundle.TorchOptions(exporter="torchscript")
    opts = options_for("tensorflow", None, {"signature": "serve"})
    assert opts == bundle.TensorFlowOptions(signature="serve")
    assert options_for("sklearn", None, {"exporter": None}) is None
    with pytest.raises(TypeError, match="scheduler cannot be used with this model"):
        options_for("tensorflow", None, {"scheduler": object()})
    with pytest.raises(TypeError, match="not both"):
        options_for("torch", bundle.TorchOptions(), {"exporter": "dynamo"})
    with pytest.raises(TypeError, match="TensorFlowOptions does not apply"):
        options_for("torch", bundle.TensorFlowOptions(), {})


def test_save_refuses_options_a_plain_onnx_model_does_not_take(tmp_path: Path) -> None:
    out = tmp_path / "x.mbundle"
    with pytest.raises(TypeError, match="TorchOptions does not apply"):
        bundle.save(tiny_model(), out, options=bundle.TorchOptions())
    with pytest.raises(TypeError, match="signature cannot be used"):
        bundle.save(tiny_model(), out, signature="serve")
    assert not out.exists()
    bundle.save(tiny_model(), out)  # no options: fine
    m = bundle.load(out, allow_unsigned=True)
    assert m.predict(np.ones((1, 4), np.float32)).shape[0] == 1


def test_sklearn_options_are_validated_and_built_from_shortcuts() -> None:
    assert options_for("sklearn", None, {"training_state": True}) == bundle.SklearnOptions(
        training_state=True
    )
    with pytest.raises(
        TypeError,
        match=r"dynamic_axes cannot be used with this model "
        r"\(SklearnOptions takes",
    ):
        options_for("sklearn", None, {"dynamic_axes": {"X": {0: "n"}}})
    with pytest.raises(TypeError, match="training_state must be"):
        bundle.SklearnOptions(training_state="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text_locale"):
        bundle.SklearnOptions(text_locale="")
    with pytest.raises(TypeError, match="SklearnOptions does not apply"):
        options_for("torch", bundle.SklearnOptions(), {})
