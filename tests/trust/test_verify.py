"""Verify before parse: signatures, integrity, and content checks on signed bundles.

Many cases here are *correctly signed by the trusted key* and must still be
refused (a malicious or careless signer, or a key used to sign what it should
not): they are built with ``helpers.build_signed``, which hashes and signs
exactly the entries given. Every refusal must be a BundleError subclass, from
``verify`` and from ``load`` alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from helpers import (
    build_signed,
    manifest_of,
    noncanonical,
    read_entries,
    rewrite,
    safetensors_bytes,
    save_tiny,
    spin_model,
    swap_after_hashing,
    tiny_model,
    write_raw,
)
from onnx import TensorProto, helper, numpy_helper

import bundle
from bundle.cli import exit_code_of as cli_exit_code
from bundle.errors import (
    BundleError,
    FormatError,
    IntegrityError,
    SignatureError,
    UntrustedContentError,
)
from bundle.export.writer import statement_for
from bundle.format import canonical_json as _json
from bundle.format.archive import ALIGNMENT, EntryData, ZipReader
from bundle.format.manifest import MANIFEST_NAME
from bundle.format.weights import WEIGHTS_NAME
from bundle.trust import dsse

GRAPH = "model.onnx"
X = np.array(
    [[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 1.5, -0.5]], dtype=np.float32
)


def expected(seed: int = 0) -> np.ndarray:
    m = tiny_model(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out: np.ndarray = np.maximum(X @ inits["W"] + inits["B"], 0)
    return out


def sig_name(key: bundle.PrivateKey) -> str:
    return f"signatures/{key.key_id}.sig"


def refused(
    path: Path, exc: type[BundleError], trusted: Any, match: str | None = None, **kw: Any
) -> BundleError:
    """Both verify() and load() refuse ``path`` with ``exc`` (and nothing else)."""
    errors = []
    for fn in (
        lambda: bundle.verify(path, trusted_keys=trusted, **kw),
        lambda: bundle.load(path, trusted_keys=trusted, device="cpu", **kw),
    ):
        with pytest.raises(BundleError) as info:
            fn()
        assert isinstance(info.value, exc), f"{type(info.value).__name__}: {info.value}"
        if match is not None:
            assert match in str(info.value), str(info.value)
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1])
    return errors[0]


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key("ecdsa-p256")


@pytest.fixture(scope="module")
def key2() -> bundle.PrivateKey:
    return bundle.generate_key("ed25519")


@pytest.fixture(scope="module")
def other() -> bundle.PrivateKey:
    return bundle.generate_key("ecdsa-p256")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> Path:
    return save_tiny(tmp_path_factory.mktemp("verify") / "tiny.mbundle", key)


@pytest.fixture(scope="module")
def tiny_b(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> Path:
    """Another model (other weights) signed by the same trusted key."""
    return save_tiny(tmp_path_factory.mktemp("verify") / "tiny_b.mbundle", key, seed=1)


def contents_of(path: Path) -> dict[str, bytes]:
    e = read_entries(path)
    return {GRAPH: e[GRAPH], WEIGHTS_NAME: e[WEIGHTS_NAME]}


def graph_of(path: Path) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.ParseFromString(read_entries(path)[GRAPH])
    return m


def signed_variant(
    tiny: Path,
    out: Path,
    key: bundle.PrivateKey,
    *,
    graph: Callable[[onnx.ModelProto], None] | None = None,
    weights: bytes | None = None,
    **kw: Any,
) -> Path:
    """``tiny`` with its graph edited and/or weights replaced, then re-hashed and re-signed."""
    contents = contents_of(tiny)
    if graph is not None:
        m = graph_of(tiny)
        graph(m)
        contents[GRAPH] = m.SerializeToString()
    if weights is not None:
        contents[WEIGHTS_NAME] = weights
    return build_signed(out, contents, [key], base=manifest_of(tiny), **kw)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_round_trip(tmp_path: Path, key_type: str) -> None:
    k = bundle.generate_key(key_type)
    path = save_tiny(tmp_path / "t.mbundle", k)
    report = bundle.verify(path, trusted_keys=k.public_key)
    assert report.verified
    assert [s.key_id for s in report.signers] == [k.key_id]
    assert report.signers[0].key_type == key_type
    assert report.signers[0].entry == sig_name(k)
    assert {f.path for f in report.files} == {GRAPH, WEIGHTS_NAME}
    m = bundle.load(path, trusted_keys=k.public_key, device="cpu")
    np.testing.assert_allclose(m.predict(X), expected(), rtol=1e-6, atol=1e-6)
    # in-memory and zero-copy weights give the same answers
    m2 = bundle.load(path, trusted_keys=k.public_key, device="cpu", zero_copy=True)
    np.testing.assert_allclose(m2.predict(X), expected(), rtol=1e-6, atol=1e-6)


def test_trusted_keys_as_pub_file_and_directory(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    _, pub = key.save(tmp_path / "me")
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(pub, store / "me.pub")
    other.save(store / "other")
    choices: list[Any] = [str(pub), pub, store, [pub, key.public_key]]
    for trusted in choices:
        report = bundle.verify(tiny, trusted_keys=trusted)
        assert report.signers[0].key_id == key.key_id


def test_untrusted_key(tiny: Path, other: bundle.PrivateKey) -> None:
    err = refused(tiny, SignatureError, other.public_key, "untrusted signer")
    assert tiny.exists()
    assert cli_exit_code(err) == 5


def test_extra_untrusted_signature_is_reported(
    tmp_path: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "two.mbundle", [key, other])
    report = bundle.verify(path, trusted_keys=key.public_key)
    assert [s.key_id for s in report.signers] == [key.key_id]
    assert report.untrusted_signatures == (other.key_id,)


def test_unsigned_bundle(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "unsigned.mbundle", None)
    assert not [n for n in read_entries(path) if n.startswith("signatures/")]
    refused(path, SignatureError, key.public_key, "unsigned")
    refused(path, SignatureError, None)
    report = bundle.verify(path, allow_unsigned=True)
    assert not report.verified
    assert report.signers == ()
    m = bundle.load(path, allow_unsigned=True, device="cpu")
    np.testing.assert_allclose(m.predict(X), expected(), rtol=1e-6, atol=1e-6)
    # allow_unsigned still checks integrity
    entries = read_entries(path)
    entries[WEIGHTS_NAME] = entries[WEIGHTS_NAME][:-1] + bytes([entries[WEIGHTS_NAME][-1] ^ 1])
    bad = rewrite(path, tmp_path / "unsigned-bad.mbundle", entries)
    refused(bad, IntegrityError, None, WEIGHTS_NAME, allow_unsigned=True)


def test_allow_unsigned_with_an_untrusted_signature(tiny: Path, other: bundle.PrivateKey) -> None:
    report = bundle.verify(tiny, trusted_keys=other.public_key, allow_unsigned=True)
    assert not report.verified
    assert report.signers == ()


# --------------------------------------------------------------------------- tampering


def test_extra_entry_is_refused_and_named(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    entries = read_entries(tiny)
    entries["extra/notes.txt"] = b"hello"
    path = rewrite(tiny, tmp_path / "extra.mbundle", entries)
    err = refused(path, IntegrityError, key.public_key, "extra/notes.txt")
    assert err.entry == "extra/notes.txt"


@pytest.mark.parametrize("name", [GRAPH, WEIGHTS_NAME])
def test_listed_entry_removed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, name: str
) -> None:
    entries = read_entries(tiny)
    del entries[name]
    path = rewrite(tiny, tmp_path / "missing.mbundle", entries)
    err = refused(path, IntegrityError, key.public_key, name)
    assert err.entry == name


def test_manifest_removed(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(tiny)
    del entries["manifest.json"]
    refused(
        rewrite(tiny, tmp_path / "nomanifest.mbundle", entries),
        FormatError,
        key.public_key,
        "manifest.json",
    )


def test_signature_removed(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(tiny)
    del entries[sig_name(key)]
    refused(
        rewrite(tiny, tmp_path / "nosig.mbundle", entries),
        SignatureError,
        key.public_key,
        "unsigned",
    )


def test_truncated_file(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    data = tiny.read_bytes()
    for n in (1, 21, 22, 100, len(data) // 2, len(data) - 22, len(data) - 1):
        p = tmp_path / f"trunc{n}.mbundle"
        p.write_bytes(data[:n])
        refused(p, FormatError, key.public_key)


def test_garbage_file(tmp_path: Path, key: bundle.PrivateKey) -> None:
    rng = random.Random(0)
    for i, data in enumerate(
        [rng.randbytes(5000), b"\0" * 5000, b"PK\x03\x04" * 100, b"PK\x05\x06" + b"\0" * 18, b"{}"]
    ):
        p = tmp_path / f"garbage{i}.mbundle"
        p.write_bytes(data)
        refused(p, FormatError, key.public_key)


def test_every_single_bit_flip_is_refused(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    """Flip one bit at every offset of a small signed bundle: always a BundleError.

    The file is patched in place (pwrite) so each case costs one verify, not a file
    creation; ``load`` is tried on every 7th offset as well.
    """
    data = tiny.read_bytes()
    assert len(data) < 16_000
    path = tmp_path / "flip.mbundle"
    path.write_bytes(data)
    trust = bundle.TrustStore([key.public_key])
    bundle.verify(path, trusted_keys=trust)
    accepted: list[int] = []
    wrong: list[tuple[int, str]] = []
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(len(data)):
            os.pwrite(fd, bytes([data[i] ^ 1]), i)
            calls: list[Callable[[], object]] = [lambda: bundle.verify(path, trusted_keys=trust)]
            if i % 7 == 0:
                calls.append(lambda: bundle.load(path, trusted_keys=trust, device="cpu"))
            for call in calls:
                try:
                    call()
                    accepted.append(i)
                except BundleError:
                    pass
                except Exception as e:
                    wrong.append((i, repr(e)))
            os.pwrite(fd, data[i : i + 1], i)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert not wrong, f"non-BundleError exceptions: {wrong[:5]}"
    assert not accepted, f"flips accepted at offsets {accepted[:20]} ({len(accepted)} in all)"


def test_signature_substitution(
    tmp_path: Path, tiny: Path, tiny_b: Path, key: bundle.PrivateKey
) -> None:
    """A valid signature by the trusted key, lifted from another bundle."""
    entries = read_entries(tiny)
    entries[sig_name(key)] = read_entries(tiny_b)[sig_name(key)]
    path = rewrite(tiny, tmp_path / "subst.mbundle", entries)
    err = refused(path, SignatureError, key.public_key, "does not cover")
    assert err.entry == sig_name(key)


@pytest.fixture(scope="module")
def tiny_sigmoid(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> Path:
    """A model with another graph (Sigmoid for Relu), same weights, same trusted key."""
    path = tmp_path_factory.mktemp("verify") / "sigmoid.mbundle"
    bundle.save(tiny_model(0, op="Sigmoid"), path, signing_key=key, name="tiny")
    return path


@pytest.mark.parametrize(
    "swap", [[WEIGHTS_NAME], [GRAPH], [GRAPH, WEIGHTS_NAME], ["manifest.json"]]
)
def test_mix_and_match(
    tmp_path: Path,
    tiny: Path,
    tiny_b: Path,
    tiny_sigmoid: Path,
    key: bundle.PrivateKey,
    swap: list[str],
) -> None:
    """Entries of bundle B put into bundle A, both signed by the same trusted key."""
    a, b = read_entries(tiny), read_entries(tiny_b)
    # the graph holds no weights: models that differ only in weights share graph bytes
    assert a[GRAPH] == b[GRAPH]
    assert a[WEIGHTS_NAME] != b[WEIGHTS_NAME]
    if swap == [GRAPH]:
        b = read_entries(tiny_sigmoid)
        assert b[GRAPH] != a[GRAPH]
        assert b[WEIGHTS_NAME] == a[WEIGHTS_NAME]
    for name in swap:
        a[name] = b[name]
    path = rewrite(tiny, tmp_path / "mix.mbundle", a)
    exc = SignatureError if swap == ["manifest.json"] else IntegrityError
    err = refused(path, exc, key.public_key)
    if exc is IntegrityError:
        assert err.entry in swap


def test_manifest_and_signature_of_b_with_content_of_a(
    tmp_path: Path, tiny: Path, tiny_b: Path, key: bundle.PrivateKey
) -> None:
    a, b = read_entries(tiny), read_entries(tiny_b)
    a["manifest.json"], a[sig_name(key)] = b["manifest.json"], b[sig_name(key)]
    refused(rewrite(tiny, tmp_path / "mix2.mbundle", a), IntegrityError, key.public_key)


# --------------------------------------------------------------------------- thresholds


def test_threshold_two_of_two(
    tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    both = save_tiny(tmp_path / "both.mbundle", [key, key2])
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    report = bundle.verify(both, trusted_keys=trust)
    assert {s.key_id for s in report.signers} == {key.key_id, key2.key_id}
    assert bundle.verify(both, trusted_keys=[key.public_key, key2.public_key], threshold=2).verified
    one = save_tiny(tmp_path / "one.mbundle", key)
    refused(one, SignatureError, trust, "2 required")
    # a second signature by an untrusted key does not make up the count
    with_other = save_tiny(tmp_path / "other.mbundle", [key, other])
    refused(with_other, SignatureError, trust, "2 required")


def test_same_key_counts_once(
    tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey
) -> None:
    one = save_tiny(tmp_path / "one.mbundle", key)
    # two copies of the same key are one trusted key: a threshold of 2 cannot be met,
    # and asking for it is the caller's mistake, refused before any bundle is read
    copy = bundle.load_public_key(key.public_key.pem())
    assert copy is not key.public_key
    assert copy == key.public_key
    with pytest.raises(ValueError, match="distinct"):
        bundle.verify(one, trusted_keys=[key.public_key, copy], threshold=2)
    with pytest.raises(ValueError, match="distinct"):
        bundle.TrustStore([key.public_key, copy], threshold=2)
    # the same key's signature stored twice (a hint-less copy under another name)
    entries = read_entries(one)
    env = json.loads(entries[sig_name(key)])
    del env["verificationMaterial"]["publicKey"]
    del env["dsseEnvelope"]["signatures"][0]["keyid"]
    entries["signatures/" + "a" * 64 + ".sig"] = _json.dumps(env)
    rank = {MANIFEST_NAME: 1}  # the canonical order: content, manifest, signatures
    entries = dict(
        sorted(
            entries.items(),
            key=lambda kv: (2 if kv[0].startswith("signatures/") else rank.get(kv[0], 0), kv[0]),
        )
    )
    twice = rewrite(one, tmp_path / "twice.mbundle", entries)
    assert bundle.verify(twice, trusted_keys=key.public_key).verified
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    refused(twice, SignatureError, trust, "signed by 1 trusted key")


def test_sign_adds_a_second_signature(
    tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "s.mbundle", key)
    before = read_entries(path)
    with ZipReader(path) as r:
        content_end = r.entries["manifest.json"].data_offset + r.entries["manifest.json"].size
    head = path.read_bytes()[:content_end]
    report = bundle.sign(path, key2, trusted_keys=key.public_key)
    assert [s.key_id for s in report.signers] == [key2.key_id]
    after = read_entries(path)
    assert set(after) == set(before) | {sig_name(key2)}
    assert after[sig_name(key)] == before[sig_name(key)]
    assert path.read_bytes()[:content_end] == head  # content and manifest copied verbatim
    with ZipReader(path) as r:
        assert r.entries[WEIGHTS_NAME].data_offset % ALIGNMENT == 0
    assert bundle.verify(path, trusted_keys=key.public_key).verified
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    assert len(bundle.verify(path, trusted_keys=trust).signers) == 2
    m = bundle.load(path, trusted_keys=trust, device="cpu")
    np.testing.assert_allclose(m.predict(X), expected(), rtol=1e-6, atol=1e-6)
    # signing again with the same key is idempotent (deterministic signatures)
    data = path.read_bytes()
    bundle.sign(path, key2, trusted_keys=key.public_key)
    assert path.read_bytes() == data


def test_sign_refuses_a_bundle_not_trusted(
    tmp_path: Path, key: bundle.PrivateKey, other: bundle.PrivateKey
) -> None:
    path = save_tiny(tmp_path / "s.mbundle", key)
    data = path.read_bytes()
    with pytest.raises(SignatureError):
        bundle.sign(path, other, trusted_keys=other.public_key)
    assert path.read_bytes() == data


def _with_signatures(tiny: Path, out: Path, sigs: dict[str, bytes]) -> Path:
    """``tiny``'s content and manifest with exactly these signature entries (canonical order)."""
    entries = {n: d for n, d in read_entries(tiny).items() if not n.startswith("signatures/")}
    entries.update(sorted(sigs.items()))
    return rewrite(tiny, out, entries)


def _shards_statement(tiny: Path, *, manifest_end: int = 0, weights_end: int = 0) -> bytes:
    """A ``shards`` statement over ``tiny`` (one piece a file), a piece's end optionally wrong."""
    from bundle.format.digest import MIN_SHARD_SIZE, sha256_bytes

    mbytes = read_entries(tiny)[MANIFEST_NAME]
    ends = {WEIGHTS_NAME: weights_end}
    pieces = [
        (f"{f.path}:0:{ends.get(f.path) or f.size}", f.sha256)
        for f in manifest_of(tiny).files
        if f.size
    ]
    pieces.append((f"{MANIFEST_NAME}:0:{manifest_end or len(mbytes)}", sha256_bytes(mbytes)))
    return dsse.build_statement("tiny", pieces, MIN_SHARD_SIZE)


@pytest.mark.parametrize("wrong", ["manifest_end", "weights_end"])
def test_every_counted_signature_must_cover_the_bundle_on_its_own(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey, wrong: str
) -> None:
    """FORMAT.md 9.4: a trusted signature whose statement lists the same files and digests
    as another but cuts them differently (sizes) is refused on its own, so it cannot make
    up a threshold, whichever entry comes first."""
    mbytes = read_entries(tiny)[MANIFEST_NAME]
    good = dsse.sign_statement(statement_for(manifest_of(tiny), mbytes), key)
    assert bundle.verify(
        _with_signatures(
            tiny,
            tmp_path / "ok.mbundle",
            {sig_name(key2): dsse.sign_statement(_shards_statement(tiny), key2)},
        ),
        trusted_keys=key2.public_key,
    ).verified
    bad_statement = _shards_statement(tiny, **{wrong: 10_000})
    bad = dsse.sign_statement(bad_statement, key2)
    alone = _with_signatures(tiny, tmp_path / "alone.mbundle", {sig_name(key2): bad})
    refused(alone, SignatureError, key2.public_key)
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    both = _with_signatures(
        tiny, tmp_path / "both.mbundle", {sig_name(key): good, sig_name(key2): bad}
    )
    refused(both, SignatureError, trust)
    # the same with the roles of the keys swapped, so the bad signature is first and last
    good2 = dsse.sign_statement(statement_for(manifest_of(tiny), mbytes), key2)
    bad1 = dsse.sign_statement(bad_statement, key)
    swapped = _with_signatures(
        tiny, tmp_path / "swapped.mbundle", {sig_name(key): bad1, sig_name(key2): good2}
    )
    refused(swapped, SignatureError, trust)


# --------------------------------------------------------------------------- signed, still refused


def _set_location(value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(m: onnx.ModelProto) -> None:
        for e in m.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = value

    return edit


@pytest.mark.parametrize(
    "location",
    [
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "*/_ORT_MEM_ADDR_/*",
        "weights.safetensors/../x",
        "C:\\x",
        "model.onnx",
        "",
    ],
)
def test_external_data_outside_the_weights(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, location: str
) -> None:
    path = signed_variant(tiny, tmp_path / "ext.mbundle", key, graph=_set_location(location))
    err = refused(path, UntrustedContentError, key.public_key)
    assert err.entry == GRAPH


def _edit_ext(key_: str, value: str | None) -> Callable[[onnx.ModelProto], None]:
    def edit(m: onnx.ModelProto) -> None:
        init = m.graph.initializer[0]
        if value is None:
            kept = [(e.key, e.value) for e in init.external_data if e.key != key_]
            del init.external_data[:]
            for k, v in kept:
                e = init.external_data.add()
                e.key, e.value = k, v
            return
        for e in init.external_data:
            if e.key == key_:
                e.value = value
                return
        e = init.external_data.add()
        e.key, e.value = key_, value

    return edit


@pytest.mark.parametrize(
    ("ext_key", "value"),
    [
        ("offset", "0"),
        ("offset", "-8"),
        ("offset", "99999999999"),
        ("length", "4"),
        ("checksum", "abc"),
        ("length", None),
        ("offset", None),
        ("location", None),
    ],
)
def test_external_data_fields_must_match_the_header(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, ext_key: str, value: str | None
) -> None:
    path = signed_variant(tiny, tmp_path / "ext.mbundle", key, graph=_edit_ext(ext_key, value))
    refused(path, UntrustedContentError, key.public_key)


def test_external_data_key_not_utf8(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    """protobuf hands back invalid UTF-8 strings as bytes: still a clean refusal."""
    m = graph_of(tiny)
    _edit_ext("checksum", "x")(m)
    contents = contents_of(tiny)
    contents[GRAPH] = m.SerializeToString().replace(b"checksum", b"checks\xffm")
    path = build_signed(tmp_path / "utf8.mbundle", contents, [key], base=manifest_of(tiny))
    refused(path, UntrustedContentError, key.public_key, "exactly location, offset and length")


def test_every_bit_7_flip_of_signed_content_gives_a_bundle_error(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    """Each graph and weights byte changed (high bit: invalid UTF-8 in strings), re-signed.

    Such a bundle may verify (the change may be harmless) or be refused; verify and load
    must never raise anything but a BundleError.
    """
    contents, base = contents_of(tiny), manifest_of(tiny)
    trust = bundle.TrustStore([key.public_key])
    wrong: list[tuple[str, int, str]] = []
    path = tmp_path / "m.mbundle"
    for name, data in contents.items():
        for i in range(len(data)):
            mutated = {**contents, name: data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1 :]}
            build_signed(path, mutated, [key], base=base)
            calls: list[Callable[[], object]] = [lambda: bundle.verify(path, trusted_keys=trust)]
            if i % 3 == 0:
                calls.append(lambda: bundle.load(path, trusted_keys=trust, device="cpu"))
            for call in calls:
                try:
                    call()
                except BundleError:
                    pass
                except Exception as e:
                    wrong.append((name, i, repr(e)))
    assert not wrong, wrong[:5]


def test_external_and_inline_data(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    def edit(m: onnx.ModelProto) -> None:
        m.graph.initializer[0].raw_data = b"\0" * 48

    refused(
        signed_variant(tiny, tmp_path / "x.mbundle", key, graph=edit),
        UntrustedContentError,
        key.public_key,
        "inline",
    )


def test_external_data_on_a_node_attribute(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    def edit(m: onnx.ModelProto) -> None:
        t = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "../secret"
        m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=t))

    refused(
        signed_variant(tiny, tmp_path / "x.mbundle", key, graph=edit),
        UntrustedContentError,
        key.public_key,
        "external data",
    )


def _external(t: TensorProto, location: str) -> None:
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "8")):
        e = t.external_data.add()
        e.key, e.value = k, v


@pytest.mark.parametrize(
    "case",
    [
        "attr_indices",
        "attr_values",
        "attr_list_indices",
        "initializer_indices",
        "initializer_values",
    ],
)
def test_sparse_tensor_external_data(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, case: str
) -> None:
    """Sparse tensors (a node's sparse_value(s), or sparse initializers) with external data.

    Before graph.py checked sparse *indices*, onnxruntime read a file beside the bundle
    (zero-copy mode) as the indices and echoed its bytes in its error message.
    """
    (tmp_path / "secret").write_bytes(b"12345678")

    def edit(m: onnx.ModelProto) -> None:
        values = helper.make_tensor("sv", TensorProto.FLOAT, [1], [1.0])
        indices = helper.make_tensor("si", TensorProto.INT64, [1], [0])
        _external(indices if case.endswith("indices") else values, "secret")
        sparse = helper.make_sparse_tensor(values, indices, [4])
        if case.startswith("initializer"):
            m.graph.sparse_initializer.append(sparse)
            return
        node = helper.make_node("Constant", [], ["c"])
        if case == "attr_list_indices":
            attr = node.attribute.add()
            attr.name, attr.type = "sparse_values", onnx.AttributeProto.SPARSE_TENSORS
            attr.sparse_tensors.append(sparse)
        else:
            node.attribute.append(helper.make_attribute("sparse_value", sparse))
        m.graph.node.insert(0, node)

    path = signed_variant(tiny, tmp_path / "sparse.mbundle", key, graph=edit)
    # Sparse initializers are now refused as such, whatever data they hold.
    refused(
        path,
        UntrustedContentError,
        key.public_key,
        "sparse initializer" if case.startswith("initializer") else "external data",
    )
    with pytest.raises(UntrustedContentError):
        bundle.load(path, trusted_keys=key.public_key, device="cpu", zero_copy=True)


@pytest.mark.parametrize(
    "case", ["node_domain", "opset_import", "epcontext", "function", "training_info"]
)
def test_custom_domain_and_precompiled_content(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, case: str
) -> None:
    def edit(m: onnx.ModelProto) -> None:
        node = m.graph.node[2]
        if case == "node_domain":
            node.domain, node.op_type = "com.evil", "Relu"
        elif case == "opset_import":
            m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        elif case == "epcontext":
            node.op_type = "EPContext"
        elif case == "training_info":
            info = m.training_info.add()
            info.algorithm.CopyFrom(
                helper.make_graph(
                    [helper.make_node("Relu", ["a"], ["b"])],
                    "train",
                    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                    [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
                )
            )
        else:
            m.functions.append(
                helper.make_function(
                    "local",
                    "F",
                    ["a"],
                    ["b"],
                    [helper.make_node("Relu", ["a"], ["b"])],
                    [helper.make_opsetid("", 17)],
                )
            )

    err = refused(
        signed_variant(tiny, tmp_path / "dom.mbundle", key, graph=edit),
        UntrustedContentError,
        key.public_key,
    )
    assert cli_exit_code(err) == 6


def test_custom_op_in_a_subgraph(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    def edit(m: onnx.ModelProto) -> None:
        then = helper.make_graph(
            [helper.make_node("Evil", ["Z"], ["t"], domain="com.evil")],
            "then",
            [],
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
        )
        els = helper.make_graph(
            [helper.make_node("Identity", ["Z"], ["e"])],
            "else",
            [],
            [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
        )
        m.graph.node.append(
            helper.make_node("If", ["cond"], ["unused"], then_branch=then, else_branch=els)
        )

    refused(
        signed_variant(tiny, tmp_path / "sub.mbundle", key, graph=edit),
        UntrustedContentError,
        key.public_key,
        "com.evil",
    )


def _weights(header: dict[str, Any], size: int) -> bytes:
    return safetensors_bytes(header, bytes(i % 256 for i in range(size)))


@pytest.mark.parametrize(
    ("case", "header", "size", "match"),
    [
        (
            "overlap",
            {
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                "W": {"dtype": "F32", "shape": [4, 3], "data_offsets": [8, 56]},
            },
            56,
            "overlaps",
        ),
        (
            "gap",
            {
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                "W": {"dtype": "F32", "shape": [4, 3], "data_offsets": [16, 64]},
            },
            64,
            "gap",
        ),
        (
            "trailing",
            {
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                "W": {"dtype": "F32", "shape": [4, 3], "data_offsets": [12, 60]},
            },
            64,
            "trailing",
        ),
        (
            "dtype_x_shape",
            {
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                "W": {"dtype": "F64", "shape": [4, 3], "data_offsets": [12, 60]},
            },
            60,
            "needs",
        ),
        (
            "past_end",
            {
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                "W": {"dtype": "F32", "shape": [4, 3], "data_offsets": [12, 60]},
            },
            40,
            "outside",
        ),
        ("bad_dtype", {"B": {"dtype": "F31", "shape": [3], "data_offsets": [0, 12]}}, 12, "dtype"),
        (
            "extra_field",
            {"B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12], "x": 1}},
            12,
            "exactly",
        ),
        (
            "metadata",
            {
                "__metadata__": {"a": 1},
                "B": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
            },
            12,
            "__metadata__",
        ),
    ],
)
def test_malformed_safetensors_header_even_when_signed(
    tmp_path: Path,
    tiny: Path,
    key: bundle.PrivateKey,
    case: str,
    header: dict[str, Any],
    size: int,
    match: str,
) -> None:
    path = signed_variant(tiny, tmp_path / f"{case}.mbundle", key, weights=_weights(header, size))
    err = refused(path, FormatError, key.public_key, match)
    assert err.entry == WEIGHTS_NAME


@pytest.mark.parametrize(
    ("case", "weights"),
    [
        ("too_short", b"\x08\0\0"),
        ("length_past_end", (10**6).to_bytes(8, "little") + b"{}"),
        ("not_json", (8).to_bytes(8, "little") + b"{nope!!}"),
        ("not_object", (2).to_bytes(8, "little") + b"[]"),
        ("duplicate_key", (len(b'{"a":1,"a":2}')).to_bytes(8, "little") + b'{"a":1,"a":2}'),
    ],
)
def test_unparseable_safetensors_even_when_signed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, case: str, weights: bytes
) -> None:
    path = signed_variant(tiny, tmp_path / f"{case}.mbundle", key, weights=weights)
    refused(path, FormatError, key.public_key)


def test_huge_safetensors_header_length(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    path = signed_variant(
        tiny, tmp_path / "huge.mbundle", key, weights=(1 << 62).to_bytes(8, "little") + b"{}"
    )
    refused(path, FormatError, key.public_key, "limit")


def test_unused_weights_tensor(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(tiny)
    from bundle.format.weights import parse_header

    h = parse_header(entries[WEIGHTS_NAME], len(entries[WEIGHTS_NAME]))
    header = {
        n: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
        for n, t in h.tensors.items()
    }
    end = max(t.end for t in h.tensors.values())
    header["secret"] = {"dtype": "U8", "shape": [4], "data_offsets": [end, end + 4]}
    data = entries[WEIGHTS_NAME][h.data_start :] + b"evil"

    def fix_offsets(m: onnx.ModelProto) -> None:  # the header grew: move the references
        from bundle.format.weights import Header, bind_external

        new = safetensors_bytes(header, data)
        nh = parse_header(new, len(new))
        for init in m.graph.initializer:
            del init.external_data[:]
        bind_external(m, Header(nh.tensors, {}, nh.data_start))

    path = signed_variant(
        tiny,
        tmp_path / "unused.mbundle",
        key,
        graph=fix_offsets,
        weights=safetensors_bytes(header, data),
    )
    refused(path, UntrustedContentError, key.public_key, "never uses")


def test_graph_not_onnx_even_when_signed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    contents = contents_of(tiny)
    for i, graph in enumerate([b"\xff" * 64, b"", onnx.ModelProto().SerializeToString()]):
        contents[GRAPH] = graph
        path = build_signed(tmp_path / f"g{i}.mbundle", contents, [key], base=manifest_of(tiny))
        refused(path, FormatError, key.public_key, GRAPH)


def test_noncanonical_manifest_even_when_signed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    manifest = manifest_of(tiny)
    for i, mbytes in enumerate(
        [noncanonical(manifest), manifest.to_bytes() + b"\n", b" " + manifest.to_bytes()]
    ):
        path = build_signed(
            tmp_path / f"m{i}.mbundle",
            contents_of(tiny),
            [key],
            base=manifest,
            manifest_bytes=mbytes,
        )
        # the signature does cover these bytes: the refusal is the manifest's form
        err = refused(path, FormatError, key.public_key, "not canonical")
        assert err.entry == "manifest.json"
    # the same builder with canonical bytes gives a bundle that loads
    ok = build_signed(tmp_path / "ok.mbundle", contents_of(tiny), [key], base=manifest)
    assert bundle.verify(ok, trusted_keys=key.public_key).verified


def test_manifest_with_unknown_field_even_when_signed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    manifest = manifest_of(tiny)
    d = manifest.to_dict()
    d["run_on_load"] = "os.system('x')"
    path = build_signed(
        tmp_path / "u.mbundle",
        contents_of(tiny),
        [key],
        base=manifest,
        manifest_bytes=_json.dumps(d),
    )
    refused(path, FormatError, key.public_key, "unknown field")


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the load path unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /dev/null",))


PICKLE = pickle.dumps(_Payload(), protocol=4)


@pytest.mark.usefixtures("no_unpickling")
def test_pickle_as_an_extra_entry(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    for name in ("model.pkl", "weights.bin", "assets/model.joblib"):
        entries = read_entries(tiny)
        entries[name] = PICKLE
        path = rewrite(tiny, tmp_path / "pkl.mbundle", entries)
        err = refused(path, IntegrityError, key.public_key, name)
        assert err.entry == name


@pytest.mark.usefixtures("no_unpickling")
def test_pickle_as_a_signature_entry(tmp_path: Path, tiny: Path, key: bundle.PrivateKey) -> None:
    entries = read_entries(tiny)
    entries["signatures/model.pkl"] = PICKLE
    refused(
        rewrite(tiny, tmp_path / "pkl.mbundle", entries),
        FormatError,
        key.public_key,
        "signatures/model.pkl",
    )
    entries = read_entries(tiny)
    entries[sig_name(key)] = PICKLE
    refused(rewrite(tiny, tmp_path / "pkl2.mbundle", entries), SignatureError, key.public_key)


@pytest.mark.usefixtures("no_unpickling")
@pytest.mark.parametrize("role", [GRAPH, WEIGHTS_NAME])
def test_pickle_in_place_of_graph_or_weights_even_when_signed(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, role: str
) -> None:
    contents = contents_of(tiny)
    contents[role] = PICKLE
    path = build_signed(tmp_path / "pkl.mbundle", contents, [key], base=manifest_of(tiny))
    refused(path, FormatError, key.public_key)


def test_signature_entry_with_a_bad_name(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    entries = read_entries(tiny)
    entries["signatures/" + key.key_id.upper() + ".sig"] = entries.pop(sig_name(key))
    refused(
        rewrite(tiny, tmp_path / "n.mbundle", entries),
        FormatError,
        key.public_key,
        "not a valid signature entry name",
    )


@pytest.mark.parametrize(
    "mutate",
    [
        "payload_type",
        "two_sigs",
        "bad_b64",
        "not_json",
        "media_type",
        "statement_type",
        "subject_digest",
    ],
)
def test_malformed_signature_entries(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, mutate: str
) -> None:
    entries = read_entries(tiny)
    env = json.loads(entries[sig_name(key)])
    dsse_env = env["dsseEnvelope"]
    statement = json.loads(base64.b64decode(dsse_env["payload"]))
    if mutate == "payload_type":
        dsse_env["payloadType"] = "text/plain"
    elif mutate == "two_sigs":
        dsse_env["signatures"].append(dict(dsse_env["signatures"][0]))
    elif mutate == "bad_b64":
        dsse_env["signatures"][0]["sig"] = "!!!"
    elif mutate == "media_type":
        env["mediaType"] = "application/json"
    if mutate in ("statement_type", "subject_digest"):
        if mutate == "statement_type":
            statement["_type"] = "https://in-toto.io/Statement/v0.1"
        else:
            statement["subject"][0]["digest"]["sha256"] = "0" * 64
        payload = _json.dumps(statement)
        sig = key.sign(dsse.pae(dsse.PAYLOAD_TYPE, payload))  # validly signed
        dsse_env["payload"] = base64.b64encode(payload).decode()
        dsse_env["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    data = b"{not json" if mutate == "not_json" else _json.dumps(env)
    entries[sig_name(key)] = data
    refused(rewrite(tiny, tmp_path / "s.mbundle", entries), SignatureError, key.public_key)


JUNK_NAME = "signatures/" + "0" * 64 + ".sig"


def _junk_signature(tiny: Path, key: bundle.PrivateKey, junk: str) -> bytes:
    """The trusted key's signature entry broken so that it cannot be used at all."""
    if junk == "not_json":
        return b"{not json"
    env = json.loads(read_entries(tiny)[sig_name(key)])
    del env["verificationMaterial"]["publicKey"]
    env["dsseEnvelope"]["signatures"][0]["keyid"] = {
        "int": 5,
        "bool": True,
        "float": 1.5,
        "object": {"a": 1},
        "list": [1],
    }[junk]
    return _json.dumps(env)


@pytest.mark.parametrize("junk", ["int", "bool", "float", "object", "list", "not_json"])
def test_an_unusable_signature_entry_does_not_count_and_is_not_fatal(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey, junk: str
) -> None:
    data = _junk_signature(tiny, key, junk)
    good = read_entries(tiny)[sig_name(key)]
    beside = _with_signatures(
        tiny, tmp_path / "beside.mbundle", {JUNK_NAME: data, sig_name(key): good}
    )
    report = bundle.verify(beside, trusted_keys=key.public_key)
    assert [s.key_id for s in report.signers] == [key.key_id]
    assert report.untrusted_signatures == ("0" * 64,)
    m = bundle.load(beside, trusted_keys=key.public_key, device="cpu")
    np.testing.assert_allclose(m.predict(X), expected(), rtol=1e-6, atol=1e-6)
    why = "keyid is not a string" if junk != "not_json" else "not valid JSON"
    alone = _with_signatures(tiny, tmp_path / "alone.mbundle", {JUNK_NAME: data})
    err = refused(alone, SignatureError, key.public_key, why)
    assert "signed by 0 trusted key(s)" in str(err)
    assert JUNK_NAME in str(err)
    trust = bundle.TrustStore([key.public_key, key2.public_key], threshold=2)
    refused(beside, SignatureError, trust, why)


def test_statement_resource_name_with_a_lone_surrogate(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    """A name no UTF-8 can encode, validly signed: refused as a bad statement, not a crash."""
    doc = json.loads(statement_for(manifest_of(tiny), read_entries(tiny)[MANIFEST_NAME]))
    doc["predicate"]["resources"].insert(
        0, {"algorithm": "sha256", "digest": "0" * 64, "name": "\ud800"}
    )
    doc["subject"][0]["digest"]["sha256"] = dsse.resources_digest(
        [(r["name"], r["digest"]) for r in doc["predicate"]["resources"]]
    )
    statement = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
    path = _with_signatures(
        tiny, tmp_path / "s.mbundle", {sig_name(key): dsse.sign_statement(statement, key)}
    )
    refused(path, SignatureError, key.public_key, "not canonical")


@pytest.mark.parametrize("layout", ["deflated", "oversized"])
def test_signature_entries_are_checked_in_the_central_directory_before_any_is_read(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """A DEFLATE signature entry could inflate to far more work than its bytes: its method
    and size are refused from the central directory, before any signature is read."""
    from bundle.trust.verify import MAX_SIGNATURE_BYTES

    entries = read_entries(tiny)
    good = entries[sig_name(key)]
    items = [
        EntryData(n, d, align=(n == WEIGHTS_NAME), compress=(n == GRAPH))
        for n, d in entries.items()
        if not n.startswith("signatures/")
    ]
    if layout == "deflated":
        noise = base64.b64encode(random.Random(0).randbytes(3 << 18))  # under the bomb ratio
        junk = b'{"junk":"' + noise + b'"}'
        items.append(EntryData(sig_name(key), good, compress=True))
        items.append(EntryData("signatures/" + "f" * 64 + ".sig", junk, compress=True))
        error, message = FormatError, "must be STORED"
    else:
        items.append(EntryData(sig_name(key), good))
        items.append(EntryData("signatures/" + "f" * 64 + ".sig", b" " * (MAX_SIGNATURE_BYTES + 1)))
        error, message = bundle.LimitError, "the limit is"
    path = write_raw(tmp_path / f"{layout}.mbundle", items)
    read: list[str] = []
    original = ZipReader.read

    def spy(self: ZipReader, name: str, *, max_size: int) -> bytes:
        read.append(name)
        return original(self, name, max_size=max_size)

    monkeypatch.setattr(ZipReader, "read", spy)
    refused(path, error, key.public_key, message)
    refused(path, error, None, message, allow_unsigned=True)
    assert not [n for n in read if n.startswith("signatures/")], read


def test_signed_resources_must_equal_the_manifest(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey
) -> None:
    """A statement signed by the trusted key that covers this manifest but lists other files."""
    entries = read_entries(tiny)
    manifest = manifest_of(tiny)
    from bundle.format.digest import sha256_bytes

    resources = [(f.path, f.sha256) for f in manifest.files]
    resources.append(("manifest.json", sha256_bytes(entries["manifest.json"])))
    resources.append(("other.bin", "0" * 64))
    statement = dsse.build_statement("tiny", resources)
    entries[sig_name(key)] = dsse.sign_statement(statement, key)
    refused(
        rewrite(tiny, tmp_path / "r.mbundle", entries), SignatureError, key.public_key, "disagree"
    )


def test_deflate_reencoding_is_accepted_as_the_same_content(
    tmp_path: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORMAT.md 2.5: only a deflated entry's content is hashed, not its DEFLATE stream.

    Re-compressing the graph at another level changes bytes no hash covers; this is
    accepted by design (SECURITY.md), and what verifies and runs is the same graph.
    """
    import zlib

    one = save_tiny(tmp_path / "one.mbundle", key)
    real = zlib.compressobj
    monkeypatch.setattr(zlib, "compressobj", lambda *a: real(1, zlib.DEFLATED, -15, 1))
    other = rewrite(one, tmp_path / "other.mbundle", read_entries(one))
    monkeypatch.setattr(zlib, "compressobj", real)
    assert other.read_bytes() != one.read_bytes()
    assert read_entries(other) == read_entries(one)
    a = bundle.verify(one, trusted_keys=key.public_key)
    b = bundle.verify(other, trusted_keys=key.public_key)
    assert b.verified
    assert a.files == b.files
    np.testing.assert_array_equal(
        bundle.load(one, trusted_keys=key.public_key, device="cpu").predict(X)[0],
        bundle.load(other, trusted_keys=key.public_key, device="cpu").predict(X)[0],
    )


def _with_assets(tmp_path: Path, key: bundle.PrivateKey, assets: dict[str, bytes]) -> Path:
    one = save_tiny(tmp_path / "one.mbundle", key)
    content = {n: d for n, d in read_entries(one).items() if n in (GRAPH, WEIGHTS_NAME)}
    return build_signed(
        tmp_path / "asset.mbundle",
        {**content, **assets},
        [key],
        base=manifest_of(one),
        roles=dict.fromkeys(assets, "asset"),
    )


def test_data_assets_verify_and_are_listed(tmp_path: Path, key: bundle.PrivateKey) -> None:
    from safetensors.numpy import save as st_save

    assets = {
        "labels.json": b'{"0": "cat", "1": "dog"}',
        "vocab.txt": "a\tb\r\nc é\n".encode(),
        "extra.safetensors": st_save({"t": np.arange(6, dtype=np.float32)}),
    }
    report = bundle.verify(_with_assets(tmp_path, key, assets), trusted_keys=key.public_key)
    listed = {f.path: f for f in report.files if f.role == "asset"}
    assert set(listed) == set(assets)
    assert all(listed[n].sha256 == hashlib.sha256(d).hexdigest() for n, d in assets.items())


def test_stored_assets_and_training_state_are_checked_as_hashed(
    tmp_path: Path, key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is read twice: the asset and training-state checks parse the bytes that
    were hashed, even if the file changes under them, and never read those entries."""
    from safetensors.numpy import save as st_save

    stored = {
        "vocab.txt": b"a\tb\n",
        "extra.safetensors": st_save({"t": np.arange(3.0)}),
        "training/state.safetensors": st_save({"m": np.zeros(2, np.float32)}),
    }
    one = save_tiny(tmp_path / "one.mbundle", key)
    content = {n: d for n, d in read_entries(one).items() if n in (GRAPH, WEIGHTS_NAME)}
    path = build_signed(
        tmp_path / "state.mbundle",
        {**content, **stored, "training/state.json": b"{}"},
        [key],
        base=manifest_of(one),
        roles={
            "vocab.txt": "asset",
            "extra.safetensors": "asset",
            "training/state.json": "training_state",
            "training/state.safetensors": "training_state",
        },
    )
    reads = swap_after_hashing(monkeypatch, list(stored))
    bundle.verify(path, trusted_keys=key.public_key)
    assert not set(reads) & set(stored), reads
    with ZipReader(path) as r:  # the swap happened: a re-read would have seen it
        assert r.read_range("vocab.txt", 0, 2) == b"\xff\xff"


@pytest.mark.usefixtures("no_unpickling")
@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("notes.txt", PICKLE, "not UTF-8 text"),
        ("labels.json", PICKLE, "not JSON"),
        ("model.pkl", PICKLE, "only .json"),
        ("run.sh", b"echo hi\n", "only .json"),
        ("vocab.txt", b"a\x00b", "control character U+0000"),
        ("table.csv", b"a,b\x1b[31m", "control character U+001B"),
        ("extra.safetensors", PICKLE, "safetensors"),
    ],
)
def test_assets_that_are_not_data_are_refused_structurally(
    tmp_path: Path, key: bundle.PrivateKey, name: str, data: bytes, match: str
) -> None:
    """A signed pickle (or any opaque blob) cannot travel as an asset, whatever its name."""
    err = refused(_with_assets(tmp_path, key, {name: data}), BundleError, key.public_key, match)
    assert isinstance(err, (UntrustedContentError, FormatError))
    assert err.entry == name


@pytest.mark.parametrize("change", ["dtype", "name", "shape"])
def test_manifest_io_must_be_the_graphs(
    tmp_path: Path, tiny: Path, key: bundle.PrivateKey, change: str
) -> None:
    """A signed manifest that describes other inputs than the graph has is refused."""
    import dataclasses

    base = manifest_of(tiny)
    x = base.inputs[0]
    other = {
        "dtype": dataclasses.replace(x, dtype="float64"),
        "name": dataclasses.replace(x, name="Z"),
        "shape": dataclasses.replace(x, shape=(None, 5)),
    }[change]
    path = build_signed(
        tmp_path / "io.mbundle",
        contents_of(tiny),
        [key],
        base=dataclasses.replace(base, inputs=(other, *base.inputs[1:])),
    )
    refused(path, FormatError, key.public_key, "not the graph's")


def test_statement_orders_files_by_path_components_as_model_signing_does() -> None:
    """model_signing sorts resources as paths ("a/b" before "a-b"), not as strings."""
    d1, d2, d3 = "1" * 64, "2" * 64, "3" * 64
    res = [("a-b", d1), ("a/b", d2), ("manifest.json", d3)]
    doc = json.loads(dsse.build_statement("m", res))
    names = [r["name"] for r in doc["predicate"]["resources"]]
    assert names == ["a/b", "a-b", "manifest.json"]
    assert dict(dsse.parse_statement(_json.dumps(doc), "s")) == dict(res)
    doc["predicate"]["resources"].sort(key=lambda r: r["name"])  # plain string order
    h = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in doc["predicate"]["resources"]))
    doc["subject"][0]["digest"]["sha256"] = h.hexdigest()
    with pytest.raises(SignatureError, match="sorted"):
        dsse.parse_statement(_json.dumps(doc), "s")


def test_inline_data_fields_come_from_the_tensorproto_descriptor() -> None:
    """The external-initializer check covers every data field of TensorProto."""
    from bundle.format.graph import _inline_fields

    assert _inline_fields() >= {
        "raw_data",
        "float_data",
        "int32_data",
        "string_data",
        "int64_data",
        "double_data",
        "uint64_data",
    }
    assert "external_data" not in _inline_fields()


# --------------------------------------------------------------------------- run timeouts

FOREVER = np.array([1 << 60])
"""A trip count for spin_model that no machine finishes."""


@pytest.fixture(scope="module")
def spin(tmp_path_factory: pytest.TempPathFactory, key: bundle.PrivateKey) -> bundle.Model:
    path = tmp_path_factory.mktemp("spin") / "spin.mbundle"
    bundle.save(spin_model(), path, sample_input=np.array([3]), signing_key=key)
    return bundle.load(path, trusted_keys=key.public_key, device="cpu")


@pytest.mark.parametrize("how", ["run", "predict", "run_bound"])
def test_timeout_stops_a_signed_endless_loop_and_the_model_stays_usable(
    spin: bundle.Model, how: str
) -> None:
    """A trusted signer's Loop of 2**60 iterations is stopped by ``timeout=``."""
    calls: dict[str, Callable[..., np.ndarray]] = {
        "run": lambda x, **kw: spin.run(x, **kw)["Y"],
        "predict": spin.predict,
        "run_bound": lambda x, **kw: spin.run_bound({"N": x}, **kw)["Y"],
    }
    call = calls[how]
    start = time.monotonic()
    with pytest.raises(bundle.RunTimeoutError, match=r"within 0\.2 s") as info:
        call(FOREVER, timeout=0.2)
    assert time.monotonic() - start < 10
    assert cli_exit_code(info.value) == 11
    assert call(np.array([5]), timeout=30).tolist() == [5.0]
    assert call(np.array([2])).tolist() == [2.0]  # no timeout given: no limit


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_timeout_must_be_positive_seconds(
    spin: bundle.Model, bad: Any, exc: type[Exception]
) -> None:
    with pytest.raises(exc, match="timeout"):
        spin.predict(np.array([1]), timeout=bad)
