"""Shared helpers for the container, verification and key tests.

No training framework needed: the model is built with ``onnx.helper``
(X[N,4] @ W[4,3] + B[3] -> Relu, W and B initializers), and bundles with
arbitrary content are assembled from the package's own writer, archive and
signing internals so that a test can sign exactly the bytes it wants refused.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bundle
from bundle.export.writer import GRAPH_NAME, statement_for
from bundle.format import canonical_json as _json
from bundle.format.archive import EntryData, ZipReader, ZipWriter
from bundle.format.digest import sha256_bytes
from bundle.format.manifest import MANIFEST_NAME, FileEntry, Manifest, is_deflated
from bundle.format.weights import WEIGHTS_NAME
from bundle.trust import dsse

LOCAL = struct.Struct("<IHHHHHIIIHH")
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<IHHHHIIH")
SIG_LOCAL, SIG_CENTRAL, SIG_EOCD = 0x04034B50, 0x02014B50, 0x06054B50


# --------------------------------------------------------------------------- the model


def tiny_model(seed: int = 0, *, domain: str = "", op: str = "Relu") -> Any:
    """X[N,4] @ W[4,3] + B[3] -> Relu, with W and B as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
        helper.make_node("Add", ["XW", "B"], ["Z"], name="add"),
        helper.make_node(op, ["Z"], ["Y"], name="act", domain=domain),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests")
    model.ir_version = 8
    return model


def spin_model() -> Any:
    """Y[1] = N[1] iterations of "add one": a Loop whose trip count is the input's value.

    The trip count comes from the input so that saving (which runs the sample) is
    cheap while an input of 2**60 makes one call run for ever.
    """
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["N", "scalar"], ["M"]),
            helper.make_node("Loop", ["M", "true", "zero"], ["Y"], body=body),
        ],
        "spin",
        [helper.make_tensor_value_info("N", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        initializer=[
            helper.make_tensor("scalar", TensorProto.INT64, [0], []),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests"
    )
    model.ir_version = 8
    return model


def save_tiny(path: str | Path, key: Any = None, *, seed: int = 0, **kw: Any) -> Path:
    """Save the tiny model as a bundle signed with ``key`` (a key or a list; None: unsigned)."""
    bundle.save(tiny_model(seed), path, sample_input=None, signing_key=key, name="tiny", **kw)
    return Path(path)


# --------------------------------------------------------------------------- bundle surgery


def read_entries(path: str | Path) -> dict[str, bytes]:
    """Every entry's bytes, in archive order (through the package's own strict reader)."""
    with ZipReader(path) as r:
        ordered = sorted(r.entries.values(), key=lambda e: e.header_offset)
        return {e.name: r.read(e.name, max_size=1 << 30) for e in ordered}


def write_raw(path: str | Path, entries: Sequence[EntryData]) -> Path:
    """Write exactly these entries, in this order, with the deterministic writer."""
    buf = io.BytesIO()
    w = ZipWriter(buf)
    for e in entries:
        w.write(e)
    w.close()
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def rewrite(path: str | Path, out: str | Path, entries: dict[str, bytes]) -> Path:
    """Write ``entries`` (name -> bytes) as a bundle, the weights aligned, the graph deflated."""
    return write_raw(
        out,
        [
            EntryData(n, d, align=(n == WEIGHTS_NAME), compress=(n == GRAPH_NAME))
            for n, d in entries.items()
        ],
    )


def _recording(method: Any, reads: list[str]) -> Any:
    def record(self: ZipReader, name: str, *a: Any, **k: Any) -> Any:
        reads.append(name)
        return method(self, name, *a, **k)

    return record


def swap_after_hashing(monkeypatch: Any, names: Sequence[str]) -> list[str]:
    """Overwrite entries ``names`` in the file with 0xFF bytes right after verification
    hashed them; return the list of entry names read through the ZipReader after that.

    A check that parses what was hashed neither sees the new bytes nor reads again.
    """
    from bundle.trust import verify as _verify

    hash_files = _verify._hash_files
    reads: list[str] = []

    def swapped(reader: ZipReader, *args: Any, **kw: Any) -> Any:
        out = hash_files(reader, *args, **kw)
        with open(reader.path, "r+b") as f:
            for name in names:
                e = reader.entries[name]
                f.seek(e.data_offset)
                f.write(b"\xff" * e.size)
        for method in ("read", "read_range", "iter_entry"):
            monkeypatch.setattr(ZipReader, method, _recording(getattr(ZipReader, method), reads))
        return out

    monkeypatch.setattr(_verify, "_hash_files", swapped)
    return reads


def count_hashed(monkeypatch: Any) -> list[int]:
    """Record the bytes each ``hash_ranges`` call hashes (one total per call)."""
    from bundle.format import digest

    hashed: list[int] = []
    real = digest.hash_ranges

    def counting(fd: int, spans: Any, **kw: Any) -> Any:
        hashed.append(sum(b - a for a, b in spans))
        return real(fd, spans, **kw)

    monkeypatch.setattr(digest, "hash_ranges", counting)
    return hashed


def manifest_of(path: str | Path) -> Manifest:
    return Manifest.from_bytes(read_entries(path)[MANIFEST_NAME])


def build_signed(
    out: str | Path,
    contents: dict[str, bytes],
    keys: Sequence[Any],
    *,
    base: Manifest,
    roles: dict[str, str] | None = None,
    manifest_bytes: bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A correctly hashed and signed bundle holding exactly ``contents``.

    The manifest is ``base`` with its file list recomputed from ``contents``
    (roles from ``roles``, else from ``base``); ``manifest_bytes`` replaces its
    serialization (e.g. non-canonical JSON) and is what gets hashed and signed.
    ``extra`` entries are written after the signatures, unlisted and unsigned.
    """
    old_roles = {f.path: f.role for f in base.files}
    roles = {**old_roles, **(roles or {})}
    files = tuple(
        FileEntry(n, roles[n], len(d), sha256_bytes(d)) for n, d in sorted(contents.items())
    )
    import dataclasses

    manifest = dataclasses.replace(base, files=files)
    mbytes = manifest_bytes if manifest_bytes is not None else manifest.to_bytes()
    statement = statement_for(manifest, mbytes)
    sigs = {k.key_id: dsse.sign_statement(statement, k) for k in keys}
    entries = [
        EntryData(n, d, compress=is_deflated(n, roles[n]), align=not is_deflated(n, roles[n]))
        for n, d in sorted(contents.items())
    ]
    entries.append(EntryData(MANIFEST_NAME, mbytes))
    entries += [EntryData(f"signatures/{kid}.sig", sigs[kid]) for kid in sorted(sigs)]
    entries += [EntryData(n, d) for n, d in (extra or {}).items()]
    return write_raw(out, entries)


def noncanonical(manifest: Manifest) -> bytes:
    """The manifest as valid JSON that is not canonical (indented)."""
    import json

    text = json.dumps(manifest.to_dict(), sort_keys=True, indent=1, ensure_ascii=False)
    assert _json.loads(text.encode(), what="m") == manifest.to_dict()
    return text.encode("utf-8")


def safetensors_bytes(header: dict[str, Any], data: bytes) -> bytes:
    """A safetensors file with this (not checked) header and data area."""
    raw = _json.dumps(header)
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# --------------------------------------------------------------------------- raw zips


def local_header(
    name: bytes,
    data: bytes,
    *,
    method: int = 0,
    flags: int = 0x0800,
    extra: bytes = b"",
    crc: int | None = None,
    csize: int | None = None,
    usize: int | None = None,
) -> bytes:
    crc = zlib.crc32(data) if crc is None else crc
    return (
        LOCAL.pack(
            SIG_LOCAL,
            20,
            flags,
            method,
            0,
            33,
            crc,
            len(data) if csize is None else csize,
            len(data) if usize is None else usize,
            len(name),
            len(extra),
        )
        + name
        + extra
    )


def central_header(
    name: bytes,
    data: bytes,
    offset: int,
    *,
    method: int = 0,
    flags: int = 0x0800,
    extra: bytes = b"",
    crc: int | None = None,
    csize: int | None = None,
    usize: int | None = None,
    ext_attr: int = 0o100644 << 16,
) -> bytes:
    crc = zlib.crc32(data) if crc is None else crc
    return (
        CENTRAL.pack(
            SIG_CENTRAL,
            (3 << 8) | 20,
            20,
            flags,
            method,
            0,
            33,
            crc,
            len(data) if csize is None else csize,
            len(data) if usize is None else usize,
            len(name),
            len(extra),
            0,
            0,
            0,
            ext_attr,
            offset,
        )
        + name
        + extra
    )


def make_zip(
    items: Sequence[tuple[str | bytes, bytes]],
    *,
    prefix: bytes = b"",
    gap: bytes = b"",
    suffix: bytes = b"",
    comment: bytes = b"",
    local: dict[str, Any] | None = None,
    central: dict[str, Any] | None = None,
    local_name: bytes | None = None,
    count: int | None = None,
    cd_size_delta: int = 0,
    method: int = 0,
    prefix_counted: bool = False,
) -> bytes:
    """A zip built field by field. ``local``/``central`` override header fields of every
    entry; ``local_name`` replaces the first entry's name in its local header only;
    ``gap`` goes between entries; ``prefix`` shifts everything, and offsets count it only
    with ``prefix_counted`` (as a self-extracting archive would); ``method`` 8 deflates
    every entry."""
    out = bytearray(prefix)
    cds = []
    for i, (name, data) in enumerate(items):
        bname = name.encode("utf-8") if isinstance(name, str) else name
        if i and gap:
            out += gap
        offset = len(out) - (0 if prefix_counted else len(prefix))
        lname = local_name if (i == 0 and local_name is not None) else bname
        payload = data
        sizes: dict[str, Any] = {}
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
            sizes = {
                "method": 8,
                "crc": zlib.crc32(data),
                "csize": len(payload),
                "usize": len(data),
            }
        out += local_header(lname, payload, **{**sizes, **(local or {})})
        out += payload
        cds.append(central_header(bname, payload, offset, **{**sizes, **(central or {})}))
    cd_offset = len(out) - (0 if prefix_counted else len(prefix))
    cd = b"".join(cds)
    out += cd
    n = len(items) if count is None else count
    out += EOCD.pack(SIG_EOCD, 0, 0, n, n, len(cd) + cd_size_delta, cd_offset, len(comment))
    out += comment + suffix
    return bytes(out)
