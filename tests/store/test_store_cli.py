"""``model-bundle store ...``: the CLI calls the library and prints; exit codes per failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bundle
from bundle.cli import main


@pytest.fixture
def cli_env(tmp_path: Path, store_key: bundle.PrivateKey) -> dict[str, Any]:
    key = tmp_path / "k"
    store_key.save(key)
    return {
        "store": str(tmp_path / "store"),
        "key": f"{key}.key",
        "pub": f"{key}.pub",
        "common": [
            "--trusted-key",
            f"{key}.pub",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--state",
            str(tmp_path / "state.json"),
        ],
    }


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def test_store_commands(
    cli_env: dict[str, Any],
    tiny_bundles: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    s, c, key = cli_env["store"], cli_env["common"], cli_env["key"]
    for v in ("1", "2"):
        code, out = _run(capsys, "store", "push", s, str(tiny_bundles[v]), *c, "--json")
        assert code == 0, out
        assert json.loads(out)["version"] == v
    assert _run(capsys, "store", "promote", s, "tiny", "production", "1", "--key", key, *c)[0] == 0
    assert (
        _run(
            capsys,
            "store",
            "promote",
            s,
            "tiny",
            "production",
            "2",
            "--key",
            key,
            "--reason",
            "better",
            *c,
        )[0]
        == 0
    )
    code, out = _run(capsys, "store", "resolve", s, "tiny@production", *c, "--json")
    assert code == 0
    assert json.loads(out)["version"] == "2"
    assert json.loads(out)["record"]["reason"] == "better"
    code, out = _run(capsys, "store", "rollback", s, "tiny", "production", "--key", key, *c)
    assert code == 0
    assert "v1" in out
    code, out = _run(capsys, "store", "history", s, "tiny", "production", *c, "--json")
    assert [r["target"]["version"] for r in json.loads(out)] == ["1", "2", "1"]
    code, out = _run(capsys, "store", "list", s, *c, "--json")
    assert json.loads(out) == {"tiny": {"versions": ["1", "2"], "aliases": ["production"]}}
    dest = tmp_path / "pulled.mbundle"
    code, out = _run(capsys, "store", "pull", s, "tiny@production", "--out", str(dest), *c)
    assert code == 0, out
    assert dest.read_bytes() == tiny_bundles["1"].read_bytes()
    code, out = _run(capsys, "store", "gc", s, *c, "--grace", "0", "--json")
    assert json.loads(out)["deleted"] == []
    code, out = _run(capsys, "store", "versions", s, "tiny", *c)
    assert code == 0
    assert "sha256:" in out


def test_store_exit_codes(
    cli_env: dict[str, Any],
    tiny_bundles: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    store_key: bundle.PrivateKey,
) -> None:
    from helpers import save_tiny

    s, c = cli_env["store"], cli_env["common"]
    assert _run(capsys, "store", "push", s, str(tiny_bundles["1"]), *c)[0] == 0
    code, out = _run(capsys, "store", "resolve", s, "nobody@production", *c)
    assert (code, "StoreNotFoundError" in out) == (16, True)
    other = save_tiny(tmp_path / "o.mbundle", store_key, seed=5, version="1")
    code, out = _run(capsys, "store", "push", s, str(other), *c)
    assert (code, "StoreConflictError" in out) == (17, True)
    stranger = save_tiny(tmp_path / "s.mbundle", bundle.generate_key(), version="4")
    assert _run(capsys, "store", "push", s, str(stranger), *c)[0] == 5
    assert _run(capsys, "store", "resolve", s, "tiny", *c)[0] == 2  # a malformed REF: usage
