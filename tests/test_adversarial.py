"""The adversarial corpus, replayed: every case refused with its exact error, and safely.

The corpus is generated once per session into a temporary directory
(``tests/adversarial/generate.py``). Each case goes through ``bundle.verify``
and ``bundle.load``; the refusal must be exactly the case's ``BundleError``
subclass with the expected words in its message, and while it runs nothing may
be written, renamed or deleted, nothing unpickled or spawned, no more than 64
MiB allocated and no more than 20 seconds spent. That no training framework is
imported is checked in a fresh interpreter that refuses every case and loads a
valid bundle: in this process collection has already imported them. A sample
of cases (one per error class) also goes through ``python -m bundle verify``,
whose exit code must be that class's.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from adversarial import generate
from adversarial.generate import Case, specs

import bundle
from bundle import errors
from bundle.cli import exit_code_of as cli_exit_code
from bundle.format.archive import ZipReader, ZipWriter

_REPO = Path(__file__).resolve().parents[1]
MAX_SECONDS = 20
MAX_TRACED_BYTES = 64 << 20
# Training frameworks and the libraries that unpickle: none may be imported by verify or load.
FORBIDDEN_IMPORTS = (
    "torch",
    "sklearn",
    "skl2onnx",
    "tensorflow",
    "keras",
    "tf2onnx",
    "joblib",
    "pandas",
    "cloudpickle",
    "dill",
    "skops",
)
_WRITING_EVENTS = {
    "os.rename",
    "os.replace",
    "os.remove",
    "os.unlink",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "os.symlink",
    "os.link",
    "os.chmod",
    "os.chown",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
}
_SPAWN_EVENTS = {
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "subprocess.Popen",
    "ctypes.dlopen",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


# --------------------------------------------------------------------------- side effects

_events: list[str] | None = None


def _private_memory(fd_or_path: object) -> bool:
    """Whether this is the verifier's own sealed memory file (``memfd:model-bundle-*``,
    bundle.format.digest.sealed_copy): writing it fills process memory, not a file."""
    if isinstance(fd_or_path, int):
        link = f"/proc/self/fd/{fd_or_path}"
    elif isinstance(fd_or_path, str) and fd_or_path.startswith("/proc/self/fd/"):
        link = fd_or_path
    else:
        return False
    try:
        return os.readlink(link).startswith("/memfd:model-bundle-")
    except OSError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Record side effects while a case runs (the hook is inert between cases)."""
    if _events is None:
        return
    if event in ("open", "os.truncate") and args and _private_memory(args[0]):
        return
    if event == "open":
        path, mode, flags = args
        writing = (
            any(c in mode for c in "wax+")
            if isinstance(mode, str)
            else bool((flags or 0) & _WRITE_FLAGS)
        )
        if writing:
            _events.append(f"open for writing: {path}")
    elif event in _WRITING_EVENTS or event in _SPAWN_EVENTS or event.startswith("pickle."):
        _events.append(f"{event}: {args!r}"[:200])


sys.addaudithook(_audit)


class _TimeoutError(Exception):
    pass


@contextmanager
def _watched() -> Iterator[list[str]]:
    """Run a block with side effects recorded, allocations traced, and a time limit."""
    global _events
    problems: list[str] = []

    def alarm(*_: Any) -> None:
        raise _TimeoutError(f"no answer after {MAX_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(MAX_SECONDS)
    tracemalloc.start()
    _events = problems
    try:
        yield problems
    finally:
        _events = None
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        if peak > MAX_TRACED_BYTES:
            problems.append(f"allocated {peak >> 20} MiB at peak")


# --------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    root: Path
    cases: dict[str, Case]

    def trusted(self, case: Case) -> list[str]:
        return [str(self.root / k) for k in case.trusted]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("adversarial")
    cases = generate.build(root)
    return Corpus(root, {c.name: c for c in cases})


class KnownGapError(AssertionError):
    """A known_gap case behaved as its note says: accepted, or a non-BundleError raised."""


def _refusal(corpus: Corpus, case: Case, call: Callable[[], object]) -> errors.BundleError:
    """Run ``call``; return its BundleError, having checked it ran cleanly."""
    with _watched() as problems:
        try:
            call()
        except errors.BundleError as e:
            err: errors.BundleError | None = e
        except _TimeoutError:
            raise
        except Exception as e:
            if case.known_gap:
                raise KnownGapError(f"{type(e).__name__}: {e}") from e
            raise AssertionError(
                f"{case.name}: raised {type(e).__name__}, not a BundleError: {e}"
            ) from e
        else:
            err = None
    assert not problems, f"{case.name}: side effects while refusing: {problems}"
    if err is None:
        if case.known_gap:
            raise KnownGapError(f"{case.name} is accepted ({case.known_gap})")
        raise AssertionError(f"{case.name} was accepted: {case.description}")
    return err


def _params() -> list[Any]:
    out = []
    for s in specs():
        marks = (
            [pytest.mark.xfail(strict=True, raises=KnownGapError, reason=s.known_gap)]
            if s.known_gap
            else []
        )
        out.append(pytest.param(s.name, id=s.name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_case_is_refused_by_verify_and_load(corpus: Corpus, name: str) -> None:
    case = corpus.cases[name]
    path = corpus.root / case.file
    expected = getattr(errors, case.error)
    trusted = corpus.trusted(case)
    calls = {
        "verify": lambda: bundle.verify(path, trusted_keys=trusted, threshold=case.threshold),
        "load": lambda: bundle.load(
            path, trusted_keys=trusted, threshold=case.threshold, device="cpu"
        ),
    }
    for fn, call in calls.items():
        err = _refusal(corpus, case, call)
        assert type(err) is expected, (
            f"{name} [{fn}]: {type(err).__name__} ({err}), expected {case.error}"
        )
        assert case.message in str(err), f"{name} [{fn}]: {err!s} lacks {case.message!r}"
        assert cli_exit_code(err) == cli_exit_code(expected)


def test_corpus_size_and_coverage(corpus: Corpus) -> None:
    cases = list(corpus.cases.values())
    assert len(cases) >= 60
    assert len({c.name for c in cases}) == len(cases)
    by_category = {c.category for c in cases}
    assert by_category == {"container", "manifest", "signature", "content", "pickle"}
    classes = {c.error for c in cases}
    assert {
        "FormatError",
        "LimitError",
        "IntegrityError",
        "SignatureError",
        "UntrustedContentError",
        "KeyFileError",
    } <= classes
    for c in cases:
        assert c.description
        assert "\n" not in c.description
        assert c.message, c.name
        assert issubclass(getattr(errors, c.error), errors.BundleError)


def test_index_matches_the_files(corpus: Corpus) -> None:
    index = generate.load_index(corpus.root)
    assert [c.name for c in index] == list(corpus.cases)
    for c in index:
        assert hashlib.sha256((corpus.root / c.file).read_bytes()).hexdigest() == c.sha256
    json.loads((corpus.root / generate.INDEX).read_text())


def test_generation_is_deterministic(corpus: Corpus, tmp_path: Path) -> None:
    again = generate.build(tmp_path / "again")
    assert {c.name: c.sha256 for c in again} == {n: c.sha256 for n, c in corpus.cases.items()}


def test_raw_writer_reproduces_the_package_writer(tmp_path: Path) -> None:
    """Container cases are single-field changes of a real bundle: the field-by-field writer
    gives the package's exact bytes when nothing is overridden."""
    ctx = generate.Ctx(tmp_path)
    assert generate.raw_zip(ctx.a_raw()) == ctx.a_bytes
    assert bundle.verify(tmp_path / "a.mbundle", trusted_keys=ctx.key.public_key).verified


def _cli_sample(corpus: Corpus) -> list[Case]:
    """One case per error class, plus the threshold case."""
    seen: dict[str, Case] = {}
    for c in corpus.cases.values():
        if not c.known_gap:
            seen.setdefault(c.error, c)
    sample = list(seen.values())
    sample.append(corpus.cases["signature-counted-twice"])
    return sample


def test_cli_verify_exit_codes(corpus: Corpus, tmp_path: Path) -> None:
    sample = _cli_sample(corpus)
    assert len(sample) >= 6
    for case in sample:
        args = [sys.executable, "-m", "bundle", "verify", str(corpus.root / case.file)]
        for k in corpus.trusted(case):
            args += ["--trusted-key", k]
        if case.threshold:
            args += ["--threshold", str(case.threshold)]
        # cwd is tmp_path (to see stray files), so the checkout under test goes on the path
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(_REPO)},
        )
        expected = getattr(errors, case.error)
        assert proc.returncode == cli_exit_code(expected), (case.name, proc.returncode, proc.stderr)
        assert f"{case.error}:" in proc.stderr, (case.name, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir()), "the CLI wrote files while refusing"


# Runs in a fresh interpreter: every corpus case through verify and load, then a valid
# bundle verified, loaded and run; prints what was imported and unpickled meanwhile.
_FRESH_CHILD = """
import json, sys
events = []
def hook(event, args):
    if event.startswith("pickle."):
        events.append(event)
sys.addaudithook(hook)
import numpy as np
import bundle
root, valid, pub, forbidden = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
refused = 0
for case in json.load(open(f"{root}/cases.json")):
    trusted = [f"{root}/{k}" for k in case["trusted"]]
    for call in (bundle.verify, bundle.load):
        kw = {"device": "cpu"} if call is bundle.load else {}
        try:
            call(f"{root}/{case['file']}", trusted_keys=trusted, threshold=case["threshold"],
                 **kw)
        except Exception:
            refused += 1
assert bundle.verify(valid, trusted_keys=pub).verified
y = bundle.load(valid, trusted_keys=pub, device="cpu").predict(np.ones((2, 4), np.float32))
print(json.dumps({"refused": refused, "shape": list(y.shape), "events": sorted(set(events)),
                  "imported": sorted(m for m in sys.modules
                                     if m.split(".")[0] in forbidden)}))
"""


def test_fresh_process_verify_and_load_import_no_framework(corpus: Corpus, tmp_path: Path) -> None:
    """In a fresh interpreter (here collection has imported every framework already),
    refusing the whole corpus and loading a valid bundle imports none and unpickles nothing."""
    from helpers import save_tiny

    key = bundle.generate_key()
    _, pub = key.save(tmp_path / "k")
    valid = save_tiny(tmp_path / "valid.mbundle", key)
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _FRESH_CHILD,
            str(corpus.root),
            str(valid),
            str(pub),
            ",".join(FORBIDDEN_IMPORTS),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["imported"] == [], f"verify/load imported {info['imported']}"
    assert info["events"] == [], f"verify/load unpickled: {info['events']}"
    known_gaps = sum(1 for c in corpus.cases.values() if c.known_gap)
    assert info["refused"] >= 2 * (len(corpus.cases) - known_gaps)
    assert info["shape"] == [2, 3]


# --------------------------------------------------------------------------- reader fixes


class _SparseFile:
    """A binary file whose writes of one shared zero buffer become holes (seeks)."""

    def __init__(self, f: Any, zeros: bytes) -> None:
        self._f, self._zeros = f, zeros

    def write(self, data: bytes) -> int:
        if data is self._zeros:
            self._f.seek(len(data), os.SEEK_CUR)
            return len(data)
        return int(self._f.write(data))

    def tell(self) -> int:
        return int(self._f.tell())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return int(self._f.seek(offset, whence))


def test_reader_accepts_the_writers_zip64_layout(tmp_path: Path) -> None:
    """The canonical-zip64 rules (markers, versions, end records only when needed) accept
    what ZipWriter writes past 4 GiB: an entry of 2**32 bytes (zip64 sizes), one after it
    (zip64 offset) and a central directory past 4 GiB (zip64 end records). The big entry's
    data is a hole in a sparse file; the writer writes every header itself."""
    from bundle.format.archive import EntryData

    big = 1 << 32
    path = tmp_path / "big.zip"
    with open(path, "wb") as raw:
        zeros = bytes(1 << 20)
        f = _SparseFile(raw, zeros)
        # a duck-typed file (write/tell/seek, all ZipWriter uses), not a full BinaryIO
        w = ZipWriter(f)  # type: ignore[arg-type]
        w.begin_stored("huge.bin", big)
        for _ in range(big // len(zeros)):
            w.write_data(zeros)
        w.end_stored(0)  # the CRC is not checked before the data is read
        w.write(EntryData("after.txt", b"after the hole\n"))
        w.close()
    assert path.stat().st_size > big
    with ZipReader(path) as r:
        assert r.entries["huge.bin"].size == big
        assert r.entries["after.txt"].header_offset > big
        assert r.read("after.txt", max_size=100) == b"after the hole\n"


def test_truncated_end_record_is_named(tmp_path: Path) -> None:
    data = generate.raw_zip([generate.stored("a.txt", b"abc")])
    for cut in range(1, 19):
        p = tmp_path / f"cut{cut}.zip"
        p.write_bytes(data[:-cut])
        with pytest.raises(errors.FormatError, match="cut short"):
            ZipReader(p)
