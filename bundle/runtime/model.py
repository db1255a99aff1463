"""Running a verified bundle with onnxruntime: providers, input checks, outputs.

The session is built from the verified graph bytes; the weights never pass
through protobuf (so no 2 GB limit). Each initializer's external-data location
becomes the bundle's file name and its offset moves by the weights entry's data
offset in the zip, with the session told the bundle's directory. Then either

- (default) the weights read into memory while they were hashed are handed to
  onnxruntime as initializers over that very buffer (no copy on CPU; to prepack
  them, or for a GPU provider, onnxruntime copies them and the buffer is let
  go): what runs is exactly what was hashed; or
- (``zero_copy=True``) onnxruntime maps the weights straight from the bundle
  file -- nothing is read at load, pages are shared between processes -- but a
  local writer of the file can change them (SECURITY.md, time of check).

Prepacking (onnxruntime re-laying MatMul/Gemm weights at session creation) is a
choice per model size, :data:`PREPACK_MAX_BYTES`; ``prepack=`` overrides it.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DeviceError, InputError, RunTimeoutError
from ..format.manifest import Manifest, TensorSpec
from ..trust.verify import VerifyReport
from .native import quiet_native_stderr

__all__ = ["PREPACK_MAX_BYTES", "Model", "create_session", "select_providers"]

PREPACK_MAX_BYTES = 256 << 20
"""Default: prepack weights up to this size. Measured (benchmarks/load_options.py): it
makes batch predicts ~1.4-1.5x and single rows ~1.1x faster, but costs ~3 ms per MB
at session creation and a second copy of the weights in memory -- worth it for small
models, not by default for multi-GB ones (``prepack=True`` still asks for it)."""

_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
              "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
              "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
              "bool": np.bool_, "string": object}

_probe_lock = threading.Lock()
_cuda_ok: bool | None = None


def _nvidia_driver_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return os.path.exists("/proc/driver/nvidia/version")
    return True


def _cuda_usable(ort: Any) -> bool:
    """Whether a CUDA session really initialises here (probed once per process, quietly)."""
    global _cuda_ok
    with _probe_lock:
        if _cuda_ok is None:
            _cuda_ok = False
            if "CUDAExecutionProvider" in ort.get_available_providers() and \
                    _nvidia_driver_present():
                from onnx import TensorProto, helper

                g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
                m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
                m.ir_version = 8
                with quiet_native_stderr():
                    if hasattr(ort, "preload_dlls"):
                        with contextlib.suppress(Exception):
                            ort.preload_dlls()
                    try:
                        s = ort.InferenceSession(m.SerializeToString(),
                                                 providers=["CUDAExecutionProvider"])
                        _cuda_ok = "CUDAExecutionProvider" in s.get_providers()
                    except Exception:
                        _cuda_ok = False
        return _cuda_ok


def _tensorrt_usable(ort: Any) -> bool:
    return "TensorrtExecutionProvider" in ort.get_available_providers() and _cuda_usable(ort)


def select_providers(device: str, provider_options: Mapping[str, Any] | None = None,
                     ) -> list[Any]:
    """onnxruntime providers for ``device``: auto, cpu, cuda, cuda:N, tensorrt[:N].

    ``provider_options`` (device id, ``gpu_mem_limit``, TensorRT's ``trt_fp16_enable``,
    ``trt_engine_cache_enable``/``trt_engine_cache_path``...) go to the GPU provider.
    An engine cache path is the caller's directory: nothing is ever read from the bundle.
    """
    import onnxruntime as ort

    options = dict(provider_options or {})
    kind, _, index = device.partition(":")
    if index and not index.isdigit():
        raise DeviceError(f"device {device!r}: expected {kind} or {kind}:N")
    if index:
        options.setdefault("device_id", index)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "auto":
        if _cuda_usable(ort):
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers() and \
                _nvidia_driver_present():
            warnings.warn("CUDA is available to onnxruntime but failed to initialise (missing "
                          "CUDA/cuDNN libraries? install model-bundle[gpu]); running on CPU",
                          RuntimeWarning, stacklevel=3)
        return ["CPUExecutionProvider"]
    if kind in ("cuda", "tensorrt"):
        usable = _tensorrt_usable(ort) if kind == "tensorrt" else _cuda_usable(ort)
        if not usable:
            raise DeviceError(f"device {device!r} requested but {kind.upper()} cannot run here: "
                              f"onnxruntime providers {ort.get_available_providers()}, and a "
                              "CUDA session failed to initialise (driver, CUDA or cuDNN "
                              "libraries missing). Use device='cpu' or 'auto'")
        cuda = ("CUDAExecutionProvider",
                {k: v for k, v in options.items() if not k.startswith("trt_")})
        if kind == "tensorrt":
            trt = {k: v for k, v in options.items() if k.startswith("trt_") or k == "device_id"}
            return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]
        return [cuda, "CPUExecutionProvider"]
    raise DeviceError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or "
                      "'tensorrt'")


def _as_array(name: str, value: Any) -> np.ndarray:
    """np.asarray, with a ragged or absurdly nested sequence reported as the caller's input."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RecursionError) as e:
        raise InputError(f"input {name!r} is not a rectangular array (rows of different "
                         f"lengths?): {' '.join(str(e).split())[:200]}", entry=name) from e


def _to_input(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    arr = _as_array(name, value)
    want = _NP_DTYPES.get(spec.dtype)
    if want is None:
        raise InputError(f"input {name!r} has unsupported type {spec.dtype}")
    if want is object:
        if arr.dtype.kind not in "OUS":
            raise InputError(f"input {name!r} expects strings, got {arr.dtype}", entry=name)
        arr = arr.astype(str).astype(object)
    elif np.dtype(want).kind == "f":
        if arr.dtype.kind not in "fiub":
            raise InputError(f"input {name!r} expects numbers ({spec.dtype}), got {arr.dtype}",
                             entry=name)
        arr = arr.astype(want, copy=False)
    elif np.dtype(want).kind in "iu":
        if arr.dtype.kind not in "iub":
            raise InputError(f"input {name!r} expects integers ({spec.dtype}), got "
                             f"{arr.dtype}", entry=name)
        arr = arr.astype(want, copy=False)
    elif arr.dtype != want:
        raise InputError(f"input {name!r} expects {spec.dtype}, got {arr.dtype}", entry=name)
    if spec.shape:
        if arr.ndim != len(spec.shape):
            raise InputError(f"input {name!r} expects {len(spec.shape)}-D data of shape "
                             f"{_fmt(spec.shape)}, got shape {arr.shape}", entry=name)
        for i, (d, n) in enumerate(zip(spec.shape, arr.shape, strict=True)):
            if isinstance(d, int) and d != n:
                raise InputError(f"input {name!r} expects shape {_fmt(spec.shape)}, got "
                                 f"{arr.shape} (axis {i} must be {d})", entry=name)
    return arr


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _initializer_values(model: Any, header: Any, weights: Any) -> dict[str, Any]:
    """OrtValues over the verified in-memory weights, one per external initializer.

    Read-only numpy views of the buffer, no copies; bfloat16 (which numpy lacks)
    goes as uint16 with its ONNX type.
    """
    from onnxruntime import OrtValue

    from ..format.weights import numpy_dtype

    buf = np.frombuffer(weights, dtype=np.uint8)
    buf.flags.writeable = False
    out = {}
    for init in model.graph.initializer:
        if not len(init.external_data):
            continue
        t = header.tensors[init.name]
        raw = buf[header.data_start + t.begin:header.data_start + t.end]
        dtype = numpy_dtype(t)
        if dtype is None:
            out[init.name] = OrtValue.ortvalue_from_numpy_with_onnx_type(
                raw.view("<u2").reshape(t.shape), t.onnx_type)
        else:
            out[init.name] = OrtValue.ortvalue_from_numpy(
                raw.view(np.dtype(dtype).newbyteorder("<")).reshape(t.shape))
    return out


INLINE_MAX_BYTES = 4096
"""Initializers up to this size go into the graph at load (see graph.inline_small_external)."""


def _reader(weights: Any, path: str, base: int) -> Any:
    """``(offset, length) -> bytes`` of the weights entry: from memory, or from the file."""
    if weights is not None:
        view = memoryview(weights)
        return lambda off, n: bytes(view[off:off + n])

    def read(off: int, n: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(base + off)
            data = f.read(n)
        if len(data) != n:
            from ..errors import IntegrityError

            raise IntegrityError(f"{os.path.basename(path)} changed after it was verified")
        return data
    return read


def create_session(model: Any, header: Any, bundle_path: str, weights_offset: int,
                   weights: Any, providers: list[Any],
                   session_options: Any = None, prepack: bool | None = None,
                   ) -> tuple[Any, Any]:
    """An onnxruntime session over a checked graph; returns it and what it must keep alive.

    ``weights`` is the verified in-memory weights entry, or None to let onnxruntime
    map them from ``bundle_path`` (zero copy). ``prepack`` None: by
    :data:`PREPACK_MAX_BYTES`.
    """
    import onnxruntime as ort

    from ..errors import FormatError
    from ..format.graph import inline_small_external, rebase_external

    so = session_options or ort.SessionOptions()
    so.log_severity_level = 3
    abspath = os.path.abspath(bundle_path)
    inline_small_external(model, _reader(weights, abspath, weights_offset), INLINE_MAX_BYTES)
    rebase_external(model, os.path.basename(abspath), weights_offset)
    so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                os.path.dirname(abspath))
    size = sum(t.end - t.begin for t in header.tensors.values())
    if prepack is None:
        prepack = size <= PREPACK_MAX_BYTES
    so.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    keep: Any = None
    if weights is not None:
        values = _initializer_values(model, header, weights)
        cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider"
                       for p in providers)
        if cpu_only and not prepack:  # used in place: the buffer lives as long as the session
            for name, value in values.items():
                so.add_initializer(name, value)
            keep = (weights, values)
        elif values:
            # onnxruntime copies them (to the device, or to repack them), then frees
            # what it repacked; the verified buffer is dropped once the session exists.
            so.add_external_initializers(list(values), list(values.values()))
    try:
        session = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    except Exception as e:
        raise FormatError(f"onnxruntime cannot load the verified graph: "
                          f"{str(e).splitlines()[0]}") from e
    return session, keep


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds (or None "
                         f"for no limit), not {timeout!r}")
    return float(timeout)


class _Deadline:
    """Run options whose ``terminate`` flag a timer sets once ``timeout`` seconds pass.

    onnxruntime checks the flag before each kernel, also inside a Loop's or Scan's
    body, so a signed graph that computes for ever (a Loop with a trip count of
    2**60) stops within one kernel's time and the session stays usable; a fresh
    RunOptions per call means the next call is not stopped at once. No timeout: no
    options, no thread.
    """

    def __init__(self, timeout: object) -> None:
        self.timeout = _check_timeout(timeout)
        self.options: Any = None
        self._timer: threading.Timer | None = None
        self._fired = threading.Event()

    def __enter__(self) -> _Deadline:
        if self.timeout is not None:
            import onnxruntime as ort

            self.options = ort.RunOptions()
            self.options.log_severity_level = 4  # reported as RunTimeoutError, not logged too
            self._timer = threading.Timer(self.timeout, self._stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _stop(self) -> None:
        self._fired.set()
        self.options.terminate = True

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def raise_if_expired(self, e: Exception, what: str) -> None:
        """Raise RunTimeoutError for a failure the timer caused (``e`` says why it stopped)."""
        if self._fired.is_set():
            raise RunTimeoutError(f"{what} did not finish within {self.timeout:g} s; "
                                  "onnxruntime stopped it") from e


class Model:
    """A verified bundle, ready to run. Made by :func:`bundle.load`."""

    def __init__(self, session: Any, manifest: Manifest, report: VerifyReport,
                 keepalive: Any = None) -> None:
        self._session = session
        self._keepalive = keepalive  # the verified weights a CPU session runs on, in place
        self.manifest = manifest
        self.report = report
        self._inputs = {s.name: s for s in manifest.inputs}

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
        return (f"<bundle.Model {m.name!r} v{m.version} ({m.framework} {m.task}), "
                f"providers={self.providers}>")

    # -- inputs

    def _feeds(self, data: Any) -> dict[str, np.ndarray]:
        columns = self.manifest.columns
        if columns:
            if not (hasattr(data, "columns") or isinstance(data, Mapping)):
                raise InputError("this model takes a table: give a pandas DataFrame (or a dict "
                                 f"of columns) with columns {[c.name for c in columns]}")
            have = set(data.columns) if hasattr(data, "columns") else set(data)
            missing = [c.name for c in columns if c.name not in have]
            if missing:
                raise InputError(f"missing column(s) {missing}; the model needs "
                                 f"{[c.name for c in columns]}")
            feeds = {}
            for c in columns:
                col = data[c.name]
                values = col.to_numpy() if hasattr(col, "to_numpy") else _as_array(c.name, col)
                if c.kind == "string":
                    values = _as_array(c.name, values).astype(str)
                feeds[c.input] = _to_input(c.name, _as_array(c.name, values).reshape(-1, 1),
                                           self._inputs[c.input])
            return feeds
        specs = self.manifest.inputs
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - self._inputs.keys())
            missing = sorted(self._inputs.keys() - set(data))
            if unknown or missing:
                raise InputError(f"inputs must be exactly {sorted(self._inputs)}; missing "
                                 f"{sorted(missing)}, unknown {sorted(unknown)}")
            return {k: _to_input(k, v, self._inputs[k]) for k, v in data.items()}
        if isinstance(data, (tuple, list)) and len(specs) > 1:
            if len(data) != len(specs):
                raise InputError(f"the model has {len(specs)} inputs "
                                 f"{[s.name for s in specs]}, got {len(data)} values")
            return {s.name: _to_input(s.name, v, s) for s, v in zip(specs, data, strict=True)}
        if len(specs) != 1:
            raise InputError(f"the model has {len(specs)} inputs {[s.name for s in specs]}: "
                             "pass a dict of name -> array")
        return {specs[0].name: _to_input(specs[0].name, data, specs[0])}

    # -- running

    def run(self, inputs: Any, outputs: Sequence[str] | None = None, *,
            timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run the graph; return every (or each named) output by name.

        ``timeout``: seconds the run may take (None: no limit); past it onnxruntime
        is stopped and :class:`RunTimeoutError` raised. A signed graph can compute
        for as long as its author wants: pass one for bundles you did not write.
        """
        deadline = _Deadline(timeout)
        feeds = self._feeds(inputs)
        names = list(outputs) if outputs else [o.name for o in self.manifest.outputs]
        unknown = set(names) - {o.name for o in self.manifest.outputs}
        if unknown:
            raise InputError(f"unknown output(s) {sorted(unknown)}")
        try:
            with deadline:
                values = self._session.run(names, feeds, deadline.options)
        except Exception as e:  # onnxruntime raises its own exception types
            deadline.raise_if_expired(e, "the run")
            raise InputError(f"onnxruntime refused the input: {str(e).splitlines()[0]}") from e
        return dict(zip(names, values, strict=True))

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
        return {k: OrtValue.ortvalue_from_numpy(v, kind, index)
                for k, v in self._feeds(inputs).items()}

    def run_bound(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None, *,
                  timeout: float | None = None) -> dict[str, np.ndarray]:
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
        out = self.run(data, [spec.output], timeout=timeout)[spec.output]
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

    def decision_function(self, data: Any, *, timeout: float | None = None) -> np.ndarray:
        """What the original's ``decision_function`` gives (e.g. SVC without probabilities)."""
        return self._method("decision_function", data, timeout)
