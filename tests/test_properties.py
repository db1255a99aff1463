"""Properties: canonical JSON, the manifest parser, and sign-mutate-verify by byte region.

Hypothesis runs derandomized (a fixed seed per test), so a run is reproducible and
CI cannot flake on an example it happened to draw; the example counts are sized
to keep this file at about half a minute.

* Canonical JSON: encoding is a fixed point of parse-then-encode; any byte string
  either parses to a value whose encoding is exactly those bytes, or is refused
  with a FormatError -- never another exception.
* Manifest: every manifest the schema allows survives bytes -> Manifest -> bytes
  exactly; a mutated manifest (a field removed, added, retyped, a list item
  duplicated...) is either refused with a FormatError or is itself such a
  fixed point.
* Sign-mutate-verify: one bit flipped anywhere in a signed bundle is refused.
  tests/trust/test_verify.py flips bit 0 of every byte; here bits 1-7 are flipped in
  every byte of every header region (local headers, central directory, end
  record) and at drawn offsets of every entry's data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import save_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bundle
from bundle.errors import BundleError, FormatError
from bundle.format import canonical_json as _json
from bundle.format.archive import ZipReader
from bundle.format.manifest import (
    COLUMN_KINDS,
    DTYPES,
    FILE_ROLES,
    METHODS,
    PRECISIONS,
    TASKS,
    Column,
    FileEntry,
    Manifest,
    Method,
    ModelInfo,
    OnnxInfo,
    Parity,
    TensorSpec,
)
from bundle.format.manifest import OutputParity as OutputParityT

SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- JSON values

text = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | finite | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(json_values)
def test_canonical_encoding_round_trips(value: Any) -> None:
    data = _json.dumps(value)
    parsed = _json.loads_canonical(data, what="v")
    assert _json.dumps(parsed) == data
    assert parsed == value


@SETTINGS
@given(st.dictionaries(text, json_values, min_size=2, max_size=5))
def test_other_spellings_of_the_same_object_are_refused(value: dict[str, Any]) -> None:
    canonical = _json.dumps(value)
    spellings = [
        json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).encode(),
        json.dumps(
            dict(reversed(list(value.items()))), separators=(",", ":"), ensure_ascii=False
        ).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),  # \\u escapes
        canonical + b" ",
    ]
    for other in spellings:
        if other == canonical:
            continue
        assert _json.loads(other, what="v") == _json.loads(canonical, what="v")
        with pytest.raises(FormatError, match="not canonical"):
            _json.loads_canonical(other, what="v")


def _edited(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, cut, insert in edits:
        pos %= len(out) + 1
        out[pos : pos + cut] = insert
    return bytes(out)


json_ish = st.one_of(
    st.binary(max_size=64),
    st.builds(
        _edited,
        json_values.map(_json.dumps),
        st.lists(
            st.tuples(
                st.integers(0, 200),
                st.integers(0, 3),
                st.sampled_from(
                    [
                        b"",
                        b"{",
                        b"}",
                        b"[",
                        b"]",
                        b",",
                        b":",
                        b'"',
                        b"\\",
                        b"0",
                        b"-",
                        b"e",
                        b".",
                        b" ",
                        b"\xff",
                        b"\xc3",
                        b"nul",
                        b"9" * 30,
                    ]
                ),
            ),
            max_size=4,
        ),
    ),
)


@settings(SETTINGS, max_examples=400)
@given(json_ish)
def test_any_bytes_are_canonical_json_or_a_format_error(data: bytes) -> None:
    try:
        value = _json.loads_canonical(data, what="v")
    except FormatError:
        return
    assert _json.dumps(value) == data


@pytest.mark.parametrize("data", [b"1e400", b'{"a":-1e999}', b"[1E400]"])
def test_overflowing_number_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError, match="out of range"):
        _json.loads_canonical(data, what="v")


# --------------------------------------------------------------------------- manifests

ident = st.text(min_size=1, max_size=16)
segment = st.from_regex(r"[a-z0-9_-][a-z0-9_.-]{0,7}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
paths = (
    st.lists(segment, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda p: p != "manifest.json" and not p.startswith("signatures/"))
)
sha = st.binary(min_size=32, max_size=32).map(bytes.hex)
nonneg = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
dims = st.lists(
    st.none() | st.integers(0, 2**40) | st.text(min_size=1, max_size=8), max_size=4
).map(tuple)
tensor_specs = st.lists(
    st.builds(TensorSpec, ident, st.sampled_from(DTYPES), dims),
    min_size=1,
    max_size=3,
    unique_by=lambda s: s.name,
).map(tuple)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    inputs, outputs = draw(tensor_specs), draw(tensor_specs)
    out_names = [o.name for o in outputs]
    in_names = [i.name for i in inputs]
    names = draw(st.lists(paths, min_size=2, max_size=4, unique=True))
    roles = ["graph", "weights"] + [
        draw(st.sampled_from(("training_state", "asset"))) for _ in names[2:]
    ]
    files = tuple(
        sorted(
            (
                FileEntry(p, r, draw(st.integers(0, 2**40)), draw(sha))
                for p, r in zip(names, roles, strict=True)
            ),
            key=lambda f: f.path,
        )
    )
    methods = {
        m: Method(draw(st.sampled_from(out_names)), draw(st.booleans()))
        for m in draw(st.lists(st.sampled_from(METHODS), unique=True, max_size=3))
    }
    columns = tuple(
        Column(n, draw(st.sampled_from(COLUMN_KINDS)), draw(st.sampled_from(in_names)))
        for n in draw(st.lists(ident, unique=True, max_size=3))
    )
    parity = draw(
        st.none()
        | st.builds(
            Parity,
            nonneg,
            nonneg,
            st.integers(0, 10**6),
            st.lists(
                st.builds(OutputParityT, ident, nonneg, nonneg, st.integers(0, 10**6)), max_size=2
            ).map(tuple),
            st.booleans(),
        )
    )
    return Manifest(
        model=ModelInfo(
            draw(ident),
            draw(st.text(min_size=1, max_size=8)),
            draw(st.text(max_size=30)),
            draw(st.sampled_from(TASKS)),
            draw(ident),
            draw(st.text(max_size=8)),
            draw(ident),
            draw(st.text(max_size=8)),
            draw(st.sampled_from(PRECISIONS)),
        ),
        onnx=OnnxInfo(
            draw(st.integers(1, 1000)),
            draw(
                st.dictionaries(st.text(max_size=10), st.integers(1, 10**6), min_size=1, max_size=3)
            ),
            draw(st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}", fullmatch=True)),
        ),
        inputs=inputs,
        outputs=outputs,
        files=files,
        methods=methods,
        columns=columns,
        parity=parity,
        metadata=draw(st.dictionaries(ident, st.text(max_size=20), max_size=3)),
        created_by=draw(st.text(min_size=1, max_size=20)),
        created=draw(st.none() | st.text(min_size=1, max_size=20)),
    )


@settings(SETTINGS, max_examples=100)
@given(manifests())
def test_manifest_bytes_round_trip(m: Manifest) -> None:
    data = m.to_bytes()
    parsed = Manifest.from_bytes(data)
    assert parsed == m
    assert parsed.to_bytes() == data


def _mutate(data: st.DataObject, doc: Any) -> str:
    """Change ``doc`` in place at a random place; return what was done (for the report)."""
    draw = data.draw
    node, where = doc, "$"
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        children = [k for k in keys if isinstance(node[k], (dict, list)) and node[k]]
        if not children or draw(st.integers(0, 2)) == 0:
            break
        k = draw(st.sampled_from(children))
        node, where = node[k], f"{where}.{k}"
    op = draw(st.sampled_from(["delete", "replace", "add", "duplicate", "retype"]))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if op == "add" or not keys:
        if isinstance(node, dict):
            node[draw(text)] = draw(json_values)
        else:
            node.append(draw(json_values))
        return f"add at {where}"
    k = draw(st.sampled_from(keys))
    if op == "delete":
        del node[k]
    elif op == "replace":
        node[k] = draw(json_values)
    elif op == "duplicate" and isinstance(node, list):
        node.insert(k, node[k])
    else:
        value = node[k]
        node[k] = (
            str(value) if not isinstance(value, str) else int(value) if value.isdigit() else [value]
        )
    return f"{op} {where}.{k}"


@settings(SETTINGS, max_examples=150)
@given(manifests(), st.data())
def test_mutated_manifest_is_refused_or_exact(m: Manifest, data: st.DataObject) -> None:
    doc = json.loads(m.to_bytes())
    what = _mutate(data, doc)
    try:
        raw = _json.dumps(doc)
    except ValueError:  # the mutation made a value JSON cannot hold
        return
    try:
        parsed = Manifest.from_bytes(raw)
    except FormatError:
        return
    # Compared as JSON values: a number is equal to its float spelling (1 == 1.0), the
    # reported gap tested exactly below; anything else accepted must re-encode unchanged.
    assert json.loads(parsed.to_bytes()) == json.loads(raw), (
        f"accepted after {what} but means something else"
    )


@pytest.mark.parametrize("field", ["atol", "rtol"])
def test_integer_for_a_float_field_is_refused(field: str) -> None:
    """0 and 0.0 are one value: only the float spelling the writer uses is accepted."""
    doc = json.loads(_valid_manifest().to_bytes())
    doc["parity"]["tolerance"][field] = 0
    with pytest.raises(FormatError, match="float"):
        Manifest.from_bytes(_json.dumps(doc))


def test_integer_given_to_a_float_field_is_written_as_a_float() -> None:
    m = dataclasses.replace(
        _valid_manifest(), parity=Parity(0, 0, 3, (OutputParityT("Y", 0, 1, 0),))
    )
    assert Manifest.from_bytes(m.to_bytes()).to_bytes() == m.to_bytes()


def _valid_manifest() -> Manifest:
    """A fixed manifest with parity (floats) filled in."""
    return Manifest(
        model=ModelInfo("m", "1", "", "regressor", "onnx", "1", "c", "1", "fp32"),
        onnx=OnnxInfo(8, {"ai.onnx": 17}, "1.17"),
        inputs=(TensorSpec("X", "float32", (None, 4)),),
        outputs=(TensorSpec("Y", "float32", (None, 3)),),
        files=(
            FileEntry("model.onnx", "graph", 1, "0" * 64),
            FileEntry("weights.safetensors", "weights", 1, "1" * 64),
        ),
        parity=Parity(1e-5, 1e-4, 3, (OutputParityT("Y", 0.0, 0.0, 0),)),
        created_by="tests",
    )


def test_roles_cover_the_schema() -> None:
    assert set(FILE_ROLES) >= {"graph", "weights", "training_state", "asset"}


# --------------------------------------------------------------------------- bit flips


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bundle.TrustStore, bytes]:
    key = bundle.generate_key()
    path = save_tiny(tmp_path_factory.mktemp("props") / "tiny.mbundle", key)
    return path, bundle.TrustStore([key.public_key]), path.read_bytes()


def _regions(path: Path, data: bytes) -> dict[str, tuple[int, int]]:
    """Every byte region of a bundle: each entry's local header and data, the central
    directory, the end record."""
    with ZipReader(path) as r:
        entries = sorted(r.entries.values(), key=lambda e: e.header_offset)
    out = {}
    for e in entries:
        out[f"local header of {e.name}"] = (e.header_offset, e.data_offset)
        out[f"data of {e.name}"] = (e.data_offset, e.data_offset + e.compressed_size)
    cd_offset = struct.unpack_from("<I", data, len(data) - 6)[0]
    out["central directory"] = (cd_offset, len(data) - 22)
    out["end record"] = (len(data) - 22, len(data))
    assert sorted(out.values())[0][0] == 0
    assert sum(b - a for a, b in out.values()) == len(data)
    return out


def _flip_refused(
    path: Path, trust: bundle.TrustStore, data: bytes, flips: list[tuple[int, int]]
) -> tuple[list[Any], list[Any]]:
    """Flip each (offset, bit) in place, verify, restore; collect acceptances and others."""
    accepted, wrong = [], []
    fd = os.open(path, os.O_RDWR)
    try:
        for offset, bit in flips:
            os.pwrite(fd, bytes([data[offset] ^ (1 << bit)]), offset)
            try:
                bundle.verify(path, trusted_keys=trust)
                accepted.append((offset, bit))
            except BundleError:
                pass
            except Exception as e:
                wrong.append((offset, bit, repr(e)))
            finally:
                os.pwrite(fd, data[offset : offset + 1], offset)
    finally:
        os.close(fd)
    return accepted, wrong


def test_every_header_bit_flip_is_refused(
    signed: tuple[Path, bundle.TrustStore, bytes],
) -> None:
    """Bits 1-7 of every byte outside entry data (bit 0: tests/trust/test_verify.py)."""
    path, trust, data = signed
    regions = _regions(path, data)
    padding = _padding(data, regions)
    skip = set(padding)
    flips = [
        (i, bit)
        for name, (a, b) in regions.items()
        if not name.startswith("data of")
        for i in range(a, b)
        if i not in skip
        for bit in range(1, 8)
    ]
    # the zero padding of the weights' alignment record is 4 KiB: every 64th byte of it
    flips += [(i, bit) for i in padding[::64] for bit in range(1, 8)]
    assert len(flips) > 2000
    accepted, wrong = _flip_refused(path, trust, data, flips)
    assert not wrong, wrong[:5]
    assert not accepted, accepted[:10]
    assert path.read_bytes() == data


def _padding(data: bytes, regions: dict[str, tuple[int, int]]) -> list[int]:
    """Offsets of alignment zero padding inside local headers."""
    out: list[int] = []
    for name, (a, _end) in regions.items():
        if name.startswith("local header"):
            nlen, xlen = struct.unpack_from("<HH", data, a + 26)
            extra = a + 30 + nlen
            pos = extra
            while pos + 4 <= extra + xlen:
                hid, hlen = struct.unpack_from("<HH", data, pos)
                if hid == 0xD935:
                    out += range(pos + 6, pos + 4 + hlen)
                pos += 4 + hlen
    return out


@settings(SETTINGS, max_examples=300)
@given(st.data())
def test_bit_flips_in_entry_data_are_refused(
    signed: tuple[Path, bundle.TrustStore, bytes], data: st.DataObject
) -> None:
    path, trust, raw = signed
    regions = {k: v for k, v in _regions(path, raw).items() if k.startswith("data of")}
    name = data.draw(st.sampled_from(sorted(regions)))
    a, b = regions[name]
    offset = data.draw(st.integers(a, b - 1))
    bit = data.draw(st.integers(0, 7))
    accepted, wrong = _flip_refused(path, trust, raw, [(offset, bit)])
    assert not wrong, wrong
    assert not accepted, f"flip of bit {bit} at {offset} ({name}) verified"
