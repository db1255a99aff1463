"""SHA-256 throughput: one core with hashlib vs the bundle's parallel shard hasher.

    python benchmarks/hash_throughput.py [--mib 1024] [--runs 5] [--json out.json]

On a file of ``--mib`` MiB held in the page cache (the disk out of the picture,
as for a bundle just written or read before), for each candidate shard size,
each run measures back to back -- so that a busy machine slows both alike --

* one thread reading the file through ``bundle.format.digest.hash_ranges`` (pread,
  SHA-256 and CRC-32, one shard),
* all cores: ``hash_ranges`` over the file cut at the shard size (what
  verification does),

and reports medians of the rates and of the per-run speedups, the process CPU
time per GB (the work done, whatever else runs), and a 100 MB entry. The
target is 0.9 x cores x single-core hashlib. First, the machine itself is
measured: single-core hashlib and what two-plus threads of pure in-memory
hashlib get -- on a shared machine that, not the code, bounds any speedup.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bundle.format import digest

MIB = 1 << 20


def _hashlib(data: memoryview) -> None:
    h = hashlib.sha256()
    for i in range(0, len(data), MIB):
        h.update(data[i : i + MIB])
    h.digest()


def machine(runs: int, cores: int, mib: int = 128) -> tuple[float, float]:
    """Single-core hashlib GB/s, and the median speedup of ``cores`` threads of it."""
    data = memoryview(os.urandom(mib * MIB))
    rates, speedups = [], []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(cores):
            _hashlib(data)
        one = time.perf_counter() - t
        threads = [threading.Thread(target=_hashlib, args=(data,)) for _ in range(cores)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        par = time.perf_counter() - t
        rates.append(cores * len(data) / one / 1e9)
        speedups.append(one / par)
    return statistics.median(rates), statistics.median(speedups)


def _timed(fd: int, spans: list[tuple[int, int]], workers: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    digest.hash_ranges(fd, spans, workers=workers)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cores = args.workers
    one, avail = machine(args.runs, cores)
    target = 0.9 * cores * one
    print(
        f"cores {cores}; single-core hashlib SHA-256 {one:.3f} GB/s; {cores} threads of "
        f"in-memory hashlib run {avail:.2f}x one (what this machine lends now); target "
        f"0.9 x cores x single = {target:.3f} GB/s; medians of {args.runs}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    out: dict[str, Any] = {
        "cores": cores,
        "single_core_gbps": one,
        "machine_speedup": avail,
        "target_gbps": target,
        "runs": args.runs,
        "file_mib": args.mib,
        "shards": {},
    }
    size = args.mib * MIB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        fd = os.open(path, os.O_RDONLY)
        try:
            digest.hash_ranges(fd, [(0, size)], workers=1)  # warm the page cache
            for shard_mib in (4, 16, 64, 256):
                spans = digest.shard_spans(size, shard_mib * MIB)
                r100 = digest.shard_spans(100_000_000, shard_mib * MIB)
                rows = []
                for _ in range(args.runs):
                    w1, c1 = _timed(fd, [(0, size)], 1)
                    wp, cp = _timed(fd, spans, cores)
                    w100, _ = _timed(fd, r100, cores)
                    rows.append(
                        (size / w1 / 1e9, size / wp / 1e9, w1 / wp, c1, cp, 1e8 / w100 / 1e9)
                    )
                med = [statistics.median(r[i] for r in rows) for i in range(6)]
                g1, gp, sp, c1, cp, g100 = med
                print(
                    f"shard {shard_mib:4d} MiB: one thread {g1:.3f} GB/s; {cores} threads "
                    f"{gp:.3f} GB/s = {sp:.2f}x one thread = {gp / target:.2f} x target; CPU "
                    f"{cp / (size / 1e9):.2f} s/GB vs {c1 / (size / 1e9):.2f} one thread; "
                    f"100 MB entry: {len(r100)} shard(s), {g100:.3f} GB/s; load average "
                    f"{os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                out["shards"][shard_mib] = {
                    "one_thread_gbps": g1,
                    "parallel_gbps": gp,
                    "speedup": sp,
                    "vs_target": gp / target,
                    "cpu_s_per_gb": cp / (size / 1e9),
                    "one_thread_cpu_s_per_gb": c1 / (size / 1e9),
                    "entry100_shards": len(r100),
                    "entry100_gbps": g100,
                }
        finally:
            os.close(fd)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
