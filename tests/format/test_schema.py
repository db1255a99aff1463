"""spec/manifest.schema.json and bundle.format.manifest's own validator say the same thing.

Every manifest the exporters write validates against the JSON Schema; every
mutation in the table below is refused by BOTH the schema and
``Manifest.from_bytes``; every boundary case the format allows is accepted by
both. The few rules JSON Schema cannot express (FORMAT.md 5.9: order and
uniqueness across items, references between fields, the UTF-8 byte length of a
path, integers written as 1.0, impossible dates) are listed in ``BEYOND_SCHEMA``: the schema lets
them through and the manifest parser must not.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import bundle
from bundle.errors import FormatError
from bundle.format import canonical_json as _json
from bundle.format.archive import ZipReader
from bundle.format.manifest import MANIFEST_NAME, Manifest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "spec" / "manifest.schema.json").read_text(encoding="utf-8"))
VECTORS = ROOT / "spec" / "vectors"
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

Doc = dict[str, Any]


def manifest_json(path: Path) -> Doc:
    """The manifest.json bytes of a bundle, parsed as plain JSON."""
    with ZipReader(path) as r:
        data: Doc = json.loads(r.read(MANIFEST_NAME, max_size=1 << 22))
    return data


def schema_errors(doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)
    ]


def test_schema_is_valid_draft_2020_12_and_strict() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def objects(node: Any) -> list[Doc]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for v in node.values() for o in objects(v)]
        if isinstance(node, list):
            return [o for v in node for o in objects(v)]
        return []

    found = objects(SCHEMA)
    assert len(found) > 10
    for o in found:  # records refuse unknown fields; maps constrain every value
        assert o.get("additionalProperties") is False or isinstance(
            o.get("additionalProperties"), dict
        ), o


def test_schema_enums_and_version_are_the_parsers() -> None:
    from bundle.format import manifest as m

    defs, props = SCHEMA["$defs"], SCHEMA["properties"]
    assert props["format_version"]["const"] == m.FORMAT_VERSION
    assert defs["tensor"]["properties"]["dtype"]["enum"] == list(m.DTYPES)
    assert defs["model"]["properties"]["task"]["enum"] == list(m.TASKS)
    assert defs["model"]["properties"]["precision"]["enum"] == list(m.PRECISIONS)
    assert defs["column"]["properties"]["kind"]["enum"] == list(m.COLUMN_KINDS)
    assert defs["file"]["properties"]["role"]["enum"] == list(m.FILE_ROLES)
    assert sorted(props["methods"]["properties"]) == sorted(m.METHODS)


# --------------------------------------------------------------------------- exporters


def _gemm() -> Any:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.ones(3, dtype=np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _onnx(path: Path) -> None:
    bundle.save(_gemm(), path, metadata={"k": "v"}, created="2025-01-01T00:00:00Z")


def _onnx_int8(path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    bundle.save(_gemm(), path, sample_input=x, precision="int8", accept_mismatch=True)


def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y


def _classifier(path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    X, y = _iris()
    bundle.save(LogisticRegression(max_iter=300).fit(X, y), path, sample_input=X[:10])


def _regressor(path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LinearRegression

    X, y = _iris()
    bundle.save(LinearRegression().fit(X, y), path, sample_input=X[:10])


def _dataframe_pipeline(path: Path) -> None:
    pytest.importorskip("skl2onnx")
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n),
            "visits": rng.integers(0, 9, n),
            "city": rng.choice(["Oslo", "Lyon", "Köln"], n),
        }
    )
    y = (df["age"] > 40).astype(int)
    pipe = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "visits"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(df, y)
    bundle.save(pipe, path, sample_input=df.head(8), name="pipeline")


def _torch(path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    bundle.save(
        net.eval(), path, sample_input=torch.randn(4, 6), optimizer=opt, exporter="torchscript"
    )


EXPORTERS: dict[str, Callable[[Path], None]] = {
    "onnx": _onnx,
    "onnx-int8": _onnx_int8,
    "sklearn-classifier": _classifier,
    "sklearn-regressor": _regressor,
    "sklearn-dataframe-pipeline": _dataframe_pipeline,
    "torch-with-training-state": _torch,
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_exported_manifest_matches_schema(exporter: str, tmp_path: Path) -> None:
    path = tmp_path / "m.mbundle"
    EXPORTERS[exporter](path)
    doc = manifest_json(path)
    assert schema_errors(doc) == []
    Manifest.from_bytes(_json.dumps(doc))  # and the strict parser agrees
    if exporter == "sklearn-dataframe-pipeline":
        assert {c["kind"] for c in doc["columns"]} == {"numeric", "integer", "string"}
    if exporter == "torch-with-training-state":
        assert [f["role"] for f in doc["files"]].count("training_state") == 2
    if exporter == "onnx-int8":
        assert doc["model"]["precision"] == "int8"
        assert doc["parity"] is not None


@pytest.mark.parametrize("vector", sorted(p.name for p in VECTORS.glob("valid-*.mbundle")))
def test_vector_manifest_matches_schema(vector: str) -> None:
    assert schema_errors(manifest_json(VECTORS / vector)) == []


# --------------------------------------------------------------------------- mutations


def _base() -> Doc:
    """The richest committed manifest: columns, parity, metadata, created, two methods."""
    return manifest_json(VECTORS / "valid-tabular-classifier.mbundle")


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """Set ``a.b[0].c`` (keys and list indexes) to ``value``."""

    def apply(doc: Doc) -> None:
        *parents, last = _parse(path)
        node: Any = doc
        for p in parents:
            node = node[p]
        node[last] = value

    return apply


def _del(path: str) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = _parse(path)
        node: Any = doc
        for p in parents:
            node = node[p]
        del node[last]

    return apply


def _opset(value: Any, domain: str = "ai.onnx") -> Callable[[Doc], None]:
    """Set the opset version of ``domain`` (its dots would confuse ``_set``'s paths)."""
    return lambda d: d["onnx"]["opsets"].__setitem__(domain, value)


def _metadata(key: str, value: Any) -> Callable[[Doc], None]:
    return lambda d: d["metadata"].__setitem__(key, value)


def _parse(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.replace("[", ".[").split("."):
        if part:
            out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


def _file(path: str) -> Doc:
    return {"path": path, "role": "asset", "size": 0, "sha256": HEX}


MIB = 1 << 20


def _sharded(
    size: int = 9 * MIB,
    shard_size: int = 4 * MIB,
    count: int | None = None,
    root: str | None = None,
) -> Callable[[Doc], None]:
    """Make the weights entry a sharded one of ``size`` bytes (consistent unless told)."""
    from bundle.format.digest import shard_root

    def apply(doc: Doc) -> None:
        n = -(-size // shard_size) if count is None else count
        shards = [f"{i:064x}" for i in range(1, n + 1)]
        weights = next(f for f in doc["files"] if f["role"] == "weights")
        weights.update(
            size=size, shard_size=shard_size, shards=shards, sha256=root or shard_root(shards)
        )

    return apply


def _then(*steps: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        for step in steps:
            step(doc)

    return apply


HEX = "ab" * 32
REQUIRED_TOP = [
    "format_version",
    "model",
    "onnx",
    "inputs",
    "outputs",
    "columns",
    "methods",
    "files",
    "parity",
    "metadata",
    "created_by",
    "created",
]

MUTATIONS: dict[str, Callable[[Doc], None]] = {
    # unknown properties, at every level
    "extra-top": _set("signature", "x"),
    "extra-model": _set("model.license", "MIT"),
    "extra-framework": _set("model.framework.url", "x"),
    "extra-onnx": _set("onnx.producer", "x"),
    "extra-input": _set("inputs[0].doc", "x"),
    "extra-column": _set("columns[0].unit", "years"),
    "extra-method": _set("methods.predict.threshold", 0.5),
    "extra-method-name": _set("methods.fit", {"output": "label", "squeeze": False}),
    "extra-file": _set("files[0].mode", 420),
    "extra-parity": _set("parity.seed", 0),
    "extra-tolerance": _set("parity.tolerance.ulp", 1),
    "extra-parity-output": _set("parity.outputs[0].mean_abs", 0.0),
    # wrong types
    "type-model-name": _set("model.name", 5),
    "type-model": _set("model", []),
    "type-inputs": _set("inputs", {}),
    "type-size-string": _set("files[0].size", "287"),
    "type-metadata-value": _set("metadata.license", 1),
    "type-metadata": _set("metadata", ["a"]),
    "type-created": _set("created", 5),
    "type-created-by-null": _set("created_by", None),
    "type-parity": _set("parity", []),
    "type-dim-float": _set("inputs[0].shape[1]", 1.5),
    "type-dim-list": _set("inputs[0].shape[1]", [1]),
    "type-shape": _set("inputs[0].shape", "N,1"),
    "type-squeeze-int": _set("methods.predict.squeeze", 1),
    "type-accepted-string": _set("parity.accepted_mismatch", "false"),
    "type-atol-string": _set("parity.tolerance.atol", "1e-4"),
    "type-opsets": _set("onnx.opsets", [17]),
    "type-opset-version": _opset("17"),
    "type-methods": _set("methods", []),
    "type-columns": _set("columns", {}),
    # bad enum values
    "enum-task": _set("model.task", "ranker"),
    "enum-precision": _set("model.precision", "fp8"),
    "enum-dtype": _set("inputs[0].dtype", "complex64"),
    "enum-role": _set("files[0].role", "code"),
    "enum-kind": _set("columns[0].kind", "date"),
    # bool where an int belongs (True == 1 in Python)
    "bool-format-version": _set("format_version", True),
    "bool-size": _set("files[0].size", True),
    "bool-ir-version": _set("onnx.ir_version", True),
    "bool-opset": _opset(True),
    "bool-dim": _set("inputs[0].shape[1]", True),
    "bool-sample-rows": _set("parity.sample_rows", True),
    "bool-mismatches": _set("parity.outputs[0].mismatches", False),
    "bool-max-abs": _set("parity.outputs[0].max_abs", False),
    # bad sha256
    "sha-upper": _set("files[0].sha256", HEX.upper()),
    "sha-short": _set("files[0].sha256", HEX[:63]),
    "sha-long": _set("files[0].sha256", HEX + "0"),
    "sha-not-hex": _set("files[0].sha256", "g" * 64),
    "sha-newline": _set("files[0].sha256", HEX[:63] + "\n"),
    # entry paths
    "path-parent": _set("files[0].path", "../model.onnx"),
    "path-absolute": _set("files[0].path", "/model.onnx"),
    "path-empty-segment": _set("files[0].path", "a//model.onnx"),
    "path-dot-segment": _set("files[0].path", "./model.onnx"),
    "path-trailing-slash": _set("files[0].path", "model.onnx/"),
    "path-backslash": _set("files[0].path", "a\\model.onnx"),
    "path-drive": _set("files[0].path", "C:model.onnx"),
    "path-control": _set("files[0].path", "model\x01.onnx"),
    "path-newline": _set("files[0].path", "model.onnx\n"),
    "path-delete": _set("files[0].path", "model.onnx\x7f"),
    "path-empty": _set("files[0].path", ""),
    "path-manifest": _set("files[0].path", "manifest.json"),
    "path-signatures": _set("files[0].path", "signatures/model.onnx"),
    "path-too-long": _set("files[0].path", "m" * 256),
    # bounds and values
    "format-version-2": _set("format_version", 2),
    "format-version-0": _set("format_version", 0),
    "format-version-string": _set("format_version", "1"),
    "ir-version-0": _set("onnx.ir_version", 0),
    "ir-version-huge": _set("onnx.ir_version", 1001),
    "opset-0": _opset(0),
    "opset-huge": _opset(10**6 + 1),
    "min-ort-v": _set("onnx.min_onnxruntime", "v1.20"),
    "min-ort-five-parts": _set("onnx.min_onnxruntime", "1.2.3.4.5"),
    "min-ort-newline": _set("onnx.min_onnxruntime", "1.20\n"),
    "size-negative": _set("files[0].size", -1),
    "size-2-63": _set("files[0].size", 2**63),
    "dim-negative": _set("inputs[0].shape[1]", -1),
    "dim-empty-name": _set("inputs[0].shape[0]", ""),
    "dim-long-name": _set("inputs[0].shape[0]", "n" * 129),
    "shape-65-axes": _set("inputs[0].shape", [1] * 65),
    "name-empty": _set("model.name", ""),
    "name-long": _set("model.name", "n" * 257),
    "version-empty": _set("model.version", ""),
    "version-long": _set("model.version", "1" * 65),
    "framework-version-long": _set("model.framework.version", "1" * 65),
    "description-long": _set("model.description", "d" * 8193),
    "created-empty": _set("created", ""),
    "created-long": _set("created", "2" * 65),
    "created-by-empty": _set("created_by", ""),
    "expires-null": _set("expires", None),
    "expires-offset": _set("expires", "2030-01-01T00:00:00+00:00"),
    "expires-space": _set("expires", "2030-01-01 00:00:00Z"),
    "expires-fraction": _set("expires", "2030-01-01T00:00:00.5Z"),
    "expires-lowercase": _set("expires", "2030-01-01t00:00:00z"),
    "expires-newline": _set("expires", "2030-01-01T00:00:00Z\n"),
    "expires-number": _set("expires", 1893456000),
    "metadata-key-empty": _metadata("", "x"),
    "metadata-value-long": _set("metadata.license", "v" * 8193),
    "metadata-1025": lambda d: d["metadata"].update({f"k{i}": "" for i in range(1025)}),
    "atol-negative": _set("parity.tolerance.atol", -1e-4),
    "max-rel-negative": _set("parity.outputs[0].max_rel", -0.5),
    "mismatches-negative": _set("parity.outputs[0].mismatches", -1),
    "inputs-empty": _set("inputs", []),
    "outputs-empty": _set("outputs", []),
    "files-no-graph": lambda d: d["files"].__setitem__(0, {**d["files"][0], "role": "asset"}),
    "files-two-weights": lambda d: d["files"].__setitem__(0, {**d["files"][0], "role": "weights"}),
    "files-65": lambda d: d["files"].extend(
        {"path": f"z/{i:03d}", "role": "asset", "size": 0, "sha256": HEX} for i in range(63)
    ),
}
# missing required fields, at every level
MUTATIONS.update({f"missing-{k}": _del(k) for k in REQUIRED_TOP})
MUTATIONS.update(
    {
        f"missing-model.{k}": _del(f"model.{k}")
        for k in ("name", "version", "description", "task", "precision", "framework", "converter")
    }
)
MUTATIONS.update(
    {f"missing-file.{k}": _del(f"files[0].{k}") for k in ("path", "role", "size", "sha256")}
)
MUTATIONS.update(
    {
        "missing-onnx.min_onnxruntime": _del("onnx.min_onnxruntime"),
        "missing-input.shape": _del("inputs[0].shape"),
        "missing-column.input": _del("columns[0].input"),
        "missing-method.squeeze": _del("methods.predict.squeeze"),
        "missing-parity.tolerance": _del("parity.tolerance"),
        "missing-parity.tolerance.rtol": _del("parity.tolerance.rtol"),
        "missing-parity-output.max_rel": _del("parity.outputs[0].max_rel"),
        "missing-framework.version": _del("model.framework.version"),
    }
)

MUTATIONS.update(
    {
        "shards-without-shard-size": _then(_sharded(), _del("files[1].shard_size")),
        "shard-size-without-shards": _then(_sharded(), _del("files[1].shards")),
        "shard-size-not-power-of-two": _sharded(size=11 * MIB, shard_size=5 * MIB),
        "shard-size-below-4-mib": _sharded(size=5 * MIB, shard_size=2 * MIB),
        "shard-size-above-1-gib": _sharded(size=3 << 30, shard_size=2 << 30),
        "shard-size-bool": _then(_sharded(), _set("files[1].shard_size", True)),
        "shards-not-a-list": _then(_sharded(), _set("files[1].shards", HEX)),
        "shard-digest-upper": _then(_sharded(), _set("files[1].shards[0]", HEX.upper())),
        "extra-sharded-file": _then(_sharded(), _set("files[1].shard_count", 3)),
    }
)


def _mutated(mutation: Callable[[Doc], None]) -> Doc:
    doc = copy.deepcopy(_base())
    mutation(doc)
    return doc


def test_base_manifest_is_valid_for_both() -> None:
    doc = _mutated(lambda d: None)
    assert doc == _base()
    assert schema_errors(doc) == []
    Manifest.from_bytes(_json.dumps(doc))


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_is_refused_by_schema_and_parser(name: str) -> None:
    doc = _mutated(MUTATIONS[name])
    assert _json.dumps(doc) != _json.dumps(_base()), "the mutation changed nothing"
    assert schema_errors(doc), f"the schema accepts {name}"
    with pytest.raises(FormatError):
        Manifest.from_bytes(_json.dumps(doc))


ACCEPTED: dict[str, Callable[[Doc], None]] = {
    "parity-null": _set("parity", None),
    "created-null": _set("created", None),
    "columns-empty": _set("columns", []),
    "methods-empty": _set("methods", {}),
    "metadata-empty": _set("metadata", {}),
    "metadata-1024": lambda d: d.__setitem__("metadata", {f"k{i:04d}": "" for i in range(1024)}),
    "metadata-value-8192": _set("metadata.license", "v" * 8192),
    "description-8192-non-ascii": _set("model.description", "é" * 8192),
    "name-256": _set("model.name", "n" * 256),
    "version-64": _set("model.version", "1" * 64),
    "converter-version-empty": _set("model.converter.version", ""),
    "created-64": _set("created", "2" * 64),
    "dims-null-named-fixed": _set("inputs[0].shape", [None, "batch", 0, 2**63 - 1]),
    "shape-scalar": _set("inputs[0].shape", []),
    "shape-64-axes": _set("inputs[0].shape", [1] * 64),
    "opset-empty-domain-key": _opset(1, ""),
    "opset-ml": _opset(3, "ai.onnx.ml"),
    "min-ort-four-parts": _set("onnx.min_onnxruntime", "1.20.1.0"),
    "ir-version-1000": _set("onnx.ir_version", 1000),
    "task-regressor": _set("model.task", "regressor"),
    "precision-fp16": _set("model.precision", "fp16"),
    "all-methods": lambda d: d["methods"].update(
        {
            m: {"output": "scores", "squeeze": False}
            for m in ("predict_proba", "transform", "score_samples")
        }
    ),
    "asset-files": lambda d: d["files"].extend(
        [_file("tokenizer/vocab.txt"), _file("zz/..b"), _file("zz/signatures")]
    ),
    "training-state-files": lambda d: d["files"].extend(
        [{**_file("training/state.json"), "role": "training_state"}]
    ),
    "files-64": lambda d: d["files"].extend(_file(f"z/{i:03d}") for i in range(62)),
    "size-2-63-minus-1": _set("files[0].size", 2**63 - 1),
    "column-bool-kind": _set("columns[0].kind", "bool"),
    "expires": _set("expires", "2030-01-31T12:00:00Z"),
    "expires-leap-day": _set("expires", "2028-02-29T23:59:59Z"),
}
ACCEPTED.update(
    {
        "sharded-weights": _sharded(),
        "sharded-weights-1-gib": _sharded(size=(2 << 30) + 1, shard_size=1 << 30),
    }
)


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_boundary_case_is_accepted_by_schema_and_parser(name: str) -> None:
    doc = _mutated(ACCEPTED[name])
    doc["files"].sort(key=lambda f: f["path"])
    assert _json.dumps(doc) != _json.dumps(_base()), "the mutation changed nothing"
    assert schema_errors(doc) == []
    Manifest.from_bytes(_json.dumps(doc))


BEYOND_SCHEMA: dict[str, Callable[[Doc], None]] = {
    # JSON Schema compares numbers by value (1.0 == 1); the parser wants the integer
    "format-version-float": _set("format_version", 1.0),
    # and an integer equals a float: parity numbers are written as floats only (0.0, not 0)
    "parity-integers": _set("parity.tolerance", {"atol": 0, "rtol": 1}),
    "files-unsorted": lambda d: d["files"].reverse(),
    "files-duplicate-path": lambda d: d["files"].append({**d["files"][-1], "role": "asset"}),
    "path-over-255-utf8-bytes": lambda d: d["files"].append(_file("é" * 200)),
    "inputs-duplicate-name": lambda d: d["inputs"].append(copy.deepcopy(d["inputs"][0])),
    "outputs-duplicate-name": lambda d: d["outputs"].append(copy.deepcopy(d["outputs"][0])),
    "method-unknown-output": _set("methods.predict.output", "nope"),
    "column-unknown-input": _set("columns[0].input", "nope"),
    "columns-duplicate-name": lambda d: d["columns"].append(copy.deepcopy(d["columns"][0])),
    "size-written-as-float": _set("files[0].size", float(1 << 12)),
    "mismatches-written-as-float": _set("parity.outputs[0].mismatches", 0.0),
    "expires-not-a-date": _set("expires", "2030-02-30T00:00:00Z"),
    "expires-hour-24": _set("expires", "2030-01-01T24:00:00Z"),
    "shards-too-few": _sharded(count=2),
    "shards-too-many": _sharded(count=4),
    "shards-wrong-root": _sharded(root=HEX),
    "sharded-entry-not-larger-than-shard": _sharded(size=4 * MIB, count=2),
    "large-entry-not-sharded": _then(_sharded(), _set("files[0].size", 5 * MIB)),
    "two-shard-sizes": _then(
        _sharded(),
        lambda d: d["files"].append(
            {
                **_file("zz.bin"),
                **{k: v for k, v in d["files"][1].items() if k != "path"},
                "shard_size": 8 * MIB,
                "shards": d["files"][1]["shards"][:2],
                "role": "asset",
            }
        ),
    ),
}


@pytest.mark.parametrize(
    "name",
    [
        *BEYOND_SCHEMA,
        "empty-shard-description",
    ],
)
def test_rules_beyond_json_schema_are_enforced_by_the_parser(name: str) -> None:
    """FORMAT.md 5.9: the schema cannot see these; the parser must refuse them."""
    if name == "empty-shard-description":
        doc = _mutated(_then(_set("files[1].shard_size", 0), _set("files[1].shards", [])))
        assert schema_errors(doc)
    else:
        doc = _mutated(BEYOND_SCHEMA[name])
        assert schema_errors(doc) == [], "the schema now expresses this rule: move it to MUTATIONS"
    with pytest.raises(FormatError):
        Manifest.from_bytes(_json.dumps(doc))
