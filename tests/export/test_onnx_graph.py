"""The ONNX-graph helpers both exporters share (bundle.export.onnx_graph)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

import bundle
from bundle.export.onnx_graph import (
    NonStandardOperatorError,
    adopt_state_names,
    all_graphs,
    rename_values,
    tidy,
)


def _model(
    nodes: list[NodeProto], inits: list[TensorProto], domains: tuple[str, ...] = ()
) -> ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        inits,
    )
    ops = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=ops)


def test_rename_values_stops_where_a_subgraph_shadows_the_name() -> None:
    then = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("Add", ["w2", "x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    shadow = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["x_inner"])],
        "else",
        [],
        [helper.make_tensor_value_info("x_inner", TensorProto.FLOAT, [2])],
    )
    shadow.node[0].output[0] = "w"  # defines its own 'w': must not be renamed
    shadow.output[0].name = "w"
    cond = numpy_helper.from_array(np.array(True), "c")
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    model = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=shadow)], [cond, w]
    )
    rename_values(model.graph, {"w": "fc.weight"})
    branches = {a.name: a.g for a in model.graph.node[0].attribute}
    assert len(list(all_graphs(model.graph))) == 3
    then_g, else_g = branches["then_branch"], branches["else_branch"]
    assert [i.name for i in model.graph.initializer] == ["c", "fc.weight"]
    assert then_g.node[0].input[0] == "fc.weight"
    assert else_g.node[0].output[0] == "w"


def test_tidy_refuses_custom_domain_with_a_typed_conversion_error() -> None:
    model = _model([helper.make_node("Twice", ["x"], ["y"], domain="mbtest")], [], ("mbtest",))
    with pytest.raises(NonStandardOperatorError, match="mbtest::Twice"):
        tidy(model)
    assert issubclass(NonStandardOperatorError, bundle.ConversionError)


def test_adopt_state_names_names_exact_values_and_moves_impostors_aside() -> None:
    w = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.ones(2, np.float32)
    inits = [
        numpy_helper.from_array(w, "onnx::MatMul_3"),
        numpy_helper.from_array(b * 2, "fc.bias"),
    ]  # folded: not fc.bias's value
    model = _model(
        [
            helper.make_node("MatMul", ["x", "onnx::MatMul_3"], ["h"]),
            helper.make_node("Add", ["h", "fc.bias"], ["y"]),
        ],
        inits,
    )
    adopt_state_names(model, {"fc.weight": w, "fc.bias": b})
    g = model.graph
    assert [i.name for i in g.initializer] == ["fc.weight", "fc.bias.folded"]
    assert list(g.node[0].input) == ["x", "fc.weight"]
    assert list(g.node[1].input) == ["h", "fc.bias.folded"]
