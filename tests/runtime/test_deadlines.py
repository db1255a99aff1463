"""Run deadlines share one watchdog thread: a late run is stopped, the others are not."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import save_tiny, spin_model

import bundle


def test_one_run_past_its_deadline_stops_while_concurrent_runs_finish(tmp_path: Path) -> None:
    bundle.save(spin_model(), tmp_path / "spin.mbundle", name="spin")
    spin = bundle.load(tmp_path / "spin.mbundle", allow_unsigned=True)
    tiny = bundle.load(save_tiny(tmp_path / "tiny.mbundle"), allow_unsigned=True)
    x = np.ones((2, 4), np.float32)
    want = tiny.run({"X": x})["Y"]
    failures: list[BaseException] = []

    def steady() -> None:
        try:
            for _ in range(200):
                np.testing.assert_array_equal(tiny.run({"X": x}, timeout=30)["Y"], want)
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=steady) for _ in range(4)]
    for t in threads:
        t.start()
    with pytest.raises(bundle.RunTimeoutError, match=r"within 0\.2 s"):
        spin.run({"N": np.array([2**60])}, timeout=0.2)
    for t in threads:
        t.join(60)
    assert failures == []
    # the watchdog goes on serving later deadlines
    with pytest.raises(bundle.RunTimeoutError):
        spin.run({"N": np.array([2**60])}, timeout=0.1)
    assert spin.run({"N": np.array([3])}, timeout=5)["Y"].tolist() == [3.0]
