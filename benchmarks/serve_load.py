"""Hot swap under load: what a verified swap costs the clients of `model-bundle serve`.

8 client threads post v2 inference requests for 60 s (loopback only) while the served
bundle file changes 20 times, 5 of them to versions that must never answer (tampered,
unsigned, signed by an untrusted key, a graph onnxruntime cannot load, a graph that
fails its smoke run). Reported:

- non-2xx responses (target 0) and responses naming a bad version's digest (target 0);
- p50/p99 latency of requests that started in steady state vs during a swap (from
  the file being replaced until 0.5 s after the new version went live or was
  refused; target p99 during <= 2x steady);
- peak RSS of the server during swaps vs the old + new weights (the old version is
  kept as the probation standby, so old + new is the expected peak);
- requests/s of the bundle server vs a minimal raw-onnxruntime Starlette endpoint on
  the same graph and weights, same uvicorn, same onnxruntime threads, same clients
  (target >= 0.9x), each measured without swaps for 15 s; and vs MLServer when it is
  installed (skipped otherwise: it is not a dependency of this project).

Both servers run in their own subprocess on 127.0.0.1; single-core hashlib SHA-256
speed is printed beside the figures (verification hashes every byte at each swap).

    python benchmarks/serve_load.py [--seconds 60] [--swaps 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle  # noqa: E402
from bundle.serve.sources import file_digest  # noqa: E402

D_IN, D_HID = 256, 8192  # two fp32 layers: 256x8192 + 8192x256 = 16 MiB of weights


def graph(seed: int, *, bad_shape: bool = False, reshape_to: int | None = None) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((D_IN + bad_shape, D_HID)) / 16).astype(np.float32)
    w2 = (rng.standard_normal((D_HID, D_IN)) / 90).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["H"]),
        helper.make_node("Relu", ["H"], ["R"]),
        helper.make_node("MatMul", ["R", "W2"], ["Z" if reshape_to else "Y"]),
    ]
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")]
    out: list[Any] = ["N", D_IN]
    if reshape_to:
        nodes.append(helper.make_node("Reshape", ["Z", "S"], ["Y"]))
        inits.append(numpy_helper.from_array(np.array([reshape_to], np.int64), "S"))
        out = [reshape_to]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", D_IN])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, out)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


RAW_APP = """
import json, sys, numpy as np, onnxruntime as ort, uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route
sys.path.insert(0, {root!r})
from bundle.serve.threads import session_options
sess = ort.InferenceSession({onnx!r}, session_options(), providers=["CPUExecutionProvider"])
def work(raw):
    t = json.loads(raw)["inputs"][0]
    x = np.asarray(t["data"], np.float32).reshape(t["shape"])
    y = sess.run(None, {{"X": x}})[0]
    return json.dumps({{"outputs": [{{"name": "Y", "datatype": "FP32", "shape": list(y.shape),
                        "data": y.ravel().tolist()}}]}}).encode()
async def infer(request):
    return Response(await run_in_threadpool(work, await request.body()),
                    media_type="application/json")
app = Starlette(routes=[Route("/v2/models/mlp/infer", infer, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def wait_up(url: str, proc: subprocess.Popen[bytes], path: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"server exited: {proc.stderr.read().decode()[-2000:]}"
                if proc.stderr
                else "server exited"
            )
        try:
            if httpx.get(url + path, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not start")


class Load:
    """``clients`` threads posting one request each after the other until stopped."""

    def __init__(self, url: str, clients: int, body: bytes) -> None:
        self.url, self.clients, self.body = url, clients, body
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int, str]] = []  # start, seconds, code, digest
        self.lock = threading.Lock()

    def run(self, seconds: float) -> None:
        threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in threads:
            t.join(60)

    def _client(self) -> None:
        import httpx

        with httpx.Client(timeout=30, headers={"Content-Type": "application/json"}) as c:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post(self.url, content=self.body)
                    code, digest = r.status_code, r.headers.get("x-model-digest", "")
                except httpx.HTTPError:
                    code, digest = 599, ""
                with self.lock:
                    self.samples.append((t0, time.monotonic() - t0, code, digest))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def rss_sampler(pid: int, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    import psutil

    p = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append((time.monotonic(), p.memory_info().rss))
        except psutil.Error:
            return
        time.sleep(0.01)


def sha256_speed() -> float:
    data = os.urandom(64 << 20)
    t0 = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--throughput-seconds", type=float, default=15)
    args = ap.parse_args()
    import httpx

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    key, other = bundle.generate_key(), bundle.generate_key()
    pub = work / "trusted.pub"
    pub.write_bytes(key.public_key.pem())
    good = []
    for seed in range(1, 5):
        p = work / f"good{seed}.mbundle"
        bundle.save(graph(seed), p, signing_key=key, name="mlp", version=str(seed))
        good.append(p)
    bad = {}
    for kind, g, k in (
        ("unsigned", graph(7), None),
        ("untrusted", graph(8), other),
        ("unloadable", graph(9, bad_shape=True), key),
        ("smoke", graph(10, reshape_to=5), key),
    ):
        bad[kind] = work / f"{kind}.mbundle"
        bundle.save(g, bad[kind], signing_key=k, name="mlp", version="99")
    bad["tampered"] = work / "tampered.mbundle"
    shutil.copy(good[3], bad["tampered"])
    with open(bad["tampered"], "r+b") as f:
        f.seek(-4096, os.SEEK_END)  # inside the weights or the signature: must not verify
        f.write(b"\x00" * 16)
    bad_digests = {file_digest(p) for p in bad.values()}
    weights = bundle.inspect(good[0]).manifest.file("weights").size
    onnx_path = work / "raw.onnx"
    import onnx

    onnx.save(graph(1), str(onnx_path))

    served = work / "served.mbundle"
    install(good[0], served)
    x = np.random.default_rng(0).standard_normal((1, D_IN)).astype(np.float32)
    body = json.dumps(
        {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": [1, D_IN], "data": x.ravel().tolist()}
            ]
        }
    ).encode()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # ---- the bundle server, with swaps
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bundle",
            "serve",
            str(served),
            "--trusted-key",
            str(pub),
            "--port",
            str(port),
            "--poll-interval",
            "0.2",
            "--probation-window",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, server, "/v2/health/ready")
        for _ in range(20):  # warm up
            httpx.post(url + "/v2/models/mlp/infer", content=body)
        plan: list[Path] = []
        bad_order = ["tampered", "unsigned", "untrusted", "unloadable", "smoke"]
        g = 1
        for i in range(args.swaps):
            if i % 4 == 1 and bad_order:
                plan.append(bad[bad_order.pop(0)])
            else:
                plan.append(good[g % len(good)])
                g += 1
        load = Load(url + "/v2/models/mlp/infer", args.clients, body)
        rss: list[tuple[float, int]] = []
        stop_rss = threading.Event()
        sampler = threading.Thread(target=rss_sampler, args=(server.pid, stop_rss, rss))
        sampler.start()
        windows: list[tuple[float, float]] = []

        def swapper() -> None:
            interval = args.seconds / (args.swaps + 1)
            with httpx.Client(base_url=url, timeout=30) as c:
                for path in plan:
                    time.sleep(interval)
                    digest = file_digest(path)
                    t0 = time.monotonic()
                    install(path, served)
                    deadline = t0 + 30
                    while time.monotonic() < deadline:
                        ev = c.get("/v2/models/mlp/status").json()["events"]
                        if any(
                            e.get("digest") == digest
                            and e["event"] in ("live", "refused")
                            and e["time"] >= time.time() - 30
                            for e in ev
                        ):
                            break
                        time.sleep(0.02)
                    windows.append((t0, time.monotonic() + 0.5))

        swap_thread = threading.Thread(target=swapper)
        time.sleep(0.2)
        swap_thread.start()
        load.run(args.seconds)
        swap_thread.join(120)
        stop_rss.set()
        sampler.join()
        status = httpx.get(url + "/v2/models/mlp/status").json()
        metrics = httpx.get(url + "/metrics").text

        # ---- throughput without swaps vs the raw onnxruntime endpoint, in alternating
        # rounds so that a shared machine's drift falls on both alike
        rport = free_port()
        raw = subprocess.Popen(
            [sys.executable, "-c", RAW_APP.format(root=str(ROOT), onnx=str(onnx_path), port=rport)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        rurl = f"http://127.0.0.1:{rport}/v2/models/mlp/infer"
        try:
            wait_up(f"http://127.0.0.1:{rport}", raw, "/")
            for _ in range(20):
                httpx.post(rurl, content=body)
            counts = {"ours": 0, "raw": 0}
            rounds = max(1, round(args.throughput_seconds / 3))
            for _ in range(rounds):
                for side, target in (("ours", url + "/v2/models/mlp/infer"), ("raw", rurl)):
                    chunk = Load(target, args.clients, body)
                    chunk.run(args.throughput_seconds / rounds)
                    counts[side] += sum(1 for s in chunk.samples if s[2] == 200)
        finally:
            raw.terminate()
            raw.wait(60)
    finally:
        server.terminate()
        server.wait(60)
    ours_rps = counts["ours"] / args.throughput_seconds
    raw_rps = counts["raw"] / args.throughput_seconds

    def in_swap(t: float) -> bool:
        return any(a <= t <= b for a, b in windows)

    samples = load.samples
    non2xx = [s for s in samples if not 200 <= s[2] < 300]
    from_bad = [s for s in samples if s[3] in bad_digests]
    steady = [s[1] for s in samples if not in_swap(s[0])]
    during = [s[1] for s in samples if in_swap(s[0])]
    swap_rss = max((r for t, r in rss if in_swap(t)), default=0)
    first = windows[0][0] if windows else float("inf")
    steady_rss = max((r for t, r in rss if t < first), default=0)
    refused = [e for e in status["events"] if e["event"] == "refused"]
    rollbacks = [e for e in status["events"] if e["event"] == "rolled back"]
    try:
        import mlserver  # noqa: F401

        mlserver_note = "installed, but not wired into this script yet"
    except ImportError:
        mlserver_note = "skipped: MLServer is not installed here (not a project dependency)"

    print(
        f"machine: {len(os.sched_getaffinity(0))} CPUs usable, load average "
        f"{os.getloadavg()[0]:.2f}; hashlib SHA-256 one core: {sha256_speed():.0f} MB/s"
    )
    print(
        f"model: 2-layer MLP, {weights / 2**20:.1f} MiB fp32 weights per version; "
        f"{args.clients} clients, 1-row v2 JSON requests"
    )
    print(
        f"swap run: {args.seconds:.0f} s, {len(plan)} file changes "
        f"({sum(p in bad.values() for p in plan)} bad), {len(samples)} requests"
    )
    print(f"  non-2xx responses:          {len(non2xx)}")
    print(f"  responses from bad version: {len(from_bad)}")
    print(
        f"  refused versions:           {len(refused)} "
        f"({', '.join(sorted({e['stage'] for e in refused}))})"
    )
    print(
        f"  automatic rollbacks:        {len(rollbacks)}"
        + "".join(f"\n    {e['reason']}" for e in rollbacks)
    )
    print(
        f"  latency steady  p50 {pct(steady, 50):.2f} ms  p99 {pct(steady, 99):.2f} ms "
        f"({len(steady)} requests)"
    )
    print(
        f"  latency in swap p50 {pct(during, 50):.2f} ms  p99 {pct(during, 99):.2f} ms "
        f"({len(during)} requests); p99 ratio {pct(during, 99) / pct(steady, 99):.2f}x"
    )
    print(
        f"  server RSS: before swaps {steady_rss / 2**20:.0f} MiB, peak during swaps "
        f"{swap_rss / 2**20:.0f} MiB; old + new weights {2 * weights / 2**20:.0f} MiB; "
        f"growth {(swap_rss - steady_rss) / 2**20:.0f} MiB"
    )
    print(
        f"throughput ({args.throughput_seconds:.0f} s each in alternating rounds, no swaps): "
        "model-bundle serve "
        f"{ours_rps:.0f} req/s, raw onnxruntime Starlette endpoint {raw_rps:.0f} req/s: "
        f"{ours_rps / raw_rps:.2f}x"
    )
    print(f"MLServer: {mlserver_note}")
    swaps_line = [ln for ln in metrics.splitlines() if ln.startswith("bundle_serve_swaps_total")]
    print("metrics:", "; ".join(swaps_line))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
