"""Probation: a new version is compared with the one it replaced, and rolled back if worse.

For ``window`` seconds after a swap, the new version's error rate and p99 latency
are compared with what the previous version showed over its last requests before
the swap. Past either threshold the registry swaps back by itself. The decision is
a pure function of two :class:`Stats` snapshots, so it is easy to test and reason
about; the registry owns the timing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["LATENCY_SAMPLES", "ProbationPolicy", "Snapshot", "Stats", "judge"]

LATENCY_SAMPLES = 4096
"""Each version keeps its last this many latencies (p99 over them)."""


@dataclass(frozen=True)
class ProbationPolicy:
    """When a new version is rolled back.

    ``window``: seconds of probation after a swap. ``min_requests``: no verdict on
    fewer requests (a version that sees fewer in the whole window is kept).
    ``max_error_rate_increase``: new error rate minus the previous one (0.05 = five
    points). ``max_p99_ratio``: new p99 over the previous p99, counted only when the
    new p99 is also ``min_p99_increase`` seconds slower (sub-millisecond noise is not
    a regression), and only once both versions have ``latency_min_requests`` requests
    (a p99 over fifty requests is their maximum: one scheduling hiccup).
    """

    window: float = 60.0
    min_requests: int = 50
    max_error_rate_increase: float = 0.05
    max_p99_ratio: float = 2.0
    min_p99_increase: float = 0.005
    latency_min_requests: int = 300

    def __post_init__(self) -> None:
        for name in ("window", "max_p99_ratio"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v!r}")
        for name in ("min_requests", "latency_min_requests"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, not {v!r}")
        for name in ("max_error_rate_increase", "min_p99_increase"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative number, not {v!r}")


@dataclass(frozen=True)
class Snapshot:
    """A version's requests, errors and p99 latency (seconds; None without requests)."""

    requests: int
    errors: int
    p99: float | None

    @property
    def error_rate(self) -> float:
        """Errors over requests (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0


class Stats:
    """Requests, errors and recent latencies of one version (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._outcomes: deque[bool] = deque(maxlen=LATENCY_SAMPLES)
        self.started = time.monotonic()

    def record(self, seconds: float, error: bool) -> None:
        """One answered request."""
        with self._lock:
            self.requests += 1
            self.errors += error
            self._latencies.append(seconds)
            self._outcomes.append(error)

    def snapshot(self, recent: bool = False) -> Snapshot:
        """Everything so far, or (``recent``) the last :data:`LATENCY_SAMPLES` requests."""
        with self._lock:
            lat = sorted(self._latencies)
            if recent:
                requests, errors = len(self._outcomes), sum(self._outcomes)
            else:
                requests, errors = self.requests, self.errors
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] if lat else None
        return Snapshot(requests, errors, p99)


def judge(policy: ProbationPolicy, new: Snapshot, before: Snapshot | None) -> str | None:
    """Why ``new`` should be rolled back compared with ``before``, or None to keep it."""
    if new.requests < policy.min_requests:
        return None
    base = before if before is not None and before.requests >= policy.min_requests else None
    base_rate = base.error_rate if base is not None else 0.0
    if new.error_rate - base_rate > policy.max_error_rate_increase:
        return (
            f"error rate {new.error_rate:.1%} over {new.requests} requests vs "
            f"{base_rate:.1%} before (allowed +{policy.max_error_rate_increase:.1%})"
        )
    if (
        base is not None
        and base.p99 is not None
        and new.p99 is not None
        and min(new.requests, base.requests) >= policy.latency_min_requests
        and new.p99 > policy.max_p99_ratio * base.p99
        and new.p99 - base.p99 > policy.min_p99_increase
    ):
        return (
            f"p99 latency {new.p99 * 1000:.1f} ms vs {base.p99 * 1000:.1f} ms before "
            f"(allowed {policy.max_p99_ratio:g}x)"
        )
    return None
