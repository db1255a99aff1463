"""Spark: score a DataFrame with a bundle, verified once per Python worker.

    >>> import bundle.integrations.spark as bspark
    >>> scored = bspark.score(df, "s3://models/churn.mbundle", digest="sha256:...",
    ...                       trusted_keys="me.pub", lineage="model")
    >>> udf = bspark.predict_udf("s3://models/churn.mbundle", digest="sha256:...",
    ...                          trusted_keys="me.pub")
    >>> df.withColumn("prediction", udf(*df.columns))

:func:`score` runs ``mapInArrow`` (Arrow batches in and out, no pandas) and adds
one column per model output;
:func:`predict_udf` is a pandas UDF whose return type is derived from the
manifest's outputs (a struct when there are several). Both ship only the
:class:`~bundle.integrations.Scorer` (URI, digest, PEM keys) in the task closure;
each Python worker loads the bundle once and runs it with
``spark.task.cpus`` intra-op threads, spinning off. A worker's failure reaches
the driver as Spark's ``PythonException``; :func:`raise_bundle_errors` turns it
back into the :class:`~bundle.BundleError` subclass the worker raised.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import errors
from ..errors import BundleError, InputError
from ..format.manifest import TensorSpec
from .worker import BundleRef, Scorer, manifest_for, to_arrow

__all__ = [
    "PartitionScorer",
    "predict_udf",
    "raise_bundle_errors",
    "return_type",
    "score",
    "task_cpus",
]

# Spark type name and the numpy dtype its Arrow conversion wants, per manifest dtype.
_SPARK_TYPES = {
    "float32": ("FloatType", np.float32),
    "float16": ("FloatType", np.float32),
    "float64": ("DoubleType", np.float64),
    "int8": ("ByteType", np.int8),
    "int16": ("ShortType", np.int16),
    "int32": ("IntegerType", np.int32),
    "int64": ("LongType", np.int64),
    "uint8": ("ShortType", np.int16),
    "uint16": ("IntegerType", np.int32),
    "uint32": ("LongType", np.int64),
    "bool": ("BooleanType", np.bool_),
    "string": ("StringType", object),
}


def task_cpus() -> int:
    """``spark.task.cpus`` of the running task (1 outside a task)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return 1
    try:
        return max(1, int(ctx.cpus()))
    except Exception:  # a Spark without TaskContext.cpus()
        return 1


def _field_type(spec: TensorSpec) -> Any:
    from pyspark.sql import types

    entry = _SPARK_TYPES.get(spec.dtype)
    if entry is None:
        raise InputError(
            f"output {spec.name!r} has dtype {spec.dtype}, which has no Spark type", entry=spec.name
        )
    dtype: Any = getattr(types, entry[0])()
    for _ in spec.shape[1:]:
        dtype = types.ArrayType(dtype, containsNull=False)
    return dtype


def _fields(scorer: Scorer, manifest: Any) -> list[Any]:
    from pyspark.sql import types

    fields = [
        types.StructField(column, _field_type(spec))
        for column, spec in scorer.output_columns(manifest)
    ]
    if scorer.lineage:
        fields.append(types.StructField(scorer.lineage, types.StringType()))
    return fields


def return_type(scorer: Scorer, manifest: Any) -> Any:
    """The Spark type of a prediction: the output's own type for one output (and no
    lineage), else a struct with a field per output column (and the lineage)."""
    from pyspark.sql import types

    fields = _fields(scorer, manifest)
    return fields[0].dataType if len(fields) == 1 else types.StructType(fields)


def _spark_numpy(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """An output in the numpy dtype of its Spark type (:func:`_field_type`)."""
    want = _SPARK_TYPES[spec.dtype][1]
    return arr if want is object or arr.dtype == want else arr.astype(want)


def _spark_values(arr: np.ndarray, spec: TensorSpec) -> Any:
    """An output column as Spark's pandas-to-Arrow conversion takes it: numpy for a
    scalar output, a pandas Arrow list column (over the output's buffer) for N-D."""
    arr = _spark_numpy(arr, spec)
    if arr.ndim == 1:
        return arr
    import pandas as pd

    return pd.arrays.ArrowExtensionArray(to_arrow(arr))


def _frame(scorer: Scorer, pdf: Any, threads: int, manifest: Any) -> Any:
    """The output (and lineage) columns for one pandas batch, as a DataFrame."""
    import pandas as pd

    model = scorer.model(threads)
    values = scorer.outputs_for(model, pdf)
    specs = dict(scorer.output_columns(manifest))
    out = pd.DataFrame({c: _spark_values(v, specs[c]) for c, v in values.items()}, index=pdf.index)
    if scorer.lineage:
        out[scorer.lineage] = scorer.ref.lineage
    return out


def _arrow_types(scorer: Scorer, manifest: Any) -> list[Any]:
    """The Arrow type Spark's own conversion gives each new column's Spark type."""
    from pyspark.sql.pandas.types import to_arrow_type

    return [to_arrow_type(field.dataType) for field in _fields(scorer, manifest)]


def _arrow_batch(scorer: Scorer, batch: Any, threads: int, types: list[Any]) -> Any:
    """One Arrow batch (``mapInArrow``) with the output columns appended, each cast
    to its type in ``types`` (a cast that keeps the buffers: only the type's field
    names and nullability differ)."""
    import pyarrow as pa

    out = scorer.score_arrow(batch, threads)
    columns = list(out.columns)
    for i, want in enumerate(types, batch.num_columns):
        if columns[i].type != want:
            columns[i] = columns[i].cast(want)
    return pa.RecordBatch.from_arrays(columns, names=out.schema.names)


class PartitionScorer:
    """The function ``mapInArrow`` (or ``mapInPandas``) runs: each batch of a
    partition, with the output columns appended. Holds only the Scorer and the
    manifest's output specs."""

    def __init__(self, scorer: Scorer, manifest: Any) -> None:
        self.scorer = scorer
        self.manifest = manifest  # outputs and types only: a few hundred bytes of JSON

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Score each batch of a partition: Arrow RecordBatches (``mapInArrow``,
        no pandas conversion either way) or pandas DataFrames (``mapInPandas``)."""
        import pandas as pd

        threads = task_cpus()
        types: list[Any] | None = None  # once per partition, not per batch
        for pdf in batches:
            if not hasattr(pdf, "iloc"):  # a pyarrow RecordBatch
                if types is None:
                    types = _arrow_types(self.scorer, self.manifest)
                yield _arrow_batch(self.scorer, pdf, threads, types)
                continue
            new = _frame(self.scorer, pdf, threads, self.manifest)
            taken = set(pdf.columns) & set(new.columns)
            if taken:
                raise InputError(
                    f"the DataFrame already has column(s) {sorted(taken)} that "
                    "scoring would write; choose output columns with "
                    "outputs={output: column}"
                )
            yield pd.concat([pdf, new], axis=1)


def _scorer(ref: BundleRef | str | os.PathLike[str] | Scorer, options: dict[str, Any]) -> Scorer:
    if isinstance(ref, Scorer):
        if any(v is not None for v in options.values()):
            raise TypeError("give a Scorer alone, or a URI/BundleRef with options")
        return ref
    return Scorer.create(ref, **{k: v for k, v in options.items() if v is not None})


def score(
    df: Any,
    ref: BundleRef | str | os.PathLike[str] | Scorer,
    *,
    outputs: Sequence[str] | Mapping[str, str] | None = None,
    features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    lineage: str | None = None,
    intra_op_threads: int | None = None,
    cache_dir: str | None = None,
    **reference_options: Any,
) -> Any:
    """``df`` with one column per model output (and the lineage column) appended.

    ``ref``: a URI with ``digest`` and trust keywords (:func:`bundle.integrations.reference`),
    a :class:`BundleRef` or a :class:`Scorer`. The schema comes from the manifest,
    read here on the driver (not the weights); each output's type follows its dtype
    and rank (an ``[N, k]`` output is an array column). Lazy, like ``mapInPandas``.
    """
    from pyspark.sql import types

    scorer = _scorer(
        ref,
        {
            "outputs": outputs,
            "features": features,
            "lineage": lineage,
            "intra_op_threads": intra_op_threads,
            "cache_dir": cache_dir,
            **reference_options,
        },
    )
    manifest = manifest_for(scorer.ref, cache_dir=scorer.cache_dir)
    new = _fields(scorer, manifest)
    taken = set(df.columns) & {f.name for f in new}
    if taken:
        raise ValueError(
            f"the DataFrame already has column(s) {sorted(taken)} that scoring "
            "would write; choose output columns with outputs={output: column}"
        )
    schema = types.StructType([*df.schema.fields, *new])
    # Arrow batches both ways: no pandas conversion of the input columns, and N-D
    # outputs go back as list arrays over their buffer, not a Python list per row.
    return df.mapInArrow(PartitionScorer(scorer, manifest), schema)


class _ColumnsUDF:
    """A pandas UDF called with columns (names or Columns), packed into one struct."""

    def __init__(self, udf: Any, return_type: Any) -> None:
        self.udf = udf
        self.returnType = return_type

    def __call__(self, *cols: Any) -> Any:
        from pyspark.sql import functions

        if not cols:
            raise TypeError("call the UDF with the model's input columns: udf(*df.columns)")
        return self.udf(functions.struct(*cols))


def predict_udf(
    ref: BundleRef | str | os.PathLike[str] | Scorer,
    *,
    outputs: Sequence[str] | Mapping[str, str] | None = None,
    features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    lineage: str | None = None,
    intra_op_threads: int | None = None,
    cache_dir: str | None = None,
    **reference_options: Any,
) -> Any:
    """A pandas UDF scoring with the bundle: ``df.withColumn("p", udf(*columns))``.

    Call it with the columns the model reads (names or Columns); they reach the
    model by name. Its return type is the single output's type, or a struct of every
    output column (and ``lineage``) when there are several. ``returnType`` on the
    result says which.
    """
    import pandas as pd
    from pyspark.sql.functions import pandas_udf  # type: ignore[attr-defined]

    scorer = _scorer(
        ref,
        {
            "outputs": outputs,
            "features": features,
            "lineage": lineage,
            "intra_op_threads": intra_op_threads,
            "cache_dir": cache_dir,
            **reference_options,
        },
    )
    manifest = manifest_for(scorer.ref, cache_dir=scorer.cache_dir)
    rtype = return_type(scorer, manifest)
    single = len(_fields(scorer, manifest)) == 1
    partition = PartitionScorer(scorer, manifest)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[Any]:
        threads = task_cpus()
        for pdf in batches:
            out = _frame(partition.scorer, pdf, threads, partition.manifest)
            yield out.iloc[:, 0] if single else out

    # Spark picks the UDF kind from the annotations, as objects (this module's are strings).
    result: Any = pd.Series if single else pd.DataFrame
    predict.__annotations__ = {"batches": Iterator[pd.DataFrame], "return": Iterator[result]}
    udf = pandas_udf(predict, returnType=rtype)
    return _ColumnsUDF(udf, rtype)


_RAISED = re.compile(r"bundle\.errors\.([A-Za-z]+Error): (.*)")


@contextlib.contextmanager
def raise_bundle_errors() -> Iterator[None]:
    """Re-raise a worker's :class:`~bundle.BundleError` in the driver as itself.

    Spark reports a Python worker's exception as ``PythonException`` carrying the
    worker's traceback text; inside this block, one whose last line is a
    ``bundle.errors`` class becomes that class (with the worker's message, the
    ``PythonException`` as its cause). Anything else passes through unchanged.

        >>> with raise_bundle_errors():
        ...     scored.collect()
    """
    try:
        yield
    except Exception as e:
        if type(e).__name__ not in ("PythonException", "Py4JJavaError", "SparkException"):
            raise
        found = _RAISED.findall(str(e))
        if not found:
            raise
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if not (isinstance(cls, type) and issubclass(cls, BundleError)):
            raise
        raise cls(f"on a Spark worker: {message.strip()}") from e
