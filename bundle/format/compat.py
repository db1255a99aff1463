"""What a graph needs from a runtime: IR version, opsets, the oldest onnxruntime.

Three tables, kept here as data so that a verifier needs no onnxruntime to answer:

* :data:`MIN_IR_FOR_OPSET` / :data:`MIN_IR_FOR_ML_OPSET`: the lowest IR version
  that may carry an ``ai.onnx`` / ``ai.onnx.ml`` opset -- the IR version of the
  first onnx release that defined the opset (tests/format/test_compat.py derives
  both from ``onnx.helper.VERSION_TABLE`` and requires equality);
* :data:`MIN_IR_FOR_DTYPE`: tensor element types that only exist from an IR
  version on (float8 needs IR 9, int4 IR 10, ...: onnx.proto's IR history);
* :data:`ORT_FOR_IR`, :data:`ORT_FOR_OPSET`, :data:`ORT_FOR_ML_OPSET`: the oldest
  onnxruntime release that loads a graph of that IR version / stamped opset,
  measured by loading one-node graphs in every release from 1.15 on
  (``scripts/probe_onnxruntime.py``; onnxruntime states no maximum itself,
  onnxruntime issue #14932). onnxruntime refuses a graph whose IR version or
  *stamped* opset is newer than it knows, whatever operators the graph uses.
  Entries at the first probed release (1.15) mean "1.15 or older".

A writer stamps :func:`lowest_ir_version` (never higher: a higher IR version only
shuts out older runtimes), and a graph's *effective* opset -- the highest
``since_version`` of the operators it really uses -- says how far an opset
conversion can lower the stamp (:func:`effective_opsets`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from .graph import ALLOWED_CONTRIB_OPS
from .versions import release_tuple

if TYPE_CHECKING:
    import onnx

__all__ = [
    "MIN_IR_FOR_DTYPE",
    "MIN_IR_FOR_ML_OPSET",
    "MIN_IR_FOR_OPSET",
    "ORT_FOR_IR",
    "ORT_FOR_ML_OPSET",
    "ORT_FOR_OPSET",
    "PROBED_FROM",
    "PROBED_TO",
    "RESTAMP_FLOOR",
    "effective_opsets",
    "lowest_ir_version",
    "max_supported",
    "min_onnxruntime",
    "restamp_opsets",
    "used_operators",
]

MIN_IR_FOR_OPSET: Mapping[int, int] = {
    1: 3,
    2: 3,
    3: 3,
    4: 3,
    5: 3,
    6: 3,
    7: 3,
    8: 3,
    9: 4,
    10: 5,
    11: 6,
    12: 7,
    13: 7,
    14: 7,
    15: 8,
    16: 8,
    17: 8,
    18: 8,
    19: 9,
    20: 9,
    21: 10,
    22: 10,
    23: 11,
    24: 12,
    25: 13,
    26: 13,
    27: 13,
    28: 14,
}
"""``ai.onnx`` opset -> the lowest IR version that may import it."""

MIN_IR_FOR_ML_OPSET: Mapping[int, int] = {1: 3, 2: 6, 3: 8, 4: 9, 5: 10}
"""``ai.onnx.ml`` opset -> the lowest IR version that may import it."""

MIN_IR_FOR_DTYPE: Mapping[int, int] = {
    16: 4,  # BFLOAT16
    17: 9,
    18: 9,
    19: 9,
    20: 9,  # FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ
    21: 10,
    22: 10,  # UINT4, INT4
    23: 11,  # FLOAT4E2M1
    24: 12,  # FLOAT8E8M0
    25: 13,
    26: 13,  # UINT2, INT2
    27: 14,
    28: 14,  # FLOAT6E2M3, FLOAT6E3M2
}
"""TensorProto element type -> the IR version that introduced it (older types: any IR)."""

PROBED_FROM = "1.15"
"""The oldest onnxruntime release measured (the first with CPython 3.11 wheels)."""
PROBED_TO = "1.32"
"""The newest onnxruntime release measured."""

ORT_FOR_IR: Mapping[int, str] = {
    3: "1.15",
    4: "1.15",
    5: "1.15",
    6: "1.15",
    7: "1.15",
    8: "1.15",
    9: "1.15",
    10: "1.18",
    11: "1.23",
    12: "1.24",
    13: "1.24",
    14: "1.32",
}
ORT_FOR_OPSET: Mapping[int, str] = {
    **{o: "1.15" for o in range(10, 19)},
    19: "1.16",
    20: "1.17",
    21: "1.18",
    22: "1.21",
    23: "1.23",
    24: "1.24",
    25: "1.24",
    26: "1.25",
    27: "1.32",
    28: "1.32",
}
ORT_FOR_ML_OPSET: Mapping[int, str] = {1: "1.15", 2: "1.15", 3: "1.15", 4: "1.17", 5: "1.18"}


def _tables(domain: str) -> tuple[Mapping[int, int], Mapping[int, str]] | None:
    if domain in ("", "ai.onnx"):
        return MIN_IR_FOR_OPSET, ORT_FOR_OPSET
    if domain == "ai.onnx.ml":
        return MIN_IR_FOR_ML_OPSET, ORT_FOR_ML_OPSET
    return None


def _domain(name: str) -> str:
    return "ai.onnx" if name in ("", "ai.onnx") else name


def _element_types(model: onnx.ModelProto) -> Iterator[int]:
    """Every tensor element type the model names: values, initializers, constants, casts."""

    def types(t: object) -> Iterator[int]:
        # TypeProto: tensor, sequence/optional/map of tensors
        which = t.WhichOneof("value")  # type: ignore[attr-defined]
        if which in ("tensor_type", "sparse_tensor_type"):
            yield getattr(t, which).elem_type
        elif which == "sequence_type":
            yield from types(t.sequence_type.elem_type)  # type: ignore[attr-defined]
        elif which == "optional_type":
            yield from types(t.optional_type.elem_type)  # type: ignore[attr-defined]
        elif which == "map_type":
            yield t.map_type.key_type  # type: ignore[attr-defined]
            yield from types(t.map_type.value_type)  # type: ignore[attr-defined]

    def graph(g: onnx.GraphProto) -> Iterator[int]:
        for vi in (*g.input, *g.output, *g.value_info):
            yield from types(vi.type)
        for init in g.initializer:
            yield init.data_type
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t.data_type
                for t in attr.tensors:
                    yield t.data_type
                if attr.name in ("to", "dtype", "output_dtype") and attr.type == attr.INT:
                    yield attr.i
                if attr.HasField("g"):
                    yield from graph(attr.g)
                for sub in attr.graphs:
                    yield from graph(sub)

    yield from graph(model.graph)


def lowest_ir_version(model: onnx.ModelProto, opsets: Mapping[str, int] | None = None) -> int:
    """The lowest IR version that can carry ``model``: its opsets and element types.

    ``opsets`` (domain -> version) replaces the model's own stamps (to ask what a
    conversion would need). Domains other than ``ai.onnx``/``ai.onnx.ml`` add no
    requirement (a loader refuses them anyway). At least 3, the first IR version
    with opset imports.
    """
    need = 3
    stamps = opsets if opsets is not None else {op.domain: op.version for op in model.opset_import}
    for domain, version in stamps.items():
        tables = _tables(domain)
        if tables is not None:
            table = tables[0]
            # An opset newer than the table: the newest IR known, never a guess below it.
            need = max(need, table.get(version, max(table.values()) if version > max(table) else 3))
    for t in _element_types(model):
        need = max(need, MIN_IR_FOR_DTYPE.get(t, 3))
    return need


def used_operators(model: onnx.ModelProto) -> Iterator[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs included; ``""`` written ``ai.onnx``."""

    def walk(g: onnx.GraphProto) -> Iterator[tuple[str, str]]:
        for node in g.node:
            yield _domain(node.domain), node.op_type
            for attr in node.attribute:
                if attr.HasField("g"):
                    yield from walk(attr.g)
                for sub in attr.graphs:
                    yield from walk(sub)

    yield from walk(model.graph)


def effective_opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Per imported domain, the highest ``since_version`` among the operators used.

    This is the lowest opset the graph could be stamped with without changing any
    operator's definition (an opset conversion to it needs no adapter). A domain
    imported but unused gets 1. An operator onnx does not know at the stamped opset
    raises ``KeyError`` naming it.
    """
    from onnx import defs

    stamped = {_domain(op.domain): op.version for op in model.opset_import}
    out = dict.fromkeys(stamped, 1)
    for domain, op_type in sorted(set(used_operators(model))):
        if domain not in stamped:
            raise KeyError(
                f"operator {op_type!r} of domain {domain!r}: the graph imports no "
                "opset of that domain"
            )
        if (domain, op_type) in ALLOWED_CONTRIB_OPS:
            # onnxruntime's own operator (the loader allows it by name): onnx has no
            # schema for it, and its domain's stamp is onnxruntime's to read
            out[domain] = stamped[domain]
            continue
        try:
            schema = defs.get_schema(
                op_type, stamped[domain], "" if domain == "ai.onnx" else domain
            )
        except defs.SchemaError as e:
            raise KeyError(
                f"operator {op_type!r} is not defined in {domain} opset {stamped[domain]}"
            ) from e
        out[domain] = max(out[domain], schema.since_version)
    return out


def min_onnxruntime(ir_version: int, opsets: Mapping[str, int]) -> str | None:
    """The oldest onnxruntime release that loads a graph of this IR version and these
    stamped opsets; None when one of them is newer than every release measured."""
    need = [ORT_FOR_IR.get(ir_version) if ir_version > min(ORT_FOR_IR) else PROBED_FROM]
    for domain, version in opsets.items():
        tables = _tables(domain)
        if tables is None:
            continue
        table = tables[1]
        need.append(table.get(version) if version > min(table) else PROBED_FROM)
    if any(n is None for n in need):
        return None
    return max((n for n in need if n is not None), key=release_tuple)


def max_supported(onnxruntime_version: str) -> tuple[int, dict[str, int]] | None:
    """The newest IR version and opsets (by domain) a release loads, from the tables;
    None for a release newer than the newest measured (the tables cannot say)."""
    v = release_tuple(onnxruntime_version)[:2]
    if not release_tuple(PROBED_FROM) <= v <= release_tuple(PROBED_TO):
        return None

    def best(table: Mapping[int, str]) -> int:
        ok = [k for k, r in table.items() if release_tuple(r)[:2] <= v]
        return max(ok) if ok else 0

    return best(ORT_FOR_IR), {"ai.onnx": best(ORT_FOR_OPSET), "ai.onnx.ml": best(ORT_FOR_ML_OPSET)}


RESTAMP_FLOOR: Mapping[str, int] = {"ai.onnx": 13, "ai.onnx.ml": 1}
"""The lowest stamp :func:`restamp_opsets` writes per domain: ``ai.onnx`` 13 (IR 7) is
loaded by every measured onnxruntime; below it onnxruntime refuses some stamps."""


def restamp_opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Lower each standard domain's stamp to its effective opset (not below
    :data:`RESTAMP_FLOOR`, never above the stamp); returns the new stamps.

    No operator changes meaning: an operator resolves to its newest definition at or
    below the stamp, and none of the operators used has a definition between the
    effective opset and the stamp -- that is what makes it the effective opset. So
    unlike an opset *conversion* (onnx's version converter, adapters), this only
    stops a converter's default (skl2onnx stamps the newest opset onnx knows) from
    shutting out runtimes that run every operator the graph uses.
    """
    effective = effective_opsets(model)
    for op in model.opset_import:
        d = _domain(op.domain)
        if d in RESTAMP_FLOOR:
            op.version = min(op.version, max(effective[d], RESTAMP_FLOOR[d]))
    return {_domain(op.domain): op.version for op in model.opset_import}
