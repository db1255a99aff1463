"""The scanner on real files of every format it reads, and on broken ones."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle
from bundle.legacy import scan_bytes


@pytest.mark.parametrize(
    "compress", [0, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)]
)
def test_joblib_plain_and_compressed(compress: object, tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.tree import DecisionTreeClassifier

    X = np.random.default_rng(0).standard_normal((60, 3))
    clf = DecisionTreeClassifier(random_state=0).fit(X, X[:, 0] > 0)
    path = tmp_path / "t.joblib"
    joblib.dump(
        {"clf": clf, "w": np.arange(1000.0), "f": np.asfortranarray(np.eye(3))},
        path,
        compress=compress,
    )
    report = bundle.scan(path)
    assert report.format == "joblib", report.to_dict()
    assert report.verdict == "needs-approval", report.problems
    assert "sklearn.tree._classes.DecisionTreeClassifier" in report.needs_approval
    assert "sklearn.tree._tree.Tree" in report.needs_approval


def test_torch_legacy_and_npz(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sd = torch.nn.Linear(3, 2).state_dict()
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = bundle.scan(tmp_path / "legacy.pt")
    assert (legacy.format, legacy.verdict) == ("torch-legacy", "tensors-only")
    np.savez(tmp_path / "a.npz", a=np.arange(3), b=np.ones((2, 2)))
    assert bundle.scan(tmp_path / "a.npz").verdict == "tensors-only"
    obj = np.empty(1, dtype=object)
    obj[0] = print
    np.savez(tmp_path / "o.npz", a=np.arange(3), o=obj)
    report = bundle.scan(tmp_path / "o.npz")
    assert "builtins.print" in report.dangerous


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"a": 1})[:-3],  # truncated
        pickle.dumps({"a": 1}) + b"\x00garbage",  # bytes after STOP
        b"\x80\x04\x94.",  # MEMOIZE on an empty stack
        b"\x80\x04h\x07.",  # BINGET of a slot never written
        b"\x80\x04\x8c\x02osh\x00\x93.",  # STACK_GLOBAL with one operand
    ],
    ids=["truncated", "trailing", "memoize-empty", "get-unwritten", "stack-global-short"],
)
def test_broken_pickles_are_unscannable(data: bytes) -> None:
    report = scan_bytes(data)
    assert report.verdict == "unscannable", report.to_dict()
    assert report.problems


def test_build_on_an_imported_object_is_refused() -> None:
    """BUILD on a global would set attributes on a module-level object (say os.path)."""
    data = b"\x80\x04\x8c\x07os.path\x8c\x04join\x93}\x8c\x01x\x8c\x01y\x73b."
    report = scan_bytes(data)
    assert report.verdict == "unscannable"
    assert any("BUILD on the imported object" in p for p in report.problems)


@pytest.mark.slow
def test_keras_h5_and_saved_models(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    tf: Any = pytest.importorskip("tensorflow")
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    m.save(tmp_path / "m.h5")
    h5 = bundle.scan(tmp_path / "m.h5")
    assert (h5.format, h5.verdict) == ("h5", "no-code")
    assert "Dense" in h5.details["keras_classes"]

    class Py(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: object) -> object:
            return tf.py_function(lambda a: a * 2, [x], tf.float32)

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return x * 2

    tf.saved_model.save(Py(), str(tmp_path / "py"))
    tf.saved_model.save(Plain(), str(tmp_path / "plain"))
    py = bundle.scan(tmp_path / "py")
    assert py.format == "saved-model"
    assert py.verdict == "dangerous"
    assert py.dangerous == ("EagerPyFunc",)
    assert bundle.scan(tmp_path / "plain").verdict == "no-code"
    with pytest.raises(bundle.ConversionError, match="directory"):
        bundle.migrate(
            tmp_path / "plain", tmp_path / "o.mbundle", sample_input=np.zeros((1, 4), np.float32)
        )


def test_scan_json_round_trip(tmp_path: Path) -> None:
    report = scan_bytes(pickle.dumps(io.BytesIO))
    d = report.to_dict()
    assert d["verdict"] == "dangerous"
    assert d["globals"] == ["_io.BytesIO"]
    assert d["findings"][0]["danger"]
