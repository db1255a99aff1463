"""Migration figures: scan throughput, migrate vs joblib.load + bundle.save, the corpus table.

    python benchmarks/migrate.py [--torch-mb 1024] [--joblib-mb 100] [--runs 3]
    (from a checkout: PYTHONPATH=. so that `import bundle` is this tree)

* scan throughput on a ``--torch-mb`` torch checkpoint (a state_dict of float32
  tensors, torch.save zip) and on a ``--joblib-mb`` joblib RandomForest, in MB/s,
  beside single-core hashlib SHA-256 on the same bytes (the scan hashes the file,
  so SHA-256 is its ceiling) -- medians of ``--runs``, file in the page cache;
* ``bundle.migrate`` (scan, sandboxed child: restricted unpickle, export, parity;
  verify, sign) against what users do without it: ``joblib.load`` + ``bundle.save``
  (unpickling in-process, no approval), on the same RandomForest, as a ratio;
* the malicious corpus of tests/legacy: case, listed by the scan?, executed by
  scan or migrate? (a sentinel file the payload would create).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bundle

HERE = Path(__file__).resolve().parent


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sha256_rate(path: Path, runs: int) -> float:
    size = path.stat().st_size

    def go() -> None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)

    return size / median_time(go, runs) / 1e6


def torch_checkpoint(path: Path, mb: int) -> None:
    import torch

    n = max(1, mb // 64)
    state = {f"layer{i}.weight": torch.randn(4096, 4096) for i in range(n)}  # 64 MiB each
    torch.save(state, path)


def forest(path: Path, mb: int) -> tuple[object, np.ndarray]:
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 8)).astype(np.float32)
    y = rng.integers(0, 2, 20000)  # random labels: deep trees, many nodes
    trees = 4
    clf = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(x, y)
    joblib.dump(clf, path)
    per_tree = path.stat().st_size / trees
    trees = max(1, int(mb * 1e6 / per_tree))
    clf = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(x, y)
    joblib.dump(clf, path)
    return clf, x[:50]


def corpus_table(tmp: Path) -> list[tuple[str, bool, bool]]:
    sys.path.insert(0, str(HERE.parent / "tests" / "migrate"))
    from corpus import CASES, write

    rows = []
    for case in CASES:
        path, sentinel = write(case, tmp)
        report = bundle.scan(path)
        listed = (
            (case.target in report.dangerous) if case.target else report.verdict == "unscannable"
        )
        with contextlib.suppress(bundle.ApprovalError):
            bundle.migrate(
                path,
                tmp / "out.mbundle",
                approve=[f.target for f in report.findings],
                sample_input=np.zeros((1, 4), np.float32),
            )
        rows.append((case.name, listed, sentinel.exists()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-mb", type=int, default=1024)
    ap.add_argument("--joblib-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
        f"model-bundle {bundle.__version__}"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = tmp / "big.pt"
        torch_checkpoint(ckpt, args.torch_mb)
        rf = tmp / "rf.joblib"
        _, sample = forest(rf, args.joblib_mb)

        print("\n| file | size MB | scan MB/s | SHA-256 MB/s (1 core) | scan / SHA-256 | verdict |")
        print("|---|---:|---:|---:|---:|---|")
        for path in (ckpt, rf):
            size = path.stat().st_size
            bundle.scan(path)  # page cache warm
            t = median_time(lambda p=path: bundle.scan(p), args.runs)
            sha = sha256_rate(path, args.runs)
            rate = size / t / 1e6
            print(
                f"| {path.name} | {size / 1e6:.0f} | {rate:.0f} | {sha:.0f} | "
                f"{rate / sha:.2f} | {bundle.scan(path).verdict} |"
            )

        import joblib

        approve = bundle.scan(rf).needs_approval

        def with_migrate() -> None:
            bundle.migrate(rf, tmp / "m.mbundle", approve=approve, sample_input=sample)

        def with_joblib() -> None:
            bundle.save(joblib.load(rf), tmp / "j.mbundle", sample_input=sample)

        runs = max(1, min(args.runs, 3))
        tm = median_time(with_migrate, runs)
        tj = median_time(with_joblib, runs)
        print(
            f"\nmigrate vs joblib.load + bundle.save ({rf.stat().st_size / 1e6:.0f} MB "
            f"RandomForest, median of {runs}): {tm:.1f} s vs {tj:.1f} s = {tm / tj:.2f}x"
        )

        print("\n| case | listed by scan? | executed? |")
        print("|---|---|---|")
        for name, listed, ran in corpus_table(tmp):
            print(f"| {name} | {'yes' if listed else 'NO'} | {'YES' if ran else 'no'} |")


if __name__ == "__main__":
    main()
