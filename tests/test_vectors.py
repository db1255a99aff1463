"""The committed test vectors of spec/FORMAT.md, verified forever.

Every vector listed in spec/vectors/index.json must keep its outcome in every
future release: the valid ones verify, load, and predict what index.json
records; the invalid ones are refused by ``verify`` and ``load`` alike with
exactly the recorded error class. A change that breaks a committed vector is a
format change (spec/FORMAT.md, "Changing the format"), not a test to update.

The vectors are also regenerated from spec/vectors/generate.py into a temporary
directory: byte-identical to the committed files when the serializers match the
versions index.json records, and with the same outcomes in any case.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import bundle
from bundle.errors import BundleError

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
INDEX: dict[str, Any] = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = INDEX["vectors"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spec_vectors_generate", VECTORS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(directory: Path, case: dict[str, Any]) -> dict[str, Any]:
    keys = [str(directory / k) for k in case["trusted_keys"]]
    return {
        "trusted_keys": keys or None,
        "threshold": case["threshold"],
        "allow_unsigned": case["allow_unsigned"],
    }


def _input(spec: dict[str, Any]) -> Any:
    if isinstance(spec["input"], dict):
        return {k: np.asarray(v, dtype=spec["dtype"]) for k, v in spec["input"].items()}
    return np.asarray(spec["input"], dtype=spec["dtype"])


def check_ok(directory: Path, case: dict[str, Any]) -> None:
    """The vector verifies with the recorded signers, loads, and predicts as recorded."""
    path, opts = directory / case["file"], _options(directory, case)
    report = bundle.verify(path, **opts)
    assert sorted(s.key_id for s in report.signers) == sorted(case["signers"])
    assert report.verified is bool(case["signers"])
    assert list(report.untrusted_signatures) == case.get("untrusted", [])
    model = bundle.load(path, device="cpu", **opts)
    predict = case["predict"]
    got = getattr(model, predict["method"])(_input(predict))
    want = np.asarray(predict["output"])
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


def check_refused(directory: Path, case: dict[str, Any]) -> None:
    """verify() and load() both raise exactly the recorded class, naming the problem."""
    path, opts = directory / case["file"], _options(directory, case)
    expected = getattr(bundle, case["expected"])
    messages = []
    for run in (
        lambda: bundle.verify(path, **opts),
        lambda: bundle.load(path, device="cpu", **opts),
    ):
        with pytest.raises(BundleError) as info:
            run()
        assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
        assert case["message"] in str(info.value), str(info.value)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def check_case(directory: Path, case: dict[str, Any]) -> None:
    if case["expected"] == "ok":
        check_ok(directory, case)
    else:
        check_refused(directory, case)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_committed_vector(case: dict[str, Any]) -> None:
    check_case(VECTORS, case)


def test_index_covers_every_vector_file() -> None:
    listed = {c["file"] for c in CASES}
    assert listed == {p.name for p in VECTORS.glob("*.mbundle")}
    assert len({c["id"] for c in CASES}) == len(CASES)
    invalid = [c for c in CASES if c["expected"] != "ok"]
    assert len({c["file"] for c in invalid}) >= 10
    for c in invalid:
        assert c["expected"] in bundle.__all__
        assert issubclass(getattr(bundle, c["expected"]), BundleError)
        assert c["message"]
    valid = [c for c in CASES if c["expected"] == "ok"]
    assert {"ecdsa-p256", "ed25519"} <= {INDEX["keys"][k]["type"] for k in INDEX["keys"]}
    assert any(len(c["signers"]) == 2 for c in valid)
    assert any(not c["signers"] for c in valid)


def test_committed_keys_are_the_derived_test_only_keys() -> None:
    gen = _generator()
    for name, info in INDEX["keys"].items():
        for rel in (info["public"], info["private"]):
            assert b"TEST ONLY" in (VECTORS / rel).read_bytes()
        private = bundle.load_private_key(VECTORS / info["private"])
        public = bundle.load_public_key(VECTORS / info["public"])
        assert private.key_id == public.key_id == info["key_id"]
        assert private.key_id == gen.derive_key(name).key_id
        assert public.key_type == info["type"]


def _data_offset(raw: bytes, info: zipfile.ZipInfo) -> int:
    name_len: int
    extra_len: int
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c["expected"] == "ok"],
    ids=[c["id"] for c in CASES if c["expected"] == "ok"],
)
def test_valid_vectors_are_plain_zips_in_canonical_layout(case: dict[str, Any]) -> None:
    """Any zip tool reads them; order, timestamps, methods and alignment are the spec's."""
    path = VECTORS / case["file"]
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        infos = z.infolist()
    names = [i.filename for i in infos]
    content = [n for n in names if n != "manifest.json" and not n.startswith("signatures/")]
    signatures = [n for n in names if n.startswith("signatures/")]
    assert names == [*sorted(content), "manifest.json", *sorted(signatures)]
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr == 0o100644 << 16
        assert info.comment == b""
        if info.filename.endswith(".safetensors"):
            assert info.compress_type == zipfile.ZIP_STORED
            assert _data_offset(raw, info) % 4096 == 0
        elif info.filename == "model.onnx" or info.filename.startswith("training/"):
            assert info.compress_type == zipfile.ZIP_DEFLATED
        else:
            assert info.compress_type == zipfile.ZIP_STORED


def test_training_state_vector_restores_into_torch() -> None:
    torch = pytest.importorskip("torch")
    case = next(c for c in CASES if c["id"] == "valid-training-state")
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    bundle.restore(
        VECTORS / case["file"],
        model,
        optimizer,
        trusted_keys=str(VECTORS / case["trusted_keys"][0]),
    )
    want = case["restore"]
    np.testing.assert_array_equal(model.weight.detach().numpy(), want["weight"])
    np.testing.assert_array_equal(model.bias.detach().numpy(), want["bias"])
    state = optimizer.state_dict()
    np.testing.assert_array_equal(
        state["state"][0]["momentum_buffer"].numpy(), want["momentum_buffer"]
    )
    assert state["param_groups"][0]["lr"] == 0.125
    assert state["param_groups"][0]["momentum"] == 0.5


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("vectors")
    return out, _generator().generate(out)


def test_regenerated_index_describes_the_same_vectors(
    regenerated: tuple[Path, dict[str, Any]],
) -> None:
    _out, index = regenerated
    assert index["vectors"] == CASES
    assert index["keys"] == INDEX["keys"]


def test_regenerated_vectors(regenerated: tuple[Path, dict[str, Any]]) -> None:
    """Byte-identical where the serializers match index.json's; else the same outcomes."""
    out, index = regenerated
    if index["generator"] == INDEX["generator"]:
        committed = sorted(
            p.relative_to(VECTORS)
            for p in VECTORS.rglob("*")
            if p.is_file() and p.suffix in (".mbundle", ".key", ".pub", ".json")
        )
        fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        assert committed == fresh
        differ = [str(p) for p in fresh if (out / p).read_bytes() != (VECTORS / p).read_bytes()]
        assert not differ, (
            f"regenerated vectors differ from the committed ones: {differ}; "
            "the writer's output changed (see spec/FORMAT.md, 'Determinism')"
        )
    else:
        for case in index["vectors"]:
            check_case(out, case)
