"""Markdown tables of the measurements, and each target (issue 19's table, plus the
issue-6 ones still meaningful) with its verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cases import BUNDLE, LOAD_PATH, RAW_ORT, Result
from .machine import hash_note, sha_extensions
from .signing import SignResult
from .timing import TIE_BAND, Latency, ratio_or_tie

MB = 1e6
MIB = 1 << 20


def _f(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(v * scale, spec)


def model_table(res: Result) -> str:
    """One model: a row per format, cold start also as a ratio to the baseline."""
    base = res.rows.get(res.baseline)
    base_cold = base.cold_s if base is not None else None
    lines = [
        f"### {res.model}",
        "",
        f"Ratios: cold start against **{res.baseline}**.",
        "",
        "| format | save (s) | size (MB) | cold start to 1st prediction (s) | x baseline "
        "| of which: imports done / model loaded (s) "
        "| peak RSS (MiB) | predict 1 row (ms) | predict 1000 rows (ms) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.rows.values():
        ratio = f"{r.cold_s / base_cold:.2f}x" if r.cold_s is not None and base_cold else "—"
        lines.append(
            f"| {r.impl} | {_f(r.save_s, '.3f')} | {_f(r.size, '.2f', 1 / MB)} "
            f"| {_f(r.cold_s, '.3f')} | {ratio} "
            f"| {_f(r.imported_s, '.3f')} / {_f(r.loaded_s, '.3f')} | {_f(r.rss_mib, '.0f')} "
            f"| {_f(r.p1_s, '.3f', 1e3)} | {_f(r.p1000_s, '.2f', 1e3)} | {r.note} |"
        )
    if res.notes:
        lines += ["", *[f"- {n}" for n in res.notes]]
    return "\n".join(lines)


def signing_table(results: Sequence[SignResult], hash_rate: float, cores: int) -> str:
    """Verify/sign seconds and throughput per model, beside the hashlib ceiling."""
    lines = [
        f"hashlib SHA-256 on one core: {hash_rate / 1e9:.2f} GB/s (CPU SHA extensions: "
        f"{sha_extensions()}); {cores} cores: ceiling {cores * hash_rate / 1e9:.2f} GB/s.",
        "",
        "| model (bytes hashed) | operation | median (s) | throughput (GB/s) |",
        "|---|---|---|---|",
    ]
    for res in results:
        for op, s in res.seconds.items():
            rate = "" if "start-up" in op else f"{res.nbytes / s / 1e9:.2f}"
            lines.append(f"| {res.model} ({res.nbytes / MB:.0f} MB) | {op} | {s:.3f} | {rate} |")
    notes = [n for res in results for n in res.notes]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


def imports_table(costs: dict[str, float]) -> str:
    """What each library costs a fresh interpreter: the floor under each cold start."""
    lines = [
        "Median of 3 fresh `python -c 'import ...'` runs, interpreter start included.",
        "",
        "| import | seconds |",
        "|---|---|",
    ]
    lines += [f"| {label} | {s:.3f} |" for label, s in costs.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One target: a measured ratio (or difference, ``unit``) against a limit."""

    measure: str
    target: str
    detail: str
    ratio: float | None
    limit: float
    at_least: bool = False
    tie: bool = False
    """The two sides differ by less than the run-to-run noise: neither PASS nor MISS."""
    unit: str = "x"
    """"x": a ratio; " s": a difference in seconds."""

    @property
    def verdict(self) -> str:
        """PASS / MISS, tie, or n/a when not measured in this run."""
        if self.ratio is None:
            return "n/a"
        if self.tie:
            return "tie"
        ok = self.ratio >= self.limit if self.at_least else self.ratio <= self.limit
        return "PASS" if ok else "MISS"


def _cold_ratio(res: Result | None, impl: str = BUNDLE) -> tuple[float | None, str]:
    if res is None:
        return None, "not run"
    mine, base = res.rows.get(impl), res.rows.get(res.baseline)
    if mine is None or base is None or mine.cold_s is None or base.cold_s is None:
        note = mine.note if mine is not None and mine.note else "not measured"
        return None, note
    return mine.cold_s / base.cold_s, f"{mine.cold_s:.3f} s vs {base.cold_s:.3f} s"


def targets(
    by_model: dict[str, Result],
    signs: dict[str, SignResult],
    hash_rate: float,
    cores: int,
    keys: dict[str, str],
    imports: dict[str, float] | None = None,
) -> list[Target]:
    """Every target from this run's figures (``keys`` names the models): issue 19's
    table in its order, with the issue-6 rows still meaningful beside it."""
    out = []
    for key, label, limit in (
        ("pipeline", "cold start, small sklearn pipeline", 0.20),
        ("forest", "cold start, RandomForest(200)", 0.50),
        ("torch100", "cold start, torch 100 MB", 0.25),
        ("keras100", "cold start, Keras 100 MB", 0.10),
        ("torch1g", "1 GB model: verify + load + first predict, fresh process", 0.5),
    ):
        res = by_model.get(keys[key])
        ratio, detail = _cold_ratio(res)
        base = res.baseline if res is not None else "baseline"
        out.append(Target(label, f"≤ {limit:.2f}x {base}", detail, ratio, limit))
    big = by_model.get(keys["torch1g"])
    if big is not None and big.rows.get(BUNDLE) and big.rows[BUNDLE].rss_mib is not None:
        rss = big.rows[BUNDLE].rss_mib * MIB
        wb = big.extra["weight_bytes"]
        out.append(
            Target(
                "1 GB model: peak RSS",
                "≤ 1.10x the weight bytes",
                f"{rss / MIB:.0f} MiB for {wb / MIB:.0f} MiB of weights",
                rss / wb,
                1.10,
            )
        )
    else:
        out.append(
            Target("1 GB model: peak RSS", "≤ 1.10x the weight bytes", "not run", None, 1.10)
        )
    sign = signs.get(keys["torch1g"]) or signs.get(keys["torch100"])
    ceiling = cores * hash_rate
    if sign is not None:
        v = sign.seconds["bundle.verify (in-process)"]
        rate = sign.nbytes / v
        out.append(
            Target(
                f"verify throughput ({sign.model})",
                "≥ 0.9 x (cores x single-core hashlib SHA-256)",
                f"{rate / 1e9:.2f} GB/s vs {cores} x {hash_rate / 1e9:.2f} GB/s "
                f"({hash_note(hash_rate)})",
                rate / ceiling,
                0.9,
                at_least=True,
            )
        )
    sign1g = signs.get(keys["torch1g"])
    if sign1g is not None:
        s = sign1g.seconds["model-bundle sign (CLI)"]
        v = sign1g.seconds["model-bundle verify (CLI)"]
        out.append(
            Target(
                "sign a 1 GB bundle vs its verify",
                "≤ 1.1x verify (both CLI)",
                f"{s:.2f} s vs {v:.2f} s",
                s / v,
                1.1,
            )
        )
        oms = sign1g.seconds.get("model_signing sign key (CLI)")
        out.append(
            Target(
                "sign a 1 GB bundle vs model_signing",
                "< 1.0x model_signing sign (both CLI, same weight bytes)",
                f"{s:.2f} s vs {oms:.2f} s" if oms else "model_signing n/a",
                s / oms if oms else None,
                0.9999,
            )
        )
    else:
        out += [
            Target("sign a 1 GB bundle vs its verify", "≤ 1.1x verify", "not run", None, 1.1),
            Target(
                "sign a 1 GB bundle vs model_signing",
                "< 1.0x model_signing sign",
                "not run",
                None,
                0.9999,
            ),
        ]
    if big is not None and "export_bundle_rr_s" in big.extra:
        mine, base = big.extra["export_bundle_rr_s"], big.extra["export_floor_rr_s"]
        out.append(
            Target(
                "export 1 GB model",
                "≤ 1.5x (safetensors save_file + SHA-256)",
                f"{mine:.2f} s vs {base:.2f} s (alternated, after a warm-up of each)",
                mine / base,
                1.5,
            )
        )
    else:
        out.append(
            Target(
                "export 1 GB model",
                "≤ 1.5x (safetensors save_file + SHA-256)",
                "not run",
                None,
                1.5,
            )
        )
    out.append(_import_target(imports or {}))
    for key in ("pipeline", "forest", "torch100", "keras100"):
        res = by_model.get(keys[key])
        rows = res.rows if res is not None else {}
        b, r = rows.get(BUNDLE), rows.get(RAW_ORT)
        for rows_n, med, low in (("1", "p1_s", "p1_min_s"), ("1000", "p1000_s", "p1000_min_s")):
            got = [getattr(x, a, None) for x in (b, r) for a in (med, low)]
            bm, bl, rm, rl = (float(v) if v else 0.0 for v in got)
            if not (bm and bl and rm and rl):
                continue
            ratio, tie = ratio_or_tie(Latency(bm, bl), Latency(rm, rl))
            out.append(
                Target(
                    f"predict overhead at batch {rows_n}, {keys[key]}",
                    "≤ 1.05x raw onnxruntime run",
                    f"{bm * 1e3:.3f} ms vs {rm * 1e3:.3f} ms (fastest "
                    f"{bl * 1e3:.3f} vs {rl * 1e3:.3f})",
                    ratio,
                    1.05,
                    tie=tie,
                )
            )
    out.append(
        Target(
            "PyTorch model > 2 GB",
            "exports, verifies, loads, predicts with parity",
            "not measured by this suite: benchmarks/large_model.py",
            None,
            1.0,
        )
    )
    return out


def _import_target(imports: dict[str, float]) -> Target:
    """The load path's import cost over onnxruntime's own (both fresh interpreters)."""
    mine, ort = imports.get(LOAD_PATH), imports.get("onnxruntime")
    if mine is None or ort is None:
        return Target(
            "import of the load path", "≤ onnxruntime's import + 0.05 s", "not run", None, 0.05
        )
    return Target(
        "import of the load path",
        "≤ onnxruntime's import + 0.05 s",
        f"{mine:.3f} s vs {ort:.3f} s",
        mine - ort,
        0.05,
        unit=" s",
    )


def targets_table(items: Sequence[Target]) -> str:
    """The targets with measured ratio and PASS/MISS (or tie)."""
    lines = [
        f"A **tie**: median ratio within {TIE_BAND[0]:.2f}-{TIE_BAND[1]:.2f} and each "
        "side's fastest call at or below the other's median: the difference is inside the "
        "run-to-run noise.",
        "",
        "| measure | target | measured | ratio | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in items:
        ratio = "—" if t.ratio is None else f"{'+' if t.unit == ' s' else ''}{t.ratio:.2f}{t.unit}"
        lines.append(f"| {t.measure} | {t.target} | {t.detail} | {ratio} | **{t.verdict}** |")
    return "\n".join(lines)
