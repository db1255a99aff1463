"""The model store: promotions per second, a two-writer race, and a remote 100 MB load.

    python benchmarks/store.py [--promotions 100] [--race 200] [--mb 100] [--runs 5]
                               [--dir DIR] [--json out.json]

Starts moto's S3 server on a free 127.0.0.1 port (tests/store/moto_atomic.py: the
stock server with PutObject's conditional check made atomic, as S3's is) and uses
a local folder beside it.

* promotions/s: ``store.promote`` of one alias, alternating two versions, on the
  folder and on the S3 endpoint (each promotion lists the alias, reads and checks
  the newest record, signs, and creates the next record exclusively);
* race: two processes x ``--race`` promotions of one alias on each backend; the
  log is then verified by a fresh client: 2N records, sequence 0..2N-1, no gaps,
  no duplicates, each record's "previous" the record before it;
* remote load of a ``--mb`` MB bundle from S3: ``bundle.load("s3://...")`` (ranged
  reads in parallel, hashed as they arrive, into an empty cache, then verified)
  against what one does without it -- ``s3fs`` ``get_file`` to a local file, then
  ``bundle.load`` of that file -- and ``store.load`` from a warm cache (a store knows
  the digest, so its cached copy is hashed and used); bytes fetched counted.

Medians of ``--runs``, alternating; the machine may be shared, so ratios from one
run matter more than absolute figures. hashlib's single-core SHA-256 speed is
printed beside the throughput figures.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bundle  # noqa: E402
from bundle.store import backends  # noqa: E402


def sha256_speed() -> float:
    """hashlib SHA-256, one core, MB/s."""
    data = os.urandom(64 << 20)
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t) / 1e6


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = open(log, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/store/moto_atomic.py"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


def s3_options(url: str) -> dict[str, Any]:
    return {
        "key": "bench",
        "secret": "bench",
        "use_listings_cache": False,
        "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"},
    }


def new_bucket(url: str) -> str:
    import boto3

    name = f"bench{uuid.uuid4().hex[:16]}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


def tiny(path: Path, key: bundle.PrivateKey, version: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import save_tiny

    return save_tiny(path, key, seed=int(version), version=version)


def big(path: Path, key: bundle.PrivateKey, mb: int) -> Path:
    """An ONNX MatMul whose one float32 weight is ``mb`` MB, saved as a signed bundle."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = int((mb * 1e6 / 4) ** 0.5)
    w = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx_path = path.with_suffix(".onnx")
    onnx.save(model, onnx_path)
    bundle.save(str(onnx_path), path, signing_key=key, name="big", version="1")
    onnx_path.unlink()
    return path


def promotions(store: bundle.Store, key: bundle.PrivateKey, n: int) -> float:
    store.promote("tiny", "bench", "1", signing_key=key)  # warm: targets verified once
    t = time.perf_counter()
    for i in range(n):
        store.promote("tiny", "bench", "2" if i % 2 == 0 else "1", signing_key=key)
    return n / (time.perf_counter() - t)


def race(
    url: str,
    options: dict[str, Any] | None,
    key_path: Path,
    n: int,
    work: Path,
    trust: bundle.TrustPolicy,
) -> dict[str, Any]:
    start = work / f"go-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/store/racer.py"),
                url,
                json.dumps(options or {}),
                str(key_path),
                w,
                str(n),
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for w in ("a", "b")
    ]
    time.sleep(1.0)
    t = time.perf_counter()
    start.touch()
    won = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode:
            raise SystemExit(err.decode()[-3000:])
        won.append(json.loads(out))
    seconds = time.perf_counter() - t
    fresh = bundle.Store(
        url, storage_options=options, trust=trust, cache_dir=work / f"verify-{uuid.uuid4().hex[:6]}"
    )
    hist = fresh.history("tiny", "production")
    seqs = [r.seq for r in hist]
    chained = all(
        b.previous == a.target and b.previous_record == a.record_sha256
        for a, b in itertools.pairwise(hist)
    )
    return {
        "records": len(hist),
        "seq_ok": seqs == list(range(2 * n)),
        "no_duplicates": sorted(won[0] + won[1]) == list(range(2 * n)),
        "chained": chained,
        "won_a": len(won[0]),
        "won_b": len(won[1]),
        "seconds": seconds,
        "promotions_per_s": 2 * n / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promotions", type=int, default=100)
    ap.add_argument("--race", type=int, default=200)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="store-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    proc, endpoint = start_moto(work / "moto.log")
    results: dict[str, Any] = {
        "sha256_single_core_MBps": sha256_speed(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    try:
        key = bundle.generate_key()
        key_path = work / "key.pem"
        key_path.write_bytes(key.private_pem())
        trust = bundle.TrustPolicy(keys=key.public_key)
        v = {ver: tiny(work / f"tiny-{ver}.mbundle", key, ver) for ver in ("1", "2")}
        places = {
            "folder": (str(work / f"store-{uuid.uuid4().hex[:6]}"), None),
            "s3": (f"s3://{new_bucket(endpoint)}/models", s3_options(endpoint)),
        }
        for where, (url, options) in places.items():
            store = bundle.Store(
                url, storage_options=options, trust=trust, cache_dir=work / f"cache-{where}"
            )
            for p in v.values():
                store.push(p)
            results[f"promotions_per_s_{where}"] = promotions(store, key, args.promotions)
            print(
                f"{where}: {results[f'promotions_per_s_{where}']:.1f} promotions/s "
                f"(one writer, {args.promotions})",
                flush=True,
            )
            r = race(url, options, key_path, args.race, work, trust)
            results[f"race_{where}"] = r
            print(f"{where}: race 2 x {args.race}: {r}", flush=True)

        # ---- remote load of a large bundle
        path = big(work / "big.mbundle", key, args.mb)
        size = path.stat().st_size
        bucket = new_bucket(endpoint)
        import s3fs

        fs = s3fs.S3FileSystem(**s3_options(endpoint))
        fs.put_file(str(path), f"{bucket}/big.mbundle")
        url = f"s3://{bucket}/big.mbundle"
        fetched = [0]
        real = backends.Backend.read_range

        def counting(self: Any, k: str, a: int, b: int) -> bytes:
            data = real(self, k, a, b)
            fetched[0] += len(data)
            return data

        backends.Backend.read_range = counting  # type: ignore[method-assign]
        big_store = bundle.Store(
            f"s3://{bucket}/store",
            storage_options=s3_options(endpoint),
            trust=trust,
            cache_dir=work / "bigstore-cache",
        )
        big_store.push(path)
        times: dict[str, list[float]] = {
            "bundle.load(s3://) cold cache": [],
            "s3fs get_file + bundle.load": [],
            "store.load(name:version) warm cache": [],
        }
        fetched_cold = []
        for i in range(args.runs):
            cache = work / f"bigcache-{i}"
            fetched[0] = 0
            t = time.perf_counter()
            m = bundle.load(url, trust=trust, storage_options=s3_options(endpoint), cache_dir=cache)
            times["bundle.load(s3://) cold cache"].append(time.perf_counter() - t)
            fetched_cold.append(fetched[0])
            del m
            local = work / f"dl-{i}.mbundle"
            t = time.perf_counter()
            fs.get_file(f"{bucket}/big.mbundle", str(local))
            m = bundle.load(local, trust=trust)
            times["s3fs get_file + bundle.load"].append(time.perf_counter() - t)
            del m
            t = time.perf_counter()  # the digest is known: the cached copy is hashed, used
            m = big_store.load("big:1")
            times["store.load(name:version) warm cache"].append(time.perf_counter() - t)
            del m
            local.unlink()
            shutil.rmtree(cache)
        backends.Backend.read_range = real  # type: ignore[method-assign]
        base = statistics.median(times["s3fs get_file + bundle.load"])
        print(f"\nremote load of a {size / 1e6:.0f} MB bundle (median of {args.runs}):")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:34} {med:6.2f} s  {size / med / 1e6:6.0f} MB/s  {med / base:4.2f}x")
        print(
            f"  bytes fetched by a cold load: {statistics.median(fetched_cold) / size:.3f}x "
            "the bundle"
        )
        results["remote_load"] = {
            "bundle_bytes": size,
            "fetched_ratio_cold": statistics.median(fetched_cold) / size,
            **{k: statistics.median(ts) for k, ts in times.items()},
        }
        print(
            f"hashlib SHA-256, one core: {results['sha256_single_core_MBps']:.0f} MB/s; "
            f"{results['cpu_count']} CPUs, load average {results['load_average']}"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
