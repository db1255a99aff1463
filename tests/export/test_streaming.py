"""Streaming export and zero-copy / in-memory load.

Export writes the weights straight from the model (here: from an ONNX file's
external data) into the bundle, never holding a serialized copy of them; load
hands onnxruntime either the very bytes that were hashed (default) or the
bundle file itself (``zero_copy=True``), with the weights never passing through
protobuf. Tests over 2 GB run only with ``MODEL_BUNDLE_LARGE_TESTS=1``.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import count_hashed

import bundle
from bundle.errors import FormatError, IntegrityError
from bundle.format.archive import ZipReader
from bundle.format.weights import WEIGHTS_NAME, split_weights
from bundle.runtime import session as runtime

LARGE = os.environ.get("MODEL_BUNDLE_LARGE_TESTS") == "1"


def _external_mlp(directory: Path, n: int, layers: int, seed: int = 0) -> tuple[Path, list[Any]]:
    """An ONNX MLP (MatMul chain) whose weights live in ``weights.bin`` beside it.

    Written tensor by tensor, so building it never holds all weights in memory.
    """
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    inits, nodes, prev, ws = [], [], "X", []
    with open(directory / "weights.bin", "wb") as f:
        for i in range(layers):
            w = (rng.standard_normal((n, n), dtype=np.float32) / np.sqrt(n)).astype(np.float32)
            t = TensorProto()
            t.name, t.data_type = f"W{i}", TensorProto.FLOAT
            t.dims.extend([n, n])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (
                ("location", "weights.bin"),
                ("offset", str(f.tell())),
                ("length", str(w.nbytes)),
            ):
                e = t.external_data.add()
                e.key, e.value = k, v
            f.write(w.tobytes())
            ws.append(w)
            inits.append(t)
            out = f"H{i}" if i < layers - 1 else "Y"
            nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
            prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = directory / "mlp.onnx"
    onnx.save(model, path)
    return path, ws


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="module")
def mid(
    tmp_path_factory: pytest.TempPathFactory,
    key: bundle.PrivateKey,
) -> tuple[Path, list[Any]]:
    """A signed bundle of a 4 x 512 x 512 float32 MLP (4 MiB of weights)."""
    src, ws = _external_mlp(tmp_path_factory.mktemp("src"), 512, 4)
    out = tmp_path_factory.mktemp("mid") / "mid.mbundle"
    bundle.save(src, out, signing_key=key, name="mid")
    return out, ws


def _forward(ws: list[Any], x: np.ndarray) -> np.ndarray:
    for w in ws:
        x = x @ w
    return x


# --------------------------------------------------------------------------- export


def test_export_holds_no_serialized_copy_of_the_weights(
    tmp_path: Path, key: bundle.PrivateKey
) -> None:
    """~200 MB of weights: peak Python allocations during save stay far below that."""
    src, ws = _external_mlp(tmp_path / "src", 2560, 8)  # 8 x 25 MiB = 200 MiB
    weights = sum(w.nbytes for w in ws)
    del ws
    out = tmp_path / "out" / "big.mbundle"
    out.parent.mkdir()
    tracemalloc.start()
    try:
        bundle.save(src, out, signing_key=key, name="big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert weights > 200_000_000
    assert peak < weights / 8, f"peak {peak / 2**20:.0f} MiB for {weights / 2**20:.0f} MiB"
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.mbundle"]  # no temp copy
    # The bytes are the source's, tensor for tensor.
    with ZipReader(out) as r:
        e = r.entries[WEIGHTS_NAME]
        data = b"".join(r.iter_range(e.data_offset, e.data_offset + e.size))
    from bundle.format.weights import parse_header

    header = parse_header(data, len(data))
    raw = (tmp_path / "src" / "weights.bin").read_bytes()
    for i in range(8):
        t = header.tensors[f"W{i}"]
        part = data[header.data_start + t.begin : header.data_start + t.end]
        assert (
            hashlib.sha256(part).digest()
            == hashlib.sha256(raw[i * 2560 * 2560 * 4 : (i + 1) * 2560 * 2560 * 4]).digest()
        )
    assert bundle.verify(out, trusted_keys=key.public_key).verified


def test_streamed_weights_are_safetensors_library_bytes() -> None:
    """The writer's own layout equals safetensors.numpy.save, so bundles stay byte-stable."""
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import save

    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {
        "é/ü": rng.standard_normal(7).astype(np.float16),
        "a\tb": rng.integers(0, 9, (3, 2)).astype(np.int64),
        "z": np.array(1.5, np.float32),
        "m": rng.integers(0, 2, 5).astype(bool),
        "q": rng.integers(0, 9, 9).astype(np.uint8),
        "k": rng.standard_normal((2, 2)).astype(np.float64),
    }
    g = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    split = split_weights(helper.make_model(g))
    assert b"".join(bytes(c) for c in split.chunks()) == save(arrays)
    assert split.size == len(save(arrays))


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    src, _ = _external_mlp(tmp_path / "src", 256, 2)
    out = tmp_path / "out"
    out.mkdir()
    with open(tmp_path / "src" / "weights.bin", "r+b") as f:
        f.truncate(256 * 256 * 4 + 100)  # the second tensor is cut short
    with pytest.raises(bundle.ConversionError, match="runs past the end"):
        bundle.save(src, out / "x.mbundle", name="x")
    assert list(out.iterdir()) == []


def test_precision_variant_of_an_external_data_model(tmp_path: Path) -> None:
    """The in-memory transforms get the external data read in; the fp32 graph is the
    reference the int8 variant is measured against."""
    src, ws = _external_mlp(tmp_path / "src", 64, 2)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    manifest = bundle.save(src, tmp_path / "q.mbundle", name="q", precision="int8", sample_input=x)
    assert manifest.parity is not None
    assert manifest.parity.passed
    m = bundle.load(tmp_path / "q.mbundle", allow_unsigned=True, device="cpu")
    np.testing.assert_allclose(m.predict(x), _forward(ws, x), atol=0.1)


def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path) -> None:
    import onnx

    src, _ = _external_mlp(tmp_path / "src", 64, 1)
    model = onnx.load(src, load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../elsewhere.bin"
    (tmp_path / "elsewhere.bin").write_bytes(b"\0" * 64 * 64 * 4)
    onnx.save(model, src)
    with pytest.raises((bundle.ConversionError, FormatError)):
        bundle.save(src, tmp_path / "x.mbundle", name="x")


# --------------------------------------------------------------------------- load


def test_default_load_runs_on_the_verified_bytes_zero_copy_on_the_file(
    tmp_path: Path, mid: tuple[Path, list[Any]], key: bundle.PrivateKey
) -> None:
    """After load, a local writer changes the file: the default session is unaffected
    (it runs on the hashed in-memory bytes); a zero-copy session maps the file, and
    weights onnxruntime does not repack at load are read from the mapping ever after."""
    src, ws = mid
    path = tmp_path / "copy.mbundle"
    path.write_bytes(src.read_bytes())
    x = np.random.default_rng(2).standard_normal((2, 512)).astype(np.float32)
    default = bundle.load(path, trusted_keys=key.public_key, device="cpu", prepack=False)
    mapped = bundle.load(
        path, trusted_keys=key.public_key, device="cpu", zero_copy=True, prepack=False
    )
    want = _forward(ws, x)
    np.testing.assert_allclose(default.predict(x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mapped.predict(x), want, rtol=1e-4, atol=1e-4)
    with ZipReader(path) as r:
        e = r.entries[WEIGHTS_NAME]
    with open(path, "r+b") as f:  # every weight byte of the entry, in place
        f.seek(e.data_offset + 4096)
        f.write(b"\x3f" * (e.size - 4096))
    np.testing.assert_allclose(default.predict(x), want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(mapped.predict(x), want, rtol=1e-4, atol=1e-4)


def test_zero_copy_refuses_a_file_changed_while_loading(
    tmp_path: Path,
    mid: tuple[Path, list[Any]],
    key: bundle.PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, ws = mid
    path = tmp_path / "copy.mbundle"
    path.write_bytes(src.read_bytes())
    real = runtime.create_session

    def writer_strikes(*args: Any, **kw: Any) -> Any:
        with open(path, "r+b") as f:  # between the hash and onnxruntime's read
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(last)
        return real(*args, **kw)

    monkeypatch.setattr(runtime, "create_session", writer_strikes)
    with pytest.raises(IntegrityError, match="changed while it was being loaded"):
        bundle.load(path, trusted_keys=key.public_key, device="cpu", zero_copy=True)
    # the default load runs on the bytes it hashed, so the same write does not matter there
    m = bundle.load(path, trusted_keys=key.public_key, device="cpu", prepack=False)
    _, values = m._keepalive
    for i, w in enumerate(ws):
        np.testing.assert_array_equal(values[f"W{i}"].numpy(), w)
    x = np.random.default_rng(4).standard_normal((3, 512)).astype(np.float32)
    np.testing.assert_allclose(m.predict(x), _forward(ws, x), rtol=1e-4, atol=1e-4)


def test_in_memory_load_shares_the_verified_buffer(
    mid: tuple[Path, list[Any]], key: bundle.PrivateKey
) -> None:
    """No copy: the session's initializers are views over the buffer that was hashed.

    With prepacking onnxruntime copies them to repack them, and the buffer is let go
    once the session exists (else the weights would be held twice)."""
    assert (
        bundle.load(mid[0], trusted_keys=key.public_key, device="cpu", prepack=True)._keepalive
        is None
    )
    m = bundle.load(mid[0], trusted_keys=key.public_key, device="cpu", prepack=False)
    buffer, values = m._keepalive
    assert len(values) == 4
    base = np.frombuffer(buffer, np.uint8).ctypes.data
    for v in values.values():
        assert base <= v.data_ptr() < base + len(buffer)


def _prepack(m: Any) -> str:
    """The session's prepacking setting once any background prepacking has finished
    (load answers first with an unprepacked session when the weights are in memory)."""
    assert m.wait_prepacked(120)
    return str(
        m._session.get_session_options().get_session_config_entry("session.disable_prepacking")
    )


@pytest.mark.parametrize("zero_copy", [False, True])
def test_prepacking_follows_size_or_the_caller(
    mid: tuple[Path, list[Any]],
    key: bundle.PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    zero_copy: bool,
) -> None:
    path, ws = mid
    x = np.ones((1, 512), np.float32)

    def load(**kw: Any) -> Any:
        return bundle.load(
            path, trusted_keys=key.public_key, device="cpu", zero_copy=zero_copy, **kw
        )

    assert _prepack(load()) == "0"  # 4 MiB: under PREPACK_MAX_BYTES, prepacked
    assert _prepack(load(prepack=False)) == "1"
    monkeypatch.setattr(runtime, "PREPACK_MAX_BYTES", 1 << 20)
    big = load()
    assert _prepack(big) == "1"  # over the size: not prepacked
    forced = load(prepack=True)
    assert _prepack(forced) == "0"
    np.testing.assert_allclose(big.predict(x), forced.predict(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(big.predict(x), _forward(ws, x), rtol=1e-4, atol=1e-4)


def test_progress_reports_every_hashed_byte(
    mid: tuple[Path, list[Any]], key: bundle.PrivateKey
) -> None:
    seen: list[tuple[int, int]] = []
    bundle.verify(
        mid[0], trusted_keys=key.public_key, progress=lambda n, total: seen.append((n, total))
    )
    manifest = bundle.inspect(mid[0]).manifest
    total = sum(f.size for f in manifest.files)
    assert {t for _, t in seen} == {total}
    assert sum(n for n, _ in seen) == total


def test_sign_hashes_once_and_keeps_the_content(
    tmp_path: Path,
    mid: tuple[Path, list[Any]],
    key: bundle.PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    path = tmp_path / "s.mbundle"
    path.write_bytes(mid[0].read_bytes())
    hashed = count_hashed(monkeypatch)
    k2 = bundle.generate_key()
    report = bundle.sign(path, k2, trusted_keys=key.public_key)
    assert [s.key_id for s in report.signers] == [k2.key_id]
    with ZipReader(path) as r:
        assert sum(hashed) == r.entries[WEIGHTS_NAME].size  # the weights, hashed once
    before, after = ZipReader(mid[0]), ZipReader(path)
    try:
        e0, e1 = before.entries[WEIGHTS_NAME], after.entries[WEIGHTS_NAME]
        assert e0.data_offset == e1.data_offset
        assert b"".join(before.iter_range(0, e0.data_offset + e0.size)) == b"".join(
            after.iter_range(0, e1.data_offset + e1.size)
        )
    finally:
        before.close()
        after.close()
    assert bundle.verify(path, trusted_keys=[key.public_key, k2.public_key], threshold=2).verified


# --------------------------------------------------------------------------- over 2 GB


def _embedding(directory: Path, rows: int, cols: int) -> Path:
    """Gather over one float32 table of rows x cols in external data, row r = r + col/1000."""
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    step = 1 << 16
    with open(directory / "table.bin", "wb") as f:
        for r0 in range(0, rows, step):
            r = np.arange(r0, min(r0 + step, rows), dtype=np.float32)[:, None]
            f.write((r + np.arange(cols, dtype=np.float32)[None, :] / 1000).tobytes())
    t = TensorProto()
    t.name, t.data_type = "table", TensorProto.FLOAT
    t.dims.extend([rows, cols])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "table.bin"), ("offset", "0"), ("length", str(rows * cols * 4))):
        e = t.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", cols])],
        [t],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, directory / "embed.onnx")
    return directory / "embed.onnx"


@pytest.mark.skipif(not LARGE, reason="set MODEL_BUNDLE_LARGE_TESTS=1 (writes 2 x 2.16 GB)")
def test_single_tensor_over_2gb_exports_verifies_and_loads(
    tmp_path: Path, key: bundle.PrivateKey
) -> None:
    rows, cols = 540_000, 1000  # one 2.16 GB tensor: no ONNX protobuf can hold it
    src = _embedding(tmp_path / "src", rows, cols)
    out = tmp_path / "embed.mbundle"
    manifest = bundle.save(src, out, signing_key=key, name="embed")
    (tmp_path / "src" / "table.bin").unlink()  # the bundle is all there is now
    w = manifest.file("weights")
    assert w.size > 2_160_000_000
    assert len(w.shards) == -(-w.size // w.shard_size)
    assert bundle.verify(out, trusted_keys=key.public_key).verified
    ids = np.array([0, 12_345, rows - 1], np.int64)
    want = ids[:, None].astype(np.float32) + np.arange(cols, dtype=np.float32)[None, :] / 1000
    for zero_copy in (False, True):
        m = bundle.load(out, trusted_keys=key.public_key, device="cpu", zero_copy=zero_copy)
        np.testing.assert_array_equal(m.predict(ids), want)
        del m


def test_cli_progress_bar_only_for_large_work_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from bundle.cli import app as cli

    screens: list[io.StringIO] = []

    def console(stderr: bool = False, terminal: bool = True) -> Console:
        screens.append(io.StringIO())
        return Console(file=screens[-1], force_terminal=terminal, width=100)

    monkeypatch.setattr(cli, "make_console", console)
    big = cli.PROGRESS_MIN_BYTES
    with cli.hash_progress() as progress:
        for _ in range(4):
            progress(big // 4, big)
    assert "verifying SHA-256" in screens[-1].getvalue()
    with cli.hash_progress() as progress:
        progress(10, big - 1)  # small: no bar
    assert screens[-1].getvalue() == ""
    monkeypatch.setattr(cli, "make_console", lambda stderr=False: console(stderr, False))
    with cli.hash_progress() as progress:
        progress(big, big)  # not a terminal (a pipe, a log): no bar
    assert screens[-1].getvalue() == ""
