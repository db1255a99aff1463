"""The graph is parsed with onnx's schema but without ``import onnx`` (bundle.format.onnx_proto).

What must hold: the schema is onnx's own (the installed release's, field for field);
the loader refuses what that schema does not know; the load path in a fresh process
imports no onnx; and the preflight the loader now screens for still names a runtime
problem (before a session when the stamps show it, after onnxruntime refuses otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import build_signed, manifest_of, read_entries, save_tiny, tiny_model
from onnx import helper

import bundle
from bundle.errors import CompatibilityError, UntrustedContentError
from bundle.format import onnx_proto
from bundle.format.graph import parse_model
from bundle.format.manifest import GRAPH_NAME, MANIFEST_NAME
from bundle.runtime import preflight

REGENERATE = "regenerate bundle/format/onnx_proto.py (its docstring says how)"


def _fields(desc: object) -> dict[str, tuple[int, int, str]]:
    return {
        f.name: (f.number, f.type, f.message_type.full_name if f.message_type else "")
        for f in desc.fields  # type: ignore[attr-defined]
    }


def test_the_schema_is_the_installed_onnxs() -> None:
    """Every message and field of the installed onnx's onnx-ml.proto, and no other."""
    from onnx import onnx_ml_pb2

    theirs = onnx_ml_pb2.DESCRIPTOR.message_types_by_name
    for name, desc in theirs.items():
        ours = onnx_proto.message_class(name).DESCRIPTOR
        assert _fields(ours) == _fields(desc), f"{name} differs from onnx {onnx.__version__}: " + (
            REGENERATE
        )
        for nested in desc.nested_types:
            assert _fields(ours.nested_types_by_name[nested.name]) == _fields(nested), nested.name
    if onnx.__version__ == onnx_proto.ONNX_VERSION:  # the very release: byte for byte
        assert onnx_ml_pb2.DESCRIPTOR.serialized_pb == onnx_proto.SCHEMA, REGENERATE


def test_parsed_graph_round_trips_to_onnxs_class() -> None:
    model = tiny_model()
    parsed = parse_model(model.SerializeToString(), "model.onnx")
    assert type(parsed) is not onnx.ModelProto  # built without onnx, in a private pool
    assert parsed.SerializeToString() == model.SerializeToString()
    back = onnx.ModelProto.FromString(parsed.SerializeToString())
    onnx.checker.check_model(back)
    assert [n.op_type for n in parsed.graph.node] == ["MatMul", "Add", "Relu"]


def _unknown_field(number: int, value: int = 1) -> bytes:
    """A varint field the schema does not define, as protobuf encodes it."""
    tag = (number << 3) | 0
    out = bytearray()
    for v in (tag, value):
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def test_a_field_the_schema_does_not_know_is_refused_at_any_depth() -> None:
    model = tiny_model()
    top = model.SerializeToString() + _unknown_field(900)
    with pytest.raises(UntrustedContentError, match=r"fields onnx .* does not define"):
        parse_model(top, "model.onnx")
    # inside an initializer: a TensorProto field of a newer onnx (a data field, say)
    init = model.graph.initializer[0]
    init.ParseFromString(init.SerializeToString() + _unknown_field(901, 7))
    deep = model.SerializeToString()
    assert parse_model(tiny_model().SerializeToString(), "m")  # the clean one parses
    with pytest.raises(UntrustedContentError, match="written by a newer onnx"):
        parse_model(deep, "model.onnx")


def _nested_sequence_type(levels: int, hidden: bytes = b"") -> onnx.TypeProto:
    """seq(seq(...seq(tensor(float)))) ``levels`` deep; ``hidden`` appended innermost."""
    inner = helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [1])
    if hidden:
        inner.ParseFromString(inner.SerializeToString() + hidden)
    for _ in range(levels):
        inner = helper.make_sequence_type_proto(inner)
    return inner


@pytest.mark.parametrize("levels", [31, 40, 45])
def test_a_field_below_the_unknown_field_checks_reach_is_refused(levels: int) -> None:
    """upb's DiscardUnknownFields looks 64 messages deep, parsing accepts 100: a field
    hidden between the two must not reach onnxruntime (refused by depth)."""
    model = tiny_model()
    vi = helper.make_value_info("deep", onnx.TypeProto())
    vi.type.CopyFrom(_nested_sequence_type(levels, _unknown_field(902)))
    model.graph.value_info.append(vi)
    with pytest.raises(bundle.FormatError, match="nests messages more than 60 deep"):
        parse_model(model.SerializeToString(), "model.onnx")


def test_subgraphs_nested_too_deep_are_refused_and_shallow_ones_parse() -> None:
    def wrapped(depth: int) -> onnx.ModelProto:
        body = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g0",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
        leaf = body  # the else branches stay one level deep: the size grows linearly
        for i in range(depth):
            node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=leaf)
            body = helper.make_graph(
                [node],
                f"g{i + 1}",
                [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
                [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
            )
        return helper.make_model(body)

    assert parse_model(wrapped(5).SerializeToString(), "m").graph.name == "g5"
    assert parse_model(_model_with(_nested_sequence_type(10)), "m")
    with pytest.raises(bundle.FormatError, match="more than 60 deep"):
        parse_model(wrapped(21).SerializeToString(), "model.onnx")


def _model_with(t: onnx.TypeProto) -> bytes:
    model = tiny_model()
    vi = helper.make_value_info("typed", onnx.TypeProto())
    vi.type.CopyFrom(t)
    model.graph.value_info.append(vi)
    return bytes(model.SerializeToString())


LOAD_CHILD = """
import json, sys
import numpy as np
import bundle
m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2], device="cpu")
y = m.predict(np.ones((2, 4), dtype=np.float32))
print(json.dumps({"onnx": sorted(k for k in sys.modules if k == "onnx" or
                                 k.startswith("onnx.")), "y": y.tolist()}))
"""


def test_fresh_process_cpu_load_imports_no_onnx(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "t.mbundle", signing_key)
    _, pub = signing_key.save(tmp_path / "k")
    res = subprocess.run(
        [sys.executable, "-c", LOAD_CHILD, str(path), str(pub)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["onnx"] == []
    want = bundle.load(path, trusted_keys=signing_key.public_key, device="cpu").predict(
        np.ones((2, 4), dtype=np.float32)
    )
    np.testing.assert_allclose(np.asarray(info["y"]), want, rtol=1e-6)


def test_screen_flags_what_preflight_would_report() -> None:
    limits = preflight.table_limits("1.20.1")
    ok = tiny_model()
    assert not preflight.might_not_run(ok, None, limits)
    assert not preflight.preflight(ok, None, limits)[1]
    newer = tiny_model()
    newer.opset_import[0].version = (limits.opsets.get("ai.onnx") or 0) + 1
    assert preflight.might_not_run(newer, None, limits)
    assert preflight.preflight(newer, None, limits)[1]
    ir = tiny_model()
    ir.ir_version = (limits.ir_version or 0) + 1
    assert preflight.might_not_run(ir, None, limits)
    custom = tiny_model(domain="com.example", op="Relu")
    assert preflight.might_not_run(custom, None, limits)
    unimported = tiny_model()
    unimported.graph.node[2].domain = "ai.onnx.ml"
    assert preflight.might_not_run(unimported, None, limits)


def test_an_operator_onnx_does_not_define_is_still_a_compatibility_error(
    tmp_path: Path, signing_key: bundle.PrivateKey
) -> None:
    """The screen cannot see it (no schemas); onnxruntime refuses the session, and the
    loader then names the reason as the full preflight did before any session."""
    good = save_tiny(tmp_path / "good.mbundle", signing_key)
    contents = read_entries(good)
    model = onnx.ModelProto.FromString(contents[GRAPH_NAME])
    model.graph.node[2].op_type = "NoSuchOperator"  # the exporter would refuse to write it
    contents[GRAPH_NAME] = model.SerializeToString()
    path = build_signed(
        tmp_path / "bad-op.mbundle",
        {n: d for n, d in contents.items() if n != MANIFEST_NAME and "/" not in n},
        [signing_key],
        base=manifest_of(good),
    )
    assert not preflight.might_not_run(model)
    with pytest.raises(CompatibilityError, match="'NoSuchOperator' is not defined"):
        bundle.load(path, trusted_keys=signing_key.public_key, device="cpu")


def test_make_model_helper_is_onnxs() -> None:
    """The test models above are onnx's own classes (what exporters write)."""
    assert isinstance(helper.make_model(tiny_model().graph), onnx.ModelProto)
