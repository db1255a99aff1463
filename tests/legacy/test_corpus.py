"""The malicious corpus: every scan lists the dangerous target, nothing ever runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import CASES, HERE, Case, write

import bundle
from bundle.legacy import scan_bytes
from bundle.legacy.sandbox import Limits

pytest.importorskip("torch")
pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("corpus")
    return {c.name: write(c, d) for c in CASES}


@pytest.mark.slow
def test_the_corpus_is_live(corpus: dict[str, tuple[Path, Path]]) -> None:
    """Positive control: loaded the usual way (pickle/joblib/torch.load, in a throwaway
    process) each payload does create its sentinel, so its absence below means something."""
    live = [c for c in CASES if c.name != "EXT1 extension code"]
    arg = json.dumps([[str(corpus[c.name][0]), c.loader] for c in live])
    subprocess.run(
        [sys.executable, str(HERE / "control.py"), arg],
        check=False,
        capture_output=True,
        timeout=300,
    )
    missing = [c.name for c in live if not corpus[c.name][1].exists()]
    assert not missing, f"payloads that did not run under plain pickle: {missing}"
    for c in live:
        corpus[c.name][1].unlink()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scan_lists_the_target_and_runs_nothing(
    case: Case, corpus: dict[str, tuple[Path, Path]]
) -> None:
    path, sentinel = corpus[case.name]
    report = bundle.scan(path)
    if case.target:
        assert case.target in report.dangerous, report.to_dict()
        assert report.verdict in ("dangerous", "unscannable")
        assert any(f.target == case.target and f.danger for f in report.findings)
    else:
        assert report.verdict == "unscannable", report.to_dict()
        assert report.problems
    assert not report.tensors_only
    assert scan_bytes(path.read_bytes()).verdict == report.verdict
    assert not sentinel.exists()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_migrate_refuses_even_when_everything_is_approved(
    case: Case, corpus: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """Approving every listed global, dangerous ones included, still runs nothing."""
    path, sentinel = corpus[case.name]
    everything = [f.target for f in bundle.scan(path).findings]
    out = tmp_path / "out.mbundle"
    with pytest.raises(bundle.ApprovalError) as err:
        bundle.migrate(
            path,
            out,
            approve=everything,
            sample_input=np.zeros((1, 4), np.float32),
            search_path=[str(HERE)],
        )
    assert case.target in str(err.value) or "scanned completely" in str(err.value)
    assert not sentinel.exists()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_approving_the_trojan_class_is_not_enough(
    corpus: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """The user approves the class they think the file holds; the file needs os.system."""
    path, sentinel = corpus["approved class, __reduce__ to os.system"]
    with pytest.raises(bundle.ApprovalError, match=r"posix\.system"):
        bundle.migrate(
            path,
            tmp_path / "o.mbundle",
            approve=["trojan.Trojan"],
            sample_input=np.zeros((1, 4), np.float32),
            search_path=[str(HERE)],
        )
    assert not sentinel.exists()


@pytest.mark.slow
def test_the_sandbox_child_scans_and_refuses_on_its_own(
    corpus: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """Even if the parent's check were skipped, the child re-scans the bytes it was given
    and its restricted unpickler refuses: the payload nested in joblib never runs."""
    from bundle.format import canonical_json
    from bundle.legacy.child import REQUEST
    from bundle.legacy.sandbox import run_child

    path, sentinel = corpus["payload nested in joblib"]
    data = path.read_bytes()
    report = scan_bytes(data)
    work = tmp_path / "work"
    work.mkdir()
    request: dict[str, Any] = {
        "kind": "joblib",
        "sha256": report.sha256,
        "approved": [],
        "record": "{}",
        "name": "x",
        "version": "1",
        "tolerance": None,
        "sample_layout": "array",
        "suffix": ".keras",
        "search_path": [],
    }
    (work / REQUEST).write_bytes(canonical_json.dumps(request))
    result = run_child(str(work), data, Limits(wall_seconds=120))
    assert result["ok"] is False, result
    assert result["error"] == "ApprovalError", result
    assert "posix.system" in result["message"]
    assert not sentinel.exists()
