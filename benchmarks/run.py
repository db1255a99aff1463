"""Benchmark suite (issue 6): model-bundle side by side with what users use today.

    .venv/bin/python benchmarks/run.py            # everything, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run.py --quick    # 3 runs per median, no 1 GB model, no write
    .venv/bin/python benchmarks/run.py --only torch100,signing

Models: small scikit-learn pipeline, RandomForest(200), torch MLP ~100 MB, Keras
MLP ~100 MB, torch MLP ~1 GB. Formats: joblib, pickle, skops, torch.save /
torch.load, safetensors, keras ``.keras``, raw onnxruntime, OpenSSF
model_signing (sign/verify of the same weights) and model-bundle. Prints a
markdown table per model (medians, ratios to the baseline), the verify/sign
table and every target (issue 19's table, and issue 6's still meaningful) with its
ratio and PASS/MISS; hashlib's single-core SHA-256 speed and whether the CPU has SHA
extensions are printed beside every throughput. All files live in
one temporary directory, removed at the end. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything can import TensorFlow

from suite import cases, machine, models, report, results, signing

NAMES = {
    "pipeline": "small sklearn pipeline (StandardScaler + LogisticRegression)",
    "forest": "RandomForest(200)",
    "torch100": "torch MLP ~100 MB",
    "keras100": "Keras MLP ~100 MB",
    "torch1g": "torch MLP ~1 GB",
}
STEPS = (*NAMES, "signing", "imports")
SECTION = "Benchmark suite (issue 6)"
PACKAGES = (
    "numpy",
    "scikit-learn",
    "skl2onnx",
    "joblib",
    "skops",
    "onnx",
    "onnxruntime-gpu",
    "safetensors",
    "torch",
    "tensorflow",
    "keras",
    "cryptography",
)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="3 runs per median, 1 save each, skip the 1 GB model; no RESULTS.md",
    )
    ap.add_argument(
        "--only", default="", help=f"comma-separated steps to run, of: {', '.join(STEPS)}"
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="fresh processes per cold-start median (default 5, quick 3)",
    )
    ap.add_argument(
        "--write", action="store_true", help="write RESULTS.md even with --quick/--only"
    )
    ap.add_argument("--no-write", action="store_true", help="never write RESULTS.md")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    args.steps = only or [s for s in STEPS if not (args.quick and s == "torch1g")]
    args.runs = args.runs or (3 if args.quick else 5)
    return args


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _measure(
    args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, cases.Result], dict[str, signing.SignResult], float, dict[str, float]]:
    import bundle

    key = bundle.generate_key()
    key_path, pub_path = key.save(tmp / "me")
    ctx = cases.Ctx(
        tmp=tmp,
        runs=args.runs,
        save_runs=1 if args.quick else 3,
        key=key,
        key_path=Path(key_path),
        pub_path=Path(pub_path),
        log=_log,
    )
    by_model: dict[str, cases.Result] = {}
    runners = {
        "pipeline": lambda n: cases.sklearn_case(ctx, n, models.sklearn_pipeline()),
        "forest": lambda n: cases.sklearn_case(ctx, n, models.random_forest()),
        "torch100": lambda n: cases.torch_case(ctx, n, models.MLP_100MB),
        "keras100": lambda n: cases.keras_case(ctx, n, models.MLP_100MB),
        "torch1g": lambda n: cases.torch_case(ctx, n, models.MLP_1GB, big=True),
    }
    for step, name in NAMES.items():
        if step in args.steps:
            _log(f"{name}")
            try:
                by_model[name] = runners[step](name)
            except Exception as e:  # report the step as failed, measure the rest
                _log(f"  FAILED: {type(e).__name__}: {e}")
                by_model[name] = cases.Result(
                    name, baseline="", notes=[f"step failed: {type(e).__name__}: {e}"]
                )
    signs: dict[str, signing.SignResult] = {}
    _log("hashlib single-core SHA-256")
    rate = signing.hashlib_rate()
    if "signing" in args.steps:
        oms = signing.oms_cli(_log)
        for step in ("torch100", "torch1g"):
            art = ctx.artifacts.get(NAMES[step])
            if art is None:
                continue
            try:
                signs[NAMES[step]] = signing.measure(
                    NAMES[step],
                    art["bundle"],
                    art["weights_dir"],
                    key_path=ctx.key_path,
                    pub_path=ctx.pub_path,
                    runs=args.runs,
                    oms=oms,
                    tmp=tmp,
                    log=_log,
                )
            except Exception as e:  # report, keep going
                _log(f"  signing {step} FAILED: {type(e).__name__}: {e}")
        if not signs:
            _log("signing: no torch bundle measured in this run (add torch100 to --only)")
    imports = {}
    if "imports" in args.steps:
        _log("import costs")
        imports = cases.import_costs(ctx)
    return by_model, signs, rate, imports


def main() -> None:
    args = _args()
    # what pip does on install: every format's children then load bytecode alike
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "bundle"), quiet=1)
    started, others = time.perf_counter(), machine.OtherLoad()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as d:
        by_model, signs, rate, imports = _measure(args, Path(d))
    elapsed = time.perf_counter() - started
    cores = machine.cores()
    items = report.targets(by_model, signs, rate, cores, NAMES, imports)
    parts = [report.model_table(r) for r in by_model.values()]
    if signs:
        parts.append(
            "### Verify and sign\n\n" + report.signing_table(list(signs.values()), rate, cores)
        )
    if imports:
        parts.append("### Import cost\n\n" + report.imports_table(imports))
    parts.append("### Targets\n\n" + report.targets_table(items))
    body = "\n\n".join(parts)
    print(body)
    verdicts = [t.verdict for t in items]
    print(
        f"\n{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, "
        f"{verdicts.count('tie')} tie, {verdicts.count('n/a')} n/a; {elapsed / 60:.1f} min",
        file=sys.stderr,
    )
    write = args.write or not (args.quick or args.only)
    if not write or args.no_write:
        return
    cmd = (
        "python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    header = "\n".join(
        [
            f"`{cmd}` — measured {time.strftime('%Y-%m-%d %H:%M %Z')}, took "
            f"{elapsed / 60:.1f} min.",
            "",
            *machine.describe(PACKAGES),
            others.note(),
            f"- Medians of {args.runs} fresh processes per cold start (round-robin across formats)"
            f" and of {1 if args.quick else 3} saves; warm page cache (files just written);"
            " every package imports from compiled bytecode (model-bundle's sources are compiled"
            " first, as pip does on install).",
            "- Cold start = from just before the child process is spawned to the moment its first"
            " prediction (1 row) returns; peak RSS = the child's VmHWM then. model-bundle loads "
            "verify the signature and every byte first (`bundle.load(path, trusted_keys=pub, "
            "device='cpu')`: everything runs on the CPU). Predict latency: in-process, medians, "
            "timed round-robin across the formats of a model, every side with the same intra-op "
            "thread count and onnxruntime's thread spinning off (raw session and bundle alike); "
            "a ratio inside the noise is reported as a tie. The breakdown column gives, from "
            "the same spawn, when the format's own imports were done and when the model was "
            "loaded (model-bundle imports onnx/onnxruntime lazily inside `bundle.load`, so they "
            "count as loading there; unpickling imports scikit-learn's modules the same way).",
        ]
    )
    results.write_section(SECTION, header + "\n\n" + body)
    _log(f"written to {results.RESULTS}")


if __name__ == "__main__":
    main()
