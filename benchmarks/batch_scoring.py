"""Batch scoring on Dask, Spark and Ray against a plain onnxruntime loop (issue 18).

    python benchmarks/batch_scoring.py                      # 1M pipeline rows, 100k torch rows
    python benchmarks/batch_scoring.py --sklearn-rows 200000 --torch-rows 20000 --engines dask

For each model -- the scikit-learn DataFrame pipeline (scaler + one-hot +
LogisticRegression) and a PyTorch MLP (256 -> 1024 -> 1024 -> 8, ~5 MB) -- it prints:

* in process, side by side (round-robin, medians): a plain onnxruntime loop over
  the same rows (the bundle's graph unzipped, one intra-op thread, spinning off,
  50k-row batches, feeds from the same DataFrame with the fewest conversions
  onnxruntime accepts), the same loop on the bundle's own session (same session
  options: what remains is this package's overhead), and ``Scorer.score`` on the
  same batches as pandas (``[N, k]`` outputs as a numpy array per row, and
  ``arrays="arrow"``) and as Arrow tables -- the target is <= 1.1x the plain
  loop's time;
* per engine (local mode, ``--workers`` workers of one CPU each), rows/s per core
  (rows / wall / workers) and the ratio to the plain loop for: the first job
  (engine running, workers verifying the bundle on first use), the warm job (the
  steady state; median of ``--engine-reps``), and the engine's floor -- the same job
  with a no-op function that returns the same columns (zeros) without touching the
  model, run alternately with the warm job -- so what is the engine's data movement
  and what is ours can be told apart; and scoring's cost over the floor
  ((warm - floor) x workers) against the plain loop's time for the same rows;
* fetches and verifications of the bundle per worker process (target 1);
* the driver's memory (RSS sampled every 5 ms during the job, peak minus start;
  psutil) and the bytes shipped per task: the bundle by reference against the
  model shipped by value (``joblib``/``torch.save`` in the closure, run with the
  original framework's ``predict``, as ``map_partitions(model.predict)`` users do);
* with ``--mlflow-path`` (a folder holding mlflow, put after site-packages), or
  mlflow importable: ``mlflow.pyfunc.spark_udf`` on the same pipeline and rows
  against this package's Spark UDF; "n/a" otherwise.

hashlib's single-core SHA-256 speed is printed beside the throughput figures: on
a shared machine everything competes for the same cores.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle  # noqa: E402
from bundle.integrations import Scorer, cache_stats, reference  # noqa: E402
from bundle.integrations.worker import scoring_stats, to_arrow  # noqa: E402

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


def tensor_frame(x: np.ndarray) -> Any:
    """The MLP's rows as a DataFrame with one Arrow list column (no object per row)."""
    import pandas as pd

    return pd.DataFrame({"data": pd.arrays.ArrowExtensionArray(to_arrow(x))})


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


class Peak:
    """This process's peak RSS growth while the block runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grown(self) -> int:
        return self.peak - self.start


def timed(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(wall seconds, driver RSS growth, result) of one job."""
    with Peak() as p:
        t = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t
    return wall, p.grown, out


ENGINE_REPS = 3


def round_robin(
    scoring: Callable[[], Any], floor: Callable[[], Any]
) -> tuple[float, int, Any, float]:
    """The warm scoring job and the engine's no-op floor, alternately ENGINE_REPS
    times: (median wall, peak driver RSS growth, last result, median floor wall)."""
    walls, floors, mem, out = [], [], 0, None
    for _ in range(ENGINE_REPS):
        wall, grown, out = timed(scoring)
        walls.append(wall)
        mem = max(mem, grown)
        floors.append(timed(floor)[0])
    return median(walls), mem, out, median(floors)


# ----------------------------------------------------------------------------- in process


def plain_session(path: Path, d: Path) -> Any:
    """The bundle's graph in a bare onnxruntime session: one thread, spinning off."""
    import onnx
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
    graph = onnx.load(str(into / "model.onnx"))  # external data read in from the weights
    return ort.InferenceSession(graph.SerializeToString(), so, providers=["CPUExecutionProvider"])


def plain_feeds(sess: Any, part: Any, tensor: bool) -> dict[str, Any]:
    """The fewest conversions onnxruntime accepts: a str column as pandas' object
    array, numbers cast to the input's dtype, each reshaped to [N, 1]."""
    if tensor:
        return {sess.get_inputs()[0].name: part}
    out = {}
    for i in sess.get_inputs():
        col = part[i.name].to_numpy()
        if i.type == "tensor(float)":
            col = col.astype(np.float32)
        elif i.type == "tensor(int64)":
            col = col.astype(np.int64)
        out[i.name] = col.reshape(-1, 1)
    return out


def in_process(sess: Any, scorer: Scorer, data: Any, tensor: bool, reps: int) -> dict[str, float]:
    """Seconds (median of ``reps``, round-robin) to score every row in BATCH-row batches."""
    import pyarrow as pa

    n = len(data)
    if tensor:
        name = scorer.model().inputs[0].name
        pandas_parts = [tensor_frame(data[lo : lo + BATCH]) for lo in range(0, n, BATCH)]
        dict_parts = [{name: data[lo : lo + BATCH]} for lo in range(0, n, BATCH)]
        plain_parts = [data[lo : lo + BATCH] for lo in range(0, n, BATCH)]
    else:
        pandas_parts = [data.iloc[lo : lo + BATCH] for lo in range(0, n, BATCH)]
        plain_parts = pandas_parts
        dict_parts = []
    arrow_parts = [pa.Table.from_pandas(p, preserve_index=False) for p in pandas_parts]
    plain_scorer = Scorer.create(scorer.ref) if tensor else scorer
    arrow_scorer = Scorer(scorer.ref, scorer.outputs, scorer.features, arrays="arrow")
    scorer.model(1)  # verified once, outside the timing
    own = scorer.model(1)._session  # the bundle's session: what is ours is the rest
    jobs: dict[str, Callable[[], Any]] = {
        "plain onnxruntime": lambda: [
            sess.run(None, plain_feeds(sess, p, tensor)) for p in plain_parts
        ],
        "plain loop, the bundle's session": lambda: [
            own.run(None, plain_feeds(own, p, tensor)) for p in plain_parts
        ],
        "Scorer, pandas (array per row)": lambda: [scorer.score(p) for p in pandas_parts],
        "Scorer, pandas arrays='arrow'": lambda: [arrow_scorer.score(p) for p in pandas_parts],
        "Scorer, Arrow table": lambda: [scorer.score(p) for p in arrow_parts],
    }
    if dict_parts:
        jobs["Scorer, dict of numpy"] = lambda: [plain_scorer.score(p) for p in dict_parts]
    times: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(reps):
        for k, job in jobs.items():
            t, c = time.perf_counter(), time.thread_time()
            job()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.thread_time() - c)
    out = {k: median(v) for k, v in times.items()}
    out.update({f"cpu {k}": median(v) for k, v in cpu.items()})
    return out


# ----------------------------------------------------------------------------- no-op jobs


def zeros_like_outputs(scorer: Scorer, n: int) -> dict[str, np.ndarray]:
    """The columns scoring would add, as zeros: what the floor job returns."""
    manifest = scorer.model().manifest
    from bundle.integrations.worker import numpy_dtype

    out = {}
    for column, spec in scorer.output_columns(manifest):
        shape = (n, *(d if isinstance(d, int) else 1 for d in spec.shape[1:]))
        dtype = numpy_dtype(spec) if len(spec.shape) <= 1 else np.float32
        out[column] = np.zeros(shape, dtype=dtype)
    return out


def noop_score(scorer: Scorer, batch: Any) -> Any:
    """``batch`` with zero-filled output columns, in the layout scoring uses."""
    import pandas as pd
    import pyarrow as pa

    if hasattr(batch, "schema") and hasattr(batch, "num_rows"):
        cols = zeros_like_outputs(scorer, batch.num_rows)
        arrays = [*batch.columns, *(to_arrow(v) for v in cols.values())]
        names = [*batch.schema.names, *cols]
        if isinstance(batch, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(arrays, names=names)
        return pa.Table.from_arrays(arrays, names=names)
    cols = zeros_like_outputs(
        scorer, len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
    )
    if isinstance(batch, dict):
        return {**batch, **cols}
    out = batch.copy(deep=False)
    for c, v in cols.items():
        out[c] = v if v.ndim == 1 else pd.arrays.ArrowExtensionArray(to_arrow(v))
    return out


# ----------------------------------------------------------------------------- engines


def run_dask(scorer: Scorer, data: Any, workers: int, model: Any, tensor: bool) -> dict[str, Any]:
    import cloudpickle
    import dask
    import dask.dataframe as dd
    import distributed

    from bundle.integrations import dask as bdask

    dask.config.set({"dataframe.convert-string": False})
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
        arrow = Scorer(scorer.ref, scorer.outputs, scorer.features, arrays="arrow")

        def job(s: Scorer) -> Callable[[], int]:
            return lambda: int(bdask.score(ddf, s).map_partitions(len).compute().sum())

        cold, _, _ = timed(job(arrow))  # the plugin verifies on each worker
        meta = bdask.score(ddf, arrow)._meta
        before = client.run(scoring_stats)
        warm, mem, n, floor = round_robin(
            job(arrow),
            lambda: int(
                ddf.map_partitions(lambda p: noop_score(arrow, p), meta=meta)
                .map_partitions(len)
                .compute()
                .sum()
            ),
        )
        after = client.run(scoring_stats)
        inside = {
            k: sum(after[w][k] - before[w][k] for w in after) / ENGINE_REPS
            for k in ("rows", "seconds", "cpu_seconds")
        }
        objects, _, _ = timed(job(scorer))  # [N, k] outputs as an array per row
        stats = list(client.run(cache_stats).values())
        ours = len(cloudpickle.dumps(dict(bdask.score(ddf, arrow).__dask_graph__())))
        by_value = ddf.map_partitions(
            _predict_by_value, model, tensor, meta=ddf._meta.assign(label=0)
        )
        theirs = len(cloudpickle.dumps(dict(by_value.__dask_graph__())))
        value_wall, value_mem, _ = timed(lambda: int(by_value.map_partitions(len).compute().sum()))
    return {
        "rows": n,
        "walls": [cold, warm],
        "floor": floor,
        "extra": f"warm job with [N,k] outputs as an array per row (arrays='objects'): "
        f"{n / objects / workers:,.0f} rows/s/core",
        "stats": stats,
        "inside": inside,
        "graph": (ours, theirs),
        "mem": (mem, value_mem),
        "value_wall": value_wall,
    }


def _predict_by_value(pdf: Any, model: Any, tensor: bool) -> Any:
    """What users run when they ship the model by value: the framework's own predict."""
    if tensor:
        import torch

        x = np.stack(pdf["data"].to_numpy())
        with torch.no_grad():
            y = model(torch.from_numpy(x.astype(np.float32))).numpy()
        return pdf.assign(label=y.argmax(1))
    return pdf.assign(label=model.predict(pdf))


def spark_session(workers: int) -> Any:
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{workers}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def sink(df: Any) -> Callable[[], None]:
    """A job computing every row of ``df`` and keeping none (Spark's noop sink)."""
    return lambda: df.write.format("noop").mode("overwrite").save()


def batch_tag(index: int, before: dict[str, float]) -> str:
    """pid, fetches, verifications, then this batch's index, rows, and the wall and CPU
    seconds the library spent scoring it (its counters' growth since ``before``)."""
    s, now = cache_stats(), scoring_stats()
    return (
        f"{s['pid']}:{s['fetches']}:{s['verifications']}:{index}:"
        f"{int(now['rows'] - before['rows'])}:{now['seconds'] - before['seconds']:.6f}:"
        f"{now['cpu_seconds'] - before['cpu_seconds']:.6f}"
    )


def read_tags(tags: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per worker (fetches, verifications), and the job's scoring totals, from the
    distinct batch tags of one job."""
    seen: dict[str, tuple[int, int]] = {}
    totals = {"rows": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
    for t in tags:
        pid, f, v, _, rows, wall, cpu = t.split(":")
        seen[pid] = max(seen.get(pid, (0, 0)), (int(f), int(v)))
        totals["rows"] += int(rows)
        totals["seconds"] += float(wall)
        totals["cpu_seconds"] += float(cpu)
    stats = [{"pid": p, "fetches": f, "verifications": v} for p, (f, v) in seen.items()]
    return stats, totals


class SparkProbe:
    """A ``mapInArrow`` function that appends the worker's pid and counters."""

    def __init__(self, fn: Callable[[Iterator[Any]], Iterator[Any]]) -> None:
        self.fn = fn

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        before = scoring_stats()
        for i, out in enumerate(self.fn(batches)):
            tag = pa.array([batch_tag(i, before)])
            before = scoring_stats()
            yield pa.RecordBatch.from_arrays(
                [*out.columns, tag.take(np.zeros(out.num_rows, np.int32))],
                names=[*out.schema.names, "worker"],
            )


class SparkNoop:
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            yield noop_score(self.scorer, b)


def run_spark(
    scorer: Scorer, data: Any, workers: int, model: Any, tensor: bool, mlflow_dir: Path | None
) -> dict[str, Any]:
    from pyspark import cloudpickle as spark_pickle
    from pyspark.sql import functions, types

    from bundle.integrations import spark as bspark
    from bundle.integrations.worker import manifest_for

    spark = spark_session(workers)
    try:
        sdf = spark.createDataFrame(data).repartition(workers * 4).cache()
        sdf.count()
        manifest = manifest_for(scorer.ref)
        schema = bspark.score(sdf, scorer).schema
        schema = types.StructType([*schema.fields, types.StructField("worker", types.StringType())])
        probe = SparkProbe(bspark.PartitionScorer(scorer, manifest))

        def job(fn: Any) -> Callable[[], list[Any]]:
            return lambda: sdf.mapInArrow(fn, schema).select("worker").distinct().collect()

        cold, _, _ = timed(job(probe))
        warm, mem, seen_rows, floor = round_robin(job(probe), job(SparkProbe(SparkNoop(scorer))))
        stats, inside = read_tags(row["worker"] for row in seen_rows)
        ours = len(spark_pickle.dumps(probe))
        theirs = len(spark_pickle.dumps(lambda it, m=model: it))
        by_value_schema = types.StructType(
            [*sdf.schema.fields, types.StructField("label", types.LongType())]
        )

        def by_value(batches: Iterator[Any], m: Any = model) -> Iterator[Any]:
            for pdf in batches:
                yield _predict_by_value(pdf, m, tensor)

        value_job = sink(sdf.mapInPandas(by_value, by_value_schema))
        value_job()  # Python workers import the framework once
        value_wall, value_mem, _ = timed(value_job)
        extra = ""
        if not tensor:
            udf = bspark.predict_udf(Scorer.create(scorer.ref, outputs=["label"]))
            cols = [c for c in sdf.columns]
            udf_job = sink(sdf.withColumn("label", udf(*cols)))
            udf_job()
            ours_udf, _, _ = timed(udf_job)
            extra = (
                f"predict_udf (pandas UDF, label only) warm "
                f"{len(data) / ours_udf / workers:,.0f} rows/s/core"
            )
            extra += "; " + mlflow_compare(spark, sdf, model, data, workers, mlflow_dir, functions)
    finally:
        spark.stop()
    return {
        "rows": len(data),
        "walls": [cold, warm],
        "floor": floor,
        "extra": extra,
        "stats": stats,
        "inside": inside,
        "graph": (ours, theirs),
        "mem": (mem, value_mem),
        "value_wall": value_wall,
    }


def mlflow_compare(
    spark: Any,
    sdf: Any,
    model: Any,
    data: Any,
    workers: int,
    mlflow_dir: Path | None,
    functions: Any,
) -> str:
    """``mlflow.pyfunc.spark_udf`` on the same pipeline and rows, warm; 'n/a' without mlflow."""
    try:
        import mlflow.pyfunc
        import mlflow.sklearn
    except ImportError as e:
        return f"mlflow.pyfunc.spark_udf: n/a ({e})"
    d = Path(tempfile.mkdtemp(prefix="mlflow-model-"))
    try:
        from mlflow.models import infer_signature

        sample = data.iloc[:100]
        signature = infer_signature(sample, model.predict(sample))
        mlflow.sklearn.save_model(
            model,
            str(d / "model"),
            signature=signature,
            # what spark_udf has always shipped (skops, the newer default, is not installed)
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
        udf = mlflow.pyfunc.spark_udf(
            spark, str(d / "model"), result_type="long", env_manager="local"
        )
        job = sink(sdf.withColumn("label", udf(functions.struct(*sdf.columns))))
        job()
        wall, _, _ = timed(job)
        return (
            f"mlflow {mlflow.__version__} pyfunc.spark_udf (unverified pickle, label only) "
            f"warm {len(data) / wall / workers:,.0f} rows/s/core"
        )
    except Exception as e:  # report and go on
        return f"mlflow.pyfunc.spark_udf: failed: {type(e).__name__}: {str(e)[:200]}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


class RayProbe:
    """Ray's map_batches callable: scores (or, ``noop``, returns zeros) and tags the
    batch with the actor's pid and counters."""

    def __init__(self, scorer: Scorer, noop: bool = False) -> None:
        from bundle.integrations import ray as bray

        self.noop = noop
        self.inner = bray.BundlePredictor(scorer) if not noop else None
        self.scorer = scorer

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        before = scoring_stats()
        out = noop_score(self.scorer, batch) if self.inner is None else self.inner(batch)
        self.count = getattr(self, "count", 0) + 1
        tag = batch_tag(self.count, before)
        if isinstance(out, dict):
            rows = len(next(iter(out.values())))
            out["worker"] = np.full(rows, tag, dtype=object)
            return out
        return out.append_column("worker", pa.array([tag]).take(np.zeros(out.num_rows, np.int32)))


class RayByValue:
    """Ray's map_batches callable with the model passed by value (constructor args),
    scoring with the framework's own predict."""

    def __init__(self, model: Any, tensor: bool) -> None:
        self.model = model
        self.tensor = tensor

    def __call__(self, batch: Any) -> Any:
        if self.tensor:
            import torch

            with torch.no_grad():
                y = self.model(torch.from_numpy(batch["data"])).numpy()
            return {**batch, "label": y.argmax(1)}
        return batch.assign(label=self.model.predict(batch))


def run_ray(scorer: Scorer, data: Any, workers: int, model: Any, tensor: bool) -> dict[str, Any]:
    import logging

    import ray

    logging.getLogger("ray").setLevel(logging.WARNING)  # one INFO line per dataset otherwise
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        logging_level=logging.WARNING,
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        n = len(data)
        step = -(-n // (workers * 4))
        if tensor:
            ds = ray.data.from_numpy([data[i : i + step] for i in range(0, n, step)])
            fmt = "numpy"
        else:
            import pyarrow as pa

            # Arrow blocks, as read_parquet gives
            tables = [
                pa.Table.from_pandas(data.iloc[i : i + step], preserve_index=False)
                for i in range(0, n, step)
            ]
            ds = ray.data.from_arrow(tables)
            fmt = "pyarrow"
        ds = ds.materialize()

        def job(noop: bool) -> Callable[[], Any]:
            return lambda: ds.map_batches(
                RayProbe,
                fn_constructor_args=(scorer, noop),
                batch_size=BATCH,
                batch_format=fmt,
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
            ).materialize()

        # each job starts a new actor pool: both verify once per actor; the second job
        # finds the workers' processes and imports warm
        cold, _, _ = timed(job(False))
        warm, mem, out, floor = round_robin(job(False), job(True))
        stats, inside = read_tags(out.unique("worker"))
        value_job = lambda: ds.map_batches(  # noqa: E731
            RayByValue,
            fn_constructor_args=(model, tensor),
            batch_size=BATCH,
            batch_format="numpy" if tensor else "pandas",
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
        ).materialize()
        value_wall, value_mem, _ = timed(value_job)
        ours = len(ray.cloudpickle.dumps((RayProbe, (scorer,))))
        theirs = len(ray.cloudpickle.dumps((RayProbe, (model,))))
        rows = out.count()
    finally:
        ray.shutdown()
    return {
        "rows": rows,
        "walls": [cold, warm],
        "floor": floor,
        "extra": "",
        "stats": stats,
        "inside": inside,
        "graph": (ours, theirs),
        "mem": (mem, value_mem),
        "value_wall": value_wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sklearn-rows", type=int, default=1_000_000)
    ap.add_argument("--torch-rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="dask,spark,ray")
    ap.add_argument("--reps", type=int, default=5, help="in-process repetitions")
    ap.add_argument(
        "--engine-reps", type=int, default=3, help="warm and floor jobs per engine (medians)"
    )
    ap.add_argument(
        "--mlflow-path",
        type=Path,
        default=ROOT / ".venv-mlflow",
        help="a folder with mlflow installed (pip install --target); appended to sys.path",
    )
    args = ap.parse_args()
    global ENGINE_REPS
    ENGINE_REPS = args.engine_reps
    mlflow_dir = args.mlflow_path if args.mlflow_path.is_dir() else None
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    if mlflow_dir is not None:
        sys.path.append(str(mlflow_dir))  # after site-packages: it adds, never replaces
        paths.append(str(mlflow_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    engines = [e for e in args.engines.split(",") if e]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {os.cpu_count()} CPUs, shared (load average {load:.2f} at start); "
        f"hashlib SHA-256 single core {sha256_rate():.0f} MB/s; "
        f"{args.workers} workers x 1 CPU per engine"
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
        summary = []
        for name, path, data, tensor in cases:
            model_bytes = by_value_bytes(originals[name])
            ref = reference(path, trusted_keys=key.public_key)
            scorer = Scorer.create(ref, features=["data"] if tensor else None)
            sess = plain_session(path, d)
            secs = in_process(sess, scorer, data, tensor, args.reps)
            base = len(data) / secs["plain onnxruntime"]
            print(
                f"\n{name}: {len(data):,} rows; bundle {path.stat().st_size:,} B, by value "
                f"{model_bytes:,} B\n  in process, {BATCH:,}-row batches, 1 thread, "
                f"median of {args.reps} round-robin:"
            )
            same = secs["plain loop, the bundle's session"]
            for k, s in secs.items():
                if k.startswith("cpu "):
                    continue
                print(
                    f"    {k:32s} {s * 1e3:8.1f} ms  {len(data) / s:12,.0f} rows/s  "
                    f"{s / secs['plain onnxruntime']:.2f}x the plain loop's time, "
                    f"{s / same:.2f}x on the same session; CPU "
                    f"{secs['cpu ' + k] / secs['cpu plain onnxruntime']:.2f}x"
                )
            for engine in engines:
                frame_data = data if not tensor else tensor_frame(data)
                try:
                    if engine == "dask":
                        r = run_dask(scorer, frame_data, args.workers, originals[name], tensor)
                    elif engine == "spark":
                        r = run_spark(
                            scorer, frame_data, args.workers, originals[name], tensor, mlflow_dir
                        )
                    else:
                        r = run_ray(scorer, data, args.workers, originals[name], tensor)
                except Exception as e:  # report and go on with the other engines
                    print(f"  {engine}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    continue
                w = args.workers
                cold, warm = (r["rows"] / x / w for x in r["walls"])
                floor = r["rows"] / r["floor"] / w
                verif = sorted((s["fetches"], s["verifications"]) for s in r["stats"])
                ours, theirs = r["graph"]
                mem_ref, mem_val = r["mem"]
                value = (
                    f"; by value (framework predict) job {r['value_wall']:.1f} s, driver RSS "
                    f"+{mem_val / 1e6:.0f} MB"
                    if r["value_wall"] is not None
                    else ""
                )
                print(
                    f"  {engine:5s} rows/s/core (x plain ORT): first job {cold:,.0f} "
                    f"({cold / base:.2f}x, {r['walls'][0]:.1f} s), warm {warm:,.0f} "
                    f"({warm / base:.2f}x, {r['walls'][1]:.1f} s), no-op floor {floor:,.0f} "
                    f"({floor / base:.2f}x, {r['floor']:.1f} s); warm = {warm / floor:.2f}x "
                    f"the floor\n        (fetches, verifications) per worker {verif}; "
                    f"shipped {ours:,} B by reference vs {theirs:,} B by value; driver RSS "
                    f"+{mem_ref / 1e6:.0f} MB (warm job){value}",
                    flush=True,
                )
                inside = r["inside"]
                if inside["rows"]:
                    per_row = inside["cpu_seconds"] / inside["rows"]
                    plain_row = secs["cpu plain onnxruntime"] / len(data)
                    print(
                        f"        inside the library's scoring (warm job, all workers): "
                        f"{inside['rows']:,.0f} rows, {per_row * 1e6:.2f} us CPU/row "
                        f"({inside['seconds'] / inside['rows'] * 1e6:.2f} us wall/row) vs the "
                        f"plain loop's {plain_row * 1e6:.2f} us CPU/row: "
                        f"{per_row / plain_row:.2f}x",
                        flush=True,
                    )
                if r["extra"]:
                    print(f"        {r['extra']}", flush=True)
                # what scoring adds to the engine's own job, in core-seconds, against the
                # plain loop's seconds for the same rows
                marginal = (r["walls"][1] - r["floor"]) * w / (r["rows"] / base)
                print(
                    f"        scoring's cost over the floor: {marginal:.2f}x the plain loop's "
                    f"time for the same rows (per core)",
                    flush=True,
                )
                cpu_ratio = (
                    inside["cpu_seconds"]
                    / inside["rows"]
                    / (secs["cpu plain onnxruntime"] / len(data))
                    if inside["rows"]
                    else float("nan")
                )
                summary.append(
                    (name, engine, warm / base, floor / base, warm / floor, marginal, cpu_ratio)
                )
        print(
            "\nwarm job, rows/s per core: ratio to plain onnxruntime | the no-op floor's "
            "ratio | warm/floor | scoring's cost over the floor / plain loop | the library's "
            "CPU per row / the plain loop's"
        )
        for name, engine, ratio, fratio, of, marginal, cpu_ratio in summary:
            print(
                f"  {name:8s} {engine:5s} {ratio:.2f}x | {fratio:.2f}x | {of:.2f} | "
                f"{marginal:.2f}x | {cpu_ratio:.2f}x"
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
