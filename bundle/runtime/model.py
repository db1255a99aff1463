"""``Model``: a verified bundle's onnxruntime session, with the manifest's input checks.

Inputs are checked against the manifest's signature (names, dtypes, shapes;
DataFrames and column dicts for tabular pipelines) and converted as the
original model would have accepted them; ``timeout=`` bounds a call. The
session itself is built by :mod:`bundle.runtime.session`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, RunTimeoutError, SelfTestError
from ..format.manifest import Manifest, TensorSpec
from ..trust.verify import VerifyReport
from .session import Deferred

__all__ = ["Model"]

"""Default: prepack weights up to this size. Measured (benchmarks/load_options.py): it
makes batch predicts ~1.4-1.5x and single rows ~1.1x faster, but costs ~3 ms per MB
at session creation and a second copy of the weights in memory -- worth it for small
models, not by default for multi-GB ones (``prepack=True`` still asks for it)."""


_NP_DTYPES = {
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


_CONVERTS_FROM = {"f": "fiub", "i": "iub", "u": "iub"}
"""For an input of each numpy kind, the kinds of array converted to it (bool and numbers
become floats; bool and integers become integers); other inputs take their dtype only."""


def _as_array(name: str, value: Any) -> np.ndarray:
    """np.asarray, with a ragged or absurdly nested sequence reported as the caller's input."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RecursionError) as e:
        raise InputError(
            f"input {name!r} is not a rectangular array (rows of different "
            f"lengths?): {' '.join(str(e).split())[:200]}",
            entry=name,
        ) from e


def _all_str(arr: np.ndarray) -> bool:
    """Whether an object array holds only ``str`` (no None, NaN, bytes or numbers).

    pandas' ``infer_dtype`` scans in C (~0.5 ms per 100k cells); without pandas
    loaded the answer is no, and the caller converts."""
    pandas = sys.modules.get("pandas")
    if arr.dtype != object or pandas is None:
        return False
    return bool(pandas.api.types.infer_dtype(arr.reshape(-1), skipna=False) == "string")


def _str_column(col: Any) -> bool:
    """A pandas Series of a string dtype without missing values: its cells are ``str``."""
    pandas = sys.modules.get("pandas")
    return (
        pandas is not None
        and isinstance(getattr(col, "dtype", None), pandas.StringDtype)
        and not col.hasnans
    )


def _to_input(name: str, value: Any, spec: TensorSpec, strings: bool = False) -> np.ndarray:
    """``value`` as the array ``spec`` wants, or InputError; ``strings``: the caller
    knows every cell is a ``str`` (a pandas string column without missing values)."""
    arr = _as_array(name, value)
    want = _NP_DTYPES.get(spec.dtype)
    if want is None:
        raise InputError(f"input {name!r} has unsupported type {spec.dtype}")
    if want is object:
        if arr.dtype.kind not in "OUS":
            raise InputError(f"input {name!r} expects strings, got {arr.dtype}", entry=name)
        # onnxruntime reads str objects as they are: a column of them (what pandas
        # gives for a string column) goes in without the two copies str() costs;
        # anything else (None, NaN, bytes, numpy str) is converted as str() would.
        if not (strings and arr.dtype == object) and not _all_str(arr):
            arr = arr.astype(str).astype(object)
    elif np.dtype(want).kind == "f":
        if arr.dtype.kind not in _CONVERTS_FROM["f"]:
            raise InputError(
                f"input {name!r} expects numbers ({spec.dtype}), got {arr.dtype}", entry=name
            )
        arr = arr.astype(want, copy=False)
    elif np.dtype(want).kind in "iu":
        if arr.dtype.kind not in _CONVERTS_FROM["i"]:
            raise InputError(
                f"input {name!r} expects integers ({spec.dtype}), got {arr.dtype}", entry=name
            )
        arr = arr.astype(want, copy=False)
    elif arr.dtype != want:
        raise InputError(f"input {name!r} expects {spec.dtype}, got {arr.dtype}", entry=name)
    if spec.shape:
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"input {name!r} expects {len(spec.shape)}-D data of shape "
                f"{_fmt(spec.shape)}, got shape {arr.shape}",
                entry=name,
            )
        for i, (d, n) in enumerate(zip(spec.shape, arr.shape, strict=True)):
            if isinstance(d, int) and d != n:
                raise InputError(
                    f"input {name!r} expects shape {_fmt(spec.shape)}, got "
                    f"{arr.shape} (axis {i} must be {d})",
                    entry=name,
                )
    return arr


class _Ready:
    """The common call's fast path for a one-input model: a numeric ndarray of the
    input's rank and fixed sizes, in its dtype or one :func:`_to_input` converts from
    (numbers to floats, integers to integers), checked in well under a microsecond.
    Anything else goes through :func:`_to_input`, which converts or names what is
    wrong; this never accepts what that would refuse."""

    def __init__(self, spec: TensorSpec) -> None:
        self.name = spec.name
        want = _NP_DTYPES.get(spec.dtype)
        self.dtype = None if want is None or want is object else np.dtype(want)
        kind = self.dtype.kind if self.dtype is not None else ""
        self.kinds = _CONVERTS_FROM.get(kind, "")
        self.ndim = len(spec.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int))

    def __call__(self, value: Any) -> np.ndarray | None:
        """``value`` as the input wants it, or None (then :func:`_to_input` decides)."""
        if type(value) is not np.ndarray or self.dtype is None or value.ndim != self.ndim:
            return None
        arr: np.ndarray = value
        if arr.dtype != self.dtype:
            if arr.dtype.kind not in self.kinds:
                return None
            arr = arr.astype(self.dtype)
        shape = arr.shape
        for i, d in self.fixed:  # a loop: all(generator) costs ~0.3 µs a call
            if shape[i] != d:
                return None
        return arr


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


"""Initializers up to this size go into the graph at load (see graph.inline_small_external)."""


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(
            f"timeout must be a positive, finite number of seconds (or None "
            f"for no limit), not {timeout!r}"
        )
    return float(timeout)


class _Watchdog:
    """One thread that fires every run's deadline.

    Starting a ``threading.Timer`` per call cost ~0.14 ms, ten times a small model's
    run (a server passes a timeout on every request); one sleeping thread and a heap
    of deadlines cost a push and a pop.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[Any]] = []  # [when, seq, callback or None when cancelled]
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, when: float, callback: Any) -> list[Any]:
        """Call ``callback()`` at monotonic time ``when`` unless cancelled first."""
        entry = [when, next(self._seq), callback]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="bundle-run-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """The run ended in time: forget its deadline."""
        with self._cond:
            entry[2] = None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                callback = heapq.heappop(self._heap)[2]
                callback()


_WATCHDOG = _Watchdog()


class _Deadline:
    """Run options whose ``terminate`` flag a timer sets once ``timeout`` seconds pass.

    onnxruntime checks the flag before each kernel, also inside a Loop's or Scan's
    body, so a signed graph that computes for ever (a Loop with a trip count of
    2**60) stops within one kernel's time and the session stays usable; a fresh
    RunOptions per call means the next call is not stopped at once. No timeout: no
    options, no deadline (one shared thread, :class:`_Watchdog`, fires them).
    """

    def __init__(self, timeout: object) -> None:
        self.timeout = _check_timeout(timeout)
        self.options: Any = None
        self._entry: list[Any] | None = None
        # Set from the watchdog's thread, read after the run: a plain flag does (no
        # Event per call; most calls have no timeout and pay nothing here).
        self._fired = False

    def __enter__(self) -> _Deadline:
        if self.timeout is not None:
            import onnxruntime as ort

            self.options = ort.RunOptions()
            self.options.log_severity_level = 4  # reported as RunTimeoutError, not logged too
            self._entry = _WATCHDOG.add(time.monotonic() + self.timeout, self._stop)
        return self

    def _stop(self) -> None:
        self._fired = True
        self.options.terminate = True

    def __exit__(self, *exc: object) -> None:
        if self._entry is not None:
            _WATCHDOG.cancel(self._entry)

    def raise_if_expired(self, e: Exception, what: str) -> None:
        """Raise RunTimeoutError for a failure the timer caused (``e`` says why it stopped)."""
        if self._fired:
            raise RunTimeoutError(
                f"{what} did not finish within {self.timeout:g} s; onnxruntime stopped it"
            ) from e


class Model:
    """A verified bundle, ready to run. Made by :func:`bundle.load`."""

    def __init__(
        self, session: Any, manifest: Manifest, report: VerifyReport, keepalive: Any = None
    ) -> None:
        self._session = session
        self._keepalive = keepalive  # the verified weights a CPU session runs on, in place
        self.manifest = manifest
        self.report = report
        self._inputs = {s.name: s for s in manifest.inputs}
        self._output_names = [o.name for o in manifest.outputs]
        self._ready = (
            _Ready(manifest.inputs[0])
            if len(manifest.inputs) == 1 and not manifest.columns
            else None
        )
        self._prepacking: threading.Thread | None = None
        if isinstance(keepalive, Deferred):
            self._keepalive = keepalive.buffers
            self._prepacking = threading.Thread(
                target=self._prepack, args=(keepalive,), name="bundle-prepack"
            )
            self._prepacking.start()

    def _prepack(self, deferred: Deferred) -> None:
        """Build the prepacked session and swap it in (see runtime.session.Deferred).

        A call already running on the unpacked session keeps that session object,
        and with it (an attribute set here) the buffer it runs on, until it returns.
        Not a daemon thread: onnxruntime must not be inside a session build while the
        interpreter shuts down. A failure leaves the unpacked session serving.
        """
        try:
            packed = deferred.build()
        except Exception:  # the unpacked session is correct, only slower at large batches
            return
        old = self._session
        old.model_bundle_weights = deferred.buffers
        self._session, self._keepalive = packed, None

    def wait_prepacked(self, timeout: float | None = None) -> bool:
        """Wait until the session runs on prepacked weights (True), or ``timeout`` passes.

        :func:`bundle.load` answers with a session over the verified weights as they
        are, and re-lays them for faster batches on a background thread when the model
        is small enough to prepack (``prepack=None``); a benchmark or a server that
        wants full speed from its first request waits here. True at once when nothing
        is pending.
        """
        thread = self._prepacking
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The graph inputs: names, dtypes, shapes."""
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The graph outputs: names, dtypes, shapes."""
        return self.manifest.outputs

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers the session actually uses."""
        return list(self._session.get_providers())

    @property
    def signers(self) -> list[str]:
        """Key ids of the trusted keys that signed this bundle."""
        return [s.key_id for s in self.report.signers]

    def __repr__(self) -> str:
        m = self.manifest.model
        return (
            f"<bundle.Model {m.name!r} v{m.version} ({m.framework} {m.task}), "
            f"providers={self.providers}>"
        )

    # -- inputs

    def _feeds(self, data: Any) -> dict[str, np.ndarray]:
        ready = self._ready
        if ready is not None:  # one array: the common call, checked in well under a µs
            arr = ready(data)
            if arr is not None:
                return {ready.name: arr}
        columns = self.manifest.columns
        if columns:
            if not (hasattr(data, "columns") or isinstance(data, Mapping)):
                raise InputError(
                    "this model takes a table: give a pandas DataFrame (or a dict "
                    f"of columns) with columns {[c.name for c in columns]}"
                )
            have = set(data.columns) if hasattr(data, "columns") else set(data)
            missing = [c.name for c in columns if c.name not in have]
            if missing:
                raise InputError(
                    f"missing column(s) {missing}; the model needs {[c.name for c in columns]}"
                )
            feeds = {}
            for c in columns:
                col = data[c.name]
                values = col.to_numpy() if hasattr(col, "to_numpy") else _as_array(c.name, col)
                if c.kind == "string" and _as_array(c.name, values).dtype.kind not in "OUS":
                    values = _as_array(c.name, values).astype(str)  # numbers as categories
                # _to_input converts a string column once, and only when it must
                feeds[c.input] = _to_input(
                    c.name,
                    _as_array(c.name, values).reshape(-1, 1),
                    self._inputs[c.input],
                    strings=_str_column(col),
                )
            return feeds
        specs = self.manifest.inputs
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - self._inputs.keys())
            missing = sorted(self._inputs.keys() - set(data))
            if unknown or missing:
                raise InputError(
                    f"inputs must be exactly {sorted(self._inputs)}; missing "
                    f"{sorted(missing)}, unknown {sorted(unknown)}"
                )
            return {k: _to_input(k, v, self._inputs[k]) for k, v in data.items()}
        if isinstance(data, (tuple, list)) and len(specs) > 1:
            if len(data) != len(specs):
                raise InputError(
                    f"the model has {len(specs)} inputs "
                    f"{[s.name for s in specs]}, got {len(data)} values"
                )
            return {s.name: _to_input(s.name, v, s) for s, v in zip(specs, data, strict=True)}
        if len(specs) != 1:
            raise InputError(
                f"the model has {len(specs)} inputs {[s.name for s in specs]}: "
                "pass a dict of name -> array"
            )
        return {specs[0].name: _to_input(specs[0].name, data, specs[0])}

    # -- running

    def run(
        self, inputs: Any, outputs: Sequence[str] | None = None, *, timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph; return every (or each named) output by name.

        ``timeout``: seconds the run may take (None: no limit); past it onnxruntime
        is stopped and :class:`RunTimeoutError` raised. A signed graph can compute
        for as long as its author wants: pass one for bundles you did not write.
        """
        deadline = _Deadline(timeout) if timeout is not None else None
        feeds = self._feeds(inputs)
        names = list(outputs) if outputs else self._output_names
        unknown = set(names).difference(self._output_names)
        if unknown:
            raise InputError(f"unknown output(s) {sorted(unknown)}")
        return dict(zip(names, self._run(names, feeds, deadline), strict=True))

    def _run(
        self, names: list[str], feeds: dict[str, Any], deadline: _Deadline | None
    ) -> list[np.ndarray]:
        """The session's run, its failures as InputError or RunTimeoutError."""
        try:
            if deadline is None:  # the common call: no run options, no watchdog entry
                values = self._session.run(names, feeds)
            else:
                with deadline:
                    values = self._session.run(names, feeds, deadline.options)
        except Exception as e:  # onnxruntime raises its own exception types
            if deadline is not None:
                deadline.raise_if_expired(e, "the run")
            raise InputError(f"onnxruntime refused the input: {str(e).splitlines()[0]}") from e
        return list(values)

    @property
    def device(self) -> tuple[str, int]:
        """Where the session computes: ("cuda", id) or ("cpu", 0)."""
        if self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            opts = self._session.get_provider_options().get(self.providers[0], {})
            return "cuda", int(opts.get("device_id", 0))
        return "cpu", 0

    def to_device(self, inputs: Any) -> dict[str, Any]:
        """Check ``inputs`` once and place them on the session's device (OrtValues).

        Pass the result to :meth:`run_bound` to predict repeatedly without copying
        the inputs to the GPU each time.
        """
        from onnxruntime import OrtValue

        kind, index = self.device
        return {
            k: OrtValue.ortvalue_from_numpy(v, kind, index) for k, v in self._feeds(inputs).items()
        }

    def run_bound(
        self,
        inputs: Mapping[str, Any],
        outputs: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run with IO binding: device-resident inputs (from :meth:`to_device`) stay put.

        ``timeout``: as for :meth:`run`.
        """
        deadline = _Deadline(timeout)
        names = list(outputs) if outputs else [o.name for o in self.manifest.outputs]
        binding = self._session.io_binding()
        for name, value in inputs.items():
            if name not in self._inputs:
                raise InputError(f"unknown input {name!r}")
            if hasattr(value, "device_name"):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, _to_input(name, value, self._inputs[name]))
        kind, index = self.device
        for name in names:
            binding.bind_output(name, kind, index)
        try:
            with deadline:
                self._session.run_with_iobinding(binding, deadline.options)
        except Exception as e:
            deadline.raise_if_expired(e, "the run")
            raise InputError(f"onnxruntime refused the input: {str(e).splitlines()[0]}") from e
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))

    def _method(self, method: str, data: Any, timeout: float | None) -> np.ndarray:
        spec = self.manifest.methods.get(method)
        if spec is None:
            offered = sorted(self.manifest.methods)
            raise InputError(f"this model offers no {method}(); it offers {offered} and run()")
        deadline = _Deadline(timeout) if timeout is not None else None
        out = self._run([spec.output], self._feeds(data), deadline)[0]
        return out.reshape(out.shape[:-1]) if spec.squeeze else out

    def predict(self, data: Any, *, timeout: float | None = None) -> np.ndarray:
        """What the original model's ``predict`` gives (labels for a classifier).

        ``timeout``: seconds the run may take, as for :meth:`run` (so for each method).
        """
        if "predict" not in self.manifest.methods and "transform" in self.manifest.methods:
            return self._method("transform", data, timeout)
        return self._method("predict", data, timeout)

    def predict_proba(self, data: Any, *, timeout: float | None = None) -> np.ndarray:
        """Class probabilities (scikit-learn classifiers)."""
        return self._method("predict_proba", data, timeout)

    def transform(self, data: Any, *, timeout: float | None = None) -> np.ndarray:
        """What the original's ``transform`` gives (scalers, encoders, clusterers...)."""
        return self._method("transform", data, timeout)

    def self_test(
        self,
        *,
        raise_on_failure: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Re-run the bundle's signed smoke vectors on this session; a
        :class:`bundle.runtime.smoke.SelfTestResult`, or None when the bundle carries none
        (written before they existed, or saved without a sample input).

        Outputs beyond the recorded tolerance raise :class:`SelfTestError` naming each
        (unless ``raise_on_failure=False``): this runtime computes something else than
        the one that exported the bundle. Serving and store promotion run it before a
        version goes live.
        """
        from .smoke import self_test

        if self.manifest.smoke is None:
            return None
        deadline = _Deadline(timeout)

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            names = [t.name for t in self.manifest.smoke.outputs]  # type: ignore[union-attr]
            try:
                with deadline:
                    values = self._session.run(names, feeds, deadline.options)
            except Exception as e:  # onnxruntime's own exception types
                deadline.raise_if_expired(e, "the self-test")
                raise SelfTestError(
                    f"onnxruntime cannot run the smoke vectors: {str(e).splitlines()[0]}"
                ) from e
            return dict(zip(names, values, strict=True))

        result = self_test(self.manifest.smoke, run)
        if raise_on_failure and not result.passed:
            raise SelfTestError(
                f"the smoke vectors give other outputs on this runtime than "
                f"the exporter's: {result.describe()}"
            )
        return result

    def decision_function(self, data: Any, *, timeout: float | None = None) -> np.ndarray:
        """What the original's ``decision_function`` gives (e.g. SVC without probabilities)."""
        return self._method("decision_function", data, timeout)
