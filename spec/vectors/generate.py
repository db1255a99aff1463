"""Regenerate the test vectors of spec/FORMAT.md, byte for byte.

    python spec/vectors/generate.py [--out DIR]

writes into DIR (default: this directory) the fixed TEST ONLY keys
(``keys/``), every ``*.mbundle`` vector and ``index.json``, which lists each
vector with the keys to trust and the expected outcome. tests/test_vectors.py
verifies the committed vectors against index.json and regenerates them into a
temporary directory to check they come out byte-identical.

Nothing here is random. The keys are derived from public strings (so they are
reproducible and obviously worthless as secrets); ECDSA signatures use RFC 6979
nonces and Ed25519 is deterministic; the graphs are built with ``onnx.helper``
from fixed weights that are small dyadic fractions, so every product and sum is
exact in float32 and the expected predictions (and the recorded parity) do not
depend on the CPU or the onnxruntime build. The bytes still depend on the
serializers (onnx/protobuf, safetensors, zlib, model-bundle's own version in
``created_by``); index.json records those versions under ``generator``, and the
byte-identity check applies only when they match.

Valid vectors are written by the reference writer (``bundle.save``, or its
internal ``pack`` when the manifest needs fields plain ONNX export does not
fill: columns, parity, training state). Invalid vectors are assembled from the
package's own writer and signer so that most of them are *correctly signed by
the trusted key* and must still be refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import struct
import zlib
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from onnx import ModelProto, TensorProto, helper, numpy_helper

import bundle
from bundle.export.parity import measure
from bundle.export.writer import (
    GRAPH_NAME,
    WRITER_REVISION,
    min_onnxruntime,
    pack,
    statement_for,
)
from bundle.format import canonical_json as _json
from bundle.format import weights as weights_mod
from bundle.format.archive import EntryData, ZipReader, ZipWriter
from bundle.format.digest import sha256_bytes
from bundle.format.graph import io_specs
from bundle.format.manifest import (
    MANIFEST_NAME,
    Column,
    FileEntry,
    Manifest,
    Method,
    ModelInfo,
    OnnxInfo,
)
from bundle.trust import dsse, signing

HERE = Path(__file__).resolve().parent
WEIGHTS = weights_mod.WEIGHTS_NAME
STATE_JSON, STATE_TENSORS = "training/state.json", "training/state.safetensors"

# --------------------------------------------------------------------------- keys

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SEED = b"model-bundle spec/vectors TEST ONLY key: "
KEY_FILES = {"ecdsa-p256": "TEST-ONLY-ecdsa-p256", "ed25519": "TEST-ONLY-ed25519"}
"""The committed keys (keys/<name>.key and .pub). 'untrusted' is derived, never written."""

_BANNER = (
    "TEST ONLY -- NEVER TRUST THIS KEY. It is published in the model-bundle repository\n"
    "and derived from a public string by spec/vectors/generate.py: anyone can sign with\n"
    "it. It exists only to make the signed test vectors reproducible.\n"
)


def derive_key(name: str) -> signing.PrivateKey:
    """The fixed test key ``name`` ('ecdsa-p256', 'ed25519' or 'untrusted')."""
    seed = hashlib.sha256(_SEED + name.encode()).digest()
    if name == "ed25519":
        return signing.PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return signing.PrivateKey(ec.derive_private_key(scalar, ec.SECP256R1()))


def write_keys(out: Path) -> dict[str, signing.PrivateKey]:
    """Write the committed TEST ONLY key pairs under ``out/keys``; return every key."""
    (out / "keys").mkdir(parents=True, exist_ok=True)
    keys = {name: derive_key(name) for name in (*KEY_FILES, "untrusted")}
    for name, stem in KEY_FILES.items():
        banner = _BANNER.encode()
        (out / "keys" / f"{stem}.key").write_bytes(banner + keys[name].private_pem())
        (out / "keys" / f"{stem}.pub").write_bytes(banner + keys[name].public_key.pem())
    return keys


def pub_path(name: str) -> str:
    """A committed public key's path, relative to the vectors directory."""
    return f"keys/{KEY_FILES[name]}.pub"


# --------------------------------------------------------------------------- models

X4 = np.array(
    [[1.0, 2.0, 3.0, 4.0], [-0.5, 0.25, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32
)
W43 = (np.arange(12, dtype=np.float32).reshape(4, 3) / 8 - 0.75).astype(np.float32)
B3 = np.array([0.5, -0.25, 1.0], dtype=np.float32)


def _model(
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    inits: list[Any],
    name: str,
    opsets: Sequence[tuple[str, int]] = (("", 17),),
) -> ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
        producer_name="spec-vectors",
        producer_version="1",
    )
    model.ir_version = 8
    return model


def gemm_model(w: np.ndarray = W43, b: np.ndarray = B3) -> ModelProto:
    """Y[N,3] = Gemm(X[N,4], W[4,3], B[3])."""
    return _model(
        [helper.make_node("Gemm", ["X", "W", "B"], ["Y"], name="gemm")],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
        "gemm",
    )


def matmul_add_model() -> ModelProto:
    """out[batch,2] = features[batch,3] @ weight[3,2] + bias[2]."""
    w = np.array([[0.5, -1.0], [0.25, 2.0], [-0.125, 0.0]], dtype=np.float32)
    b = np.array([1.0, -0.5], dtype=np.float32)
    return _model(
        [
            helper.make_node("MatMul", ["features", "weight"], ["mm"], name="matmul"),
            helper.make_node("Add", ["mm", "bias"], ["out"], name="add"),
        ],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "weight"), numpy_helper.from_array(b, "bias")],
        "matmul_add",
    )


def identity_model() -> ModelProto:
    """Y = Identity(X): a graph with no weights at all (an empty safetensors entry)."""
    return _model(
        [helper.make_node("Identity", ["X"], ["Y"], name="identity")],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])],
        [],
        "identity",
    )


TAB_W = np.array([[0.5, -0.5], [-0.25, 0.25]], dtype=np.float32)
TAB_B = np.array([0.0, 0.125], dtype=np.float32)


def tabular_model() -> ModelProto:
    """Two [N,1] columns -> Concat -> Gemm -> scores[N,2]; ArgMax -> label[N,1]."""
    col = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("age", "income")]
    return _model(
        [
            helper.make_node("Concat", ["age", "income"], ["x"], axis=1, name="concat"),
            helper.make_node("Gemm", ["x", "coef", "intercept"], ["scores"], name="gemm"),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=1, name="argmax"),
        ],
        col,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2]),
        ],
        [numpy_helper.from_array(TAB_W, "coef"), numpy_helper.from_array(TAB_B, "intercept")],
        "tabular",
    )


def tabular_reference(age: np.ndarray, income: np.ndarray) -> dict[str, np.ndarray]:
    """What the tabular model computes, in numpy (exact: dyadic fractions)."""
    x = np.stack([age, income], axis=1).astype(np.float32)
    scores = x @ TAB_W + TAB_B
    return {"scores": scores, "label": scores.argmax(axis=1).astype(np.int64)}


LIN_W = np.array(
    [[0.5, -0.25, 1.0, 0.0], [0.125, 0.75, -0.5, 0.25], [-1.0, 0.0, 0.5, 2.0]], dtype=np.float32
)
"""torch.nn.Linear(4, 3).weight: [out, in]; the graph holds its transpose."""
LIN_B = np.array([0.25, -0.5, 0.0], dtype=np.float32)
MOMENTUM = np.array([[0.125] * 4, [-0.25] * 4, [0.5] * 4], dtype=np.float32)


def linear_model() -> ModelProto:
    """A torch.nn.Linear(4, 3) as an exporter writes it: X @ weight_t + bias."""
    return _model(
        [
            helper.make_node("MatMul", ["input", "weight_t"], ["mm"], name="matmul"),
            helper.make_node("Add", ["mm", "bias"], ["output"], name="add"),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(np.ascontiguousarray(LIN_W.T), "weight_t"),
            numpy_helper.from_array(LIN_B, "bias"),
        ],
        "linear",
    )


# --------------------------------------------------------------------------- writing


def split(
    model: ModelProto,
    extra_tensors: dict[str, np.ndarray] | None = None,
) -> tuple[ModelProto, bytes]:
    """The writer's weight split: externalize initializers into safetensors bytes."""
    onx = ModelProto()
    onx.CopyFrom(model)
    tensors = weights_mod.externalize(onx)
    tensors.update(extra_tensors or {})
    data = weights_mod.serialize(tensors)
    weights_mod.bind_external(onx, weights_mod.parse_header(data, len(data)))
    return onx, data


def model_manifest(
    onx: ModelProto,
    files: Sequence[FileEntry],
    *,
    name: str,
    task: str,
    framework: tuple[str, str],
    methods: dict[str, Method],
    columns: tuple[Column, ...] = (),
    parity: Any = None,
    metadata_: dict[str, str] | None = None,
    description: str = "",
    created: str | None = None,
) -> Manifest:
    """A manifest as the reference writer fills it, for a hand-built graph."""
    inputs, outputs = io_specs(onx)
    opsets = {op.domain or "ai.onnx": op.version for op in onx.opset_import}
    return Manifest(
        model=ModelInfo(
            name,
            "1",
            description,
            task,
            framework[0],
            framework[1],
            "spec/vectors/generate.py",
            "1",
            "fp32",
        ),
        onnx=OnnxInfo(
            onx.ir_version, opsets, min_onnxruntime(onx.ir_version, opsets.get("ai.onnx", 1))
        ),
        inputs=inputs,
        outputs=outputs,
        files=tuple(files),
        methods=methods,
        columns=columns,
        parity=parity,
        metadata=dict(metadata_ or {}),
        created_by=f"model-bundle {bundle.__version__}",
        created=created,
    )


def default_entry(name: str, data: bytes) -> EntryData:
    """How the reference writer stores an entry: graph and JSON deflated, tensors aligned."""
    compress = name == GRAPH_NAME or (name.endswith(".json") and name != MANIFEST_NAME)
    align = name.endswith(".safetensors")
    return EntryData(name, data, compress=compress, align=align)


def write_entries(path: Path, entries: Sequence[EntryData]) -> None:
    """Exactly these entries, in this order, through the deterministic writer."""
    with path.open("wb") as f:
        w = ZipWriter(f)
        for e in entries:
            w.write(e)
        w.close()


def assemble(
    path: Path,
    contents: dict[str, bytes],
    base: Manifest,
    keys: Sequence[signing.PrivateKey],
    *,
    manifest_bytes: bytes | None = None,
    files: Sequence[FileEntry] | None = None,
    entry: Callable[[str, bytes], EntryData] = default_entry,
    extra: Sequence[EntryData] = (),
) -> None:
    """A bundle holding ``contents``, with ``base`` re-listed over them, signed by ``keys``.

    ``manifest_bytes`` replaces the manifest's canonical form and is what is hashed
    and signed; ``files`` replaces the recomputed file list; ``extra`` entries follow
    the signatures, unlisted and unsigned.
    """
    roles = {f.path: f.role for f in base.files}
    if files is None:
        files = [
            FileEntry(n, roles[n], len(d), sha256_bytes(d)) for n, d in sorted(contents.items())
        ]
    manifest = dataclasses.replace(base, files=tuple(files))
    mbytes = manifest.to_bytes() if manifest_bytes is None else manifest_bytes
    statement = statement_for(manifest, mbytes)
    sigs = {k.key_id: dsse.sign_statement(statement, k) for k in keys}
    entries = [entry(n, d) for n, d in sorted(contents.items())]
    entries.append(EntryData(MANIFEST_NAME, mbytes))
    entries += [EntryData(f"signatures/{kid}.sig", sigs[kid]) for kid in sorted(sigs)]
    write_entries(path, [*entries, *extra])


def read_entries(path: Path) -> dict[str, bytes]:
    """Every entry's bytes, in archive order, through the strict reader."""
    with ZipReader(path) as r:
        ordered = sorted(r.entries.values(), key=lambda e: e.header_offset)
        return {e.name: r.read(e.name, max_size=1 << 30) for e in ordered}


def content_of(entries: dict[str, bytes]) -> dict[str, bytes]:
    """The content entries (not the manifest, not the signatures)."""
    return {
        n: d for n, d in entries.items() if n != MANIFEST_NAME and not n.startswith("signatures/")
    }


# --------------------------------------------------------------------------- vectors


def _case(
    vid: str,
    description: str,
    trusted: Sequence[str],
    expected: str,
    *,
    file: str | None = None,
    message: str | None = None,
    threshold: int | None = None,
    allow_unsigned: bool = False,
    **more: Any,
) -> dict[str, Any]:
    case: dict[str, Any] = {
        "id": vid,
        "file": file or f"{vid}.mbundle",
        "description": description,
        "trusted_keys": [pub_path(k) for k in trusted],
        "threshold": threshold,
        "allow_unsigned": allow_unsigned,
        "expected": expected,
    }
    if message is not None:
        case["message"] = message
    case.update(more)
    return case


def _floats(a: np.ndarray) -> Any:
    return a.tolist()


def valid_vectors(out: Path, keys: dict[str, signing.PrivateKey]) -> list[dict[str, Any]]:
    """The bundles a verifier must accept, with the prediction each must give."""
    ecdsa, ed = keys["ecdsa-p256"], keys["ed25519"]
    cases = []

    bundle.save(
        gemm_model(),
        out / "valid-ecdsa-gemm.mbundle",
        signing_key=ecdsa,
        name="gemm",
        description="Y = X @ W + B (Gemm), signed with ECDSA P-256",
    )
    cases.append(
        _case(
            "valid-ecdsa-gemm",
            "Gemm model written by bundle.save, signed with the ECDSA P-256 "
            "test key (RFC 6979 nonces)",
            ["ecdsa-p256"],
            "ok",
            signers=[ecdsa.key_id],
            predict={
                "method": "predict",
                "dtype": "float32",
                "input": _floats(X4),
                "output": _floats(X4 @ W43 + B3),
            },
        )
    )

    bundle.save(
        identity_model(), out / "valid-ed25519-identity.mbundle", signing_key=ed, name="identity"
    )
    x2 = np.array([[1.5, -2.0], [0.0, 3.25]], dtype=np.float32)
    cases.append(
        _case(
            "valid-ed25519-identity",
            "Identity model with no weights (weights.safetensors holds "
            "an empty header), signed with the Ed25519 test key",
            ["ed25519"],
            "ok",
            signers=[ed.key_id],
            predict={
                "method": "predict",
                "dtype": "float32",
                "input": _floats(x2),
                "output": _floats(x2),
            },
        )
    )

    bundle.save(
        matmul_add_model(),
        out / "valid-two-signers-matmul.mbundle",
        signing_key=[ecdsa, ed],
        name="matmul_add",
        version="2.0",
        metadata={"license": "Apache-2.0", "purpose": "test vector"},
    )
    m = matmul_add_model()
    w, b = (numpy_helper.to_array(i) for i in m.graph.initializer)
    x3 = np.array([[1.0, 2.0, 4.0], [-1.0, 0.5, 8.0]], dtype=np.float32)
    both_predict = {
        "method": "predict",
        "dtype": "float32",
        "input": _floats(x3),
        "output": _floats(x3 @ w + b),
    }
    cases.append(
        _case(
            "valid-two-signers-matmul",
            "MatMul+Add model with named dynamic axis 'batch', "
            "signed by both test keys; verified with threshold 2",
            ["ecdsa-p256", "ed25519"],
            "ok",
            threshold=2,
            signers=sorted([ecdsa.key_id, ed.key_id]),
            predict=both_predict,
        )
    )
    cases.append(
        _case(
            "valid-two-signers-one-trusted",
            "The two-signer bundle verified trusting only the "
            "ECDSA key: threshold 1 is met; the Ed25519 signature is reported as untrusted",
            ["ecdsa-p256"],
            "ok",
            file="valid-two-signers-matmul.mbundle",
            signers=[ecdsa.key_id],
            untrusted=[ed.key_id],
            predict=both_predict,
        )
    )

    bundle.save(gemm_model(), out / "valid-unsigned-gemm.mbundle", name="gemm")
    cases.append(
        _case(
            "valid-unsigned-gemm",
            "The Gemm model unsigned: loads only with allow_unsigned (integrity still checked)",
            [],
            "ok",
            allow_unsigned=True,
            signers=[],
            predict={
                "method": "predict",
                "dtype": "float32",
                "input": _floats(X4),
                "output": _floats(X4 @ W43 + B3),
            },
        )
    )

    bundle.save(
        gemm_model(),
        out / "valid-expires-far-future.mbundle",
        signing_key=ecdsa,
        name="gemm",
        version="3.1",
        expires="9999-12-31T23:59:59Z",
    )
    cases.append(
        _case(
            "valid-expires-far-future",
            "The Gemm model with a signed expiry (manifest 'expires') "
            "of 9999-12-31T23:59:59Z and version 3.1",
            ["ecdsa-p256"],
            "ok",
            signers=[ecdsa.key_id],
            predict={
                "method": "predict",
                "dtype": "float32",
                "input": _floats(X4),
                "output": _floats(X4 @ W43 + B3),
            },
        )
    )

    bundle.save(
        gemm_model(),
        out / "valid-requires-smoke.mbundle",
        signing_key=ecdsa,
        name="gemm",
        version="4",
        sample_input=X4,
    )
    cases.append(
        _case(
            "valid-requires-smoke",
            "The Gemm model (stamped opset 17) saved with a sample input "
            "by writer revision 2: opset lowered to the effective 13, the lowest IR version 7, a "
            "'requires' block and smoke vectors (3 rows, exact in float32) [ADDITION: requires, "
            "smoke vectors]",
            ["ecdsa-p256"],
            "ok",
            signers=[ecdsa.key_id],
            predict={
                "method": "predict",
                "dtype": "float32",
                "input": _floats(X4),
                "output": _floats(X4 @ W43 + B3),
            },
        )
    )

    cases.append(_tabular(out / "valid-tabular-classifier.mbundle", ecdsa))
    cases.append(_training(out / "valid-training-state.mbundle", ecdsa))
    return cases


def _tabular(path: Path, key: signing.PrivateKey) -> dict[str, Any]:
    """A classifier over two DataFrame columns, with parity measured against numpy."""
    onx = tabular_model()
    sample_age = np.array([20.0, 35.0, 50.0, 65.0], dtype=np.float32)
    sample_income = np.array([1.0, 3.5, 2.0, 0.5], dtype=np.float32)
    methods = {"predict": Method("label", squeeze=True), "decision_function": Method("scores")}
    feeds = {"age": sample_age.reshape(-1, 1), "income": sample_income.reshape(-1, 1)}
    import onnxruntime as ort

    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    names = ["label", "scores"]
    outs = dict(zip(names, session.run(names, feeds), strict=True))
    parity = measure(
        outs, tabular_reference(sample_age, sample_income), methods, atol=1e-4, rtol=1e-3, rows=4
    )
    split_onx, wbytes = split(onx)
    graph = split_onx.SerializeToString()
    columns = (Column("age", "numeric", "age"), Column("income", "numeric", "income"))
    pack(
        path,
        [default_entry(GRAPH_NAME, graph), default_entry(WEIGHTS, wbytes)],
        lambda files: model_manifest(
            split_onx,
            files,
            name="credit-toy",
            task="classifier",
            framework=("hand-built", ""),
            methods=methods,
            columns=columns,
            parity=parity,
            created="2025-01-01T00:00:00Z",
            description="Toy classifier over two DataFrame columns — naïve weights",
            metadata_={"dataset": "none (hand-written weights)", "license": "Apache-2.0"},
        ),
        [key],
        {GRAPH_NAME: "graph", WEIGHTS: "weights"},
    )
    age = np.array([30.0, 70.0, 18.0], dtype=np.float32)
    income = np.array([4.0, 0.25, 2.5], dtype=np.float32)
    return _case(
        "valid-tabular-classifier",
        "Classifier over DataFrame columns 'age' and 'income' "
        "(manifest columns, predict with squeeze, decision_function, parity, metadata, "
        "created, non-ASCII description)",
        ["ecdsa-p256"],
        "ok",
        signers=[key.key_id],
        predict={
            "method": "predict",
            "dtype": "float32",
            "input": {"age": _floats(age), "income": _floats(income)},
            "output": tabular_reference(age, income)["label"].tolist(),
        },
    )


def training_state_json(framework_version: str = "2.6.0") -> bytes:
    """training/state.json for a Linear(4, 3) with an SGD-with-momentum optimizer."""

    def f(v: float) -> dict[str, Any]:
        return {"type": "float", "value": v}

    options = {
        "type": "dict",
        "items": [
            [{"type": "str", "value": k}, v]
            for k, v in (
                ("lr", f(0.125)),
                ("momentum", f(0.5)),
                ("dampening", {"type": "int", "value": 0}),
                ("weight_decay", {"type": "int", "value": 0}),
                ("nesterov", {"type": "bool", "value": False}),
                ("maximize", {"type": "bool", "value": False}),
                ("foreach", {"type": "none"}),
                ("differentiable", {"type": "bool", "value": False}),
                ("fused", {"type": "none"}),
            )
        ],
    }
    doc = {
        "format": "model-bundle/training-state",
        "version": 1,
        "framework": {"name": "pytorch", "version": framework_version},
        "model": {
            "class": "torch.nn.modules.linear.Linear",
            "tensors": [
                {
                    "name": "weight",
                    "dtype": "float32",
                    "shape": [3, 4],
                    "source": "training",
                    "key": "model/weight",
                },
                {
                    "name": "bias",
                    "dtype": "float32",
                    "shape": [3],
                    "source": "weights",
                    "key": "bias",
                },
            ],
        },
        "optimizer": {
            "class": "torch.optim.sgd.SGD",
            "param_groups": [{"params": ["weight", "bias"], "options": options}],
            "state": {
                "weight": {
                    "type": "dict",
                    "items": [
                        [
                            {"type": "str", "value": "momentum_buffer"},
                            {"type": "tensor", "key": "optimizer/weight/momentum_buffer"},
                        ]
                    ],
                }
            },
        },
        "scheduler": None,
        "rng": None,
    }
    return _json.dumps(doc)


def _training(path: Path, key: signing.PrivateKey) -> dict[str, Any]:
    """A Linear(4, 3) whose weight the graph holds transposed, plus its training state."""
    onx, wbytes = split(linear_model())
    state = weights_mod.serialize(
        {"model/weight": LIN_W, "optimizer/weight/momentum_buffer": MOMENTUM}
    )
    contents = {
        GRAPH_NAME: onx.SerializeToString(),
        WEIGHTS: wbytes,
        STATE_JSON: training_state_json(),
        STATE_TENSORS: state,
    }
    roles = {
        GRAPH_NAME: "graph",
        WEIGHTS: "weights",
        STATE_JSON: "training_state",
        STATE_TENSORS: "training_state",
    }
    pack(
        path,
        [default_entry(n, d) for n, d in contents.items()],
        lambda files: model_manifest(
            onx,
            files,
            name="linear",
            task="generic",
            framework=("pytorch", "2.6.0"),
            methods={"predict": Method("output")},
        ),
        [key],
        roles,
    )
    x = np.array([[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    return _case(
        "valid-training-state",
        "Linear(4, 3) as a PyTorch export stores it (weight "
        "transposed in the graph, so the state_dict weight lives in training/state."
        "safetensors) with SGD momentum state: role training_state, typed JSON tree",
        ["ecdsa-p256"],
        "ok",
        signers=[key.key_id],
        predict={
            "method": "predict",
            "dtype": "float32",
            "input": _floats(x),
            "output": _floats(x @ LIN_W.T + LIN_B),
        },
        restore={
            "module": "torch.nn.Linear(4, 3)",
            "optimizer": "torch.optim.SGD",
            "weight": _floats(LIN_W),
            "bias": _floats(LIN_B),
            "momentum_buffer": _floats(MOMENTUM),
        },
    )


# --------------------------------------------------------------------------- invalid


def _patch_names(data: bytes, old: bytes, new: bytes) -> bytes:
    """Rename an entry in its local and central headers (same length)."""
    if len(old) != len(new) or data.count(old) != 2:
        raise ValueError(f"cannot rename {old!r} in place")
    return data.replace(old, new)


def _central_offsets(data: bytes) -> list[int]:
    out, pos = [], 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        out.append(pos)
        pos += 4
    return out


def invalid_vectors(out: Path, keys: dict[str, signing.PrivateKey]) -> list[dict[str, Any]]:
    """Bundles a verifier must refuse, each with the error class and a message substring."""
    ecdsa, ed, evil = keys["ecdsa-p256"], keys["ed25519"], keys["untrusted"]
    good = out / "valid-ecdsa-gemm.mbundle"
    entries = read_entries(good)
    content = content_of(entries)
    base = Manifest.from_bytes(entries[MANIFEST_NAME])
    sig_name = f"signatures/{ecdsa.key_id}.sig"
    trust = ["ecdsa-p256"]
    cases = []

    def case(vid: str, description: str, expected: str, message: str, **kw: Any) -> None:
        cases.append(
            _case(vid, description, kw.pop("trusted", trust), expected, message=message, **kw)
        )

    # -- container
    (out / "bad-trailing-data.mbundle").write_bytes(good.read_bytes() + b"\0appended")
    case(
        "bad-trailing-data",
        "Bytes appended after the end-of-central-directory record",
        "FormatError",
        "follows the zip end record",
    )

    raw = bytearray(good.read_bytes())
    struct.pack_into("<I", raw, _central_offsets(bytes(raw))[0] + 38, 0o120777 << 16)
    (out / "bad-symlink-entry.mbundle").write_bytes(bytes(raw))
    case(
        "bad-symlink-entry",
        "model.onnx marked as a symbolic link in the central directory's external attributes",
        "FormatError",
        "not a regular file",
    )

    tmp = out / "bad-entry-name.mbundle"
    write_entries(
        tmp,
        [default_entry(n, d) for n, d in entries.items()]
        + [EntryData("xx/escape.txt", b"zip slip")],
    )
    tmp.write_bytes(_patch_names(tmp.read_bytes(), b"xx/escape.txt", b"../escape.txt"))
    case(
        "bad-entry-name",
        "An extra entry named '../escape.txt' (zip slip)",
        "FormatError",
        "not canonical",
    )

    # -- signatures
    write_entries(
        out / "bad-signature-removed.mbundle",
        [default_entry(n, d) for n, d in entries.items() if n != sig_name],
    )
    case(
        "bad-signature-removed",
        "The signed Gemm bundle with its signature entry removed",
        "SignatureError",
        "unsigned",
    )

    assemble(out / "bad-untrusted-signer.mbundle", content, base, [evil])
    case(
        "bad-untrusted-signer",
        "Correct bundle signed only by a key that is not trusted "
        "(derived in generate.py, never committed)",
        "SignatureError",
        "signed by 0 trusted key(s), 1 required",
    )

    cases.append(
        _case(
            "bad-threshold",
            "The one-signer Gemm bundle verified with both test keys trusted and threshold 2",
            ["ecdsa-p256", "ed25519"],
            "SignatureError",
            file="valid-ecdsa-gemm.mbundle",
            threshold=2,
            message="signed by 1 trusted key(s), 2 required",
        )
    )

    edited = dataclasses.replace(
        base, model=dataclasses.replace(base.model, description="edited after signing")
    )
    write_entries(
        out / "bad-manifest-edited.mbundle",
        [default_entry(n, d) for n, d in content.items()]
        + [EntryData(MANIFEST_NAME, edited.to_bytes()), EntryData(sig_name, entries[sig_name])],
    )
    case(
        "bad-manifest-edited",
        "manifest.json edited (still canonical) after signing; the signature is the original",
        "SignatureError",
        "does not cover",
    )

    mm = read_entries(out / "valid-two-signers-matmul.mbundle")
    write_entries(
        out / "bad-lifted-signature.mbundle",
        [default_entry(n, d) for n, d in content_of(mm).items()]
        + [EntryData(MANIFEST_NAME, mm[MANIFEST_NAME]), EntryData(sig_name, entries[sig_name])],
    )
    case(
        "bad-lifted-signature",
        "The MatMul bundle carrying the Gemm bundle's valid ECDSA "
        "signature (a signature lifted from another bundle)",
        "SignatureError",
        "does not cover",
    )

    write_entries(
        out / "bad-signature-misnamed.mbundle",
        [default_entry(n, d) for n, d in content.items()]
        + [
            EntryData(MANIFEST_NAME, entries[MANIFEST_NAME]),
            EntryData(f"signatures/{ed.key_id}.sig", entries[sig_name]),
        ],
    )
    case(
        "bad-signature-misnamed",
        "The ECDSA signature stored under the Ed25519 key's id",
        "SignatureError",
        "holds a signature for key",
    )

    # -- manifest
    doc = base.to_dict()
    doc["format_version"] = 2
    assemble(
        out / "bad-format-version.mbundle", content, base, [ecdsa], manifest_bytes=_json.dumps(doc)
    )
    case(
        "bad-format-version",
        "format_version 2, correctly signed: a version-1 reader refuses it",
        "FormatError",
        "format_version",
    )

    text = json.dumps(base.to_dict(), sort_keys=True, indent=1, ensure_ascii=False)
    assemble(
        out / "bad-noncanonical-manifest.mbundle",
        content,
        base,
        [ecdsa],
        manifest_bytes=text.encode(),
    )
    case(
        "bad-noncanonical-manifest",
        "manifest.json as indented (non-canonical) JSON of the same value, correctly signed",
        "FormatError",
        "not canonical",
    )

    doc = base.to_dict()
    doc["files"][0]["executable"] = True
    assemble(
        out / "bad-manifest-unknown-field.mbundle",
        content,
        base,
        [ecdsa],
        manifest_bytes=_json.dumps(doc),
    )
    case(
        "bad-manifest-unknown-field",
        "A file entry with an unknown field, correctly signed",
        "FormatError",
        "unknown field",
    )

    bundle.save(
        gemm_model(),
        out / "bad-expired.mbundle",
        signing_key=ecdsa,
        name="gemm",
        expires="2001-01-01T00:00:00Z",
    )
    case(
        "bad-expired",
        "Correctly signed, but its signed expiry 2001-01-01T00:00:00Z has passed",
        "FreshnessError",
        "expired at 2001-01-01T00:00:00Z",
    )

    # -- integrity
    weights = bytearray(content[WEIGHTS])
    weights[-1] ^= 0x01
    write_entries(
        out / "bad-weights-byte.mbundle",
        [default_entry(n, bytes(weights) if n == WEIGHTS else d) for n, d in entries.items()],
    )
    case(
        "bad-weights-byte",
        "One bit of the last weight flipped (zip CRC recomputed); manifest and signature unchanged",
        "IntegrityError",
        "SHA-256",
    )

    write_entries(
        out / "bad-missing-entry.mbundle",
        [default_entry(n, d) for n, d in entries.items() if n != GRAPH_NAME],
    )
    case(
        "bad-missing-entry",
        "model.onnx removed; manifest and signature unchanged",
        "IntegrityError",
        "missing",
    )

    pickle_stream = b"cos\nsystem\n(S'echo owned'\ntR."  # never unpickled: bytes only
    write_entries(
        out / "bad-extra-entry.mbundle",
        [default_entry(n, d) for n, d in entries.items()]
        + [EntryData("payload.pkl", pickle_stream)],
    )
    case(
        "bad-extra-entry",
        "An unlisted entry 'payload.pkl' (a pickle stream) added after the signatures",
        "IntegrityError",
        "not listed",
    )

    files = [
        dataclasses.replace(f, size=f.size + 1) if f.role == "weights" else f
        for f in (
            FileEntry(n, r, len(content[n]), sha256_bytes(content[n]))
            for n, r in ((GRAPH_NAME, "graph"), (WEIGHTS, "weights"))
        )
    ]
    assemble(out / "bad-size-mismatch.mbundle", content, base, [ecdsa], files=files)
    case(
        "bad-size-mismatch",
        "The manifest records the weights one byte longer than they are, correctly signed",
        "IntegrityError",
        "manifest records",
    )

    def deflate_all(name: str, data: bytes) -> EntryData:
        return EntryData(name, data, compress=True)

    assemble(out / "bad-weights-deflated.mbundle", content, base, [ecdsa], entry=deflate_all)
    case(
        "bad-weights-deflated",
        "weights.safetensors stored with DEFLATE, correctly signed",
        "FormatError",
        "must be STORED",
    )

    def unaligned(name: str, data: bytes) -> EntryData:
        return EntryData(name, data, compress=name == GRAPH_NAME)

    assemble(out / "bad-weights-unaligned.mbundle", content, base, [ecdsa], entry=unaligned)
    case(
        "bad-weights-unaligned",
        "weights.safetensors STORED but not 4096-aligned, correctly signed",
        "FormatError",
        "not aligned",
    )

    def graph_stored(name: str, data: bytes) -> EntryData:
        return EntryData(name, data, align=name == WEIGHTS)

    assemble(out / "bad-graph-stored.mbundle", content, base, [ecdsa], entry=graph_stored)
    case(
        "bad-graph-stored",
        "model.onnx STORED instead of DEFLATEd (a second encoding of "
        "the same bundle), correctly signed",
        "FormatError",
        "must be DEFLATE-compressed",
    )

    # -- content (all correctly signed by the trusted key)
    def signed_graph(vid: str, graph: ModelProto, wbytes: bytes) -> None:
        assemble(
            out / f"{vid}.mbundle",
            {GRAPH_NAME: graph.SerializeToString(), WEIGHTS: wbytes},
            base,
            [ecdsa],
        )

    onx, wbytes = split(gemm_model(), {"unused": np.zeros(2, dtype=np.float32)})
    signed_graph("bad-unused-tensor", onx, wbytes)
    case(
        "bad-unused-tensor",
        "weights.safetensors holds a tensor the graph never uses",
        "UntrustedContentError",
        "never uses",
    )

    onx, wbytes = split(gemm_model())
    for e in onx.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../secret.bin"
    signed_graph("bad-external-location", onx, wbytes)
    case(
        "bad-external-location",
        "An initializer's external data location is '../secret.bin'",
        "UntrustedContentError",
        "may only point into",
    )

    onx, wbytes = split(gemm_model())
    for e in onx.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = str(int(e.value) + 4)
    signed_graph("bad-external-offset", onx, wbytes)
    case(
        "bad-external-offset",
        "An initializer's external data offset is 4 bytes past its tensor in weights.safetensors",
        "UntrustedContentError",
        "do not match",
    )

    onx, wbytes = split(gemm_model())
    onx.graph.node.append(
        helper.make_node("Evil", ["Y"], ["Z"], name="evil", domain="com.example.evil")
    )
    onx.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    signed_graph("bad-custom-domain", onx, wbytes)
    case(
        "bad-custom-domain",
        "A node of the custom operator domain 'com.example.evil'",
        "UntrustedContentError",
        "com.example.evil",
    )

    onx, wbytes = split(gemm_model())
    onx.graph.node.append(helper.make_node("EPContext", ["Y"], ["Z"], name="engine"))
    signed_graph("bad-epcontext-node", onx, wbytes)
    case(
        "bad-epcontext-node",
        "An EPContext node (a precompiled execution-provider engine)",
        "UntrustedContentError",
        "EPContext",
    )

    header = b'{"B":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    bad_weights = struct.pack("<Q", len(header)) + header + b"\0" * 16
    assemble(out / "bad-weights-trailing.mbundle", {**content, WEIGHTS: bad_weights}, base, [ecdsa])
    case(
        "bad-weights-trailing",
        "weights.safetensors with 4 bytes after its last tensor",
        "FormatError",
        "trailing bytes",
    )
    return cases


# --------------------------------------------------------------------------- index


GENERATOR_PACKAGES = ("model-bundle", "onnx", "protobuf", "safetensors", "cryptography", "numpy")


def environment() -> dict[str, str]:
    """What the vector bytes depend on; byte identity is expected only when these match."""
    env = {name: metadata.version(name) for name in GENERATOR_PACKAGES}
    env["python"] = platform.python_version()
    env["zlib"] = zlib.ZLIB_RUNTIME_VERSION
    if WRITER_REVISION != 1:  # absent for 0.1.0's writer, which had no revision number
        env["writer"] = str(WRITER_REVISION)
    return env


def generate(out: Path) -> dict[str, Any]:
    """Write keys, vectors and index.json into ``out``; return the index."""
    out.mkdir(parents=True, exist_ok=True)
    keys = write_keys(out)
    vectors = valid_vectors(out, keys) + invalid_vectors(out, keys)
    index = {
        "format_version": 1,
        "description": "Test vectors of spec/FORMAT.md. Regenerate with "
        "`python spec/vectors/generate.py`. The keys are TEST ONLY.",
        "generator": environment(),
        "keys": {
            name: {
                "public": pub_path(name),
                "private": f"keys/{stem}.key",
                "key_id": keys[name].key_id,
                "type": keys[name].public_key.key_type,
            }
            for name, stem in KEY_FILES.items()
        },
        "vectors": vectors,
    }
    (out / "index.json").write_text(_pretty(index) + "\n", encoding="utf-8")
    return index


def _pretty(value: Any, indent: str = "") -> str:
    """Indented JSON, with lists of plain values (vectors, matrix rows) kept on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        if all(
            isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v) for v in value
        ):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def main() -> None:
    """Command line: regenerate into --out (default: this directory)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    index = generate(args.out)
    ok = sum(v["expected"] == "ok" for v in index["vectors"])
    print(f"wrote {len(index['vectors'])} vectors ({ok} valid) to {args.out}")


if __name__ == "__main__":
    main()
