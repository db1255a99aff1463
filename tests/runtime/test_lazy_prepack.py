"""Lazy prepacking: load answers with a session over the verified buffer as it is, and
a prepacked session replaces it when built (bundle.runtime.session.Deferred)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from helpers import save_tiny

import bundle
from bundle.runtime import session as rt_session

X = np.arange(20, dtype=np.float32).reshape(5, 4) / 7


def _packing(model: bundle.Model) -> str:
    """The session's own setting: "1" = prepacking disabled (runs on the buffer)."""
    opts = model._session.get_session_options()
    return str(opts.get_session_config_entry("session.disable_prepacking"))


@pytest.fixture
def tiny(tmp_path: Path, signing_key: bundle.PrivateKey) -> Path:
    return save_tiny(tmp_path / "tiny.mbundle", signing_key)


def test_first_session_is_unpacked_then_the_prepacked_one_takes_over(
    tiny: Path, signing_key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    build = rt_session.Deferred.build

    def held(self: rt_session.Deferred) -> Any:
        assert gate.wait(60)
        return build(self)

    monkeypatch.setattr(rt_session.Deferred, "build", held)
    m = bundle.load(tiny, trusted_keys=signing_key.public_key, device="cpu")
    try:
        assert not m.wait_prepacked(0.05)  # held: still on the verified buffer
        assert _packing(m) == "1"
        before = m.predict(X)
        first = m._session
    finally:
        gate.set()
    assert m.wait_prepacked(60)
    assert _packing(m) == "0"
    assert m._session is not first
    # the unpacked session keeps its buffer for as long as anything still holds it
    assert getattr(first, "model_bundle_weights", None) is not None
    np.testing.assert_array_equal(m.predict(X), before)
    eager = bundle.load(tiny, trusted_keys=signing_key.public_key, device="cpu", prepack=True)
    np.testing.assert_allclose(eager.predict(X), before, rtol=1e-6)


@pytest.mark.parametrize(
    "kw", [{"prepack": False}, {"prepack": True}, {"session_options": "given"}, {"zero_copy": True}]
)
def test_nothing_is_deferred_when_the_caller_decided(
    tiny: Path, signing_key: bundle.PrivateKey, kw: dict[str, Any]
) -> None:
    """An explicit prepack, the caller's own session options (which cannot be copied
    into a second session) or a mapped file: one session, built as asked."""
    if kw.get("session_options") == "given":
        kw = {"session_options": ort.SessionOptions()}
    m = bundle.load(tiny, trusted_keys=signing_key.public_key, device="cpu", **kw)
    assert m._prepacking is None
    assert m.wait_prepacked(0)
    assert _packing(m) == ("1" if kw.get("prepack") is False else "0")


def test_a_failed_build_leaves_the_unpacked_session_serving(
    tiny: Path, signing_key: bundle.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: rt_session.Deferred) -> Any:
        raise MemoryError("no room for a second copy")

    monkeypatch.setattr(rt_session.Deferred, "build", fail)
    m = bundle.load(tiny, trusted_keys=signing_key.public_key, device="cpu")
    assert m.wait_prepacked(60)
    assert _packing(m) == "1"
    assert m.predict(X).shape == (5, 3)
