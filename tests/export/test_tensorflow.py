"""TensorFlow/Keras export: Keras 3 models, tf.Modules and SavedModels to signed bundles.

Every model is exported once (module-scoped) and compared with its own output on
a batch size other than the sample's. Models are tiny: TensorFlow's import and
tf2onnx dominate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
import keras
import tensorflow as tf

import bundle
from bundle import ExportFallbackWarning
from bundle.training import codec as training

RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- models


def mlp() -> Any:
    # the last Dense keeps its zero bias: tf2onnx drops the Add, and the bias
    # then lives in the training state only
    return keras.Sequential(
        [
            keras.Input((6,), name="x"),
            keras.layers.Dense(16, activation="relu", bias_initializer="random_normal"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )


def cnn() -> Any:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.3),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    bn = model.layers[1]
    bn.moving_mean.assign(RNG.standard_normal(4).astype(np.float32))
    bn.moving_variance.assign(RNG.uniform(0.5, 2, 4).astype(np.float32))
    bn.gamma.assign(RNG.uniform(0.5, 2, 4).astype(np.float32))
    return model


def recurrent(cell: Any) -> Any:
    # None time axis: the sequence length stays dynamic
    return keras.Sequential([keras.Input((None, 5), name="seq"), cell(8), keras.layers.Dense(2)])


def two_in_two_out() -> Any:
    image = keras.Input((3,), name="image")
    meta = keras.Input((2,), name="meta")
    h = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([image, meta]))
    score = keras.layers.Dense(2, name="score")(h)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    return keras.Model([image, meta], [score, prob])


class DictModel(keras.Model):
    """Subclassed, dict in, dict out, with a Lambda layer (traced; no code stored)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = keras.layers.Dense(4)
        self.twice = keras.layers.Lambda(lambda t: t * 2.0 + 1.0)
        self.b = keras.layers.Dense(2)

    def call(self, inputs: Any) -> Any:
        h = self.twice(self.a(inputs["tokens"]))
        return {"score": self.b(h + inputs["extra"]), "hidden": h}


class Affine(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(RNG.standard_normal((4, 3)).astype(np.float32), name="w")
        self.b = tf.Variable(np.full(3, 0.5, np.float32), name="b")
        self.blocks = [tf.Variable(RNG.uniform(1, 2, 3).astype(np.float32), name="scale")]

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="features")])
    def __call__(self, x: Any) -> Any:
        return tf.nn.relu(x @ self.w + self.b) * self.blocks[0]

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None,), tf.int32, name="k"),
        ]
    )
    def score(self, x: Any, k: Any) -> Any:
        return {"y": x @ self.w, "z": tf.cast(k, tf.float32)[:, None] * self.b}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    key = bundle.generate_key()
    _, pub = key.save(tmp_path_factory.mktemp("keys") / "k")
    return key, pub


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[Any, Path]
) -> dict[str, tuple[Any, Path, Any]]:
    """Each model once: name -> (model, bundle path, manifest)."""
    tmp = tmp_path_factory.mktemp("tf")
    keras.utils.set_random_seed(0)
    specs: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        "mlp": (mlp(), rand(4, 6), {}),
        "cnn": (cnn(), rand(4, 8, 8, 1), {}),
        "lstm": (recurrent(keras.layers.LSTM), rand(3, 7, 5), {}),
        "gru": (recurrent(keras.layers.GRU), rand(3, 7, 5), {}),
        # a dict in another order than model.inputs: the graph follows the model
        "two": (two_in_two_out(), {"meta": rand(4, 2), "image": rand(4, 3)}, {}),
        "dict": (DictModel(), {"tokens": rand(3, 5), "extra": rand(3, 4)}, {}),
        "module": (Affine(), rand(3, 4), {}),
    }
    out = {}
    for name, (model, sample, kw) in specs.items():
        path = tmp / f"{name}.mbundle"
        with warnings.catch_warnings():
            # every Keras model here must trace with its variables as inputs
            warnings.simplefilter("error", ExportFallbackWarning)
            manifest = bundle.save(model, path, sample_input=sample, signing_key=keys[0], **kw)
        out[name] = (model, path, manifest)
    return out


def _load(path: Path, keys: tuple[Any, Path]) -> Any:
    return bundle.load(path, trusted_keys=keys[1], device="cpu")


def _own(model: Any, x: Any) -> Any:
    if isinstance(model, keras.Model):
        return keras.tree.map_structure(np.asarray, model(x, training=False))
    return np.asarray(model(x))


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _st(data: bytes) -> dict[str, Any]:
    n = int.from_bytes(data[:8], "little")
    header: dict[str, Any] = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return header


# --------------------------------------------------------------------------- common models


def test_mlp(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    model, path, manifest = exported["mlp"]
    assert manifest.model.framework == "keras"
    assert manifest.model.framework_version == keras.__version__
    assert (manifest.model.converter, manifest.model.converter_version) == (
        "tf2onnx",
        __import__("tf2onnx").__version__,
    )
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [("x", "float32", ("batch", 6))]
    assert [(s.name, s.shape) for s in manifest.outputs] == [("output", ("batch", 3))]
    assert manifest.parity is not None
    assert manifest.parity.passed
    x = rand(11, 6)
    m = _load(path, keys)
    np.testing.assert_allclose(m.predict(x), _own(model, x), atol=1e-5)
    np.testing.assert_allclose(m.predict(x.astype(np.float64)), _own(model, x), atol=1e-5)
    assert m.signers == [keys[0].key_id]


def test_cnn_with_batchnorm_and_dropout(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    model, path, manifest = exported["cnn"]
    assert manifest.inputs[0].shape == ("batch", 8, 8, 1)  # NHWC, as Keras takes it
    x = rand(7, 8, 8, 1)
    np.testing.assert_allclose(_load(path, keys).predict(x), _own(model, x), atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_recurrent_with_dynamic_sequence_length(
    exported: dict[str, Any], keys: tuple[Any, Path], name: str
) -> None:
    model, path, manifest = exported[name]
    assert manifest.inputs[0].shape == ("batch", "seq_dim1", 5)
    m = _load(path, keys)
    for shape in ((5, 7, 5), (2, 11, 5)):
        x = rand(*shape)
        np.testing.assert_allclose(m.predict(x), _own(model, x), atol=1e-5)


def test_two_inputs_two_outputs(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    model, path, manifest = exported["two"]
    assert [s.name for s in manifest.inputs] == ["image", "meta"]
    assert [s.name for s in manifest.outputs] == ["output_0", "output_1"]
    assert manifest.methods["predict"].output == "output_0"
    image, meta = rand(9, 3), rand(9, 2)
    want = _own(model, [image, meta])
    m = _load(path, keys)
    # the structures Keras takes: a list in input order, or a dict by name
    got = m.run([image, meta])
    np.testing.assert_allclose(got["output_0"], want[0], atol=1e-5)
    np.testing.assert_allclose(got["output_1"], want[1], atol=1e-5)
    np.testing.assert_allclose(m.predict({"meta": meta, "image": image}), want[0], atol=1e-5)
    np.testing.assert_allclose(_own(model, {"meta": meta, "image": image})[0], want[0])


def test_subclassed_dict_model_with_lambda(
    exported: dict[str, Any], keys: tuple[Any, Path]
) -> None:
    model, path, manifest = exported["dict"]
    assert [s.name for s in manifest.inputs] == ["tokens", "extra"]
    assert [s.name for s in manifest.outputs] == ["score", "hidden"]
    x = {"tokens": rand(6, 5), "extra": rand(6, 4)}
    want = _own(model, x)
    got = _load(path, keys).run(x)
    for k in ("score", "hidden"):
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    names = set(_entries(path))
    assert not any(n.endswith((".pkl", ".py", ".keras", ".h5")) for n in names)


def test_tf_module(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    module, path, manifest = exported["module"]
    assert manifest.model.framework == "tensorflow"
    assert [(s.name, s.shape) for s in manifest.inputs] == [("features", ("batch", 4))]
    x = rand(8, 4)
    np.testing.assert_allclose(_load(path, keys).predict(x), _own(module, x), atol=1e-5)
    # named by attribute path; no training state for a plain tf.Module
    entries = _entries(path)
    assert {"w", "b", "blocks/0"} <= set(_st(entries["weights.safetensors"]))
    assert training.STATE_JSON not in entries


def test_tf_module_named_method_and_saved_model(
    tmp_path: Path, keys: tuple[Any, Path], exported: dict[str, Any]
) -> None:
    module = exported["module"][0]
    sample = {"x": rand(3, 4), "k": np.arange(3)}
    path = tmp_path / "score.mbundle"
    manifest = bundle.save(
        module, path, sample_input=sample, signature="score", signing_key=keys[0]
    )
    assert [(s.name, s.dtype) for s in manifest.inputs] == [("x", "float32"), ("k", "int32")]
    assert [s.name for s in manifest.outputs] == ["y", "z"]
    x = {"x": rand(6, 4), "k": np.arange(6, dtype=np.int32)}
    want = module.score(**x)
    got = _load(path, keys).run(x)
    for k in ("y", "z"):
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)

    saved = tmp_path / "sm"
    tf.saved_model.save(
        module, str(saved), signatures={"serving_default": module.__call__, "score": module.score}
    )
    sm = tmp_path / "sm.mbundle"
    manifest = bundle.save(str(saved) + "/", sm, sample_input=rand(3, 4), signing_key=keys[0])
    assert manifest.model.name == "sm"
    assert manifest.model.framework == "tensorflow"
    assert [s.name for s in manifest.inputs] == ["features"]
    assert [s.name for s in manifest.outputs] == ["output_0"]  # the signature's own key
    xx = rand(5, 4)
    np.testing.assert_allclose(_load(sm, keys).predict(xx), _own(module, xx), atol=1e-5)
    manifest = bundle.save(saved, sm, sample_input=sample, signature="score", signing_key=keys[0])
    assert [s.name for s in manifest.outputs] == ["y", "z"]
    np.testing.assert_allclose(_load(sm, keys).run(x)["z"], want["z"].numpy(), atol=1e-5)

    with pytest.raises(bundle.ConversionError, match=r"no signature 'nope'.*score"):
        bundle.save(saved, tmp_path / "x.mbundle", sample_input=sample, signature="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(bundle.ConversionError, match="not a SavedModel"):
        bundle.save(tmp_path / "empty", tmp_path / "x.mbundle", sample_input=sample)
    assert not (tmp_path / "x.mbundle").exists()


# --------------------------------------------------------------------------- weights


def test_weights_are_named_by_keras_path_and_stored_once(exported: dict[str, Any]) -> None:
    for name in ("mlp", "cnn", "lstm", "two", "dict"):
        model, path, manifest = exported[name]
        entries = _entries(path)
        weights = _st(entries["weights.safetensors"])
        tstate = _st(entries["training/state.safetensors"])
        doc = json.loads(entries["training/state.json"])
        assert doc["framework"]["name"] == "keras"
        listed = doc["model"]["tensors"]
        assert [t["name"] for t in listed] == [v.path for v in model.variables], name
        for t, v in zip(listed, model.variables, strict=True):
            pool = weights if t["source"] == "weights" else tstate
            assert t["key"] in pool, (name, t)
            assert pool[t["key"]]["shape"] == list(v.shape)
            if t["source"] == "weights":
                assert t["key"] == v.path  # the initializer took the variable's name
        # nothing stored twice: the training state holds only what the graph does not
        assert not set(tstate) & set(weights)
        roles = {f.path: f.role for f in manifest.files}
        assert (
            roles["training/state.json"] == roles["training/state.safetensors"] == "training_state"
        )
    # every variable the graph reads is an initializer holding it verbatim, even the
    # all-zero bias tf2onnx would fold away as a constant; only the recurrent layers'
    # are baked in (tf2onnx fuses them into one LSTM op) and kept exactly in the state
    for name, recurrent_layer in (("mlp", None), ("cnn", None), ("two", None), ("lstm", 0)):
        model, path, _ = exported[name]
        doc = json.loads(_entries(path)["training/state.json"])
        by = {t["name"]: t for t in doc["model"]["tensors"]}
        baked = (
            {v.path for v in model.layers[recurrent_layer].weights}
            if recurrent_layer is not None
            else set()
        )
        for v in model.variables:
            want = "training" if v.path in baked or "seed_generator" in v.path else "weights"
            assert by[v.path]["source"] == want, (name, v.path)
    assert not np.any(exported["mlp"][0].layers[2].bias.numpy())
    graph = _entries(exported["lstm"][1])["model.onnx"]
    assert b"LSTM" in graph


def test_frozen_trace_fallback_folds_and_keeps_state(
    tmp_path: Path,
    keys: tuple[Any, Path],
    exported: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the stateless trace fails, variables are frozen; what tf2onnx folds is kept apart."""
    from bundle.export import tensorflow as tfconv

    def broken(*_: Any) -> Any:
        raise RuntimeError("no stateless call")

    monkeypatch.setattr(tfconv._Stateless, "call", broken)
    model = exported["mlp"][0]
    path = tmp_path / "frozen.mbundle"
    with pytest.warns(ExportFallbackWarning, match="no stateless call") as seen:
        manifest = bundle.save(model, path, sample_input=rand(3, 6), signing_key=keys[0])
    (w,) = [w for w in seen if w.category is ExportFallbackWarning]
    assert isinstance(w.message, ExportFallbackWarning)
    assert isinstance(w.message.cause, RuntimeError)
    assert manifest.parity is not None
    assert manifest.parity.passed
    x = rand(9, 6)
    np.testing.assert_allclose(_load(path, keys).predict(x), _own(model, x), atol=1e-5)
    entries = _entries(path)
    weights = _st(entries["weights.safetensors"])
    by = {t["name"]: t for t in json.loads(entries["training/state.json"])["model"]["tensors"]}
    kernel, bias = model.layers[2].weights
    assert kernel.path in weights  # identical initializer: adopted the variable's name
    assert bias.path not in weights  # the zero bias tf2onnx dropped ...
    assert by[bias.path]["source"] == "training"  # ... is in the training state, exactly
    other = mlp()
    bundle.restore(path, model=other, trusted_keys=keys[1])
    for a, b in zip(model.variables, other.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_export_is_byte_identical(tmp_path: Path, exported: dict[str, Any]) -> None:
    model = exported["lstm"][0]  # tf2onnx numbers its helper tensors process-wide
    x = rand(3, 7, 5)
    bundle.save(model, tmp_path / "a.mbundle", sample_input=x)
    bundle.save(model, tmp_path / "b.mbundle", sample_input=x)
    assert (tmp_path / "a.mbundle").read_bytes() == (tmp_path / "b.mbundle").read_bytes()


def test_training_state_off(tmp_path: Path, exported: dict[str, Any]) -> None:
    model = exported["mlp"][0]
    bundle.save(model, tmp_path / "m.mbundle", sample_input=rand(2, 6), training_state=False)
    names = {f.path for f in bundle.inspect(tmp_path / "m.mbundle").manifest.files}
    assert names == {"model.onnx", "weights.safetensors"}


# --------------------------------------------------------------------------- errors


class Igamma(keras.layers.Layer):
    def call(self, x: Any) -> Any:
        return tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 1.0)


class PythonCode(keras.layers.Layer):
    def call(self, x: Any) -> Any:
        y = tf.numpy_function(lambda a: np.sin(a), [x], tf.float32)
        return tf.ensure_shape(y, x.shape)

    def compute_output_shape(self, shape: Any) -> Any:
        return shape


class Noise(keras.layers.Layer):
    def call(self, x: Any) -> Any:
        return x + tf.random.uniform(tf.shape(x))


@pytest.mark.parametrize(("layer", "op"), [(Igamma, "Igamma"), (PythonCode, "PyFunc")])
def test_unconvertible_layer_is_named(tmp_path: Path, layer: Any, op: str) -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6), layer(name="strange")])
    with pytest.raises(bundle.ConversionError) as info:
        bundle.save(model, tmp_path / "x.mbundle", sample_input=rand(3, 6))
    text = str(info.value)
    assert f"TensorFlow op {op}" in text
    assert f"layer 'strange' ({layer.__name__})" in text
    assert not (tmp_path / "x.mbundle").exists()


def test_parity_failure_refused_unless_accepted(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((6,)), Noise()])
    with pytest.raises(bundle.ConversionError, match="disagrees"):
        bundle.save(model, tmp_path / "x.mbundle", sample_input=rand(4, 6))
    assert not (tmp_path / "x.mbundle").exists()
    m = bundle.save(model, tmp_path / "x.mbundle", sample_input=rand(4, 6), accept_mismatch=True)
    assert m.parity is not None
    assert m.parity.accepted_mismatch


def test_untraceable_python_is_a_conversion_error(tmp_path: Path) -> None:
    class Eager(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * float(np.asarray(x).max())  # needs a concrete value

    model = keras.Sequential([keras.Input((6,)), Eager()])
    with pytest.raises(bundle.ConversionError, match=r"fails when traced by tf\.function"):
        bundle.save(model, tmp_path / "x.mbundle", sample_input=rand(4, 6))


def test_options_and_samples_are_checked(tmp_path: Path, exported: dict[str, Any]) -> None:
    two, module = exported["two"][0], exported["module"][0]
    out = tmp_path / "x.mbundle"
    with pytest.raises(TypeError, match=r"exporter cannot be used with this model"):
        bundle.save(two, out, sample_input=[rand(2, 3), rand(2, 2)], exporter="dynamo")
    with pytest.raises(bundle.ConversionError, match=r"signature= names a tf\.Module method"):
        bundle.save(two, out, sample_input=[rand(2, 3), rand(2, 2)], signature="serve")
    with pytest.raises(bundle.ConversionError, match="Keras models only"):
        bundle.save(module, out, sample_input=rand(2, 4), optimizer=object())
    with pytest.raises(bundle.ConversionError, match=r"inputs \['image', 'meta'\].*'img'"):
        bundle.save(two, out, sample_input={"img": rand(2, 3), "meta": rand(2, 2)})
    with pytest.raises(bundle.ConversionError, match="gives 1 arrays but Functional has 2"):
        bundle.save(two, out, sample_input=[rand(2, 3)])
    with pytest.raises(bundle.ConversionError, match="sample_input is required"):
        bundle.save(two, out)
    with pytest.raises(bundle.ConversionError, match="input_signature wants"):
        bundle.save(module, out, sample_input=rand(2, 5))
    with pytest.raises(bundle.ConversionError, match="dynamic_axes names unknown input"):
        bundle.save(
            two, out, sample_input=[rand(2, 3), rand(2, 2)], dynamic_axes={"nope": {0: "n"}}
        )
    assert not out.exists()


def test_dynamic_axes_override(tmp_path: Path, exported: dict[str, Any]) -> None:
    model = exported["lstm"][0]
    m = bundle.save(
        model, tmp_path / "s.mbundle", sample_input=rand(3, 7, 5), dynamic_axes={"seq": {0: "n"}}
    )
    assert m.inputs[0].shape == ("n", 7, 5)
    assert m.outputs[0].shape == ("n", 2)


def test_environment_is_left_as_it_was(
    tmp_path: Path, exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    bundle.save(exported["mlp"][0], tmp_path / "m.mbundle", sample_input=rand(2, 6))
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    bundle.save(exported["mlp"][0], tmp_path / "m.mbundle", sample_input=rand(2, 6))
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


# --------------------------------------------------------------------------- load path


CHILD = textwrap.dedent("""
    import json, sys
    events = []
    sys.addaudithook(lambda e, a: events.append(e) if e.startswith("pickle.") else None)
    import numpy as np
    import bundle
    m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2], device="cpu")
    x = dict(np.load(sys.argv[3]))
    out = m.run([x["image"], x["meta"]])
    np.save(sys.argv[4], out["output_1"], allow_pickle=False)
    np.save(sys.argv[5], m.predict(x), allow_pickle=False)
    print(json.dumps({"pickle": sorted(set(events)),
                      "loaded": sorted(k for k in sys.modules if k.split(".")[0] in
                                       ("tensorflow", "keras", "tf2onnx", "tf_keras",
                                        "torch", "sklearn"))}))
""")


def test_loads_and_predicts_without_tensorflow(
    exported: dict[str, Any], keys: tuple[Any, Path], tmp_path: Path
) -> None:
    model, path, _ = exported["two"]
    x = {"image": rand(5, 3), "meta": rand(5, 2)}
    np.savez(tmp_path / "x.npz", image=x["image"], meta=x["meta"])
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
    assert info == {"pickle": [], "loaded": []}
    want = _own(model, x)
    np.testing.assert_allclose(np.load(tmp_path / "o1.npy"), want[1], atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want[0], atol=1e-5)


def test_verify_covers_training_entries(exported: dict[str, Any], keys: tuple[Any, Path]) -> None:
    _, path, _ = exported["cnn"]
    report = bundle.verify(path, trusted_keys=keys[1])
    assert {f.path for f in report.files} >= {training.STATE_JSON, training.STATE_TENSORS}
