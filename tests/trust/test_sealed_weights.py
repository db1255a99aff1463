"""Verification copies the weights into a sealed memory file (Linux) and hashes them there.

What runs is what was hashed: the copy is private and sealed before hashing; a file
that shrinks or changes while it is copied is refused with the named error; and
without memory files the anonymous-buffer path gives the same predictions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle
from bundle.errors import BundleError, IntegrityError
from bundle.format.archive import ZipReader
from bundle.format.digest import MEMFD_NAME
from bundle.format.weights import WEIGHTS_NAME
from bundle.trust.verify import verify_archive

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="memory files and seals are Linux's"
)

X = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)


def _mlp() -> Any:
    """X[N,64] @ W[64,256] + B -> Relu: 64 KiB of weights, more than is inlined."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Z"]),
            helper.make_node("Relu", ["Z"], ["Y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 256])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sealed") / "mlp.mbundle"
    bundle.save(_mlp(), path, sample_input=None, name="mlp")
    return path


def _maps_name(buf: Any) -> str:
    """The name /proc/self/maps gives the mapping that holds ``buf``."""
    addr = np.frombuffer(buf, dtype=np.uint8).ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= addr < hi:
            return " ".join(line.split()[5:])
    raise AssertionError("not a mapping")


def _verified(path: Path) -> Any:
    return verify_archive(ZipReader(path), None, allow_unsigned=True)


def test_weights_are_a_sealed_memory_file(mlp: Path) -> None:
    vb = _verified(mlp)
    try:
        assert vb.weights is not None
        assert f"/memfd:{MEMFD_NAME}" in _maps_name(vb.weights)
        with ZipReader(mlp) as r:
            assert bytes(vb.weights) == r.read(WEIGHTS_NAME, max_size=1 << 30)
        with pytest.raises(TypeError):
            vb.weights[0] = 0
        with pytest.raises(TypeError):
            memoryview(vb.weights)[0] = 0
    finally:
        vb.reader.close()


def test_fallback_without_memory_files_predicts_the_same(
    mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = bundle.load(mlp, allow_unsigned=True, device="cpu")
    want = sealed.predict(X)
    monkeypatch.delattr(os, "memfd_create")
    vb = _verified(mlp)
    try:
        assert vb.weights is not None
        assert "memfd:" not in _maps_name(vb.weights)  # anonymous memory
    finally:
        vb.reader.close()
    plain = bundle.load(mlp, allow_unsigned=True, device="cpu")
    got = plain.predict(X)
    ref = _mlp()
    from onnx import numpy_helper

    w, b = (numpy_helper.to_array(i) for i in ref.graph.initializer)
    for out in (want, got):
        y = out if isinstance(out, np.ndarray) else next(iter(out.values()))
        np.testing.assert_allclose(y, np.maximum(X @ w + b, 0), rtol=1e-5, atol=1e-5)
    assert np.array_equal(
        want if isinstance(want, np.ndarray) else next(iter(want.values())),
        got if isinstance(got, np.ndarray) else next(iter(got.values())),
    )


def test_a_wrong_weights_byte_is_refused(mlp: Path, tmp_path: Path) -> None:
    data = bytearray(mlp.read_bytes())
    with ZipReader(mlp) as r:
        e = r.entries[WEIGHTS_NAME]
    data[e.data_offset + e.size - 3] ^= 0x10
    bad = tmp_path / "bad.mbundle"
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=WEIGHTS_NAME):
        _verified(bad)
    with pytest.raises(IntegrityError):
        bundle.load(bad, allow_unsigned=True, device="cpu")


def test_a_file_truncated_while_copied_is_refused(
    mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.mbundle"
    victim.write_bytes(mlp.read_bytes())
    with ZipReader(victim) as r:
        cut = r.entries[WEIGHTS_NAME].data_offset + 1000
    real = os.sendfile
    calls: list[int] = []

    def truncating(out: int, fd: int, offset: int | None, count: int) -> int:
        if not calls:
            os.truncate(victim, cut)  # a writer shrinks the file under the copy
        calls.append(count)
        return real(out, fd, offset, count)

    monkeypatch.setattr(os, "sendfile", truncating)
    reader = ZipReader(victim)
    try:
        with pytest.raises(IntegrityError, match="changed while it was being verified"):
            verify_archive(reader, None, allow_unsigned=True)
    finally:
        reader.close()
    assert calls
    with pytest.raises(BundleError):  # read again from the start: the file is cut short
        bundle.load(victim, allow_unsigned=True, device="cpu")
