"""Ray Data: score a ``Dataset`` with a bundle, loaded once per actor.

    >>> import ray, bundle.integrations.ray as bray
    >>> ds = ray.data.read_parquet("s3://bucket/customers/")
    >>> scored = bray.score(ds, "s3://models/churn.mbundle", digest="sha256:...",
    ...                     trusted_keys="me.pub", concurrency=4, lineage="model")

:class:`BundlePredictor` is the callable class handed to
``Dataset.map_batches``: each actor of the pool verifies the bundle when it is
constructed (a bundle that does not verify fails the job, with the named error, at
the actor's first batch)
and runs its session with ``intra_op_num_threads`` equal to the CPUs Ray granted
the actor (``num_cpus``), spinning off. Only the :class:`~bundle.integrations.Scorer`
(a URI, a digest, PEM keys) is serialized into the actors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import BundleError
from ..runtime.model import Model
from .worker import BundleRef, Scorer

__all__ = ["BundlePredictor", "granted_cpus", "score"]


def granted_cpus() -> int:
    """CPUs Ray assigned to the current actor or task (at least 1; 1 outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return 1
        assigned: dict[str, float] = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        cpus = assigned.get("CPU", 1.0)
    except Exception:  # not in a Ray worker (or an older Ray without the call)
        return 1
    return max(1, math.floor(float(cpus)))


class BundlePredictor:
    """A callable class for ``Dataset.map_batches``: one verified model per actor.

    ``scorer``: a :class:`~bundle.integrations.Scorer`, or a URI / :class:`BundleRef`
    with the keywords of :meth:`Scorer.create` (``digest``, ``trusted_keys``,
    ``outputs``, ``features``, ``lineage``, ...). Batches may be pandas DataFrames,
    pyarrow Tables or dicts of numpy arrays; the result keeps the batch's columns and
    adds one per output (and the lineage column).
    """

    def __init__(self, scorer: Scorer | BundleRef | str | os.PathLike[str], **options: Any) -> None:
        self.scorer = (
            scorer
            if isinstance(scorer, Scorer) and not options
            else Scorer.create(scorer if not isinstance(scorer, Scorer) else scorer.ref, **options)
        )
        self.threads = granted_cpus()
        self.model: Model | None = None
        self.error: BundleError | None = None
        # Fetch and verify when the actor starts, but report a failure with the first
        # batch: Ray hands a batch's exception to the driver as its own class (an
        # IntegrityError stays one), a constructor's only as ActorDiedError text.
        try:
            self.model = self.scorer.model(self.threads)
        except BundleError as e:
            self.error = e

    def __call__(self, batch: Any) -> Any:
        """Score one batch."""
        if self.error is not None:
            raise self.error
        return self.scorer.score(batch, self.threads)


def score(
    ds: Any,
    ref: BundleRef | str | os.PathLike[str] | Scorer,
    *,
    concurrency: int = 1,
    num_cpus: float = 1,
    batch_size: int | None = 4096,
    batch_format: str = "pyarrow",
    outputs: Sequence[str] | Mapping[str, str] | None = None,
    features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    lineage: str | None = None,
    intra_op_threads: int | None = None,
    cache_dir: str | None = None,
    **reference_options: Any,
) -> Any:
    """``ds`` with the model's outputs added as columns (lazy, like any ``map_batches``).

    ``concurrency``: actors in the pool (each loads and verifies the model once);
    ``num_cpus``: CPUs per actor, which is also each session's intra-op thread count
    (unless ``intra_op_threads``). ``ref``: a URI with ``digest``/trust keywords (see
    :func:`bundle.integrations.reference`), a :class:`BundleRef`, or a ready
    :class:`Scorer`. ``outputs``, ``features``, ``lineage``, ``cache_dir``: see
    :class:`~bundle.integrations.Scorer`. ``batch_format``: ``"pyarrow"`` (Ray's
    blocks as they are: numeric columns reach onnxruntime without a copy and
    ``[N, k]`` outputs go back as Arrow list columns), ``"pandas"`` or ``"numpy"``.
    """
    import ray.data

    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int, not {concurrency!r}")
    if isinstance(ref, Scorer):
        if reference_options or outputs or features or lineage or intra_op_threads or cache_dir:
            raise TypeError("give a Scorer alone, or a URI/BundleRef with options")
        scorer = ref
    else:
        scorer = Scorer.create(
            ref,
            outputs=outputs,
            features=features,
            lineage=lineage,
            intra_op_threads=intra_op_threads,
            cache_dir=cache_dir,
            **reference_options,
        )
    return ds.map_batches(
        BundlePredictor,
        fn_constructor_args=(scorer,),
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        batch_size=batch_size,
        batch_format=batch_format,
    )
