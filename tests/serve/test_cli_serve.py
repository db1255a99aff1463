"""``model-bundle serve`` as users run it: a subprocess on 127.0.0.1, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import spin_model
from serve_helpers import Bundles, free_port

import bundle

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "bundle", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.mark.slow
def test_sigterm_lets_the_running_request_finish(tmp_path: Path) -> None:
    path = tmp_path / "spin.mbundle"
    bundle.save(spin_model(), path, name="spin")
    port = free_port()
    proc = start(str(path), "--allow-unsigned", "--port", str(port), "--threads", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{url}/v2/models/spin/infer",
                    timeout=60,
                    json={
                        "inputs": [
                            {"name": "N", "datatype": "INT64", "shape": [1], "data": [500_000]}
                        ]
                    },
                )
            )
        )
        slow.start()
        deadline = time.monotonic() + 30
        while 'bundle_serve_in_flight{model="spin"} 1.0' not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        slow.join(60)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answers[0].status_code == 200
    assert answers[0].json()["outputs"][0]["data"] == [500_000.0]


def test_a_model_that_does_not_verify_stops_the_server_with_its_exit_code(bundles: Bundles) -> None:
    pub = bundles.root / "trusted.pub"
    pub.write_bytes(bundles.key.public_key.pem())
    proc = start(str(bundles.untrusted), "--trusted-key", str(pub), "--port", str(free_port()))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err.decode()  # SignatureError's exit code
    assert "error: model tiny: SignatureError: bundle is signed by 0 trusted key(s)" in err.decode()


def test_usage_errors_exit_2() -> None:
    for args in ((), ("--model", "tiny@prod"), ("x.mbundle", "--probation-window", "-1")):
        proc = start(*args)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, err.decode())


def test_serve_follows_a_store_alias(bundles: Bundles, tmp_path: Path) -> None:
    """`serve --store URL --model name@alias`: the alias's verified target answers."""
    store = bundle.Store(tmp_path / "store", trust=bundles.trust, cache_dir=tmp_path / "cache")
    store.push(bundles.good[2])
    store.promote("tiny", "prod", "2", signing_key=bundles.key)
    pub = tmp_path / "trusted.pub"
    pub.write_bytes(bundles.key.public_key.pem())
    port = free_port()
    proc = start(
        "--store", str(tmp_path / "store"), "--model", "tiny@prod", "--trusted-key", str(pub),
        "--port", str(port), "--threads", "1", "--probation-window", "0",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        r = httpx.post(
            f"{url}/v2/models/tiny/infer",
            timeout=30,
            json={
                "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-model-version"] == "2"
        assert r.headers["x-model-digest"] == store.resolve("tiny@prod").digest
    finally:
        proc.kill()
        proc.wait()
