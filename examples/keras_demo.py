"""Keras demo: train -> save signed (with the optimizer) -> verify -> predict without
TensorFlow -> restore into a fresh model and keep training.

Run, in an environment with model-bundle[tensorflow] installed::

    python examples/keras_demo.py [OUTDIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import bundle


def step(text: str) -> None:
    print(f"\n== {text}")


def data(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def fresh(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(32, activation="relu")(inputs)
    h = keras.layers.Dropout(0.1)(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def train(model: keras.Model, epochs: int) -> float:
    x, y = data()
    hist = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return float(hist.history["loss"][-1])


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import bundle
    m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2])
    pred = m.predict(np.load(sys.argv[3]))
    print(json.dumps({"imported": sorted(k for k in ("tensorflow", "keras", "tf2onnx")
                                         if k in sys.modules),
                      "argmax": pred.argmax(1).tolist(), "signers": m.signers}))
""")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "keras-demo-out")
    out.mkdir(parents=True, exist_ok=True)

    step("1. train a small Keras model for 3 epochs")
    model = fresh()
    print(f"loss after 3 epochs: {train(model, 3):.4f}")

    step("2. make a signing key and save a signed bundle with the optimizer state")
    key = bundle.generate_key()
    _, pub = key.save(out / "keras-demo", overwrite=True)
    path = out / "classifier.mbundle"
    x, _ = data()
    manifest = bundle.save(
        model,
        path,
        sample_input=x[:8],
        signing_key=key,
        name="keras-demo",
        optimizer=model.optimizer,
    )
    print(
        f"exported with {manifest.model.converter} {manifest.model.converter_version}; "
        f"inputs {[(s.name, s.dtype, list(s.shape)) for s in manifest.inputs]}"
    )
    for f in manifest.files:
        print(f"  {f.path:28} {f.role:15} {f.size:>8} bytes")
    if manifest.parity:
        print(f"parity on the sample: max abs {manifest.parity.outputs[0].max_abs:.2e}")

    step("3. verify: signature, every file's hash, the graph")
    report = bundle.verify(path, trusted_keys=pub)
    print(f"verified={report.verified}; signed by {report.signers[0].key_id[:16]}...")

    step("4. load and predict in a fresh process that never imports TensorFlow or Keras")
    np.save(out / "x.npy", x[:5])
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(pub), str(out / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(res.stdout.strip().splitlines()[-1])
    want = np.asarray(model(x[:5], training=False)).argmax(1).tolist()
    print(
        f"child imported {child['imported'] or 'no framework'}; predictions "
        f"{child['argmax']} (Keras says {want})"
    )
    if child["imported"] or child["argmax"] != want:
        return 1

    step("5. restore into a fresh model and continue; compare with never stopping")
    model2 = fresh(seed=1)  # other initial weights: all replaced
    bundle.restore(path, model=model2, optimizer=model2.optimizer, trusted_keys=pub)
    resumed = train(model2, 3)
    uninterrupted = train(model, 3)
    same = all(
        np.allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)
        for a, b in zip(model.variables, model2.variables, strict=True)
    )
    print(
        f"loss after 6 epochs: resumed {resumed:.6f}, uninterrupted {uninterrupted:.6f}; "
        f"same variables: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
