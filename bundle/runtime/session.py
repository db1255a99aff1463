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
choice per model size, :data:`PREPACK_MAX_BYTES`; ``prepack=`` overrides it. Where
the size chose it (``prepack=None``, CPU, weights in memory, the loader's own
session options), it is done lazily: the first session runs on the verified buffer
at once, unpacked, and a prepacked one is built beside it (:class:`Deferred`) and
takes over when ready -- a 100 MB MLP's session took ~0.1 s longer to create
prepacked, more than its first prediction, which does not need it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DeviceError
from .native import quiet_native_stderr

__all__ = [
    "INLINE_MAX_BYTES",
    "PREPACK_MAX_BYTES",
    "Deferred",
    "create_session",
    "select_providers",
]

PREPACK_MAX_BYTES = 256 << 20


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
            if (
                "CUDAExecutionProvider" in ort.get_available_providers()
                and _nvidia_driver_present()
            ):
                from onnx import TensorProto, helper

                g = helper.make_graph(
                    [helper.make_node("Identity", ["x"], ["y"])],
                    "probe",
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                )
                m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
                m.ir_version = 8
                with quiet_native_stderr():
                    if hasattr(ort, "preload_dlls"):
                        with contextlib.suppress(Exception):
                            ort.preload_dlls()
                    try:
                        s = ort.InferenceSession(
                            m.SerializeToString(), providers=["CUDAExecutionProvider"]
                        )
                        _cuda_ok = "CUDAExecutionProvider" in s.get_providers()
                    except Exception:
                        _cuda_ok = False
        return _cuda_ok


def _tensorrt_usable(ort: Any) -> bool:
    return "TensorrtExecutionProvider" in ort.get_available_providers() and _cuda_usable(ort)


def select_providers(
    device: str,
    provider_options: Mapping[str, Any] | None = None,
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
        if "CUDAExecutionProvider" in ort.get_available_providers() and _nvidia_driver_present():
            warnings.warn(
                "CUDA is available to onnxruntime but failed to initialise (missing "
                "CUDA/cuDNN libraries? install model-bundle[gpu]); running on CPU",
                RuntimeWarning,
                stacklevel=3,
            )
        return ["CPUExecutionProvider"]
    if kind in ("cuda", "tensorrt"):
        usable = _tensorrt_usable(ort) if kind == "tensorrt" else _cuda_usable(ort)
        if not usable:
            raise DeviceError(
                f"device {device!r} requested but {kind.upper()} cannot run here: "
                f"onnxruntime providers {ort.get_available_providers()}, and a "
                "CUDA session failed to initialise (driver, CUDA or cuDNN "
                "libraries missing). Use device='cpu' or 'auto'"
            )
        cuda = (
            "CUDAExecutionProvider",
            {k: v for k, v in options.items() if not k.startswith("trt_")},
        )
        if kind == "tensorrt":
            trt = {k: v for k, v in options.items() if k.startswith("trt_") or k == "device_id"}
            return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]
        return [cuda, "CPUExecutionProvider"]
    raise DeviceError(
        f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'tensorrt'"
    )


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
        raw = buf[header.data_start + t.begin : header.data_start + t.end]
        dtype = numpy_dtype(t)
        if dtype is None:
            out[init.name] = OrtValue.ortvalue_from_numpy_with_onnx_type(
                raw.view("<u2").reshape(t.shape), t.onnx_type
            )
        else:
            out[init.name] = OrtValue.ortvalue_from_numpy(
                raw.view(np.dtype(dtype).newbyteorder("<")).reshape(t.shape)
            )
    return out


INLINE_MAX_BYTES = 4096


def _reader(weights: Any, path: str, base: int) -> Any:
    """``(offset, length) -> bytes`` of the weights entry: from memory, or from the file."""
    if weights is not None:
        view = memoryview(weights)
        return lambda off, n: bytes(view[off : off + n])

    def read(off: int, n: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(base + off)
            data = f.read(n)
        if len(data) != n:
            from ..errors import IntegrityError

            raise IntegrityError(f"{os.path.basename(path)} changed after it was verified")
        return data

    return read


class Deferred:
    """What a session running on the verified buffer keeps alive, and its successor.

    ``buffers`` (the weights and their OrtValues) must live as long as the unpacked
    session. :meth:`build` makes the prepacked session: onnxruntime copies the
    initializers it is given and re-lays them, so the new session needs no buffer.
    """

    def __init__(self, buffers: Any, build: Any) -> None:
        self.buffers = buffers
        self._build = build

    def build(self) -> Any:
        """The prepacked session over the same verified bytes (seconds for large models)."""
        return self._build()


def create_session(
    model: Any,
    header: Any,
    bundle_path: str,
    weights_offset: int,
    weights: Any,
    providers: list[Any],
    session_options: Any = None,
    prepack: bool | None = None,
    *,
    lazy_prepack: bool = False,
) -> tuple[Any, Any]:
    """An onnxruntime session over a checked graph; returns it and what it must keep alive.

    ``weights`` is the verified in-memory weights entry, or None to let onnxruntime
    map them from ``bundle_path`` (zero copy). ``prepack`` None: by
    :data:`PREPACK_MAX_BYTES`. ``lazy_prepack``: when the size chose prepacking, the
    weights are in memory, the providers are the CPU's and no ``session_options``
    were given, return an unpacked session and a :class:`Deferred` that builds the
    prepacked one (the caller swaps it in).
    """
    import onnxruntime as ort

    from ..format.graph import inline_small_external, rebase_external

    so = session_options or ort.SessionOptions()
    so.log_severity_level = 3
    abspath = os.path.abspath(bundle_path)
    inline_small_external(model, _reader(weights, abspath, weights_offset), INLINE_MAX_BYTES)
    rebase_external(model, os.path.basename(abspath), weights_offset)
    so.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", os.path.dirname(abspath)
    )
    size = sum(t.end - t.begin for t in header.tensors.values())
    cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers)
    later = (
        lazy_prepack
        and prepack is None
        and size <= PREPACK_MAX_BYTES
        and weights is not None
        and cpu_only
        and session_options is None
    )
    if prepack is None:
        prepack = size <= PREPACK_MAX_BYTES and not later
    so.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    graph = model.SerializeToString()
    keep: Any = None
    values: dict[str, Any] = {}
    if weights is not None:
        values = _initializer_values(model, header, weights)
        if cpu_only and not prepack:  # used in place: the buffer lives as long as the session
            for name, value in values.items():
                so.add_initializer(name, value)
            keep = (weights, values)
        elif values:
            # onnxruntime copies them (to the device, or to repack them), then frees
            # what it repacked; the verified buffer is dropped once the session exists.
            so.add_external_initializers(list(values), list(values.values()))
    session = _session(ort, graph, so, providers)
    if later:

        def build() -> Any:
            packed = ort.SessionOptions()
            packed.log_severity_level = 3
            packed.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", os.path.dirname(abspath)
            )
            packed.add_session_config_entry("session.disable_prepacking", "0")
            if values:
                packed.add_external_initializers(list(values), list(values.values()))
            return _session(ort, graph, packed, providers)

        keep = Deferred(keep, build)
    return session, keep


def _session(ort: Any, graph: bytes, so: Any, providers: list[Any]) -> Any:
    from ..errors import FormatError

    try:
        return ort.InferenceSession(graph, so, providers=providers)
    except Exception as e:
        raise FormatError(
            f"onnxruntime cannot load the verified graph: {str(e).splitlines()[0]}"
        ) from e
