"""Benign files written by the real frameworks migrate with parity; the sandbox holds."""

from __future__ import annotations

import json
import pickle
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import HERE

import bundle
from bundle.cli import main as cli_main
from bundle.legacy import scan_bytes
from bundle.legacy.unpickler import RestrictedUnpickler, pickle_module


def _record(manifest: bundle.Manifest) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(manifest.metadata["migration"])
    return record


@pytest.mark.slow
def test_sklearn_pipeline_in_joblib(tmp_path: Path, signing_key: bundle.PrivateKey) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    clf = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0))
    clf.fit(X, y)
    src = tmp_path / "clf.joblib"
    joblib.dump(clf, src, compress=3)
    report = bundle.scan(src)
    assert report.verdict == "needs-approval"
    assert report.format == "joblib"
    assert "sklearn.pipeline.Pipeline" in report.needs_approval
    out = tmp_path / "clf.mbundle"
    manifest = bundle.migrate(
        src, out, approve=report.needs_approval, sample_input=X[:20], signing_key=signing_key
    )
    model = bundle.load(out, trusted_keys=signing_key.public_key)
    np.testing.assert_array_equal(model.predict(X), clf.predict(X))
    proba = model.run({model.inputs[0].name: X})["probabilities"]
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)
    record = _record(manifest)
    import hashlib

    assert record["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert record["source"]["format"] == "joblib"
    assert record["approved"] == sorted(report.needs_approval)
    assert record["tools"]["scikit-learn"]
    assert record["parity"]["required"] is True
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (Path(bundle.__file__).parents[1] / "spec" / "migration.schema.json").read_text()
    )
    jsonschema.validate(record, schema)
    assert manifest.parity is not None
    assert manifest.parity.passed
    # the record is signed: it is in the manifest the signature covers
    assert (
        bundle.verify(out, trusted_keys=signing_key.public_key).manifest.metadata
        == manifest.metadata
    )
    assert {p.name for p in tmp_path.iterdir()} == {"clf.joblib", "clf.mbundle"}  # no leftovers


@pytest.mark.slow
def test_torch_state_dict_and_full_module(tmp_path: Path, signing_key: bundle.PrivateKey) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(HERE))
    from nets import Net

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(6, 4)
    with torch.no_grad():
        want = net(x).numpy()
    sd, full = tmp_path / "sd.pt", tmp_path / "full.pt"
    torch.save(net.state_dict(), sd)
    torch.save(net, full)

    assert bundle.scan(sd).verdict == "tensors-only"
    with pytest.raises(ValueError, match="model="):
        bundle.migrate(sd, tmp_path / "x.mbundle", sample_input=x)
    m1 = bundle.migrate(
        sd, tmp_path / "sd.mbundle", model=Net(), sample_input=x, signing_key=signing_key
    )
    assert _record(m1)["loaded_with"].startswith("torch.load(weights_only=True)")
    loaded = bundle.load(tmp_path / "sd.mbundle", trusted_keys=signing_key.public_key)
    got = loaded.predict(x.numpy())
    np.testing.assert_allclose(got, want, atol=1e-5)

    report = bundle.scan(full)
    assert report.verdict == "needs-approval"
    assert set(report.needs_approval) == {"nets.Net", "torch.nn.modules.linear.Linear"}
    with pytest.raises(bundle.ApprovalError, match=r"nets\.Net"):
        bundle.migrate(
            full,
            tmp_path / "full.mbundle",
            approve=["torch.nn.modules.linear.Linear"],
            sample_input=x,
        )
    m2 = bundle.migrate(
        full,
        tmp_path / "full.mbundle",
        approve=report.needs_approval,
        sample_input=x,
        signing_key=signing_key,
        search_path=[str(HERE)],
    )
    assert _record(m2)["approved"] == ["nets.Net", "torch.nn.modules.linear.Linear"]
    got = bundle.load(tmp_path / "full.mbundle", trusted_keys=signing_key.public_key).predict(
        x.numpy()
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_keras_file(tmp_path: Path, signing_key: bundle.PrivateKey) -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    src = tmp_path / "m.keras"
    model.save(src)
    x = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    report = bundle.scan(src)
    assert report.verdict == "no-code"
    assert "Dense" in report.details["keras_classes"]
    manifest = bundle.migrate(src, tmp_path / "m.mbundle", sample_input=x, signing_key=signing_key)
    assert _record(manifest)["loaded_with"].startswith("keras.saving.load_model(safe_mode=True")
    got = bundle.load(tmp_path / "m.mbundle", trusted_keys=signing_key.public_key).predict(x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_keras_lambda_and_custom_objects_are_listed(tmp_path: Path) -> None:
    import io
    import zipfile

    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {"function": {"class_name": "__lambda__", "config": {"code": "AAA"}}},
                },
                {
                    "module": "mypkg.layers",
                    "class_name": "Custom",
                    "config": {},
                    "registered_name": "mypkg>Custom",
                },
            ]
        },
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0"}))
        z.writestr("model.weights.h5", b"")
    report = scan_bytes(buf.getvalue())
    assert report.format == "keras"
    assert report.verdict == "dangerous"
    assert "mypkg.layers.Custom" in report.needs_approval
    assert any(f.kind == "keras-lambda" and f.danger for f in report.findings)
    src = tmp_path / "lam.keras"
    src.write_bytes(buf.getvalue())
    with pytest.raises(bundle.ApprovalError, match="Lambda"):
        bundle.migrate(
            src,
            tmp_path / "o.mbundle",
            approve=report.needs_approval,
            sample_input=np.zeros((1, 4), np.float32),
        )


def test_restricted_unpickler_answers_only_the_allow_list() -> None:
    sys.path.insert(0, str(HERE))
    from trojan import Trojan

    data = pickle.dumps(Trojan("true"))
    import io

    with pytest.raises(bundle.ApprovalError, match=r"posix\.system.*not approved"):
        RestrictedUnpickler(io.BytesIO(data), allowed={"trojan.Trojan"}).load()
    with pytest.raises(bundle.ApprovalError, match="never approvable"):
        RestrictedUnpickler(io.BytesIO(data), allowed={"posix.system"}).load()
    ok = pickle.dumps({"a": [1, 2.5, "x", (None, True)], "s": {1, 2}})
    assert RestrictedUnpickler(io.BytesIO(ok), allowed={"builtins.set"}).load() == {
        "a": [1, 2.5, "x", (None, True)],
        "s": {1, 2},
    }
    with pytest.raises(bundle.ApprovalError, match="EXT1"):
        RestrictedUnpickler(io.BytesIO(b"\x80\x02\x82\x01)R."), allowed=set()).load()
    module = pickle_module({"collections.OrderedDict"})
    from collections import OrderedDict

    od = OrderedDict(a=1)
    assert module.load(io.BytesIO(pickle.dumps(od))) == od


@pytest.mark.slow
def test_sandbox_blocks_network_and_outside_writes(tmp_path: Path) -> None:
    """An *approved* class runs code in the child; the child still cannot connect to a
    server on 127.0.0.1 nor write outside its work directory."""
    from bundle.format import canonical_json
    from bundle.legacy.child import REQUEST
    from bundle.legacy.sandbox import Limits, run_child

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    connected: list[bool] = []

    def accept() -> None:
        try:
            server.accept()[0].close()
            connected.append(True)
        except OSError:
            pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    sys.path.insert(0, str(HERE))
    from trojan import NetProbe

    outside = tmp_path / "escaped.txt"
    probe = NetProbe.__new__(NetProbe)
    probe.__dict__.update(port=port, outside=str(outside))
    data = pickle.dumps(probe, protocol=4)
    report = scan_bytes(data)
    assert report.needs_approval == ("trojan.NetProbe",)
    work = tmp_path / "work"
    work.mkdir()
    request = {
        "kind": "pickle",
        "sha256": report.sha256,
        "approved": ["trojan.NetProbe"],
        "record": "{}",
        "name": "x",
        "version": "1",
        "tolerance": None,
        "sample_layout": "array",
        "suffix": ".keras",
        "search_path": [str(HERE)],
    }
    (work / REQUEST).write_bytes(canonical_json.dumps(request))
    import numpy as np_

    np_.savez(work / "sample.npz", x=np_.zeros((1, 4), np_.float32))
    result = run_child(str(work), data, Limits(wall_seconds=120))
    server.close()
    t.join(5)
    assert result["ok"] is False  # a NetProbe is no model; it got as far as its __setstate__
    assert not connected, "the sandbox child reached a server on 127.0.0.1"
    assert not outside.exists(), "the sandbox child wrote outside its work directory"
    assert result["network"]  # says which isolation it had


@pytest.mark.slow
def test_cli_scan_and_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    src = tmp_path / "lr.pkl"
    joblib.dump(clf, src)
    assert cli_main(["scan", "--json", str(src)]) == 0
    scan_json = tmp_path / "scan.json"
    scan_json.write_text(capsys.readouterr().out)
    np.save(tmp_path / "x.npy", X[:5])
    assert cli_main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert (
        cli_main(
            [
                "migrate",
                str(src),
                "--out",
                str(tmp_path / "lr.mbundle"),
                "--approve-from",
                str(scan_json),
                "--sample-input",
                str(tmp_path / "x.npy"),
                "--key",
                str(tmp_path / "k.key"),
            ]
        )
        == 0
    )
    assert (
        cli_main(["verify", str(tmp_path / "lr.mbundle"), "--trusted-key", str(tmp_path / "k.pub")])
        == 0
    )
    # a scan of other bytes cannot approve this file
    joblib.dump(LogisticRegression().fit(X, (X[:, 1] > 0).astype(int)), src)
    capsys.readouterr()
    assert (
        cli_main(
            [
                "migrate",
                str(src),
                "--out",
                str(tmp_path / "lr2.mbundle"),
                "--approve-from",
                str(scan_json),
                "--sample-input",
                str(tmp_path / "x.npy"),
            ]
        )
        == 14
    )
    assert "scan of another file" in capsys.readouterr().err
    assert not (tmp_path / "lr2.mbundle").exists()


def test_load_path_never_imports_migrate(tmp_path: Path) -> None:
    import subprocess

    from helpers import save_tiny

    path = tmp_path / "t.mbundle"
    save_tiny(path)
    code = (
        "import sys, bundle; bundle.load(sys.argv[1], allow_unsigned=True); "
        "bad = [m for m in sys.modules if m.startswith('bundle.legacy')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(bundle.__file__).parents[1],
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
