"""Timing helpers: in-process medians, fresh-process cold starts, CLI commands.

Cold starts are measured from just before the child is spawned to the moment the
child has its first prediction (the child reports ``time.time()`` then), so the
interpreter's start and imports count and its teardown does not. Peak RSS is the
child's own ``VmHWM`` read at that moment.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLD = Path(__file__).resolve().parent / "cold.py"
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", "TF_ENABLE_ONEDNN_OPTS": "1"}


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took, and what it returned."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def latency(
    fn: Callable[[], Any], *, reps: int, budget_s: float, warmup: int = 3, min_reps: int = 5
) -> float:
    """Median seconds per call after ``warmup`` calls: ``reps`` calls or ``budget_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return median(times)


def threads() -> int:
    """Intra-op threads every in-process side gets (onnxruntime, torch, TensorFlow).

    One figure for all, so a latency ratio compares implementations, not thread pools.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ort_session_options() -> Any:
    """onnxruntime SessionOptions for latency timing: worker threads that do not spin.

    After a run, spinning workers keep the cores busy for a while, and in a
    round-robin that time lands on whatever is timed next (a numpy job: 2.5 ms
    alone, 6.2 ms right after an onnxruntime call, 2.5 ms with spinning off).
    A new object per session: ``bundle.load`` adds entries to the one it is given.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


@dataclass(frozen=True)
class Latency:
    """Seconds per call: the median, and the fastest call (what the noise cannot lower)."""

    median: float
    min: float


TIE_BAND = (0.95, 1.05)
"""Median ratios inside this band are within run-to-run noise on a shared machine."""


def ratio_or_tie(mine: Latency, base: Latency) -> tuple[float, bool]:
    """``mine.median / base.median``, and whether the two are a tie.

    A tie: the ratio within :data:`TIE_BAND` and each one's [min, median] range
    overlapping the other's, i.e. the difference is no larger than the spread.
    """
    ratio = mine.median / base.median
    overlap = mine.min <= base.median and base.min <= mine.median
    return ratio, TIE_BAND[0] <= ratio <= TIE_BAND[1] and overlap


def latency_stats(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    budget_s: float,
    warmup: int = 3,
    min_reps: int = 5,
) -> dict[str, Latency]:
    """Median and fastest seconds per call of each function, timed round-robin.

    One call of each per round, the order reversed every other round, so that a
    burst of load from another process hits every implementation alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    start = time.perf_counter()
    rounds = 0
    while rounds < reps and (rounds < min_reps or time.perf_counter() - start < budget_s):
        for name, fn in items if rounds % 2 == 0 else reversed(items):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        rounds += 1
    return {name: Latency(median(v), min(v)) for name, v in times.items()}


def latencies(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    budget_s: float,
    warmup: int = 3,
    min_reps: int = 5,
) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (see latency_stats)."""
    stats = latency_stats(fns, reps=reps, budget_s=budget_s, warmup=warmup, min_reps=min_reps)
    return {name: s.median for name, s in stats.items()}


@dataclass(frozen=True)
class Cold:
    """One fresh process: seconds to first prediction, peak RSS, a checksum of the output."""

    seconds: float
    rss_mib: float
    checksum: float
    imported_s: float
    """From spawn to the end of the format's imports (interpreter start included)."""
    loaded_s: float
    """From spawn to the model being loaded (for a bundle: verified, session created)."""


def child_env() -> dict[str, str]:
    """The environment children run in: ours, quieter, with the repo importable."""
    env = dict(os.environ)
    env.update(QUIET_ENV)
    # Installed packages import from compiled bytecode; a checkout under
    # PYTHONDONTWRITEBYTECODE would recompile model-bundle's sources in every child
    # (~0.1-0.2 s) while the other formats' packages load their .pyc files.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def fresh(kind: str, args: Mapping[str, Any]) -> Cold:
    """Run one cold start of ``kind`` (see :mod:`.cold`) in a fresh interpreter."""
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(COLD), kind, json.dumps(dict(args))],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"cold start {kind} failed: {tail}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    marks = report["marks"]
    return Cold(
        report["t"] - t0,
        report["hwm_kib"] / 1024,
        report["checksum"],
        marks["imported"] - t0,
        marks["loaded"] - t0,
    )


def fresh_interleaved(
    cases: Mapping[str, tuple[str, Mapping[str, Any]]], runs: int
) -> tuple[dict[str, list[Cold]], dict[str, str]]:
    """Each case ``runs`` times, round-robin, so a noisy moment hits all of them alike.

    A case whose child fails is dropped from later rounds; its error is returned.
    """
    out: dict[str, list[Cold]] = {name: [] for name in cases}
    errors: dict[str, str] = {}
    for _ in range(runs):
        for name, (kind, args) in cases.items():
            if name in errors:
                continue
            try:
                out[name].append(fresh(kind, args))
            except RuntimeError as e:
                errors[name] = str(e)
    return {k: v for k, v in out.items() if k not in errors}, errors


def command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Wall seconds of a command run to completion (fails loudly on a non-zero exit)."""
    t = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else child_env(),
        check=False,
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise RuntimeError(
            f"{Path(argv[0]).name} failed ({proc.returncode}): {msg[-1] if msg else '(no output)'}"
        )
    return elapsed
