"""Sharded digests: large entries hashed in shards, in parallel, with an OMS ``shards`` statement.

The shard size is lowered to the smallest one the format allows (4 MiB) so a
~10 MB weights entry splits into three shards and every test stays fast.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import read_entries, save_tiny, write_raw

import bundle
from bundle.errors import FormatError, IntegrityError, SignatureError
from bundle.export.writer import GRAPH_NAME, statement_for
from bundle.format import canonical_json as _json
from bundle.format import digest
from bundle.format.archive import EntryData, ZipReader
from bundle.format.manifest import MANIFEST_NAME, FileEntry, Manifest
from bundle.format.weights import WEIGHTS_NAME
from bundle.trust import dsse

S = digest.MIN_SHARD_SIZE
N = 896  # 4 MatMul layers of 896 x 896 float32: 12.25 MiB of weights, 4 shards of 4 MiB


def _mlp(n: int = N, layers: int = 4, seed: int = 0) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "X"
    for i in range(layers):
        w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        out = f"H{i}" if i < layers - 1 else "Y"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _reference(model: Any, x: np.ndarray) -> np.ndarray:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        x = x @ numpy_helper.to_array(init)
    return x


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> Path:
    path = tmp_path_factory.mktemp("sharded") / "mlp.mbundle"
    old = digest.SHARD_SIZE
    digest.SHARD_SIZE = S
    try:
        bundle.save(_mlp(), path, name="mlp", signing_key=key)
    finally:
        digest.SHARD_SIZE = old
    return path


def _manifest(path: Path) -> Manifest:
    return Manifest.from_bytes(read_entries(path)[MANIFEST_NAME])


def _payload(path: Path, key: bundle.PrivateKey) -> dict[str, Any]:
    env = json.loads(read_entries(path)[f"signatures/{key.key_id}.sig"])
    statement: dict[str, Any] = json.loads(base64.b64decode(env["dsseEnvelope"]["payload"]))
    return statement


def _sign(
    out: Path,
    entries: dict[str, bytes],
    manifest_bytes: bytes,
    statement: bytes,
    key: bundle.PrivateKey,
) -> Path:
    """A bundle of exactly these entries, this manifest and this signed statement."""
    items = [
        EntryData(n, d, align=(n == WEIGHTS_NAME), compress=(n == GRAPH_NAME))
        for n, d in sorted(entries.items())
        if n != MANIFEST_NAME and not n.startswith("signatures/")
    ]
    items.append(EntryData(MANIFEST_NAME, manifest_bytes))
    items.append(EntryData(f"signatures/{key.key_id}.sig", dsse.sign_statement(statement, key)))
    return write_raw(out, items)


# --------------------------------------------------------------------------- the format


def test_large_entry_is_recorded_in_shards_with_its_root(
    sharded: Path, key: bundle.PrivateKey
) -> None:
    entries = read_entries(sharded)
    w = _manifest(sharded).file("weights")
    data = entries[WEIGHTS_NAME]
    assert w.size == len(data) > 3 * S
    assert w.shard_size == S
    spans = [(a, min(a + S, len(data))) for a in range(0, len(data), S)]
    assert w.shards == tuple(hashlib.sha256(data[a:b]).hexdigest() for a, b in spans)
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for d in w.shards)).hexdigest()
    assert w.sha256 == root
    assert w.sha256 != hashlib.sha256(data).hexdigest()  # a root, not the plain file hash
    graph = _manifest(sharded).file("graph")
    assert (graph.shards, graph.shard_size) == ((), 0)  # small entries: plain SHA-256
    assert graph.sha256 == hashlib.sha256(entries[GRAPH_NAME]).hexdigest()
    assert "shards" not in json.dumps(graph.to_dict())


def test_sharded_bundle_verifies_and_loads(sharded: Path, key: bundle.PrivateKey) -> None:
    report = bundle.verify(sharded, trusted_keys=key.public_key)
    assert report.verified
    x = np.random.default_rng(1).standard_normal((3, N)).astype(np.float32)
    for zero_copy in (False, True):
        m = bundle.load(sharded, trusted_keys=key.public_key, device="cpu", zero_copy=zero_copy)
        np.testing.assert_allclose(m.predict(x), _reference(_mlp(), x), rtol=1e-4, atol=1e-4)


def test_statement_uses_oms_shards_serialization(sharded: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(sharded)
    st = _payload(sharded, key)
    ser = st["predicate"]["serialization"]
    assert ser["method"] == "shards"
    assert ser["shard_size"] == S
    assert ser["hash_type"] == "sha256"
    names = [r["name"] for r in st["predicate"]["resources"]]
    size = len(entries[WEIGHTS_NAME])
    expected = [
        f"{MANIFEST_NAME}:0:{len(entries[MANIFEST_NAME])}",
        f"{GRAPH_NAME}:0:{len(entries[GRAPH_NAME])}",
        *[f"{WEIGHTS_NAME}:{a}:{min(a + S, size)}" for a in range(0, size, S)],
    ]
    assert names == expected  # every file, cut as model_signing cuts it; numeric order
    for r in st["predicate"]["resources"]:
        path, a, b = r["name"].rsplit(":", 2)
        assert r["digest"] == hashlib.sha256(entries[path][int(a) : int(b)]).hexdigest()
    root = hashlib.sha256(
        b"".join(bytes.fromhex(r["digest"]) for r in st["predicate"]["resources"])
    ).hexdigest()
    assert st["subject"][0]["digest"]["sha256"] == root


def test_small_bundle_keeps_files_method_and_old_bytes(
    tmp_path: Path, key: bundle.PrivateKey
) -> None:
    """Unsharded bundles are written exactly as before sharding existed."""
    path = save_tiny(tmp_path / "tiny.mbundle", key)
    st = _payload(path, key)
    assert st["predicate"]["serialization"]["method"] == "files"
    assert [r["name"] for r in st["predicate"]["resources"]] == [
        MANIFEST_NAME,
        GRAPH_NAME,
        WEIGHTS_NAME,
    ]
    raw = json.loads(read_entries(path)[MANIFEST_NAME])
    assert all(set(f) == {"path", "role", "size", "sha256"} for f in raw["files"])


def test_bundle_written_the_old_way_still_verifies(tmp_path: Path, key: bundle.PrivateKey) -> None:
    """A format-1 bundle as written before sharding: whole-entry hashes, files statement,
    weights serialized in memory by the safetensors library."""
    from bundle.format import weights as weights_mod

    new = save_tiny(tmp_path / "new.mbundle", key)
    entries = read_entries(new)
    onx = _tiny_graph_with_weights()
    tensors = weights_mod.externalize(onx)
    old_weights = weights_mod.serialize(tensors)
    assert old_weights == entries[WEIGHTS_NAME]  # the streamed writer's bytes are the same
    manifest = _manifest(new)
    files = tuple(
        FileEntry(f.path, f.role, f.size, hashlib.sha256(entries[f.path]).hexdigest())
        for f in manifest.files
    )
    manifest = dataclasses.replace(manifest, files=files)
    mbytes = manifest.to_bytes()
    resources = [(f.path, f.sha256) for f in files] + [
        (MANIFEST_NAME, hashlib.sha256(mbytes).hexdigest())
    ]
    statement = dsse.build_statement("tiny", resources)
    old = _sign(tmp_path / "old.mbundle", entries, mbytes, statement, key)
    assert old.read_bytes() == new.read_bytes()
    assert bundle.verify(old, trusted_keys=key.public_key).verified


def _tiny_graph_with_weights() -> Any:
    from helpers import tiny_model

    return tiny_model(0)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("shard", [0, 1, 3])
def test_flipped_byte_in_any_shard_is_refused_naming_it(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey, shard: int
) -> None:
    with ZipReader(sharded) as r:
        at = r.entries[WEIGHTS_NAME].data_offset + shard * S + 12345
    data = bytearray(sharded.read_bytes())
    data[at] ^= 0x01
    bad = tmp_path / "bad.mbundle"
    bad.write_bytes(bytes(data))
    for attempt in (
        lambda: bundle.verify(bad, trusted_keys=key.public_key),
        lambda: bundle.load(bad, trusted_keys=key.public_key, device="cpu"),
    ):
        with pytest.raises(IntegrityError, match=rf"shard {shard} of 4 \(bytes {shard * S}\.\."):
            attempt()


def _edit_manifest(tmp_path: Path, sharded: Path, key: bundle.PrivateKey, edit: Any) -> Path:
    """Re-sign the sharded bundle with its weights entry's manifest record edited."""
    entries = read_entries(sharded)
    doc = json.loads(entries[MANIFEST_NAME])
    w = next(f for f in doc["files"] if f["role"] == "weights")
    edit(w)
    mbytes = _json.dumps(doc)
    good = _manifest(sharded)
    st = statement_for(good, entries[MANIFEST_NAME])
    stdoc = json.loads(st)
    for r in stdoc["predicate"]["resources"]:
        if r["name"].startswith(MANIFEST_NAME + ":"):
            r["name"] = f"{MANIFEST_NAME}:0:{len(mbytes)}"
            r["digest"] = hashlib.sha256(mbytes).hexdigest()
    res = [(r["name"], r["digest"]) for r in stdoc["predicate"]["resources"]]
    statement = dsse.build_statement("mlp", res, S)
    return _sign(tmp_path / "edited.mbundle", entries, mbytes, statement, key)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w["shards"].pop(), "are listed"),
        (lambda w: w["shards"].append(w["shards"][0]), "are listed"),
        (lambda w: w.update(sha256=w["shards"][0]), "not the root of its shards"),
        (lambda w: w["shards"].reverse(), "not the root of its shards"),
        (lambda w: w.update(shard_size=S * 2), "are listed"),
        (lambda w: w.update(shard_size=S + 1), "power of two"),
        (lambda w: w.pop("shard_size"), "come together"),
    ],
)
def test_missing_extra_or_wrong_shards_in_manifest_are_refused(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey, edit: Any, message: str
) -> None:
    bad = _edit_manifest(tmp_path, sharded, key, edit)
    with pytest.raises(FormatError, match=message):
        bundle.verify(bad, trusted_keys=key.public_key)


def test_consistent_manifest_with_a_wrong_shard_digest_is_refused(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey
) -> None:
    """A signer's manifest whose shard list is self-consistent but not the data's."""

    def edit(w: dict[str, Any]) -> None:
        w["shards"][2] = hashlib.sha256(b"other").hexdigest()
        w["sha256"] = digest.shard_root(w["shards"])

    bad = _edit_manifest(tmp_path, sharded, key, edit)
    with pytest.raises(SignatureError, match="disagree"):  # the statement still has the old
        bundle.verify(bad, trusted_keys=key.public_key)
    # Signed consistently (statement from the edited manifest), the data is what differs.
    entries = read_entries(bad)
    manifest = Manifest.from_bytes(entries[MANIFEST_NAME])
    again = _sign(
        tmp_path / "again.mbundle",
        entries,
        entries[MANIFEST_NAME],
        statement_for(manifest, entries[MANIFEST_NAME]),
        key,
    )
    with pytest.raises(IntegrityError, match="shard 2 of 4"):
        bundle.verify(again, trusted_keys=key.public_key)


def _statement_variant(sharded: Path, key: bundle.PrivateKey, edit: Any) -> bytes:
    entries = read_entries(sharded)
    st = json.loads(statement_for(_manifest(sharded), entries[MANIFEST_NAME]))
    res = [(r["name"], r["digest"]) for r in st["predicate"]["resources"]]
    res, shard_size = edit(res)
    return dsse.build_statement("mlp", res, shard_size)


def _drop_weights_shard(res: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    return [r for r in res if not r[0].startswith(f"{WEIGHTS_NAME}:{S}:")], S


def _extra_weights_shard(res: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    last = max(int(n.rsplit(":", 1)[1]) for n, _ in res if n.startswith(WEIGHTS_NAME))
    return [*res, (f"{WEIGHTS_NAME}:{last}:{last + 8}", "0" * 64)], S


def _swap_digests(res: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    w = [i for i, (n, _) in enumerate(res) if n.startswith(WEIGHTS_NAME)]
    res = list(res)
    (a, da), (b, db) = res[w[0]], res[w[1]]
    res[w[0]], res[w[1]] = (a, db), (b, da)
    return res, S


def _as_files(res: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], None]:
    out: dict[str, list[str]] = {}
    for n, d in res:
        out.setdefault(n.rsplit(":", 2)[0], []).append(d)
    return [(p, ds[0] if len(ds) == 1 else digest.shard_root(ds)) for p, ds in out.items()], None


def _recut(res: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """The weights' shards renamed as if twice as long: the same digests, other pieces."""
    out = []
    for n, d in res:
        p, a, b = n.rsplit(":", 2)
        out.append(
            (f"{p}:{int(a) * 2}:{int(a) * 2 + (int(b) - int(a)) * 2}", d)
            if p == WEIGHTS_NAME
            else (n, d)
        )
    return out, 2 * S


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_drop_weights_shard, SignatureError, "consecutive"),
        (_extra_weights_shard, SignatureError, "consecutive|disagree"),
        (_swap_digests, SignatureError, "disagree"),
        (_as_files, SignatureError, "whole files"),
        (_recut, SignatureError, "consecutive|disagree"),
    ],
)
def test_statement_with_missing_extra_or_wrong_shards_is_refused(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey, edit: Any, error: type, message: str
) -> None:
    entries = read_entries(sharded)
    bad = _sign(
        tmp_path / "st.mbundle",
        entries,
        entries[MANIFEST_NAME],
        _statement_variant(sharded, key, edit),
        key,
    )
    with pytest.raises(error, match=message):
        bundle.verify(bad, trusted_keys=key.public_key)


def test_statement_shards_must_be_in_oms_order(sharded: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(sharded)
    st = json.loads(statement_for(_manifest(sharded), entries[MANIFEST_NAME]))
    res = st["predicate"]["resources"]
    res[2], res[3] = res[3], res[2]
    st["subject"][0]["digest"]["sha256"] = digest.shard_root([r["digest"] for r in res])
    with pytest.raises(SignatureError, match="sorted"):
        dsse.parse_statement(_json.dumps(st), "s")


def test_manifest_shard_sizes_must_agree() -> None:
    big = FileEntry(
        WEIGHTS_NAME,
        "weights",
        S + 1,
        digest.shard_root(["a" * 64, "b" * 64]),
        ("a" * 64, "b" * 64),
        S,
    )
    with pytest.raises(FormatError, match="larger than the shard size"):
        _with_files([FileEntry(path=GRAPH_NAME, role="graph", size=S + 10, sha256="c" * 64), big])
    with pytest.raises(FormatError, match="different sizes"):
        _with_files(
            [
                FileEntry(
                    GRAPH_NAME,
                    "graph",
                    2 * S + 1,
                    digest.shard_root(["a" * 64, "b" * 64]),
                    ("a" * 64, "b" * 64),
                    2 * S,
                ),
                big,
            ]
        )
    with pytest.raises(FormatError, match="not sharded at shard_size"):
        FileEntry(WEIGHTS_NAME, "weights", S, "a" * 64, ("a" * 64,), S)


def _with_files(files: list[FileEntry]) -> Manifest:
    from bundle.format.manifest import ModelInfo, OnnxInfo, TensorSpec

    return Manifest(
        ModelInfo("m", "1", "", "generic", "onnx", "9", "onnx", ""),
        OnnxInfo(9, {"ai.onnx": 17}, "1.16"),
        (TensorSpec("X", "float32", (None, 2)),),
        (TensorSpec("Y", "float32", (None, 2)),),
        tuple(files),
    )


# --------------------------------------------------------------------------- the hasher


def test_parallel_range_hashing_equals_sequential(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    f = tmp_path / "blob"
    f.write_bytes(data)
    spans = [(0, 0), (5, 1 << 20), (1 << 20, 3 * (1 << 20) + 12345), (7, 7000)]
    keep = [0, 100, 0, 5]
    fd = os.open(f, os.O_RDONLY)
    try:
        got = digest.hash_ranges(fd, spans, workers=3, keep=keep, buffer_size=65536)
        seen: list[int] = []
        again = digest.hash_ranges(fd, spans, workers=1, buffer_size=1000, progress=seen.append)
        with pytest.raises(digest.ShortReadError):
            digest.hash_ranges(fd, [(len(data) - 10, len(data) + 10)])
    finally:
        os.close(fd)
    for (a, b), r, r1, k in zip(spans, got, again, keep, strict=True):
        assert r.sha256 == r1.sha256 == hashlib.sha256(data[a:b]).digest()
        assert r.crc32 == r1.crc32 == zlib.crc32(data[a:b])
        assert r.head == data[a : a + k]
    assert sum(seen) == sum(b - a for a, b in spans)


def test_hashing_into_a_buffer_keeps_the_hashed_bytes(tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    f = tmp_path / "blob"
    f.write_bytes(data)
    buf = bytearray(len(data))
    view = memoryview(buf)
    fd = os.open(f, os.O_RDONLY)
    try:
        rs = digest.hash_ranges(
            fd, [(0, 1 << 20), (1 << 20, 2 << 20)], into=[view[: 1 << 20], view[1 << 20 :]]
        )
    finally:
        os.close(fd)
    assert bytes(buf) == data
    assert [r.hexdigest for r in rs] == [
        hashlib.sha256(data[: 1 << 20]).hexdigest(),
        hashlib.sha256(data[1 << 20 :]).hexdigest(),
    ]


def test_crc32_combine_matches_zlib() -> None:
    rng = random.Random(0)
    for _ in range(200):
        a = rng.randbytes(rng.randint(0, 3000))
        b = rng.randbytes(rng.randint(0, 3000))
        assert digest.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_digest_bytes_shards_only_above_the_shard_size() -> None:
    data = os.urandom(S + 1)
    assert digest.digest_bytes(data[:S], S) == digest.Digest(hashlib.sha256(data[:S]).hexdigest())
    d = digest.digest_bytes(data, S)
    assert d.shards == (hashlib.sha256(data[:S]).hexdigest(), hashlib.sha256(data[S:]).hexdigest())
    assert d.sha256 == digest.shard_root(d.shards)


def test_crc_of_a_sharded_entry_is_still_checked(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey
) -> None:
    """No hash covers the zip CRC field: a flipped CRC bit must be refused too."""
    with ZipReader(sharded) as r:
        e = r.entries[WEIGHTS_NAME]
    data = bytearray(sharded.read_bytes())
    data[e.header_offset + 14] ^= 0x01  # local header CRC-32
    bad = tmp_path / "crc.mbundle"
    bad.write_bytes(bytes(data))
    with pytest.raises((FormatError, IntegrityError)):
        bundle.verify(bad, trusted_keys=key.public_key)


# --------------------------------------------------------------------------- interop

_OMS_VERIFY = """
import pathlib, sys
from model_signing import verifying
model, sig, pub = map(pathlib.Path, sys.argv[1:4])
try:
    verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)
except ValueError as e:
    print("FAILED", e)
    sys.exit(1)
print("VERIFIED")
"""


@pytest.mark.interop
def test_sharded_bundle_verifies_with_model_signing(
    tmp_path: Path, sharded: Path, key: bundle.PrivateKey
) -> None:
    """OMS's reference verifier (its Python API: the 1.1.1 CLI has no shard option)
    re-cuts the unzipped bundle by the signed shard size and checks every piece."""
    import subprocess
    import zipfile

    if os.environ.get("MODEL_BUNDLE_SKIP_INTEROP") == "1":
        pytest.skip("MODEL_BUNDLE_SKIP_INTEROP=1: model_signing interop tests skipped")
    from test_interop_oms import VENV, _build_venv, _usable, _venv_python

    python = str(_venv_python(VENV if _usable(VENV) else _build_venv()))
    model = tmp_path / "model"
    with zipfile.ZipFile(sharded) as z:
        z.extractall(model)
    pub = tmp_path / "k.pub"
    pub.write_bytes(key.public_key.pem())
    sig = model / "signatures" / f"{key.key_id}.sig"

    def oms() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-c", _OMS_VERIFY, str(model), str(sig), str(pub)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    ok = oms()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout
    with open(model / WEIGHTS_NAME, "r+b") as f:
        f.seek(2 * S + 99)
        byte = f.read(1)
        f.seek(2 * S + 99)
        f.write(bytes([byte[0] ^ 1]))
    bad = oms()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{WEIGHTS_NAME}:{2 * S}:{3 * S}" in bad.stdout
