"""onnxruntime thread pools sized to the CPUs this process may use, not the host's.

A container limited to 2 CPUs on a 64-core host still sees 64 in ``os.cpu_count()``;
onnxruntime's default pools would then start 64 threads that fight over 2 CPUs.
The share is the affinity mask (``os.sched_getaffinity``: taskset, cpusets) capped
by a cgroup v2 CPU quota (``cpu.max``: docker ``--cpus``, Kubernetes limits).
Spinning is turned off: a server's threads wait for requests most of the time,
and a spinning pool burns the CPU share the other requests need.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["available_cpus", "session_options"]

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _quota(path: Path) -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` ("max 100000" or "200000 100000")."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def available_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """How many CPUs this process may use: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _quota(cgroup_cpu_max)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def session_options(threads: int | None = None) -> Any:
    """Fresh ``onnxruntime.SessionOptions``: ``threads`` (default: :func:`available_cpus`)
    intra-op threads, one inter-op thread, no spinning."""
    import onnxruntime as ort

    if threads is None:
        threads = available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, not {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so
