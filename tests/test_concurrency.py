"""Concurrency: one bundle loaded from 8 threads, from several processes, during re-signing.

Every reader opens the bundle once by descriptor and holds no shared mutable
state, so simultaneous loads must all verify and predict the same numbers; a
bundle replaced by an atomic rename while readers run (``bundle.sign``) must
never be seen half-written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import save_tiny, tiny_model
from onnx import numpy_helper

import bundle

X = np.array(
    [[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 1.5, -0.5]], dtype=np.float32
)
THREADS = 8
PROCESSES = 4


def _expected() -> np.ndarray:
    inits = {i.name: numpy_helper.to_array(i) for i in tiny_model(0).graph.initializer}
    expected: np.ndarray = np.maximum(X @ inits["W"] + inits["B"], 0)
    return expected


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bundle.PrivateKey]:
    key = bundle.generate_key()
    return save_tiny(tmp_path_factory.mktemp("conc") / "tiny.mbundle", key), key


def _together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released at the same instant; re-raise any failure."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=60)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_load_from_8_threads(signed: tuple[Path, bundle.PrivateKey]) -> None:
    path, key = signed
    want = _expected()

    def work(i: int) -> list[str]:
        # half the threads let onnxruntime read the weights from the file (zero copy)
        m = bundle.load(path, trusted_keys=key.public_key, device="cpu", zero_copy=bool(i % 2))
        for _ in range(20):
            np.testing.assert_allclose(m.predict(X), want, rtol=1e-6, atol=1e-6)
        assert bundle.verify(path, trusted_keys=key.public_key).verified
        return m.signers

    assert _together(THREADS, work) == [[key.key_id]] * THREADS


def test_one_model_predicts_from_8_threads(signed: tuple[Path, bundle.PrivateKey]) -> None:
    path, key = signed
    m = bundle.load(path, trusted_keys=key.public_key, device="cpu")
    want = _expected()
    w, b = _weights()
    outs = _together(THREADS, lambda i: [m.predict(X * (i + 1)) for _ in range(50)])
    for i, results in enumerate(outs):  # each thread got the answer to its own input
        for r in results:
            np.testing.assert_allclose(
                r, np.maximum((X * (i + 1)) @ w + b, 0), rtol=1e-5, atol=1e-5
            )
    np.testing.assert_allclose(m.predict(X), want, rtol=1e-6, atol=1e-6)


def _weights() -> tuple[np.ndarray, np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in tiny_model(0).graph.initializer}
    return inits["W"], inits["B"]


WORKER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import bundle
    path, pub, go = sys.argv[1], sys.argv[2], sys.argv[3]
    import onnxruntime  # imported before the start line, so the loads overlap
    deadline = time.time() + 60
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.001)
    x = np.array(json.loads(sys.argv[4]), dtype=np.float32)
    results = []
    for i in range(5):
        m = bundle.load(path, trusted_keys=pub, device="cpu", zero_copy=bool(i % 2))
        results.append(m.predict(x).tolist())
    print(json.dumps({"signers": m.signers, "results": results}))
""")


def test_load_from_several_processes(
    signed: tuple[Path, bundle.PrivateKey], tmp_path: Path
) -> None:
    path, key = signed
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public_key.pem())
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(pub), str(go), json.dumps(X.tolist())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    time.sleep(0.5)
    go.touch()
    # this process loads too, while the others do
    for _ in range(5):
        bundle.load(path, trusted_keys=key.public_key, device="cpu")
    want = _expected()
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        doc = json.loads(out.strip().splitlines()[-1])
        assert doc["signers"] == [key.key_id]
        for r in doc["results"]:
            np.testing.assert_allclose(np.array(r), want, rtol=1e-6, atol=1e-6)


def test_readers_while_the_bundle_is_resigned(
    signed: tuple[Path, bundle.PrivateKey], tmp_path: Path
) -> None:
    """bundle.sign replaces the file by rename over and over; readers never see it torn."""
    src, key = signed
    path = tmp_path / "live.mbundle"
    path.write_bytes(src.read_bytes())
    key2 = bundle.generate_key("ed25519")
    stop = threading.Event()
    signed_count = [0]

    def resign() -> None:
        while not stop.is_set():
            bundle.sign(path, key2)
            signed_count[0] += 1

    want = _expected()

    def read(_: int) -> int:
        n = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = bundle.load(path, trusted_keys=key.public_key, device="cpu")
            np.testing.assert_allclose(m.predict(X), want, rtol=1e-6, atol=1e-6)
            n += 1
        return n

    writer = threading.Thread(target=resign)
    writer.start()
    try:
        loads = _together(4, read)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert signed_count[0] >= 3, "the file was hardly replaced while readers ran"
    assert sum(loads) >= 8
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    assert len(bundle.verify(path, trusted_keys=trust).signers) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mbundle"]
