"""The engine-free core of batch scoring.

A job names its model with a :class:`BundleRef`: where the bundle is (a local path,
any fsspec URL such as ``s3://``, or a store reference ``name@alias``), the digest
it must have (SHA-256 of its ``manifest.json``, which names every byte of the
bundle), and whom to trust as public-key PEM bytes. That is a few hundred bytes,
whatever the model's size, and it is all a task carries: workers never receive
the model by value.

Each worker process keeps the verified models it has loaded (:func:`load_model`),
keyed by digest, trust and thread count, so a model is fetched and verified once
per process, not once per task or batch. A bundle that fails verification is
remembered as failed and not fetched again by that process; a fetch that fails is
retried by the next task.

:class:`Scorer` turns one batch (a pandas DataFrame, or Ray's dict of numpy
arrays) into the model's feeds, checks them against the input signature
(:class:`~bundle.InputError` names what does not fit) and appends one column per
output, plus an optional lineage column naming the digest that scored each row.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import api
from ..errors import BundleError, FetchError, InputError, IntegrityError
from ..format.manifest import Manifest, TensorSpec
from ..format.versions import format_time
from ..runtime.model import Model
from ..trust.policy import TrustPolicy, resolve_policy
from ..trust.signing import load_public_key

__all__ = [
    "ARRAY_LAYOUTS",
    "MAX_CACHED_MODELS",
    "BundleRef",
    "Scorer",
    "cache_stats",
    "load_model",
    "manifest_digest",
    "manifest_for",
    "numpy_dtype",
    "pandas_dtype",
    "reference",
    "release",
    "scoring_stats",
    "session_options",
    "to_arrow",
]

ARRAY_LAYOUTS = ("objects", "arrow")
"""The values of :attr:`Scorer.arrays`."""

MAX_CACHED_MODELS = 4
"""Verified models one process keeps (least recently used dropped first): a long-lived
worker that scores many models does not keep every session alive."""

_DIGEST_PREFIX = "sha256:"
_COPY_CHUNK = 8 << 20


def manifest_digest(manifest: Manifest) -> str:
    """``sha256:<hex>`` of the manifest's canonical bytes: the bundle's identity.

    The manifest records the SHA-256 of every other entry, so this one digest pins
    every byte that is run. Adding a signature does not change it.
    """
    return _DIGEST_PREFIX + hashlib.sha256(manifest.to_bytes()).hexdigest()


def _normalize_digest(digest: str) -> str:
    if not isinstance(digest, str):
        raise TypeError(f"digest must be a string 'sha256:<64 hex>', not {type(digest).__name__}")
    hexpart = digest.removeprefix(_DIGEST_PREFIX).lower()
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(
            f"digest must be 'sha256:' and 64 hex digits (the SHA-256 of the "
            f"bundle's manifest.json), not {digest!r}"
        )
    return _DIGEST_PREFIX + hexpart


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def _is_store_ref(uri: str) -> bool:
    """``name@alias`` / ``name:version``: no scheme, no path separator, no bundle suffix."""
    return (
        "://" not in uri
        and "/" not in uri
        and os.sep not in uri
        and ("@" in uri or ":" in uri)
        and not uri.endswith(".mbundle")
    )


@dataclass(frozen=True)
class BundleRef:
    """What a task carries to name its model: where, which digest, whom to trust.

    Build one with :func:`reference` on the driver. Every field is plain data
    (strings, bytes, numbers), so it pickles to a few hundred bytes; the trust
    policy is rebuilt from the PEM bytes on each worker.
    """

    uri: str
    """A local path, an fsspec URL (``s3://bucket/key.mbundle``), or, with ``store``,
    the store reference it was resolved from."""
    digest: str
    """``sha256:<hex>`` of the bundle's manifest (:func:`manifest_digest`); for a store
    reference, the store's digest of the bundle file it resolved to (blobs are
    content-addressed by the whole file, signatures included)."""
    keys: tuple[bytes, ...] = ()
    """Trusted public keys, PEM."""
    roots: tuple[bytes, ...] = ()
    """Trusted root CA certificates, PEM."""
    threshold: int = 1
    min_version: str | None = None
    now: str | None = None
    """A fixed verification time (RFC 3339), when the driver's policy had one."""
    allow_unsigned: bool = False
    store: str | None = None
    """The store URL a ``name@alias`` reference was resolved in."""
    seq: int | None = None
    """The alias record's sequence number, when resolved from an alias."""
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)
    """fsspec options (endpoint, credentials), shipped to the workers with the task."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", _normalize_digest(self.digest))
        if not isinstance(self.uri, str) or not self.uri:
            raise ValueError("uri must be a non-empty string")

    def policy(self) -> TrustPolicy:
        """The trust policy this reference describes (built on the worker)."""
        return TrustPolicy(
            [load_public_key(k) for k in self.keys] or None,
            roots=list(self.roots) or None,
            threshold=self.threshold,
            min_version=self.min_version,
            now=self.now,
            allow_unsigned=self.allow_unsigned,
        )

    @property
    def lineage(self) -> str:
        """What a lineage column records: the digest, and the alias and its sequence
        number when the bundle was named by an alias."""
        if self.store is not None and self.seq is not None:
            return f"{self.digest} {self.uri}#{self.seq}"
        return self.digest

    def _cache_key(self) -> tuple[Any, ...]:
        return (
            self.digest,
            self.keys,
            self.roots,
            self.threshold,
            self.min_version,
            self.now,
            self.allow_unsigned,
        )


def reference(
    uri: str | os.PathLike[str] | BundleRef,
    *,
    digest: str | None = None,
    trust: TrustPolicy | None = None,
    trusted_keys: Any = None,
    allow_unsigned: bool = False,
    threshold: int | None = None,
    trusted_roots: Any = None,
    now: Any = None,
    min_version: str | None = None,
    store: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> BundleRef:
    """Name a bundle for a batch job (on the driver); the result goes to the workers.

    ``uri``: a local path (on a filesystem every worker sees), an fsspec URL
    (``s3://...``, with ``storage_options``), or a store reference
    (``name@alias``, ``name:version``) with ``store`` (the store's URL). ``digest``:
    the ``sha256:<hex>`` the bundle must have (:func:`manifest_digest`); every
    worker refuses a bundle with another. It may be left out for a local path (its
    manifest is read here, nothing else) and for a store reference (the store
    resolves it, once, here: every worker then scores with the same version even
    if the alias moves during the job). A remote URL needs it.

    ``trust`` or its keyword shortcuts, as for :func:`bundle.load`; the keys and
    roots travel as PEM bytes. ``rollback_state`` cannot be used (a file on this
    machine means nothing on a worker): pin the version with ``digest`` and
    ``min_version`` instead.
    """
    if isinstance(uri, BundleRef):
        return uri
    policy = resolve_policy(
        trust,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        threshold=threshold,
        trusted_roots=trusted_roots,
        now=now,
        min_version=min_version,
    )
    if policy.rollback_state is not None:
        raise ValueError(
            "a rollback_state file cannot travel to workers; pin the bundle "
            "with digest= and min_version= instead"
        )
    from cryptography.hazmat.primitives.serialization import Encoding

    location = os.fspath(uri)
    options = tuple(sorted((storage_options or {}).items()))
    common: dict[str, Any] = {
        "keys": tuple(k.pem() for k in policy.keys),
        "roots": tuple(c.public_bytes(Encoding.PEM) for c in policy.roots),
        "threshold": policy.threshold,
        "min_version": policy.min_version,
        "now": None if policy.now is None else format_time(policy.now),
        "allow_unsigned": policy.allow_unsigned,
        "storage_options": options,
    }
    if store is not None:
        if digest is not None:
            return BundleRef(location, digest, store=store, **common)
        resolved_digest, seq = _store_resolve(store, location, policy, dict(options))
        return BundleRef(location, resolved_digest, store=store, seq=seq, **common)
    if _is_store_ref(location) and not Path(location).exists():
        raise ValueError(
            f"{location!r} looks like a store reference (name@alias): give "
            "store= (the store's URL) as well"
        )
    if digest is None:
        if not _is_local(location):
            raise ValueError(
                f"give digest= for a remote bundle ({location}): workers must "
                "know which bundle to accept before they fetch it"
            )
        digest = _local_digest(_local_path(location))
    return BundleRef(location, digest, **common)


def _local_digest(path: str) -> str:
    """The digest a local bundle claims (not verified: every worker verifies it)."""
    _require_file(path)
    return manifest_digest(api.inspect(path).manifest)


def _require_file(path: str, where: str = "") -> None:
    if not os.path.isfile(path):
        raise FetchError(f"no bundle at {path}{where}", entry=path)


# --------------------------------------------------------------------------- store seam


def _store_module() -> Any:
    """``bundle.store``, imported on first use (it needs the ``store`` extra: fsspec)."""
    try:
        return importlib.import_module(__name__.rsplit(".", 2)[0] + ".store")
    except ImportError as e:
        raise FetchError(
            f"store references (name@alias) need bundle.store, which cannot be "
            f"imported here ({e}): pip install 'model-bundle[store]', or pass "
            "the bundle's path or URL and its digest instead"
        ) from e


def _store(url: str, policy: TrustPolicy, storage_options: Mapping[str, Any]) -> Any:
    return _store_module().Store(url, storage_options=dict(storage_options) or None, trust=policy)


def _store_resolve(
    url: str, ref: str, policy: TrustPolicy, storage_options: Mapping[str, Any]
) -> tuple[str, int | None]:
    """(digest, alias sequence number) of ``ref`` in the store at ``url``."""
    resolved = _store(url, policy, storage_options).resolve(ref)
    if isinstance(resolved, str):
        return resolved, None
    # bundle.store's Resolved: digest (hex), and for an alias the verified record's seq
    seq = getattr(getattr(resolved, "record", None), "seq", None)
    return str(resolved.digest), seq if isinstance(seq, int) else None


# --------------------------------------------------------------------------- the cache


@dataclass
class _Stats:
    fetches: int = 0
    downloads: int = 0
    verifications: int = 0
    hits: int = 0
    failures: int = 0
    batches: int = 0
    rows: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


_LOCK = threading.Lock()
_MODELS: OrderedDict[tuple[Any, ...], Model] = OrderedDict()
_FAILED: dict[tuple[Any, ...], BundleError] = {}
_STATS = _Stats()


def cache_stats() -> dict[str, int]:
    """This process's counters: ``fetches`` (a bundle opened from its URI),
    ``downloads`` (of those, copied from a remote URL), ``verifications``,
    ``hits`` (served from the cache), ``failures`` (verifications refused),
    ``cached`` (models held now) and ``pid``."""
    with _LOCK:
        return {
            "pid": os.getpid(),
            "fetches": _STATS.fetches,
            "downloads": _STATS.downloads,
            "verifications": _STATS.verifications,
            "hits": _STATS.hits,
            "failures": _STATS.failures,
            "cached": len(_MODELS),
        }


def scoring_stats() -> dict[str, float]:
    """This process's scoring so far: ``batches`` and ``rows`` scored by
    :meth:`Scorer.score` / :meth:`Scorer.score_arrow`, ``seconds`` spent in them
    (wall) and ``cpu_seconds`` (CPU time of the calling thread, where onnxruntime
    runs when it has one intra-op thread; a larger pool's other threads are not
    counted). What an engine adds -- moving batches, scheduling -- is the rest of a
    job's time."""
    with _LOCK:
        return {
            "pid": float(os.getpid()),
            "batches": float(_STATS.batches),
            "rows": float(_STATS.rows),
            "seconds": _STATS.seconds,
            "cpu_seconds": _STATS.cpu_seconds,
        }


class _Accounted:
    """Adds one batch's rows and time to the process's scoring counters."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __enter__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        cpu = time.thread_time() - self.cpu
        with _LOCK:
            _STATS.batches += 1
            _STATS.rows += self.rows
            _STATS.seconds += wall
            _STATS.cpu_seconds += cpu


def release(digest: str | None = None) -> int:
    """Drop this process's cached models (of one ``digest``, or all); how many went."""
    want = None if digest is None else _normalize_digest(digest)
    with _LOCK:
        gone = [k for k in _MODELS if want is None or k[0] == want]
        for k in gone:
            del _MODELS[k]
        for k in [k for k in _FAILED if want is None or k[0] == want]:
            del _FAILED[k]
        return len(gone)


def session_options(intra_op_threads: int) -> Any:
    """onnxruntime options for a task granted ``intra_op_threads`` cores: that many
    intra-op threads, one inter-op thread, and no spinning (a spinning pool keeps
    cores busy between batches, cores the engine has given to other tasks)."""
    if isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int):
        raise TypeError(f"intra_op_threads must be an int, not {type(intra_op_threads).__name__}")
    if intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be at least 1, not {intra_op_threads}")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def _cache_dir(cache_dir: str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"model-bundle-{uid}" / "batch"


def _download(ref: BundleRef, cache_dir: str | None) -> str:
    """Copy a remote bundle into this host's cache (atomically); return the local path.

    The copy is named by the expected digest and shared by the processes of one host;
    it is verified on every use like any file, so a copy changed on disk is refused.
    """
    directory = _cache_dir(cache_dir)
    target = directory / f"{ref.digest.removeprefix(_DIGEST_PREFIX)}.mbundle"
    if target.is_file():
        return str(target)
    try:
        import fsspec
    except ImportError as e:
        raise FetchError(
            f"{ref.uri}: remote bundles need fsspec (pip install fsspec, and s3fs for s3://)",
            entry=ref.uri,
        ) from e
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = directory / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.part"
    try:
        fs, path = fsspec.core.url_to_fs(ref.uri, **dict(ref.storage_options))
        with fs.open(path, "rb") as src, open(part, "xb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        os.replace(part, target)
    except FileNotFoundError as e:
        raise FetchError(f"no bundle at {ref.uri}", entry=ref.uri) from e
    except ImportError as e:  # fsspec names the package a protocol needs (s3fs, gcsfs...)
        raise FetchError(f"{ref.uri}: {e}", entry=ref.uri) from e
    except Exception as e:  # botocore, aiohttp, OSError...: whatever the backend raises
        first = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise FetchError(
            f"cannot fetch {ref.uri}: {type(e).__name__}: {first}", entry=ref.uri
        ) from e
    finally:
        part.unlink(missing_ok=True)
    return str(target)


def _load_uncached(ref: BundleRef, intra_op_threads: int, cache_dir: str | None) -> Model:
    policy = ref.policy()
    options = session_options(intra_op_threads)
    if ref.store is not None:
        store = _store(ref.store, policy, dict(ref.storage_options))
        _STATS.fetches += 1
        _STATS.verifications += 1
        # The store addresses blobs by the SHA-256 of the whole file and refuses bytes
        # that do not hash to it: ref.digest is that blob digest here.
        stored: Model = store.load(ref.digest, device="cpu", session_options=options)
        return stored
    if _is_local(ref.uri):
        path = _local_path(ref.uri)
        _require_file(
            path, " on this worker (a local path must be on a filesystem every worker sees)"
        )
    else:
        path = _download(ref, cache_dir)
        _STATS.downloads += 1
    _STATS.fetches += 1
    _STATS.verifications += 1
    model = api.load(path, trust=policy, device="cpu", session_options=options)
    got = manifest_digest(model.manifest)
    if got != ref.digest:
        raise IntegrityError(
            f"{ref.uri} is a bundle with digest {got}, not the {ref.digest} "
            "this job expects (replaced since the job was planned?)",
            entry=ref.uri,
        )
    return model


def load_model(ref: BundleRef, *, intra_op_threads: int = 1, cache_dir: str | None = None) -> Model:
    """The verified model ``ref`` names, loaded once per process and then shared.

    The first call in a process fetches the bundle (a remote one into ``cache_dir``,
    default a per-user folder under the temporary directory), verifies it against
    ``ref``'s trust, checks its digest and builds a CPU session with
    ``intra_op_threads``; later calls return the same :class:`~bundle.Model`
    (onnxruntime sessions are safe to run from several threads). Raises what
    :func:`bundle.load` raises, :class:`~bundle.IntegrityError` for a bundle with
    another digest, :class:`~bundle.FetchError` when it cannot be fetched.
    """
    key = (*ref._cache_key(), intra_op_threads)
    # One lock for the whole load: threads of one worker wait for the first one's
    # verification instead of each verifying the same bundle.
    with _LOCK:
        model = _MODELS.get(key)
        if model is not None:
            _MODELS.move_to_end(key)
            _STATS.hits += 1
            return model
        failed = _FAILED.get(key)
        if failed is not None:
            raise failed
        try:
            model = _load_uncached(ref, intra_op_threads, cache_dir)
        except FetchError:
            raise  # transient, perhaps: the next task tries again
        except BundleError as e:
            _STATS.failures += 1
            _FAILED[key] = e
            raise
        _MODELS[key] = model
        while len(_MODELS) > MAX_CACHED_MODELS:
            _MODELS.popitem(last=False)
        return model


def manifest_for(ref: BundleRef, *, cache_dir: str | None = None) -> Manifest:
    """The manifest of the bundle ``ref`` names, for planning on the driver (output
    schemas, ``meta``). Read, not verified -- workers verify -- but its digest must be
    ``ref.digest``. A remote bundle is copied into ``cache_dir`` once."""
    if ref.store is not None:
        return load_model(ref, cache_dir=cache_dir).manifest
    path = _local_path(ref.uri) if _is_local(ref.uri) else _download(ref, cache_dir)
    _require_file(path)
    manifest = api.inspect(path).manifest
    got = manifest_digest(manifest)
    if got != ref.digest:
        raise IntegrityError(
            f"{ref.uri} is a bundle with digest {got}, not the expected {ref.digest}", entry=ref.uri
        )
    return manifest


# --------------------------------------------------------------------------- batches


def _stack(name: str, values: Any) -> np.ndarray:
    """A column whose cells are arrays (Spark ArrayType, Ray tensors) as one N-D array."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values
    if hasattr(getattr(values, "dtype", None), "pyarrow_dtype"):
        # a pandas ArrowDtype column (list cells): read through Arrow, no object per row
        import pyarrow as pa

        return np.asarray(_arrow_numpy(name, pa.array(values)))
    to_numpy = getattr(values, "to_numpy", None)
    arr = np.asarray(to_numpy() if to_numpy is not None else values)
    if arr.dtype == object and len(arr) and isinstance(arr[0], (np.ndarray, list, tuple)):
        try:
            return np.stack([np.asarray(v) for v in arr])
        except ValueError as e:
            raise InputError(
                f"column {name!r} holds arrays of different shapes: {str(e)[:200]}", entry=name
            ) from e
    return arr


def _columns(batch: Any) -> list[str]:
    if hasattr(batch, "schema") and hasattr(batch, "num_rows"):  # pyarrow
        return [str(c) for c in batch.schema.names]
    cols = batch.columns if hasattr(batch, "columns") else batch.keys()
    return [str(c) for c in cols]


def _rows(batch: Any) -> int:
    if isinstance(batch, _ArrowBatch):
        return batch.rows
    if hasattr(batch, "columns"):
        return len(batch)
    return len(next(iter(batch.values()))) if batch else 0


class _ArrowBatch(dict[str, np.ndarray]):
    """The numpy columns read from an Arrow batch, and its row count."""

    def __init__(self, columns: Mapping[str, np.ndarray], rows: int) -> None:
        super().__init__((k, v) for k, v in columns.items() if k)
        self.rows = rows


def _arrow_numpy(name: str, column: Any) -> Any:
    """An Arrow column as numpy: without a copy for numbers without nulls; list
    cells of one length as one N-D array over the child buffer; strings as an object
    array of ``str``; anything with nulls as pandas converts it (NaN, None)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = arr.type
    if arr.null_count:
        return np.asarray(arr.to_pandas().to_numpy())
    if pa.types.is_dictionary(kind):
        return _arrow_numpy(name, arr.dictionary_decode())
    if isinstance(kind, pa.ExtensionType):  # e.g. Ray's tensor columns: their own to_numpy
        return np.asarray(arr.to_numpy())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        n = len(arr)
        if n == 0:
            return np.empty((0, 0), dtype=np.float32)
        if pa.types.is_fixed_size_list(kind):
            width = kind.list_size
        else:
            offsets = arr.offsets.to_numpy()
            lengths = np.diff(offsets)
            width = int(lengths[0])
            if (lengths != width).any():
                raise InputError(
                    f"column {name!r} holds arrays of different lengths "
                    f"({int(lengths.min())} to {int(lengths.max())})",
                    entry=name,
                )
        inner = _arrow_numpy(name, arr.flatten())
        return inner.reshape(n, width, *inner.shape[1:])
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # As a pandas string Series (no copy): Model then knows every cell is a str
        # and skips the scan it does for an object array.
        import pandas as pd

        return pd.Series(pd.arrays.ArrowStringArray(arr), copy=False)
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def to_arrow(values: np.ndarray) -> Any:
    """An output column as a pyarrow array: numbers over their own buffer, an N-D
    output as nested list arrays (offsets built by numpy, no object per row)."""
    import pyarrow as pa

    if values.ndim <= 1:
        return pa.array(values)
    out: Any = pa.array(np.ascontiguousarray(values).reshape(-1))
    large = values.size >= 1 << 31  # past int32 offsets
    for axis in range(values.ndim - 1, 0, -1):
        count = int(np.prod(values.shape[:axis]))
        offsets = np.arange(count + 1, dtype=np.int64 if large else np.int32) * values.shape[axis]
        kind = pa.LargeListArray if large else pa.ListArray
        out = kind.from_arrays(pa.array(offsets), out)
    return out


def _fmt(spec: TensorSpec) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"


@dataclass(frozen=True)
class Scorer:
    """How to score a batch: which model, which outputs into which columns, where each
    input comes from, and the lineage column. Small and picklable: it is what an
    engine ships to its workers.

    ``outputs``: (graph output, column) pairs; None: every output under its own
    name. ``features``: (graph input, columns) pairs, for tensor models whose input
    is spread over several scalar columns (stacked in that order); otherwise an
    input is read from the column named after it (its cells arrays for an N-D
    input). Models exported from a DataFrame (a scikit-learn ColumnTransformer)
    take their columns by name. ``lineage``: a column recording
    :attr:`BundleRef.lineage` on every row, or None.
    """

    ref: BundleRef
    outputs: tuple[tuple[str, str], ...] | None = None
    features: tuple[tuple[str, tuple[str, ...]], ...] = ()
    lineage: str | None = None
    intra_op_threads: int | None = None
    """Fixed thread count; None: the engine's CPU grant for the task."""
    cache_dir: str | None = None
    arrays: str = "objects"
    """How an ``[N, k]`` output goes into a pandas DataFrame: ``"objects"``, a numpy
    array per row (what pandas, Parquet and Spark take everywhere; a Python object
    per row), or ``"arrow"``, a pandas ``ArrowDtype`` list column over the output's
    buffer (no per-row cost; but pandas and Dask cannot read such a column back from
    a Parquet file pandas wrote). Arrow batches always get Arrow list columns."""

    @classmethod
    def create(
        cls,
        ref: BundleRef | str | os.PathLike[str],
        *,
        outputs: Sequence[str] | Mapping[str, str] | None = None,
        features: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        lineage: str | None = None,
        intra_op_threads: int | None = None,
        cache_dir: str | None = None,
        arrays: str = "objects",
        **reference_options: Any,
    ) -> Scorer:
        """Check and normalize the options; ``ref`` may be a URI, with the keywords
        of :func:`reference`. A sequence of ``features`` feeds the model's single
        input."""
        if arrays not in ARRAY_LAYOUTS:
            raise ValueError(f"arrays must be one of {ARRAY_LAYOUTS}, not {arrays!r}")
        bref = reference(ref, **reference_options) if not isinstance(ref, BundleRef) else ref
        if isinstance(ref, BundleRef) and reference_options:
            raise TypeError(
                f"{sorted(reference_options)} apply to a URI; this BundleRef "
                "already holds its trust and digest"
            )
        outs: tuple[tuple[str, str], ...] | None
        if outputs is None:
            outs = None
        elif isinstance(outputs, Mapping):
            outs = tuple((str(k), str(v)) for k, v in outputs.items())
        elif isinstance(outputs, str):
            outs = ((outputs, outputs),)
        else:
            outs = tuple((str(o), str(o)) for o in outputs)
        feats: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if isinstance(features, Mapping):
            feats = tuple((str(k), tuple(str(c) for c in v)) for k, v in features.items())
        elif features is not None:
            if isinstance(features, str):
                raise TypeError(
                    "features must be a list of column names (or a mapping "
                    "input -> columns), not a string"
                )
            feats = (("", tuple(str(c) for c in features)),)
        if lineage is not None and not (isinstance(lineage, str) and lineage):
            raise ValueError("lineage must be a column name")
        if intra_op_threads is not None:
            session_options(intra_op_threads)  # checks the value here, on the driver
        return cls(bref, outs, feats, lineage, intra_op_threads, cache_dir, arrays)

    def model(self, granted_threads: int = 1) -> Model:
        """The verified model, from this process's cache (see :func:`load_model`)."""
        threads = self.intra_op_threads or max(1, int(granted_threads))
        return load_model(self.ref, intra_op_threads=threads, cache_dir=self.cache_dir)

    def output_columns(self, manifest: Manifest) -> list[tuple[str, TensorSpec]]:
        """(column, output spec) for each output column, in order; checks the names."""
        specs = {o.name: o for o in manifest.outputs}
        pairs = (
            self.outputs
            if self.outputs is not None
            else tuple((o.name, o.name) for o in manifest.outputs)
        )
        unknown = [o for o, _ in pairs if o not in specs]
        if unknown:
            raise InputError(f"the model has no output(s) {unknown}; it has {sorted(specs)}")
        columns = [c for _, c in pairs] + ([self.lineage] if self.lineage else [])
        if len(set(columns)) != len(columns):
            raise ValueError(f"output columns must be distinct: {columns}")
        return [(c, specs[o]) for o, c in pairs]

    def new_columns(self, manifest: Manifest) -> list[str]:
        """Every column scoring adds, outputs then lineage."""
        return [c for c, _ in self.output_columns(manifest)] + (
            [self.lineage] if self.lineage else []
        )

    def feeds(self, model: Model, batch: Any) -> Any:
        """The model's inputs from a batch; :class:`InputError` for what does not fit."""
        if model.manifest.columns:
            return batch  # Model matches a DataFrame's columns by name, and checks them
        have = set(_columns(batch))
        features = dict(self.features)
        if "" in features:  # a plain list: the single input
            if len(model.inputs) != 1:
                raise InputError(
                    f"the model has {len(model.inputs)} inputs "
                    f"{[s.name for s in model.inputs]}: give features as a "
                    "mapping input -> columns"
                )
            features = {model.inputs[0].name: features[""]}
        feeds: dict[str, np.ndarray] = {}
        for spec in model.inputs:
            cols = features.get(spec.name)
            if cols:
                missing = [c for c in cols if c not in have]
                if missing:
                    raise InputError(
                        f"the batch has no column(s) {missing} for input {spec.name!r}",
                        entry=spec.name,
                    )
                feeds[spec.name] = np.column_stack([_stack(c, batch[c]) for c in cols])
            elif spec.name in have:
                feeds[spec.name] = _stack(spec.name, batch[spec.name])
            else:
                raise InputError(
                    f"the batch has no column {spec.name!r} for the model's "
                    f"input {spec.name!r} {spec.dtype}{_fmt(spec)}: name a column "
                    "after it, or map columns to it with features=",
                    entry=spec.name,
                )
        return feeds

    def outputs_for(self, model: Model, batch: Any) -> dict[str, np.ndarray]:
        """Run the model on ``batch``; column -> values, one row per input row."""
        pairs = self.output_columns(model.manifest)
        n = _rows(batch)
        if n == 0:
            return {c: np.empty(_empty_shape(spec), dtype=_numpy_dtype(spec)) for c, spec in pairs}
        values = model.run(self.feeds(model, batch), [spec.name for _, spec in pairs])
        out: dict[str, np.ndarray] = {}
        for column, spec in pairs:
            arr = values[spec.name]
            if arr.ndim == 0 or len(arr) != n:
                raise InputError(
                    f"output {spec.name!r} has shape {arr.shape} for a batch of "
                    f"{n} rows: batch scoring needs one output row per input row",
                    entry=spec.name,
                )
            out[column] = arr
        return out

    def columns_read(self, model: Model) -> list[str]:
        """The batch columns scoring reads: the model's named columns, the
        ``features`` columns, or the columns named after its inputs."""
        if model.manifest.columns:
            return [c.name for c in model.manifest.columns]
        features = dict(self.features)
        if "" in features and len(model.inputs) == 1:
            features = {model.inputs[0].name: features[""]}
        names: list[str] = []
        for spec in model.inputs:
            names.extend(features.get(spec.name) or (spec.name,))
        return names

    def _check_free(self, batch: Any, values: Mapping[str, Any]) -> None:
        taken = set(_columns(batch)) & (set(values) | {self.lineage})
        if taken:
            raise InputError(
                f"the batch already has column(s) {sorted(str(t) for t in taken)}"
                " that scoring would write; rename them or choose output "
                "columns with outputs={output: column}"
            )

    def score_arrow(self, batch: Any, granted_threads: int = 1) -> Any:
        """A pyarrow Table or RecordBatch with the output (and lineage) columns
        appended, of the same kind.

        The columns the model reads become numpy arrays without a copy where Arrow
        allows (numbers without nulls, list cells of one length); an ``[N, k]``
        output becomes an Arrow list column over the output's own buffer, not a
        Python object per row. A column with nulls is converted as pandas would.
        """
        with _Accounted(batch.num_rows):
            return self._score_arrow(batch, granted_threads)

    def _score_arrow(self, batch: Any, granted_threads: int) -> Any:
        import pyarrow as pa

        model = self.model(granted_threads)
        have = set(batch.schema.names)
        columns = {
            c: _arrow_numpy(c, batch.column(c)) for c in self.columns_read(model) if c in have
        }
        values = self.outputs_for(model, _ArrowBatch(columns, batch.num_rows))
        self._check_free(batch, values)
        arrays = [to_arrow(v) for v in values.values()]
        names = list(values)
        if self.lineage:
            arrays.append(pa.array([self.ref.lineage]).take(np.zeros(batch.num_rows, np.int32)))
            names.append(self.lineage)
        if isinstance(batch, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(
                [*batch.columns, *arrays], names=[*batch.schema.names, *names]
            )
        for name, arr in zip(names, arrays, strict=True):
            batch = batch.append_column(name, arr)
        return batch

    def score(self, batch: Any, granted_threads: int = 1) -> Any:
        """``batch`` with the output (and lineage) columns added: a pandas DataFrame
        for a DataFrame, the same kind for a pyarrow Table or RecordBatch (see
        :meth:`score_arrow`), a dict of arrays for a dict.

        In a DataFrame an ``[N, k]`` output is a column of arrays (one numpy view
        per row: pandas has no 2-D cell type that survives Parquet); score Arrow
        batches to avoid that per-row cost.
        """
        if hasattr(batch, "schema") and hasattr(batch, "num_rows"):
            return self.score_arrow(batch, granted_threads)
        with _Accounted(_rows(batch)):
            return self._score(batch, granted_threads)

    def _score(self, batch: Any, granted_threads: int) -> Any:
        model = self.model(granted_threads)
        values = self.outputs_for(model, batch)
        self._check_free(batch, values)
        n = _rows(batch)
        if hasattr(batch, "columns"):
            out = batch.copy(deep=False)
            for column, arr in values.items():
                if arr.ndim == 1:
                    out[column] = arr
                elif self.arrays == "arrow":
                    import pandas as pd

                    out[column] = pd.arrays.ArrowExtensionArray(to_arrow(arr))
                else:  # one array per row (views, built by list() in C)
                    out[column] = list(arr)
            if self.lineage:
                out[self.lineage] = self.ref.lineage
            return out
        result = dict(batch)
        result.update(values)
        if self.lineage:
            result[self.lineage] = np.full(n, self.ref.lineage, dtype=object)
        return result


_NUMPY = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": object,
}


def _empty_shape(spec: TensorSpec) -> tuple[int, ...]:
    return (0, *(d if isinstance(d, int) else 0 for d in spec.shape[1:]))


def _numpy_dtype(spec: TensorSpec) -> Any:
    return _NUMPY.get(spec.dtype, object)


def pandas_dtype(spec: TensorSpec, arrays: str = "objects") -> Any:
    """The pandas dtype of an output column (``meta``): numpy's for a scalar output,
    object for strings and, with ``arrays="objects"``, for N-D outputs; an Arrow list
    dtype for N-D outputs with ``arrays="arrow"``."""
    if len(spec.shape) <= 1 or arrays != "arrow":
        return numpy_dtype(spec)
    import pandas as pd

    empty = np.empty(_empty_shape(spec), dtype=_numpy_dtype(spec))
    return pd.ArrowDtype(to_arrow(empty).type)


def numpy_dtype(spec: TensorSpec) -> Any:
    """The numpy dtype of a scalar output column (object for strings and N-D outputs)."""
    return _numpy_dtype(spec) if len(spec.shape) <= 1 else object
