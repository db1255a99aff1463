"""What machine a figure was measured on, in a few markdown lines."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """Cores this process may run on (what a parallel hash can use)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def sha_extensions() -> str:
    """Whether the CPU has SHA instructions (x86 ``sha_ni``, Arm ``sha2``): "yes"/"no"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("flags", "Features"))]
        flags = {w for line in lines for w in line.split()}
    except OSError:
        return "unknown"
    return "yes" if flags & {"sha_ni", "sha2"} else "no"


def hash_note(rate: float) -> str:
    """hashlib's single-core SHA-256 speed and the SHA extensions, beside a throughput."""
    return f"hashlib SHA-256 {rate / 1e9:.2f} GB/s/core, SHA ext: {sha_extensions()}"


def ram_gib() -> float:
    """Physical memory in GiB."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the machine was while measuring."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


class OtherLoad:
    """How much CPU other processes used while we measured, in cores on average.

    System-wide busy time from /proc/stat minus this process's own and its
    waited-for children's CPU time (getrusage), over the wall time between
    construction and :meth:`note`. Load averages cannot tell our own children
    from someone else's work; this can.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import resource
        import time

        busy = float("nan")
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        mine = sum(
            r.ru_utime + r.ru_stime
            for r in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        return time.monotonic(), busy, mine

    def cores(self) -> float:
        """Average cores used by other processes since construction (nan if unknown)."""
        t0, busy0, mine0 = self._start
        t1, busy1, mine1 = self._sample()
        return max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / max(t1 - t0, 1e-9))

    def note(self) -> str:
        """A markdown line saying how busy the machine was, flagging noisy figures."""
        other = self.cores()
        line = (
            f"- Other processes used {other:.2f} of the {cores()} cores on average while "
            f"this ran (load average now {load_average()})."
        )
        if not other <= 0.2:
            return line + (
                " **The machine was shared with other jobs while measuring: these "
                "figures are noisy; re-run on a quiet machine before quoting "
                "them.**"
            )
        return line + " The machine was otherwise quiet."


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(packages: tuple[str, ...]) -> list[str]:
    """Markdown bullet lines: CPU, cores, RAM, OS, Python and package versions."""
    versions = ", ".join(f"{p} {_version(p)}" for p in packages)
    return [
        f"- CPU: {cpu_model()}, {cores()} cores available "
        f"({os.cpu_count()} logical CPUs), SHA extensions: {sha_extensions()}, "
        f"{ram_gib():.1f} GiB RAM",
        f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
        f"- Python {platform.python_version()} ({sys.implementation.name}); {versions}",
    ]
