"""Spark: mapInPandas and a pandas UDF on local[2] (driver on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from integrations_helpers import Signed, torch_expected, weights_sample

import bundle

pyspark = pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
if shutil.which("java") is None:
    pytest.skip(
        "Spark needs Java: apt-get install -y default-jre-headless (scripts/test.sh installs it)",
        allow_module_level=True,
    )

from pyspark.sql import types  # noqa: E402

from bundle.integrations import Scorer, cache_stats, reference  # noqa: E402
from bundle.integrations import spark as bspark  # noqa: E402
from bundle.integrations.worker import manifest_for  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the JVM binds and talks on loopback only
    session = (
        SparkSession.builder.master("local[2]")
        .appName("model-bundle-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100")
        .config("spark.task.cpus", "1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


class _Probe(bspark.PartitionScorer):
    """score()'s partition function, plus which Python worker scored each batch and how
    often that worker had fetched and verified the bundle by then."""

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for out in super().__call__(batches):
            s = cache_stats()
            yield out.assign(worker=f"{s['pid']}:{s['fetches']}:{s['verifications']}")


def test_pipeline_scored_with_manifest_schema(spark: Any, pipeline_bundle: Signed) -> None:
    df = pipeline_bundle.data
    sdf = spark.createDataFrame(df).repartition(4)
    scored = bspark.score(
        sdf,
        pipeline_bundle.path,
        digest=pipeline_bundle.digest,
        trusted_keys=pipeline_bundle.key.public_key,
        lineage="model",
    )
    fields = {f.name: f.dataType for f in scored.schema.fields}
    assert fields["label"] == types.LongType()
    assert fields["probabilities"] == types.ArrayType(types.FloatType(), False)
    assert fields["model"] == types.StringType()
    scorer = Scorer.create(
        pipeline_bundle.path,
        digest=pipeline_bundle.digest,
        trusted_keys=pipeline_bundle.key.public_key,
        lineage="model",
    )
    probe = _Probe(scorer, manifest_for(scorer.ref))
    schema = types.StructType(
        [*scored.schema.fields, types.StructField("worker", types.StringType())]
    )
    rows = sdf.mapInPandas(probe, schema).toPandas()
    rows = rows.sort_values(["age", "income"]).reset_index(drop=True)
    expected = df.sort_values(["age", "income"]).reset_index(drop=True)
    np.testing.assert_array_equal(rows["label"].to_numpy(), pipeline_bundle.model.predict(expected))
    np.testing.assert_allclose(
        np.stack(rows["probabilities"].to_numpy()),
        pipeline_bundle.model.predict_proba(expected),
        rtol=1e-4,
        atol=1e-5,
    )
    assert set(rows["model"]) == {pipeline_bundle.digest}
    per_worker: dict[str, tuple[int, int]] = {}
    for w in rows["worker"]:
        pid, fetches, verifications = w.split(":")
        per_worker[pid] = max(per_worker.get(pid, (0, 0)), (int(fetches), int(verifications)))
    # 4 partitions of 100-row Arrow batches, on Python workers that Spark reuses
    assert per_worker
    assert all(v == (1, 1) for v in per_worker.values()), per_worker


def test_udf_returns_a_struct_for_several_outputs(spark: Any, pipeline_bundle: Signed) -> None:
    df = pipeline_bundle.data.iloc[:200]
    sdf = spark.createDataFrame(df)
    key = pipeline_bundle.key.public_key
    udf = bspark.predict_udf(pipeline_bundle.path, trusted_keys=key, lineage="model")
    assert udf.returnType == types.StructType(
        [
            types.StructField("label", types.LongType()),
            types.StructField("probabilities", types.ArrayType(types.FloatType(), False)),
            types.StructField("model", types.StringType()),
        ]
    )
    out = sdf.select(udf(*df.columns).alias("p")).select("p.*").toPandas()
    np.testing.assert_array_equal(out["label"].to_numpy(), pipeline_bundle.model.predict(df))
    one = bspark.predict_udf(pipeline_bundle.path, trusted_keys=key, outputs=["label"])
    assert one.returnType == types.LongType()
    labels = sdf.select(one("age", "income", "visits", "city").alias("y")).toPandas()["y"]
    np.testing.assert_array_equal(labels.to_numpy(), pipeline_bundle.model.predict(df))


def test_torch_mlp_from_feature_columns(spark: Any, torch_bundle: Signed) -> None:
    x = torch_bundle.data[:300]
    names = [f"f{i}" for i in range(x.shape[1])]
    sdf = spark.createDataFrame(
        pd.DataFrame(x.astype(np.float64), columns=names).assign(row=np.arange(len(x)))
    )
    scorer = Scorer.create(
        torch_bundle.path, trusted_keys=torch_bundle.key.public_key, features=names
    )
    closure = pyspark.cloudpickle.dumps(bspark.PartitionScorer(scorer, None))
    assert len(closure) < 4096
    assert weights_sample(torch_bundle.path) not in closure
    output = scorer.model().outputs[0].name
    out = bspark.score(sdf, scorer).toPandas().sort_values("row")
    np.testing.assert_allclose(
        np.stack(out[output].to_numpy()), torch_expected(torch_bundle, x), rtol=1e-4, atol=1e-5
    )


def test_tampered_bundle_raises_its_error_in_the_driver(
    spark: Any, pipeline_bundle: Signed, tampered_pipeline: Signed
) -> None:
    sdf = spark.createDataFrame(pipeline_bundle.data.iloc[:50])
    ref = reference(
        tampered_pipeline.path,
        digest=tampered_pipeline.digest,
        trusted_keys=pipeline_bundle.key.public_key,
    )
    scored = bspark.score(sdf, ref)
    with (
        pytest.raises(bundle.IntegrityError, match="on a Spark worker") as info,
        bspark.raise_bundle_errors(),
    ):
        scored.collect()
    assert "PythonException" in type(info.value.__cause__).__name__


def test_bad_batch_raises_input_error(spark: Any, pipeline_bundle: Signed) -> None:
    sdf = spark.createDataFrame(pipeline_bundle.data.iloc[:50].drop(columns=["city"]))
    scored = bspark.score(sdf, pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    with pytest.raises(bundle.InputError, match="city"), bspark.raise_bundle_errors():
        scored.collect()


def test_existing_column_refused_on_the_driver(spark: Any, pipeline_bundle: Signed) -> None:
    sdf = spark.createDataFrame(pipeline_bundle.data.iloc[:5].assign(label=1))
    with pytest.raises(ValueError, match="label"):
        bspark.score(sdf, pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key)
    assert os.environ["PYSPARK_PYTHON"]


def test_arrow_partition_in_spark_arrow_types(pipeline_bundle: Signed) -> None:
    """What mapInArrow hands back: the input batch's columns untouched, then each output
    in the Arrow type Spark's schema for it converts to (a list array for [N, 2])."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    scorer = Scorer.create(
        pipeline_bundle.path, trusted_keys=pipeline_bundle.key.public_key, lineage="model"
    )
    manifest = manifest_for(scorer.ref)
    df = pipeline_bundle.data
    batch = pa.RecordBatch.from_pandas(df, preserve_index=False)
    (out,) = list(bspark.PartitionScorer(scorer, manifest)(iter([batch])))
    assert isinstance(out, pa.RecordBatch)
    assert out.schema.names[: batch.num_columns] == batch.schema.names
    assert all(out.column(i).equals(batch.column(i)) for i in range(batch.num_columns))
    want = to_arrow_schema(bspark.return_type(scorer, manifest))  # a struct: 3 columns
    for field in want:
        assert out.schema.field(field.name).type == field.type, field.name
    np.testing.assert_array_equal(out.column("label").to_numpy(), pipeline_bundle.model.predict(df))
