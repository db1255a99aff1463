"""Freshness: a signed expiry in the manifest, a minimum version, and rollback state."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import build_signed, manifest_of, read_entries, rewrite, save_tiny, tiny_model

import bundle
from bundle.cli import exit_code_of as cli_exit_code
from bundle.cli import main
from bundle.errors import (
    ConversionError,
    FormatError,
    FreshnessError,
    IntegrityError,
    SignatureError,
)
from bundle.export.writer import GRAPH_NAME
from bundle.format.manifest import MANIFEST_NAME, Manifest
from bundle.format.versions import parse_time, parse_version
from bundle.format.weights import WEIGHTS_NAME
from bundle.trust import freshness

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 31, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> bundle.PrivateKey:
    return bundle.generate_key()


@pytest.fixture(scope="module")
def key2() -> bundle.PrivateKey:
    return bundle.generate_key("ed25519")


def _save(path: Path, key: object, version: str = "1", name: str = "tiny", **kw: object) -> Path:
    bundle.save(tiny_model(), path, signing_key=key, name=name, version=version, **kw)
    return path


# --------------------------------------------------------------------------- expiry


def test_expires_is_in_the_signed_manifest(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "e.mbundle", key, expires="2030-01-31T12:00:00Z")
    assert manifest_of(path).expires == "2030-01-31T12:00:00Z"
    doc = json.loads(read_entries(path)[MANIFEST_NAME])
    assert doc["expires"] == "2030-01-31T12:00:00Z"
    # without an expiry the field is absent: existing bundles keep their bytes
    plain = save_tiny(tmp_path / "p.mbundle", key)
    assert "expires" not in json.loads(read_entries(plain)[MANIFEST_NAME])
    # changing it breaks the signature (the manifest digest is signed)
    entries = read_entries(path)
    entries[MANIFEST_NAME] = entries[MANIFEST_NAME].replace(b"2030-01-31", b"2099-01-31")
    with pytest.raises(SignatureError, match="does not cover this bundle's manifest"):
        bundle.verify(rewrite(path, tmp_path / "t.mbundle", entries),
                      trusted_keys=key.public_key, now=T0 - dt.timedelta(days=1))


def test_expired_bundle_is_refused(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "e.mbundle", key, expires=T0)
    before = T0 - dt.timedelta(seconds=1)
    assert bundle.verify(path, trusted_keys=key.public_key, now=before).verified
    for at in (T0, T0 + dt.timedelta(days=400)):
        with pytest.raises(FreshnessError, match="expired at 2030-01-31T12:00:00Z"):
            bundle.verify(path, trusted_keys=key.public_key, now=at)
    with pytest.raises(FreshnessError, match="expired"):
        bundle.load(path, trusted_keys=key.public_key, now=T0, device="cpu")
    # a naive now is read as UTC
    assert bundle.verify(path, trusted_keys=key.public_key,
                         now=before.replace(tzinfo=None)).verified
    # the real clock: a bundle that expired yesterday
    old = save_tiny(tmp_path / "old.mbundle", key, expires=dt.timedelta(days=-1))
    with pytest.raises(FreshnessError) as e:
        bundle.verify(old, trusted_keys=key.public_key)
    assert cli_exit_code(e.value) == cli_exit_code(SignatureError) == 5
    # even an unsigned bundle admitted with allow_unsigned is refused once expired
    unsigned = save_tiny(tmp_path / "u.mbundle", None, expires=T0)
    with pytest.raises(FreshnessError):
        bundle.verify(unsigned, allow_unsigned=True, now=T0)


def test_expiry_forms(tmp_path: Path, key: bundle.PrivateKey) -> None:
    aware = dt.datetime(2030, 1, 31, 13, 30, tzinfo=dt.timezone(dt.timedelta(hours=1, minutes=30)))
    assert manifest_of(save_tiny(tmp_path / "a.mbundle", key, expires=aware)).expires == \
        "2030-01-31T12:00:00Z"
    rel = manifest_of(save_tiny(tmp_path / "r.mbundle", key, expires=dt.timedelta(days=30)))
    assert rel.expires is not None
    delta = parse_time(rel.expires) - dt.datetime.now(UTC)
    assert dt.timedelta(days=29) < delta <= dt.timedelta(days=30)
    for bad in ("2030-01-31T12:00:00+01:00", "2030-01-31 12:00:00Z", "2030-02-30T00:00:00Z",
                "2030-01-31T12:00:00.5Z", dt.datetime(2030, 1, 1), 42):
        with pytest.raises((ConversionError, FormatError)):
            save_tiny(tmp_path / "bad.mbundle", key, expires=bad)
        assert not (tmp_path / "bad.mbundle").exists()


def test_expires_schema(tmp_path: Path, key: bundle.PrivateKey) -> None:
    m = manifest_of(save_tiny(tmp_path / "m.mbundle", key))
    doc = m.to_dict()
    for bad in (None, "tomorrow", "2030-13-01T00:00:00Z", 1893456000):
        doc["expires"] = bad
        with pytest.raises(FormatError, match="expires"):
            Manifest.from_dict(doc)
    doc["expires"] = "2030-01-31T12:00:00Z"
    assert Manifest.from_dict(doc).expires == "2030-01-31T12:00:00Z"


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(("lower", "higher"), [
    ("1", "2"), ("1.9", "1.10"), ("1.0.9", "1.1"), ("2", "10"), ("2024.6.1", "2024.12.1"),
    ("1", "1.0.1")])
def test_version_order(lower: str, higher: str) -> None:
    assert parse_version(lower) < parse_version(higher)


def test_version_equality_and_refusals() -> None:
    assert parse_version("1.0") == parse_version("1") == parse_version("1.0.0")
    for bad in ("v1", "1.0-beta", "1..2", "", "1.", "-1", "1e3", "\uff11"):
        with pytest.raises(ValueError, match="cannot be ordered"):
            parse_version(bad)


def test_min_version(tmp_path: Path, key: bundle.PrivateKey) -> None:
    v2 = _save(tmp_path / "v2.mbundle", key, "2.0")
    assert bundle.verify(v2, trusted_keys=key.public_key, min_version="2").verified
    assert bundle.verify(v2, trusted_keys=key.public_key, min_version="1.9.9").verified
    with pytest.raises(FreshnessError, match=r"older than the required minimum version 2\.1"):
        bundle.verify(v2, trusted_keys=key.public_key, min_version="2.1")
    with pytest.raises(ValueError, match="min_version"):  # the caller's mistake
        bundle.verify(v2, trusted_keys=key.public_key, min_version="latest")
    named = _save(tmp_path / "n.mbundle", key, "beta")
    with pytest.raises(FreshnessError, match="cannot be ordered"):
        bundle.verify(named, trusted_keys=key.public_key, min_version="1")
    # without a version policy a free-form version is fine
    assert bundle.verify(named, trusted_keys=key.public_key).verified


# --------------------------------------------------------------------------- rollback state


def test_rollback_state(tmp_path: Path, key: bundle.PrivateKey,
                        key2: bundle.PrivateKey) -> None:
    state = tmp_path / "state" / "seen.json"
    state.parent.mkdir()
    v1, v2, v3 = (_save(tmp_path / f"v{i}.mbundle", key, str(i)) for i in (1, 2, 3))

    def ok(path: Path, trust: object = key.public_key) -> bool:
        return bundle.verify(path, trusted_keys=trust, rollback_state=state).verified

    assert ok(v2)
    doc = json.loads(state.read_text())
    assert doc == {"format": freshness.STATE_FORMAT, "models": {"tiny": {key.key_id: "2"}}}
    with pytest.raises(FreshnessError, match=r"rollback refused: .* v1 .* older than v2"):
        ok(v1)
    assert ok(v2)  # the same version again is fine
    assert ok(v3)
    assert json.loads(state.read_text())["models"]["tiny"][key.key_id] == "3"
    with pytest.raises(FreshnessError, match="older than v3"):
        ok(v2)
    # per signer: another key's v1 of the same name is its own history
    other_v1 = _save(tmp_path / "o1.mbundle", key2, "1")
    assert ok(other_v1, key2.public_key)
    # per model name
    assert ok(_save(tmp_path / "x1.mbundle", key, "1", name="other-model"))
    # a bundle signed by both: every signer's record must allow it
    both_v2 = _save(tmp_path / "b2.mbundle", [key, key2], "2")
    with pytest.raises(FreshnessError, match="older than v3"):
        ok(both_v2, [key.public_key, key2.public_key])
    assert json.loads(state.read_text())["models"]["tiny"][key2.key_id] == "1"
    # load and restore enforce it too
    with pytest.raises(FreshnessError):
        bundle.load(v1, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    m = bundle.load(v3, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    assert m.run({"X": np.ones((1, 4), np.float32)})["Y"].shape == (1, 3)


def test_rollback_state_needs_a_trusted_signer(tmp_path: Path, key: bundle.PrivateKey) -> None:
    state = tmp_path / "seen.json"
    unsigned = _save(tmp_path / "u.mbundle", None, "5")
    with pytest.raises(FreshnessError, match="needs a bundle signed by a trusted key"):
        bundle.verify(unsigned, allow_unsigned=True, rollback_state=state)
    assert not state.exists()


def test_rollback_state_records_only_verified_bundles(tmp_path: Path,
                                                      key: bundle.PrivateKey) -> None:
    state = tmp_path / "seen.json"
    assert bundle.verify(_save(tmp_path / "v2.mbundle", key, "2"), trusted_keys=key.public_key,
                         rollback_state=state).verified
    v9 = _save(tmp_path / "v9.mbundle", key, "9")
    entries = read_entries(v9)
    w = bytearray(entries[WEIGHTS_NAME])
    w[-1] ^= 1
    entries[WEIGHTS_NAME] = bytes(w)
    corrupt = rewrite(v9, tmp_path / "bad9.mbundle", entries)
    with pytest.raises(IntegrityError):
        bundle.verify(corrupt, trusted_keys=key.public_key, rollback_state=state)
    assert json.loads(state.read_text())["models"]["tiny"][key.key_id] == "2"
    # correctly signed, every hash right, but the graph fails its checks: not recorded
    bad_graph = build_signed(tmp_path / "graph9.mbundle",
                             {GRAPH_NAME: b"\x08\x07:\xff", WEIGHTS_NAME: entries[WEIGHTS_NAME]},
                             [key], base=manifest_of(v9))
    with pytest.raises(FormatError):
        bundle.verify(bad_graph, trusted_keys=key.public_key, rollback_state=state)
    with pytest.raises(FormatError):
        bundle.load(bad_graph, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    assert json.loads(state.read_text())["models"]["tiny"][key.key_id] == "2"
    # an untrusted signer's higher version is not recorded either
    stranger = _save(tmp_path / "s.mbundle", bundle.generate_key(), "50")
    with pytest.raises(SignatureError):
        bundle.verify(stranger, trusted_keys=key.public_key, rollback_state=state)
    assert json.loads(state.read_text())["models"] == {"tiny": {key.key_id: "2"}}


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": "other", "models": {}}',
                                     b'{"format": "model-bundle-rollback-state/1", '
                                     b'"models": {"tiny": {"k": "beta"}}}', b"\xff\xfe"])
def test_damaged_state_fails_closed(tmp_path: Path, key: bundle.PrivateKey,
                                    content: bytes) -> None:
    state = tmp_path / "seen.json"
    state.write_bytes(content)
    path = _save(tmp_path / "v.mbundle", key, "1")
    with pytest.raises(FreshnessError, match=f"rollback state {state} is"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=state)
    assert state.read_bytes() == content


def test_rollback_needs_ordered_versions(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = _save(tmp_path / "n.mbundle", key, "nightly")
    with pytest.raises(FreshnessError, match="cannot be ordered"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=tmp_path / "s.json")


# --------------------------------------------------------------------------- command line


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_freshness(tmp_path: Path, key: bundle.PrivateKey,
                       capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import save as save_onnx

    key_path, pub = key.save(tmp_path / "k")
    save_onnx(tiny_model(), tmp_path / "m.onnx")
    v3 = tmp_path / "v3.mbundle"
    code, _, err = run(capsys, "export", tmp_path / "m.onnx", v3, "--key", key_path,
                       "--version", "3", "--expires", "30d")
    assert code == 0, err
    expires = manifest_of(v3).expires
    assert expires is not None
    code, out, _ = run(capsys, "inspect", v3)
    assert f"Expires: {expires}" in out
    code, out, _ = run(capsys, "verify", v3, "--trusted-key", pub, "--min-version", "3")
    assert code == 0
    assert f"expires {expires}" in out
    code, _, err = run(capsys, "verify", v3, "--trusted-key", pub, "--min-version", "4")
    assert code == cli_exit_code(FreshnessError)
    assert "FreshnessError" in err
    state = tmp_path / "state.json"
    assert run(capsys, "verify", v3, "--trusted-key", pub, "--rollback-state", state)[0] == 0
    v2 = tmp_path / "v2.mbundle"
    assert run(capsys, "export", tmp_path / "m.onnx", v2, "--key", key_path, "--version",
               "2")[0] == 0
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    code, _, err = run(capsys, "predict", v2, "--trusted-key", pub, "--rollback-state", state,
                       "--input", tmp_path / "x.npy")
    assert code == cli_exit_code(FreshnessError)
    assert "rollback refused" in err
    code, out, _ = run(capsys, "verify", v3, "--trusted-key", pub, "--json")
    assert json.loads(out)["expires"] == expires
    code, _, err = run(capsys, "export", tmp_path / "m.onnx", tmp_path / "x.mbundle",
                       "--expires", "soon")
    assert code == 2
    assert "--expires" in err


def test_now_forms(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = save_tiny(tmp_path / "e.mbundle", key, expires=T0)
    assert bundle.verify(path, trusted_keys=key.public_key, now="2030-01-31T11:59:59Z").verified
    with pytest.raises(FreshnessError, match="expired"):
        bundle.verify(path, trusted_keys=key.public_key, now="2030-01-31T12:00:00Z")
    for bad in ("yesterday", 1893456000):
        with pytest.raises((ValueError, TypeError), match="now"):
            bundle.verify(path, trusted_keys=key.public_key, now=bad)
