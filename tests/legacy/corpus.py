"""The malicious corpus, built by the tests: each file creates a sentinel if loaded.

Every case is the bytes a real attacker would ship: pickles made by ``pickle.dumps``
of objects whose ``__reduce__`` names a code-execution target, joblib and torch
files carrying one, and hand-assembled opcode streams for the tricks that no
``__reduce__`` produces (memo-hidden STACK_GLOBAL strings, getattr chains,
extension codes). ``control.py`` proves each one really runs its payload under
``pickle.load``/``joblib.load``/``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    """One malicious file: its name, how to write it, and the target a scan must list."""

    name: str
    suffix: str
    build: Callable[[str], bytes]
    """sentinel path -> the file's bytes."""
    target: str
    """The dangerous ``module.name`` the scan must list ("" for an unscannable trick)."""
    loader: str = "pickle"


class _Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _touch_cmd(sentinel: str) -> str:
    return f"touch {sentinel}"


def _os_system(s: str) -> bytes:
    return pickle.dumps(_Reduce(os.system, _touch_cmd(s)), protocol=2)


def _subprocess(s: str) -> bytes:
    import subprocess

    return pickle.dumps(_Reduce(subprocess.check_call, ["touch", s]), protocol=4)


def _eval(s: str) -> bytes:
    return pickle.dumps(_Reduce(eval, f"open({s!r}, 'w').close()"), protocol=0)


def _exec(s: str) -> bytes:
    return pickle.dumps(_Reduce(exec, f"open({s!r}, 'w').close()"), protocol=3)


def _op(code: bytes, arg: bytes = b"") -> bytes:
    return code + arg


def _str(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _getattr_chain(s: str) -> bytes:
    """getattr(__import__('os'), 'system')('touch s'), assembled opcode by opcode."""
    return b"".join(
        [
            pickle.PROTO,
            b"\x04",
            _str("builtins"),
            _str("getattr"),
            pickle.STACK_GLOBAL,
            _str("builtins"),
            _str("__import__"),
            pickle.STACK_GLOBAL,
            _str("os"),
            pickle.TUPLE1,
            pickle.REDUCE,
            _str("system"),
            pickle.TUPLE2,
            pickle.REDUCE,
            _str(_touch_cmd(s)),
            pickle.TUPLE1,
            pickle.REDUCE,
            pickle.STOP,
        ]
    )


def _memo_hidden(s: str) -> bytes:
    """The module and name strings are memoized early, popped, and fetched back with
    BINGET just before STACK_GLOBAL: nothing near the STACK_GLOBAL spells 'os system'."""
    return b"".join(
        [
            pickle.PROTO,
            b"\x04",
            _str("os"),
            pickle.MEMOIZE,
            pickle.POP,
            _str("harmless"),
            pickle.MEMOIZE,
            pickle.POP,
            _str("system"),
            pickle.MEMOIZE,
            pickle.POP,
            pickle.BINGET,
            b"\x00",
            pickle.BINGET,
            b"\x02",
            pickle.STACK_GLOBAL,
            _str(_touch_cmd(s)),
            pickle.TUPLE1,
            pickle.REDUCE,
            pickle.STOP,
        ]
    )


def _memo_computed(s: str) -> bytes:
    """The module name is *computed* (``codecs.decode(b"os", "ascii")``) and memoized:
    no scanner can resolve it without running code, so the file is unscannable."""
    return b"".join(
        [
            pickle.PROTO,
            b"\x04",
            _str("codecs"),
            _str("decode"),
            pickle.STACK_GLOBAL,
            pickle.SHORT_BINBYTES,
            b"\x02os",
            _str("ascii"),
            pickle.TUPLE2,
            pickle.REDUCE,
            pickle.MEMOIZE,
            pickle.POP,
            pickle.BINGET,
            b"\x00",
            _str("system"),
            pickle.STACK_GLOBAL,
            _str(_touch_cmd(s)),
            pickle.TUPLE1,
            pickle.REDUCE,
            pickle.STOP,
        ]
    )


def _collect_env(s: str) -> bytes:
    import torch.utils.collect_env as ce

    return pickle.dumps(_Reduce(ce.run, _touch_cmd(s)), protocol=2)


def _spawnv_passfds(s: str) -> bytes:
    import multiprocessing.util as mu

    return pickle.dumps(
        _Reduce(mu.spawnv_passfds, b"/usr/bin/touch", [b"touch", os.fsencode(s)], ()), protocol=4
    )


def _joblib_nested(s: str) -> bytes:
    import joblib
    import numpy as np

    payload = np.empty(1, dtype=object)
    payload[0] = _Reduce(os.system, _touch_cmd(s))
    buf = io.BytesIO()
    joblib.dump({"weights": np.arange(4.0), "extra": payload}, buf)
    return buf.getvalue()


def _torch_zip(s: str) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2, 2), "hook": _Reduce(os.system, _touch_cmd(s))}, buf)
    return buf.getvalue()


def _trojan(s: str) -> bytes:
    sys.path.insert(0, str(HERE))
    from trojan import Trojan

    return pickle.dumps(Trojan(_touch_cmd(s)), protocol=4)


def _ext_code(s: str) -> bytes:
    """EXT1: whatever the loading process registered under code 1 in copyreg."""
    return (
        pickle.PROTO
        + b"\x02"
        + pickle.EXT1
        + b"\x01"
        + pickle.EMPTY_TUPLE
        + pickle.REDUCE
        + pickle.STOP
    )


CASES = [
    Case("os.system", ".pkl", _os_system, "posix.system"),
    Case("subprocess.check_call", ".pkl", _subprocess, "subprocess.check_call"),
    Case("builtins.eval (protocol 0)", ".pkl", _eval, "__builtin__.eval"),
    Case("builtins.exec", ".pkl", _exec, "builtins.exec"),
    Case("getattr(__import__) chain", ".pkl", _getattr_chain, "builtins.getattr"),
    Case("memo-hidden STACK_GLOBAL", ".pkl", _memo_hidden, "os.system"),
    Case("computed STACK_GLOBAL", ".pkl", _memo_computed, ""),
    Case("torch.utils.collect_env.run", ".pkl", _collect_env, "torch.utils.collect_env.run"),
    Case(
        "multiprocessing.util.spawnv_passfds",
        ".pkl",
        _spawnv_passfds,
        "multiprocessing.util.spawnv_passfds",
    ),
    Case("payload nested in joblib", ".joblib", _joblib_nested, "posix.system", "joblib"),
    Case("payload inside torch zip", ".pt", _torch_zip, "posix.system", "torch"),
    Case("approved class, __reduce__ to os.system", ".pkl", _trojan, "posix.system"),
    Case("EXT1 extension code", ".pkl", _ext_code, ""),
]


def write(case: Case, directory: Path) -> tuple[Path, Path]:
    """Write the case's file; return (file, sentinel it would create)."""
    slug = "".join(c if c.isalnum() else "-" for c in case.name)
    sentinel = directory / f"SENTINEL-{slug}"
    path = directory / f"case-{slug}{case.suffix}"
    path.write_bytes(case.build(str(sentinel)))
    return path, sentinel
