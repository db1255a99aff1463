"""Dask: score a dask DataFrame with a bundle, verified once per worker process.

    >>> from distributed import Client
    >>> import bundle.integrations.dask as bdask
    >>> client = Client(...)
    >>> scored = bdask.score(ddf, "s3://models/churn.mbundle", digest="sha256:...",
    ...                      trusted_keys="me.pub", lineage="model")
    >>> scored.to_parquet("s3://bucket/scores/")

:func:`score` is ``map_partitions`` with ``meta`` built from the manifest's
outputs. The task graph holds the :class:`~bundle.integrations.Scorer` (URI,
digest, PEM keys), never the model. With a ``distributed`` client,
:class:`BundlePlugin` is registered first: every worker fetches and verifies the
bundle once when the plugin is set up (a bundle that does not verify fails
``score`` itself with the named error) and drops it on teardown. Without a
client (the local schedulers), the bundle is loaded once in this process.

Threads: each Dask worker thread runs one task at a time, so a task's CPU grant
is one thread -- ``intra_op_num_threads=1`` and the worker's ``nthreads`` tasks
run side by side on one shared session. A worker started with a ``CPU``
resource (``--resources CPU=8``) grants ``CPU // nthreads`` threads per task;
``intra_op_threads=`` overrides both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .worker import BundleRef, Scorer, manifest_for, pandas_dtype, release

__all__ = ["BundlePlugin", "score", "score_partition", "task_threads"]


def _worker_threads(worker: Any) -> int:
    state = getattr(worker, "state", worker)
    nthreads = max(1, int(getattr(state, "nthreads", 1) or 1))
    resources = getattr(state, "total_resources", None) or {}
    cpus = resources.get("CPU")
    return max(1, int(cpus) // nthreads) if cpus else 1


def task_threads() -> int:
    """Intra-op threads for a task on this Dask worker (1 outside a worker)."""
    try:
        from distributed import get_worker

        return _worker_threads(get_worker())
    except (ImportError, ValueError):  # no distributed, or not inside a worker
        return 1


def score_partition(pdf: Any, scorer: Scorer) -> Any:
    """Score one pandas partition (what ``map_partitions`` calls on the workers)."""
    return scorer.score(pdf, task_threads())


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # the plugin needs distributed; score() works without it
    _PluginBase = object  # type: ignore[assignment,misc]


class BundlePlugin(_PluginBase):  # type: ignore[misc,valid-type,unused-ignore]
    """A worker plugin that verifies the bundle once per worker and holds it.

    ``setup`` loads the model into the worker process's cache (so the first task
    does not pay for it, and a bundle that fails verification fails the plugin's
    registration); ``teardown`` drops it. Its name derives from the digest, so
    registering it again for the same bundle replaces rather than adds.
    """

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name = f"model-bundle-{scorer.ref.digest.removeprefix('sha256:')[:16]}"

    def setup(self, worker: Any) -> None:
        """Fetch and verify the bundle in this worker process."""
        self.scorer.model(_worker_threads(worker))

    def teardown(self, worker: Any) -> None:
        """Release the worker's session."""
        release(self.scorer.ref.digest)


def _meta(frame_meta: Any, scorer: Scorer, manifest: Any) -> Any:
    import pandas as pd

    meta = frame_meta.iloc[:0].copy()
    taken = set(meta.columns) & set(scorer.new_columns(manifest))
    if taken:
        raise ValueError(
            f"the DataFrame already has column(s) {sorted(taken)} that scoring "
            "would write; choose output columns with outputs={output: column}"
        )
    for column, spec in scorer.output_columns(manifest):
        meta[column] = pd.Series([], dtype=pandas_dtype(spec, scorer.arrays))
    if scorer.lineage:
        meta[scorer.lineage] = pd.Series([], dtype=object)
    return meta


def _has_plugin(dask_scheduler: Any, name: str) -> bool:
    """On the scheduler: whether a worker plugin of this name is registered."""
    return name in getattr(dask_scheduler, "worker_plugins", {})


def score(
    ddf: Any,
    ref: BundleRef | str | os.PathLike[str] | Scorer,
    *,
    client: Any = None,
    outputs: Sequence[str] | Mapping[str, str] | None = None,
    features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    lineage: str | None = None,
    intra_op_threads: int | None = None,
    cache_dir: str | None = None,
    preload: bool = True,
    arrays: str | None = None,
    **reference_options: Any,
) -> Any:
    """``ddf`` with one column per model output (and the lineage column), lazily.

    ``ref``: a URI with ``digest`` and trust keywords (:func:`bundle.integrations.reference`),
    a :class:`BundleRef` or a :class:`Scorer`. ``meta`` comes from the manifest, read
    here (not the weights). ``client``: the ``distributed`` client (default: the
    current one, if any); with one and ``preload``, :class:`BundlePlugin` verifies
    the bundle on every worker before this returns. ``arrays="arrow"``: ``[N, k]``
    outputs as Arrow list columns rather than a numpy array per row (see
    :attr:`Scorer.arrays`).
    """
    options = {
        "outputs": outputs,
        "features": features,
        "lineage": lineage,
        "intra_op_threads": intra_op_threads,
        "cache_dir": cache_dir,
        "arrays": arrays,
        **reference_options,
    }
    if isinstance(ref, Scorer):
        if any(v is not None for v in options.values()):
            raise TypeError("give a Scorer alone, or a URI/BundleRef with options")
        scorer = ref
    else:
        scorer = Scorer.create(ref, **{k: v for k, v in options.items() if v is not None})
    manifest = manifest_for(scorer.ref, cache_dir=scorer.cache_dir)
    meta = _meta(ddf._meta, scorer, manifest)
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is not None and preload:
        plugin = BundlePlugin(scorer)
        # Registering a name again tears the old plugin down first (dropping the model
        # it verified) and sets the new one up: verify again only for a new bundle.
        registered = client.run_on_scheduler(_has_plugin, name=plugin.name)
        if not registered:
            client.register_plugin(plugin)
    return ddf.map_partitions(score_partition, scorer, meta=meta)
