"""Prometheus metrics of one server: requests, latency, errors, swaps, rollbacks, digests.

Each app has its own ``prometheus_client`` registry (two apps in one process, as in
tests, do not mix their counts). ``bundle_serve_model_info`` is 1 for the version
serving each model, labelled with its version and digest: a dashboard can show
exactly which bytes answered at any time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    """The server's counters, histogram and gauges, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bundle_serve_requests",
            "Inference requests answered",
            ["model", "endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "bundle_serve_request_seconds",
            "Time to answer an inference request (parse, run, encode)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "bundle_serve_errors",
            "Failed inference requests by kind (input: refused with 4xx; run, timeout: 5xx)",
            ["model", "kind"],
            registry=r,
        )
        self.swaps = Counter("bundle_serve_swaps", "Versions that went live", ["model"], registry=r)
        self.swap_failures = Counter(
            "bundle_serve_swap_failures",
            "Versions refused before going live, by pipeline stage",
            ["model", "stage"],
            registry=r,
        )
        self.rollbacks = Counter(
            "bundle_serve_rollbacks",
            "Automatic rollbacks after a failed probation",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "bundle_serve_in_flight", "Requests running now", ["model"], registry=r
        )
        self.info = Gauge(
            "bundle_serve_model_info",
            "1 for the version serving each model (0 once replaced)",
            ["model", "version", "digest"],
            registry=r,
        )
        self.retained = Gauge(
            "bundle_serve_versions_loaded",
            "Versions held in memory (serving, standby, or finishing requests)",
            ["model"],
            registry=r,
        )

    def serving(self, model: str, old: Any, new: Any) -> None:
        """Move the info gauge from the ``old`` version (or None) to the ``new`` one."""
        if old is not None:
            self.info.labels(model, old.version, old.digest).set(0)
        if new is not None:
            self.info.labels(model, new.version, new.digest).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
