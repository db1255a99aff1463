"""Freshness: a signed expiry in the manifest, a minimum version, and rollback state."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

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


def _save(
    path: Path,
    key: bundle.PrivateKey | list[bundle.PrivateKey] | None,
    version: str = "1",
    name: str = "tiny",
    **kw: Any,
) -> Path:
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
        bundle.verify(
            rewrite(path, tmp_path / "t.mbundle", entries),
            trusted_keys=key.public_key,
            now=T0 - dt.timedelta(days=1),
        )


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
    assert bundle.verify(
        path, trusted_keys=key.public_key, now=before.replace(tzinfo=None)
    ).verified
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
    assert (
        manifest_of(save_tiny(tmp_path / "a.mbundle", key, expires=aware)).expires
        == "2030-01-31T12:00:00Z"
    )
    rel = manifest_of(save_tiny(tmp_path / "r.mbundle", key, expires=dt.timedelta(days=30)))
    assert rel.expires is not None
    delta = parse_time(rel.expires) - dt.datetime.now(UTC)
    assert dt.timedelta(days=29) < delta <= dt.timedelta(days=30)
    for bad in (
        "2030-01-31T12:00:00+01:00",
        "2030-01-31 12:00:00Z",
        "2030-02-30T00:00:00Z",
        "2030-01-31T12:00:00.5Z",
        dt.datetime(2030, 1, 1),
        42,
    ):
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


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1", "2"),
        ("1.9", "1.10"),
        ("1.0.9", "1.1"),
        ("2", "10"),
        ("2024.6.1", "2024.12.1"),
        ("1", "1.0.1"),
    ],
)
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


def test_rollback_state(tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey) -> None:
    state = tmp_path / "state" / "seen.json"
    state.parent.mkdir()
    v1, v2, v3 = (_save(tmp_path / f"v{i}.mbundle", key, str(i)) for i in (1, 2, 3))

    def ok(path: Path, trust: bundle.PublicKey | list[bundle.PublicKey] = key.public_key) -> bool:
        return bundle.verify(path, trusted_keys=trust, rollback_state=state).verified

    def floor(name: str = "tiny") -> dict[str, object]:
        doc = json.loads(state.read_text())
        assert doc["format"] == freshness.STATE_FORMAT
        entry: dict[str, object] = doc["models"][name]
        return entry

    assert ok(v2)
    assert floor()["version"] == "2"
    assert floor()["signers"] == [key.key_id]
    with pytest.raises(FreshnessError, match=r"rollback refused: .* v1 .* older than v2"):
        ok(v1)
    assert ok(v2)  # the same version again is fine
    assert ok(v3)
    assert floor()["version"] == "3"
    with pytest.raises(FreshnessError, match="older than v3"):
        ok(v2)
    # one floor per model name, whoever signs: another trusted key's v1 is a rollback too
    other_v1 = _save(tmp_path / "o1.mbundle", key2, "1")
    with pytest.raises(FreshnessError, match="older than v3"):
        ok(other_v1, key2.public_key)
    # per model name
    assert ok(_save(tmp_path / "x1.mbundle", key, "1", name="other-model"))
    assert floor()["version"] == "3"
    # a bundle signed by both is held to the same floor
    both_v2 = _save(tmp_path / "b2.mbundle", [key, key2], "2")
    with pytest.raises(FreshnessError, match="older than v3"):
        ok(both_v2, [key.public_key, key2.public_key])
    # the same version from another signer is accepted and noted
    assert ok(_save(tmp_path / "o3.mbundle", key2, "3"), key2.public_key)
    assert floor()["signers"] == sorted([key.key_id, key2.key_id])
    # load and restore enforce it too
    with pytest.raises(FreshnessError):
        bundle.load(v1, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    m = bundle.load(v3, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    assert m.run({"X": np.ones((1, 4), np.float32)})["Y"].shape == (1, 3)


def test_rollback_floor_survives_key_rotation(
    tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey
) -> None:
    """After v3 from the new key K2 was accepted, v2 from the old key K is a rollback."""
    state = tmp_path / "seen.json"
    both = [key.public_key, key2.public_key]
    assert bundle.verify(
        _save(tmp_path / "v3.mbundle", key2, "3"), trusted_keys=both, rollback_state=state
    ).verified
    old = _save(tmp_path / "v2.mbundle", key, "2")
    with pytest.raises(FreshnessError, match=r"rollback refused: .* v2 .* older than v3"):
        bundle.verify(old, trusted_keys=both, rollback_state=state)
    # a 2-of-2 set after a 1-of-1 history: the floor still holds
    k_of_n = _save(tmp_path / "kn.mbundle", [key, key2], "2.9")
    with pytest.raises(FreshnessError, match="older than v3"):
        bundle.verify(k_of_n, trusted_keys=both, threshold=2, rollback_state=state)
    entry = json.loads(state.read_text())["models"]["tiny"]
    assert entry["version"] == "3"
    assert entry["signers"] == [key2.key_id]
    parse_time(entry["accepted_at"])


def test_rollback_state_migrates_the_per_key_form(
    tmp_path: Path, key: bundle.PrivateKey, key2: bundle.PrivateKey
) -> None:
    state = tmp_path / "seen.json"
    state.write_text(
        json.dumps(
            {
                "format": "model-bundle-rollback-state/1",
                "models": {
                    "tiny": {key.key_id: "2", key2.key_id: "5"},
                    "other": {key.key_id: "1.0"},
                },
            }
        )
    )
    # the floor is the highest version any key had, whichever key signs now
    with pytest.raises(FreshnessError, match="older than v5"):
        bundle.verify(
            _save(tmp_path / "v4.mbundle", key, "4"),
            trusted_keys=key.public_key,
            rollback_state=state,
        )
    assert bundle.verify(
        _save(tmp_path / "v6.mbundle", key, "6"), trusted_keys=key.public_key, rollback_state=state
    ).verified
    doc = json.loads(state.read_text())
    assert doc["format"] == freshness.STATE_FORMAT
    assert doc["models"]["tiny"]["version"] == "6"
    assert doc["models"]["other"] == {"version": "1.0", "signers": [key.key_id]}


def test_rollback_state_needs_a_trusted_signer(tmp_path: Path, key: bundle.PrivateKey) -> None:
    state = tmp_path / "seen.json"
    unsigned = _save(tmp_path / "u.mbundle", None, "5")
    with pytest.raises(FreshnessError, match="needs a bundle signed by a trusted key"):
        bundle.verify(unsigned, allow_unsigned=True, rollback_state=state)
    assert not state.exists()


def test_rollback_state_records_only_verified_bundles(
    tmp_path: Path, key: bundle.PrivateKey
) -> None:
    state = tmp_path / "seen.json"
    assert bundle.verify(
        _save(tmp_path / "v2.mbundle", key, "2"), trusted_keys=key.public_key, rollback_state=state
    ).verified
    v9 = _save(tmp_path / "v9.mbundle", key, "9")
    entries = read_entries(v9)
    w = bytearray(entries[WEIGHTS_NAME])
    w[-1] ^= 1
    entries[WEIGHTS_NAME] = bytes(w)
    corrupt = rewrite(v9, tmp_path / "bad9.mbundle", entries)
    with pytest.raises(IntegrityError):
        bundle.verify(corrupt, trusted_keys=key.public_key, rollback_state=state)
    assert json.loads(state.read_text())["models"]["tiny"]["version"] == "2"
    # correctly signed, every hash right, but the graph fails its checks: not recorded
    bad_graph = build_signed(
        tmp_path / "graph9.mbundle",
        {GRAPH_NAME: b"\x08\x07:\xff", WEIGHTS_NAME: entries[WEIGHTS_NAME]},
        [key],
        base=manifest_of(v9),
    )
    with pytest.raises(FormatError):
        bundle.verify(bad_graph, trusted_keys=key.public_key, rollback_state=state)
    with pytest.raises(FormatError):
        bundle.load(bad_graph, trusted_keys=key.public_key, rollback_state=state, device="cpu")
    assert json.loads(state.read_text())["models"]["tiny"]["version"] == "2"
    # an untrusted signer's higher version is not recorded either
    stranger = _save(tmp_path / "s.mbundle", bundle.generate_key(), "50")
    with pytest.raises(SignatureError):
        bundle.verify(stranger, trusted_keys=key.public_key, rollback_state=state)
    assert json.loads(state.read_text())["models"]["tiny"]["version"] == "2"
    assert list(json.loads(state.read_text())["models"]) == ["tiny"]


_V2 = b'{"format": "model-bundle-rollback-state/2", "models": '


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"format": "other", "models": {}}',
        b'{"format": "model-bundle-rollback-state/1", "models": {"tiny": {"k": "beta"}}}',
        b'{"format": "model-bundle-rollback-state/1", "models": {"tiny": {}}}',
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        _V2 + b'{"tiny": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        _V2 + b'{"tiny": {"version": "beta", "signers": []}}}',
        _V2 + b'{"tiny": {"version": 3, "signers": []}}}',
        _V2 + b'{"tiny": {"version": "3"}}}',
        _V2 + b'{"tiny": {"version": "3", "signers": [1]}}}',
        _V2 + b'{"tiny": {"version": "3", "signers": [], "accepted_at": "today"}}}',
        _V2 + b'{"tiny": {"version": "3", "signers": [], "extra": 1}}}',
        _V2
        + b'{"tiny": {"version": "3", "signers": []}, "tiny": {"version": "1", "signers": []}}}',
    ],
)
def test_damaged_state_fails_closed(tmp_path: Path, key: bundle.PrivateKey, content: bytes) -> None:
    state = tmp_path / "seen.json"
    state.write_bytes(content)
    path = _save(tmp_path / "v.mbundle", key, "1")
    with pytest.raises(FreshnessError, match=f"rollback state {state} is"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=state)
    assert state.read_bytes() == content


def test_symlinked_state_is_refused(tmp_path: Path, key: bundle.PrivateKey) -> None:
    """Whoever can plant a link must not redirect the record (or reset it to another file's)."""
    real = tmp_path / "real.json"
    path = _save(tmp_path / "v.mbundle", key, "3")
    assert bundle.verify(path, trusted_keys=key.public_key, rollback_state=real).verified
    before = real.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(FreshnessError, match=f"rollback state {link} is a symbolic link"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=link)
    assert link.is_symlink()
    assert real.read_bytes() == before
    # a dangling link is refused too, rather than creating its target
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(FreshnessError, match="symbolic link"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=dangling)
    assert not (tmp_path / "nowhere.json").exists()
    # nor may a link in place of the lock file create or lock a file elsewhere
    fresh = tmp_path / "fresh.json"
    Path(f"{fresh}.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FreshnessError, match=f"cannot lock rollback state {fresh}"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=fresh)
    assert not (tmp_path / "elsewhere").exists()


def test_state_that_is_not_a_file_is_refused(tmp_path: Path, key: bundle.PrivateKey) -> None:
    import os
    import subprocess
    import sys

    path = _save(tmp_path / "v.mbundle", key, "3")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    # in a subprocess so that a regression (open() blocking on the FIFO) fails, not hangs
    pub = tmp_path / "k.pub"
    pub.write_bytes(key.public_key.pem())
    code = (
        "import bundle\n"
        "from bundle.trust.freshness import FreshnessError\n"
        "try:\n"
        f"    bundle.verify({str(path)!r}, trusted_keys={str(pub)!r},\n"
        f"                  rollback_state={str(fifo)!r})\n"
        "except FreshnessError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert f"rollback state {fifo} is not a regular file" in done.stdout.decode()
    with pytest.raises(FreshnessError, match="not a regular file"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=tmp_path)


def test_rollback_needs_ordered_versions(tmp_path: Path, key: bundle.PrivateKey) -> None:
    path = _save(tmp_path / "n.mbundle", key, "nightly")
    with pytest.raises(FreshnessError, match="cannot be ordered"):
        bundle.verify(path, trusted_keys=key.public_key, rollback_state=tmp_path / "s.json")


# --------------------------------------------------------------------------- command line


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_freshness(
    tmp_path: Path, key: bundle.PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnx import save as save_onnx

    key_path, pub = key.save(tmp_path / "k")
    save_onnx(tiny_model(), tmp_path / "m.onnx")
    v3 = tmp_path / "v3.mbundle"
    code, _, err = run(
        capsys,
        "export",
        tmp_path / "m.onnx",
        v3,
        "--key",
        key_path,
        "--version",
        "3",
        "--expires",
        "30d",
    )
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
    assert (
        run(capsys, "export", tmp_path / "m.onnx", v2, "--key", key_path, "--version", "2")[0] == 0
    )
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    code, _, err = run(
        capsys,
        "predict",
        v2,
        "--trusted-key",
        pub,
        "--rollback-state",
        state,
        "--input",
        tmp_path / "x.npy",
    )
    assert code == cli_exit_code(FreshnessError)
    assert "rollback refused" in err
    code, out, _ = run(capsys, "verify", v3, "--trusted-key", pub, "--json")
    assert json.loads(out)["expires"] == expires
    code, _, err = run(
        capsys, "export", tmp_path / "m.onnx", tmp_path / "x.mbundle", "--expires", "soon"
    )
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
