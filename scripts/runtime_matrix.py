"""The onnxruntime matrix: one cached venv per runtime release the project tests on.

    python scripts/runtime_matrix.py [oldest|newest|VERSION ...]   # build (or reuse)

``OLDEST`` is the release pyproject.toml declares (``onnxruntime>=1.20``): the
oldest whose wheels are built against numpy 2 *and* that reads IR 10 / opset 21,
what torch's dynamo exporter writes today (scripts/probe_onnxruntime.py measured
1.18 as the first with IR 10, and 1.19 is the first built for numpy 2; 1.20 adds
what the loader uses from the session options API and is the declared floor).
``NEWEST`` is the newest release pip offers for CPython 3.11 here. Each venv
(``.venv-ort-<version>/``, gitignored) holds the plain CPU ``onnxruntime`` of that
release and the other load-path dependencies -- not the project, which the tests
put on ``PYTHONPATH``, so the code under test is the working tree's. A venv is
built in a temporary sibling and renamed into place, so a half-built one is never
used; it is rebuilt when its requirement list changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OLDEST = "1.20.0"
NEWEST = "1.32.0"
# The load path's dependencies (pyproject's core) at their newest; onnxruntime pinned.
OTHERS = (
    "numpy",
    "onnx>=1.16",
    "safetensors>=0.4",
    "zlib-ng>=0.5",
    "cryptography>=45",
    "click>=8.1",
    "rich>=13",
)
READY = ".model-bundle-ready"


def venv_dir(version: str) -> Path:
    """Where the venv for onnxruntime ``version`` lives."""
    return REPO / f".venv-ort-{version}"


def python(venv: Path) -> Path:
    """The venv's interpreter."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements(version: str) -> list[str]:
    """What the venv for ``version`` installs."""
    return [f"onnxruntime=={version}", *OTHERS]


def usable(version: str) -> bool:
    """The venv exists, is complete, and was built from today's requirement list."""
    marker = venv_dir(version) / READY
    return marker.is_file() and marker.read_text() == "\n".join(requirements(version))


def build(version: str, timeout: float = 900) -> Path:
    """Build (or reuse) the venv for onnxruntime ``version``; returns its directory.

    Raises RuntimeError with pip's last lines when the registry cannot provide it.
    """
    target = venv_dir(version)
    if usable(version):
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(tmp)],
        [
            str(python(tmp)),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *requirements(version),
        ],
    ]
    for cmd in steps:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"building the onnxruntime {version} venv failed: {tail}")
    (tmp / READY).write_text("\n".join(requirements(version)))
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: use its venv
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str]) -> None:
    """Build the named venvs (default: oldest and newest)."""
    names = {"oldest": OLDEST, "newest": NEWEST}
    for v in argv or ["oldest", "newest"]:
        print(f"onnxruntime {names.get(v, v)}: {build(names.get(v, v))}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
