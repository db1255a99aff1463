"""The store source: against a test double of ``bundle.Store`` and against the real one.

FakeStore implements the four methods StoreSource uses -- resolve, load, history,
rollback -- over real signed bundle files verified by ``bundle.load``, and lets a test
write an untrusted promotion the real store would refuse; the last test runs the same
flow on ``bundle.Store`` over a folder (signed, hash-chained alias records).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_helpers import Bundles, Running, model_graph

import bundle
from bundle.serve import ProbationPolicy, ServeOptions, StoreSource, create_app
from bundle.serve.sources import file_digest

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": np.ones(8).tolist()}]}


@dataclass(frozen=True)
class Ref:
    name: str
    alias: str
    digest: str
    version: str
    seq: int


class FakeStore:
    """Blobs by digest and an append-only alias log, loaded through bundle.load."""

    url = "fake://store"

    def __init__(self, trust: bundle.TrustPolicy) -> None:
        self.trust = trust
        self.blobs: dict[str, Path] = {}
        self.log: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def promote(self, name: str, alias: str, path: Path, version: str) -> str:
        digest = file_digest(path)
        self.blobs[digest] = path
        log = self.log.setdefault((name, alias), [])
        log.append(
            {
                "seq": len(log) + 1,
                "action": "promote",
                "digest": digest,
                "version": version,
                "signer": "release-key",
            }
        )
        return digest

    def resolve(self, spec: str) -> Ref:
        name, alias = spec.split("@")
        last = self.log[(name, alias)][-1]
        return Ref(name, alias, last["digest"], last["version"], last["seq"])

    def load(self, digest: str, **kw: Any) -> bundle.Model:
        return bundle.load(self.blobs[digest], trust=self.trust, **kw)

    def history(self, name: str, alias: str) -> list[dict[str, Any]]:
        return list(reversed(self.log[(name, alias)]))

    def rollback(self, name: str, alias: str, *, signing_key: Any) -> None:
        log = self.log[(name, alias)]
        current = log[-1]["digest"]
        previous = next(r for r in reversed(log) if r["digest"] != current)
        log.append(
            {
                "seq": len(log) + 1,
                "action": "rollback",
                "digest": previous["digest"],
                "version": previous["version"],
                "signer": signing_key.key_id[:16],
            }
        )


def flaky(bundles: Bundles, tmp_path: Path) -> Path:
    """Signed and loadable; passes the one-row smoke test; fails on two rows."""
    path = tmp_path / "flaky.mbundle"
    bundle.save(
        model_graph(5, reshape_to=3), path, signing_key=bundles.key, name="tiny", version="5"
    )
    return path


def drive_into_rollback(c: httpx.Client, store: FakeStore, path: Path) -> None:
    store.promote("tiny", "prod", path, "5")
    deadline = time.monotonic() + 60
    while c.get("/v2/models/tiny/status").json()["current"]["version"] != "5":
        assert time.monotonic() < deadline, "the new alias target never went live"
        time.sleep(0.02)
    # bounded in time and count: the probation judge runs beside the requests
    deadline = time.monotonic() + 30
    for _ in range(5000):
        if c.post("/v2/models/tiny/infer", json=BODY).headers["x-model-version"] == "1":
            return
        if time.monotonic() > deadline:
            break
    raise AssertionError("no rollback")


def test_alias_changes_are_followed_and_a_rollback_is_signed_into_the_store(
    bundles: Bundles, tmp_path: Path
) -> None:
    store = FakeStore(bundles.trust)
    store.promote("tiny", "prod", bundles.good[1], "1")
    source = StoreSource(store, "tiny@prod", signing_key=bundles.key, poll_interval=0.05)
    app = create_app(
        source, options=ServeOptions(probation=ProbationPolicy(window=60, min_requests=10))
    )
    with Running(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v2/models/tiny/infer", json=BODY).headers["x-model-version"] == "1"
        # an untrusted promotion is refused, version 1 serves on
        store.promote("tiny", "prod", bundles.untrusted, "8")
        deadline = time.monotonic() + 60
        while (c.get("/v2/models/tiny/status").json()["last_failure"] or {}).get("stage") != "load":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.post("/v2/models/tiny/infer", json=BODY).headers["x-model-version"] == "1"
        store.promote("tiny", "prod", bundles.good[1], "1")
        drive_into_rollback(c, store, flaky(bundles, tmp_path))
        last = store.log[("tiny", "prod")][-1]
        assert last["action"] == "rollback"
        assert last["digest"] == file_digest(bundles.good[1])
        assert last["signer"] == bundles.key.key_id[:16]
        status = c.get("/v2/models/tiny/status").json()
        assert "signed rollback record appended to tiny@prod" in status["last_failure"]["rollback"]
        page = c.get("/").text
        assert "rollback" in page  # the alias history is on the page
        assert "release-key" in page


def test_without_a_key_the_rollback_is_reported_and_the_store_left_alone(
    bundles: Bundles, tmp_path: Path
) -> None:
    store = FakeStore(bundles.trust)
    store.promote("tiny", "prod", bundles.good[1], "1")
    app = create_app(
        StoreSource(store, "tiny@prod", poll_interval=0.05),
        options=ServeOptions(probation=ProbationPolicy(window=60, min_requests=10)),
    )
    with Running(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        drive_into_rollback(c, store, flaky(bundles, tmp_path))
        assert store.log[("tiny", "prod")][-1]["action"] == "promote"
        status = c.get("/v2/models/tiny/status").json()
        assert "in this server only: no signing key" in status["last_failure"]["rollback"]
        time.sleep(0.3)  # polls see the same rejected digest: not loaded again
        assert c.post("/v2/models/tiny/infer", json=BODY).headers["x-model-version"] == "1"


def test_a_real_store_alias_is_served_followed_and_rolled_back_with_a_signed_record(
    bundles: Bundles, tmp_path: Path
) -> None:
    """The same flow against bundle.Store on a folder: signed alias records, verified."""
    store = bundle.Store(tmp_path / "store", trust=bundles.trust, cache_dir=tmp_path / "cache")
    for path in (bundles.good[1], bundles.good[2]):
        store.push(path)
    store.promote("tiny", "prod", "1", signing_key=bundles.key)
    source = StoreSource(store, "tiny@prod", signing_key=bundles.key, poll_interval=0.05)
    app = create_app(
        source, options=ServeOptions(probation=ProbationPolicy(window=60, min_requests=10))
    )
    with Running(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v2/models/tiny/infer", json=BODY)
        assert r.headers["x-model-version"] == "1"
        assert r.headers["x-model-digest"] == store.resolve("tiny@prod").digest
        store.promote("tiny", "prod", "2", signing_key=bundles.key)
        deadline = time.monotonic() + 60
        while c.get("/v2/models/tiny/status").json()["current"]["version"] != "2":
            assert time.monotonic() < deadline, "the promotion never went live"
            time.sleep(0.02)
        # a version whose requests fail: probation rolls back, and the store records it
        store.push(flaky(bundles, tmp_path))
        store.promote("tiny", "prod", "5", signing_key=bundles.key)
        deadline = time.monotonic() + 60
        while c.get("/v2/models/tiny/status").json()["current"]["version"] != "5":
            assert time.monotonic() < deadline, "version 5 never went live"
            time.sleep(0.02)
        while c.post("/v2/models/tiny/infer", json=BODY).headers["x-model-version"] != "2":
            assert time.monotonic() < deadline + 30, "no rollback"
        # the server swaps back first, then appends the signed record: wait for its report
        while not (c.get("/v2/models/tiny/status").json()["last_failure"] or {}).get("rollback"):
            assert time.monotonic() < deadline + 60, "the rollback was never reported"
            time.sleep(0.02)
        status = c.get("/v2/models/tiny/status").json()
        assert "signed rollback record appended" in status["last_failure"]["rollback"]
        history = store.history("tiny", "prod")
        assert [h.action for h in history][-1] == "rollback"
        assert history[-1].target.version == "2"
        assert store.resolve("tiny@prod").version == "2"
