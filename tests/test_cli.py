"""The command line: each command, and one exit code per class of failure."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bundle
from bundle.cli import exit_code_of as cli_exit_code
from bundle.cli import main


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    d = tmp_path_factory.mktemp("cli")
    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    assert main(["keygen", "--out", str(d / "alice")]) == 0
    assert main(["keygen", "--out", str(d / "bob"), "--type", "ed25519"]) == 0
    bundle.save(clf, d / "m.mbundle", sample_input=X[:20], signing_key=d / "alice.key")
    bundle.save(clf, d / "unsigned.mbundle", sample_input=X[:20])
    np.save(d / "x.npy", X[:7])
    (d / "x.csv").write_text("\n".join(",".join(map(str, r)) for r in X[:3]))
    (d / "x.json").write_text(json.dumps(X[:4].tolist()))
    np.save(d / "want.npy", clf.predict(X[:7]))
    return {
        "dir": d,
        "bundle": d / "m.mbundle",
        "unsigned": d / "unsigned.mbundle",
        "alice": d / "alice.pub",
        "bob": d / "bob.pub",
        "alice_key": d / "alice.key",
        "bob_key": d / "bob.key",
    }


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_private_key_0600(cli_env: dict[str, Path]) -> None:
    mode = stat.S_IMODE(os.stat(cli_env["alice_key"]).st_mode)
    assert mode == 0o600
    assert b"BEGIN PUBLIC KEY" in cli_env["alice"].read_bytes()


def test_keygen_refuses_to_overwrite(
    cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "keygen", "--out", cli_env["dir"] / "alice")
    assert code == cli_exit_code(bundle.KeyFileError)
    assert "already exists" in err


def test_keygen_passphrase_from_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MB_PASS", "s3cret")
    code, _, _ = run(capsys, "keygen", "--out", tmp_path / "enc", "--passphrase-env", "MB_PASS")
    assert code == 0
    assert b"ENCRYPTED" in (tmp_path / "enc.key").read_bytes()
    with pytest.raises(bundle.KeyFileError):
        bundle.load_private_key(tmp_path / "enc.key")
    assert bundle.load_private_key(tmp_path / "enc.key", b"s3cret").key_id


def test_verify_ok_and_json(cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", cli_env["bundle"], "--trusted-key", cli_env["alice"])
    assert code == 0
    assert "OK" in out
    code, out, _ = run(
        capsys, "verify", cli_env["bundle"], "--trusted-key", cli_env["alice"], "--json"
    )
    doc = json.loads(out)
    assert doc["verified"] is True
    assert doc["signers"][0]["key_id"] == bundle.load_public_key(cli_env["alice"]).key_id


def test_verify_untrusted_key_exits_signature_code(
    cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "verify", cli_env["bundle"], "--trusted-key", cli_env["bob"])
    assert code == cli_exit_code(bundle.SignatureError) == 5
    assert err.startswith("error: SignatureError:")
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_verify_unsigned(cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", cli_env["unsigned"], "--trusted-key", cli_env["alice"])
    assert code == 5
    assert "unsigned" in err
    code, out, _ = run(capsys, "verify", cli_env["unsigned"], "--allow-unsigned")
    assert code == 0
    assert "NOT SIGNED" in out


def test_verify_failure_classes_have_distinct_codes(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.mbundle"
    garbage.write_bytes(b"this is not a zip" * 10)
    code, _, err = run(capsys, "verify", garbage, "--trusted-key", cli_env["alice"])
    assert code == cli_exit_code(bundle.FormatError) == 3
    assert "not a zip" in err

    # flip a byte inside the stored weights entry: only the hash can notice
    data = bytearray(cli_env["bundle"].read_bytes())
    from bundle.format.archive import ZipReader

    with ZipReader(cli_env["bundle"]) as r:
        e = r.entries["weights.safetensors"]
    data[e.data_offset + e.size - 1] ^= 0x40
    tampered = tmp_path / "tampered.mbundle"
    tampered.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", tampered, "--trusted-key", cli_env["alice"])
    assert code in (cli_exit_code(bundle.IntegrityError), cli_exit_code(bundle.FormatError))
    assert "weights.safetensors" in err

    code, _, err = run(
        capsys, "verify", tmp_path / "missing.mbundle", "--trusted-key", cli_env["alice"]
    )
    assert code == 3
    assert "cannot open" in err

    code, _, err = run(capsys, "verify", cli_env["bundle"], "--trusted-key", tmp_path / "nokey.pub")
    assert code == cli_exit_code(bundle.KeyFileError) == 9


def test_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "verify")
    assert code == 2


def test_inspect_marks_unverified(
    cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inspect", cli_env["bundle"])
    assert code == 0
    assert "UNVERIFIED" in out
    assert "probabilities" in out
    code, out, _ = run(capsys, "inspect", cli_env["bundle"], "--json")
    doc = json.loads(out)
    assert doc["verified"] is False
    assert doc["manifest"]["model"]["task"] == "classifier"


@pytest.mark.parametrize("fmt", ["npy", "csv", "json"])
def test_predict_formats(
    cli_env: dict[str, Path], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    code, out, _ = run(
        capsys,
        "predict",
        cli_env["bundle"],
        "--trusted-key",
        cli_env["alice"],
        "--input",
        cli_env["dir"] / f"x.{fmt}",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    want = np.load(cli_env["dir"] / "want.npy")
    got = doc["outputs"]["predict"]
    assert got == want[: len(got)].tolist()
    assert doc["providers"] == ["CPUExecutionProvider"]


def test_predict_to_output_file(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "proba.npy"
    code, _, _ = run(
        capsys,
        "predict",
        cli_env["bundle"],
        "--trusted-key",
        cli_env["alice"],
        "--input",
        cli_env["dir"] / "x.npy",
        "--method",
        "predict_proba",
        "--output",
        out_path,
    )
    assert code == 0
    assert np.load(out_path).shape == (7, 3)


def test_predict_bad_input_exit_code(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    code, _, err = run(
        capsys,
        "predict",
        cli_env["bundle"],
        "--trusted-key",
        cli_env["alice"],
        "--input",
        tmp_path / "bad.npy",
    )
    assert code == cli_exit_code(bundle.InputError) == 8
    assert "shape" in err


def test_predict_timeout_exit_code(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout stops a signed graph that would run for ever (a Loop of 2**60 steps)."""
    from helpers import spin_model

    path = tmp_path / "spin.mbundle"
    bundle.save(spin_model(), path, sample_input=np.array([3]), signing_key=cli_env["alice_key"])
    np.save(tmp_path / "forever.npy", np.array([1 << 60]))
    np.save(tmp_path / "four.npy", np.array([4]))
    code, _, err = run(
        capsys,
        "predict",
        path,
        "--trusted-key",
        cli_env["alice"],
        "--input",
        tmp_path / "forever.npy",
        "--timeout",
        "0.2",
    )
    assert code == cli_exit_code(bundle.RunTimeoutError) == 11
    assert "RunTimeoutError" in err
    assert "0.2 s" in err
    code, out, _ = run(
        capsys,
        "predict",
        path,
        "--trusted-key",
        cli_env["alice"],
        "--input",
        tmp_path / "four.npy",
        "--timeout",
        "30",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["outputs"]["predict"] == [4.0]
    for bad in ("0", "-1", "nan", "soon"):
        code, _, err = run(
            capsys,
            "predict",
            path,
            "--trusted-key",
            cli_env["alice"],
            "--input",
            tmp_path / "four.npy",
            "--timeout",
            bad,
        )
        assert code == 2, bad
        assert "timeout" in err.lower()


def _npy(header: dict[str, object], data: bytes = b"") -> bytes:
    """A .npy file with a hand-written header (np.save would refuse the lies)."""
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    return (
        b"\x93NUMPY\x01\x00"
        + (len(text) + pad + 1).to_bytes(2, "little")
        + text
        + b" " * pad
        + b"\n"
        + data
    )


_ROW = b"".join(np.float64(v).tobytes() for v in (5.1, 3.5, 1.4, 0.2))


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        pytest.param(
            "huge.npy",
            _npy({"descr": "<f8", "fortran_order": False, "shape": (10**12, 4)}, _ROW),
            "(10^12, 4)",
            id="npy-huge",
        ),
        pytest.param(
            "short.npy",
            _npy({"descr": "<f8", "fortran_order": False, "shape": (7, 4)}, _ROW),
            "bytes",
            id="npy-truncated",
        ),
        pytest.param(
            "neg.npy",
            _npy({"descr": "<f8", "fortran_order": False, "shape": (-1, 4)}, _ROW),
            "shape",
            id="npy-negative",
        ),
        pytest.param(
            "obj.npy",
            _npy({"descr": "|O", "fortran_order": False, "shape": (1, 4)}, b"\x80\x04N."),
            "object",
            id="npy-object",
        ),
        pytest.param(
            "zero.npy",
            _npy({"descr": "<U0", "fortran_order": False, "shape": (10**12, 4)}),
            "element",
            id="npy-zero-size",
        ),
        pytest.param("deep.json", b"[" * 200_000 + b"]" * 200_000, "nested", id="json-deep"),
        pytest.param("ragged.json", b"[[1, 2, 3, 4], [3]]", "rectangular", id="json-ragged"),
        pytest.param("rows.json", b'[{"a": 1}, 5]', "object", id="json-mixed-rows"),
        pytest.param("wide.csv", b"1," + b"9" * 200_000 + b",3,4\n", "field", id="csv-field"),
        pytest.param("ragged.csv", b"1,2,3,4\n3\n", "fields", id="csv-ragged"),
    ],
)
def test_predict_hostile_input_is_input_error(
    cli_env: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    says: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = run(
        capsys, "predict", cli_env["bundle"], "--trusted-key", cli_env["alice"], "--input", path
    )
    assert code == cli_exit_code(bundle.InputError) == 8, err
    assert err.startswith("error: InputError: ")
    assert len(err.strip().splitlines()) == 1
    assert name in err or "input 'X'" in err  # a ragged JSON list fails in Model.predict
    assert says.replace("10^12", str(10**12)) in err


def test_sign_adds_second_signer(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.mbundle"
    copy.write_bytes(cli_env["bundle"].read_bytes())
    code, _, _ = run(
        capsys, "sign", copy, "--key", cli_env["bob_key"], "--trusted-key", cli_env["alice"]
    )
    assert code == 0
    report = bundle.verify(copy, trusted_keys=[cli_env["alice"], cli_env["bob"]], threshold=2)
    assert len(report.signers) == 2


def test_python_dash_m_entry_point(cli_env: dict[str, Path]) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bundle",
            "verify",
            str(cli_env["bundle"]),
            "--trusted-key",
            str(cli_env["bob"]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 5
    assert "Traceback" not in res.stderr


def test_export_onnx_file(
    cli_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    save(m, tmp_path / "mm.onnx")
    code, _, _ = run(
        capsys,
        "export",
        tmp_path / "mm.onnx",
        tmp_path / "mm.mbundle",
        "--key",
        cli_env["alice_key"],
    )
    assert code == 0
    loaded = bundle.load(tmp_path / "mm.mbundle", trusted_keys=cli_env["alice"])
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(loaded.predict(x), x @ np.arange(12).reshape(4, 3))


def test_inspect_and_verify_neutralise_terminal_escapes_and_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Strings in a bundle are attacker-controlled: ANSI escapes, bidi overrides and rich
    markup must reach the terminal inert, and bracketed shapes must stay visible."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "evil.mbundle"
    evil = "\x1b[2J\u202e[red]pwned[/red]"
    bundle.save(
        m,
        path,
        sample_input={"x": np.ones((2, 3), np.float32)},
        name="evil" + evil,
        description=evil,
        metadata={"k": evil},
    )
    code, out, err = run(capsys, "inspect", path)
    assert code == 0, err
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "[red]pwned[/red]" in out  # shown literally, not interpreted
    assert "[batch, 3]" in out
    code, out, err = run(capsys, "verify", "--allow-unsigned", path)
    assert code == 0, err
    assert "\x1b" not in out
    assert "\u202e" not in out


def test_verify_unusable_signatures_exit_with_the_signature_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Junk the signature layer used to crash on (exit 1, 'unexpected') is a SignatureError."""
    from helpers import read_entries, rewrite, save_tiny

    from bundle.export.writer import statement_for
    from bundle.format import canonical_json as _json
    from bundle.format.manifest import MANIFEST_NAME, Manifest
    from bundle.trust import dsse

    key = bundle.generate_key()
    key.save(tmp_path / "k")
    good = save_tiny(tmp_path / "good.mbundle", key)
    entries = read_entries(good)
    sig = f"signatures/{key.key_id}.sig"
    env = json.loads(entries.pop(sig))
    del env["verificationMaterial"]["publicKey"]
    env["dsseEnvelope"]["signatures"][0]["keyid"] = 5
    keyid = rewrite(
        good,
        tmp_path / "keyid.mbundle",
        {**entries, "signatures/" + "0" * 64 + ".sig": _json.dumps(env)},
    )
    doc = json.loads(
        statement_for(Manifest.from_bytes(entries[MANIFEST_NAME]), entries[MANIFEST_NAME])
    )
    doc["predicate"]["resources"].insert(
        0, {"algorithm": "sha256", "digest": "0" * 64, "name": "\ud800"}
    )
    doc["subject"][0]["digest"]["sha256"] = dsse.resources_digest(
        [(r["name"], r["digest"]) for r in doc["predicate"]["resources"]]
    )
    statement = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
    surrogate = rewrite(
        good, tmp_path / "surrogate.mbundle", {**entries, sig: dsse.sign_statement(statement, key)}
    )
    for path, words in ((keyid, "keyid is not a string"), (surrogate, "not canonical")):
        code, _, err = run(capsys, "verify", path, "--trusted-key", tmp_path / "k.pub")
        assert code == cli_exit_code(bundle.SignatureError), err
        assert err.startswith("error: SignatureError:"), err
        assert words in err, err
        assert len(err.strip().splitlines()) == 1
