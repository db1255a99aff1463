"""Keras models people have (issue 17): ``Normalization`` layers (tabular models,
EfficientNet's stem), dict inputs whose keys are not in sorted order, depthwise
convolutions -- saved, loaded and compared with Keras on another batch size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import bundle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

pytestmark = pytest.mark.slow  # tf2onnx conversions take seconds each


def _x(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32") * 3 + 1


def test_adapted_normalization_layer(tmp_path: Path) -> None:
    x = _x(64, 4)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inp = keras.Input((4,), name="features")
    model = keras.Model(inp, keras.layers.Dense(2)(norm(inp)))
    manifest = bundle.save(model, tmp_path / "n.mb", sample_input=x[:3])
    assert [i.name for i in manifest.inputs] == ["features"]
    m = bundle.load(tmp_path / "n.mb", allow_unsigned=True)
    test = _x(9, 4, 1)
    np.testing.assert_allclose(m.predict(test), model.predict(test, verbose=0), atol=1e-5)


def test_dict_inputs_not_in_sorted_order(tmp_path: Path) -> None:
    num = keras.Input((3,), name="num")
    cat = keras.Input((2,), name="cat_ids")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([num, cat]))
    model = keras.Model({"num": num, "cat_ids": cat}, out)  # "num" first: not sorted
    x = {"num": _x(4, 3), "cat_ids": _x(4, 2, 1)}
    bundle.save(model, tmp_path / "d.mb", sample_input=x)
    m = bundle.load(tmp_path / "d.mb", allow_unsigned=True)
    test = {"num": _x(7, 3, 2), "cat_ids": _x(7, 2, 3)}
    np.testing.assert_allclose(m.predict(test), model.predict(test, verbose=0), atol=1e-5)


def test_depthwise_convolution(tmp_path: Path) -> None:
    inp = keras.Input((16, 16, 8))
    y = keras.layers.DepthwiseConv2D(7, padding="same")(inp)  # ConvNeXt's block
    y = keras.layers.LayerNormalization(epsilon=1e-6)(y)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(y))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32")
    bundle.save(model, tmp_path / "c.mb", sample_input=x)
    m = bundle.load(tmp_path / "c.mb", allow_unsigned=True)
    test = np.random.default_rng(1).normal(size=(3, 16, 16, 8)).astype("float32")
    np.testing.assert_allclose(m.predict(test), model.predict(test, verbose=0), atol=1e-4)


def test_grouped_convolution_is_refused_naming_the_layer(tmp_path: Path) -> None:
    """ConvNeXt's depthwise blocks are Conv2D(groups=channels): Keras runs them through
    an XLA-compiled function that tf2onnx cannot translate; the message says so."""
    inp = keras.Input((16, 16, 8))
    y = keras.layers.Conv2D(8, 7, padding="same", groups=8, name="dw")(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(y))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32")
    with pytest.raises(bundle.ConversionError, match=r"dw: Keras runs a grouped convolution"):
        bundle.save(model, tmp_path / "g.mb", sample_input=x)
    assert list(tmp_path.iterdir()) == []
