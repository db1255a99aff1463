"""onnxruntime threads from the CPUs the process may use: affinity, capped by a cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundle.serve.threads import available_cpus, session_options


def test_the_affinity_mask_counts_not_the_host(tmp_path: Path) -> None:
    none = tmp_path / "absent"
    assert available_cpus(none) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "cap"),
    [("max 100000", None), ("50000 100000", 1), ("150000 100000", 2), ("garbage", None)],
)
def test_a_cgroup_quota_caps_it(tmp_path: Path, cpu_max: str, cap: int | None) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(cpu_max + "\n")
    mine = len(os.sched_getaffinity(0))
    assert available_cpus(f) == (mine if cap is None else min(mine, cap))


def test_session_options_use_that_many_threads_without_spinning() -> None:
    so = session_options(3)
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options().intra_op_num_threads == available_cpus()
    with pytest.raises(ValueError, match="threads"):
        session_options(0)
