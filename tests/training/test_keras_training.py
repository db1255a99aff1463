"""Keras training state: save model + optimizer variables, restore by structure, continue."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
import keras

import bundle
from bundle.training import codec as training

X = np.random.default_rng(1).standard_normal((48, 6)).astype(np.float32)
Y = (X[:, :3] @ np.arange(9, dtype=np.float32).reshape(3, 3) / 9).astype(np.float32)
SAMPLE = X[:4]
K = 2  # epochs before and after the checkpoint


def build(hidden: int = 8, seed: int = 0, lr: float = 1e-2) -> Any:
    """Dense + BatchNorm + Dropout: trainable and moving variables, and a seed state."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(3),
        ]
    )
    model.compile(keras.optimizers.Adam(lr), "mse", jit_compile=False)
    return model


def fit(model: Any, epochs: int) -> None:
    model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)


def values(variables: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    k = bundle.generate_key()
    _, pub = k.save(tmp_path_factory.mktemp("key") / "k")
    return k, pub


@pytest.fixture(scope="module")
def checkpoint(
    key: tuple[Any, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """K epochs, saved with the optimizer; and where 2K uninterrupted epochs end."""
    model = build()
    fit(model, K)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.mbundle"
    bundle.save(model, path, sample_input=SAMPLE, signing_key=key[0], optimizer=model.optimizer)
    ref = build()
    fit(ref, 2 * K)
    return path, {"model": values(ref.variables), "optimizer": values(ref.optimizer.variables)}


@pytest.mark.slow
def test_resume_matches_uninterrupted_training(
    checkpoint: tuple[Path, dict[str, list[np.ndarray]]], key: tuple[Any, Path]
) -> None:
    path, ref = checkpoint
    model = build(seed=123, lr=0.5)  # other weights, other learning rate: all replaced
    assert not model.optimizer.built  # restore builds it
    report = bundle.restore(path, model=model, optimizer=model.optimizer, trusted_keys=key[1])
    assert report.verified
    assert int(model.optimizer.iterations.numpy()) == K * 3  # 48 rows / 16 per step
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-2)
    fit(model, K)
    for want, got, v in zip(ref["model"], values(model.variables), model.variables, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=v.path)
    for want, got in zip(ref["optimizer"], values(model.optimizer.variables), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_state_lists_every_variable(checkpoint: tuple[Path, Any]) -> None:
    path, _ = checkpoint
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read(training.STATE_JSON))
        names = set(z.namelist())
    assert doc["framework"]["name"] == "keras"
    assert not any(n.endswith((".pkl", ".keras", ".h5", ".pb")) for n in names)
    kinds = [t["name"].rsplit("/", 1)[-1] for t in doc["model"]["tensors"]]
    assert kinds == [
        "kernel",
        "bias",
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
        "seed_generator_state",
        "kernel",
        "bias",
    ]
    opt = doc["optimizer"]
    assert opt["class"] == "keras.src.optimizers.adam.Adam"
    assert [t["name"].rsplit("/", 1)[-1] for t in opt["tensors"][:2]] == [
        "iteration",
        "learning_rate",
    ]
    assert len(opt["tensors"]) == 2 + 2 * 6  # momentum + velocity per trainable variable
    assert all(t["source"] == "training" for t in opt["tensors"])


@pytest.mark.slow
def test_mismatches_are_listed_and_nothing_is_assigned(
    checkpoint: tuple[Path, Any], key: tuple[Any, Path]
) -> None:
    path, _ = checkpoint
    other = build(hidden=5, seed=3)
    before = values(other.variables)
    with pytest.raises(bundle.BundleError) as info:
        bundle.restore(path, model=other, optimizer=other.optimizer, trusted_keys=key[1])
    assert isinstance(info.value, bundle.InputError)
    text = str(info.value)
    assert "model variable 0 (sequential" in text
    assert "shape [6, 5] given, [6, 8] in the bundle" in text
    assert "moving_mean): shape [5] given, [8] in the bundle" in text
    assert "nothing was loaded" in text
    for a, b in zip(before, values(other.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not other.optimizer.built  # not built for a model that does not fit

    # one layer more: the count and the first disagreeing variable are named
    keras.utils.set_random_seed(4)
    deeper = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(3),
        ]
    )
    with pytest.raises(
        bundle.InputError,
        match=r"model: 11 variable\(s\) given, 9 in the "
        r"bundle.*\n.*model variable 2",
    ):
        bundle.restore(path, model=deeper, trusted_keys=key[1])


@pytest.mark.slow
def test_other_optimizer_is_refused(checkpoint: tuple[Path, Any], key: tuple[Any, Path]) -> None:
    path, _ = checkpoint
    model = build()
    sgd = keras.optimizers.SGD(0.1, momentum=0.9)
    with pytest.raises(
        bundle.InputError,
        match=r"holds a keras\.src\.optimizers\.adam\.Adam "
        r"state, the given optimizer is a .*SGD",
    ):
        bundle.restore(path, model=model, optimizer=sgd, trusted_keys=key[1])
    with pytest.raises(bundle.InputError, match="learning-rate schedule inside the optimizer"):
        bundle.restore(path, model, model.optimizer, object(), trusted_keys=key[1])


@pytest.mark.slow
def test_restore_without_trust_is_refused(checkpoint: tuple[Path, Any]) -> None:
    path, _ = checkpoint
    model = build(seed=5)
    before = values(model.variables)
    with pytest.raises(bundle.SignatureError):
        bundle.restore(path, model=model)
    for a, b in zip(before, values(model.variables), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_tampered_training_state_is_refused(
    checkpoint: tuple[Path, Any], key: tuple[Any, Path], tmp_path: Path
) -> None:
    path, _ = checkpoint
    from bundle.format.archive import ZipReader

    data = bytearray(path.read_bytes())
    with ZipReader(path) as reader:
        entry = reader.entries[training.STATE_TENSORS]
    data[entry.data_offset + entry.size - 3] ^= 0xFF
    bad = tmp_path / "bad.mbundle"
    bad.write_bytes(bytes(data))
    model = build()
    with pytest.raises((bundle.IntegrityError, bundle.FormatError)):
        bundle.restore(bad, model=model, optimizer=model.optimizer, trusted_keys=key[1])


def test_model_only_and_unbuilt_optimizer(tmp_path: Path) -> None:
    model = build(seed=6)
    model.layers[1].moving_mean.assign(np.arange(8, dtype=np.float32))
    assert not model.optimizer.built
    path = tmp_path / "m.mbundle"
    bundle.save(model, path, sample_input=SAMPLE, optimizer=model.optimizer)
    assert model.optimizer.built  # built as fit() would, slots zero
    other = build(seed=7)
    bundle.restore(path, model=other, allow_unsigned=True)
    for a, b in zip(values(model.variables), values(other.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    path2 = tmp_path / "n.mbundle"
    bundle.save(model, path2, sample_input=SAMPLE)
    with pytest.raises(bundle.InputError, match="no optimizer state"):
        bundle.restore(path2, model=other, optimizer=other.optimizer, allow_unsigned=True)
    bundle.save(model, path2, sample_input=SAMPLE, training_state=False)
    with pytest.raises(bundle.InputError, match="no training state"):
        bundle.restore(path2, model=other, allow_unsigned=True)
    with pytest.raises(ValueError, match="contradicts"):
        bundle.save(
            model, path2, sample_input=SAMPLE, training_state=False, optimizer=model.optimizer
        )


def test_reduced_precision_carries_training_state_only_when_asked(tmp_path: Path) -> None:
    model = build(hidden=64, seed=8)
    fit(model, 1)

    def training_entries(path: Path) -> set[str]:
        return {f.path for f in bundle.inspect(path).manifest.files if f.role == "training_state"}

    plain, kept = tmp_path / "int8.mbundle", tmp_path / "int8-opt.mbundle"
    bundle.save(model, plain, sample_input=X[:16], precision="int8", tolerance=(0.2, 0.2))
    assert not training_entries(plain)
    bundle.save(
        model,
        kept,
        sample_input=X[:16],
        precision="int8",
        tolerance=(0.2, 0.2),
        optimizer=model.optimizer,
    )
    assert training_entries(kept)
    other = build(hidden=64, seed=9)
    bundle.restore(kept, model=other, optimizer=other.optimizer, allow_unsigned=True)
    for a, b in zip(values(model.variables), values(other.variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_restores_by_position(tmp_path: Path) -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(3, 3)
            self.out = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.out(keras.ops.mean(self.conv(x), axis=(1, 2)))

    x = np.random.default_rng(2).standard_normal((4, 6, 6, 1)).astype(np.float32)
    a = Net()
    a(x)
    path = tmp_path / "n.mbundle"
    bundle.save(a, path, sample_input=x)
    b = Net()
    with pytest.raises(bundle.InputError, match="build the model first"):
        bundle.restore(path, model=b, allow_unsigned=True)
    b(x)
    assert [v.path for v in a.variables] != [v.path for v in b.variables]  # net / net_1
    bundle.restore(path, model=b, allow_unsigned=True)
    np.testing.assert_array_equal(b(x).numpy(), a(x).numpy())


@pytest.mark.slow
def test_restore_never_unpickles(checkpoint: tuple[Path, Any], key: tuple[Any, Path]) -> None:
    path, _ = checkpoint
    model = build()
    events: list[str] = []
    active = [True]

    def hook(event: str, _args: Any) -> None:
        if active[0] and event.startswith("pickle."):
            events.append(event)

    sys.addaudithook(hook)  # cannot be removed: switched off after the call
    try:
        bundle.restore(path, model=model, optimizer=model.optimizer, trusted_keys=key[1])
    finally:
        active[0] = False
    assert events == []


@pytest.mark.slow
def test_keras_state_is_not_restored_into_a_torch_module(
    checkpoint: tuple[Path, Any], key: tuple[Any, Path]
) -> None:
    torch = pytest.importorskip("torch")
    path, _ = checkpoint
    with pytest.raises(bundle.InputError, match="holds 'keras' training state"):
        bundle.restore(path, model=torch.nn.Linear(6, 3), trusted_keys=key[1])
