"""Fixtures for the server tests: signed bundles (good and bad) and a real uvicorn server.

The server is uvicorn itself, in this process on a thread, listening on a free port
of 127.0.0.1; clients talk HTTP to it (httpx), as they would in production.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bundle

pytest.importorskip("starlette", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("httpx", reason="httpx (test extra) is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Running:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread; ``url`` to reach it."""

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def model_graph(seed: int = 0, *, reshape_to: int | None = None, bad_shape: bool = False) -> Any:
    """X[N,4] @ W[4,3] + B -> Relu. ``reshape_to``: Y is reshaped to that many values
    (fails at run time for most inputs); ``bad_shape``: W is [5,3], which onnxruntime
    refuses when it builds the session."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5 if bad_shape else 4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["XW"]),
        helper.make_node("Add", ["XW", "B"], ["Z"]),
        helper.make_node("Relu", ["Z"], ["R" if reshape_to else "Y"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    out_shape: list[Any] = ["N", 3]
    if reshape_to:
        nodes.append(helper.make_node("Reshape", ["R", "S"], ["Y"]))
        inits.append(numpy_helper.from_array(np.array([reshape_to], np.int64), "S"))
        out_shape = [reshape_to]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def expected(seed: int, x: np.ndarray) -> np.ndarray:
    """What version ``seed`` answers for ``x`` (computed here, with numpy)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    out: np.ndarray = np.maximum(x.astype(np.float32) @ w + b, 0)
    return out


class Bundles:
    """Signed versions of the tiny model and every kind of bad one, made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = bundle.generate_key()
        self.other = bundle.generate_key()
        self.trust = bundle.TrustPolicy(keys=self.key.public_key)
        self.good = {}
        for seed in range(1, 4):
            self.good[seed] = self.save(f"good{seed}", model_graph(seed), version=str(seed))
        self.unsigned = self.save("unsigned", model_graph(7), key=None, version="7")
        self.untrusted = self.save("untrusted", model_graph(8), key=self.other, version="8")
        self.unloadable = self.unloadable_bundle()
        self.smoke_fails = self.save("smoke", model_graph(10, reshape_to=5), version="10")
        self.tampered = root / "tampered.mbundle"
        shutil.copy(self.good[3], self.tampered)
        from bundle.format.archive import ZipReader

        with ZipReader(self.tampered) as r:
            offset = r.entries["weights.safetensors"].data_offset
            size = r.entries["weights.safetensors"].size
        with open(self.tampered, "r+b") as f:
            f.seek(offset + size - 4)
            f.write(b"\x00\x00\x80\x7f")  # the last weight becomes +inf

    def save(self, stem: str, graph: Any, *, key: Any = "default", version: str = "1") -> Path:
        path = self.root / f"{stem}.mbundle"
        bundle.save(
            graph,
            path,
            signing_key=self.key if key == "default" else key,
            name="tiny",
            version=version,
        )
        return path

    def unloadable_bundle(self) -> Path:
        """A signed bundle whose graph onnxruntime refuses when it builds the session
        (MatMul of W[4,3] by itself). save() never writes one -- it loads what it
        writes -- so the graph entry is swapped and the bundle signed again by hand."""
        import onnx
        from helpers import build_signed, manifest_of, read_entries

        good = self.save("unloadable-base", model_graph(9), version="9")
        entries = read_entries(good)
        graph = onnx.load_from_string(entries["model.onnx"])
        graph.graph.node[0].input[0] = "W"
        contents = {
            n: d
            for n, d in entries.items()
            if n != "manifest.json" and not n.startswith("signatures/")
        }
        contents["model.onnx"] = graph.SerializeToString()
        return build_signed(
            self.root / "unloadable.mbundle", contents, [self.key], base=manifest_of(good)
        )

    def bad(self) -> dict[str, Path]:
        """Each kind of version that must never go live."""
        return {
            "tampered": self.tampered,
            "unsigned": self.unsigned,
            "untrusted": self.untrusted,
            "unloadable": self.unloadable,
            "smoke": self.smoke_fails,
        }


def install(src: Path, dst: Path) -> None:
    """Replace ``dst`` atomically with a copy of ``src`` (what a deploy does)."""
    tmp = dst.with_suffix(".tmp")
    shutil.copy(src, tmp)
    tmp.replace(dst)
