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
from ..format.manifest import Method
from . import Converted


def convert(model: Any, sample_input: Any = None, **_: Any) -> Converted:
    """Take an ONNX model as it is (a copy of it: the caller's object is not changed)."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            # External data stays on disk: the writer streams it into the bundle, so a
            # model of any size (a single tensor over 2 GB too) never enters protobuf.
            proto = onnx.load(path, load_external_data=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConversionError(f"cannot read ONNX model {path}: {e}") from e
    elif isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        raise ConversionError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    try:
        # A path is checked as a path: the checker then finds external data beside it.
        onnx.checker.check_model(
            path if isinstance(model, (str, os.PathLike)) else proto, full_check=False
        )
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"the ONNX model is invalid: {str(e).splitlines()[0]}") from e
    if not proto.graph.output:
        raise ConversionError("the ONNX model has no outputs")
    _check_loadable(proto)
    if isinstance(model, (str, os.PathLike)):
        _resolve_external_data(proto, os.path.dirname(os.path.abspath(os.fspath(model))))
    from ..format.graph import io_specs

    input_specs = io_specs(proto)[0]
    feeds = None
    if sample_input is not None:
        if isinstance(sample_input, dict):
            feeds = {k: np.asarray(v) for k, v in sample_input.items()}
        elif len(input_specs) == 1:
            feeds = {input_specs[0].name: np.asarray(sample_input)}
        else:
            raise ConversionError(
                f"the model has {len(input_specs)} inputs: give sample_input "
                "as a dict of input name -> array"
            )
    return Converted(
        model=proto,
        task="generic",
        framework="onnx",
        framework_version=str(proto.ir_version),
        converter=proto.producer_name or "onnx",
        converter_version=proto.producer_version,
        feeds=feeds,
        reference={},
        methods={"predict": Method(proto.graph.output[0].name)},
    )


def _check_loadable(proto: Any) -> None:
    """What the loader would refuse, refused (or fixed) before anything is signed:
    model-local functions are inlined, other domains named, a graph without inputs
    or with sequence/map inputs and outputs explained."""
    from ..format.graph import allowed_op
    from .onnx_graph import NonStandardOperatorError, all_graphs, inline_functions

    inline_functions(proto)
    for g in all_graphs(proto.graph):
        for node in g.node:
            if not allowed_op(node.domain, node.op_type):
                raise NonStandardOperatorError(
                    f"node {node.name or node.op_type!r} is {node.domain}::{node.op_type}, "
                    "not a standard ONNX operator: load() refuses custom and preview domains, "
                    "so the bundle is not written"
                )
    inits = {i.name for i in proto.graph.initializer}
    if not [i for i in proto.graph.input if i.name not in inits]:
        raise ConversionError(
            "the ONNX model has no inputs (it computes a constant); a "
            "bundle's model takes at least one input, which load() checks "
            "and predict() feeds"
        )
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for vi in values:
            if vi.name not in inits and not vi.type.HasField("tensor_type"):
                what = vi.type.WhichOneof("value") or "value of no declared type"
                raise ConversionError(
                    f"graph {kind} {vi.name!r} is a {what}, not a tensor: a bundle's inputs "
                    "and outputs are "
                    "tensors, each with a dtype and shape in the manifest that load() checks; "
                    "wrap the sequence (e.g. SequenceAt/ConcatFromSequence) into a tensor"
                )


def _resolve_external_data(proto: Any, base: str) -> None:
    """Point each main-graph initializer's external data at its file's absolute path.

    As onnx does when loading, the file must lie inside the model's directory
    (no ``..``, no absolute location, no symlink out of it) and hold the range.
    """
    from onnx import TensorProto
    from onnx.external_data_helper import (
        _get_attribute_tensors,
        _get_initializer_tensors,
        load_external_data_for_tensor,
    )

    root = os.path.realpath(base)
    elsewhere = [
        *list(_get_initializer_tensors(proto))[len(proto.graph.initializer) :],
        *_get_attribute_tensors(proto),
    ]
    for t in elsewhere:  # subgraphs and attributes: inline, as onnx.load did
        if t.data_location == TensorProto.EXTERNAL:
            load_external_data_for_tensor(t, base)
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]
    for init in proto.graph.initializer:
        if init.data_location != TensorProto.EXTERNAL:
            continue
        ext = {e.key: e for e in init.external_data}
        loc = ext["location"].value if "location" in ext else ""
        target = os.path.realpath(os.path.join(root, loc))
        if not loc or os.path.isabs(loc) or os.path.commonpath([root, target]) != root:
            raise ConversionError(
                f"initializer {init.name!r}: external data location {loc!r} "
                "is not a file inside the model's directory"
            )
        try:
            offset = int(ext["offset"].value) if "offset" in ext else 0
            length = int(ext["length"].value) if "length" in ext else None
            size = os.path.getsize(target)
        except (ValueError, OSError) as e:
            raise ConversionError(f"initializer {init.name!r}: external data {loc!r}: {e}") from e
        if offset < 0 or offset + (length or 0) > size:
            raise ConversionError(
                f"initializer {init.name!r}: external data range runs past the end of {loc!r}"
            )
        ext["location"].value = target
