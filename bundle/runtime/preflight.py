"""Preflight: can this runtime run this graph? Answered before any session exists.

A graph states what it needs (IR version, stamped opset per domain); a runtime
refuses a graph stamped newer than it knows, whatever operators are used. The
limits of a release come from the measured tables of :mod:`bundle.format.compat`;
an installed release outside them is asked directly (a one-node graph per
candidate, once per process: onnxruntime states no maximum, its issue #14932).
Every problem says what would do: which release loads the graph, and whether an
opset conversion (:func:`bundle.convert_opset`) to the effective opset would make
it load here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CompatibilityError
from ..format import compat
from ..format.graph import ALLOWED_CONTRIB_OPS, STANDARD_DOMAINS
from ..format.versions import release_tuple

if TYPE_CHECKING:
    import onnx

    from ..format.manifest import Manifest

__all__ = [
    "MIN_SUPPORTED_ONNXRUNTIME",
    "Problem",
    "Requirements",
    "RuntimeLimits",
    "check_installed",
    "installed_limits",
    "might_not_run",
    "parse_runtime",
    "preflight",
    "probe_installed",
    "requirements",
    "table_limits",
]

MIN_SUPPORTED_ONNXRUNTIME = "1.20"
"""The oldest onnxruntime model-bundle itself declares and tests (pyproject.toml, the CI
matrix): older releases may run a graph, but the loader is not tested on them."""


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest IR version and opset per domain a runtime loads."""

    name: str
    """``onnxruntime 1.31.1 (installed)`` or ``onnxruntime 1.20 (from the tables)``."""
    version: str
    ir_version: int | None
    opsets: Mapping[str, int] = field(default_factory=dict)
    """Known limits per domain; a domain missing here is not limited by what we know."""


@dataclass(frozen=True)
class Requirements:
    """What a graph needs: computed from the graph itself, never from a claim about it."""

    ir_version: int
    lowest_ir_version: int
    opsets: Mapping[str, int]
    min_opsets: Mapping[str, int]
    onnxruntime: str | None
    """Oldest release that loads the graph as stamped (None: newer than every one measured)."""
    onnxruntime_if_converted: str | None
    """Oldest release that would load it stamped at its effective opsets and lowest IR."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ir_version": self.ir_version,
            "lowest_ir_version": self.lowest_ir_version,
            "opsets": dict(self.opsets),
            "min_opsets": dict(self.min_opsets),
            "onnxruntime": self.onnxruntime,
            "onnxruntime_if_converted": self.onnxruntime_if_converted,
        }


@dataclass(frozen=True)
class Problem:
    """One reason the runtime cannot run the graph: what, and what would do."""

    kind: str
    """``ir_version``, ``opset``, ``domain`` or ``operator``."""
    message: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


def _domain(name: str) -> str:
    return "ai.onnx" if name in ("", "ai.onnx") else name


def requirements(model: onnx.ModelProto) -> Requirements:
    """What ``model`` needs from a runtime (:class:`CompatibilityError` for an operator
    onnx does not define at the stamped opset, or a domain not imported)."""
    try:
        effective = compat.effective_opsets(model)
    except KeyError as e:
        raise CompatibilityError(f"{e.args[0]}; no runtime can resolve it") from e
    opsets = {_domain(op.domain): op.version for op in model.opset_import}
    return Requirements(
        model.ir_version,
        compat.lowest_ir_version(model),
        opsets,
        effective,
        compat.min_onnxruntime(model.ir_version, opsets),
        compat.min_onnxruntime(compat.lowest_ir_version(model, effective), effective),
    )


def parse_runtime(runtime: str) -> str | None:
    """``"installed"`` -> None; ``"onnxruntime==1.20"`` (or ``"1.20"``) -> ``"1.20"``.
    Anything else is a ValueError (a caller's argument)."""
    if runtime == "installed":
        return None
    m = re.fullmatch(r"(?:onnxruntime(?:-gpu)?\s*==\s*)?([0-9]+(?:\.[0-9]+){1,2})", runtime)
    if m is None:
        raise ValueError(f"runtime {runtime!r}: give 'installed' or 'onnxruntime==X.Y[.Z]'")
    return m.group(1)


def _loads(ort: Any, ir: int, domain: str, opset: int) -> bool:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    ops = [helper.make_opsetid("", opset if domain == "ai.onnx" else 13)]
    if domain != "ai.onnx":
        ops.append(helper.make_opsetid(domain, opset))
    model = helper.make_model(graph, opset_imports=ops)
    model.ir_version = ir
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own exception types: a refusal is the answer
        return False
    return True


def _highest(ok: Any, lo: int, hi: int) -> int:
    """The largest n in [lo, hi] with ok(n), given ok is true up to some point (lo-1: none)."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@functools.cache
def installed_limits() -> RuntimeLimits:
    """What the installed onnxruntime loads: from the measured tables when it is one of
    the measured releases (free), else asked of the runtime itself (:func:`probe_installed`,
    ~20 one-node sessions, a few hundred ms once per process)."""
    import onnxruntime as ort

    version = ort.__version__.split("+")[0]
    known = compat.max_supported(version)
    if known is None:
        return probe_installed()
    return RuntimeLimits(f"onnxruntime {version} (installed)", version, known[0], known[1])


@functools.cache
def probe_installed() -> RuntimeLimits:
    """Ask the installed onnxruntime what it loads (one-node sessions, by bisection).

    tests/format/test_compat.py and the CI matrix check that the tables give exactly
    this for the releases they cover."""
    import onnxruntime as ort

    version = ort.__version__.split("+")[0]
    ir = _highest(lambda n: _loads(ort, n, "ai.onnx", 13), 7, 64)
    opset = _highest(lambda n: _loads(ort, 7, "ai.onnx", n), 13, 64)
    ml = _highest(lambda n: _loads(ort, 7, "ai.onnx.ml", n), 1, 64)
    return RuntimeLimits(
        f"onnxruntime {version} (installed)", version, ir, {"ai.onnx": opset, "ai.onnx.ml": ml}
    )


def table_limits(version: str) -> RuntimeLimits:
    """A release's limits from the measured tables (unlimited when it is newer than them)."""
    known = compat.max_supported(version)
    if known is None:
        return RuntimeLimits(
            f"onnxruntime {version} (beyond the measured releases "
            f"{compat.PROBED_FROM}-{compat.PROBED_TO})",
            version,
            None,
        )
    ir, opsets = known
    return RuntimeLimits(f"onnxruntime {version}", version, ir, opsets)


def preflight(
    model: onnx.ModelProto, manifest: Manifest | None = None, limits: RuntimeLimits | None = None
) -> tuple[Requirements, list[Problem]]:
    """Every reason ``limits`` (default: the installed runtime) cannot run ``model``.

    ``manifest``, when given, adds its claims: the execution providers its
    ``requires`` block names.
    """
    limits = limits or installed_limits()
    need = requirements(model)
    problems: list[Problem] = []
    target = need.min_opsets.get("ai.onnx", 0)
    lowest_converted = compat.lowest_ir_version(model, need.min_opsets)
    changes = dict(need.min_opsets) != dict(need.opsets) or need.ir_version != lowest_converted
    convertible = (
        changes
        and need.onnxruntime_if_converted is not None
        and (
            limits.ir_version is None
            or (
                compat.lowest_ir_version(model, need.min_opsets) <= limits.ir_version
                and all(v <= limits.opsets.get(d, v) for d, v in need.min_opsets.items())
            )
        )
    )
    convert_hint = (
        (
            f"; or convert it: bundle.convert_opset(src, dst, "
            f"{target}) / `model-bundle convert-opset --target-opset {target}` "
            f"writes IR {compat.lowest_ir_version(model, need.min_opsets)}, which "
            f"{limits.name} loads"
        )
        if convertible
        else ""
    )
    newer = (
        f"onnxruntime >= {need.onnxruntime}"
        if need.onnxruntime
        else f"an onnxruntime newer than {compat.PROBED_TO}"
    )
    # onnxruntime's own operators the loader allows by name (com.microsoft.Tokenizer)
    # are in every onnxruntime: their domain is no problem where only they use it
    ops = set(compat.used_operators(model))
    contrib = {d for d, o in ops if (d, o) in ALLOWED_CONTRIB_OPS}
    for op in model.opset_import:
        d = _domain(op.domain)
        if d in contrib and all((d, o) in ALLOWED_CONTRIB_OPS for dd, o in ops if dd == d):
            continue
        if d not in STANDARD_DOMAINS and op.domain not in STANDARD_DOMAINS:
            problems.append(
                Problem(
                    "domain",
                    f"the graph imports operator domain {d!r}, "
                    "which no onnxruntime without custom operators has",
                    "re-export the model with standard operators only",
                )
            )
    if limits.ir_version is not None and need.ir_version > limits.ir_version:
        problems.append(
            Problem(
                "ir_version",
                f"the graph has IR version {need.ir_version}; {limits.name} "
                f"reads up to IR {limits.ir_version} (its opsets and types need only IR "
                f"{need.lowest_ir_version})",
                f"use {newer}{convert_hint}",
            )
        )
    for d, v in sorted(need.opsets.items()):
        top = limits.opsets.get(d)
        if top is not None and v > top:
            problems.append(
                Problem(
                    "opset",
                    f"the graph is stamped {d} opset {v}; {limits.name} knows opsets up "
                    f"to {top} (the operators used need only opset {need.min_opsets.get(d)})",
                    f"use {newer}{convert_hint}",
                )
            )
    if (
        manifest is not None
        and manifest.requires is not None
        and "CPUExecutionProvider" not in manifest.requires.execution_providers
    ):
        eps = ", ".join(manifest.requires.execution_providers)
        problems.append(
            Problem(
                "execution_provider",
                f"this precision variant was only run on {eps}",
                f"load it with a device that offers {eps}",
            )
        )
    return need, problems


def might_not_run(
    model: onnx.ModelProto, manifest: Manifest | None = None, limits: RuntimeLimits | None = None
) -> bool:
    """Whether :func:`preflight` could find a problem, from what the graph states alone.

    The load path's screen: the stamps (IR version, opset per domain), the imported
    domains, every node's domain and the manifest's execution providers, checked
    against ``limits`` without onnx's operator schemas (``import onnx`` costs a fresh
    process more than the rest of a small bundle's load). False means
    :func:`preflight` would report nothing, except an operator onnx does not define
    at the stamped opset -- which onnxruntime refuses too, so the loader asks
    :func:`check_installed` only when the session cannot be created.
    """
    limits = limits or installed_limits()
    stamped = {_domain(op.domain): op.version for op in model.opset_import}
    ops = set(compat.used_operators(model))
    if any(d not in stamped for d, _ in ops):
        return True
    for d, v in stamped.items():
        if d not in STANDARD_DOMAINS and not all(
            (dd, o) in ALLOWED_CONTRIB_OPS for dd, o in ops if dd == d
        ):
            return True
        top = limits.opsets.get(d)
        if top is not None and v > top:
            return True
    if limits.ir_version is not None and model.ir_version > limits.ir_version:
        return True
    return (
        manifest is not None
        and manifest.requires is not None
        and "CPUExecutionProvider" not in manifest.requires.execution_providers
    )


def check_installed(model: onnx.ModelProto, manifest: Manifest) -> Requirements:
    """:func:`preflight` on the installed runtime, raising :class:`CompatibilityError`
    with every problem and its fix. The load path runs it before any session when
    :func:`might_not_run` says so, and when onnxruntime refuses the graph."""
    need, problems = preflight(model, manifest)
    if problems:
        raise CompatibilityError(describe(installed_limits(), problems))
    return need


def describe(limits: RuntimeLimits, problems: list[Problem]) -> str:
    """The problems as one message: what, then what would do."""
    return f"{limits.name} cannot run this bundle: " + "; ".join(
        f"{p.message} ({p.fix})" for p in problems
    )


def supported_by_package(version: str) -> bool:
    """True when model-bundle itself is tested with this onnxruntime release."""
    return release_tuple(version) >= release_tuple(MIN_SUPPORTED_ONNXRUNTIME)
