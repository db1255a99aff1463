"""The sandboxed side of a migration: unpickle what was approved, export, check parity.

Run only by :mod:`bundle.legacy.sandbox`, in a fresh interpreter (``python -I``)
with resource limits, no network (a new network namespace when the kernel allows
one; an audit hook refusing sockets, processes and writes outside the work
directory in every case) and the source file's bytes on stdin, never its path.
It writes an *unsigned* bundle and ``result.json`` into the work directory; the
parent verifies that bundle, checks its migration record, and signs it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from typing import Any

__all__ = ["REQUEST", "RESULT", "main"]

REQUEST = "request.json"
RESULT = "result.json"
OUTPUT = "unsigned.mbundle"
SAMPLE = "sample.npz"

_BLOCKED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "webbrowser.open",
        "os.kill",
        "os.killpg",
        "ctypes.dlsym/handle",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install_audit_hook(workdir: str) -> None:
    """Refuse, for the rest of this process, sockets, new processes, and writing any
    file outside ``workdir``. Audit hooks cannot be removed once added."""
    root = os.path.realpath(workdir) + os.sep

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _BLOCKED_EVENTS or event.startswith("socket."):
            raise PermissionError(f"the migration sandbox refuses {event}")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing and isinstance(path, (str, bytes)):
                p = os.fsdecode(path)
                if p != os.devnull and not os.path.realpath(p).startswith(root):
                    raise PermissionError(f"the migration sandbox refuses writing {p}")

    sys.addaudithook(hook)


def _sample(workdir: str, layout: Any) -> Any:
    import numpy as np

    with np.load(os.path.join(workdir, SAMPLE), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if layout == "array":
        return arrays["x"]
    if layout == "tuple":
        return tuple(arrays[f"x{i}"] for i in range(len(arrays)))
    return arrays


def _load(
    kind: str, data: bytes, allowed: frozenset[str], workdir: str, request: dict[str, Any]
) -> Any:
    from .unpickler import RestrictedUnpickler, joblib_unpickler, pickle_module

    if kind == "pickle":
        return RestrictedUnpickler(io.BytesIO(data), allowed=allowed).load()
    if kind == "joblib":
        from .scanner import decompress_joblib

        return joblib_unpickler(io.BytesIO(decompress_joblib(data)), allowed).load()
    if kind == "torch":
        import torch

        return torch.load(
            io.BytesIO(data),
            map_location="cpu",
            weights_only=False,
            pickle_module=pickle_module(allowed),
        )
    if kind == "keras":
        import importlib

        import keras

        custom = {}
        for target in request["approved"]:
            module, _, name = target.rpartition(".")
            custom[name] = getattr(importlib.import_module(module), name)
        path = os.path.join(workdir, "source" + request["suffix"])
        with open(path, "wb") as f:
            f.write(data)
        return keras.saving.load_model(
            path, custom_objects=custom or None, compile=False, safe_mode=True
        )
    raise ValueError(f"unknown kind {kind!r}")


def main(workdir: str, network: str) -> int:
    """Convert the bytes on stdin as ``request.json`` says; always write result.json."""
    install_audit_hook(workdir)
    result: dict[str, Any] = {"ok": False, "network": network}
    try:
        with open(os.path.join(workdir, REQUEST), "rb") as f:
            request = json.loads(f.read())
        for p in request.get("search_path", []):
            sys.path.append(p)
        data = sys.stdin.buffer.read()
        if hashlib.sha256(data).hexdigest() != request["sha256"]:
            raise RuntimeError("the bytes on stdin are not the file the parent scanned")
        from ..errors import ApprovalError
        from .scanner import scan_bytes

        report = scan_bytes(data)
        approved = frozenset(request["approved"])
        missing = set(report.needs_approval) - approved
        if report.problems or report.dangerous or missing:
            raise ApprovalError(
                "the sandbox's own scan refuses the file: "
                f"{sorted(missing) or report.dangerous or report.problems}"
            )
        allowed = approved | {f.target for f in report.findings if f.tensor}
        obj = _load(request["kind"], data, allowed, workdir, request)
        if request["kind"] == "torch":
            obj.eval()
        sample = _sample(workdir, request["sample_layout"])
        if request["kind"] == "torch":
            import torch

            sample = (
                tuple(torch.from_numpy(a) for a in sample)
                if isinstance(sample, tuple)
                else torch.from_numpy(sample)
                if not isinstance(sample, dict)
                else {k: torch.from_numpy(v) for k, v in sample.items()}
            )
        from ..api import save

        tolerance = tuple(request["tolerance"]) if request.get("tolerance") else None
        manifest = save(
            obj,
            os.path.join(workdir, OUTPUT),
            sample_input=sample,
            name=request["name"],
            version=request["version"],
            metadata={"migration": request["record"]},
            tolerance=tolerance,
        )
        result.update(ok=True, parity=manifest.parity.passed if manifest.parity else None)
    except BaseException as e:
        result.update(error=type(e).__name__, message=" ".join(str(e).split())[:4000])
    with open(os.path.join(workdir, RESULT), "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0 if result["ok"] else 1
