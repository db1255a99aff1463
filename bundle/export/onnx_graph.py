"""ONNX-graph helpers both framework exporters use once they hold an ONNX model.

Walking every (sub)graph, renaming values consistently through subgraphs,
naming initializers after the framework tensors they hold exactly, and tidying
an exporter's output down to standard operators without metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..training.codec import same_tensor

__all__ = ["NonStandardOperatorError", "adopt_state_names", "all_graphs", "rename_values",
           "tidy"]


class NonStandardOperatorError(ConversionError):
    """The exported graph calls an operator outside the standard ONNX domains.

    A type of its own so that the PyTorch exporter can tell it from other
    failures and try the TorchScript exporter, which may translate the op.
    """


def all_graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph nested in its nodes' attributes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from all_graphs(attr.g)
            for g in attr.graphs:
                yield from all_graphs(g)


def tidy(model: Any) -> None:
    """Inline local functions, drop unused domains and exporter metadata; refuse custom ops."""
    from onnx import inliner

    from ..format.graph import STANDARD_DOMAINS

    if len(model.functions):
        inlined = inliner.inline_local_functions(model)
        model.CopyFrom(inlined)
        del model.functions[:]
    used = set()
    for g in all_graphs(model.graph):
        g.doc_string = ""
        del g.metadata_props[:]
        for node in g.node:
            used.add(node.domain)
            node.doc_string = ""
            del node.metadata_props[:]
            if node.domain not in STANDARD_DOMAINS:
                raise NonStandardOperatorError(
                    f"the exported graph calls {node.domain}::{node.op_type}, which is not a "
                    "standard ONNX operator (a custom op without an ONNX translation); bundles "
                    "hold standard operators only")
        for coll in (g.input, g.output, g.value_info, g.initializer):
            for item in coll:
                item.doc_string = ""
                del item.metadata_props[:]
    keep = [op for op in model.opset_import if op.domain in ("", "ai.onnx") or op.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.doc_string = ""
    del model.metadata_props[:]


def rename_values(graph: Any, mapping: dict[str, str]) -> None:
    """Rename values throughout ``graph`` and the subgraphs that see them."""
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for vi in (*graph.input, *graph.output, *graph.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                local = {v.name for v in (*sub.input, *sub.initializer)}
                local |= {o for n in sub.node for o in n.output}
                inner = {k: v for k, v in mapping.items() if k not in local}
                if inner:
                    rename_values(sub, inner)


def adopt_state_names(model: Any, state: Mapping[str, np.ndarray | None]) -> None:
    """Name initializers after the framework tensors they hold exactly.

    An initializer carrying a tensor's name but holding something else (a fused
    or transposed weight) is renamed away from it; one with an exporter name
    (``onnx::MatMul_12``) holding a tensor's exact value takes that tensor's name.
    A name in ``weights.safetensors`` then always means that tensor's exact value.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    taken = set(inits) | {v.name for v in (*model.graph.input, *model.graph.output)}
    taken |= {o for n in model.graph.node for o in n.output}
    mapping: dict[str, str] = {}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        if name not in values:
            values[name] = numpy_helper.to_array(inits[name])
        return values[name]

    # 1. a parameter's name on something that is not that parameter's value: move it aside
    for name in list(inits):
        if name in state:
            want = state[name]
            if want is None or not same_tensor(value(name), want):
                new, n = f"{name}.folded", 1
                while new in taken:
                    n += 1
                    new = f"{name}.folded{n}"
                taken.add(new)
                mapping[name] = new
    claimed = {n for n in inits if n in state and n not in mapping}
    # 2. an exporter-named initializer holding a parameter's exact value: give it that name
    layout: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for name, arr in state.items():
        if arr is not None and name not in claimed:
            layout.setdefault((arr.dtype.str, arr.shape), []).append(name)
    for name in inits:
        if name in claimed or (name in state and name not in mapping):
            continue
        try:
            arr = value(name)
        except Exception:  # noqa: S112 - types numpy cannot hold keep their names
            continue
        for candidate in layout.get((arr.dtype.str, arr.shape), []):
            if candidate in claimed or (candidate in taken and candidate not in mapping):
                continue
            want = state[candidate]
            if want is not None and same_tensor(arr, want):
                mapping[name] = candidate
                claimed.add(candidate)
                taken.add(candidate)
                break
    if mapping:
        rename_values(model.graph, mapping)
