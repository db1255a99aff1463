"""The parent side of the sandbox: start the child, limit it, read back its answer.

The child is a fresh interpreter (``sys.executable -I``: no user site, no
``PYTHON*`` variables, no current directory on the path) running
:mod:`bundle.legacy.child` from this very package. Before it imports anything
it moves into a new user and network namespace (``unshare(CLONE_NEWUSER |
CLONE_NEWNET)``: only a loopback device that is down) when the kernel allows an
unprivileged process that; it reports whether it could. It gets:

* the source bytes on stdin (a read-only view: it never sees the path, and it
  checks their SHA-256 against the one the parent scanned);
* resource limits set between fork and exec: address space, CPU seconds, open
  files, largest file it may write, no core dumps; a wall-clock timeout kills
  its whole process group;
* a private work directory (mode 0700) holding the request and the sample input
  (``.npz``, no pickles), where it writes the unsigned bundle and ``result.json``.

Nothing comes back through pickle: the parent reads a JSON result and a bundle
it verifies like any other.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import ConversionError
from .child import RESULT

__all__ = ["Limits", "run_child"]

# The child's first lines: enter a fresh user+network namespace while the process is
# still single-threaded (numpy and onnxruntime start threads when imported, and
# unshare(CLONE_NEWUSER) refuses a threaded process), then import the package.
_BOOT = """\
import ctypes, sys
network = "audit-hook only (no network namespace)"
try:
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x40000000) == 0:
        network = "network namespace"
except Exception:
    pass
sys.path.insert(0, sys.argv[1])
from bundle.legacy.child import main
sys.exit(main(sys.argv[2], network))
"""

MAX_RESULT_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits for the migration child."""

    memory_bytes: int = 32 << 30
    """Address space (RLIMIT_AS). Frameworks reserve much more than they use."""
    cpu_seconds: int = 3600
    wall_seconds: float = 3600.0
    open_files: int = 4096
    output_bytes: int = 64 << 30
    """The largest file the child may write (RLIMIT_FSIZE)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds,
            "open_files": self.open_files,
            "output_bytes": self.output_bytes,
        }


def _package_root() -> str:
    import bundle

    return os.path.dirname(os.path.dirname(os.path.abspath(bundle.__file__)))


def run_child(workdir: str, data: bytes, limits: Limits) -> dict[str, Any]:
    """Run the child on ``data`` in ``workdir``; return its result (``ok``, ``network``,
    and ``error``/``message`` on failure). Raises ConversionError if it dies silently."""

    def set_limits() -> None:  # runs in the child between fork and exec
        for what, value in (
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_CPU, limits.cpu_seconds),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.output_bytes),
            (resource.RLIMIT_CORE, 0),
        ):
            _soft, hard = resource.getrlimit(what)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(what, (value, hard))

    env = {
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "PATH": os.defpath,
    }
    log_path = os.path.join(workdir, "child.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, _package_root(), workdir],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            cwd=workdir,
            env=env,
            preexec_fn=set_limits,
            start_new_session=True,
            close_fds=True,
        )
        try:
            proc.communicate(data, timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ConversionError(
                f"the migration sandbox ran past {limits.wall_seconds:g} s and was stopped"
            ) from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    result_path = os.path.join(workdir, RESULT)
    try:
        with open(result_path, "rb") as f:
            raw = f.read(MAX_RESULT_BYTES + 1)
        result: dict[str, Any] = json.loads(raw) if len(raw) <= MAX_RESULT_BYTES else {}
    except (OSError, ValueError):
        result = {}
    if not isinstance(result, dict) or "ok" not in result:
        raise ConversionError(
            f"the migration sandbox ended (exit status {proc.returncode}) "
            f"without a result: {_tail(log_path)}"
        )
    return result


def _tail(path: str, n: int = 800) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return " ".join(f.read().decode("utf-8", "replace").split())
    except OSError:
        return "(no log)"
