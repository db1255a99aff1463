"""Running a verified bundle with onnxruntime: providers, input checks, outputs.

The session is built from the verified graph bytes. Weights are either inlined
from the verified in-memory copy, or -- for large weights -- read by
onnxruntime straight from the bundle file: each initializer's external-data
location becomes the bundle's file name and its offset moves by the weights
entry's data offset in the zip, with the session told the bundle's directory.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._verify import VerifyReport
from .errors import DeviceError, InputError
from .manifest import Manifest, TensorSpec

__all__ = ["Model", "select_providers"]

_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
              "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
              "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
              "bool": np.bool_, "string": object}

_probe_lock = threading.Lock()
_cuda_ok: bool | None = None


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence native-library chatter on fd 2 (onnxruntime's missing-CUDA wall of text)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
                with _quiet_native_stderr():
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


def _to_input(name: str, value: Any, spec: TensorSpec) -> np.ndarray:
    arr = np.asarray(value)
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


class Model:
    """A verified bundle, ready to run. Made by :func:`bundle.load`."""

    def __init__(self, session: Any, manifest: Manifest, report: VerifyReport) -> None:
        self._session = session
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
                values = col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)
                if c.kind == "string":
                    values = np.asarray(values).astype(str)
                feeds[c.input] = _to_input(c.name, np.asarray(values).reshape(-1, 1),
                                           self._inputs[c.input])
            return feeds
        specs = self.manifest.inputs
        if isinstance(data, Mapping):
            unknown = set(data) - self._inputs.keys()
            missing = self._inputs.keys() - set(data)
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

    def run(self, inputs: Any, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph; return every (or each named) output by name."""
        feeds = self._feeds(inputs)
        names = list(outputs) if outputs else [o.name for o in self.manifest.outputs]
        unknown = set(names) - {o.name for o in self.manifest.outputs}
        if unknown:
            raise InputError(f"unknown output(s) {sorted(unknown)}")
        try:
            values = self._session.run(names, feeds)
        except Exception as e:  # onnxruntime raises its own exception types
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

    def run_bound(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
                  ) -> dict[str, np.ndarray]:
        """Run with IO binding: device-resident inputs (from :meth:`to_device`) stay put."""
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
            self._session.run_with_iobinding(binding)
        except Exception as e:
            raise InputError(f"onnxruntime refused the input: {str(e).splitlines()[0]}") from e
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))

    def _method(self, method: str, data: Any) -> np.ndarray:
        spec = self.manifest.methods.get(method)
        if spec is None:
            offered = sorted(self.manifest.methods)
            raise InputError(f"this model offers no {method}(); it offers {offered} and run()")
        out = self.run(data, [spec.output])[spec.output]
        return out.reshape(out.shape[:-1]) if spec.squeeze else out

    def predict(self, data: Any) -> np.ndarray:
        """What the original model's ``predict`` gives (labels for a classifier)."""
        if "predict" not in self.manifest.methods and "transform" in self.manifest.methods:
            return self._method("transform", data)
        return self._method("predict", data)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities (scikit-learn classifiers)."""
        return self._method("predict_proba", data)

    def transform(self, data: Any) -> np.ndarray:
        """What the original's ``transform`` gives (scalers, encoders, clusterers...)."""
        return self._method("transform", data)

    def decision_function(self, data: Any) -> np.ndarray:
        """What the original's ``decision_function`` gives (e.g. SVC without probabilities)."""
        return self._method("decision_function", data)
