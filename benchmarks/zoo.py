"""The coverage zoo in one command: build every case of tests/zoo/cases.py from the
libraries' own constructors (nothing downloaded), save, load, compare, and print the
table by family -- cases, ok, refused with a clear reason, mismatch, crash, n/a.

    python benchmarks/zoo.py                      # everything (tens of minutes on 2 cores)
    python benchmarks/zoo.py --family keras --family huggingface
    python benchmarks/zoo.py --out benchmarks/ZOO.md   # also write the table and details

Needs the ``zoo`` extra (scikit-learn, XGBoost/LightGBM, torch, transformers, timm +
torchvision, TensorFlow/Keras); a family whose library is missing reports n/a.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _cases_module() -> Any:
    """tests/zoo/cases.py, by path: ``import zoo`` here would find this very script."""
    path = Path(__file__).resolve().parents[1] / "tests" / "zoo" / "cases.py"
    spec = importlib.util.spec_from_file_location("zoo_cases", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zoo_cases"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


_cases = _cases_module()
FAMILIES, Result, all_cases, run_case = (
    _cases.FAMILIES,
    _cases.Result,
    _cases.all_cases,
    _cases.run_case,
)

STATUSES = ("ok", "refused", "mismatch", "crash", "n/a")


def table(results: list[Any]) -> str:
    """The coverage table by family, markdown."""
    lines = [
        "| family | cases | ok | refused (clear reason) | mismatch | crash | n/a | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_family: dict[str, list[Any]] = {}
    for r in results:
        by_family.setdefault(r.family, []).append(r)
    for fam, rs in [*by_family.items(), ("total", results)]:
        c = Counter(r.status for r in rs)
        counted = len(rs) - c["n/a"]
        lines.append(
            f"| {fam} | {counted} | {c['ok']} | {c['refused']} | {c['mismatch']} | "
            f"{c['crash']} | {c['n/a']} | {sum(r.seconds for r in rs):.0f} |"
        )
    return "\n".join(lines)


def details(results: list[Any]) -> str:
    """Every case that is not ok, with its reason."""
    out = []
    for r in results:
        if r.status != "ok":
            out.append(f"- **{r.family} / {r.name}**: {r.status} -- {r.detail}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES))
    parser.add_argument("--name", action="append", help="only cases whose name contains this")
    parser.add_argument("--out", type=Path, help="write the table and the details here too")
    args = parser.parse_args()
    cases = all_cases(args.family)
    if args.name:
        cases = [c for c in cases if any(n in c.name for n in args.name)]
    results = []
    start = time.perf_counter()
    for i, case in enumerate(cases, 1):
        r = run_case(case)
        results.append(r)
        print(
            f"[{i}/{len(cases)}] {r.family} / {r.name}: {r.status} ({r.seconds:.1f} s)"
            + (f" -- {r.detail[:160]}" if r.detail else ""),
            flush=True,
        )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {time.perf_counter() - start:.0f} s in all"
    )
    text = (
        f"{table(results)}\n\n{machine}\n\nok: saved, loaded, and equal to the original "
        "library's own output on fresh inputs of another batch size. refused: save "
        "raised a BundleError naming why. mismatch: saved and loaded but different. "
        "crash: another exception (a bug). n/a: the library cannot build or fit it "
        f"with defaults.\n\n{details(results)}\n"
    )
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    return 1 if any(r.status in ("crash", "mismatch") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
