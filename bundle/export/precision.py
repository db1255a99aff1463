"""Reduced-precision variants: fp16 weights and compute, or int8 dynamic quantization.

Applied to the converted ONNX model before parity is measured, so the parity
recorded in the manifest is the deviation of the *compressed* model from the
original framework's output. Both transforms emit standard-domain operators
only (the loader refuses anything else):

- ``fp16``: onnxconverter-common's ``convert_float_to_float16`` with
  ``keep_io_types=True``: inputs and outputs keep their original types, the
  ML-domain operators (trees, linear classifiers...) stay in float32 through
  its default block list, and Cast nodes are inserted at the boundaries.
- ``int8``: onnxruntime's ``quantize_dynamic`` (per-tensor, signed int8
  weights, activations quantized at run time): MatMul/Gemm become
  DynamicQuantizeLinear + MatMulInteger.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import TYPE_CHECKING

from ..errors import ConversionError

if TYPE_CHECKING:
    import onnx

__all__ = ["DEFAULT_TOLERANCE", "PRECISIONS", "apply"]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2), "int8": (5e-2, 5e-2)}
"""Default (atol, rtol) per precision; the deviation is measured and recorded either way."""


def apply(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """Return ``model`` converted to ``precision`` (the input is not modified)."""
    if precision not in PRECISIONS:
        raise ConversionError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    if precision == "fp32":
        return model
    if precision == "fp16":
        return _fp16(model)
    return _int8(model)


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ConversionError(
            "precision='fp16' needs onnxconverter-common: pip install 'model-bundle[compress]'"
        ) from e
    try:
        converted: onnx.ModelProto = float16.convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False
        )
        return converted
    except Exception as e:  # the converter raises bare exceptions
        raise ConversionError(f"float16 conversion failed: {str(e).splitlines()[0]}") from e


def _int8(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The PyTorch exporter records value_info for initializers; once the quantizer
    # rewrites a weight (e.g. a transposed MatMul operand) that stale shape contradicts
    # what shape inference derives and quantization fails. The graph's own inference
    # recomputes them, so they are dropped from a copy (the input is not modified).
    inits = {i.name for i in model.graph.initializer}
    if any(vi.name in inits for vi in model.graph.value_info):
        stripped = onnx.ModelProto()
        stripped.CopyFrom(model)
        keep = [vi for vi in stripped.graph.value_info if vi.name not in inits]
        del stripped.graph.value_info[:]
        stripped.graph.value_info.extend(keep)
        model = stripped
    quant_logger = logging.getLogger()
    level = quant_logger.level
    with tempfile.TemporaryDirectory(prefix="model-bundle-int8-") as tmp:
        out = os.path.join(tmp, "model.int8.onnx")
        quant_logger.setLevel(logging.ERROR)  # its "consider pre-processing" advice is noise
        try:
            quantize_dynamic(
                model,
                out,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                use_external_data_format=model.ByteSize() > (1 << 30),
            )
            quantized = onnx.load(out, load_external_data=True)
        except Exception as e:
            raise ConversionError(f"int8 quantization failed: {str(e).splitlines()[0]}") from e
        finally:
            quant_logger.setLevel(level)
    return quantized
