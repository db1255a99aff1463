"""Request checking (names, dtypes, shapes -> an InputError naming the field) and the
probation verdict, without a server."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pytest
from helpers import manifest_of

from bundle.errors import InputError
from bundle.format.manifest import Column, Manifest, TensorSpec
from bundle.serve.probation import ProbationPolicy, Snapshot, Stats, judge
from bundle.serve.protocol import encode_outputs, parse_infer, parse_predict


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    from helpers import save_tiny

    return manifest_of(save_tiny(tmp_path_factory.mktemp("m") / "t.mbundle"))


def x_tensor(**over: Any) -> dict[str, Any]:
    t = {"name": "X", "datatype": "FP32", "shape": [2, 4], "data": list(range(8))}
    return {**t, **over}


def test_a_valid_request_becomes_feeds_of_the_signature_dtype(manifest: Manifest) -> None:
    req = parse_infer(
        {
            "id": "a",
            "inputs": [x_tensor(data=[[0, 1, 2, 3], [4, 5, 6, 7]])],
            "outputs": [{"name": "Y"}],
        },
        manifest,
    )
    assert req.id == "a"
    assert req.outputs == ["Y"]
    assert req.feeds["X"].dtype == np.float32
    np.testing.assert_array_equal(req.feeds["X"], np.arange(8, dtype=np.float32).reshape(2, 4))


BAD = [
    ("body", [1, 2]),
    ("inputs", {"inputs": "X"}),
    ("inputs[0]", {"inputs": [5]}),
    ("inputs[0]", {"inputs": [{"name": "X"}]}),
    ("inputs[0].name", {"inputs": [x_tensor(name="x")]}),
    ("inputs[0].datatype", {"inputs": [x_tensor(datatype="FP64")]}),
    ("inputs[0].shape", {"inputs": [x_tensor(shape=[8])]}),
    ("inputs[0].shape[1]", {"inputs": [x_tensor(shape=[4, 2])]}),
    ("inputs[0].shape[0]", {"inputs": [x_tensor(shape=[-2, 4])]}),
    ("inputs[0].shape", {"inputs": [x_tensor(shape=[1] * 40)]}),
    ("inputs[0].data", {"inputs": [x_tensor(data=list(range(7)))]}),
    ("inputs[0].data", {"inputs": [x_tensor(data=["a"] * 8)]}),
    ("inputs[0].data", {"inputs": [x_tensor(data=[[1, 2], [3]])]}),
    ("inputs[0].data", {"inputs": [x_tensor(data=[None] * 8)]}),
    ("inputs[1].name", {"inputs": [x_tensor(), x_tensor()]}),
    ("inputs", {"inputs": []}),
    ("outputs[0].name", {"inputs": [x_tensor()], "outputs": [{"name": "Z"}]}),
    ("id", {"inputs": [x_tensor()], "id": 5}),
]


@pytest.mark.parametrize(("field", "body"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_each_malformed_request_names_its_field(manifest: Manifest, field: str, body: Any) -> None:
    with pytest.raises(InputError) as e:
        parse_infer(body, manifest)
    assert e.value.entry == field, str(e.value)
    assert str(e.value).startswith(field + ":")


def test_integers_out_of_range_are_refused() -> None:
    m = _manifest([TensorSpec("K", "int8", ("N",))])
    with pytest.raises(InputError, match="outside the range of INT8"):
        parse_infer({"inputs": [{"name": "K", "datatype": "INT8", "shape": [1], "data": [300]}]}, m)
    with pytest.raises(InputError, match="must be integers"):
        parse_infer({"inputs": [{"name": "K", "datatype": "INT8", "shape": [1], "data": [1.5]}]}, m)


def test_a_named_axis_has_one_size_across_inputs() -> None:
    m = _manifest([TensorSpec("A", "float32", ("N", 2)), TensorSpec("B", "float32", ("N",))])
    with pytest.raises(InputError, match="axis 'N' is 2 in input 'A' but 3 in input 'B'"):
        parse_infer(
            {
                "inputs": [
                    {"name": "A", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                    {"name": "B", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
                ]
            },
            m,
        )


@functools.lru_cache(maxsize=1)
def _base() -> Manifest:
    import tempfile
    from pathlib import Path

    from helpers import save_tiny

    return manifest_of(save_tiny(Path(tempfile.mkdtemp()) / "t.mbundle"))


def _manifest(inputs: list[TensorSpec], columns: tuple[Column, ...] = ()) -> Manifest:
    """The tiny model's manifest with other inputs (the checks read only the signature)."""
    return dataclasses.replace(_base(), inputs=tuple(inputs), columns=columns)


def test_records_and_columns_give_the_same_table() -> None:
    m = _manifest(
        [TensorSpec("age", "float32", ("N", 1)), TensorSpec("city", "string", ("N", 1))],
        (Column("age", "numeric", "age"), Column("city", "string", "city")),
    )
    a, _ = parse_predict({"records": [{"age": 3, "city": "x"}, {"age": 4.5, "city": "y"}]}, m)
    b, _ = parse_predict({"columns": {"age": [3, 4.5], "city": ["x", "y"]}}, m)
    for k in ("age", "city"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["age"].dtype == np.float32
    assert list(a["city"]) == ["x", "y"]
    for body, field in (
        ({"records": [{"age": 3}]}, "records[0].city"),
        ({"records": [{"age": "old", "city": "x"}]}, "records[*].age"),
        ({"columns": {"age": [1], "city": ["a"], "zip": [1]}}, "columns"),
        ({"columns": {"age": [1, 2], "city": ["a"]}}, "columns"),
        ({"records": [], "columns": {}}, "body"),
        ({"records": [{"age": 1, "city": "a"}], "method": "fit"}, "method"),
    ):
        with pytest.raises(InputError) as e:
            parse_predict(body, m)
        assert e.value.entry == field, (body, str(e.value))


def test_outputs_are_flat_with_their_shape_and_non_finite_become_null(manifest: Manifest) -> None:
    out = encode_outputs({"Y": np.array([[1.0, np.nan, np.inf]], np.float32)}, manifest)
    assert out == [{"name": "Y", "datatype": "FP32", "shape": [1, 3], "data": [1.0, None, None]}]


# --------------------------------------------------------------------------- probation


def test_probation_keeps_a_version_no_worse_than_the_previous() -> None:
    p = ProbationPolicy(min_requests=10)
    before = Snapshot(100, 1, 0.010)
    assert judge(p, Snapshot(50, 1, 0.012), before) is None
    assert judge(p, Snapshot(9, 9, 1.0), before) is None  # too few requests for a verdict


def test_probation_rolls_back_on_errors_or_p99() -> None:
    p = ProbationPolicy(
        min_requests=10,
        max_error_rate_increase=0.05,
        max_p99_ratio=2.0,
        min_p99_increase=0.005,
        latency_min_requests=50,
    )
    before = Snapshot(100, 1, 0.010)
    assert "error rate 20.0%" in (judge(p, Snapshot(50, 10, 0.010), before) or "")
    assert "p99 latency 25.0 ms vs 10.0 ms" in (judge(p, Snapshot(50, 0, 0.025), before) or "")
    # a tiny absolute slowdown is noise, whatever the ratio
    assert judge(p, Snapshot(50, 0, 0.0004), Snapshot(100, 0, 0.0001)) is None
    # no baseline: errors still count (against zero), latency cannot be compared
    assert judge(p, Snapshot(50, 10, 9.0), None) is not None
    assert judge(p, Snapshot(50, 0, 9.0), None) is None
    # a p99 over fewer requests than latency_min_requests is not judged
    assert judge(p, Snapshot(49, 0, 0.025), before) is None


def test_stats_p99_is_the_99th_percentile() -> None:
    s = Stats()
    for i in range(1, 201):
        s.record(i / 1000, error=i % 50 == 0)
    snap = s.snapshot()
    assert (snap.requests, snap.errors) == (200, 4)
    assert snap.p99 == pytest.approx(0.198)


@pytest.mark.parametrize(
    "kw",
    [
        {"window": 0},
        {"min_requests": 0},
        {"max_p99_ratio": -1},
        {"latency_min_requests": 0},
        {"max_error_rate_increase": float("nan")},
    ],
)
def test_a_policy_cannot_exist_invalid(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        ProbationPolicy(**kw)
