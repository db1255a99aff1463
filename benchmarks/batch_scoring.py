"""Batch scoring on Dask, Spark and Ray against a plain onnxruntime loop (issue 18).

    python benchmarks/batch_scoring.py                      # 1M pipeline rows, 100k torch rows
    python benchmarks/batch_scoring.py --sklearn-rows 200000 --torch-rows 20000 --engines dask

For each model -- the scikit-learn DataFrame pipeline (scaler + one-hot +
LogisticRegression) and a PyTorch MLP (256 -> 1024 -> 1024 -> 8, ~5 MB) -- and
each engine (local mode, ``--workers`` workers of one CPU each), it prints:

* rows/s per core of the engine's job (wall time of the whole job, verification
  on each worker included, divided by the cores) and its ratio to a plain
  onnxruntime loop over the same rows in this process (the bundle's graph
  unzipped, one intra-op thread, spinning off, 50k-row batches, feeds built from
  the same DataFrame) -- the target is >= 0.9x;
* fetches and verifications of the bundle per worker process (target 1);
* bytes each engine ships to run the job: the task payload with the bundle
  passed by reference against the same job shipping the model by value
  (``joblib``/``torch.save`` bytes in the closure, as ``map_partitions(model.predict)``
  does), and for Dask the whole serialized task graph either way.

hashlib's single-core SHA-256 speed is printed beside the throughput figures:
on this machine everything else competes for the same two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle  # noqa: E402
from bundle.integrations import Scorer, cache_stats, reference  # noqa: E402

BATCH = 50_000


def sha256_rate() -> float:
    buf = os.urandom(64 << 20)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        hashlib.sha256(buf).digest()
        times.append(time.perf_counter() - t)
    return len(buf) / median(times) / 1e6


def frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 80, size=n),
            "income": rng.lognormal(10, 0.5, size=n),
            "visits": rng.integers(0, 30, size=n),
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
        }
    )


def make_models(d: Path, key: Any) -> dict[str, Any]:
    import torch
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = frame(5000, 0)
    y = ((train["age"] - 45) / 15 + (train["city"] == "paris") > 0.3).astype(int)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "visits"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(train, y)
    bundle.save(
        pipe, d / "pipeline.mbundle", sample_input=train.iloc[:50], signing_key=key, name="churn"
    )
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(256, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 8),
    ).eval()
    bundle.save(
        mlp,
        d / "mlp.mbundle",
        sample_input=torch.randn(1, 256),
        signing_key=key,
        name="mlp",
        training_state=False,
    )
    return {"pipeline": pipe, "mlp": mlp}


def by_value_bytes(model: Any) -> int:
    """What shipping the model by value puts in a task: joblib (sklearn), torch.save."""
    buf = io.BytesIO()
    if hasattr(model, "state_dict"):
        import torch

        torch.save(model, buf)
    else:
        import joblib

        joblib.dump(model, buf)
    return len(buf.getvalue())


def ort_baseline(path: Path, data: Any, tensor: bool, d: Path) -> float:
    """Rows/s of a plain onnxruntime loop (one thread, spinning off) on the bundle's graph."""
    import onnxruntime as ort

    into = d / f"unzipped-{path.stem}"
    into.mkdir(exist_ok=True)
    with zipfile.ZipFile(path) as z:
        for name in ("model.onnx", "weights.safetensors"):
            z.extract(name, into)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    import onnx

    graph = onnx.load(str(into / "model.onnx"))  # external data read in from the weights
    sess = ort.InferenceSession(graph.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name0 = sess.get_inputs()[0].name
    n = len(data)

    def feeds(lo: int, hi: int) -> dict[str, Any]:
        if tensor:
            return {name0: data[lo:hi]}
        part = data.iloc[lo:hi]
        out = {}
        for i in sess.get_inputs():
            col = part[i.name].to_numpy()
            if i.type == "tensor(string)":
                col = col.astype(str).astype(object)
            elif i.type == "tensor(float)":
                col = col.astype(np.float32)
            elif i.type == "tensor(int64)":
                col = col.astype(np.int64)
            out[i.name] = col.reshape(-1, 1)
        return out

    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for lo in range(0, n, BATCH):
            sess.run(None, feeds(lo, min(n, lo + BATCH)))
        runs.append(time.perf_counter() - t)
    return n / median(runs)


# ----------------------------------------------------------------------------- engines


def run_dask(scorer: Scorer, data: Any, workers: int, model: Any) -> dict[str, Any]:
    import cloudpickle
    import dask
    import dask.dataframe as dd
    import distributed

    from bundle.integrations import dask as bdask

    dask.config.set({"dataframe.convert-string": False})  # keep array cells as objects
    parts = workers * 4
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        ddf = dd.from_pandas(data, npartitions=parts).persist()  # data on the workers first
        distributed.wait(ddf)
        walls = []
        for _ in range(2):  # cold (plugin verifies on each worker), then warm
            t = time.perf_counter()
            scored = bdask.score(ddf, scorer)
            n = scored.map_partitions(len).compute().sum()
            walls.append(time.perf_counter() - t)
        stats = list(client.run(cache_stats).values())
        ours = len(cloudpickle.dumps(dict(scored.__dask_graph__())))

        def predict(pdf: Any, m: Any) -> Any:
            return pdf.assign(label=0)

        by_value = ddf.map_partitions(predict, model, meta=ddf._meta.assign(label=0))
        theirs = len(cloudpickle.dumps(dict(by_value.__dask_graph__())))
    return {"rows": int(n), "walls": walls, "stats": stats, "graph": (ours, theirs)}


def run_spark(scorer: Scorer, data: Any, workers: int, model: Any) -> dict[str, Any]:
    from pyspark import cloudpickle as spark_pickle
    from pyspark.sql import SparkSession, types

    from bundle.integrations import spark as bspark
    from bundle.integrations.worker import manifest_for

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{workers}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        sdf = spark.createDataFrame(data).repartition(workers * 4).cache()
        sdf.count()

        class Probe(bspark.PartitionScorer):
            def __call__(self, batches: Any) -> Any:
                for out in super().__call__(batches):
                    s = cache_stats()
                    yield out.assign(worker=f"{s['pid']}:{s['fetches']}:{s['verifications']}")

        probe = Probe(scorer, manifest_for(scorer.ref))
        schema = bspark.score(sdf, scorer).schema
        schema = types.StructType([*schema.fields, types.StructField("worker", types.StringType())])
        walls = []
        for _ in range(2):  # cold (Python workers start, verify), then warm (reused workers)
            t = time.perf_counter()
            workers_seen = sdf.mapInPandas(probe, schema).select("worker").distinct().collect()
            walls.append(time.perf_counter() - t)
        seen: dict[str, tuple[int, int]] = {}
        for row in workers_seen:
            pid, f, v = row["worker"].split(":")
            seen[pid] = max(seen.get(pid, (0, 0)), (int(f), int(v)))
        stats = [{"pid": p, "fetches": f, "verifications": v} for p, (f, v) in seen.items()]
        ours = len(spark_pickle.dumps(probe))
        theirs = len(spark_pickle.dumps(lambda it, m=model: it))
    finally:
        spark.stop()
    return {"rows": len(data), "walls": walls, "stats": stats, "graph": (ours, theirs)}


def run_ray(scorer: Scorer, data: Any, workers: int, model: Any, tensor: bool) -> dict[str, Any]:
    import ray

    from bundle.integrations import ray as bray

    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False

        class Probe(bray.BundlePredictor):
            def __call__(self, batch: Any) -> Any:
                out = super().__call__(batch)
                s = cache_stats()
                rows = len(out) if hasattr(out, "columns") else len(next(iter(out.values())))
                out["worker"] = np.full(
                    rows, f"{s['pid']}:{s['fetches']}:{s['verifications']}", dtype=object
                )
                return out

        n = len(data)
        step = -(-n // (workers * 4))
        if tensor:
            ds = ray.data.from_numpy([data[i : i + step] for i in range(0, n, step)])
            fmt = "numpy"
        else:
            ds = ray.data.from_pandas([data.iloc[i : i + step] for i in range(0, n, step)])
            fmt = "pandas"
        ds = ds.materialize()
        walls = []
        for _ in range(2):  # each run starts a new actor pool: both verify once per actor
            t = time.perf_counter()
            out = ds.map_batches(
                Probe,
                fn_constructor_args=(scorer,),
                batch_size=BATCH,
                batch_format=fmt,
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
            )
            workers_col = [r["worker"] for r in out.select_columns(["worker"]).take_all()]
            walls.append(time.perf_counter() - t)
        seen: dict[str, tuple[int, int]] = {}
        for w in workers_col:
            pid, f, v = w.split(":")
            seen[pid] = max(seen.get(pid, (0, 0)), (int(f), int(v)))
        stats = [{"pid": p, "fetches": f, "verifications": v} for p, (f, v) in seen.items()]
        ours = len(ray.cloudpickle.dumps((Probe, (scorer,))))
        theirs = len(ray.cloudpickle.dumps((Probe, (model,))))
    finally:
        ray.shutdown()
    return {"rows": len(workers_col), "walls": walls, "stats": stats, "graph": (ours, theirs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sklearn-rows", type=int, default=1_000_000)
    ap.add_argument("--torch-rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="dask,spark,ray")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    engines = [e for e in args.engines.split(",") if e]
    print(
        f"machine: {os.cpu_count()} CPUs (shared), hashlib SHA-256 single core "
        f"{sha256_rate():.0f} MB/s; {args.workers} workers x 1 CPU per engine"
    )
    d = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        key = bundle.generate_key()
        originals = make_models(d, key)
        cases = [
            ("pipeline", d / "pipeline.mbundle", frame(args.sklearn_rows, 1), False),
            (
                "mlp",
                d / "mlp.mbundle",
                np.random.default_rng(3).standard_normal((args.torch_rows, 256)).astype(np.float32),
                True,
            ),
        ]
        rows_out = []
        for name, path, data, tensor in cases:
            model_bytes = by_value_bytes(originals[name])
            base = ort_baseline(path, data, tensor, d)
            ref = reference(path, trusted_keys=key.public_key)
            print(
                f"\n{name}: {len(data):,} rows; bundle {path.stat().st_size:,} B, by value "
                f"{model_bytes:,} B; plain onnxruntime loop {base:,.0f} rows/s (1 core)"
            )
            for engine in engines:
                # A fresh digest per engine run is not needed: each engine starts new workers.
                scorer = Scorer.create(ref, features=["data"] if tensor else None)
                try:
                    if engine == "dask":
                        r = run_dask(
                            scorer,
                            data if not tensor else _tensor_frame(data),
                            args.workers,
                            originals[name],
                        )
                    elif engine == "spark":
                        r = run_spark(
                            scorer,
                            data if not tensor else _tensor_frame(data),
                            args.workers,
                            originals[name],
                        )
                    else:
                        r = run_ray(scorer, data, args.workers, originals[name], tensor)
                except Exception as e:  # report and go on with the other engines
                    print(f"  {engine}: failed: {type(e).__name__}: {str(e)[:300]}")
                    continue
                cold, warm = (r["rows"] / w / args.workers for w in r["walls"])
                verif = sorted((s["fetches"], s["verifications"]) for s in r["stats"])
                ours, theirs = r["graph"]
                print(
                    f"  {engine:5s} rows/s/core: first job {cold:,.0f} ({cold / base:.2f}x "
                    f"plain ORT, wall {r['walls'][0]:.1f} s), second job {warm:,.0f} "
                    f"({warm / base:.2f}x, wall {r['walls'][1]:.1f} s); (fetches, "
                    f"verifications) per worker {verif}; shipped {ours:,} B by reference "
                    f"vs {theirs:,} B by value",
                    flush=True,
                )
                rows_out.append((name, engine, warm / base))
        print(
            "\ntargets: rows/s per core (second job) >= 0.9x plain onnxruntime; "
            "1 verification per worker"
        )
        for name, engine, ratio in rows_out:
            print(f"  {name:8s} {engine:5s} {ratio:.2f}x {'PASS' if ratio >= 0.9 else 'MISS'}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tensor_frame(x: np.ndarray) -> Any:
    """The MLP's rows as a DataFrame with one array column (Dask/Spark rows)."""
    import pandas as pd

    cells = np.empty(len(x), dtype=object)
    for i in range(len(x)):
        cells[i] = x[i]
    return pd.DataFrame({"data": cells})


if __name__ == "__main__":
    main()
