"""The load path in a fresh process: no framework imported, no unpickling, ever."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bundle

BANNED = (
    "sklearn",
    "skl2onnx",
    "torch",
    "tensorflow",
    "keras",
    "joblib",
    "pandas",
    "cloudpickle",
    "dill",
    "tf2onnx",
    # the operational layer is not on the load path of a local bundle either
    "bundle.legacy",
    "bundle.store",
    "bundle.serve",
    "bundle.integrations",
    "fsspec",
)


@pytest.fixture(scope="module")
def sk_bundle(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    clf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    d = tmp_path_factory.mktemp("loadpath")
    key = bundle.generate_key()
    _, pub = key.save(d / "k")
    path = d / "rf.mbundle"
    bundle.save(clf, path, sample_input=X[:30], signing_key=key)
    return path, pub, X, clf.predict_proba(X)


CHILD = textwrap.dedent("""
    import json, sys
    events = []
    def hook(event, args):
        # exec/compile/marshal events also fire for ordinary imports, so only
        # pickle's own events are meaningful here.
        if event.startswith("pickle."):
            events.append(event)
    sys.addaudithook(hook)
    import numpy as np
    import bundle
    m = bundle.load(sys.argv[1], trusted_keys=sys.argv[2])
    proba = m.predict_proba(np.load(sys.argv[3], allow_pickle=False))
    report = bundle.verify(sys.argv[1], trusted_keys=sys.argv[2])
    np.save(sys.argv[4], proba, allow_pickle=False)
    banned = [name for name in {banned!r} if name in sys.modules]
    print(json.dumps({{"events": sorted(set(events)), "banned": banned,
                      "signers": [s.key_id for s in report.signers],
                      "x509": "cryptography.x509" in sys.modules}}))
""").format(banned=BANNED)


def test_fresh_process_load_imports_no_framework_and_never_unpickles(
    sk_bundle: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path, pub, X, want = sk_bundle
    np.save(tmp_path / "x.npy", X)
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(pub),
            str(tmp_path / "x.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["banned"] == [], f"load path imported {info['banned']}"
    assert info["events"] == [], info["events"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-5)
    assert len(info["signers"]) == 1
    # X.509 (~0.1 s of start-up) is imported only when a certificate is involved
    assert info["x509"] is False


def test_audit_hook_would_catch_unpickling() -> None:
    """The check above can fail: the same hook sees a real pickle load."""
    code = textwrap.dedent("""
        import sys, pickle, json
        events = []
        sys.addaudithook(lambda e, a: events.append(e) if e.startswith("pickle.") else None)
        pickle.loads(pickle.dumps(complex(1, 2)))
        print(json.dumps(events))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pickle.find_class" in json.loads(res.stdout)


def test_package_source_has_no_pickle_or_eval_on_load_path() -> None:
    import re

    root = Path(bundle.__file__).parent
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|cloudpickle|dill|joblib|marshal|shelve)"
        r"\b|torch\.load\(|\beval\(|\bexec\(|allow_pickle=True",
        re.M,
    )
    # bundle/legacy/ converts legacy pickles (in a sandbox, never on the load path:
    # test_load_path_never_imports_migrate); its scanner must stay free of them too.
    converters = {"legacy/unpickler.py", "legacy/child.py", "legacy/pipeline.py"}
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.relative_to(root).as_posix() not in converters
        and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
