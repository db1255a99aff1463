"""The ONNX graph: what a loader accepts, and how its weights are bound at load.

Runs only on verified bytes. Checks, recursively through subgraphs: nodes only in
the standard domains (``ai.onnx``/``""`` and ``ai.onnx.ml``) -- with one named
exception, onnxruntime's ``com.microsoft.Tokenizer`` (see
:data:`ALLOWED_CONTRIB_OPS`) -- no ``EPContext`` nodes (they carry precompiled
engines), no model-local functions, external data only on main-graph initializers
and only as an exact reference to a tensor of the bundle's own safetensors entry
(location, offset, length, dtype and shape all matching its header). Any other
location -- ``../x``, absolute paths, onnxruntime's in-memory marker -- is refused,
and so is an external initializer that also carries inline data (in any TensorProto
data field). Sparse tensors (sparse initializers, ``Constant.sparse_value``) are
refused: onnxruntime densifies them at load, to a size the signer chooses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, UntrustedContentError
from .manifest import TensorSpec
from .onnx_proto import ONNX_VERSION, message_class
from .weights import WEIGHTS_NAME, Header

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ALLOWED_CONTRIB_OPS",
    "STANDARD_DOMAINS",
    "allowed_op",
    "check_graph",
    "io_specs",
    "parse_model",
]

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

ALLOWED_CONTRIB_OPS = frozenset({("com.microsoft", "Tokenizer")})
"""Non-standard operators a graph may still use, each by name. ``Tokenizer`` is how
skl2onnx converts every scikit-learn text vectorizer (standard ONNX has no regex
tokenizer); it is built into every onnxruntime, matches with RE2 (linear time, no
backtracking) and allocates in proportion to its input. Its domain may be imported
only by a graph that uses it, and whose nodes in it are all on this list."""


def allowed_op(domain: str, op_type: str) -> bool:
    """Whether a node of ``domain``/``op_type`` may be loaded."""
    return domain in STANDARD_DOMAINS or (domain, op_type) in ALLOWED_CONTRIB_OPS


_ELEM_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}


def parse_model(data: bytes, entry: str) -> onnx.ModelProto:
    """Parse ONNX protobuf bytes; malformed bytes give a FormatError naming the entry.

    Parsed with onnx's schema through the protobuf runtime alone
    (:mod:`bundle.format.onnx_proto`: ``import onnx`` is not on the load path). A
    field that schema does not know -- one a newer onnx added -- is refused: no check
    here could look at it, and the onnxruntime it is handed to might act on it.
    """
    from google.protobuf.message import DecodeError

    model_class = message_class("ModelProto")
    model = model_class()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise FormatError(f"{entry} is not a valid ONNX model: {e}", entry=entry) from e
    if not model.HasField("graph"):
        raise FormatError(f"{entry} holds no graph", entry=entry)
    if _deeper_than(model, MAX_NESTING):
        raise FormatError(
            f"{entry} nests messages more than {MAX_NESTING} deep (subgraphs in "
            "subgraphs, or types in types): refused, as no check could see all of it",
            entry=entry,
        )
    known = model_class()
    known.CopyFrom(model)
    known.DiscardUnknownFields()
    if known.ByteSize() != model.ByteSize():
        raise UntrustedContentError(
            f"{entry} holds fields onnx {ONNX_VERSION}'s schema does not define "
            f"({model.ByteSize() - known.ByteSize()} bytes of them): written by a newer "
            "onnx? They cannot be checked, so the graph is not loaded",
            entry=entry,
        )
    return model  # type: ignore[no-any-return]


MAX_NESTING = 60
"""How deeply messages may nest in a graph. The protobuf runtime parses up to 100
levels but ``DiscardUnknownFields`` (the unknown-field check above) looks only 64
deep: a field hidden below that would reach onnxruntime unchecked."""


def _static_depth(desc: Any, seen: frozenset[str] = frozenset()) -> int | None:
    """How deep a message of this type can nest, or None when it can recurse."""
    cached = _DEPTHS.get(desc.full_name, -1)
    if cached != -1:
        return cached
    if desc.full_name in seen:
        return None
    deepest: int | None = 1
    for f in desc.fields:
        if f.message_type is not None:
            d = _static_depth(f.message_type, seen | {desc.full_name})
            if d is None:
                deepest = None
                break
            deepest = max(deepest, 1 + d)  # type: ignore[type-var]
    _DEPTHS[desc.full_name] = deepest  # None only for a type on a cycle: true anywhere
    return deepest


_DEPTHS: dict[str, int | None] = {}


def _deeper_than(message: Any, limit: int, depth: int = 1) -> bool:
    """Whether ``message`` nests more than ``limit`` levels; walks only the fields whose
    type can recurse (graphs, nodes, attributes, types), others count by their type."""
    if depth > limit:
        return True
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        static = _static_depth(fd.message_type)
        if static is not None:
            if depth + static > limit:
                return True
            continue
        for item in value if not hasattr(value, "ListFields") else (value,):
            if _deeper_than(item, limit, depth + 1):
                return True
    return False


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _tensors_in_attributes(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield node.name or node.op_type, attr.t
            for t in attr.tensors:
                yield node.name or node.op_type, t
            sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            for sp in [*sparse, *attr.sparse_tensors]:
                yield node.name or node.op_type, sp.values
                yield node.name or node.op_type, sp.indices


def _check_names(g: onnx.GraphProto, entry: str) -> None:
    """Refuse names that are not UTF-8 (protobuf hands them back as bytes).

    onnxruntime would take them as they are, and fail only when it quotes one in an
    error message (which its Python wrapper then cannot decode).
    """
    names = [g.name, *(v.name for v in (*g.input, *g.output, *g.value_info, *g.initializer))]
    for node in g.node:
        names += [
            node.name,
            node.op_type,
            node.domain,
            *node.input,
            *node.output,
            *(a.name for a in node.attribute),
        ]
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise FormatError(
            f"{entry}: graph {g.name!r} holds a name that is not valid UTF-8: {bad!r}", entry=entry
        )


@functools.cache
def _inline_fields() -> frozenset[str]:
    """Every TensorProto field that holds tensor values in the graph itself.

    Taken from the descriptor, not listed by hand, so that a data field a later
    onnx adds is refused on an external initializer too (a hand-written list once
    missed ``uint64_data`` and ``string_data``).
    """
    return frozenset(
        f.name
        for f in message_class("TensorProto").DESCRIPTOR.fields
        if f.name.endswith("_data") and f.name != "external_data"
    )


def _check_no_sparse(g: onnx.GraphProto, entry: str) -> None:
    """Refuse sparse tensors: onnxruntime densifies them when the session is created.

    A few bytes of values and indices with a dense shape of the signer's choosing
    become that shape's full size in memory at load, before any input is seen. No
    exporter this package uses writes them (skl2onnx, torch.onnx and tf2onnx store
    dense initializers), so they are refused rather than bounded.
    """
    if len(g.sparse_initializer):
        raise UntrustedContentError(
            f"{entry}: graph {g.name!r} has {len(g.sparse_initializer)} sparse "
            "initializer(s); sparse tensors are refused (onnxruntime densifies them at load)",
            entry=entry,
        )
    for node in g.node:
        for attr in node.attribute:
            if attr.HasField("sparse_tensor") or len(attr.sparse_tensors):
                raise UntrustedContentError(
                    f"{entry}: node {node.name or node.op_type!r} has a sparse tensor "
                    f"attribute {attr.name!r}; sparse tensors are refused (onnxruntime "
                    "densifies them at load)",
                    entry=entry,
                )


def check_graph(model: onnx.ModelProto, header: Header, entry: str) -> None:
    """Refuse anything a signed-but-malicious graph could use to reach outside the bundle."""
    TensorProto = message_class("TensorProto")  # noqa: N806 -- onnx's name for it

    # a non-standard domain only where an allowed operator of it is really used
    contrib = {
        n.domain
        for g in _graphs(model.graph)
        for n in g.node
        if (n.domain, n.op_type) in ALLOWED_CONTRIB_OPS
    }
    for op in model.opset_import:
        if op.domain not in STANDARD_DOMAINS and op.domain not in contrib:
            raise UntrustedContentError(
                f"{entry} imports operator set domain {op.domain!r}; only the standard "
                "domains ai.onnx and ai.onnx.ml are loaded",
                entry=entry,
            )
    if len(model.functions):
        raise UntrustedContentError(
            f"{entry} defines {len(model.functions)} model-local function(s) "
            f"({model.functions[0].domain}.{model.functions[0].name}); they are not loaded",
            entry=entry,
        )
    if len(model.training_info):
        # Training graphs are not part of inference; refusing them keeps every graph the
        # loader hands onnxruntime inside the checks below.
        raise UntrustedContentError(
            f"{entry} carries {len(model.training_info)} ONNX training_info graph(s); "
            "bundles hold inference graphs only (training state lives in training/)",
            entry=entry,
        )
    for g in _graphs(model.graph):
        _check_names(g, entry)
        for node in g.node:
            if not allowed_op(node.domain, node.op_type) or node.op_type == "EPContext":
                raise UntrustedContentError(
                    f"{entry}: node {node.name or '?'!r} is {node.domain or 'ai.onnx'}."
                    f"{node.op_type}; custom-domain and EPContext nodes are refused",
                    entry=entry,
                )
        for where, t in _tensors_in_attributes(g):
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                raise UntrustedContentError(
                    f"{entry}: a tensor attribute of node {where!r} uses external data; only "
                    "main-graph initializers may",
                    entry=entry,
                )
        if g is not model.graph:
            for init in g.initializer:
                if init.data_location == TensorProto.EXTERNAL or len(init.external_data):
                    raise UntrustedContentError(
                        f"{entry}: subgraph initializer {init.name!r} uses external data",
                        entry=entry,
                    )
        _check_no_sparse(g, entry)

    used: set[str] = set()
    for init in model.graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        if init.data_location != TensorProto.EXTERNAL:
            if ext:
                raise UntrustedContentError(
                    f"{entry}: initializer {init.name!r} has external_data entries but is "
                    "not marked external",
                    entry=entry,
                )
            continue
        if len(ext) != len(init.external_data) or set(ext) != {"location", "offset", "length"}:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} external data must have exactly "
                f"location, offset and length (found {sorted(ext, key=str)})",
                entry=entry,
            )
        if ext["location"] != WEIGHTS_NAME:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} points at {ext['location']!r}; "
                f"external data may only point into {WEIGHTS_NAME}",
                entry=entry,
            )
        info = header.tensors.get(init.name)
        if info is None:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} has no tensor in {WEIGHTS_NAME}", entry=entry
            )
        want = (str(header.data_start + info.begin), str(info.end - info.begin))
        if (ext["offset"], ext["length"]) != want:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} offset/length {ext['offset']}/"
                f"{ext['length']} do not match its tensor in {WEIGHTS_NAME} ({want[0]}/"
                f"{want[1]})",
                entry=entry,
            )
        if init.data_type != info.onnx_type or tuple(init.dims) != info.shape:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} declares type {init.data_type} shape "
                f"{list(init.dims)} but its tensor is {info.dtype} {list(info.shape)}",
                entry=entry,
            )
        inline = sorted(f.name for f, _ in init.ListFields() if f.name in _inline_fields())
        if inline:
            raise UntrustedContentError(
                f"{entry}: external initializer {init.name!r} also carries inline data "
                f"({', '.join(inline)})",
                entry=entry,
            )
        if init.name in used:
            raise UntrustedContentError(
                f"{entry}: initializer {init.name!r} appears twice", entry=entry
            )
        used.add(init.name)
    unused = set(header.tensors) - used
    if unused:
        raise UntrustedContentError(
            f"{WEIGHTS_NAME} holds tensor(s) the graph never uses: {sorted(unused)[:5]}",
            entry=WEIGHTS_NAME,
        )


def rebase_external(model: onnx.ModelProto, location: str, base: int) -> None:
    """Point checked external data at ``location`` with every offset moved by ``base``."""
    for init in model.graph.initializer:
        for e in init.external_data:
            if e.key == "location":
                e.value = location
            elif e.key == "offset":
                e.value = str(int(e.value) + base)


def inline_small_external(
    model: onnx.ModelProto, read: Callable[[int, int], bytes], max_bytes: int
) -> None:
    """Copy the data of checked external initializers of at most ``max_bytes`` inline.

    onnxruntime's graph resolution folds small constant inputs (a Reshape's target
    shape, a Slice's bounds) before any external initializer is bound, and fails
    with "Cannot parse data from external tensors" when they are external; inline
    they always work. ``read(offset, length)`` returns the bytes the graph names,
    at offsets as written (relative to the weights entry).
    """
    TensorProto = message_class("TensorProto")  # noqa: N806 -- onnx's name for it

    for init in model.graph.initializer:
        if init.data_location != TensorProto.EXTERNAL:
            continue
        ext = {e.key: e.value for e in init.external_data}
        start, length = int(ext["offset"]), int(ext["length"])
        if length > max_bytes:
            continue
        del init.external_data[:]
        init.data_location = TensorProto.DEFAULT
        init.raw_data = read(start, length)


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dtype = _ELEM_TYPES.get(tt.elem_type)
    if not vi.type.HasField("tensor_type") or dtype is None:
        raise FormatError(f"graph input/output {vi.name!r} is not a tensor of a supported type")
    dims: list[int | str | None] = []
    if tt.HasField("shape"):
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorSpec(vi.name, dtype, tuple(dims))


def io_specs(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's real inputs (initializers excluded) and outputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in inits)
    return inputs, tuple(_spec(v) for v in model.graph.output)
