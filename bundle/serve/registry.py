"""The model registry: verified hot swap, reference-counted versions, probation, rollback.

One :class:`ModelSlot` per served name. A new version goes live only through
:meth:`Registry.refresh`::

    source.current() --digest changed?--> load (verify under the TrustPolicy, build
    the session) --> preflight checks --> smoke test --> atomic swap --> probation

Every stage runs with no lock held; the swap itself is a pointer exchange under
the slot's lock, which requests also take only to pick the current version and
count themselves in. A request that started on the old version finishes on it;
the old version is released when its last request ends (or, during probation,
when probation ends: it is the standby a rollback swaps back to, instantly and
without reading its bytes again). Any failure leaves the serving version alone and
is recorded: the slot's status, a metric by stage, one log line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BundleError
from ..runtime.model import Model
from .metrics import Metrics
from .probation import ProbationPolicy, Snapshot, Stats, judge
from .protocol import as_model_input
from .sources import Candidate, Source, sources_names
from .threads import session_options

__all__ = ["ModelSlot", "NotServing", "Registry", "ServeOptions", "Version"]

log = logging.getLogger("bundle.serve")

STAGES = ("resolve", "load", "preflight", "smoke")
"""The pipeline stages a version can be refused at ("load" verifies, then builds the session)."""

EVENTS_KEPT = 50


@dataclass(frozen=True)
class ServeOptions:
    """How the server runs models.

    ``request_timeout``: seconds one run may take (``Model.run(timeout=)``).
    ``max_body_bytes``: larger request bodies get 413. ``body_timeout``: a client
    that takes longer to send its body gets 408. ``threads``: onnxruntime intra-op
    threads per session (default: the CPUs this process may use). ``probation``:
    None disables it (the old version is then released as soon as its requests end).
    ``preflight``: extra checks on a loaded candidate, each raising a BundleError to
    refuse it. ``canary``: without smoke vectors in the bundle, run one row of
    zeros through it before it goes live. ``device``: for store sources.
    """

    request_timeout: float | None = 30.0
    max_body_bytes: int = 16 << 20
    body_timeout: float = 10.0
    threads: int | None = None
    probation: ProbationPolicy | None = field(default_factory=ProbationPolicy)
    preflight: tuple[Callable[[Model], None], ...] = ()
    canary: bool = True

    def __post_init__(self) -> None:
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, not {self.request_timeout!r}")
        if not (isinstance(self.max_body_bytes, int) and self.max_body_bytes > 0):
            raise ValueError(f"max_body_bytes must be a positive int, not {self.max_body_bytes!r}")
        if not self.body_timeout > 0:
            raise ValueError(f"body_timeout must be positive, not {self.body_timeout!r}")


class NotServing(Exception):  # noqa: N818 -- an answer (404/503), not a failure of the library
    """No version of this model can answer (unknown name, not loaded, wrong version)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Version:
    """One loaded version: its Model, who signed it, how it was checked, who is using it."""

    def __init__(self, name: str, model: Model, candidate: Candidate, smoke: str) -> None:
        self.name = name
        self.model: Model | None = model
        self.manifest = model.manifest
        self.version = model.manifest.model.version
        self.digest = candidate.digest
        self.record = dict(candidate.record)
        self.smoke = smoke
        self.signers: list[dict[str, Any]] = [dict(s.to_dict()) for s in model.report.signers]
        self.verified = model.report.verified
        self.loaded_at = time.time()
        self.stats = Stats()
        self.refs = 0  # requests running on it; guarded by the slot's lock
        self.retired = False  # no new request may start on it
        self.released = threading.Event()

    def info(self) -> dict[str, Any]:
        """JSON-ready description (for status, the index and the page)."""
        m = self.manifest
        parity = m.parity.to_dict() | {"passed": m.parity.passed} if m.parity else None
        snap = self.stats.snapshot()
        return {
            "version": self.version,
            "digest": self.digest,
            "signers": self.signers,
            "verified": self.verified,
            "smoke": self.smoke,
            "parity": parity,
            "framework": m.model.framework,
            "task": m.model.task,
            "loaded_at": self.loaded_at,
            "record": self.record,
            "requests": snap.requests,
            "errors": snap.errors,
            "p99_ms": None if snap.p99 is None else round(snap.p99 * 1000, 3),
        }


@dataclass
class Probation:
    """A version on trial against the one it replaced (kept loaded as the standby)."""

    until: float
    baseline: Snapshot


class ModelSlot:
    """One served name: the version serving it, the standby, and what happened."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.name = source.name
        self.lock = threading.Lock()  # held only to exchange pointers and count requests
        self.current: Version | None = None
        self.standby: Version | None = None
        self.probation: Probation | None = None
        self.state = "loading"
        self.enabled = True
        self.refused: dict[str, str] = {}  # digest -> why (not tried again until it changes)
        self.last_failure: dict[str, Any] | None = None
        self.last_error: BaseException | None = None  # the exception behind last_failure
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.load_lock = threading.Lock()  # one pipeline at a time per name
        self.next_poll = 0.0
        self.loaded: set[Version] = set()

    def status(self) -> dict[str, Any]:
        """State, serving version, standby, probation and the last failure."""
        with self.lock:
            cur, standby, prob = self.current, self.standby, self.probation
        return {
            "name": self.name,
            "state": self.state,
            "source": self.source.describe(),
            "current": cur.info() if cur else None,
            "standby": standby.info() if standby else None,
            "probation_until": prob.until if prob else None,
            "last_failure": self.last_failure,
            "events": list(self.events)[::-1],
        }


def _canary_input(model: Model) -> Any:
    """One row of zeros (empty strings) shaped by the input signature."""
    feeds = {}
    for spec in model.inputs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape] or []
        if spec.dtype == "string":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(
                shape, dtype="float32" if spec.dtype == "bfloat16" else spec.dtype
            )
    return as_model_input(feeds, model.manifest)


class Registry:
    """The served models. Thread-safe; the app calls it from request threads."""

    def __init__(
        self,
        sources: Sequence[Source],
        options: ServeOptions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not sources:
            raise ValueError("give at least one model source")
        sources_names(sources)
        self.options = options or ServeOptions()
        self.metrics = metrics or Metrics()
        self.slots = {s.name: ModelSlot(s) for s in sources}
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._started = False
        self._start_lock = threading.Lock()

    # -- lifecycle

    def start(self, supervise: bool = True) -> dict[str, BaseException]:
        """Load every model (once; idempotent) and start polling (``supervise``).

        Returns, for each model with no version serving, the error that refused it.
        """
        with self._start_lock:
            if not self._started:
                self._started = True
                for slot in self.slots.values():
                    self._refresh(slot, force=True)
            if supervise and self._supervisor is None:
                self._stop.clear()
                self._supervisor = threading.Thread(
                    target=self._supervise, name="bundle-serve-supervisor", daemon=True
                )
                self._supervisor.start()
        return {
            n: s.last_error
            for n, s in self.slots.items()
            if s.current is None and s.last_error is not None
        }

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, wait (bounded) for pipelines in progress, release every version."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
            self._supervisor = None
        for t in list(self._workers):
            t.join(timeout)
        for slot in self.slots.values():
            with slot.lock:
                versions = [v for v in (slot.current, slot.standby) if v is not None]
                slot.current = slot.standby = None
                slot.probation = None
                slot.state = "stopped"
            for v in versions:
                self._retire(slot, v)

    def _supervise(self) -> None:
        """Poll sources when due and judge probations, until stopped."""
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for slot in self.slots.values():
                self._judge(slot)
                if slot.enabled and now >= slot.next_poll and not slot.load_lock.locked():
                    slot.next_poll = now + slot.source.poll_interval
                    t = threading.Thread(
                        target=self._refresh,
                        args=(slot,),
                        name=f"bundle-serve-load-{slot.name}",
                        daemon=True,
                    )
                    self._workers.add(t)
                    t.start()
            self._workers = {t for t in self._workers if t.is_alive()}

    # -- requests

    def slot(self, name: str) -> ModelSlot:
        """The slot serving ``name``; NotServing (404) if none."""
        slot = self.slots.get(name)
        if slot is None:
            raise NotServing(f"no model named {name!r}; this server has {sorted(self.slots)}", 404)
        return slot

    @contextlib.contextmanager
    def use(self, name: str, version: str | None = None) -> Iterator[Version]:
        """The version serving ``name`` now, counted in for the duration of the block."""
        slot = self.slot(name)
        with slot.lock:
            v = slot.current
            if v is None:
                why = f": {slot.last_failure['error']}" if slot.last_failure else ""
                raise NotServing(f"model {name!r} is not ready ({slot.state}){why}", 503)
            if version is not None and version != v.version:
                raise NotServing(
                    f"model {name!r} is serving version {v.version!r}, not {version!r}", 404
                )
            v.refs += 1
        self.metrics.in_flight.labels(name).inc()
        try:
            yield v
        finally:
            self.metrics.in_flight.labels(name).dec()
            with slot.lock:
                v.refs -= 1
                free = v.retired and v.refs == 0 and v is not slot.standby
            if free:
                self._release(slot, v)

    def record(self, v: Version, seconds: float, error: bool) -> None:
        """An answered request, for probation."""
        v.stats.record(seconds, error)

    # -- the pipeline

    def refresh(self, name: str, force: bool = False) -> dict[str, Any]:
        """Check the source now and go through the pipeline if it changed (blocking).

        ``force`` retries a digest refused before. Returns the slot's status.
        """
        slot = self.slot(name)
        slot.enabled = True
        self._refresh(slot, force=force)
        return slot.status()

    def _refresh(self, slot: ModelSlot, force: bool = False) -> None:
        if not slot.load_lock.acquire(blocking=force):
            return
        try:
            self._pipeline(slot, force)
        finally:
            slot.load_lock.release()

    def _fail(
        self, slot: ModelSlot, stage: str, digest: str | None, error: BaseException, started: float
    ) -> None:
        text = (
            error.one_line()[:500]
            if isinstance(error, BundleError)
            else f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        )
        failure = {"stage": stage, "digest": digest, "error": text, "time": time.time()}
        slot.last_failure = failure
        slot.last_error = error
        slot.events.append({"event": "refused", **failure})
        if digest is not None:
            slot.refused[digest] = f"{stage}: {text}"
        if slot.current is None and slot.state != "unloaded":
            slot.state = "unavailable"
        self.metrics.swap_failures.labels(slot.name, stage).inc()
        cur = slot.current
        keeping = f"kept v{cur.version} {cur.digest[:19]} serving" if cur else "nothing serving"
        log.warning(
            "model %s: %s; refused %s at %s (%.2f s): %s",
            slot.name,
            keeping,
            (digest or "?")[:19],
            stage,
            time.monotonic() - started,
            text,
        )

    def _pipeline(self, slot: ModelSlot, force: bool) -> None:
        started = time.monotonic()
        try:
            candidate = slot.source.current()
        except Exception as e:  # a source's own failure (I/O, store records): reported
            self._fail(slot, "resolve", None, e, started)
            return
        cur = slot.current
        if cur is not None and candidate.digest == cur.digest:
            return
        if candidate.digest in slot.refused and not force:
            return
        stage = "load"
        try:
            model = candidate.load(session_options(self.options.threads))
            if model.manifest.model.name != slot.name and slot.current is None and not slot.loaded:
                log.info(
                    "model %s: the bundle names itself %r", slot.name, model.manifest.model.name
                )
            stage = "preflight"
            for check in self.options.preflight:
                check(model)
            stage = "smoke"
            smoke = self._smoke(model)
        except Exception as e:  # every refusal is reported the same way; nothing goes live
            self._fail(slot, stage, candidate.digest, e, started)
            return
        new = Version(slot.name, model, candidate, smoke)
        self._swap(slot, new, time.monotonic() - started)

    def _smoke(self, model: Model) -> str:
        result = model.self_test(timeout=self.options.request_timeout)
        if result is not None:
            return f"passed: {result.rows} signed smoke row(s) reproduced"
        if not self.options.canary:
            return "not run (no smoke vectors in the bundle; canary off)"
        model.run(_canary_input(model), timeout=self.options.request_timeout)
        return "no smoke vectors in the bundle; a one-row canary ran"

    def _swap(self, slot: ModelSlot, new: Version, took: float) -> None:
        policy = self.options.probation
        with slot.lock:
            if not slot.enabled:  # unloaded while this version was being built
                new.retired = True
                discard = True
            else:
                discard = False
                old = slot.current
                dropped = slot.standby
                slot.current = new
                slot.loaded.add(new)
                slot.standby = old if (policy is not None and old is not None) else None
                slot.probation = (
                    Probation(time.monotonic() + policy.window, old.stats.snapshot(recent=True))
                    if (policy is not None and old is not None)
                    else None
                )
                slot.state = "probation" if slot.probation else "ready"
                if old is not None:
                    old.retired = True
        if discard:
            self._release(slot, new)
            log.info(
                "model %s: v%s %s was built after an unload; discarded",
                slot.name,
                new.version,
                new.digest[:19],
            )
            return
        if dropped is not None and dropped is not old:
            self._retire(slot, dropped)
        if old is not None and slot.standby is None:
            self._retire(slot, old)
        slot.last_failure = None
        self.metrics.swaps.labels(slot.name).inc()
        self.metrics.serving(slot.name, old, new)
        signed = ", ".join(s["key_id"][:16] for s in new.signers) or "UNSIGNED (allowed)"
        was = f"v{old.version} {old.digest[:19]}" if old else "nothing"
        slot.events.append(
            {
                "event": "live",
                "digest": new.digest,
                "version": new.version,
                "time": time.time(),
                "replaced": old.digest if old else None,
            }
        )
        log.info(
            "model %s: %s -> v%s %s live after %.2f s (signed by %s; smoke %s)%s",
            slot.name,
            was,
            new.version,
            new.digest[:19],
            took,
            signed,
            new.smoke,
            "; on probation" if slot.probation else "",
        )
        self._count_loaded(slot)

    def _retire(self, slot: ModelSlot, v: Version) -> None:
        """No new request on ``v``; release it now if none is running."""
        with slot.lock:
            v.retired = True
            free = v.refs == 0 and v is not slot.standby and v is not slot.current
        if free:
            self._release(slot, v)

    def _release(self, slot: ModelSlot, v: Version) -> None:
        if v.released.is_set():
            return
        v.model = None  # the session and its weights go with the last reference
        v.released.set()
        slot.loaded.discard(v)
        self._count_loaded(slot)

    def _count_loaded(self, slot: ModelSlot) -> None:
        self.metrics.retained.labels(slot.name).set(len(slot.loaded))

    # -- probation

    def _judge(self, slot: ModelSlot) -> None:
        policy = self.options.probation
        prob = slot.probation
        if policy is None or prob is None:
            return
        with slot.lock:
            new, old = slot.current, slot.standby
        if new is None or old is None:
            return
        why = judge(policy, new.stats.snapshot(), prob.baseline)
        if why is not None:
            self._rollback(slot, new, old, why)
        elif time.monotonic() >= prob.until:
            with slot.lock:
                if slot.probation is not prob:
                    return
                slot.probation = None
                slot.standby = None
                slot.state = "ready"
            slot.events.append(
                {
                    "event": "probation passed",
                    "digest": new.digest,
                    "version": new.version,
                    "time": time.time(),
                }
            )
            log.info(
                "model %s: v%s %s passed probation; v%s %s released",
                slot.name,
                new.version,
                new.digest[:19],
                old.version,
                old.digest[:19],
            )
            self._retire(slot, old)

    def _rollback(self, slot: ModelSlot, bad: Version, good: Version, why: str) -> None:
        with slot.lock:
            if slot.current is not bad:
                return
            slot.current = good
            good.retired = False
            slot.standby = None
            slot.probation = None
            slot.state = "ready"
            bad.retired = True
        slot.refused[bad.digest] = f"probation: {why}"
        self.metrics.rollbacks.labels(slot.name).inc()
        self.metrics.serving(slot.name, bad, good)
        self._retire(slot, bad)
        try:
            recorded = slot.source.rollback(good.digest, why)
        except Exception as e:  # the rollback here stands even if the source cannot record it
            recorded = f"the source could not record the rollback: {type(e).__name__}: {e}"
        slot.last_failure = {
            "stage": "probation",
            "digest": bad.digest,
            "error": why,
            "time": time.time(),
            "rollback": recorded,
        }
        slot.events.append(
            {
                "event": "rolled back",
                "digest": bad.digest,
                "version": bad.version,
                "to": good.digest,
                "reason": why,
                "rollback": recorded,
                "time": time.time(),
            }
        )
        log.warning(
            "model %s: rolled back v%s %s -> v%s %s: %s; %s",
            slot.name,
            bad.version,
            bad.digest[:19],
            good.version,
            good.digest[:19],
            why,
            recorded,
        )

    # -- repository

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (running requests finish) and stop polling it."""
        slot = self.slot(name)
        slot.enabled = False
        with slot.lock:
            versions = [v for v in (slot.current, slot.standby) if v is not None]
            old = slot.current
            slot.current = slot.standby = None
            slot.probation = None
            slot.state = "unloaded"
        self.metrics.serving(name, old, None)
        slot.events.append({"event": "unloaded", "time": time.time()})
        log.info("model %s: unloaded", name)
        for v in versions:
            self._retire(slot, v)

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index: name, version, state, reason."""
        out = []
        for slot in self.slots.values():
            cur = slot.current
            state = (
                "READY"
                if cur is not None
                else ("UNAVAILABLE" if slot.state != "loading" else "LOADING")
            )
            if slot.state == "unloaded":
                state = "UNAVAILABLE"
            if ready_only and state != "READY":
                continue
            reason = slot.last_failure["error"] if slot.last_failure else ""
            out.append(
                {
                    "name": slot.name,
                    "version": cur.version if cur else "",
                    "state": state,
                    "reason": reason,
                }
            )
        return out
