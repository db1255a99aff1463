"""Replay the fuzzer's seeds and crash reproducers through verify and load (no atheris).

``fuzz/corpus/`` holds the seeds (``fuzz/fuzz_verify.py --make-seeds``) and
``fuzz/crashes/`` every input that once crashed the harness. Each file goes
through the harness exactly as the fuzzer runs it, in strict mode: anything but
a BundleError fails. A reproducer of a bug that is reported but not fixed yet is
named ``known-<bug>-...`` after an entry of ``fuzz_verify.KNOWN_BUGS`` and is
expected (strictly) to still crash; fixing the bug makes it pass, and the file
is then renamed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def _harness_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_verify", FUZZ / "fuzz_verify.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_verify", module)
    spec.loader.exec_module(module)
    return module


fuzz_verify = _harness_module()
SEEDS = sorted(p for p in (FUZZ / "corpus").iterdir() if p.is_file())
CRASHES = (
    sorted(p for p in (FUZZ / "crashes").iterdir() if p.is_file())
    if (FUZZ / "crashes").is_dir()
    else []
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    h = fuzz_verify.Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


@pytest.fixture(autouse=True)
def _strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZ_STRICT", "1")


def _params(paths: list[Path]) -> list[Any]:
    out = []
    for p in paths:
        known = next((k for k in fuzz_verify.KNOWN_BUGS if p.name.startswith(f"known-{k}")), None)
        marks = (
            [pytest.mark.xfail(strict=True, reason=fuzz_verify.KNOWN_BUGS[known][1])]
            if known
            else []
        )
        out.append(pytest.param(p, id=p.name, marks=marks))
    return out


def test_there_are_seeds() -> None:
    assert len(SEEDS) >= 5
    assert all(p.stat().st_size < 16384 for p in SEEDS)


@pytest.mark.parametrize("path", _params(SEEDS))
def test_seed(harness: Any, path: Path) -> None:
    outcome = harness.run(path.read_bytes())
    valid = path.name.removeprefix("seed-") in fuzz_verify._VALID_SEEDS
    assert outcome.verified is valid
    assert outcome.loaded is valid


@pytest.mark.parametrize("path", _params(CRASHES))
def test_crash_reproducer(harness: Any, path: Path) -> None:
    outcome = harness.run(path.read_bytes())  # raises on anything but a BundleError
    assert outcome.known_bug is None


def test_known_bug_filter_is_narrow(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reported bug is recognised by its message *and* the module raising it, and only
    outside strict mode."""
    from bundle.format import canonical_json as _json

    monkeypatch.setitem(
        fuzz_verify.KNOWN_BUGS,
        "demo",
        (r"^ValueError: demo is not valid JSON \| .*_json\.py$", "a test entry"),
    )
    try:
        _json._no_constants("demo")
    except ValueError as e:
        raised = e
    monkeypatch.setenv("FUZZ_STRICT", "0")
    assert harness._known(raised) == "demo"
    assert harness._known(ValueError("demo is not valid JSON")) is None  # no _json.py frame
    assert harness._known(ValueError("something else")) is None
    monkeypatch.setenv("FUZZ_STRICT", "1")
    assert harness._known(raised) is None


def test_every_mode_builds_a_bundle(harness: Any) -> None:
    """The odd-first-byte modes really sign the replaced entry with the trusted key."""
    import bundle

    for i, name in enumerate(harness.names):
        data = harness.file_for(bytes([1 + 2 * i]) + harness.base[name])
        path = harness.work / f"mode{i}.mbundle"
        path.write_bytes(data)
        assert bundle.verify(path, trusted_keys=harness.trust).verified
