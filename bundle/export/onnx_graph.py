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

__all__ = [
    "NonStandardOperatorError",
    "adopt_state_names",
    "align_output_shapes",
    "all_graphs",
    "drop_non_tensor_outputs",
    "inline_functions",
    "rename_aside",
    "rename_values",
    "run_converted",
    "tidy",
]


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


def inline_functions(model: Any) -> None:
    """Inline model-local functions (the loader refuses them), matching their operator-set
    imports to the model's first where that changes no operator they use."""
    from onnx import inliner

    if len(model.functions):
        _align_function_opsets(model)
        inlined = inliner.inline_local_functions(model)
        model.CopyFrom(inlined)
        del model.functions[:]
        used = {n.domain for g in all_graphs(model.graph) for n in g.node}
        keep = [
            op for op in model.opset_import if op.domain in ("", "ai.onnx") or op.domain in used
        ]
        del model.opset_import[:]
        model.opset_import.extend(keep)


def tidy(model: Any) -> None:
    """Inline local functions, drop unused domains and exporter metadata; refuse custom ops."""
    from ..format.graph import allowed_op

    inline_functions(model)
    used = set()
    for g in all_graphs(model.graph):
        g.doc_string = ""
        del g.metadata_props[:]
        for node in g.node:
            used.add(node.domain)
            node.doc_string = ""
            del node.metadata_props[:]
            if not allowed_op(node.domain, node.op_type):
                raise NonStandardOperatorError(
                    f"the exported graph calls {node.domain}::{node.op_type}, which is not a "
                    "standard ONNX operator (a custom op without an ONNX translation); bundles "
                    "hold standard operators only"
                )
        for coll in (g.input, g.output, g.value_info, g.initializer):
            for item in coll:
                item.doc_string = ""
                del item.metadata_props[:]
    keep = [op for op in model.opset_import if op.domain in ("", "ai.onnx") or op.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.doc_string = ""
    del model.metadata_props[:]


def _align_function_opsets(model: Any) -> None:
    """Let local functions import the model's operator-set versions, where that changes
    no operator they use.

    onnx's inliner silently leaves a function in place when it imports another
    version of a domain than the model (skl2onnx's KNNImputer functions import
    ai.onnx 21 inside an opset-22 model), and the loader refuses local functions.
    A function's import is raised to the model's only when every operator it calls
    in that domain has the same definition at both versions.
    """
    from onnx import defs

    local = {f.domain for f in model.functions}
    versions = {(op.domain or "ai.onnx"): op.version for op in model.opset_import}
    for f in model.functions:
        for imp in f.opset_import:
            domain = imp.domain or "ai.onnx"
            want = versions.get(domain)
            if domain in local or want is None or want == imp.version:
                continue
            for node in f.node:
                if (node.domain or "ai.onnx") != domain:
                    continue
                schema_domain = "" if domain == "ai.onnx" else domain
                try:
                    old = defs.get_schema(node.op_type, imp.version, schema_domain).since_version
                    new = defs.get_schema(node.op_type, want, schema_domain).since_version
                except defs.SchemaError as e:
                    raise ConversionError(
                        f"local function {f.name}: {domain}.{node.op_type} is "
                        f"unknown at opset {imp.version} or {want}"
                    ) from e
                if old != new:
                    raise ConversionError(
                        f"local function {f.domain}.{f.name} uses {domain}.{node.op_type} "
                        f"from opset {imp.version}, which opset {want} (the model's) defines "
                        "differently; convert with target_opset="
                        f"{imp.version}"
                    )
            imp.version = want


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
                mapping[name] = _aside(name, taken)
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


def _aside(name: str, taken: set[str]) -> str:
    new, n = f"{name}.folded", 1
    while new in taken:
        n += 1
        new = f"{name}.folded{n}"
    taken.add(new)
    return new


def rename_aside(model: Any, names: set[str]) -> dict[str, str]:
    """Rename the initializers ``names`` to ``<name>.folded`` (or ``.folded2``...).

    For an initializer that carries a framework tensor's name but is known not to
    hold exactly its value (the rule of :func:`adopt_state_names`, decided by the
    caller). Returns old -> new name.
    """
    if not names:
        return {}
    graph = model.graph
    taken = {i.name for i in graph.initializer}
    taken |= {v.name for v in (*graph.input, *graph.output)}
    taken |= {o for n in graph.node for o in n.output}
    mapping = {i.name: _aside(i.name, taken) for i in graph.initializer if i.name in names}
    if mapping:
        rename_values(graph, mapping)
    return mapping


def run_converted(
    model: Any, feeds: Mapping[str, np.ndarray] | None, what: str
) -> dict[str, np.ndarray]:
    """Check a converter's graph the way :func:`bundle.load` will see it, before anything
    is signed: standard domains only (local functions are inlined by :func:`tidy`), an
    onnxruntime CPU session that builds, and -- with ``feeds`` -- a run on the sample.

    Returns every output by name ({} without feeds). A graph onnxruntime cannot load,
    or that fails on its own sample, raises :class:`ConversionError` naming ``what``
    and onnxruntime's reason: saving must never sign what loading then refuses.
    """
    import onnxruntime as ort

    from ..format.graph import allowed_op

    if len(model.functions):
        raise ConversionError(
            f"{what}: the graph still has local functions "
            f"({', '.join(sorted({f.domain for f in model.functions}))}); "
            "call tidy() first"
        )
    for g in all_graphs(model.graph):
        for node in g.node:
            if not allowed_op(node.domain, node.op_type):
                raise NonStandardOperatorError(
                    f"{what}: the graph calls {node.domain}::{node.op_type}, which is not a "
                    "standard ONNX operator; bundles hold standard operators only"
                )
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in inits and not vi.type.HasField("tensor_type"):
            raise ConversionError(
                f"{what}: input {vi.name!r} is a {vi.type.WhichOneof('value')} (an ONNX "
                "sequence or map), not a tensor. Bundles take tensors: the manifest describes "
                "each input's dtype and shape, and the loader checks what it is given against "
                "that before onnxruntime sees it. Feed a tensor (e.g. one [N, k] array) instead"
            )
    if not [i for i in model.graph.input if i.name not in inits]:
        raise ConversionError(
            f"{what}: the graph has no inputs (it computes a constant); a "
            "bundle's model must take at least one input"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is raised below with its reason; not logged too
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own exception types
        raise ConversionError(
            f"{what}: onnxruntime cannot load the converted graph, so a "
            f"bundle of it would not load either: {_first_line(e)}"
        ) from e
    if feeds is None:
        return {}
    names = [o.name for o in model.graph.output]
    try:
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))
    except Exception as e:
        raise ConversionError(
            f"{what}: onnxruntime cannot run the converted graph on the sample: {_first_line(e)}"
        ) from e


def drop_non_tensor_outputs(model: Any) -> list[str]:
    """Remove the graph outputs that are sequences or maps; return their names.

    A bundle's outputs are tensors (the manifest gives each a dtype and shape, and
    ``predict`` returns arrays). skl2onnx gives some estimators' probabilities as a
    sequence of tensors, one per target (``MultiOutputClassifier``); the tensor
    outputs beside it still make a working bundle, and the converter notes what
    was left out. Raises when no tensor output is left.
    """
    graph = model.graph
    dropped = [o.name for o in graph.output if not o.type.HasField("tensor_type")]
    if dropped and len(dropped) == len(graph.output):
        raise ConversionError(
            f"every output of the graph ({', '.join(dropped)}) is a sequence "
            "or map, not a tensor; bundles give tensors"
        )
    for idx in reversed(range(len(graph.output))):
        if graph.output[idx].name in dropped:
            del graph.output[idx]
    return dropped


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:400]


def align_output_shapes(model: Any, observed: Mapping[str, np.ndarray]) -> list[str]:
    """Make the declared output shapes agree with what the graph really gives.

    Converters sometimes declare a shape their graph does not produce (skl2onnx
    declares PLSRegression's output ``[N, n_features]``, OneVsOneClassifier's label
    ``[N]`` for a ``[N, 1]`` result). The manifest repeats the declared shape and
    ``predict`` squeezes by it, so a wrong one is replaced: axis 0 (the batch) stays
    as declared, every other axis takes the observed size. Returns the outputs changed.
    """
    changed = []
    for out in model.graph.output:
        arr = observed.get(out.name)
        tt = out.type.tensor_type
        if arr is None or not out.type.HasField("tensor_type"):
            continue
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(dims) == arr.ndim and all(
            f is None or f == n or i == 0
            for i, (f, n) in enumerate(zip(fixed, arr.shape, strict=True))
        ):
            continue
        batch = None
        if dims and arr.ndim:
            batch = dims[0].dim_param or None
        tt.shape.Clear()
        for i, n in enumerate(arr.shape):
            d = tt.shape.dim.add()
            if i == 0:
                d.dim_param = batch or "N"
            else:
                d.dim_value = int(n)
        changed.append(out.name)
    return changed
