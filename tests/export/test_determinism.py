"""Same model, same inputs, same key: byte-identical bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import bundle


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_sklearn_export_is_byte_identical(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    clf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    key = bundle.generate_key()  # ECDSA P-256, RFC 6979 deterministic nonces
    a, b = tmp_path / "a.mbundle", tmp_path / "b.mbundle"
    bundle.save(clf, a, sample_input=X[:10], signing_key=key, metadata={"team": "x"})
    bundle.save(clf, b, sample_input=X[:10], signing_key=key, metadata={"team": "x"})
    assert _digest(a) == _digest(b)
    # and any change of input changes the bytes
    c = tmp_path / "c.mbundle"
    bundle.save(clf, c, sample_input=X[:10], signing_key=key, metadata={"team": "y"})
    assert _digest(c) != _digest(a)


def test_sign_is_idempotent_and_order_independent(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    k1, k2 = bundle.generate_key(), bundle.generate_key("ed25519")
    a, b = tmp_path / "a.mbundle", tmp_path / "b.mbundle"
    bundle.save(model, a, name="m")
    bundle.save(model, b, name="m")
    bundle.sign(a, k1)
    bundle.sign(a, k2)
    bundle.sign(b, k2)
    bundle.sign(b, k1)
    bundle.sign(b, k1)  # re-signing with the same key replaces, never duplicates
    assert _digest(a) == _digest(b)
    report = bundle.verify(a, trusted_keys=[k1.public_key, k2.public_key], threshold=2)
    assert {s.key_id for s in report.signers} == {k1.key_id, k2.key_id}
