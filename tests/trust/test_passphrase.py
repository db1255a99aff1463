"""Passphrase-protected keys on the command line: from an environment variable or a
no-echo prompt, never from a command-line argument."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import pytest
from helpers import save_tiny, tiny_model

import bundle
from bundle.cli import PASSPHRASE_ENV, main
from bundle.cli import exit_code_of as cli_exit_code
from bundle.errors import KeyFileError

SECRET = "correct horse battery"


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    return monkeypatch


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, Path, bundle.PrivateKey]:
    k = bundle.generate_key()
    key_path, pub = k.save(tmp_path / "enc", passphrase=SECRET.encode())
    return key_path, pub, k


def _signed_by(path: Path, k: bundle.PrivateKey) -> bool:
    return any(s.key_id == k.key_id for s in bundle.verify(path, trusted_keys=k.public_key).signers)


def _tty(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """Pretend stdin is a terminal; getpass returns ``answers`` in turn; prompts are kept."""
    prompts: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)

    def fake(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(getpass, "getpass", fake)
    return prompts


@pytest.mark.parametrize("command", ["keygen", "sign", "export"])
def test_no_passphrase_argument(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, command, "--passphrase", SECRET)
    assert code == 2
    assert "No such option '--passphrase'" in err


def test_sign_with_default_environment_variable(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    encrypted: tuple[Path, Path, bundle.PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path, _, k = encrypted
    path = save_tiny(tmp_path / "b.mbundle")
    clean_env.setenv(PASSPHRASE_ENV, SECRET)
    code, out, err = run(capsys, "sign", path, "--key", key_path)
    assert code == 0, err
    assert _signed_by(path, k)
    assert SECRET not in out + err


def test_sign_with_named_environment_variable(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    encrypted: tuple[Path, Path, bundle.PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path, _, k = encrypted
    path = save_tiny(tmp_path / "b.mbundle")
    clean_env.setenv("MY_KEY_PW", SECRET)
    clean_env.setenv(PASSPHRASE_ENV, "not this one")  # the named variable wins
    assert run(capsys, "sign", path, "--key", key_path, "--passphrase-env", "MY_KEY_PW")[0] == 0
    assert _signed_by(path, k)
    clean_env.delenv("MY_KEY_PW")
    code, _, err = run(capsys, "sign", path, "--key", key_path, "--passphrase-env", "MY_KEY_PW")
    assert code == cli_exit_code(KeyFileError)
    assert "MY_KEY_PW is not set" in err
    clean_env.setenv("MY_KEY_PW", "")
    code, _, err = run(capsys, "sign", path, "--key", key_path, "--passphrase-env", "MY_KEY_PW")
    assert code == cli_exit_code(KeyFileError)
    assert "is empty" in err


def test_wrong_passphrase(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    encrypted: tuple[Path, Path, bundle.PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path, _, _ = encrypted
    path = save_tiny(tmp_path / "b.mbundle")
    before = path.read_bytes()
    clean_env.setenv(PASSPHRASE_ENV, "Xyzzy-91")
    code, _, err = run(capsys, "sign", path, "--key", key_path)
    assert code == cli_exit_code(KeyFileError)
    assert "wrong passphrase" in err
    assert "Xyzzy-91" not in err  # the value is never echoed
    assert path.read_bytes() == before


def test_encrypted_key_without_terminal_or_variable(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    encrypted: tuple[Path, Path, bundle.PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path, _, _ = encrypted
    path = save_tiny(tmp_path / "b.mbundle")
    clean_env.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = run(capsys, "sign", path, "--key", key_path)
    assert code == cli_exit_code(KeyFileError)
    assert PASSPHRASE_ENV in err
    assert "--passphrase-env" in err


def test_prompt_on_a_terminal(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    encrypted: tuple[Path, Path, bundle.PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_path, _, k = encrypted
    path = save_tiny(tmp_path / "b.mbundle")
    prompts = _tty(clean_env, [SECRET])
    assert run(capsys, "sign", path, "--key", key_path)[0] == 0
    assert prompts == [f"Passphrase for {key_path}: "]
    assert _signed_by(path, k)
    # export prompts per encrypted key too
    from onnx import save as save_onnx

    save_onnx(tiny_model(), tmp_path / "m.onnx")
    prompts = _tty(clean_env, [SECRET])
    assert (
        run(capsys, "export", tmp_path / "m.onnx", tmp_path / "m.mbundle", "--key", key_path)[0]
        == 0
    )
    assert len(prompts) == 1
    assert _signed_by(tmp_path / "m.mbundle", k)


def test_unencrypted_key_ignores_the_default_variable(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = bundle.generate_key()
    key_path, _ = k.save(tmp_path / "plain")
    clean_env.setenv(PASSPHRASE_ENV, SECRET)
    prompts = _tty(clean_env, [])
    path = save_tiny(tmp_path / "b.mbundle")
    assert run(capsys, "sign", path, "--key", key_path)[0] == 0
    assert prompts == []
    assert _signed_by(path, k)


def test_keygen_encrypts_from_the_default_variable(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv(PASSPHRASE_ENV, SECRET)
    assert run(capsys, "keygen", "--out", tmp_path / "k")[0] == 0
    data = (tmp_path / "k.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    assert SECRET.encode() not in data
    with pytest.raises(KeyFileError):
        bundle.load_private_key(tmp_path / "k.key")
    assert bundle.load_private_key(tmp_path / "k.key", SECRET.encode()).key_id
    clean_env.setenv(PASSPHRASE_ENV, "")
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "k2")
    assert code == cli_exit_code(KeyFileError)
    assert "empty" in err
    assert not (tmp_path / "k2.key").exists()


def test_keygen_encrypt_prompts_twice(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = _tty(clean_env, [SECRET, SECRET])
    assert run(capsys, "keygen", "--out", tmp_path / "k", "--encrypt")[0] == 0
    assert len(prompts) == 2
    assert bundle.load_private_key(tmp_path / "k.key", SECRET.encode()).key_id
    _tty(clean_env, [SECRET, SECRET + "!"])
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "k2", "--encrypt")
    assert code == cli_exit_code(KeyFileError)
    assert "do not match" in err
    assert not (tmp_path / "k2.key").exists()
    clean_env.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "k3", "--encrypt")
    assert code == cli_exit_code(KeyFileError)
    assert "terminal" in err
    # without --encrypt (and no variable) the key is written unencrypted, as before
    assert run(capsys, "keygen", "--out", tmp_path / "k4")[0] == 0
    assert b"ENCRYPTED" not in (tmp_path / "k4.key").read_bytes()
