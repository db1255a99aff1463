"""Plain ONNX: an ``onnx.ModelProto`` or a ``.onnx`` file converted elsewhere.

Its initializers move into the safetensors entry like any other model's. With
no original framework at hand there is nothing to measure parity against, so
the manifest records no parity; ``predict`` gives the first output.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..manifest import Method
from . import Converted


def convert(model: Any, sample_input: Any = None, **_: Any) -> Converted:
    """Take an ONNX model as it is (a copy of it: the caller's object is not changed)."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            proto = onnx.load(path, load_external_data=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConversionError(f"cannot read ONNX model {path}: {e}") from e
    elif isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        raise ConversionError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"the ONNX model is invalid: {str(e).splitlines()[0]}") from e
    if not proto.graph.output:
        raise ConversionError("the ONNX model has no outputs")
    from ..graph import io_specs

    inputs, _ = io_specs(proto)
    feeds = None
    if sample_input is not None:
        if isinstance(sample_input, dict):
            feeds = {k: np.asarray(v) for k, v in sample_input.items()}
        elif len(inputs) == 1:
            feeds = {inputs[0].name: np.asarray(sample_input)}
        else:
            raise ConversionError(f"the model has {len(inputs)} inputs: give sample_input as a "
                                  "dict of input name -> array")
    return Converted(
        model=proto, task="generic", framework="onnx", framework_version=str(proto.ir_version),
        converter=proto.producer_name or "onnx", converter_version=proto.producer_version,
        feeds=feeds, reference={}, methods={"predict": Method(proto.graph.output[0].name)})
