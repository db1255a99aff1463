"""Run inside a runtime-matrix venv (scripts/runtime_matrix.py): load and run bundles.

    python matrix_child.py JOB.json  -> JSON on stdout

The job lists bundles with how to trust them and what to feed them; for each the
child reports the outcome (ok with outputs and the self-test, or the error class and
message), plus what this onnxruntime loads (asked directly) and what the tables say.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import onnxruntime

import bundle
from bundle.format import compat
from bundle.runtime.preflight import probe_installed


def run(case: dict[str, Any]) -> dict[str, Any]:
    opts = {
        "trusted_keys": case["trusted_keys"] or None,
        "threshold": case.get("threshold"),
        "allow_unsigned": case.get("allow_unsigned", False),
    }
    out: dict[str, Any] = {}
    try:
        bundle.verify(case["path"], **opts)
        model = bundle.load(case["path"], device="cpu", **opts)
        data = case.get("input")
        if data is not None:
            arr = (
                {k: np.asarray(v, dtype=case["dtype"]) for k, v in data.items()}
                if isinstance(data, dict)
                else np.asarray(data, dtype=case["dtype"])
            )
            out["output"] = np.asarray(getattr(model, case["method"])(arr)).tolist()
        result = model.self_test(raise_on_failure=False)
        out["self_test"] = None if result is None else result.passed
        out["outcome"] = "ok"
    except bundle.BundleError as e:
        out["outcome"] = type(e).__name__
        out["message"] = str(e)
    return out


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    limits = probe_installed()
    known = compat.max_supported(onnxruntime.__version__)
    print(
        json.dumps(
            {
                "onnxruntime": onnxruntime.__version__,
                "limits": {"ir_version": limits.ir_version, "opsets": limits.opsets},
                "tables": None if known is None else {"ir_version": known[0], "opsets": known[1]},
                "torch_imported": "torch" in sys.modules,
                "results": {name: run(case) for name, case in job.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
