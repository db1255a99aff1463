"""Batch scoring on Ray, Spark and Dask: the bundle travels as a URI plus its expected
digest (never by value), each worker process fetches and verifies it once, and
onnxruntime runs with as many threads as the task was granted.

:mod:`bundle.integrations.worker` is the engine-free core (the reference, the
per-process cache of verified models, batches to feeds and outputs to columns);
:mod:`~bundle.integrations.ray`, :mod:`~bundle.integrations.spark` and
:mod:`~bundle.integrations.dask` adapt it to each engine and import their engine
only when used (extras ``ray``, ``spark``, ``dask``).
"""

from .worker import BundleRef, Scorer, cache_stats, manifest_digest, reference

__all__ = ["BundleRef", "Scorer", "cache_stats", "manifest_digest", "reference"]
