"""The compatibility tables: against onnx's own version table and the installed runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bundle.export.writer import min_onnxruntime as writer_min_onnxruntime
from bundle.format import compat
from bundle.format.versions import release_tuple
from bundle.runtime.preflight import probe_installed


def _first_ir(column: int) -> dict[int, int]:
    """opset -> IR version of the first onnx release that defined it (VERSION_TABLE)."""
    out: dict[int, int] = {}
    for row in helper.VERSION_TABLE:
        out.setdefault(int(row[column]), int(row[1]))
    return out


def test_min_ir_for_opset_is_onnx_version_table() -> None:
    table = _first_ir(2)
    # Opsets skipped by a release (onnx 1.0 -> 1.1 went from 1 to 5) need the same IR.
    for opset in range(1, max(table) + 1):
        want = table.get(opset) or table[min(o for o in table if o > opset)]
        assert compat.MIN_IR_FOR_OPSET[opset] == want, opset
    assert max(compat.MIN_IR_FOR_OPSET) >= max(table)


def test_min_ir_for_ml_opset_is_onnx_version_table() -> None:
    table = _first_ir(3)
    for opset, ir in table.items():
        assert compat.MIN_IR_FOR_ML_OPSET[opset] == ir, opset


def test_min_ir_for_opset_agrees_with_onnx_helper() -> None:
    for opset in compat.MIN_IR_FOR_OPSET:
        if ("ai.onnx", opset) in helper.OP_SET_ID_VERSION_MAP:
            ops = [helper.make_opsetid("", opset)]
            assert compat.MIN_IR_FOR_OPSET[opset] == helper.find_min_ir_version_for(ops)


def test_dtype_table_names_real_types() -> None:
    names = {v: k for k, v in TensorProto.DataType.items()}
    assert names[17] == "FLOAT8E4M3FN"
    assert compat.MIN_IR_FOR_DTYPE[17] == 9
    assert names[22] == "INT4"
    assert compat.MIN_IR_FOR_DTYPE[22] == 10
    assert names[23] == "FLOAT4E2M1"
    assert compat.MIN_IR_FOR_DTYPE[23] == 11


def _identity(opset: int, ir: int = 14, cast_to: int | None = None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", cast_to or TensorProto.FLOAT, [2])
    node = (
        helper.make_node("Cast", ["x"], ["y"], to=cast_to)
        if cast_to
        else helper.make_node("Identity", ["x"], ["y"])
    )
    m = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = ir
    return m


@pytest.mark.parametrize(("opset", "want"), [(13, 7), (17, 8), (19, 9), (21, 10), (26, 13)])
def test_lowest_ir_version_follows_the_opset(opset: int, want: int) -> None:
    assert compat.lowest_ir_version(_identity(opset)) == want


def test_lowest_ir_version_counts_element_types() -> None:
    assert compat.lowest_ir_version(_identity(17, cast_to=TensorProto.FLOAT8E4M3FN)) == 9
    assert compat.lowest_ir_version(_identity(21, cast_to=TensorProto.INT4)) == 10
    assert compat.lowest_ir_version(_identity(17, cast_to=TensorProto.DOUBLE)) == 8


def test_effective_opset_is_the_highest_since_version_used() -> None:
    # Identity's newest definition below 26 is version 25; Relu's is 14.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 26)],
    )
    assert compat.effective_opsets(m) == {"ai.onnx": 14}
    assert compat.effective_opsets(_identity(26)) == {
        "ai.onnx": onnx.defs.get_schema("Identity", 26).since_version
    }


def test_ort_tables_are_monotone() -> None:
    for table in (compat.ORT_FOR_IR, compat.ORT_FOR_OPSET, compat.ORT_FOR_ML_OPSET):
        keys = sorted(table)
        releases = [release_tuple(table[k]) for k in keys]
        assert releases == sorted(releases)


def test_min_onnxruntime_boundaries() -> None:
    assert compat.min_onnxruntime(8, {"ai.onnx": 17}) == "1.15"
    assert compat.min_onnxruntime(10, {"ai.onnx": 21}) == "1.18"
    assert compat.min_onnxruntime(10, {"ai.onnx": 22}) == "1.21"
    assert compat.min_onnxruntime(11, {"ai.onnx": 23, "ai.onnx.ml": 5}) == "1.23"
    assert compat.min_onnxruntime(14, {"ai.onnx": 28}) == "1.32"
    assert compat.min_onnxruntime(15, {"ai.onnx": 17}) is None  # newer than measured
    assert writer_min_onnxruntime(8, 17) == "1.15"
    assert writer_min_onnxruntime(99, 17) == compat.PROBED_TO


def test_tables_agree_with_the_installed_onnxruntime() -> None:
    """The installed runtime, asked directly, has exactly the limits the tables give it."""
    import onnxruntime

    version = onnxruntime.__version__
    known = compat.max_supported(version)
    if known is None:
        pytest.skip(
            f"onnxruntime {version} is outside the measured releases "
            f"{compat.PROBED_FROM}-{compat.PROBED_TO}: run scripts/probe_onnxruntime.py"
        )
    ir, opsets = known
    limits = probe_installed()
    assert limits.ir_version == ir
    assert limits.opsets == opsets


def test_max_supported_outside_the_measured_range_is_unknown() -> None:
    assert compat.max_supported("1.14.1") is None
    assert compat.max_supported("9.0") is None
    assert compat.max_supported("1.20.1") == (10, {"ai.onnx": 21, "ai.onnx.ml": 5})
    np.testing.assert_equal(compat.max_supported("1.32.0"), (14, {"ai.onnx": 28, "ai.onnx.ml": 5}))
